//! Terraform values (known, null or unknown) and the conversions between them and plain
//! Rust values, plus the schema helpers every resource uses.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;
use tf_provider::AttributePath;
use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Description};
use tf_provider::value::Value;

use crate::ProviderError;

/// A value Terraform does not know yet (during validation and planning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unknown;

pub type Str = Value<String>;
pub type Bool = Value<bool>;
pub type StrList = Value<Vec<Value<String>>>;
pub type StrMap = Value<BTreeMap<String, Value<String>>>;
pub type StrListMap = Value<BTreeMap<String, Value<Vec<Value<String>>>>>;

/// `Some` for a known value, `None` for null, `Err` while unknown.
pub fn known<T: Clone>(v: &Value<T>) -> Result<Option<T>, Unknown> {
    match v {
        Value::Value(x) => Ok(Some(x.clone())),
        Value::Null => Ok(None),
        Value::Unknown => Err(Unknown),
    }
}

/// A list of strings; null elements are dropped.
pub fn string_list(v: &StrList) -> Result<Option<Vec<String>>, Unknown> {
    let Some(items) = known(v)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        if let Some(s) = known(item)? {
            out.push(s);
        }
    }
    Ok(Some(out))
}

pub fn string_map(v: &StrMap) -> Result<Option<BTreeMap<String, String>>, Unknown> {
    let Some(items) = known(v)? else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for (k, item) in &items {
        if let Some(s) = known(item)? {
            out.insert(k.clone(), s);
        }
    }
    Ok(Some(out))
}

pub fn string_list_map(v: &StrListMap) -> Result<Option<BTreeMap<String, Vec<String>>>, Unknown> {
    let Some(items) = known(v)? else {
        return Ok(None);
    };
    let mut out = BTreeMap::new();
    for (k, item) in &items {
        out.insert(k.clone(), string_list(item)?.unwrap_or_default());
    }
    Ok(Some(out))
}

pub fn str_value(s: Option<String>) -> Str {
    s.map_or(Value::Null, Value::Value)
}

/// An empty list is written as null: the broker does not keep empty lists.
pub fn list_value(items: &[String]) -> StrList {
    if items.is_empty() {
        Value::Null
    } else {
        Value::Value(items.iter().cloned().map(Value::Value).collect())
    }
}

pub fn map_value(items: &BTreeMap<String, String>) -> StrMap {
    map_of(items, Clone::clone)
}

pub fn list_map_value(items: &BTreeMap<String, Vec<String>>) -> StrListMap {
    map_of(items, |v| v.iter().cloned().map(Value::Value).collect())
}

/// A map whose values are `value(v)`; an empty map is written as null, like an empty list.
fn map_of<V, T>(items: &BTreeMap<String, V>, value: impl Fn(&V) -> T) -> Value<BTreeMap<String, Value<T>>> {
    if items.is_empty() {
        Value::Null
    } else {
        Value::Value(
            items
                .iter()
                .map(|(k, v)| (k.clone(), Value::Value(value(v))))
                .collect(),
        )
    }
}

/// `(de)serialize_with` for a block that appears at most once (a list block with
/// `max_items = 1` on the wire). Unlike `tf_provider::value::serde_as_vec` it also
/// accepts a wholly unknown list (a `dynamic` block whose `for_each` is unknown).
pub mod optional_block {
    use super::*;

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Value<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let as_list: Value<Vec<&T>> = match value {
            Value::Value(v) => Value::Value(vec![v]),
            Value::Null => Value::Value(vec![]),
            Value::Unknown => Value::Unknown,
        };
        as_list.serialize(serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Value<T>, D::Error> {
        let list: Value<Vec<Value<T>>> = Deserialize::deserialize(deserializer)?;
        match list {
            Value::Value(items) => {
                let mut items = items.into_iter();
                match (items.next(), items.next()) {
                    (None, _) => Ok(Value::Null),
                    (Some(one), None) => Ok(one),
                    (Some(_), Some(_)) => Err(serde::de::Error::custom("the block may appear at most once")),
                }
            }
            Value::Null => Ok(Value::Null),
            Value::Unknown => Ok(Value::Unknown),
        }
    }
}

/// Private state kept by Terraform beside a resource: the item's `ETag`, sent back as
/// `If-Match` so that an update never overwrites a change Terraform has not seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Private {
    #[serde(default)]
    pub etag: Option<String>,
}

pub type PrivateState = Value<Private>;

pub fn private_with(etag: Option<String>) -> PrivateState {
    Value::Value(Private { etag })
}

pub fn etag_of(private: &PrivateState) -> Option<String> {
    match private {
        Value::Value(p) => p.etag.clone(),
        _ => None,
    }
}

/// JSON text the way Terraform's `jsonencode` writes it: compact, object keys sorted,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped. Items read back from the broker are written
/// this way so that a configuration using `jsonencode(...)` shows no spurious diff.
pub fn jsonencode(value: &Json) -> String {
    let mut out = String::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Json, out: &mut String) {
    match value {
        Json::Null | Json::Bool(_) | Json::Number(_) => out.push_str(&value.to_string()),
        Json::String(s) => {
            let quoted = Json::String(s.clone()).to_string();
            for c in quoted.chars() {
                match c {
                    '<' => out.push_str("\\u003c"),
                    '>' => out.push_str("\\u003e"),
                    '&' => out.push_str("\\u0026"),
                    '\u{2028}' => out.push_str("\\u2028"),
                    '\u{2029}' => out.push_str("\\u2029"),
                    c => out.push(c),
                }
            }
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(&Json::String(key.clone()), out);
                out.push(':');
                write_json(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// Parse a JSON attribute that must hold an object.
pub fn parse_json_object(text: &str) -> Result<serde_json::Map<String, Json>, ProviderError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(_) => Err(ProviderError::NotAJsonObject),
        Err(e) => Err(ProviderError::InvalidJson(e)),
    }
}

/// Deserialize a JSON value the broker returned, or explain why it could not be.
pub fn from_json<T: DeserializeOwned>(value: &Json) -> Result<T, ProviderError> {
    serde_json::from_value(value.clone()).map_err(ProviderError::UnexpectedBody)
}

// ---------------------------------------------------------------------------
// Schema helpers

pub fn attribute(attr_type: AttributeType, constraint: AttributeConstraint, description: &str) -> Attribute {
    Attribute {
        attr_type,
        description: Description::markdown(description),
        constraint,
        sensitive: false,
        deprecated: false,
    }
}

pub fn string_list_type() -> AttributeType {
    AttributeType::List(Box::new(AttributeType::String))
}

pub fn attributes<const N: usize>(items: [(&str, Attribute); N]) -> HashMap<String, Attribute> {
    items.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Where in a resource a dotted field of the broker's (`match.actor.condition`,
/// `issue.claims.repo.expr`) lives. `blocks` names the nested blocks, each with whether
/// it is a list of one on the wire (`issue`, `match.actor`) or a single object
/// (`match`); the path stops at the first attribute that is not a block, since deeper
/// fields (claim names, JSON members) live inside that attribute's value.
pub fn attribute_path(
    field: &str,
    blocks: &[(&str, bool)],
    json_attributes: &[(&str, &str)],
) -> AttributePath {
    let field = field.trim();
    if field.is_empty() {
        return AttributePath::root();
    }
    // A JSON attribute swallows everything below its field (`issue.claims.x` → `issue.claims_json`).
    let mut remapped = None;
    for (prefix, attribute) in json_attributes {
        if field == *prefix
            || field.starts_with(&format!("{prefix}."))
            || field.starts_with(&format!("{prefix}["))
        {
            remapped = Some(attribute.to_string());
            break;
        }
    }
    let field = remapped.unwrap_or_else(|| field.to_owned());
    let head = field.split('[').next().unwrap_or_default();
    let mut path = AttributePath::root();
    let mut so_far = String::new();
    for step in head.split('.').filter(|s| !s.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('.');
        }
        so_far.push_str(step);
        path = path.attribute(step.to_owned());
        match blocks.iter().find(|(name, _)| *name == so_far) {
            Some((_, true)) => path = path.index(0),
            Some((_, false)) => {}
            None => break,
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonencode_matches_terraform() {
        let v = json!({"b": [1, true, null], "a": {"z": "<&>", "y": "x"}});
        assert_eq!(
            jsonencode(&v),
            r#"{"a":{"y":"x","z":"\u003c\u0026\u003e"},"b":[1,true,null]}"#
        );
    }

    #[test]
    fn known_values() {
        let list: StrList = Value::Value(vec![Value::Value("a".into()), Value::Null]);
        assert_eq!(string_list(&list), Ok(Some(vec!["a".to_owned()])));
        let unknown: StrList = Value::Value(vec![Value::Unknown]);
        assert_eq!(string_list(&unknown), Err(Unknown));
        assert_eq!(string_list(&Value::Null), Ok(None));
        assert_eq!(list_value(&[]), Value::Null);
    }

    #[test]
    fn attribute_paths_follow_blocks() {
        let lists = [("match", false), ("issue", true), ("match.actor", true)];
        let json = [
            ("issue.claims", "issue.claims_json"),
            ("issue.subject.expr", "issue.subject_expr"),
        ];
        assert_eq!(
            attribute_path("match.actor.condition", &lists, &json),
            AttributePath::new("match")
                .attribute("actor")
                .index(0)
                .attribute("condition")
        );
        assert_eq!(
            attribute_path("issue.claims.repo.expr", &lists, &json),
            AttributePath::new("issue").index(0).attribute("claims_json")
        );
        assert_eq!(
            attribute_path("match.claims[\"a.b\"]", &lists, &json),
            AttributePath::new("match").attribute("claims")
        );
        assert_eq!(
            attribute_path("match.claims.environment", &lists, &json),
            AttributePath::new("match").attribute("claims")
        );
        assert_eq!(attribute_path("name", &lists, &json), AttributePath::new("name"));
        assert_eq!(
            attribute_path("issue.subject.expr", &lists, &json),
            AttributePath::new("issue").index(0).attribute("subject_expr")
        );
        assert_eq!(
            attribute_path("issue.subject", &lists, &json),
            AttributePath::new("issue").index(0).attribute("subject")
        );
        assert_eq!(attribute_path("", &lists, &json), AttributePath::root());
    }
}
