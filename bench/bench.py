#!/usr/bin/env python3
"""Measuring helpers for bench/run.sh (stdlib only, so a fresh machine needs no pip).

run.sh owns the processes (start, pin, stop); this file measures them and renders the
results. Subcommands:

  ports N                       N distinct free loopback ports
  cores                         the two CPUs to pin to: "LOADGEN PROXY" (empty if < 2)
  idle   --pgid P --target T    RSS of a proxy now (idle)
  wrk    --target T --phase NAME --url U [--pgid P] [-c N] [-d S] [-H h]...
                                one wrk run (pinned to the load-generator core); with
                                --pgid, the proxy's CPU seconds over the run
  sse    --target T --url U --pgid P -n N --chunks K --interval-ms I
                                N concurrent SSE streams; proxy RSS during, stalls
  big    --target T --url U --pgid P -n N --kib K --after S
                                N concurrent K-KiB requests; proxy peak RSS, RSS S s after
  report --results F --out-md F --out-svg F
                                the markdown table, the goals of issue 12, the SVG chart
                                (again from a kept bench/results.jsonl: same figures)

Every measuring command appends JSON lines {"target","metric","value"} to $BENCH_RESULTS.
"""

import argparse
import asyncio
import faulthandler
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ["direct", "nginx", "gateway", "gateway_log"]
TARGET_TITLES = {
    "direct": "direct",
    "nginx": "nginx",
    "gateway": "gateway",
    "gateway_log": "gateway + access log",
}


# --- /proc ----------------------------------------------------------------------------


def group_pids(pgid):
    """Live processes of a process group. run.sh starts each server with setsid, so the
    group is the server and its children (nginx's master and worker)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        rest = stat[stat.rfind(")") + 2 :].split()
        if int(rest[2]) == pgid:
            pids.append(int(d))
    return pids


def cpu_seconds(pgid):
    """utime + stime of every process of the group, all threads included (the kernel
    sums a thread group's times in /proc/PID/stat)."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        ticks += int(rest[11]) + int(rest[12])
    return ticks / CLK_TCK


def status_kib(pgid, field):
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) over the group, in KiB."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_mib(pgid):
    return status_kib(pgid, "VmRSS") / 1024


def core_jiffies():
    """Per-CPU (busy, total) jiffies from /proc/stat, to tell which core was saturated."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + v[4]  # idle + iowait
                out[int(m.group(1))] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


def core_busy(before, after, cpu):
    b0, t0 = before[cpu]
    b1, t1 = after[cpu]
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def record(target, metric, value):
    path = os.environ.get("BENCH_RESULTS")
    line = json.dumps({"target": target, "metric": metric, "value": value})
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    print(f"  {target:12} {metric:28} {value}", flush=True)


def pin_loadgen():
    """Clients run on the load-generator core, beside the mock, never on the proxy's."""
    cpu = os.environ.get("BENCH_LOADGEN_CPU", "")
    if cpu:
        os.sched_setaffinity(0, {int(cpu)})


# --- wrk ------------------------------------------------------------------------------

CHAT_BODY = '{"model":"bench","messages":[{"role":"user","content":"hello"}]}'

# wrk's done() hook prints one machine-readable line; parsing its human output is brittle.
WRK_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '@BODY@'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def cmd_wrk(a):
    lua = os.path.join(os.environ.get("BENCH_TMP", "/tmp"), "bench.lua")
    with open(lua, "w") as f:
        # JSON bodies hold no single quote, so they sit in a Lua '…' string as they are.
        f.write(WRK_LUA.replace("@BODY@", a.body.replace("\\", "\\\\").replace("'", "\\'")))
    cmd = ["wrk", "-t1", f"-c{a.c}", f"-d{a.d}s", "--timeout", "5s", "-s", lua]
    for h in a.H:
        cmd += ["-H", h]
    cmd.append(a.url)
    cpu = os.environ.get("BENCH_LOADGEN_CPU", "")
    if cpu:
        cmd = ["taskset", "-c", cpu] + cmd
    cpu0 = cpu_seconds(a.pgid) if a.pgid else None
    mock0 = cpu_seconds(a.mock_pgid) if a.mock_pgid else None
    # wrk is the only child this process waits for: its CPU is the children's rusage.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    j0 = core_jiffies()
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.d + 20)
    wall = time.monotonic() - t0
    j1 = core_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    cpu1 = cpu_seconds(a.pgid) if a.pgid else None
    mock1 = cpu_seconds(a.mock_pgid) if a.mock_pgid else None
    m = re.search(r"^BENCH (.*)$", out.stdout, re.M)
    if out.returncode != 0 or not m:
        sys.exit(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    if a.warmup:
        return
    p = a.phase
    record(a.target, f"{p}.connections", a.c)
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    record(a.target, f"{p}.rps", r["requests"] / (r["duration_us"] / 1e6))
    record(a.target, f"{p}.requests", r["requests"])
    record(a.target, f"{p}.errors", errors)
    record(a.target, f"{p}.p50_ms", r["p50_us"] / 1000)
    record(a.target, f"{p}.p99_ms", r["p99_us"] / 1000)
    proxy = 100 * (cpu1 - cpu0) / wall if a.pgid else 0.0
    if a.pgid:
        record(a.target, f"{p}.cpu_us_per_req", 1e6 * (cpu1 - cpu0) / max(1, r["requests"]))
        record(a.target, f"{p}.proxy_busy_pct", proxy)
    mock = 100 * (mock1 - mock0) / wall if a.mock_pgid else 0.0
    record(a.target, f"{p}.mock_wrk_pct", mock + 100 * wrk_s / wall)
    # The machine is shared: what else ran on the two cores tells how far to trust a round.
    lg, px = os.environ.get("BENCH_LOADGEN_CPU", ""), os.environ.get("BENCH_PROXY_CPU", "")
    if lg and px:
        lg_core, px_core = core_busy(j0, j1, int(lg)), core_busy(j0, j1, int(px))
        record(a.target, f"{p}.loadgen_core_pct", lg_core)
        record(a.target, f"{p}.others_lg_pct", max(0.0, lg_core - mock - 100 * wrk_s / wall))
        record(a.target, f"{p}.others_px_pct", max(0.0, px_core - proxy))


# --- raw HTTP/1.1 clients (asyncio, one connection per request) -------------------------


def request_bytes(host, port, path, body, extra):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    for k, v in extra.items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


def split_url(url):
    m = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    return m.group(1), int(m.group(2)), m.group(3)


class RssSampler(threading.Thread):
    """Samples the proxy group's RSS in a thread, so a busy event loop cannot skip the
    peak."""

    def __init__(self, pgid, every=0.05):
        super().__init__(daemon=True)
        self.pgid, self.every, self.peak, self.stop = pgid, every, 0.0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_mib(self.pgid))
            time.sleep(self.every)


async def one_stream(host, port, req, deadline, stall_after):
    """One SSE stream: stalled if a gap between reads exceeds stall_after, or if it has
    not ended with [DONE] by the deadline."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first, max_gap, last, tail, status = None, 0.0, t0, b"", None
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        w.write(req)
        await w.drain()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            data = await asyncio.wait_for(r.read(65536), left)
            if not data:
                break
            now = loop.time()
            if first is None:
                first = now - t0
                status = data[9:12]
            else:
                max_gap = max(max_gap, now - last)
            last = now
            tail = (tail + data)[-256:]
            if b"[DONE]" in tail:
                w.close()
                return {"ok": status == b"200", "ttfb": first, "gap": max_gap,
                        "stalled": max_gap > stall_after}
        w.close()
    except (OSError, asyncio.TimeoutError):
        pass
    return {"ok": False, "ttfb": first, "gap": max_gap, "stalled": True}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def cmd_sse(a):
    pin_loadgen()
    host, port, path = split_url(a.url)
    # The mock splits its reply at word boundaries into at most --chunks pieces; its reply
    # echoes the user's text, so that text needs enough words for every chunk.
    words = " ".join(["word"] * a.chunks)
    body = json.dumps({"model": "bench", "stream": True,
                       "messages": [{"role": "user", "content": words}]}).encode()
    req = request_bytes(host, port, path, body, {
        "x-mock-chunks": str(a.chunks), "x-mock-chunk-interval": f"{a.interval_ms}ms"})
    stream_s = a.chunks * a.interval_ms / 1000
    # A stream that misses four chunk intervals (plus scheduling slack on a shared core)
    # has stalled; nothing in a healthy proxy should hold a chunk that long.
    stall_after = 4 * a.interval_ms / 1000 + 1.0
    # What the process holds before the streams: idle pooled connections and caches left
    # by the phases before (the gateway keeps its pools for `idle_timeout`).
    record(a.target, "sse.rss_before_mib", rss_mib(a.pgid))
    sampler = RssSampler(a.pgid)
    sampler.start()

    async def main():
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stream_s + 20
        tasks = []
        for i in range(a.n):
            tasks.append(asyncio.create_task(one_stream(host, port, req, deadline, stall_after)))
            if i % 50 == 49:
                await asyncio.sleep(0.02)  # open 1,000 sockets over ~0.4 s, not in one SYN burst
        return await asyncio.gather(*tasks)

    res = asyncio.run(main())
    sampler.stop = True
    sampler.join()
    ok = [r for r in res if r["ok"]]
    record(a.target, "sse.n", a.n)
    record(a.target, "sse.rss_peak_mib", sampler.peak)
    record(a.target, "sse.completed", len(ok))
    record(a.target, "sse.stalled", sum(1 for r in res if r["stalled"]))
    record(a.target, "sse.max_gap_ms", 1000 * max((r["gap"] for r in res), default=0))
    record(a.target, "sse.ttfb_p50_ms", 1000 * pct([r["ttfb"] for r in ok], 50))
    record(a.target, "sse.ttfb_p99_ms", 1000 * pct([r["ttfb"] for r in ok], 99))


async def one_big(host, port, req, timeout):
    """One big request; ok when the answer is a 200 read to its end."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        w.write(req)
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)  # Connection: close -> EOF ends it
        w.close()
        return data[9:12] == b"200", len(data)
    except (OSError, asyncio.TimeoutError):
        return False, 0


def cmd_big(a):
    pin_loadgen()
    host, port, path = split_url(a.url)
    text = "x" * (a.kib * 1024)
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": text}]}).encode()
    req = request_bytes(host, port, path, body, {})
    sampler = RssSampler(a.pgid, every=0.02)
    sampler.start()

    async def main():
        return await asyncio.gather(*(one_big(host, port, req, 60) for _ in range(a.n)))

    t0 = time.monotonic()
    res = asyncio.run(main())
    took = time.monotonic() - t0
    sampler.stop = True
    sampler.join()
    # The proxy was started fresh for this phase (run.sh), so its high-water mark is this
    # phase's peak; the sampler could miss a spike between two samples.
    hwm = status_kib(a.pgid, "VmHWM") / 1024
    record(a.target, "big.n", a.n)
    record(a.target, "big.kib", a.kib)
    record(a.target, "big.after_s", a.after)
    record(a.target, "big.ok", sum(1 for ok, _ in res if ok))
    record(a.target, "big.seconds", took)
    record(a.target, "big.rss_peak_mib", max(sampler.peak, hwm))
    time.sleep(a.after)
    record(a.target, "big.rss_after_mib", rss_mib(a.pgid))


def cmd_idle(a):
    record(a.target, "idle.rss_mib", rss_mib(a.pgid))


def cmd_ports(a):
    socks = [socket.socket() for _ in range(a.n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))  # held together while chosen, so they are distinct
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_cores(a):
    cpus = sorted(os.sched_getaffinity(0))
    print(f"{cpus[0]} {cpus[1]}" if len(cpus) >= 2 else "")


# --- report ---------------------------------------------------------------------------

# (metric, label, format, ratio vs nginx?, delta-over-direct source)
ROWS = [
    ("lo_0ms.rps", "0 ms mock, c={lo}: requests/s", "{:,.0f}", True),
    ("lo_0ms.cpu_us_per_req", "0 ms mock, c={lo}: proxy CPU per request (µs)", "{:.1f}", True),
    ("lo_0ms.proxy_busy_pct", "0 ms mock, c={lo}: proxy process CPU (% of its core)", "{:.0f}", False),
    ("lo_0ms.mock_wrk_pct", "0 ms mock, c={lo}: mock + wrk CPU (% of their core)", "{:.0f}", False),
    ("lo_0ms.others", "0 ms mock, c={lo}: CPU busy besides (softirq, other processes), proxy core / load-gen core (%)", None, False),
    ("lo_60ms.p50_ms", "60 ms mock, c={lo}: p50 (ms)", "{:.2f}", False),
    ("lo_60ms.p99_ms", "60 ms mock, c={lo}: p99 (ms)", "{:.2f}", False),
    ("lo_60ms.dp50_ms", "60 ms mock, c={lo}: Δp50 over direct (ms)", "{:+.2f}", True),
    ("lo_60ms.dp99_ms", "60 ms mock, c={lo}: Δp99 over direct (ms)", "{:+.2f}", True),
    ("hi_60ms.p50_ms", "60 ms mock, c={hi}: p50 (ms)", "{:.2f}", False),
    ("hi_60ms.p99_ms", "60 ms mock, c={hi}: p99 (ms)", "{:.2f}", False),
    ("hi_60ms.dp50_ms", "60 ms mock, c={hi}: Δp50 over direct (ms)", "{:+.2f}", True),
    ("hi_60ms.dp99_ms", "60 ms mock, c={hi}: Δp99 over direct (ms)", "{:+.2f}", True),
    ("idle.rss_mib", "idle RSS (MiB)", "{:.1f}", True),
    ("sse.rss_before_mib", "{sse_n} SSE streams: RSS just before (MiB)", "{:.1f}", True),
    ("sse.rss_peak_mib", "{sse_n} SSE streams: RSS during (MiB)", "{:.1f}", True),
    ("sse.stalled", "{sse_n} SSE streams: stalled / not completed", None, False),
    ("sse.ttfb_p50_ms", "{sse_n} SSE streams: time to first byte p50 (ms)", "{:.1f}", False),
    ("big.rss_peak_mib", "{big_n} × {kib} KiB requests: peak RSS (MiB)", "{:.1f}", True),
    ("big.rss_after_mib", "{big_n} × {kib} KiB requests: RSS {after} s after (MiB)", "{:.1f}", True),
    ("feat_chat.cpu_us_per_req", "gateway, 0 ms mock, c={lo}: CPU per request (µs), chat passed through", "{:.1f}", False),
    ("feat_messages.cpu_us_per_req", "gateway, 0 ms mock, c={lo}: CPU per request (µs), /v1/messages translated to chat", "{:.1f}", False),
    ("feat_balanced8.cpu_us_per_req", "gateway, 0 ms mock, c={lo}: CPU per request (µs), `balanced` over 8 targets", "{:.1f}", False),
    ("errors", "wrk errors + non-2xx, all phases", "{:.0f}", False),
]

# The goals of issue 12, items 2-4, on the gateway at `info` (and with the access log).
GOALS = [
    ("CPU per request ≤ nginx's (info, access log off)",
     lambda v: ratio(v, "gateway", "lo_0ms.cpu_us_per_req"), lambda x: x <= 1.0, "{:.2f}× nginx"),
    ("CPU per request ≤ 1.2× nginx's with the access log on",
     lambda v: ratio(v, "gateway_log", "lo_0ms.cpu_us_per_req"), lambda x: x <= 1.2, "{:.2f}× nginx"),
    ("Δp50 ≤ 0.1 ms over direct, c={lo}", lambda v: v["gateway"].get("lo_60ms.dp50_ms"),
     lambda x: x <= 0.1, "{:+.2f} ms"),
    ("Δp99 ≤ 0.5 ms over direct, c={lo}", lambda v: v["gateway"].get("lo_60ms.dp99_ms"),
     lambda x: x <= 0.5, "{:+.2f} ms"),
    ("Δp50 ≤ 0.1 ms over direct, c={hi}", lambda v: v["gateway"].get("hi_60ms.dp50_ms"),
     lambda x: x <= 0.1, "{:+.2f} ms"),
    ("Δp99 ≤ 0.5 ms over direct, c={hi}", lambda v: v["gateway"].get("hi_60ms.dp99_ms"),
     lambda x: x <= 0.5, "{:+.2f} ms"),
    ("idle RSS ≤ 20 MiB", lambda v: v["gateway"].get("idle.rss_mib"), lambda x: x <= 20, "{:.1f} MiB"),
    ("RSS during {sse_n} SSE streams ≤ 48 MiB", lambda v: v["gateway"].get("sse.rss_peak_mib"),
     lambda x: x <= 48, "{:.1f} MiB"),
    ("no SSE stream stalled", lambda v: v["gateway"].get("sse.stalled"), lambda x: x == 0, "{:.0f} stalled"),
    ("{big_n} × {kib} KiB requests: peak RSS ≤ nginx's peak",
     lambda v: ratio(v, "gateway", "big.rss_peak_mib"), lambda x: x <= 1.0, "{:.2f}× nginx"),
    ("translated /v1/messages: CPU per request ≤ 1.3× chat passed through",
     lambda v: div(v["gateway"].get("feat_messages.cpu_us_per_req"), v["gateway"].get("feat_chat.cpu_us_per_req")),
     lambda x: x <= 1.3, "{:.2f}×"),
    ("`balanced` over 8 targets: CPU per request ≤ 1.3× chat passed through",
     lambda v: div(v["gateway"].get("feat_balanced8.cpu_us_per_req"), v["gateway"].get("feat_chat.cpu_us_per_req")),
     lambda x: x <= 1.3, "{:.2f}×"),
    ("{big_n} × {kib} KiB requests: RSS {after} s after ≤ 2× idle",
     lambda v: div(v["gateway"].get("big.rss_after_mib"), v["gateway"].get("idle.rss_mib")),
     lambda x: x <= 2.0, "{:.1f}× idle"),
]


def div(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def ratio(v, target, metric):
    return div(v[target].get(metric), v["nginx"].get(metric))


def load(path):
    """Results by target and metric. A wrk phase runs in several rounds: its figures are
    the median of the rounds (errors and requests, their sum), so one noisy round on a
    shared machine does not make the figure."""
    runs, env = {}, ""
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["target"] == "_env":
                env = r["value"].strip()  # the machine and versions, written by run.sh
                continue
            runs.setdefault((r["target"], r["metric"]), []).append(r["value"])
    v = {t: {} for t in TARGETS}
    v["_env"] = env
    for (t, m), xs in runs.items():
        if m.endswith((".errors", ".requests")):
            v.setdefault(t, {})[m] = sum(xs)
        else:
            v.setdefault(t, {})[m] = statistics.median(xs)
    for t in TARGETS[1:]:
        for p in ("lo_60ms", "hi_60ms"):
            for q in ("p50", "p99"):
                d, x = v["direct"].get(f"{p}.{q}_ms"), v[t].get(f"{p}.{q}_ms")
                if d is not None and x is not None:
                    v[t][f"{p}.d{q}_ms"] = x - d
        if "sse.completed" in v[t]:
            v[t]["sse.stalled_text"] = (
                f"{v[t]['sse.stalled']} / {v[t]['sse.n'] - v[t]['sse.completed']}"
                if "sse.n" in v[t] else str(v[t]["sse.stalled"]))
    for t in TARGETS:
        errs = [x for k, x in v[t].items() if k.endswith(".errors")]
        big_failed = v[t]["big.n"] - v[t]["big.ok"] if "big.ok" in v[t] and "big.n" in v[t] else 0
        if errs:
            v[t]["errors"] = sum(errs) + big_failed
    return v


def cell(v, t, metric, fmt):
    if metric == "sse.stalled":
        return v[t].get("sse.stalled_text", "—")
    if metric == "lo_0ms.others":
        a, b = v[t].get("lo_0ms.others_px_pct"), v[t].get("lo_0ms.others_lg_pct")
        return "—" if a is None or b is None else f"{a:.0f} / {b:.0f}"
    x = v[t].get(metric)
    return "—" if x is None else fmt.format(x)


def label_names(v):
    """Labels name the run's own sizes (the quick pass uses small ones)."""
    g = v["gateway"]
    return {"sse_n": f"{g.get('sse.n', 0):,}", "big_n": f"{g.get('big.n', 0):,}",
            "kib": g.get("big.kib", 0), "after": f"{g.get('big.after_s', 0):g}",
            "lo": g.get("lo_0ms.connections", 0), "hi": g.get("hi_60ms.connections", 0)}


def table(v):
    head = ["phase / metric"] + [TARGET_TITLES[t] for t in TARGETS] + [
        "gateway ÷ nginx", "gateway + log ÷ nginx"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    names = label_names(v)
    for metric, label, fmt, ratios in ROWS:
        cells = [label.format(**names)] + [cell(v, t, metric, fmt) for t in TARGETS]
        for t in ("gateway", "gateway_log"):
            r = ratio(v, t, metric) if ratios else None
            # A ratio of two Δs is a finding only when both are clearly above zero.
            small = ".dp" in metric and min(v["nginx"].get(metric) or 0, v[t].get(metric) or 0) < 0.05
            cells.append("—" if r is None or small else f"{r:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goals(v):
    out, names = [], label_names(v)
    for text, get, ok, fmt in GOALS:
        text = text.format(**names)
        try:
            x = get(v)
        except KeyError:
            x = None
        if x is None:
            out.append(f"- n/a: {text} (not measured)")
        elif text.startswith("Δ") and x < -0.1:
            # A proxy adds a hop: "faster than direct" means direct's own run was disturbed.
            out.append(f"- inconclusive: {text}: {fmt.format(x)} (proxied faster than direct: noise)")
        else:
            out.append(f"- {'holds' if ok(x) else 'NOT YET'}: {text}: {fmt.format(x)}")
    return "\n".join(out)


def notes(v):
    """What bound requests/s at 0 ms, from how busy each side was."""
    out = []
    for t in ("nginx", "gateway", "gateway_log"):
        x = v[t]
        busy, mw = x.get("lo_0ms.proxy_busy_pct"), x.get("lo_0ms.mock_wrk_pct")
        olg, opx = x.get("lo_0ms.others_lg_pct"), x.get("lo_0ms.others_px_pct")
        if None in (busy, mw, olg, opx) or busy >= 85:
            continue
        why = ("the mock and wrk, sharing one core, bound requests/s (the mock is the "
               "bottleneck at 0 ms, not the proxy)" if mw >= 75 else
               "other processes of this shared machine took the rest of the cores")
        out.append(f"- 0 ms, {TARGET_TITLES[t]}: the proxy used {busy:.0f} % of its core, the mock "
                   f"and wrk {mw:.0f} % of theirs, other processes {opx:.0f} % / {olg:.0f} %: "
                   f"{why}. CPU per request is the proxy's own figure all the same.")
    if v["gateway"].get("lo_0ms.loadgen_core_pct") is None:
        out.append("- Fewer than 2 CPUs: nothing was pinned; figures mix proxy and load generator.")
    return "\n".join(out)


def svg(v):
    """A horizontal bar chart of gateway ÷ nginx, hand-written SVG, no external assets."""
    items = [
        ("CPU per request (0 ms, c={lo})", "lo_0ms.cpu_us_per_req"),
        ("requests/s (0 ms, c={lo}; higher = better)", "lo_0ms.rps"),
        ("idle RSS", "idle.rss_mib"),
        ("RSS, {sse_n} SSE streams", "sse.rss_peak_mib"),
        ("peak RSS, {big_n} × {kib} KiB requests", "big.rss_peak_mib"),
        ("RSS {after} s after them", "big.rss_after_mib"),
    ]
    series = [("gateway", "#2b6cb0"), ("gateway_log", "#90cdf4")]
    names = label_names(v)
    rows = [(label.format(**names), [ratio(v, t, m) for t, _ in series]) for label, m in items]
    vmax = max([1.0] + [x for _, rs in rows for x in rs if x is not None]) * 1.15
    left, width, bar, gap = 280, 440, 14, 14
    height = 60 + len(rows) * (2 * bar + gap) + 40
    x = lambda r: left + width * r / vmax  # noqa: E731
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{height}" '
         'font-family="sans-serif" font-size="12">',
         '<rect width="100%" height="100%" fill="white"/>',
         f'<text x="10" y="20" font-size="14" font-weight="bold">gateway ÷ nginx, same run '
         '(lower is better; 1× = nginx)</text>']
    for i, (t, color) in enumerate(series):
        s.append(f'<rect x="{left + i * 170}" y="30" width="12" height="12" fill="{color}"/>'
                 f'<text x="{left + i * 170 + 16}" y="40">{TARGET_TITLES[t]}</text>')
    y = 60
    for label, rs in rows:
        s.append(f'<text x="{left - 8}" y="{y + bar + 4}" text-anchor="end">{label}</text>')
        for (t, color), r in zip(series, rs):
            if r is not None:
                s.append(f'<rect x="{left}" y="{y}" width="{x(r) - left:.1f}" height="{bar}" '
                         f'fill="{color}"/><text x="{x(r) + 4:.1f}" y="{y + bar - 3}">{r:.2f}×</text>')
            else:
                s.append(f'<text x="{left + 4}" y="{y + bar - 3}" fill="#888">n/a</text>')
            y += bar
        y += gap
    s.append(f'<line x1="{x(1):.1f}" y1="52" x2="{x(1):.1f}" y2="{y}" stroke="#c53030" '
             'stroke-dasharray="4 3"/>'
             f'<text x="{x(1) + 3:.1f}" y="{y + 14}" fill="#c53030">1× nginx</text>')
    s.append(f'<line x1="{left}" y1="52" x2="{left}" y2="{y}" stroke="#333"/></svg>')
    return "\n".join(s) + "\n"


def cmd_report(a):
    v = load(a.results)
    md = table(v)
    g, n = goals(v), notes(v)
    env = v["_env"]
    text = ("# gateway benchmark results\n\n"
            + (env + "\n\n" if env else "")
            + md + "\n\nGoals of issue 12 (gateway at `info`):\n\n" + g + "\n"
            + ("\nNotes:\n\n" + n + "\n" if n else ""))
    print("\n" + md + "\n\nGoals of issue 12 (gateway at `info`):\n" + g + ("\n\nNotes:\n" + n if n else ""))
    with open(a.out_md, "w") as f:
        f.write(text)
    with open(a.out_svg, "w") as f:
        f.write(svg(v))
    # The smoke pass (CI) relies on this: a phase that recorded nothing fails the run.
    need = [("direct", "lo_0ms.rps")] + [
        (t, m) for t in TARGETS[1:] for m in
        ("lo_0ms.cpu_us_per_req", "hi_60ms.p99_ms", "idle.rss_mib", "sse.completed",
         "big.rss_after_mib")]
    missing = [f"{t} {m}" for t, m in need if m not in v[t]]
    if missing:
        sys.exit("error: no figure for " + ", ".join(missing))


def main():
    # A step that run.sh's time bound ends (SIGTERM) prints where it was stuck.
    faulthandler.register(signal.SIGTERM, chain=True)
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    sub.add_parser("cores")
    p = sub.add_parser("idle")
    p.add_argument("--target", required=True)
    p.add_argument("--pgid", type=int, required=True)
    p = sub.add_parser("wrk")
    p.add_argument("--target", required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--pgid", type=int, default=0)
    p.add_argument("--mock-pgid", type=int, default=0)
    p.add_argument("-c", type=int, default=50)
    p.add_argument("-d", type=int, default=10)
    p.add_argument("-H", action="append", default=[])
    p.add_argument("--body", default=CHAT_BODY)
    p.add_argument("--warmup", action="store_true")
    p = sub.add_parser("sse")
    p.add_argument("--target", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--pgid", type=int, required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--interval-ms", type=int, default=500)
    p = sub.add_parser("big")
    p.add_argument("--target", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--pgid", type=int, required=True)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--kib", type=int, default=150)
    p.add_argument("--after", type=float, default=30)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-svg", required=True)
    a = ap.parse_args()
    {"ports": cmd_ports, "cores": cmd_cores, "idle": cmd_idle, "wrk": cmd_wrk, "sse": cmd_sse,
     "big": cmd_big, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
