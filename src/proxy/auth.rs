//! Client authentication against `server.api_keys` (contract §3). A client key is accepted
//! as `Authorization: Bearer <key>` (OpenAI SDKs, Codex CLI), `x-api-key: <key>` (Anthropic
//! SDKs, Claude Code) or `api-key: <key>` (Azure-style clients). None of these headers is
//! ever forwarded upstream (see [`crate::headers::clean_for_upstream`]).
//!
//! Every configured key is compared in constant time against every presented credential,
//! so timing reveals neither which key nearly matched nor how much of it.

use http::HeaderMap;
use subtle::{Choice, ConstantTimeEq};

/// True when `keys` is empty (auth off) or the request carries one of them in any of the
/// three accepted headers.
pub fn is_authorized(keys: &[Box<[u8]>], headers: &HeaderMap) -> bool {
    if keys.is_empty() {
        return true;
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| strip_bearer(v.as_bytes()));
    let plain = ["x-api-key", "api-key"]
        .into_iter()
        .map(|n| headers.get(n).map(|v| v.as_bytes().trim_ascii()));
    let mut ok = Choice::from(0);
    for presented in std::iter::once(bearer).chain(plain).flatten() {
        if presented.is_empty() {
            continue;
        }
        for k in keys {
            ok |= k.as_ref().ct_eq(presented);
        }
    }
    ok.into()
}

fn strip_bearer(v: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("authorization", HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn checks_bearer_keys() {
        let keys: Vec<Box<[u8]>> = vec![
            b"k1-secret".as_slice().into(),
            b"k2-secret".as_slice().into(),
        ];
        assert!(is_authorized(&keys, &h("Bearer k2-secret")));
        assert!(is_authorized(&keys, &h("bearer k1-secret")));
        assert!(!is_authorized(&keys, &h("Bearer k3-secret")));
        assert!(!is_authorized(&keys, &h("Bearer k1-secre")));
        assert!(!is_authorized(&keys, &h("Basic k1-secret")));
        assert!(!is_authorized(&keys, &HeaderMap::new()));
        assert!(is_authorized(&[], &HeaderMap::new()));
    }

    #[test]
    fn accepts_x_api_key_and_api_key() {
        let keys: Vec<Box<[u8]>> = vec![b"k1-secret".as_slice().into()];
        for name in ["x-api-key", "api-key"] {
            let mut m = HeaderMap::new();
            m.insert(name, HeaderValue::from_static("k1-secret"));
            assert!(is_authorized(&keys, &m), "{name}");
            m.insert(name, HeaderValue::from_static("k1-secreX"));
            assert!(!is_authorized(&keys, &m), "{name}");
            m.insert(name, HeaderValue::from_static(""));
            assert!(!is_authorized(&keys, &m), "{name}");
        }
        // A wrong bearer beside a right x-api-key: the right one is enough.
        let mut m = h("Bearer nope");
        m.insert("x-api-key", HeaderValue::from_static("k1-secret"));
        assert!(is_authorized(&keys, &m));
    }
}
