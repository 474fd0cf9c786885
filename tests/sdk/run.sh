#!/usr/bin/env bash
# Compatibility check against the official OpenAI and Anthropic Python SDKs, over real
# sockets.
#
# Starts `gateway mock` (a fault-injecting HTTP upstream) and the gateway in front of it
# on a temporary config (provider `up` -> the mock, alias `remote`; in-process provider
# `demo`, alias `demo`), plus a second gateway on the shipped config/gateway.toml (the
# README's first command), then runs check.py against both gateways and against the mock
# itself (the Messages API and the Responses stream helpers, SDK to mock directly).
# Exits with check.py's code.
#
# Usage: bash tests/sdk/run.sh     (from anywhere; needs python3 with venv, and cargo)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
venv=$root/target/sdk-venv
bin=${CARGO_TARGET_DIR:-$root/target}/debug/gateway

# --- the SDKs, in a venv kept across runs ------------------------------------------
# Pinned: a new SDK release must not change what CI checks without a commit saying so.
openai_version=3.57.0
anthropic_version=2.14.0
want="$openai_version $anthropic_version"
have=$("$venv/bin/python" -c 'import openai, anthropic; print(openai.__version__, anthropic.__version__)' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    echo "sdk: creating $venv with openai==$openai_version anthropic==$anthropic_version"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        "openai==$openai_version" "anthropic==$anthropic_version"
fi
py=$venv/bin/python
echo "sdk: openai $("$py" -c 'import openai; print(openai.__version__)')," \
    "anthropic $("$py" -c 'import anthropic; print(anthropic.__version__)')"

# --- the binary (dev profile) -----------------------------------------------------
cargo build --quiet --bin gateway

# --- processes, cleaned up whatever happens ---------------------------------------
work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three free loopback ports, held together while chosen so they are distinct.
read -r port_m port_g port_s < <("$py" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

show_logs() {
    local f
    for f in "$work"/*.log; do
        echo "----- $(basename "$f") (last 40 lines)"
        tail -n 40 "$f" || true
    done
}

# wait_http NAME PID URL: polls URL until it answers 200, the process dies, or 30 s pass.
wait_http() {
    if ! "$py" - "$2" "$3" <<'EOF'; then
import os, sys, time, urllib.request
pid, url = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"process {pid} exited before {url} answered")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"{url} did not answer 200 within 30 s")
EOF
        echo "sdk: $1 did not start" >&2
        show_logs >&2
        exit 1
    fi
}

"$bin" mock --listen "127.0.0.1:$port_m" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_http mock "$!" "http://127.0.0.1:$port_m/v1/models"

cat >"$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$port_g"

[providers.up]
base_url = "http://127.0.0.1:$port_m/v1"

[providers.demo]
kind = "mock"

[models.remote]
targets = ["up/mock-model"]

[models.demo]
targets = ["demo/mock-model"]

# Forced open by check.py: circuit_open must be final for the SDK.
[providers.killed]
kind = "mock"

[models.killed]
targets = ["killed/mock-model"]

# The Anthropic SDK through the gateway: passed through to a kind = "anthropic" upstream
# (gateway mock speaks the Messages API), and translated to an OpenAI-compatible one.
[providers.claude_up]
kind = "anthropic"
base_url = "http://127.0.0.1:$port_m"

[models.claude-native]
targets = ["claude_up/mock-claude"]

[models.claude-translated]
targets = ["up/mock-model"]
EOF
"$bin" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_http gateway "$!" "http://127.0.0.1:$port_g/healthz"

# The shipped config, as the README runs it (only the port differs).
"$bin" --config config/gateway.toml --listen "127.0.0.1:$port_s" >"$work/gateway-shipped.log" 2>&1 &
pids+=($!)
wait_http "gateway (config/gateway.toml)" "$!" "http://127.0.0.1:$port_s/healthz"

status=0
"$py" tests/sdk/check.py \
    --base-url "http://127.0.0.1:$port_g/v1" \
    --shipped-url "http://127.0.0.1:$port_s/v1" \
    --mock-url "http://127.0.0.1:$port_m" || status=$?
if [ "$status" -ne 0 ]; then
    show_logs
fi
exit "$status"
