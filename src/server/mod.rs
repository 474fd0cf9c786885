//! The listener: accepts connections (HTTP/1.1 and h2c on one port, or with `[server.tls]`
//! HTTPS with HTTP/1.1 and HTTP/2 chosen by ALPN), serves each on its own task, routes the
//! gateway's endpoints, and drains on shutdown.
//!
//! The accept loop only accepts: a TLS handshake, or the wait for a plain connection's first
//! bytes (which tell HTTP/1 from h2c), runs on the connection's own task, bounded by
//! `header_read_timeout`, so a client that connects and stays silent holds up nobody; an
//! HTTP/2 connection on which no request has begun by then is closed too.
//! [`run`] takes the listener and the shutdown signal from its caller, so tests own both.
//! On shutdown the listener is closed at once (new connections are refused), `/readyz`
//! answers 503 on connections still open, and requests in flight get `shutdown_timeout`
//! to finish.

pub mod admin;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::body::{BoxError, ResponseBody};
use crate::error::GatewayError;
use crate::proxy;
use crate::runtime::State;
use crate::tls::ServerTls;

/// Serves the gateway on `listener` until `shutdown` resolves, then drains: the listener
/// closes at once, `/readyz` answers 503, requests and streams in flight get
/// `shutdown_timeout` to finish; streams still open then end with an error event.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = state.runtime().server.clone();
    let handler_state = state.clone();
    let handler = move |req: Request<Incoming>, peer: SocketAddr| {
        let state = handler_state.clone();
        async move { route(&state, req, peer).await }
    };
    let stop_state = state.clone();
    serve(
        listener,
        state.tls.clone(),
        server.header_read_timeout,
        handler,
        async {
            shutdown.await;
            state.start_draining();
            crate::runtime::reload::notify(&[sd_notify::NotifyState::Stopping]);
            tracing::info!(
                "draining: listener closed, waiting up to {} for requests in flight",
                humantime::format_duration(server.shutdown_timeout)
            );
        },
        server.shutdown_timeout,
        move || stop_state.hard_stop.cancel(),
    )
    .await
}

async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let start = Instant::now();
    let path = req.uri().path();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match path {
        "/healthz" if get => text(StatusCode::OK, "ok\n"),
        "/readyz" if get => {
            if state.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" if get => {
            let body = state
                .telemetry
                .metrics
                .render(&state.runtime().scrape(Instant::now()));
            let mut r = Response::new(ResponseBody::full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::observe::metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" | "/readyz" | "/metrics" => {
            GatewayError::MethodNotAllowed(req.method().to_string()).to_response()
        }
        p if p == "/admin" || p.starts_with("/admin/") => {
            // Boxed, like the proxy below: the route future stays small on the hot path.
            Box::pin(crate::server::admin::handle(state, req, peer)).await
        }
        p if p == "/v1" || p.starts_with("/v1/") => {
            let (parts, body) = req.into_parts();
            let id = proxy::request_id(&parts);
            // Boxed: the proxy's future is large, and unboxed every layer above (hyper's
            // dispatcher included) would copy it whole each time it moves.
            Box::pin(proxy::handle(
                state,
                Request::from_parts(parts, body),
                id,
                start,
            ))
            .await
        }
        p => GatewayError::NotFound(p.to_string()).to_response(),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// How long streams cut at the end of a drain get to send their error event.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections on `listener` and serves `handler` on each until `shutdown`
/// resolves; then closes the listener and waits up to `drain` for open connections. If
/// some are still open then, `hard_stop` runs and they get a short grace to end.
///
/// With `tls`, every connection first completes a TLS handshake (on its own task, within
/// `header_read_timeout`) with the server config current at that moment.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    header_read_timeout: Duration,
    handler: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    hard_stop: impl FnOnce(),
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    auto.http2().timer(TokioTimer::new());
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let builders = Arc::new(Builders {
        auto,
        http1,
        header_read_timeout,
    });
    // Tells connections still waiting for their first bytes that the drain began: they close
    // at once instead of holding the drain for up to `header_read_timeout`.
    let (draining, drain_rx) = tokio::sync::watch::channel(false);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Without NODELAY a response's head and body, written separately, can wait ~40 ms
        // for a delayed ACK on keep-alive connections.
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        // Taken now, so a drain that starts during the handshake still waits for it.
        let watcher = graceful.watcher();
        let (builders, tls) = (builders.clone(), tls.clone());
        let mut drain_rx = drain_rx.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let first = tokio::time::timeout(header_read_timeout, speaks_http1(&stream));
                    let first = tokio::select! {
                        first = first => first,
                        _ = drain_rx.wait_for(|d| *d) => return,
                    };
                    match first {
                        Ok(Ok(http1)) => {
                            let io = TokioIo::new(stream);
                            serve_connection(io, http1, &builders, h, peer, watcher).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => {
                            tracing::debug!(
                                "{peer} sent nothing within header_read_timeout ({}); closed",
                                humantime::format_duration(header_read_timeout)
                            );
                            return;
                        }
                    }
                }
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    let stream = match tokio::time::timeout(header_read_timeout, handshake).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(
                                "TLS handshake with {peer} not done within header_read_timeout ({}); closed",
                                humantime::format_duration(header_read_timeout)
                            );
                            return;
                        }
                    };
                    // ALPN said HTTP/1.1: no need to sniff. A client that named no protocol
                    // (or h2) goes to the sniffing server.
                    let http1 = stream.get_ref().1.alpn_protocol() == Some(b"http/1.1");
                    let io = TokioIo::new(stream);
                    serve_connection(io, http1, &builders, h, peer, watcher).await
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = draining.send(true);
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        () = &mut all_closed => return Ok(()),
        () = tokio::time::sleep(drain) => {}
    }
    tracing::warn!(
        "shutdown_timeout ({}) reached with requests still open; ending their streams",
        humantime::format_duration(drain)
    );
    hard_stop();
    // Streams send their error event and close; give them a moment to flush it.
    let _ = tokio::time::timeout(HARD_STOP_GRACE, all_closed).await;
    Ok(())
}

/// The two servers a connection may get, and the wait for its first request.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    header_read_timeout: Duration,
}

/// Serves one connection: with hyper's HTTP/1 server when it is known to speak HTTP/1
/// (`http1`), else with hyper-util's `auto` server, which tells HTTP/1 from HTTP/2 by its
/// first bytes.
///
/// HTTP/2 has no header timer, and `auto`'s sniff waits for bytes without one, so an `auto`
/// connection on which no request has begun within `header_read_timeout` of its handshake
/// (or h2c preface) is closed: a client that went silent there holds a connection for at
/// most twice `header_read_timeout` in all, as one that stalls between the bytes of an
/// HTTP/1 request head can. Once a request has begun, the connection lives as HTTP/2
/// connections do (until either side closes it, or the drain).
async fn serve_connection<I, H, F, B>(
    io: I,
    http1: bool,
    builders: &Builders,
    handler: H,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let answer = move |req, started: Option<&AtomicBool>| {
        if let Some(started) = started {
            started.store(true, Ordering::Relaxed);
        }
        let fut = handler(req, peer);
        async move { Ok::<_, Infallible>(fut.await) }
    };
    if http1 {
        let svc = service_fn(move |req| answer(req, None));
        let conn = builders.http1.serve_connection(io, svc);
        return watcher.watch(conn).await.map_err(BoxError::from);
    }
    let started = Arc::new(AtomicBool::new(false));
    let svc = {
        let started = started.clone();
        service_fn(move |req| answer(req, Some(&started)))
    };
    let conn = watcher.watch(builders.auto.serve_connection(io, svc).into_owned());
    tokio::pin!(conn);
    tokio::select! {
        // The connection first: a request whose bytes are already in when the timer fires
        // is read, and begun, before the flag is looked at.
        biased;
        served = &mut conn => return served,
        () = tokio::time::sleep(builders.header_read_timeout) => {}
    }
    if !started.load(Ordering::Relaxed) {
        tracing::debug!(
            "{peer} began no request within header_read_timeout ({}); closed",
            humantime::format_duration(builders.header_read_timeout)
        );
        return Ok(());
    }
    conn.await
}

/// Whether a plain connection speaks HTTP/1: its first bytes rule out HTTP/2's preface
/// (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`). They are read with `peek`, so they stay in the
/// socket for whichever server reads the connection. The caller bounds the wait.
///
/// Why not let hyper-util's `auto` server sniff every connection: it reads the first bytes
/// itself and hands them back in front of the socket, and hyper's HTTP/1 reader, seeing its
/// buffer start part-full, doubles it: 16 KiB instead of 8 per connection, held for the
/// connection's life (8 MiB more over 1,000 streams). Only a connection that sends the whole
/// preface goes to `auto` (`Ok(false)`); one that closes first is HTTP/1's to close.
async fn speaks_http1(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut head = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut head).await?;
        if n == 0 || !PREFACE.starts_with(&head[..n]) {
            return Ok(true);
        }
        if n == PREFACE.len() {
            return Ok(false);
        }
        // A prefix of the preface, and nothing more yet: `peek` would return at once again,
        // so wait a moment before looking (only an h2c client, or a stalling one, is here).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves the mock over HTTP on `listener` until `shutdown` resolves (`gateway mock`).
pub async fn serve_mock(
    listener: tokio::net::TcpListener,
    defaults: crate::upstream::mock::MockOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let defaults = std::sync::Arc::new(defaults);
    let handler = move |req: http::Request<hyper::body::Incoming>, _peer| {
        let defaults = defaults.clone();
        async move {
            let (parts, body) = req.into_parts();
            let idle = Duration::from_secs(30);
            match crate::body::read_to_bytes(body, 64 << 20, idle, None).await {
                Ok(bytes) => {
                    crate::upstream::mock::respond(
                        &parts.method,
                        parts.uri.path(),
                        &parts.headers,
                        &bytes,
                        &defaults,
                    )
                    .await
                }
                Err(_) => crate::upstream::mock::error_response(
                    http::StatusCode::BAD_REQUEST,
                    "could not read the request body",
                    "invalid_request",
                ),
            }
        }
    };
    serve(
        listener,
        None,
        Duration::from_secs(30),
        handler,
        shutdown,
        Duration::from_secs(1),
        || {},
    )
    .await
}
