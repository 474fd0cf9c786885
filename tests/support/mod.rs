//! Test harness: a scriptable mock upstream on a real socket, a gateway started in-process
//! on `127.0.0.1:0`, and a small HTTP client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

use gateway::config::{Config, Overrides};
use gateway::runtime::{Runtime, State};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

/// How a scripted body ends.
#[derive(Clone)]
pub enum End {
    Clean,
    /// Reset the connection.
    Drop,
    /// Go silent, connection open.
    Stall,
}

/// What the upstream does with one request.
#[derive(Clone)]
pub enum Reply {
    /// Status, headers, body.
    Full(StatusCode, Vec<(&'static str, String)>, Bytes),
    /// SSE chunks `interval` apart, then `end`. `gate`, when set, is awaited before the last
    /// chunk.
    Sse {
        chunks: Vec<Bytes>,
        interval: Duration,
        end: End,
        gate: Option<Arc<Notify>>,
    },
    /// 200 with a body that sends `first` and then stalls or drops (non-stream mid-body failure).
    Partial {
        first: Bytes,
        declared_len: usize,
        end: End,
    },
    /// An SSE answer that never ends: one content chunk every `interval`, forever, with
    /// no pause long enough for any idle timer.
    Endless(Duration),
    /// Never answer.
    Hang,
    /// Wait, then reply.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::Full(
            StatusCode::from_u16(status).unwrap(),
            vec![("content-type", "application/json".into())],
            Bytes::from(v.to_string()),
        )
    }

    pub fn ok() -> Reply {
        Reply::json(200, chat_completion("hello"))
    }

    /// An SSE answer of `chunks`, `interval` apart, then `end`.
    pub fn stream(chunks: Vec<Bytes>, interval: Duration, end: End) -> Reply {
        Reply::Sse {
            chunks,
            interval,
            end,
            gate: None,
        }
    }

    pub fn sse(n: usize, interval: Duration) -> Reply {
        Reply::Sse {
            chunks: sse_chunks(n),
            interval,
            end: End::Clean,
            gate: None,
        }
    }
}

pub fn chat_completion(text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    })
}

/// `n` chat chunks and a `[DONE]`.
pub fn sse_chunks(n: usize) -> Vec<Bytes> {
    let mut v: Vec<Bytes> = (0..n)
        .map(|i| {
            Bytes::from(format!(
                "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"c{i} \"}}}}]}}\n\n"
            ))
        })
        .collect();
    v.push(Bytes::from_static(b"data: [DONE]\n\n"));
    v
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

/// A scriptable upstream on a real socket.
pub struct Upstream {
    pub addr: SocketAddr,
    /// `https` when started with [`Upstream::start_tls`].
    scheme: &'static str,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    /// Response bodies or pending handlers dropped before they finished (peer went away).
    pub cancelled: Arc<AtomicUsize>,
    pub cancel_notify: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Self::start_with(None, handler).await
    }

    /// The same upstream behind TLS with `tls` (HTTP/1.1 and HTTP/2 by the ALPN it offers).
    pub async fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(tls)), handler).await
    }

    async fn start_with(
        tls: Option<tokio_rustls::TlsAcceptor>,
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let cancel_notify = Arc::new(Notify::new());
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (rec, can, note) = (recorded.clone(), cancelled.clone(), cancel_notify.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stop_rx => break,
                    a = listener.accept() => a.unwrap(),
                };
                let (rec, can, note, handler) =
                    (rec.clone(), can.clone(), note.clone(), handler.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (rec, can, note, handler) =
                            (rec.clone(), can.clone(), note.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let r = Recorded {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            let n = {
                                let mut g = rec.lock().unwrap();
                                g.push(r.clone());
                                g.len() - 1
                            };
                            let reply = handler(&r, n);
                            let guard = CancelGuard {
                                armed: true,
                                count: can,
                                notify: note,
                            };
                            Ok::<_, Infallible>(render(reply, guard).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        // A failed handshake (a client that does not trust us) just ends here.
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            scheme,
            recorded,
            cancelled,
            cancel_notify,
            _stop: stop_tx,
        }
    }

    /// Base URL for a provider: `http://ADDR/v1` (`https` for [`Upstream::start_tls`]).
    pub fn url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.recorded.lock().unwrap().len()
    }

    /// Waits (up to `limit`) until `n` bodies/handlers were cancelled.
    pub async fn wait_cancelled(&self, n: usize, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.cancel_notify.notified();
            if self.cancelled.load(Ordering::SeqCst) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.cancelled.load(Ordering::SeqCst) >= n;
            }
        }
    }
}

struct CancelGuard {
    armed: bool,
    count: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_waiters();
        }
    }
}

async fn render(reply: Reply, mut guard: CancelGuard) -> Response<ScriptBody> {
    match reply {
        Reply::Hang => {
            // The guard fires when hyper drops this future (connection closed).
            let _g = guard;
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Delay(d, inner) => {
            tokio::time::sleep(d).await;
            Box::pin(render(*inner, guard)).await
        }
        Reply::Full(status, headers, body) => {
            guard.armed = false;
            let mut r = Response::new(ScriptBody::new(
                vec![body],
                Duration::ZERO,
                End::Clean,
                None,
                None,
            ));
            *r.status_mut() = status;
            for (k, v) in headers {
                r.headers_mut()
                    .append(k, HeaderValue::from_str(&v).unwrap());
            }
            r
        }
        Reply::Sse {
            chunks,
            interval,
            end,
            gate,
        } => {
            let mut r = Response::new(ScriptBody::new(chunks, interval, end, gate, Some(guard)));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        Reply::Endless(interval) => {
            let mut body = ScriptBody::new(Vec::new(), interval, End::Stall, None, Some(guard));
            body.repeat = Some(sse_chunks(1).swap_remove(0));
            let mut r = Response::new(body);
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream"),
            );
            r
        }
        Reply::Partial {
            first,
            declared_len,
            end,
        } => {
            let mut r = Response::new(ScriptBody::new(
                vec![first],
                Duration::ZERO,
                end,
                None,
                Some(guard),
            ));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert("content-length", HeaderValue::from(declared_len));
            r
        }
    }
}

/// A scripted response body.
pub struct ScriptBody {
    chunks: std::collections::VecDeque<Bytes>,
    interval: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    end: End,
    gate: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    guard: Option<CancelGuard>,
    done: bool,
    /// Sent again and again once `chunks` is empty ([`Reply::Endless`]).
    repeat: Option<Bytes>,
}

impl ScriptBody {
    fn new(
        chunks: Vec<Bytes>,
        interval: Duration,
        end: End,
        gate: Option<Arc<Notify>>,
        guard: Option<CancelGuard>,
    ) -> Self {
        let gate = gate.map(
            |g| -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
                Box::pin(async move { g.notified().await })
            },
        );
        ScriptBody {
            chunks: chunks.into(),
            interval,
            sleep: None,
            end,
            gate,
            guard,
            done: false,
            repeat: None,
        }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        if self.chunks.len() == 1 && self.gate.is_some() {
            if self.gate.as_mut().unwrap().as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.gate = None;
        }
        if let Some(c) = self.chunks.pop_front().or_else(|| self.repeat.clone()) {
            if !self.interval.is_zero() {
                self.sleep = Some(Box::pin(tokio::time::sleep(self.interval)));
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        match self.end {
            End::Clean => {
                self.done = true;
                if let Some(mut g) = self.guard.take() {
                    g.armed = false;
                }
                Poll::Ready(None)
            }
            End::Drop => {
                self.done = true;
                if let Some(mut g) = self.guard.take() {
                    g.armed = false;
                }
                Poll::Ready(Some(Err("scripted drop".into())))
            }
            End::Stall => Poll::Pending,
        }
    }
}

/// A gateway serving `toml` on `127.0.0.1:0`, stopped on drop.
pub struct Gateway {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    pub async fn start(toml: &str) -> Gateway {
        let config = Config::parse_with(toml, &Overrides::default(), &|n| std::env::var(n).ok())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let runtime = Runtime::build(config, 1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State::new(runtime, "test.toml".into());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::server::run(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            state,
            stop: Some(tx),
            task,
        }
    }

    /// A gateway serving `toml`, written to a fresh file that reloads will read.
    pub async fn start_file(toml: &str) -> (Gateway, std::path::PathBuf) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let config = Config::load(&path, &Overrides::default())
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let runtime = Runtime::build(config, 1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State::new(runtime, path.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway::server::run(listener, state.clone(), async {
            let _ = rx.await;
        }));
        (
            Gateway {
                addr,
                state,
                stop: Some(tx),
                task,
            },
            path,
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        collect(send(&client(), "GET", &self.url("/metrics"), &[], "").await)
            .await
            .text()
    }

    /// The value of one sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Begins shutdown; returns the server task to await.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One provider `up` at `url` with the given extra provider TOML, alias `m` → `up/upstream-model`.
pub fn config_for(url: &str, provider_extra: &str) -> String {
    format!(
        "[providers.up]\nbase_url = \"{url}\"\n{provider_extra}\n\n[models.m]\ntargets = [\"up/upstream-model\"]\n"
    )
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and returns the response with its body unread.
pub async fn send(
    c: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Incoming> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    c.request(b.body(Full::new(body.into())).unwrap())
        .await
        .expect("gateway answers")
}

/// A collected response.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    /// Asserts an OpenAI-shaped gateway error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {}", self.text());
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["type"].is_string());
        assert!(v["error"].get("param").is_some_and(|p| p.is_null()));
    }
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .expect("body completes");
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn post(url: &str, body: &str) -> Got {
    collect(
        send(
            &client(),
            "POST",
            url,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await,
    )
    .await
}

pub async fn post_with(url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    collect(send(&client(), "POST", url, headers, body.to_string()).await).await
}

/// Reads a streamed body to its end or error; returns the bytes and whether it ended cleanly.
pub async fn read_stream(resp: Response<Incoming>) -> (String, bool) {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("stream makes progress")
        {
            None => return (String::from_utf8_lossy(&out).into_owned(), true),
            Some(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
pub const CHAT_STREAM: &str =
    r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// The value of the sample `name{labels}` in an exposition, 0 when absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Polls `cond` every 10 ms until it holds (at most 20 s): waits for a state, not a time.
pub async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An upstream whose SSE answers (`n` chunks) hold their last chunk until `gate` opens.
pub async fn gated(n: usize) -> (Upstream, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = Upstream::start(move |_, _| Reply::Sse {
        chunks: sse_chunks(n),
        interval: Duration::ZERO,
        end: End::Clean,
        gate: Some(g.clone()),
    })
    .await;
    (up, gate)
}

/// The JSON of the last SSE event of `text`, which must be a `data:` event.
pub fn last_event(text: &str) -> serde_json::Value {
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let json = last
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("last event is not data: {text:?}"));
    serde_json::from_str(json).unwrap()
}

/// POSTs [`CHAT_STREAM`] and returns the response with its body unread.
pub async fn stream_post(url: &str) -> Response<Incoming> {
    send(&client(), "POST", url, &[], CHAT_STREAM).await
}

/// Requests holding a slot of `provider` in the gateway's current config.
pub fn in_flight(gw: &Gateway, provider: &str) -> u32 {
    gw.state.runtime().providers[provider]
        .health
        .bulkhead
        .in_flight()
}

/// Reads from `s`, discarding what the peer sends (a server's preface or settings), until the
/// peer closes it (EOF or reset); `Err` if it is still open after `within`.
pub async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all)
        .await
        .map_err(|_| format!("still open after {within:?}"))
}

/// The gateway binary with `args`, its environment rid of `GATEWAY_CONFIG` and `RUST_LOG`
/// so neither the developer's shell nor CI changes what a test runs.
pub fn gateway_command(args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    c.args(args)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("RUST_LOG");
    c
}
