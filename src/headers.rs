//! Header rules shared by both directions of the proxy: which headers are hop-by-hop
//! (RFC 9110 §7.6.1) and never forwarded, plus the gateway's own header names.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};

/// `x-request-id`
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-gateway-target`: `provider/model` that answered.
pub const GATEWAY_TARGET: HeaderName = HeaderName::from_static("x-gateway-target");
/// `x-gateway-attempts`: upstream attempts made.
pub const GATEWAY_ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
/// `x-should-retry`: tells SDKs not to retry what the gateway already retried.
pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
/// `server-timing`
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

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
/// client credentials, `Host` and `Content-Length` go; `Accept-Encoding` becomes
/// `identity`, so the gateway can read usage from every answer and append an error event
/// to any stream without corrupting a compressed body.
pub fn clean_for_upstream(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for n in CLIENT_CREDENTIALS {
        headers.remove(n);
    }
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
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
    // Names listed in `Connection` are hop-by-hop for this message only.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date).
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
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
}
