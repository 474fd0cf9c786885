#!/usr/bin/env bash
# Real coding agents through the gateway: Claude Code (Anthropic Messages) and Codex CLI
# (OpenAI Responses), pinned from npm, each completing a prompt against `gateway mock`.
#
# Claude Code goes through two aliases: one translated to an OpenAI-compatible upstream
# (Messages -> chat completions and back), one passed through to a kind = "anthropic"
# upstream. Codex CLI sends the Responses API, passed through. Every request must reach
# an upstream and come back 200 (checked in the access log).
#
# Usage: bash tests/agents/run.sh   (needs node + npm, cargo; network to the npm registry)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
claude_version=2.1.332
codex_version=0.171.0
agents=${CARGO_TARGET_DIR:-$root/target}/agents
bin=${CARGO_TARGET_DIR:-$root/target}/debug/gateway

if ! command -v npm >/dev/null; then
    echo "agents: npm is missing (the machine's Node.js provides it)" >&2
    exit 1
fi
if [ "$("$agents/node_modules/.bin/claude" --version 2>/dev/null | cut -d' ' -f1)" != "$claude_version" ] ||
    [ "$("$agents/node_modules/.bin/codex" --version 2>/dev/null | cut -d' ' -f2)" != "$codex_version" ]; then
    echo "agents: installing @anthropic-ai/claude-code@$claude_version @openai/codex@$codex_version"
    rm -rf "$agents"
    mkdir -p "$agents"
    (cd "$agents" && npm install --silent --no-audit --no-fund --no-save \
        "@anthropic-ai/claude-code@$claude_version" "@openai/codex@$codex_version" >/dev/null)
fi
echo "agents: $("$agents/node_modules/.bin/claude" --version), $("$agents/node_modules/.bin/codex" --version)"

cargo build --quiet --bin gateway

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

read -r port_m port_g < <(python3 - <<'PY'
import socket
s = [socket.socket() for _ in range(2)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
PY
)

wait_http() {
    for _ in $(seq 1 300); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "agents: $1 did not answer" >&2
    tail -n 30 "$work"/*.log >&2 || true
    exit 1
}

"$bin" mock --listen "127.0.0.1:$port_m" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port_m/v1/models"

cat >"$work/gateway.toml" <<TOML
[server]
listen = "127.0.0.1:$port_g"
api_keys = ["agents-client-key-0001"]

[log]
access_log = "$work/access.jsonl"

[providers.openai_mock]
base_url = "http://127.0.0.1:$port_m/v1"

[providers.anthropic_mock]
kind = "anthropic"
base_url = "http://127.0.0.1:$port_m"

[models.gw-translated]
targets = ["openai_mock/mock-model"]

[models.gw-native]
targets = ["anthropic_mock/mock-claude"]

[models.gw-codex]
targets = ["openai_mock/mock-model"]
TOML
"$bin" --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$port_g/healthz"

fail=0
claude_run() {
    local model=$1 out
    out=$(cd "$work" && HOME="$work/home" ANTHROPIC_BASE_URL="http://127.0.0.1:$port_g" \
        ANTHROPIC_API_KEY=agents-client-key-0001 ANTHROPIC_SMALL_FAST_MODEL="$model" \
        DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
        timeout 120 "$agents/node_modules/.bin/claude" -p "Say hello" --model "$model" 2>&1) || true
    if grep -q "mock reply" <<<"$out"; then
        echo "ok claude code via $model"
    else
        echo "FAIL claude code via $model:"
        echo "$out" | tail -n 20
        fail=1
    fi
}
claude_run gw-translated
claude_run gw-native

mkdir -p "$work/codex"
cat >"$work/codex/config.toml" <<TOML
model = "gw-codex"
model_provider = "gateway"

[model_providers.gateway]
name = "gateway"
base_url = "http://127.0.0.1:$port_g/v1"
env_key = "GATEWAY_API_KEY"
wire_api = "responses"
TOML
out=$(cd "$work" && CODEX_HOME="$work/codex" GATEWAY_API_KEY=agents-client-key-0001 \
    timeout 120 "$agents/node_modules/.bin/codex" exec --skip-git-repo-check "Say hello" 2>&1) || true
if grep -q "mock reply" <<<"$out" && ! grep -q "without active item" <<<"$out"; then
    echo "ok codex cli"
else
    echo "FAIL codex cli:"
    echo "$out" | tail -n 20
    fail=1
fi

# Every agent request reached an upstream and came back 200.
if ! python3 - "$work/access.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
paths = {}
for l in lines:
    paths.setdefault(l["path"].split("?")[0], []).append(l["status"])
bad = {p: s for p, s in paths.items() if p.startswith("/v1/") and any(x != 200 for x in s)}
print("agents: access log", {p: len(s) for p, s in paths.items()})
missing = [p for p in ("/v1/messages", "/v1/responses") if p not in paths]
if bad or missing:
    sys.exit(f"non-200 answers {bad} or no requests on {missing}")
PY
then
    fail=1
fi
if [ "$fail" -ne 0 ]; then
    tail -n 40 "$work/gateway.log"
    exit 1
fi
echo "agents: all passed"
