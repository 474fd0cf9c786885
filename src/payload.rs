//! Reading `model` and `stream` from a request body and rewriting `model` in place.
//!
//! The body is parsed exactly once, by serde_json into borrowed [`RawValue`]s: every other
//! field is validated and skipped, nothing is allocated for it, and the byte range of the
//! `model` value is found from the borrowed slice. The rewrite splices a new JSON string into
//! that range, so every other byte (field order, whitespace, number formatting, unknown
//! fields) reaches the upstream exactly as the client sent it.

use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::body::OutboundBody;

/// What the gateway needs from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The requested model, unescaped.
    pub model: String,
    /// Byte range of the `model` value (including its quotes) in the body.
    pub model_range: Range<usize>,
    /// `"stream": true`
    pub stream: bool,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

/// Finds `model` (a string, required) and `stream` in a JSON object body.
pub fn inspect(body: &[u8]) -> Result<Inspected, String> {
    let head: Head<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() && e.to_string().starts_with("invalid type") {
            "the request body must be a JSON object".to_string()
        } else {
            format!("the request body is not valid JSON: {e}")
        }
    })?;
    let raw = head
        .model
        .ok_or_else(|| "the request body has no \"model\" field".to_string())?;
    let text = raw.get();
    if !text.starts_with('"') {
        return Err("\"model\" must be a string".into());
    }
    let model: String = serde_json::from_str(text).map_err(|_| "\"model\" must be a string")?;
    // `raw` borrows from `body`, so its address lies inside it.
    let start = text.as_ptr() as usize - body.as_ptr() as usize;
    let stream = head.stream.is_some_and(|s| s.get() == "true");
    Ok(Inspected {
        model,
        model_range: start..start + text.len(),
        stream,
    })
}

/// The body with its `model` value replaced by `new_model_json` (an encoded JSON string).
/// Unchanged bytes are shared, not copied.
pub fn rewrite(body: &Bytes, range: &Range<usize>, new_model_json: &Bytes) -> OutboundBody {
    if body[range.clone()] == new_model_json[..] {
        return OutboundBody::whole(body.clone());
    }
    OutboundBody::spliced(
        body.slice(..range.start),
        new_model_json.clone(),
        body.slice(range.end..),
    )
}

/// Encodes a model name as a JSON string.
pub fn encode_model(model: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(model).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str, new: &str) -> String {
        let b = Bytes::copy_from_slice(body.as_bytes());
        let i = inspect(&b).unwrap();
        String::from_utf8(
            rewrite(&b, &i.model_range, &encode_model(new))
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn finds_model_and_stream() {
        let i = inspect(
            br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true}"#,
        )
        .unwrap();
        assert_eq!(i.model, "gpt-4o");
        assert!(i.stream);
        let i = inspect(br#"{"model":"m","stream":false}"#).unwrap();
        assert!(!i.stream);
        let i = inspect(br#"{"model":"m","stream":null}"#).unwrap();
        assert!(!i.stream);
    }

    #[test]
    fn rewrite_changes_only_the_model() {
        let body = r#"{ "temperature" : 0.70, "model":"coder" ,"x":{"model":"inner"}, "n":1e3 }"#;
        assert_eq!(
            rewritten(body, "qwen2.5-coder:7b"),
            r#"{ "temperature" : 0.70, "model":"qwen2.5-coder:7b" ,"x":{"model":"inner"}, "n":1e3 }"#
        );
    }

    #[test]
    fn escaped_model_names() {
        let i = inspect(br#"{"model":"a\/b\u0041"}"#).unwrap();
        assert_eq!(i.model, "a/bA");
        assert_eq!(
            rewritten(r#"{"model":"x"}"#, "we\"ird"),
            r#"{"model":"we\"ird"}"#
        );
    }

    #[test]
    fn unchanged_model_is_not_spliced() {
        let b = Bytes::from_static(br#"{"model":"m"}"#);
        let i = inspect(&b).unwrap();
        let out = rewrite(&b, &i.model_range, &encode_model("m"));
        assert_eq!(out.to_bytes(), b);
    }

    #[test]
    fn rejects_bad_bodies() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{}",
            br#"{"model":3}"#,
            br#"{"model":null}"#,
            br#"{"model":"a","model":"b"}"#,
            br#"{"model":"a""#,
            b"",
        ] {
            assert!(inspect(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
