//! Finding where a field is written in a YAML document, using the YAML parser itself:
//! a seed walks the document along a field path (`spec.http[0].route[1].weight`) and
//! stops with an error at the target; the parser stamps that error with the
//! position of the event it was reading, which is the position we want.
//!
//! The target is the key (for a path ending in a map key) or the element (for a path
//! ending in an index). When the path leaves the document (a missing field), the
//! position is that of the deepest mapping or sequence reached.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// 1-based (line, column) of `path` in the YAML `text`, relative to the text.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let de = serde_norway::Deserializer::from_str(text);
    match (Walk { rest: path }).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

/// The string scalar at a dotted `path` (map keys only) of one YAML document, read
/// even when the document is not a valid object of its kind.
pub fn scalar_at(text: &str, path: &str) -> Option<String> {
    let value: serde_norway::Value = serde_norway::from_str(text).ok()?;
    let mut cur = &value;
    for key in path.split('.') {
        cur = cur.get(key)?;
    }
    cur.as_str().map(str::to_string)
}

fn stop<E: de::Error>() -> E {
    E::custom("located")
}

/// Walks a value along the remaining path.
struct Walk<'p> {
    rest: &'p str,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.rest.is_empty() {
            // The target is this value: any visitor error is stamped with its position.
            d.deserialize_any(Stop)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or sequence on the way to the field")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(step) = map.next_key_seed(Key { rest: self.rest })? {
            match step {
                Some(rest) => return map.next_value_seed(Walk { rest }),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        // Not here: point at this mapping.
        Err(stop())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((index, rest)) = self
            .rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, r)| Some((i.parse::<usize>().ok()?, r)))
        else {
            return Err(stop());
        };
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(stop());
            }
        }
        match seq.next_element_seed(Walk { rest })? {
            Some(()) => Ok(()),
            None => Err(stop()),
        }
    }
}

/// Reads one map key. `Some(rest)` when the path continues through this key's value;
/// an error (stamped with the key's position) when the key is the target.
struct Key<'p> {
    rest: &'p str,
}

impl<'de, 'p> DeserializeSeed<'de> for Key<'p> {
    type Value = Option<&'p str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'p> Key<'p> {
    fn matched<E: de::Error>(self, key: &str) -> Result<Option<&'p str>, E> {
        let Some(after) = self.rest.strip_prefix(key) else {
            return Ok(None);
        };
        if after.is_empty() {
            Err(stop())
        } else if let Some(r) = after.strip_prefix('.') {
            Ok(Some(r))
        } else if after.starts_with('[') {
            Ok(Some(after))
        } else {
            Ok(None)
        }
    }
}

impl<'de, 'p> Visitor<'de> for Key<'p> {
    type Value = Option<&'p str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.matched(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.matched(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.matched(&v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.matched(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Fails on whatever it is given, so that the parser stamps the position.
struct Stop;

impl Visitor<'_> for Stop {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("nothing (locating a field)")
    }
}

#[cfg(test)]
mod tests {
    use super::locate;

    const DOC: &str = "\
apiVersion: v1
kind: X
spec:
  hosts:
    - a
    - b
  http:
    - route:
        - destination:
            host: x
          weight: 60
        - destination:
            host: y
          weight: 30
  app.kubernetes.io/name: z
";

    #[test]
    fn finds_keys_elements_and_deepest_parent() {
        assert_eq!(locate(DOC, "spec"), Some((3, 1)));
        assert_eq!(locate(DOC, "spec.hosts[1]"), Some((6, 7)));
        assert_eq!(locate(DOC, "spec.http[0].route"), Some((8, 7)));
        assert_eq!(locate(DOC, "spec.http[0].route[1].weight"), Some((14, 11)));
        assert_eq!(
            locate(DOC, "spec.http[0].route[1].destination.host"),
            Some((13, 13))
        );
        assert_eq!(locate(DOC, "spec.app.kubernetes.io/name"), Some((15, 3)));
        // A missing field points at the mapping that should hold it.
        assert_eq!(locate(DOC, "spec.http[0].timeout"), Some((8, 7)));
        assert_eq!(locate(DOC, "spec.hosts[5]"), Some((5, 5)));
    }
}
