#!/usr/bin/env python3
"""Replay benchmark (issue 10): a synthetic access log of N requests (default 1,000,000)
over a simulated week across 4 providers with outages, replayed by `gateway replay`;
prints wall seconds, CPU seconds and peak RSS.

    python3 bench/replay_bench.py [--requests N] [--bin target/release/gateway]

The log is generated deterministically (seeded) into a temp dir and removed afterwards.
The replay runs pinned to one core (taskset) when available. Goal: <= 10 s, <= 200 MiB.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

PROVIDERS = ["openai", "anthropic", "deepseek", "local"]
CONFIG = """
[providers.openai]
base_url = "http://127.0.0.1:1/v1"
[providers.anthropic]
base_url = "http://127.0.0.1:2/v1"
[providers.deepseek]
base_url = "http://127.0.0.1:3/v1"
[providers.local]
base_url = "http://127.0.0.1:4/v1"
[models.chat]
targets = ["openai/gpt-4o", "anthropic/claude", "deepseek/deepseek-v3"]
[models.code]
strategy = "balanced"
targets = ["deepseek/deepseek-v3", "local/qwen", "openai/gpt-4o-mini"]
"""


def outage(provider: str, t: float, week: float) -> bool:
    """Each provider is down for one hour a day, at a provider-specific hour."""
    hour = (t % 86400) / 3600
    return int(hour) == {"openai": 3, "anthropic": 9, "deepseek": 15, "local": 21}[provider]


def generate(path: str, n: int, seed: int) -> None:
    rnd = random.Random(seed)
    start = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    week = 7 * 86400.0
    step = week / n
    with open(path, "w") as f:
        for i in range(n):
            t = i * step + rnd.random() * step
            model = "chat" if i % 2 == 0 else "code"
            chain = ["openai", "anthropic", "deepseek"] if model == "chat" else ["deepseek", "local", "openai"]
            attempts, start_ms, status, target = [], 0.0, 502, None
            for p in chain:
                lat = rnd.uniform(80, 900)
                if outage(p, t, week):
                    attempts.append({"provider": p, "model": "m", "key": None, "start_ms": start_ms,
                                     "ms": 5.0, "first_byte_ms": 5.0, "status": 503, "error": None,
                                     "retry_after_ms": None})
                    start_ms += 5.0
                    continue
                attempts.append({"provider": p, "model": "m", "key": None, "start_ms": start_ms,
                                 "ms": lat, "first_byte_ms": lat, "status": 200, "error": None,
                                 "retry_after_ms": None})
                status, target = 200, f"{p}/m"
                break
            ts = (start + dt.timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((t % 1) * 1000):03d}Z"
            line = {"ts": ts, "request_id": f"r{i}", "method": "POST", "path": "/v1/chat/completions",
                    "model": model, "strategy": "failover", "target": target, "status": status,
                    "code": None, "attempts": attempts, "skipped": [], "queue_ms": 0.0,
                    "first_byte_ms": attempts[-1]["first_byte_ms"], "duration_ms": start_ms + attempts[-1]["ms"],
                    "stream": i % 3 == 0, "prompt_tokens": 100, "completion_tokens": 50,
                    "cost_usd": None, "outcome": "completed"}
            f.write(json.dumps(line, separators=(",", ":")))
            f.write("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--bin", default="target/release/gateway")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="replay-bench-")
    try:
        log = os.path.join(work, "access.jsonl")
        cfg = os.path.join(work, "candidate.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        t0 = time.monotonic()
        generate(log, args.requests, args.seed)
        size = os.path.getsize(log) / 2**20
        print(f"generated {args.requests} requests ({size:.0f} MiB) in {time.monotonic() - t0:.1f} s")
        cmd = [args.bin, "replay", "--config", cfg, "--format", "json", log]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "1"] + cmd
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        report = json.loads(out.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        rss = after.ru_maxrss / 1024  # KiB -> MiB (Linux)
        total = report["total"]["candidate"]
        print(f"replayed {report['lines']['requests']} requests: {wall:.1f} s wall, {cpu:.1f} s CPU, "
              f"peak RSS {rss:.0f} MiB; candidate success {total['success_rate']:.4f}")
        ok = wall <= 10 and rss <= 200
        print("goal (<= 10 s, <= 200 MiB):", "met" if ok else "NOT met")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
