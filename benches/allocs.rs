//! Heap allocations per proxied request (issue 12, item 2): the gateway and a `gateway
//! mock` upstream run in this process under dhat's counting allocator; a client sends the
//! same requests straight to the mock and then through the gateway, and the difference is
//! what the gateway allocates per request (blocks and bytes), for a plain chat request, a
//! streamed one, and an Anthropic `/v1/messages` request translated to chat.
//!
//! It also measures the heap held per stream in flight: 500 streams at once, sampled
//! half-way, through the gateway minus straight to the mock.
//!
//! The log line is off (no subscriber is installed here; it is formatted into a reused
//! buffer and costs no allocation), metrics and routing are on. Counts are exact and
//! repeatable, unlike times: this is the number to watch when changing the hot path.
//!
//! Run with `cargo bench --bench allocs` (`DHAT_OUT=/tmp/dhat.json` to write the profile,
//! `ALLOCS_ONLY=translated` to run only the requests whose name holds that word).
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use bytes::Bytes;
use gateway::config::{Config, Overrides};
use gateway::runtime::{Runtime, State};
use gateway::upstream::mock::MockOptions;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const N: u64 = 2000;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(client: &HttpClient, url: &str, body: &'static [u8], n: u64) {
    for _ in 0..n {
        let req = http::Request::post(url)
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.into_body().collect().await.unwrap();
    }
}

/// Blocks and bytes allocated per request while sending `n` requests.
async fn per_request(client: &HttpClient, url: &str, body: &'static [u8]) -> (f64, f64) {
    // Warm pools, lazily built state and metric label sets first.
    send(client, url, body, 200).await;
    let before = dhat::HeapStats::get();
    send(client, url, body, N).await;
    let after = dhat::HeapStats::get();
    (
        (after.total_blocks - before.total_blocks) as f64 / N as f64,
        (after.total_bytes - before.total_bytes) as f64 / N as f64,
    )
}

/// Heap bytes live per stream while `n` streams are under way at once (sampled half-way
/// through them), straight to the mock minus through the gateway.
async fn live_per_stream(client: &HttpClient, url: String, n: usize) -> f64 {
    let base = dhat::HeapStats::get().curr_bytes;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .header("x-mock-chunks", "10")
                .header("x-mock-chunk-interval", "200ms")
                .body(Full::new(Bytes::from_static(
                    br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                )))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let live = dhat::HeapStats::get().curr_bytes.saturating_sub(base);
    for t in tasks {
        t.await.unwrap();
    }
    live as f64 / n as f64
}

/// Whether the measurement `name` runs: every one, or with `ALLOCS_ONLY=word` those whose
/// name holds that word.
fn selected(name: &str) -> bool {
    match std::env::var("ALLOCS_ONLY") {
        Ok(only) => name.contains(&only),
        Err(_) => true,
    }
}

fn main() {
    // With DHAT_OUT set, also write dhat's profile there (every allocation site, for
    // dh_view.html or a script); otherwise count only.
    let _profiler = match std::env::var("DHAT_OUT") {
        Ok(path) => dhat::Profiler::builder().file_name(path).build(),
        Err(_) => dhat::Profiler::builder().testing().build(),
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async {
        let mock = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock_addr = mock.local_addr().unwrap();
        let opts = MockOptions {
            chunks: 5,
            chunk_interval: std::time::Duration::ZERO,
            ..MockOptions::default()
        };
        tokio::spawn(gateway::server::serve_mock(
            mock,
            opts,
            std::future::pending(),
        ));
        let toml = format!(
            "[providers.up]\nbase_url = \"http://{mock_addr}/v1\"\n\
             [models.m]\ntargets = [\"up/mock-model\"]\n"
        );
        let config = Config::parse_with(&toml, &Overrides::default(), &|_| None).unwrap();
        let rt = Runtime::build(config, 1).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw_addr = listener.local_addr().unwrap();
        let state = State::new(rt, "bench.toml".into());
        tokio::spawn(gateway::server::run(
            listener,
            state,
            std::future::pending(),
        ));

        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let chat: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
        let stream: &[u8] =
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;
        let messages: &[u8] =
            br#"{"model":"m","max_tokens":64,"messages":[{"role":"user","content":"hello"}]}"#;
        println!("| request | gateway's allocations per request | bytes per request |");
        println!("|---|---:|---:|");
        for (name, path, body) in [
            ("chat, passed through", "/v1/chat/completions", chat),
            ("chat, streamed (5 chunks)", "/v1/chat/completions", stream),
            ("/v1/messages, translated to chat", "/v1/messages", messages),
        ] {
            if !selected(name) {
                continue;
            }
            // The mock answers /v1/messages itself: the direct baseline for the translated
            // request is the chat request the gateway sends in its place.
            let direct_body = if path == "/v1/messages" { chat } else { body };
            let direct = per_request(
                &client,
                &format!("http://{mock_addr}/v1/chat/completions"),
                direct_body,
            )
            .await;
            let through = per_request(&client, &format!("http://{gw_addr}{path}"), body).await;
            println!(
                "| {name} | {:.1} | {:.0} |",
                through.0 - direct.0,
                through.1 - direct.1
            );
        }
        // Memory held per stream in flight: 500 at once, sampled half-way.
        if !selected("streams in flight") {
            return;
        }
        let n = 500;
        let direct = live_per_stream(
            &client,
            format!("http://{mock_addr}/v1/chat/completions"),
            n,
        )
        .await;
        let through =
            live_per_stream(&client, format!("http://{gw_addr}/v1/chat/completions"), n).await;
        println!(
            "\nheap held per stream in flight ({n} at once): {:.1} KiB",
            (through - direct) / 1024.0
        );
    });
}
