//! Providers and how to reach them: one pooled hyper-util client per HTTP provider (its own
//! `HttpConnector` with TCP_NODELAY and keepalive, rustls on ring passed explicitly, a
//! connect timeout over TCP *and* TLS), or the in-process mock.
//!
//! Upstream TLS trusts the public (webpki) roots, or, when the provider sets `ca_file`, only
//! the CAs in that file: a private endpoint's operator wants its own CA to be the one that
//! can vouch for it, not every public CA as well.
//!
//! The legacy client has no timeouts of its own and no cap on connections; the caller
//! ([`crate::proxy`]) applies `first_byte`/`total`, the body wrapper applies `idle`, and the
//! bulkhead caps requests in flight. Redirects are never followed: hyper's client does not.

pub mod mock;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use tower_service::Service;

use tokio::time::Instant;

use crate::body::{BoxError, OutboundBody, UpstreamBody};
use crate::config::{
    Config, ConfigError, Http2Mode, Pool, ProviderConfig, ProviderKind, ProviderSettings, Timeouts,
};
use crate::error::UpstreamError;
use crate::policy::health::Health;
use crate::policy::keys::Key;
use crate::upstream::mock::MockOptions;

/// A provider: its name, merged settings, how to reach it, and its health.
#[derive(Debug)]
pub struct Provider {
    /// Name from the config (`[providers.NAME]`).
    pub name: Arc<str>,
    /// The API it speaks (`openai`, `anthropic`) or `mock` (every API, in-process).
    pub kind: ProviderKind,
    /// Settings with defaults merged in.
    pub settings: ProviderSettings,
    /// Network client or in-process mock.
    pub backend: Backend,
    /// Breaker, budget, bulkhead and statistics: carried over by a reload when the
    /// provider's `base_url` is unchanged.
    pub health: Arc<Health>,
    /// The configured keys, handed to the carried-over key pool once the whole config has
    /// compiled (keys the pool already knows keep their state).
    pub keys: Box<[Arc<Key>]>,
}

/// `anthropic-version` sent to `kind = "anthropic"` providers unless the client sent one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// How a provider is reached.
#[derive(Debug)]
pub enum Backend {
    /// An OpenAI-compatible HTTP server.
    Http(Box<HttpUpstream>),
    /// In-process canned answers.
    Mock(MockOptions),
}

impl Provider {
    /// Builds a provider from its config section. With `prev` (the same provider in the
    /// running config, same kind and `base_url`), its health and, when the pool settings
    /// are unchanged, its connection pool carry over.
    pub fn build(
        name: &str,
        cfg: &ProviderConfig,
        root: &Config,
        now: Instant,
        prev: Option<&Provider>,
    ) -> Result<Provider, ConfigError> {
        let settings = root.provider_settings(cfg);
        let prev = prev.filter(|p| p.base_url() == cfg.base_url.as_deref() && p.kind == cfg.kind);
        // OpenAI-style providers take `Authorization: Bearer <key>`, Anthropic `x-api-key`.
        let keys: Box<[Arc<Key>]> = cfg
            .api_keys
            .iter()
            .filter_map(|k| {
                let v = match cfg.kind {
                    ProviderKind::Anthropic => HeaderValue::from_str(k),
                    _ => HeaderValue::from_str(&format!("Bearer {k}")),
                };
                Some(Arc::new(Key::new(v.ok()?, k)))
            })
            .collect();
        let health = match prev {
            // Its settings are updated once the whole new config has compiled.
            Some(p) => p.health.clone(),
            None => Arc::new(Health::new(&settings, &keys, now)),
        };
        let backend = match cfg.kind {
            ProviderKind::Mock => Backend::Mock(MockOptions {
                latency: cfg.latency.unwrap_or_default(),
                ..MockOptions::default()
            }),
            ProviderKind::Openai | ProviderKind::Anthropic => {
                // Re-read on every reload, like the listener's certificate: a rotated CA
                // takes effect, and a broken file fails the reload.
                let roots = if cfg.ca_file.is_empty() {
                    None
                } else {
                    let key = format!("providers.{name}.ca_file");
                    Some(Arc::new(crate::tls::load_roots(&key, &cfg.ca_file)?))
                };
                // A pooled connection was verified against the old trust: keep the pool
                // only when the trust is the same.
                let reuse = prev.and_then(|p| match &p.backend {
                    Backend::Http(up)
                        if p.settings.pool == settings.pool
                            && p.settings.timeouts.connect == settings.timeouts.connect
                            && up.ca_file == cfg.ca_file
                            && same_roots(up.roots.as_deref(), roots.as_deref()) =>
                    {
                        Some(up.client.clone())
                    }
                    _ => None,
                });
                Backend::Http(Box::new(HttpUpstream::new(
                    name,
                    cfg,
                    &settings,
                    roots,
                    reuse,
                    &health.connections,
                )?))
            }
        };
        Ok(Provider {
            name: name.into(),
            kind: cfg.kind,
            settings,
            backend,
            health,
            keys,
        })
    }

    /// `base_url` of an HTTP provider.
    pub fn base_url(&self) -> Option<&str> {
        match &self.backend {
            Backend::Http(up) => Some(&up.base_url),
            Backend::Mock(_) => None,
        }
    }

    /// Sends one request: `path_and_query` is the client's path with its leading `/v1`
    /// removed, `key` the provider key to send it with. Applies the `first_byte` timeout
    /// (capped by what is left of `total`).
    pub async fn send(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        body: OutboundBody,
        key: Option<&Key>,
        first_byte: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match &self.backend {
            Backend::Mock(opts) => {
                let bytes = body.to_bytes();
                let path = format!("/v1{path_and_query}");
                let fut = crate::upstream::mock::respond(
                    &http::Method::POST,
                    &path,
                    &headers,
                    &bytes,
                    opts,
                );
                let resp = tokio::time::timeout(first_byte, fut)
                    .await
                    .map_err(|_| UpstreamError::FirstByteTimeout(first_byte))?;
                Ok(resp.map(|b| UpstreamBody::Boxed(Box::pin(b))))
            }
            Backend::Http(up) => {
                let uri = up.uri_for(path_and_query)?;
                let mut req = Request::new(body);
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                up.decorate(req.headers_mut(), key);
                match tokio::time::timeout(first_byte, up.client.request(req)).await {
                    Err(_) => Err(UpstreamError::FirstByteTimeout(first_byte)),
                    Ok(Err(e)) => Err(classify(&e)),
                    Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Http)),
                }
            }
        }
    }
}

fn same_roots(a: Option<&RootCertStore>, b: Option<&RootCertStore>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.roots == b.roots,
        _ => false,
    }
}

/// The pooled client type of HTTP providers.
pub type HttpClient = Client<ConnectTimeout<HttpsConnector<HttpConnector>>, OutboundBody>;

/// A connection that counts itself in its provider's open-socket gauge while it lives.
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    open: Arc<AtomicI64>,
}

impl<T> Counted<T> {
    fn new(inner: T, open: Arc<AtomicI64>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Counted { inner, open }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

impl<T: hyper_util::client::legacy::connect::Connection>
    hyper_util::client::legacy::connect::Connection for Counted<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

/// An OpenAI-compatible HTTP provider.
pub struct HttpUpstream {
    client: HttpClient,
    /// `base_url` as configured (reload carries state over when it is unchanged).
    pub base_url: String,
    /// Speaks the Anthropic Messages API: key in `x-api-key`, `anthropic-version` set.
    anthropic: bool,
    /// `ca_file` as configured; empty = public roots.
    ca_file: String,
    /// The CAs of `ca_file`, the only ones upstream TLS trusts; `None` = public roots.
    roots: Option<Arc<RootCertStore>>,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix of `base_url`, without a trailing `/` (e.g. `/v1`).
    base_path: String,
    /// Extra headers from the config.
    headers: Box<[(HeaderName, HeaderValue)]>,
    /// `Host`, computed once, for a plain-HTTP/1.1 upstream (the pool would otherwise
    /// format it for every request); `None` where HTTP/2 may be spoken (`:authority`).
    host: Option<HeaderValue>,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log line, not even through Debug.
        f.debug_struct("HttpUpstream")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl HttpUpstream {
    fn new(
        name: &str,
        cfg: &ProviderConfig,
        s: &ProviderSettings,
        roots: Option<Arc<RootCertStore>>,
        reuse: Option<HttpClient>,
        connections: &Arc<AtomicI64>,
    ) -> Result<Self, ConfigError> {
        let at = format!("providers.{name}");
        let base_url = cfg.base_url.clone().unwrap_or_default();
        let uri = crate::config::check_base_url(&base_url).map_err(|m| ConfigError {
            file: String::new(),
            key: format!("{at}.base_url"),
            message: m,
        })?;
        let headers = cfg
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        let client = match reuse {
            Some(c) => c,
            None => build_client(&s.pool, &s.timeouts, roots.clone(), connections.clone())
                .map_err(|e| ConfigError {
                    file: String::new(),
                    key: at,
                    message: format!("cannot set up TLS: {e}"),
                })?,
        };
        let plain_http1 = uri.scheme() == Some(&Scheme::HTTP) && s.pool.http2 != Http2Mode::Always;
        let host = uri.host().filter(|_| plain_http1).and_then(|h| {
            // As the pool writes it: the port only when it is not the scheme's default.
            match uri.port_u16().filter(|&p| p != 80) {
                Some(p) => HeaderValue::from_str(&format!("{h}:{p}")).ok(),
                None => HeaderValue::from_str(h).ok(),
            }
        });
        Ok(Self {
            client,
            host,
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTPS),
            authority: uri.authority().cloned().ok_or_else(|| ConfigError {
                file: String::new(),
                key: format!("providers.{name}.base_url"),
                message: "no host".into(),
            })?,
            base_path: uri.path().trim_end_matches('/').to_string(),
            base_url,
            anthropic: cfg.kind == ProviderKind::Anthropic,
            ca_file: cfg.ca_file.clone(),
            roots,
            headers,
        })
    }

    /// The upstream URI for a client path (with `/v1` already removed).
    fn uri_for(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        // One allocation of the exact size (`format!` grows its buffer as it writes).
        let mut pq = String::with_capacity(self.base_path.len() + path_and_query.len());
        pq.push_str(&self.base_path);
        pq.push_str(path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| UpstreamError::Connect(format!("invalid upstream URI: {e}")))
    }

    /// Adds the provider's key and extra headers.
    fn decorate(&self, h: &mut HeaderMap, key: Option<&Key>) {
        if let Some(k) = key {
            let name = if self.anthropic {
                HeaderName::from_static("x-api-key")
            } else {
                http::header::AUTHORIZATION
            };
            h.insert(name, k.value().clone());
        }
        if self.anthropic && !h.contains_key("anthropic-version") {
            h.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        for (k, v) in self.headers.iter() {
            h.insert(k.clone(), v.clone());
        }
        if let Some(host) = &self.host {
            h.insert(http::header::HOST, host.clone());
        }
    }
}

fn build_client(
    pool: &Pool,
    t: &Timeouts,
    roots: Option<Arc<RootCertStore>>,
    open: Arc<AtomicI64>,
) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    // The whole TCP + TLS handshake is bounded by ConnectTimeout below.
    http.set_connect_timeout(Some(t.connect));
    let provider = crate::tls::provider();
    let b = match roots {
        None => {
            hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)?
        }
        Some(roots) => {
            // ALPN is left empty here: the builder sets it from `pool.http2` below.
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    }
    .https_or_http();
    let https = match pool.http2 {
        Http2Mode::Never => b.enable_http1().wrap_connector(http),
        Http2Mode::Always => b.enable_http2().wrap_connector(http),
        Http2Mode::Auto => b.enable_all_versions().wrap_connector(http),
    };
    let connector = ConnectTimeout {
        inner: https,
        timeout: t.connect,
        open,
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .http2_only(pool.http2 == Http2Mode::Always);
    Ok(builder.build(connector))
}

/// Maps a client error to what the breaker and the error mapping need.
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let msg = error_chain(e);
    if !e.is_connect() {
        return UpstreamError::Reset(msg);
    }
    // rustls errors arrive wrapped in io::Errors, nested (tokio-rustls wraps the rustls
    // error, hyper-rustls wraps that again). `io::Error::source()` skips the error it wraps
    // and answers that error's source, so step into an io::Error through `get_ref()`.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return UpstreamError::Tls(msg);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    UpstreamError::Connect(msg)
}

/// `e: source: source ...`, skipping repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// Bounds a whole connect (DNS, TCP and TLS) by one timeout, and counts the connections
/// it makes.
#[derive(Clone, Debug)]
pub struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
    open: Arc<AtomicI64>,
}

/// The connect did not finish in time.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {}", humantime::format_duration(*.0))]
pub struct ConnectTimedOut(Duration);

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    C::Response: 'static,
{
    type Response = Counted<C::Response>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Counted<C::Response>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let limit = self.timeout;
        let open = self.open.clone();
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map(|c| Counted::new(c, open)).map_err(Into::into),
                Err(_) => Err(ConnectTimedOut(limit).into()),
            }
        })
    }
}
