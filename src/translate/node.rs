//! A JSON document that borrows from the bytes it was parsed from: [`Node`], read with the
//! same accessors as `serde_json::Value` (`get`, `as_str`, `as_array`, …) and written back
//! with `serde`.
//!
//! Why: a request translation reads most of a document and writes most of it back. Read into
//! a `Value`, every key, every string and every object's map is allocated, then copied into
//! the output tree, then both are dropped. A `Node` borrows every key and every string that
//! has no escapes, keeps an object's fields in a `Vec` in document order, and the output can
//! borrow the same strings again.
//!
//! Invariants: reading never fails on well-formed JSON; the accessors are exactly as lenient
//! as `Value`'s (a field of the wrong type reads as absent; of duplicated keys, the last
//! counts, as in a `Value` map); an object is written with its fields in insertion order.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

/// A JSON value borrowing from its source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Fields<'a>),
}

/// The fields of an object, in document (or insertion) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fields<'a>(pub Vec<(Cow<'a, str>, Node<'a>)>);

/// `null`, for accessors that return a reference to "nothing".
pub(crate) static NULL: Node<'static> = Node::Null;

impl<'a> Fields<'a> {
    /// The value of `key`; the last one when the key is repeated.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key`, with `null` read as absent (as [`super::field`] reads a `Value`):
    /// SDKs send `"temperature": null` to mean "not set".
    pub fn field(&self, key: &str) -> Option<&Node<'a>> {
        self.get(key).filter(|v| !v.is_null())
    }

    /// Sets `key`, replacing an earlier value.
    pub fn insert(&mut self, key: &'static str, value: impl Into<Node<'a>>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((Cow::Borrowed(key), value)),
        }
    }
}

impl<'a> Node<'a> {
    /// The field `key` of an object (`None` for anything else).
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The string itself, still borrowed from the source where it was.
    pub fn as_cow(&self) -> Option<Cow<'a, str>> {
        match self {
            Node::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Node<'a>]> {
        match self {
            Node::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Fields<'a>> {
        match self {
            Node::Obj(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Node::Num(_))
    }

    /// A non-negative whole number, also when written as a whole float (`12.0`).
    pub fn count(&self) -> Option<u64> {
        match self {
            Node::Num(n) => n.as_u64().or_else(|| super::whole_count(n.as_f64()?)),
            _ => None,
        }
    }

    /// The `type` of a block or part.
    pub fn kind(&self) -> Option<&str> {
        self.get("type").and_then(Node::as_str)
    }
}

impl<'a> From<&'a str> for Node<'a> {
    fn from(s: &'a str) -> Self {
        Node::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Node<'_> {
    fn from(s: String) -> Self {
        Node::Str(Cow::Owned(s))
    }
}

impl<'a> From<Cow<'a, str>> for Node<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        Node::Str(s)
    }
}

impl From<bool> for Node<'_> {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}

impl From<u64> for Node<'_> {
    fn from(n: u64) -> Self {
        Node::Num(n.into())
    }
}

impl From<f64> for Node<'_> {
    /// A float; `null` for NaN or infinity, which JSON cannot hold (as a `Value` does).
    fn from(f: f64) -> Self {
        Number::from_f64(f).map_or(Node::Null, Node::Num)
    }
}

impl<'a> From<Vec<Node<'a>>> for Node<'a> {
    fn from(items: Vec<Node<'a>>) -> Self {
        Node::Arr(items)
    }
}

impl<'a> From<Fields<'a>> for Node<'a> {
    fn from(fields: Fields<'a>) -> Self {
        Node::Obj(fields)
    }
}

impl From<serde_json::Value> for Node<'static> {
    fn from(v: serde_json::Value) -> Self {
        use serde_json::Value;
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Num(n),
            Value::String(s) => Node::Str(Cow::Owned(s)),
            Value::Array(items) => Node::Arr(items.into_iter().map(Node::from).collect()),
            Value::Object(map) => Node::Obj(Fields(
                map.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Node::from(v)))
                    .collect(),
            )),
        }
    }
}

/// An object from `key => value` pairs: `obj! {"role" => "user", "content" => text}`.
macro_rules! obj {
    ($($key:literal => $value:expr),* $(,)?) => {
        $crate::translate::node::Node::Obj($crate::translate::node::Fields(vec![
            $((::std::borrow::Cow::Borrowed($key), $crate::translate::node::Node::from($value)),)*
        ]))
    };
}
pub(crate) use obj;

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(n.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node<'de>, E> {
        Ok(Node::from(f))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
        // Keys are strings in JSON: read as a node, a key is always `Node::Str`.
        while let Some(key) = map.next_key::<Node<'de>>()? {
            let key = match key {
                Node::Str(k) => k,
                _ => Cow::Borrowed(""),
            };
            fields.push((key, map.next_value()?));
        }
        Ok(Node::Obj(Fields(fields)))
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Num(n) => n.serialize(s),
            Node::Str(v) => s.serialize_str(v),
            Node::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Obj(Fields(fields)) => {
                // A repeated key is written once, with its last value, as a `Value` would.
                // Small objects are checked pairwise; a large one (outside data can hold any
                // number of keys) through a map of each key's last place, to stay linear.
                let last: Option<std::collections::HashMap<&str, usize>> = (fields.len() > 16)
                    .then(|| {
                        fields
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (&**k, i))
                            .collect()
                    });
                let mut map = s.serialize_map(None)?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    let superseded = match &last {
                        Some(last) => last.get(&**k) != Some(&i),
                        None => fields[i + 1..].iter().any(|(later, _)| later == k),
                    };
                    if !superseded {
                        map.serialize_entry(k, v)?;
                    }
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Node<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_and_writes_like_a_value() {
        let src = r#"{"a":"x","b":[1,-2,2.5,true,null,{"c":"d\"e"}],"a":"y","n":12.0}"#;
        let node = parse(src);
        assert_eq!(node.get("a").and_then(Node::as_str), Some("y"));
        assert!(matches!(node.get("b"), Some(Node::Arr(items)) if items.len() == 6));
        assert_eq!(node.get("n").and_then(Node::count), Some(12));
        assert_eq!(node.get("missing"), None);
        assert_eq!(parse("[1]").get("a"), None);
        // Written back, it is the same document a Value makes of it (up to key order).
        let written: serde_json::Value =
            serde_json::from_slice(&serde_json::to_vec(&node).unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(src).unwrap();
        assert_eq!(written, value);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let node = parse(r#"{"plain":"abc","escaped":"a\nb"}"#);
        assert!(matches!(
            node.get("plain"),
            Some(Node::Str(Cow::Borrowed(_)))
        ));
        assert!(matches!(node.get("escaped"), Some(Node::Str(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn repeated_keys_are_written_once_with_the_last_value() {
        for n in [3, 40] {
            let mut src: Vec<String> = (0..n).map(|i| format!("\"k{i}\":{i}")).collect();
            src.push("\"k1\":\"last\"".into());
            let src = format!("{{{}}}", src.join(","));
            let out = serde_json::to_string(&parse(&src)).unwrap();
            let value: serde_json::Value = serde_json::from_str(&src).unwrap();
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&out).unwrap(),
                value
            );
            assert_eq!(out.matches("\"k1\"").count(), 1, "{out}");
        }
    }

    #[test]
    fn insert_replaces() {
        let mut fields = Fields::default();
        fields.insert("k", "a");
        fields.insert("k", 2u64);
        assert_eq!(fields.0.len(), 1);
        assert_eq!(fields.get("k").and_then(Node::count), Some(2));
    }
}
