//! Typed, borrowing reads of outside JSON that are as lenient as reading a parsed
//! `serde_json::Value` through `get`/`as_*`: a field of the wrong type reads as absent, a
//! duplicated key keeps its last value, unknown fields are skipped without being built.
//! Skipped values are only checked for JSON syntax (serde's `IgnoredAny`), not decoded: an
//! answer whose unread parts hold what a `Value` would refuse (a lone surrogate escape, a
//! number out of `f64`'s range) is still read.
//!
//! Why: the hot translations (a whole chat answer, once per translated request) read a
//! handful of fields out of a document. Parsing it into a `Value` tree first allocates
//! every key, string and map node of it, and costs more than the translation itself. These
//! readers walk the same bytes once and borrow every string that has no escapes.
//!
//! Invariants: no reader here fails on well-formed JSON, whatever its shape; the only errors
//! are the parser's own (malformed JSON, nesting deeper than its limit).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Skips the rest of a sequence.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Skips the rest of a map.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the visitor methods of every JSON type but the one a reader accepts: each
/// reads as "absent" (`Default`).
macro_rules! absent_otherwise {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

macro_rules! absent_str {
    () => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

macro_rules! absent_seq {
    () => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq)?;
            Ok(Default::default())
        }
    };
}

macro_rules! absent_map {
    () => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok(Default::default())
        }
    };
}

/// A string, borrowed when it has no escapes; anything else reads as `None`
/// (`Value::as_str`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Some(Cow::Owned(s))))
            }
            absent_otherwise!();
            absent_seq!();
            absent_map!();
        }
        d.deserialize_any(V)
    }
}

/// A non-negative whole number, also when written as a whole float (`12.0`); anything else
/// reads as `None` (the translations' `count_of`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Count(pub Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_f64<E: de::Error>(self, f: f64) -> Result<Count, E> {
                Ok(Count(super::whole_count(f)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            absent_str!();
            absent_seq!();
            absent_map!();
        }
        d.deserialize_any(V)
    }
}

/// An array of `T`; anything else reads as `None` (`Value::as_array`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct List<T>(pub Option<Vec<T>>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                Ok(List(Some(collect(seq)?)))
            }
            absent_otherwise!();
            absent_str!();
            absent_map!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// What reading one field gives: nothing, or the parser's error.
pub(crate) type Read<E> = std::result::Result<(), E>;

/// A string or an array of `T`, as OpenAI's `content` is; anything else reads as an absent
/// string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StrOrList<'a, T> {
    Str(Str<'a>),
    List(Vec<T>),
}

impl<T> Default for StrOrList<'_, T> {
    fn default() -> Self {
        StrOrList::Str(Str(None))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StrOrList<'de, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StrOrList<'de, T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrList::Str(Str(Some(Cow::Borrowed(s)))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(StrOrList::Str(Str(Some(Cow::Owned(s.to_owned())))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Ok(StrOrList::List(collect(seq)?))
            }
            absent_otherwise!();
            absent_map!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The elements of a sequence.
fn collect<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(mut seq: A) -> Result<Vec<T>, A::Error> {
    // The hint is the parser's guess; never trust it for more than a little.
    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
    while let Some(item) = seq.next_element()? {
        items.push(item);
    }
    Ok(items)
}

/// The fields a reader picks out of a JSON object.
pub(crate) trait Fields<'de>: Default {
    /// Reads the value of `key` into `self` if it is a field of interest, else skips it.
    /// A later duplicate of a key overwrites the earlier one, as in a `Value` map.
    fn field<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Read<A::Error>;
}

/// An object read into `T`; anything else reads as `None` (`Value::as_object`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Fields<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Fields<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Obj<T>, A::Error> {
                let mut fields = T::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    fields.field(key.get().unwrap_or_default(), &mut map)?;
                }
                Ok(Obj(Some(fields)))
            }
            absent_otherwise!();
            absent_str!();
            absent_seq!();
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Implements [`Fields`] for a struct from its JSON keys and the fields they are read into:
/// `fields!('de, Call<'de>, "id" => id, "function" => function);`
macro_rules! fields {
    ($de:lifetime, $ty:ty, $($key:literal => $field:ident),+ $(,)?) => {
        impl<$de> $crate::translate::loose::Fields<$de> for $ty {
            fn field<A: serde::de::MapAccess<$de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> $crate::translate::loose::Read<A::Error> {
                match key {
                    $($key => self.$field = map.next_value()?,)+
                    _ => $crate::translate::loose::skip(map)?,
                }
                Ok(())
            }
        }
    };
}
pub(crate) use fields;

/// Skips the value of a field of no interest.
pub(crate) fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug)]
    struct Pick<'a> {
        name: Str<'a>,
        n: Count,
        list: List<Str<'a>>,
    }

    fields!('de, Pick<'de>, "name" => name, "n" => n, "list" => list);

    fn pick(json: &str) -> Option<Pick<'_>> {
        serde_json::from_str::<Obj<Pick>>(json).unwrap().0
    }

    #[test]
    fn reads_like_value_accessors() {
        let p =
            pick(r#"{"name":"a","n":3,"list":["x",1,"y"],"other":{"deep":[1,{"k":2}]}}"#).unwrap();
        assert_eq!(p.name.get(), Some("a"));
        assert!(matches!(p.name.0, Some(Cow::Borrowed(_))));
        assert_eq!(p.n.0, Some(3));
        let list = p.list.0.unwrap();
        let list: Vec<_> = list.iter().map(Str::get).collect();
        assert_eq!(list, [Some("x"), None, Some("y")]);

        // Wrong types read as absent; nothing fails.
        let p = pick(r#"{"name":5,"n":"3","list":{"a":1}}"#).unwrap();
        assert_eq!(
            (p.name.get(), p.n.0, p.list.0.is_none()),
            (None, None, true)
        );
        assert!(pick("[1,2]").is_none());
        assert!(pick("null").is_none());
        assert!(pick(r#""s""#).is_none());

        // Escaped strings are owned, keys with escapes still match.
        let p = pick(r#"{"na\u006de":"a\"b"}"#).unwrap();
        assert_eq!(p.name.get(), Some("a\"b"));

        // The last duplicate wins, as in a `Value` map.
        assert_eq!(pick(r#"{"n":1,"n":2}"#).unwrap().n.0, Some(2));
    }

    #[test]
    fn counts_read_like_count_of() {
        for (json, want) in [
            ("12", Some(12)),
            ("12.0", Some(12)),
            ("12.5", None),
            ("-1", None),
            ("-0.0", Some(0)),
            ("1e300", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("true", None),
            ("null", None),
        ] {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let count: Count = serde_json::from_str(json).unwrap();
            assert_eq!(count.0, want, "{json}");
            assert_eq!(super::super::count_of(&v), want, "{json}");
        }
    }

    #[test]
    fn malformed_json_is_still_an_error() {
        assert!(serde_json::from_str::<Obj<Pick>>(r#"{"name":"a""#).is_err());
        assert!(serde_json::from_str::<Obj<Pick>>(r#"{"other":[1,}"#).is_err());
    }
}
