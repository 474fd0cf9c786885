//! Providers and how to reach them: one pooled hyper-util client per HTTP provider (its own
//! `HttpConnector` with TCP_NODELAY and keepalive, rustls on ring passed explicitly, a
//! connect timeout over TCP *and* TLS), or the in-process mock.
//!
//! The legacy client has no timeouts of its own and no cap on connections; the caller
//! ([`crate::proxy`]) applies `first_byte`/`total`, the body wrapper applies `idle`, and the
//! bulkhead caps requests in flight. Redirects are never followed: hyper's client does not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use tokio::time::Instant;

use crate::body::{BoxError, OutboundBody, UpstreamBody};
use crate::breaker::Breaker;
use crate::config::{
    Config, ConfigError, Http2Mode, Pool, ProviderConfig, ProviderKind, ProviderSettings, Timeouts,
};
use crate::error::UpstreamError;
use crate::limit::Bulkhead;
use crate::mock::MockOptions;
use crate::retry::Budget;

/// A provider: its name, merged settings, how to reach it, and its health guards.
#[derive(Debug)]
pub struct Provider {
    /// Name from the config (`[providers.NAME]`).
    pub name: Arc<str>,
    /// Settings with defaults merged in.
    pub settings: ProviderSettings,
    /// Network client or in-process mock.
    pub backend: Backend,
    /// Circuit breaker.
    pub breaker: Breaker,
    /// Retry budget.
    pub budget: Budget,
    /// Concurrency limit and queue.
    pub bulkhead: Bulkhead,
    /// Start of this provider's clock (for `skip_until`).
    base: Instant,
    /// Nanoseconds since `base` until which a 429 says to leave the provider alone.
    skip_until: AtomicU64,
}

/// How a provider is reached.
#[derive(Debug)]
pub enum Backend {
    /// An OpenAI-compatible HTTP server.
    Http(Box<HttpUpstream>),
    /// In-process canned answers.
    Mock(MockOptions),
}

impl Provider {
    /// Builds a provider from its config section.
    pub fn build(
        name: &str,
        cfg: &ProviderConfig,
        root: &Config,
        now: Instant,
    ) -> Result<Provider, ConfigError> {
        let settings = root.provider_settings(cfg);
        let backend = match cfg.kind {
            ProviderKind::Mock => Backend::Mock(MockOptions {
                latency: cfg.latency.unwrap_or_default(),
                ..MockOptions::default()
            }),
            ProviderKind::Openai => {
                Backend::Http(Box::new(HttpUpstream::new(name, cfg, &settings)?))
            }
        };
        Ok(Provider {
            name: name.into(),
            breaker: Breaker::new(settings.breaker.clone(), now),
            budget: Budget::new(&settings.retry, now),
            bulkhead: Bulkhead::new(&settings.limits),
            base: now,
            skip_until: AtomicU64::new(0),
            settings,
            backend,
        })
    }

    /// Time left before a 429's `retry-after` lets this provider be tried again.
    pub fn throttled(&self, now: Instant) -> Option<Duration> {
        let t =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let until = self.skip_until.load(Ordering::Acquire);
        (t < until).then(|| Duration::from_nanos(until - t))
    }

    /// Leaves the provider alone for `wait` (from a 429), capped at `max_cooldown`.
    pub fn throttle(&self, now: Instant, wait: Duration) {
        let wait = wait.min(self.settings.breaker.max_cooldown);
        let until = now.saturating_duration_since(self.base) + wait;
        let until = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.skip_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Sends one request: `path_and_query` is the client's path with its leading `/v1`
    /// removed. Applies the `first_byte` timeout (capped by what is left of `total`).
    pub async fn send(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        body: OutboundBody,
        first_byte: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        match &self.backend {
            Backend::Mock(opts) => {
                let bytes = body.to_bytes();
                let path = format!("/v1{path_and_query}");
                let fut = crate::mock::respond(&http::Method::POST, &path, &headers, &bytes, opts);
                let resp = tokio::time::timeout(first_byte, fut)
                    .await
                    .map_err(|_| UpstreamError::FirstByteTimeout(first_byte))?;
                Ok(resp.map(UpstreamBody::Mock))
            }
            Backend::Http(up) => {
                let uri = up.uri_for(path_and_query)?;
                let mut req = Request::new(body);
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                up.decorate(req.headers_mut());
                match tokio::time::timeout(first_byte, up.client.request(req)).await {
                    Err(_) => Err(UpstreamError::FirstByteTimeout(first_byte)),
                    Ok(Err(e)) => Err(classify(&e)),
                    Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::Http)),
                }
            }
        }
    }
}

/// The pooled client type of HTTP providers.
pub type HttpClient = Client<ConnectTimeout<HttpsConnector<HttpConnector>>, OutboundBody>;

/// An OpenAI-compatible HTTP provider.
pub struct HttpUpstream {
    client: HttpClient,
    /// `base_url` as configured (reload carries state over when it is unchanged).
    pub base_url: String,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix of `base_url`, without a trailing `/` (e.g. `/v1`).
    base_path: String,
    /// `Bearer <key>` values, marked sensitive; rotated round-robin.
    keys: Box<[HeaderValue]>,
    next_key: AtomicUsize,
    /// Extra headers from the config.
    headers: Box<[(HeaderName, HeaderValue)]>,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log line, not even through Debug.
        f.debug_struct("HttpUpstream")
            .field("base_url", &self.base_url)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl HttpUpstream {
    fn new(name: &str, cfg: &ProviderConfig, s: &ProviderSettings) -> Result<Self, ConfigError> {
        let at = format!("providers.{name}");
        let base_url = cfg.base_url.clone().unwrap_or_default();
        let uri = crate::config::check_base_url(&base_url).map_err(|m| ConfigError {
            file: String::new(),
            key: format!("{at}.base_url"),
            message: m,
        })?;
        let keys = cfg
            .api_keys
            .iter()
            .filter_map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
            .collect();
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
        let client = build_client(&s.pool, &s.timeouts).map_err(|e| ConfigError {
            file: String::new(),
            key: at,
            message: format!("cannot set up TLS: {e}"),
        })?;
        Ok(Self {
            client,
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTPS),
            authority: uri.authority().cloned().ok_or_else(|| ConfigError {
                file: String::new(),
                key: format!("providers.{name}.base_url"),
                message: "no host".into(),
            })?,
            base_path: uri.path().trim_end_matches('/').to_string(),
            base_url,
            keys,
            next_key: AtomicUsize::new(0),
            headers,
        })
    }

    /// The upstream URI for a client path (with `/v1` already removed).
    fn uri_for(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let pq = format!("{}{}", self.base_path, path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| UpstreamError::Connect(format!("invalid upstream URI: {e}")))
    }

    /// Adds the provider's key (round-robin) and extra headers.
    fn decorate(&self, h: &mut HeaderMap) {
        if !self.keys.is_empty() {
            let i = self.next_key.fetch_add(1, Ordering::Relaxed) % self.keys.len();
            h.insert(http::header::AUTHORIZATION, self.keys[i].clone());
        }
        for (k, v) in self.headers.iter() {
            h.insert(k.clone(), v.clone());
        }
    }
}

fn build_client(pool: &Pool, t: &Timeouts) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    // The whole TCP + TLS handshake is bounded by ConnectTimeout below.
    http.set_connect_timeout(Some(t.connect));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http();
    let https = match pool.http2 {
        Http2Mode::Never => b.enable_http1().wrap_connector(http),
        Http2Mode::Always => b.enable_http2().wrap_connector(http),
        Http2Mode::Auto => b.enable_all_versions().wrap_connector(http),
    };
    let connector = ConnectTimeout {
        inner: https,
        timeout: t.connect,
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
    if e.is_connect() {
        UpstreamError::Connect(msg)
    } else {
        UpstreamError::Reset(msg)
    }
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

/// Bounds a whole connect (DNS, TCP and TLS) by one timeout.
#[derive(Clone, Debug)]
pub struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
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
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fut = self.inner.call(uri);
        let limit = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(ConnectTimedOut(limit).into()),
            }
        })
    }
}
