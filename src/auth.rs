//! Client authentication: `Authorization: Bearer <key>` against `server.api_keys`.
//!
//! Every configured key is compared in constant time, and all of them are compared on every
//! request, so timing reveals neither which key nearly matched nor how much of it.

use http::HeaderMap;
use subtle::{Choice, ConstantTimeEq};

/// True when `keys` is empty (auth off) or the request carries one of them.
pub fn is_authorized(keys: &[Box<[u8]>], headers: &HeaderMap) -> bool {
    if keys.is_empty() {
        return true;
    }
    let Some(presented) = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| strip_bearer(v))
    else {
        return false;
    };
    let mut ok = Choice::from(0);
    for k in keys {
        ok |= k.as_ref().ct_eq(presented);
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
}
