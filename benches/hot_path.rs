//! The per-request CPU work on the hot path, without sockets: read `model` and `stream`
//! from the body ([`payload::inspect`]), find the chain of targets ([`router::resolve`]),
//! splice the target's model into the body ([`payload::rewrite`]), and all three in a row.
//!
//! Bodies are shaped like the OpenAI SDK sends them (`messages` first, `model` after), so
//! `inspect` has to skip the whole conversation before it finds `model`: the large body is
//! the worst case of a long chat history.
//!
//! It also measures the routing decision itself ([`Route::order`]): gathering each target's
//! figures (statistics, in-flight) and ordering them, for chains of 2, 8 and 32 targets under
//! each strategy.
//!
//! And the two translations a `/v1/messages` request to an OpenAI-compatible target costs:
//! its request to chat, and the chat answer back.
//!
//! Run with `cargo bench --bench hot_path` (`-- order` for the routing decision alone).
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use std::sync::LazyLock;

use bytes::Bytes;
use divan::Bencher;
use divan::counter::BytesCount;
use gateway::config::{Config, Overrides, Strategy};
use gateway::payload::{inspect, rewrite};
use gateway::runtime::Runtime;
use gateway::runtime::route::{Route, resolve};

/// The allocator the binary runs with (src/main.rs), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // Ten times divan's default sample count: the whole run still takes about a second, and
    // medians stay steady on a machine that is busy compiling.
    divan::Divan::default()
        .sample_count(1000)
        .config_with_args()
        .main();
}

/// A few providers (in-process mocks and HTTP servers on loopback, which build a real
/// pooled client) and aliases of different chain lengths.
const CONFIG: &str = r#"
[providers.demo]
kind = "mock"

[providers.openai]
base_url = "http://127.0.0.1:9/v1"
api_keys = ["sk-bench-0000"]

[providers.local]
base_url = "http://127.0.0.1:11434/v1"

[providers.backup]
base_url = "http://127.0.0.1:8001/v1"

[models."gpt-4o"]
strategy = "failover"
targets = ["openai/gpt-4o", "backup/gpt-4o", "local/llama3.1:8b"]

[models.coder]
strategy = "balanced"
targets = [
  { provider = "openai", model = "gpt-4o-mini", weight = 1, input_cost = 0.15, output_cost = 0.60 },
  { provider = "local",  model = "qwen2.5-coder:7b", weight = 3 },
]

[models.demo]
targets = ["demo/mock-model"]
"#;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    let config = Config::parse_with(CONFIG, &Overrides::default(), &|_| None)
        .expect("bench config is valid");
    Runtime::build(config, 1).expect("bench config compiles")
});

/// Request bodies, by name.
#[derive(Debug, Clone, Copy)]
enum Body {
    /// A one-question chat completion, ~300 bytes.
    Small,
    /// A long conversation, ~100 KB.
    Large,
}

static SMALL: LazyLock<Bytes> = LazyLock::new(|| {
    Bytes::from_static(
        br#"{"messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly."},{"role":"user","content":"What is the capital of France, and what is it famous for?"}],"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"max_tokens":256}"#,
    )
});

static LARGE: LazyLock<Bytes> = LazyLock::new(|| {
    // Escapes and non-ASCII text make the parser take its slow paths too.
    let turn = "Here is the next part of the code review. The function \\\"handle\\\" \
                returns early when the queue is full; caf\u{e9} \u{2014} is that intended?\\n\
                Please explain step by step and quote the lines you mean.";
    let mut s = String::with_capacity(110_000);
    s.push_str(
        r#"{"messages":[{"role":"system","content":"You are a meticulous senior reviewer."}"#,
    );
    let mut i = 0;
    while s.len() < 100_000 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        s.push_str(&format!(r#",{{"role":"{role}","content":"[{i}] {turn}"}}"#));
        i += 1;
    }
    s.push_str(
        r#"],"model":"gpt-4o","stream":true,"temperature":0.2,"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]}"#,
    );
    Bytes::from(s)
});

impl Body {
    fn bytes(self) -> &'static Bytes {
        match self {
            Body::Small => &SMALL,
            Body::Large => &LARGE,
        }
    }
}

const BODIES: [Body; 2] = [Body::Small, Body::Large];

#[divan::bench(args = BODIES)]
fn inspect_body(bencher: Bencher, body: Body) {
    let b = body.bytes();
    bencher
        .counter(BytesCount::of_slice(b))
        .bench(|| inspect(divan::black_box(b)).expect("valid body"));
}

#[divan::bench(args = ["gpt-4o", "coder", "demo", "local/meta-llama/Llama-3-8B", "nope"])]
fn resolve_model(bencher: Bencher, model: &str) {
    let rt = &*RUNTIME;
    bencher.bench(|| {
        resolve(rt, divan::black_box(model)).map(|plan| divan::black_box(plan.targets().len()))
    });
}

#[divan::bench(args = BODIES)]
fn rewrite_body(bencher: Bencher, body: Body) {
    let b = body.bytes();
    let range = inspect(b).expect("valid body").model_range;
    let plan = resolve(&RUNTIME, "gpt-4o").expect("alias exists");
    let new_model = &plan.targets()[0].model_json;
    bencher.bench(|| {
        rewrite(
            divan::black_box(b),
            divan::black_box(&range),
            divan::black_box(new_model),
        )
    });
}

/// What the proxy does for each request before it sends anything: parse, route, and
/// rewrite the body for the first target.
#[divan::bench(args = BODIES)]
fn parse_route_rewrite(bencher: Bencher, body: Body) {
    let b = body.bytes();
    let rt = &*RUNTIME;
    bencher.counter(BytesCount::of_slice(b)).bench(|| {
        let b = divan::black_box(b);
        let head = inspect(b).expect("valid body");
        let plan = resolve(rt, &head.model).expect("alias exists");
        let target = &plan.targets()[0];
        (
            head.stream,
            rewrite(b, &head.model_range, &target.model_json),
        )
    });
}

/// A runtime with one alias `chain` of `n` targets over four providers, with statistics
/// recorded for every target but the last (a target not yet measured takes the other path).
fn chain_runtime(n: usize, strategy: Strategy) -> Runtime {
    let mut text = String::new();
    for p in 0..4 {
        text.push_str(&format!("[providers.p{p}]\nkind = \"mock\"\n"));
    }
    text.push_str(&format!(
        "[models.chain]\nstrategy = \"{}\"\ntargets = [\n",
        strategy.as_str()
    ));
    for i in 0..n {
        let cost = if i % 3 == 0 {
            String::new()
        } else {
            format!(", input_cost = {}.5, output_cost = {}.0", i % 5, i % 7 + 1)
        };
        text.push_str(&format!(
            "  {{ provider = \"p{}\", model = \"model-{i}\", weight = {}{cost} }},\n",
            i % 4,
            i % 3 + 1
        ));
    }
    text.push_str("]\n");
    let config =
        Config::parse_with(&text, &Overrides::default(), &|_| None).expect("bench config is valid");
    let rt = Runtime::build(config, 1).expect("bench config compiles");
    let now = tokio::time::Instant::now();
    let routing = rt.config.routing.clone();
    let route = &rt.models["chain"];
    for (i, t) in route.targets.iter().enumerate().take(n - 1) {
        let ms = 100 + 37 * i as u64;
        for k in 0..5 {
            t.stats.observe_latency(
                false,
                std::time::Duration::from_millis(ms + k),
                routing.ewma_alpha,
            );
            t.stats
                .observe_verdict(i % 4 != k as usize, now, routing.success_window);
        }
    }
    rt
}

const STRATEGIES: [Strategy; 5] = Strategy::ALL;

/// One request's routing decision: [`Route::order`] over a chain of `N` targets.
#[divan::bench(consts = [2, 8, 32], args = STRATEGIES)]
fn route_order<const N: usize>(bencher: Bencher, strategy: Strategy) {
    let rt = chain_runtime(N, strategy);
    let route: &Route = &rt.models["chain"];
    let routing = &rt.config.routing;
    let now = tokio::time::Instant::now();
    bencher.bench(|| {
        route.order(
            divan::black_box(strategy),
            divan::black_box(false),
            routing,
            now,
        )
    });
}

/// The commit-point scan a stream goes through before its first byte reaches the client
/// (contract §6): an OpenAI role-only chunk, then the first content chunk.
#[divan::bench]
fn first_content_scan(bencher: Bencher) {
    const ROLE: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
    const TEXT: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n";
    bencher.bench(|| {
        let mut scan = gateway::proxy::commit::FirstContent::default();
        let first = scan.feed(divan::black_box(ROLE));
        let second = scan.feed(divan::black_box(TEXT));
        (first, second)
    });
}

/// A stream through a running gateway on loopback (an in-process mock provider with no
/// latency and no gap between chunks): request sent → first body frame, which holds the
/// preamble and the first content event, then the rest drained so the connection is reused.
#[divan::bench(sample_count = 200)]
fn stream_first_content_http(b: Bencher) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, _stop) = tokio.block_on(async {
        let config = Config::parse_with(
            "[providers.demo]\nkind = \"mock\"\n[models.m]\ntargets = [\"demo/x\"]\n",
            &Overrides::default(),
            &|_| None,
        )
        .unwrap();
        let rt = Runtime::build(config, 1).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = gateway::runtime::State::new(rt, "bench.toml".into());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(gateway::server::run(listener, state, async {
            let _ = rx.await;
        }));
        (format!("http://{addr}/v1/chat/completions"), tx)
    });
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from_static(
        br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    b.bench_local(|| {
        tokio.block_on(async {
            let req = http::Request::post(&url)
                .header("x-mock-chunk-interval", "0ms")
                .body(Full::new(body.clone()))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            let mut body = resp.into_body();
            let first = body.frame().await.unwrap().unwrap();
            // Drain the rest so the connection is reused.
            while body.frame().await.is_some() {}
            first
        })
    });
}

/// The bench's Anthropic `/v1/messages` request, and the mock's chat answer to it.
const MESSAGES_REQUEST: &[u8] =
    br#"{"model":"bench","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}"#;
const CHAT_ANSWER: &[u8] = br#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"This is a mock reply from gateway. You said: hello","role":"assistant"}}],"created":1796073401,"id":"chatcmpl-mock000000000001","model":"x","object":"chat.completion","usage":{"completion_tokens":10,"prompt_tokens":1,"total_tokens":11}}"#;

/// Translation of a short Anthropic request to chat (contract §10), as `/v1/messages` to an
/// OpenAI-compatible target does for every request.
#[divan::bench]
fn translate_request(bencher: Bencher) {
    bencher.bench(|| {
        gateway::translate::messages_to_chat(divan::black_box(MESSAGES_REQUEST), "mock-model")
    });
}

/// Translation of the chat answer back to an Anthropic message.
#[divan::bench]
fn translate_answer(bencher: Bencher) {
    bencher.bench(|| {
        gateway::translate::chat_to_messages_response(divan::black_box(CHAT_ANSWER), "bench")
    });
}

/// A coding agent's request as Claude Code sends it, some way into a session: a system prompt
/// in cached blocks, 20 tools, and 60 turns of tool calls and results (about 100 KB).
static AGENT_REQUEST: LazyLock<Vec<u8>> = LazyLock::new(|| {
    use serde_json::json;
    let tools: Vec<_> = (0..20)
        .map(|t| {
            json!({
                "name": format!("tool_{t}"),
                "description": "Reads a file from the workspace and returns its text. ".repeat(4),
                "input_schema": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "absolute path"},
                    "offset": {"type": "integer"}, "limit": {"type": "integer"}},
                    "required": ["path"]},
            })
        })
        .collect();
    let mut messages =
        vec![json!({"role": "user", "content": "Fix the failing test in src/lib.rs."})];
    for k in 0..60 {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me look at the file first."},
            {"type": "tool_use", "id": format!("toolu_{k:04}"), "name": "tool_1",
             "input": {"path": "/work/src/lib.rs", "offset": k, "limit": 200}},
        ]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{k:04}"),
             "content": "fn main() {\n    println!(\"hello\");\n}\n".repeat(25)},
        ]}));
    }
    serde_json::to_vec(&json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Follow the repository's conventions. ".repeat(50)},
        ],
        "tools": tools,
        "messages": messages,
    }))
    .unwrap()
});

/// [`AGENT_REQUEST`] translated to chat.
#[divan::bench]
fn translate_request_agent(bencher: Bencher) {
    let body = AGENT_REQUEST.as_slice();
    bencher
        .counter(BytesCount::new(body.len()))
        .bench(|| gateway::translate::messages_to_chat(divan::black_box(body), "mock-model"));
}

/// An OpenAI chat request some way into a coding agent's session (aider or an SDK script
/// against a Claude target): a system prompt, 20 tools, 60 turns of tool calls and results.
static AGENT_CHAT_REQUEST: LazyLock<Vec<u8>> = LazyLock::new(|| {
    use serde_json::json;
    let tools: Vec<_> = (0..20)
        .map(|t| {
            json!({"type": "function", "function": {
                "name": format!("tool_{t}"),
                "description": "Reads a file from the workspace and returns its text. ".repeat(4),
                "parameters": {"type": "object", "properties": {
                    "path": {"type": "string", "description": "absolute path"},
                    "offset": {"type": "integer"}, "limit": {"type": "integer"}},
                    "required": ["path"]},
            }})
        })
        .collect();
    let mut messages = vec![
        json!({"role": "system", "content": "Follow the repository's conventions. ".repeat(50)}),
        json!({"role": "user", "content": "Fix the failing test in src/lib.rs."}),
    ];
    for k in 0..60 {
        messages.push(json!({"role": "assistant", "content": "Let me look at the file first.",
            "tool_calls": [{"id": format!("call_{k:04}"), "type": "function", "function": {
                "name": "tool_1",
                "arguments": format!(r#"{{"path":"/work/src/lib.rs","offset":{k},"limit":200}}"#)}}]}));
        messages.push(
            json!({"role": "tool", "tool_call_id": format!("call_{k:04}"),
            "content": "fn main() {\n    println!(\"hello\");\n}\n".repeat(25)}),
        );
    }
    serde_json::to_vec(&json!({
        "model": "claude", "max_tokens": 32000, "stream": true, "tools": tools, "messages": messages,
    }))
    .unwrap()
});

/// [`AGENT_CHAT_REQUEST`] translated to an Anthropic request.
#[divan::bench]
fn translate_chat_request_agent(bencher: Bencher) {
    let body = AGENT_CHAT_REQUEST.as_slice();
    bencher
        .counter(BytesCount::new(body.len()))
        .bench(|| gateway::translate::chat_to_messages(divan::black_box(body), "claude-x"));
}

/// One streamed chat chunk of text, as an OpenAI-compatible server sends it, translated to
/// the Anthropic events Claude Code reads (after the stream's first chunk).
#[divan::bench]
fn translate_stream_chunk(bencher: Bencher) {
    const CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"},\"finish_reason\":null}]}\n\n";
    let mut tr = gateway::translate::ChatToMessagesStream::new("bench");
    tr.feed(CHUNK);
    bencher.bench_local(|| tr.feed(divan::black_box(CHUNK)));
}
