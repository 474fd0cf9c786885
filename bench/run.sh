#!/usr/bin/env bash
# The gateway beside nginx, over the same mock upstream, on this machine (issue 12, item 1).
#
# One command: installs nginx and wrk if missing, builds the release binary, then runs
# `gateway mock`, nginx (a plain reverse proxy) and the gateway (access log off, then on)
# and measures, for each:
#   - 0 ms mock, c=50: requests/s and the proxy's CPU per request (/proc/PID/stat);
#   - 60 ms mock, c=50 and c=200: p50/p99, and their Δ over going to the mock direct;
#   - idle RSS; RSS during 1,000 concurrent SSE streams, and whether any stalled;
#   - 1,000 concurrent 150 KiB requests: peak RSS, and RSS 30 s after.
# Prints one markdown table and writes bench/results.md, bench/results.svg and the raw
# figures of every round, bench/results.jsonl.
#
# Pinning: wrk, the Python clients and the mock share one core, the proxies the other, so
# a proxy's CPU is its own and every proxy meets the same load generator. All three
# proxies are up together, and each wrk phase visits the four targets (direct included) in
# rotating order, round after round; the table shows the median round.
# Loopback only; every phase is time-bounded; every process started here runs in its own
# process group and the trap kills those groups whatever happens.
#
# Usage: bash bench/run.sh [--quick]      (BENCH_QUICK=1 is the same as --quick)
#   --quick  a smoke pass of some 30 s with tiny durations and concurrency, for CI. It uses
#            the dev-profile binary (CI has just built it; a cold release build would take
#            minutes of CI's budget; BENCH_PROFILE=release overrides) and writes its
#            results to a temp dir, not over the committed bench/results.*.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

quick=${BENCH_QUICK:-0}
for arg in "$@"; do
    case $arg in
    --quick) quick=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$root/bench/run.sh" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: bash bench/run.sh [--quick]" >&2
        exit 2
        ;;
    esac
done

if [ "$quick" = 1 ]; then
    dur=1 rounds=1 warm=1 c_low=10 c_high=20 sse_n=20 sse_chunks=4 sse_ms=100 big_n=20 after=1
    profile=${BENCH_PROFILE:-dev}
else
    # 3 rounds of 4 s per target and wrk phase (12 s each, medians of the rounds) keep the
    # whole run near 5 minutes. SSE: 20 chunks 500 ms apart = 10 s streams, so all
    # 1,000 are open at once while RSS is sampled.
    dur=4 rounds=3 warm=2 c_low=50 c_high=200 sse_n=1000 sse_chunks=20 sse_ms=500 big_n=1000 after=30
    profile=${BENCH_PROFILE:-release}
fi
big_kib=150
latency=60ms

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

# --- tools ----------------------------------------------------------------------------
missing=()
for tool in nginx wrk; do
    # nginx lives in /usr/sbin, often not on a user's PATH.
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! as_root true; then
        echo "error: bench/run.sh needs ${missing[*]}: install them (apt-get install -y nginx wrk), or run this as root or with passwordless sudo" >&2
        exit 1
    fi
    echo "bench: installing ${missing[*]} (apt-get)"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >/dev/null ||
        ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" </dev/null >/dev/null; then
        echo "error: apt-get could not install ${missing[*]}; bench/run.sh needs them" >&2
        exit 1
    fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
for tool in python3 taskset curl setsid; do
    command -v "$tool" >/dev/null || {
        echo "error: bench/run.sh needs $tool" >&2
        exit 1
    }
done

# --- the binary -----------------------------------------------------------------------
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ left in the checkout
if [ "$profile" = release ]; then
    cargo build --release --bin gateway
    bin=${CARGO_TARGET_DIR:-$root/target}/release/gateway
else
    cargo build --bin gateway
    bin=${CARGO_TARGET_DIR:-$root/target}/debug/gateway
fi

# --- processes, stopped whatever happens ------------------------------------------------
work=$(mktemp -d)
chmod 755 "$work" # nginx's worker runs as nobody when started as root: it must reach its temp dirs
pids=()
forget() {
    local keep=() p
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]}")
}
stop() {
    # TERM the whole group (nginx's worker, wrk under bench.py), then KILL what is left.
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}
cleanup() {
    local pid
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do stop "$pid"; done
    rm -rf "$work"
}
trap cleanup EXIT
# set -e stops silently; say where.
trap 'echo "error: bench/run.sh stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" -lt 4096 ]; then
    echo "warning: open files limit $(ulimit -n); 1,000 concurrent connections through a proxy need ~3,000" >&2
fi

read -r cpu_lg cpu_px < <(python3 bench/bench.py cores) || true
export BENCH_LOADGEN_CPU=${cpu_lg:-} BENCH_PROXY_CPU=${cpu_px:-}
export BENCH_TMP=$work BENCH_RESULTS=$work/results.jsonl
: >"$BENCH_RESULTS"
started=$SECONDS
load_start=$(cut -d" " -f1-3 /proc/loadavg)
last_pid=
# start NAME CPU CMD...: a server in its own process group (setsid: its PID is its PGID),
# so stop and the trap reach its children too.
start() {
    local name=$1 cpu=$2
    shift 2
    setsid bash -c 'cpu=$1; shift; if [ -n "$cpu" ]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi' \
        _ "$cpu" "$@" >"$work/$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}
# step SECONDS CMD...: a bounded foreground step, in its own group too; `wait` (unlike a
# plain foreground command) lets the INT/TERM traps run at once.
step() {
    local limit=$1 pid rc=0
    shift
    setsid timeout "$limit" "$@" &
    pid=$!
    pids+=("$pid")
    wait "$pid" || rc=$?
    forget "$pid"
    if [ "$rc" -ne 0 ]; then
        echo "error: step failed (exit $rc): $*" >&2
        exit 1
    fi
}
wait_http() { # URL NAME LOGFILE: up to 10 s for a server to answer
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    echo "error: $2 did not come up; its log:" >&2
    cat "$3" >&2
    exit 1
}
phase() { echo "bench: [$((SECONDS - started))s] $*"; }

read -r port_m port_n port_g port_gl < <(python3 bench/bench.py ports 4)
mock_url=http://127.0.0.1:$port_m

# --- the mock: one process for all phases, latency and streams chosen per request by
# x-mock-* headers, so every proxy meets the very same upstream.
start mock "$cpu_lg" "$bin" mock --listen "127.0.0.1:$port_m"
mock_pid=$last_pid
wait_http "$mock_url/" mock "$work/mock.log"

# --- nginx: a plain reverse proxy, one worker (the gateway gets one core too).
mkdir -p "$work/nginx/tmp"
chmod 1777 "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
    access_log off;
    # Temp files inside the run's dir, not /var/lib/nginx.
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    # nginx closes a keep-alive connection after 1,000 requests by default; the gateway
    # does not, so neither may here.
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$port_m;
        keepalive 256;              # = the gateway's default max_idle_per_host
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port_n backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        # SSE goes through /sse/ (prefix stripped), unbuffered, as one would set it up.
        location /sse/ {
            proxy_pass http://mock/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF

# --- the gateway: one provider -> the mock, `info` (its default), access log off or on.
# Every limit at its default (max_concurrency = 1024 lets the 1,000 streams through
# without queueing); shutdown_timeout keeps stops short.
gateway_conf() { # ACCESS_LOG_PATH PORT
    cat <<EOF
[server]
listen = "127.0.0.1:$2"
shutdown_timeout = "2s"

[log]
level = "info"
access_log = "$1"

[providers.mock]
base_url = "$mock_url/v1"

[models.bench]
targets = ["mock/mock-model"]
EOF
    # Item 6 of issue 12: an alias with the balanced strategy over 8 targets (8 providers,
    # each its own pool, all on the same mock).
    local i targets=()
    for i in 1 2 3 4 5 6 7 8; do
        printf '\n[providers.m%s]\nbase_url = "%s/v1"\n' "$i" "$mock_url"
        targets+=("{ provider = \"m$i\", model = \"mock-model\", input_cost = $i, output_cost = $i }")
    done
    printf '\n[models.bench8]\nstrategy = "balanced"\ntargets = [\n'
    printf '    %s,\n' "${targets[@]}"
    printf ']\n'
}
gateway_conf "" "$port_g" >"$work/gateway.toml"
gateway_conf "$work/access.jsonl" "$port_gl" >"$work/gateway_log.toml"
"$bin" check --config "$work/gateway.toml" >/dev/null

# Each proxy has its own port, so all three can be up at once: the wrk phases then visit
# them in turn, round after round, and a burst of load from other tenants of this shared
# machine falls on every target alike instead of on whichever one ran during it.
declare -A port=([nginx]=$port_n [gateway]=$port_g [gateway_log]=$port_gl) pgid=() url=() sse_url=()
url[direct]=$mock_url/v1/chat/completions
start_proxy() { # TARGET: starts it pinned on the proxy core, waits until it answers
    local t=$1 base=http://127.0.0.1:${port[$1]}
    case $t in
    nginx)
        start nginx "$cpu_px" "$nginx_bin" -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf"
        sse_url[$t]=$base/sse/v1/chat/completions
        ;;
    gateway | gateway_log)
        start "$t" "$cpu_px" "$bin" --config "$work/$t.toml"
        sse_url[$t]=$base/v1/chat/completions
        ;;
    esac
    pgid[$t]=$last_pid
    url[$t]=$base/v1/chat/completions
    wait_http "$base/" "$t" "$work/$t.log"
    # One request through, so pools and lazy state exist before anything is measured.
    curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' \
        -d '{"model":"bench","messages":[{"role":"user","content":"hi"}]}' "${url[$t]}"
}

bench_py() { step "$1" python3 bench/bench.py "${@:2}"; }
targets=(direct nginx gateway gateway_log)
wrk_phase() { # PHASE CONNECTIONS [wrk -H header]: $rounds rounds over every target, order rotated
    local ph=$1 c=$2 r i t
    shift 2
    for r in $(seq "$rounds"); do
        for i in 0 1 2 3; do
            t=${targets[$(((i + r) % 4))]}
            bench_py $((dur + 30)) wrk --target "$t" --phase "$ph" --url "${url[$t]}" \
                --pgid "${pgid[$t]:-0}" --mock-pgid "$mock_pid" -c "$c" -d "$dur" "$@"
        done
    done
}

phase "machine: $(nproc) CPUs, load-gen + mock on CPU ${cpu_lg:-any}, proxies on CPU ${cpu_px:-any}; $([ "$quick" = 1 ] && echo 'quick smoke pass' || echo 'full run')"
for t in nginx gateway gateway_log; do start_proxy "$t"; done
sleep 1
for t in nginx gateway gateway_log; do bench_py 10 idle --target "$t" --pgid "${pgid[$t]}"; done
phase "warm-up: ${warm}s per target"
for t in "${targets[@]}"; do
    bench_py $((warm + 30)) wrk --warmup --target "$t" --phase warm --url "${url[$t]}" -c "$c_low" -d "$warm"
done
phase "0 ms mock, c=$c_low: $rounds rounds of ${dur}s per target"
wrk_phase lo_0ms "$c_low"
phase "$latency mock, c=$c_low: $rounds rounds of ${dur}s per target"
wrk_phase lo_60ms "$c_low" -H "x-mock-latency: $latency"
phase "$latency mock, c=$c_high: $rounds rounds of ${dur}s per target"
wrk_phase hi_60ms "$c_high" -H "x-mock-latency: $latency"

# Item 6: what translation and strategies cost, against plain passthrough on the same
# gateway process, rounds rotated like the other phases.
phase "gateway features, 0 ms mock, c=$c_low: chat passthrough, /v1/messages translated, balanced over 8 targets"
messages_body='{"model":"bench","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}'
balanced_body='{"model":"bench8","messages":[{"role":"user","content":"hello"}]}'
gw_base=http://127.0.0.1:${port[gateway]}
for r in $(seq "$rounds"); do
    for i in 0 1 2; do
        case $(((i + r) % 3)) in
        0) bench_py $((dur + 30)) wrk --target gateway --phase feat_chat --url "$gw_base/v1/chat/completions" \
            --pgid "${pgid[gateway]}" --mock-pgid "$mock_pid" -c "$c_low" -d "$dur" ;;
        1) bench_py $((dur + 30)) wrk --target gateway --phase feat_messages --url "$gw_base/v1/messages" \
            --pgid "${pgid[gateway]}" --mock-pgid "$mock_pid" -c "$c_low" -d "$dur" --body "$messages_body" ;;
        2) bench_py $((dur + 30)) wrk --target gateway --phase feat_balanced8 --url "$gw_base/v1/chat/completions" \
            --pgid "${pgid[gateway]}" --mock-pgid "$mock_pid" -c "$c_low" -d "$dur" --body "$balanced_body" ;;
        esac
    done
done

for t in nginx gateway gateway_log; do
    phase "$t: $sse_n concurrent SSE streams ($sse_chunks chunks, ${sse_ms} ms apart)"
    bench_py $((sse_chunks * sse_ms / 1000 + 40)) sse --target "$t" --url "${sse_url[$t]}" --pgid "${pgid[$t]}" \
        -n "$sse_n" --chunks "$sse_chunks" --interval-ms "$sse_ms"
done
for t in nginx gateway gateway_log; do
    # A fresh process for the big bodies, so its high-water mark (VmHWM) is this phase's.
    stop "${pgid[$t]}"
    start_proxy "$t"
    phase "$t: $big_n concurrent ${big_kib} KiB requests, then ${after}s idle"
    bench_py $((after + 90)) big --target "$t" --url "${url[$t]}" --pgid "${pgid[$t]}" -n "$big_n" --kib "$big_kib" --after "$after"
    stop "${pgid[$t]}"
done
stop "$mock_pid"

# --- the report -------------------------------------------------------------------------
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
# Built in parts: an assignment's status is its last $(...)'s, which set -e would act on.
versions="gateway $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($profile profile), $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'), $({ wrk -v 2>&1 || true; } | head -1 | cut -d' ' -f1-2)"
env_text="Command: \`bash bench/run.sh\`. Machine: $(nproc) CPUs ($cpu_model), Linux $(uname -r); load average at the start $load_start, at the end $(cut -d' ' -f1-3 /proc/loadavg). $versions."
if [ "$quick" = 1 ]; then
    env_text="Command: \`bash bench/run.sh --quick\`: a smoke pass, its figures mean nothing. ${env_text#*. }"
fi
if [ "$quick" = 1 ]; then out=$work/out; else out=$root/bench; fi
mkdir -p "$out"
python3 -c 'import json, sys; print(json.dumps({"target": "_env", "metric": "text", "value": sys.argv[1]}))' \
    "$env_text" >>"$BENCH_RESULTS"
# The raw figures (every round) are kept beside the table, so it can be checked and redrawn.
cp "$BENCH_RESULTS" "$out/results.jsonl"
python3 bench/bench.py report --results "$out/results.jsonl" --out-md "$out/results.md" --out-svg "$out/results.svg"
test -s "$out/results.svg"
echo
echo "bench: done in $((SECONDS - started))s; wrote $out/results.{md,svg,jsonl}"
