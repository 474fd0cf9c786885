//! Errors the gateway itself answers with, and the one place that maps each to its HTTP
//! status, OpenAI error `type` and contract `code` (contract §5).
//!
//! Upstream responses, including upstream error responses, never pass through here: they
//! are forwarded untouched by the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::body::ResponseBody;

/// Why an upstream attempt got no usable HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect or DNS failed, or the connect timed out.
    #[error("cannot connect to the provider: {0}")]
    Connect(String),
    /// The TLS handshake failed.
    #[error("TLS handshake with the provider failed: {0}")]
    Tls(String),
    /// No response headers within `first_byte`.
    #[error("no response within first_byte timeout ({})", fmt_dur(*.0))]
    FirstByteTimeout(Duration),
    /// A stream sent no content event within `first_token` (contract §6: it failed before
    /// the commit point).
    #[error("no content from the provider's stream within first_token timeout ({})", fmt_dur(*.0))]
    FirstTokenTimeout(Duration),
    /// A stream sent an error event before its first content event.
    #[error("the provider's stream reported an error before any content: {0}")]
    ErrorEvent(String),
    /// The attempt exceeded `total`.
    #[error("attempt exceeded total timeout ({})", fmt_dur(*.0))]
    TotalTimeout(Duration),
    /// No body bytes for `idle`.
    #[error("no data from the provider for {} (idle timeout)", fmt_dur(*.0))]
    IdleTimeout(Duration),
    /// The connection broke (reset, closed early, protocol error).
    #[error("provider connection failed: {0}")]
    Reset(String),
    /// The upstream body exceeded `max_body_size`.
    #[error("provider response exceeds max_body_size ({0} bytes)")]
    TooLarge(u64),
}

impl UpstreamError {
    /// The `kind` label of `gateway_upstream_errors_total`; `None` for what is not a
    /// provider failure.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Self::Connect(_) => Some("connect"),
            Self::Tls(_) => Some("tls"),
            Self::FirstByteTimeout(_)
            | Self::FirstTokenTimeout(_)
            | Self::TotalTimeout(_)
            | Self::IdleTimeout(_) => Some("timeout"),
            Self::Reset(_) => Some("reset"),
            // The provider reported an error in-band: counted like its HTTP error answers.
            Self::ErrorEvent(_) => Some("status_5xx"),
            Self::TooLarge(_) => None,
        }
    }

    /// The access log's name of the failure (contract §8).
    pub fn log_code(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::FirstByteTimeout(_) => "timeout_first_byte",
            Self::FirstTokenTimeout(_) => "timeout_first_token",
            Self::ErrorEvent(_) => "error_event",
            Self::TotalTimeout(_) => "timeout_total",
            Self::IdleTimeout(_) => "timeout_idle",
            Self::Reset(_) => "reset",
            Self::TooLarge(_) => "body_too_large",
        }
    }

    /// True for timeouts (answered with 504 when nothing else served).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::FirstByteTimeout(_)
                | Self::FirstTokenTimeout(_)
                | Self::TotalTimeout(_)
                | Self::IdleTimeout(_)
        )
    }
}

fn fmt_dur(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// An error answered by the gateway itself.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// 400: body is not JSON or has no string `model`.
    #[error("{0}")]
    InvalidJson(String),
    /// 400: `x-gateway-strategy` names no strategy (the value as sent, lossily decoded and
    /// cut to 64 characters).
    #[error(
        "x-gateway-strategy {0:?} names no strategy; use one of failover, weighted, speed, cost, balanced"
    )]
    InvalidStrategy(String),
    /// 400: a request that cannot be translated for its target, or sent to a provider that
    /// does not speak its API.
    #[error("{0}")]
    Untranslatable(String),
    /// 400: the request body could not be read.
    #[error("could not read the request body: {0}")]
    BadBody(String),
    /// 401
    #[error(
        "missing or invalid API key; send a key from server.api_keys as \"Authorization: Bearer <key>\", \"x-api-key: <key>\" or \"api-key: <key>\""
    )]
    InvalidApiKey,
    /// 404: model is neither an alias nor `provider/model` of a known provider.
    #[error("model {0:?} is not configured; GET /v1/models lists the available models")]
    ModelNotFound(String),
    /// 413
    #[error("request body exceeds max_body_size ({0} bytes)")]
    RequestTooLarge(u64),
    /// 404 for paths the gateway does not serve.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// 426: a WebSocket upgrade on `/v1/*`; clients that try WebSocket first fall back to
    /// HTTP at once.
    #[error("WebSocket is not supported here; send the same request over plain HTTP")]
    WebsocketUnsupported,
    /// 502: connect/DNS/TLS/reset on every target tried.
    #[error("{0}")]
    UpstreamUnavailable(UpstreamError),
    /// 504: first-byte or total timeout on every target tried.
    #[error("{0}")]
    UpstreamTimeout(UpstreamError),
    /// 503: every target's circuit is open.
    #[error("{}", circuit_open_message(*.retry_after))]
    CircuitOpen {
        /// Until the first half-open; `None` when an operator forced the circuit open (it
        /// does not half-open by itself).
        retry_after: Option<Duration>,
    },
    /// 503: every key of the provider was refused (401, 402, 403) and is cooling down.
    #[error("every API key of the provider was refused by it and is set aside; ready again in {}s", retry_after_secs(*.retry_after))]
    KeysCooling {
        /// Until the first key is ready again.
        retry_after: Duration,
    },
    /// 503: no provider slot and the queue is full.
    #[error("the provider's queue is full; retry later")]
    QueueFull {
        /// Hint for the client.
        retry_after: Duration,
    },
    /// 503: no provider slot within `queue_timeout`.
    #[error("no provider slot became free within queue_timeout; retry later")]
    QueueTimeout {
        /// Hint for the client.
        retry_after: Duration,
    },
    /// 503: a retry was needed and the retry budget is spent.
    #[error("the provider's retry budget is spent; retry later")]
    RetryBudgetExhausted {
        /// Hint for the client.
        retry_after: Duration,
    },
    /// 429: every provider for the model asked (by an earlier 429) to be left alone.
    #[error("the provider is rate limiting; retry in {}s", retry_after_secs(*.retry_after))]
    RateLimited {
        /// Until the provider's `retry-after` has passed.
        retry_after: Duration,
    },
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        if e.is_timeout() {
            Self::UpstreamTimeout(e)
        } else {
            Self::UpstreamUnavailable(e)
        }
    }
}

impl GatewayError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_)
            | Self::BadBody(_)
            | Self::InvalidStrategy(_)
            | Self::Untranslatable(_) => StatusCode::BAD_REQUEST,
            Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::WebsocketUnsupported => StatusCode::UPGRADE_REQUIRED,
            Self::RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::CircuitOpen { .. }
            | Self::KeysCooling { .. }
            | Self::QueueFull { .. }
            | Self::QueueTimeout { .. }
            | Self::RetryBudgetExhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Contract error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::BadBody(_) | Self::Untranslatable(_) => "invalid_request",
            Self::InvalidStrategy(_) => "invalid_strategy",
            Self::InvalidApiKey => "invalid_api_key",
            Self::ModelNotFound(_) => "model_not_found",
            Self::RequestTooLarge(_) => "request_too_large",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::WebsocketUnsupported => "websocket_unsupported",
            Self::UpstreamUnavailable(_) => "upstream_unavailable",
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::KeysCooling { .. } => "keys_cooling",
            Self::QueueFull { .. } => "queue_full",
            Self::QueueTimeout { .. } => "queue_timeout",
            Self::RetryBudgetExhausted { .. } => "retry_budget_exhausted",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// OpenAI error `type`.
    pub fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// `retry-after` hint, if this error carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after } => *retry_after,
            Self::KeysCooling { retry_after }
            | Self::QueueFull { retry_after }
            | Self::QueueTimeout { retry_after }
            | Self::RetryBudgetExhausted { retry_after }
            | Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether a client may retry this answer on its own (contract §5): only a moment of
    /// local overload (`queue_full`, `queue_timeout`) leaves SDKs free to retry after its
    /// `retry-after`. Everything else the gateway answers itself is final: a retry would get
    /// the same answer, or the gateway already retried inside its budget.
    pub fn client_may_retry(&self) -> bool {
        matches!(self, Self::QueueFull { .. } | Self::QueueTimeout { .. })
    }

    /// The OpenAI-shaped response, with `retry-after` and `x-should-retry`.
    pub fn to_response(&self) -> Response<ResponseBody> {
        self.to_response_in(Api::OpenAi)
    }

    /// The response in the client's API shape (contract §5): OpenAI's
    /// `{"error":{message,type,param,code}}`, or on `/v1/messages` Anthropic's
    /// `{"type":"error","error":{"type","message":"<code>: <text>"}}`, with the same status,
    /// `retry-after` and `x-should-retry`.
    pub fn to_response_in(&self, api: Api) -> Response<ResponseBody> {
        let body = match api {
            Api::OpenAi => error_body(&self.to_string(), self.kind(), self.code()),
            Api::Anthropic => anthropic_error_body(
                self.status().as_u16(),
                &format!("{}: {}", self.code(), self),
            ),
        };
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(d) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
        if !self.client_may_retry() {
            h.insert(
                crate::headers::SHOULD_RETRY,
                HeaderValue::from_static("false"),
            );
        }
        resp
    }
}

fn circuit_open_message(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(
            "every provider for this model has an open circuit; retry in {}s",
            retry_after_secs(d)
        ),
        None => "the provider's circuit was forced open by an operator".to_string(),
    }
}

/// The API a client speaks, which decides the shape of the gateway's errors and stream
/// endings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// The OpenAI APIs (`/v1/chat/completions`, `/v1/responses`, ...).
    #[default]
    OpenAi,
    /// The Anthropic Messages API (`/v1/messages`).
    Anthropic,
}

/// `{"type":"error","error":{"type":T,"message":M}}` as bytes.
pub fn anthropic_error_body(status: u16, message: &str) -> Bytes {
    let v = serde_json::json!({
        "type": "error",
        "error": {"type": crate::translate::anthropic_error_type(status), "message": message},
    });
    Bytes::from(v.to_string())
}

/// Whole seconds, rounded up, at least 1 (contract §5).
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    s.max(1)
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

/// `{"error":{"message","type","param":null,"code"}}` as bytes.
pub fn error_body(message: &str, kind: &str, code: &str) -> Bytes {
    let env = ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            param: None,
            code,
        },
    };
    // Serialising a struct of strings cannot fail.
    Bytes::from(serde_json::to_vec(&env).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_codes() {
        let e = GatewayError::ModelNotFound("gpt-9".into());
        assert_eq!(e.status(), 404);
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(&e.to_string(), e.kind(), e.code())).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["param"].is_null());
        assert!(v["error"]["message"].as_str().unwrap().contains("gpt-9"));
    }

    #[test]
    fn invalid_strategy_is_a_final_400_naming_the_valid_values() {
        let e = GatewayError::InvalidStrategy("fastest".into());
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "invalid_strategy")
        );
        assert_eq!(
            e.to_string(),
            "x-gateway-strategy \"fastest\" names no strategy; use one of failover, weighted, speed, cost, balanced"
        );
        let r = e.to_response();
        assert_eq!(r.headers()[crate::headers::SHOULD_RETRY], "false");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn timeouts_map_to_504_others_to_502() {
        let t: GatewayError = UpstreamError::FirstByteTimeout(Duration::from_secs(1)).into();
        assert_eq!(t.status(), 504);
        assert_eq!(t.code(), "upstream_timeout");
        let c: GatewayError = UpstreamError::Connect("refused".into()).into();
        assert_eq!(c.status(), 502);
        assert_eq!(c.code(), "upstream_unavailable");
    }
}
