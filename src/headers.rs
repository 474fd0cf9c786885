//! Header rules shared by both directions of the proxy: which headers are hop-by-hop
//! (RFC 9110 §7.6.1) and never forwarded, the gateway's own header names, and the reading
//! of a provider's `retry-after`. That header is outside input: any value, however huge,
//! negative or malformed, gives a bounded duration or none, never a panic.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};

/// `x-request-id`
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-gateway-target`: `provider/model` that answered.
pub const GATEWAY_TARGET: HeaderName = HeaderName::from_static("x-gateway-target");
/// `x-gateway-attempts`: upstream attempts made.
pub const GATEWAY_ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
/// `x-should-retry`: tells SDKs not to retry what the gateway already retried.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
/// `x-gateway-estimate`: the gateway answered with its own estimate (count_tokens).
pub const GATEWAY_ESTIMATE: HeaderName = HeaderName::from_static("x-gateway-estimate");
/// `request-id`: the same value as `x-request-id`, on `/v1/messages` answers (the Anthropic
/// SDKs read that name).
pub const ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
/// `server-timing`
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
/// `x-gateway-strategy`: a client's choice of routing strategy for one request; the
/// gateway's business alone, never forwarded upstream.
pub const GATEWAY_STRATEGY: HeaderName = HeaderName::from_static("x-gateway-strategy");

/// Headers that belong to one connection (RFC 9110 §7.6.1, plus the legacy
/// `keep-alive` and `proxy-connection`) and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client credentials (contract §3): never forwarded upstream, whatever the provider. The
/// provider's own key is set by the gateway.
pub const CLIENT_CREDENTIALS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
];

/// Turns a client's request headers into the ones sent upstream: hop-by-hop headers,
/// client credentials, `x-gateway-strategy`, `Host` and `Content-Length` go;
/// `Accept-Encoding` becomes `identity`, so the gateway can read usage from every answer
/// and append an error event to any stream without corrupting a compressed body.
pub fn clean_for_upstream(headers: &mut HeaderMap) {
    remove_where(headers, |n| {
        is_hop_by_hop(n)
            || CLIENT_CREDENTIALS.contains(&n.as_str())
            || *n == GATEWAY_STRATEGY
            || *n == header::HOST
            || *n == header::CONTENT_LENGTH
    });
    headers.insert(
        header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
}

/// True for a WebSocket upgrade request (HTTP/1.1 `Upgrade: websocket`, or an HTTP/2
/// extended CONNECT).
pub fn is_websocket_upgrade(method: &http::Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
    upgrade || *method == http::Method::CONNECT
}

/// True for headers that belong to one connection and must not be forwarded.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Removes hop-by-hop headers, including every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, is_hop_by_hop);
}

/// Removes every header `doomed` picks, and every header a `Connection` header names
/// (hop-by-hop for this message only). Most messages carry none of them: the map is only
/// read, with no name parsed or hashed, unless one is there.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let mut names: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    names.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
    );
    for n in names {
        headers.remove(n);
    }
}

/// The longest wait a `retry-after` is taken to ask for. Upstreams are outside input: a
/// `retry-after: 1e20` must neither panic (`Duration::from_secs_f64` does on overflow) nor
/// reach `Instant` arithmetic; callers cap the wait further (at `max_cooldown`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(100 * 24 * 3600);

/// `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date), at most
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    retry_after_at(h, SystemTime::now())
}

/// [`retry_after`] with the wall clock passed in, so an HTTP date can be tested: a date in
/// the past means no wait, a future one the time until then.
pub fn retry_after_at(h: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(d) = get("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(d);
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(now)
            .unwrap_or_default()
            .min(MAX_RETRY_AFTER),
    )
}

/// A non-negative, finite number of seconds as a duration, clamped to [`MAX_RETRY_AFTER`].
fn seconds(secs: f64) -> Option<Duration> {
    if !(secs.is_finite() && secs >= 0.0) {
        return None;
    }
    // `max(0.0)` turns -0.0 into 0.0; the clamp keeps the conversion in range.
    Duration::try_from_secs_f64(secs.max(0.0).min(MAX_RETRY_AFTER.as_secs_f64())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_standard_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn the_strategy_header_stays_at_the_gateway() {
        let mut h = HeaderMap::new();
        h.insert(GATEWAY_STRATEGY, HeaderValue::from_static("speed"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        clean_for_upstream(&mut h);
        assert!(!h.contains_key("x-gateway-strategy"));
        assert!(h.contains_key("x-kept"));
    }

    fn one(name: &'static str, v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn retry_after_is_clamped_never_a_panic() {
        assert_eq!(
            retry_after(&one("retry-after", "1e20")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_after(&one("retry-after-ms", "1e300")),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            retry_after(&one("retry-after", "2.5")),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            retry_after(&one("retry-after-ms", "1500")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&one("retry-after", "-0")), Some(Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "-inf", "soon", ""] {
            assert_eq!(retry_after(&one("retry-after", bad)), None, "{bad}");
        }
        // An unusable `retry-after-ms` falls back to `retry-after`.
        let mut h = one("retry-after-ms", "NaN");
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_dates_are_relative_to_now() {
        let h = one("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT");
        let date = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let before = date - Duration::from_secs(90);
        assert_eq!(retry_after_at(&h, before), Some(Duration::from_secs(90)));
        assert_eq!(
            retry_after_at(&h, date + Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
        let far = one("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(retry_after_at(&far, before), Some(MAX_RETRY_AFTER));
    }
}
