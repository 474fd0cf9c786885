"""The gateway as the official OpenAI Python SDK sees it.

Run by tests/sdk/run.sh against a gateway whose alias `demo` is the in-process mock and
whose alias `remote` is `gateway mock` over HTTP. Prints one line per check ("ok NAME" or
"FAIL NAME: why") and ends with "N passed, M failed"; exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import urllib.request
from typing import Callable

import openai
from openai import OpenAI

MODELS = ("demo", "remote")
PROMPT = "Say hello to the gateway"


def check_chat(client: OpenAI, model: str) -> None:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}])
    content = r.choices[0].message.content
    assert content, f"empty content: {r!r}"
    assert r.usage is not None, "no usage"
    assert r.usage.total_tokens > 0, f"usage: {r.usage!r}"
    # The SDK exposes the x-request-id response header as `_request_id`.
    assert r._request_id, "no x-request-id on the response"


def check_chat_stream(client: OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
    )
    text, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(text), "no content deltas"
    assert finish == "stop", f"stream ended without finish_reason (last: {finish!r})"


def check_chat_stream_usage(client: OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
    assert usage is not None and usage.total_tokens > 0, f"no usage chunk: {usage!r}"


def check_embeddings(client: OpenAI, model: str) -> None:
    # The SDK asks for base64 by default and decodes it to floats itself.
    r = client.embeddings.create(model=model, input=PROMPT)
    vec = r.data[0].embedding
    assert isinstance(vec, list) and len(vec) > 0, f"embedding: {vec!r}"
    assert all(isinstance(x, float) for x in vec), f"not floats: {vec[:4]!r}"


def check_completion(client: OpenAI, model: str) -> None:
    r = client.completions.create(model=model, prompt=PROMPT)
    assert r.choices[0].text, f"empty text: {r!r}"
    assert r.usage is not None, "no usage"


def check_responses(client: OpenAI, model: str) -> None:
    r = client.responses.create(model=model, input=PROMPT)
    assert r.output_text, f"empty output_text: {r!r}"


def check_responses_stream(client: OpenAI, model: str) -> None:
    deltas, completed = [], False
    for event in client.responses.create(model=model, input=PROMPT, stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = True
    assert "".join(deltas), "no output_text deltas"
    assert completed, "no response.completed event"


def check_models_list(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert set(MODELS) <= ids, f"aliases missing from /v1/models: {sorted(ids)}"


def check_mid_stream_failure(client: OpenAI) -> None:
    """A stream that breaks after its first byte must not look like a finished answer."""
    stream = client.chat.completions.create(
        model="remote",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_headers={"x-mock-fault": "drop-mid-stream"},
    )
    chunks = 0
    try:
        for _ in stream:
            chunks += 1
    except openai.APIError as e:
        # The gateway's SSE error event becomes an APIError carrying its code.
        assert e.code == "upstream_stream_error", f"error code {e.code!r} (body {e.body!r})"
        return
    raise AssertionError(f"the stream finished cleanly after {chunks} chunks; expected an error")


def check_model_not_found(client: OpenAI) -> None:
    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": PROMPT}]
        )
    except openai.NotFoundError as e:
        assert e.status_code == 404, e.status_code
        assert e.code == "model_not_found", f"code {e.code!r} (body {e.body!r})"
        return
    raise AssertionError("no error for an unknown model")


def requests_answered(base_url: str, model: str, status: int) -> float:
    """gateway_requests_total for `model` and `status`, summed over providers."""
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("gateway_requests_total{") and f'model="{model}"' in line and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def check_circuit_open_is_final(base_url: str) -> None:
    """An SDK with its default retries must not retry (or sleep on) a circuit_open."""
    root = base_url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(f"{root}/admin/providers/killed/open", method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
    sdk = OpenAI(base_url=base_url, api_key="unused", timeout=30.0)  # default max_retries=2
    before = requests_answered(base_url, "killed", 503)
    started = time.monotonic()
    try:
        sdk.chat.completions.create(model="killed", messages=[{"role": "user", "content": PROMPT}])
    except openai.APIStatusError as e:
        took = time.monotonic() - started
        assert e.status_code == 503, e.status_code
        assert e.code == "circuit_open", f"code {e.code!r} (body {e.body!r})"
        assert e.response.headers.get("x-should-retry") == "false", dict(e.response.headers)
        sent = requests_answered(base_url, "killed", 503) - before
        assert sent == 1, f"the SDK sent {sent} requests; x-should-retry: false means one"
        assert took < 5, f"the SDK took {took:.1f}s to report it"
        return
    raise AssertionError("no error from a forced-open circuit")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", required=True, help="gateway on the test config, e.g. http://127.0.0.1:4000/v1")
    ap.add_argument("--shipped-url", help="gateway on config/gateway.toml")
    args = ap.parse_args()

    def client(url: str) -> OpenAI:
        return OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30.0)

    c = client(args.base_url)
    checks: list[tuple[str, Callable[[], None]]] = []
    for m in MODELS:
        checks += [
            (f"{m}: chat", lambda m=m: check_chat(c, m)),
            (f"{m}: chat stream", lambda m=m: check_chat_stream(c, m)),
            (f"{m}: chat stream usage", lambda m=m: check_chat_stream_usage(c, m)),
            (f"{m}: embeddings", lambda m=m: check_embeddings(c, m)),
            (f"{m}: completion", lambda m=m: check_completion(c, m)),
        ]
        if hasattr(c, "responses"):
            checks += [
                (f"{m}: responses", lambda m=m: check_responses(c, m)),
                (f"{m}: responses stream", lambda m=m: check_responses_stream(c, m)),
            ]
    checks += [
        ("models list", lambda: check_models_list(c)),
        ("remote: mid-stream failure raises", lambda: check_mid_stream_failure(c)),
        ("model not found", lambda: check_model_not_found(c)),
        ("circuit_open is final for the SDK", lambda: check_circuit_open_is_final(args.base_url)),
    ]
    if args.shipped_url:
        shipped = client(args.shipped_url)
        checks.append(("config/gateway.toml: demo chat", lambda: check_chat(shipped, "demo")))

    passed = failed = 0
    for name, run in checks:
        try:
            run()
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3, file=sys.stdout)
        else:
            passed += 1
            print(f"ok {name}")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
