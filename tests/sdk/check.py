"""The gateway as the official OpenAI Python SDK sees it, and `gateway mock` as the official
OpenAI and Anthropic Python SDKs see it.

Run by tests/sdk/run.sh against a gateway whose alias `demo` is the in-process mock and
whose alias `remote` is `gateway mock` over HTTP, and (with --mock-url) against that
`gateway mock` directly: the Messages API through the Anthropic SDK, the Responses API
stream helper through the OpenAI SDK. Prints one line per check ("ok NAME" or
"FAIL NAME: why") and ends with "N passed, M failed"; exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import urllib.request
from typing import Callable

import anthropic
import openai
from anthropic import Anthropic
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


# --- `gateway mock` directly: the Anthropic SDK on /v1/messages -------------------------

CLAUDE = "claude-mock"
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


def check_messages_create(a: Anthropic) -> None:
    r = a.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": PROMPT}])
    assert r.type == "message" and r.role == "assistant", r
    assert r.model == CLAUDE, r.model
    assert r.content[0].type == "text" and PROMPT in r.content[0].text, r.content
    assert r.stop_reason == "end_turn", r.stop_reason
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
    assert r._request_id and r._request_id.startswith("req_"), r._request_id
    counted = a.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": PROMPT}])
    assert counted.input_tokens == r.usage.input_tokens, (counted, r.usage)


def check_messages_stream(a: Anthropic) -> None:
    with a.messages.stream(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 1, f"one text delta only: {pieces!r}"
    assert final.content[0].text == "".join(pieces), (final.content, pieces)
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.input_tokens > 0, final.usage
    assert final.usage.output_tokens == len("".join(pieces).split()), final.usage


def check_messages_tool_stream(a: Anthropic) -> None:
    with a.messages.stream(
        model=CLAUDE,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Please use tool get_weather for Paris"}],
    ) as s:
        json_deltas = [e.partial_json for e in s if e.type == "input_json"]
        final = s.get_final_message()
    assert len(json_deltas) > 1, f"the input came in one piece: {json_deltas!r}"
    assert final.stop_reason == "tool_use", final.stop_reason
    tool = final.content[-1]
    assert tool.type == "tool_use" and tool.name == "get_weather", final.content
    # Built from the schema: its required properties only.
    assert tool.input == {"city": "mock"}, tool.input
    # The agent's next turn carries the tool result: the mock answers with text, the loop ends.
    r = a.messages.create(
        model=CLAUDE,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Please use tool get_weather for Paris"},
            {"role": "assistant", "content": [c.model_dump(exclude_none=True) for c in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny"}]},
        ],
    )
    assert r.stop_reason == "end_turn" and "sunny" in r.content[0].text, r


def check_messages_overloaded(a: Anthropic) -> None:
    try:
        a.messages.create(
            model=CLAUDE,
            max_tokens=64,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-mock-fault": "overloaded"},
        )
    except anthropic.APIStatusError as e:
        assert e.status_code == 529, e.status_code
        assert isinstance(e, anthropic.InternalServerError), type(e)
        assert e.body["error"]["type"] == "overloaded_error", e.body
        return
    raise AssertionError("no error for the overloaded fault")


def check_messages_stream_drop(a: Anthropic) -> None:
    """A stream cut mid-way must raise, never look like a finished message."""
    texts: list[str] = []
    try:
        with a.messages.stream(
            model=CLAUDE,
            max_tokens=64,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-mock-fault": "drop-mid-stream"},
        ) as s:
            for t in s.text_stream:
                texts.append(t)
            final = s.get_final_message()
    except Exception as e:  # noqa: BLE001 - the transport's error type depends on the SDK's HTTP client
        transport = any(c.__name__ == "TransportError" for c in type(e).__mro__)
        assert transport or isinstance(e, anthropic.APIError), f"unexpected {type(e).__name__}: {e}"
        assert texts, "no text arrived before the cut"
        return
    raise AssertionError(f"the cut stream finished cleanly after {texts!r}: {final!r}")


# --- `gateway mock` directly: the OpenAI SDK's Responses helpers --------------------------


def check_mock_responses_create(o: OpenAI) -> None:
    r = o.responses.create(model="gpt-mock", input=PROMPT)
    assert r.status == "completed", r.status
    assert PROMPT in r.output_text, r.output_text
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, r.usage


def check_mock_responses_stream_helper(o: OpenAI) -> None:
    deltas, kinds = [], []
    with o.responses.stream(model="gpt-mock", input=PROMPT) as s:
        for event in s:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert len(deltas) > 1, deltas
    assert final.output_text == "".join(deltas), (final.output_text, deltas)
    assert final.usage is not None and final.usage.output_tokens > 0, final.usage


def check_mock_responses_stream_function_call(o: OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "shell",
        "description": "run a command",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
    }
    with o.responses.stream(model="gpt-mock", input="use tool shell", tools=[tool]) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "shell", final.output
    assert calls[0].arguments == '{"command":"mock"}', calls[0].arguments


# --- the Anthropic SDK through the gateway ------------------------------------------------


def check_gateway_messages(a: Anthropic, model: str) -> None:
    r = a.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": PROMPT}])
    assert r.type == "message" and r.role == "assistant", r
    assert r.content[0].type == "text" and r.content[0].text, r.content
    assert r.stop_reason == "end_turn", r.stop_reason
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
    assert r._request_id, "no request-id on the answer"
    with a.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 1, f"one text delta only: {pieces!r}"
    assert final.content[0].text == "".join(pieces), (final.content, pieces)
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


def check_gateway_messages_errors(a: Anthropic) -> None:
    try:
        a.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    except anthropic.NotFoundError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body
        assert e.body["error"]["message"].startswith("model_not_found: "), e.body
        assert e.response.headers.get("x-should-retry") == "false", dict(e.response.headers)
    else:
        raise AssertionError("no error for an unknown model")
    texts: list[str] = []
    try:
        with a.messages.stream(
            model="claude-native",
            max_tokens=64,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-mock-fault": "drop-mid-stream"},
        ) as s:
            for t in s.text_stream:
                texts.append(t)
    except anthropic.APIError as e:
        # The gateway's `event: error` ending becomes an APIError naming its code.
        assert "upstream_stream_error" in str(e), f"{type(e).__name__}: {e}"
        return
    raise AssertionError(f"the cut stream finished cleanly after {texts!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-url", required=True, help="gateway on the test config, e.g. http://127.0.0.1:4000/v1")
    ap.add_argument("--shipped-url", help="gateway on config/gateway.toml")
    ap.add_argument("--mock-url", help="`gateway mock` itself, e.g. http://127.0.0.1:4010")
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
    root = args.base_url.rsplit("/v1", 1)[0]
    ga = Anthropic(base_url=root, api_key="unused", max_retries=0, timeout=30.0)
    checks += [
        ("gateway: anthropic messages passed through", lambda: check_gateway_messages(ga, "claude-native")),
        ("gateway: anthropic messages translated", lambda: check_gateway_messages(ga, "claude-translated")),
        ("gateway: anthropic errors and event: error", lambda: check_gateway_messages_errors(ga)),
    ]
    if args.shipped_url:
        shipped = client(args.shipped_url)
        checks.append(("config/gateway.toml: demo chat", lambda: check_chat(shipped, "demo")))
    if args.mock_url:
        a = Anthropic(base_url=args.mock_url, api_key="unused", max_retries=0, timeout=30.0)
        o = client(f"{args.mock_url}/v1")
        checks += [
            ("mock: anthropic messages.create + count_tokens", lambda: check_messages_create(a)),
            ("mock: anthropic messages.stream", lambda: check_messages_stream(a)),
            ("mock: anthropic tool_use stream", lambda: check_messages_tool_stream(a)),
            ("mock: anthropic 529 overloaded", lambda: check_messages_overloaded(a)),
            ("mock: anthropic stream cut raises", lambda: check_messages_stream_drop(a)),
            ("mock: openai responses.create", lambda: check_mock_responses_create(o)),
            ("mock: openai responses.stream helper", lambda: check_mock_responses_stream_helper(o)),
            ("mock: openai responses.stream function call", lambda: check_mock_responses_stream_function_call(o)),
        ]

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
