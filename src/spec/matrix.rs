//! Matrix member names: one stage per combination of its axes' values
//! (which axes a stage has is [`super::axes`]'s job).
//!
//! Members are named `stage[k1=v1,k2=v2]`, keys in sorted order, values as
//! they read in text (`lr=0.0001`), quoted where that would be ambiguous
//! (see [`member_name`]). Adding a value to a list adds a member and
//! leaves the other members' names, and so their keys, unchanged.

use std::collections::BTreeMap;

use serde_json::Value;

/// `train` + {lr: 0.001} → `train[lr=0.001]`.
///
/// Names are injective: two different value maps never share a name, so a
/// member (and its cache key, which names its upstream members) is never
/// confused with another. Plain values read as they do in text
/// (`lr=0.001`, `seed=1`, `hemi=left`); a string that would read as
/// something else is written as a JSON string: one holding `,` `=` `[` `]`
/// `{` `}` `"` `\` or control characters, an empty one, one with spaces at
/// either end, and one that reads as a number, `true`, `false` or `null`
/// (`v="1.10"` is the string, `v=1.1` the number). Braces inside quoted
/// strings are written `\u007b`/`\u007d`, so a name holds `}` only for a
/// mapping value, and `{in.NAME}` can name any other member.
pub fn member_name(base: &str, values: &BTreeMap<String, Value>) -> String {
    if values.is_empty() {
        return base.to_string();
    }
    let inner = values
        .iter()
        .map(|(k, v)| format!("{}={}", name_key(k), name_value(v)))
        .collect::<Vec<_>>()
        .join(",");
    format!("{base}[{inner}]")
}

/// Characters that end or delimit a part of a member name.
fn is_special(c: char) -> bool {
    matches!(c, ',' | '=' | '[' | ']' | '{' | '}' | '"' | '\\') || c.is_control()
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty() || s.trim() != s || s.chars().any(is_special)
}

/// A matrix key as it reads in a member name.
pub fn name_key(k: &str) -> String {
    if needs_quotes(k) {
        json_string(k)
    } else {
        k.to_string()
    }
}

/// A matrix value as it reads in a member name (see [`member_name`]).
pub fn name_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            if needs_quotes(s) || serde_json::from_str::<Value>(s).is_ok() {
                json_string(s)
            } else {
                s.clone()
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(json_text).collect::<Vec<_>>().join(",")
        ),
        other => json_text(other),
    }
}

/// Compact JSON, with braces inside strings escaped.
fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => json_string(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(json_text).collect::<Vec<_>>().join(",")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}:{}", json_string(k), json_text(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// `s` as a JSON string literal, `{` and `}` escaped too.
fn json_string(s: &str) -> String {
    Value::String(s.to_string())
        .to_string()
        .replace('{', "\\u007b")
        .replace('}', "\\u007d")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn name(pairs: &[(&str, Value)]) -> String {
        let m: BTreeMap<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        member_name("s", &m)
    }

    #[test]
    fn plain_values_read_as_in_text() {
        assert_eq!(
            name(&[
                ("lr", json!(0.001)),
                ("seed", json!(1)),
                ("hemi", json!("left"))
            ]),
            "s[hemi=left,lr=0.001,seed=1]"
        );
        assert_eq!(name(&[("lr", json!(1.0e-5))]), "s[lr=0.00001]");
        assert_eq!(name(&[("m", json!("a b/c.d-e"))]), "s[m=a b/c.d-e]");
    }

    #[test]
    fn ambiguous_values_are_quoted() {
        assert_eq!(name(&[("a", json!("1"))]), r#"s[a="1"]"#);
        assert_eq!(name(&[("a", json!(1))]), "s[a=1]");
        assert_eq!(name(&[("a", json!(1.0))]), "s[a=1.0]");
        assert_eq!(name(&[("a", json!("true"))]), r#"s[a="true"]"#);
        assert_eq!(name(&[("a", json!(true))]), "s[a=true]");
        assert_eq!(name(&[("a", json!(null))]), "s[a=null]");
        assert_eq!(name(&[("a", json!("null"))]), r#"s[a="null"]"#);
        assert_eq!(name(&[("a", json!(""))]), r#"s[a=""]"#);
        assert_eq!(name(&[("a", json!(" x"))]), r#"s[a=" x"]"#);
        assert_eq!(name(&[("a", json!("1,b=2"))]), r#"s[a="1,b=2"]"#);
        assert_eq!(name(&[("a", json!("x]"))]), r#"s[a="x]"]"#);
        assert_eq!(name(&[("a", json!("say \"hi\""))]), r#"s[a="say \"hi\""]"#);
        assert_eq!(name(&[("a", json!("{x}"))]), r#"s[a="\u007bx\u007d"]"#);
        assert_eq!(
            name(&[("a", json!([1, "1", "}"]))]),
            r#"s[a=[1,"1","\u007d"]]"#
        );
        assert_eq!(name(&[("a", json!(["x"]))]), r#"s[a=["x"]]"#);
        assert_eq!(name(&[("a", json!("[\"x\"]"))]), r#"s[a="[\"x\"]"]"#);
        assert_eq!(name(&[("k=v", json!(1))]), r#"s["k=v"=1]"#);
    }

    #[test]
    fn names_never_collide() {
        // Before: both read `s[a=1,b=2,b=3]`.
        let one = name(&[("a", json!("1")), ("b", json!("2,b=3"))]);
        let two = name(&[("a", json!("1,b=2")), ("b", json!(3))]);
        assert_ne!(one, two);
        let values = [
            json!(1),
            json!("1"),
            json!(1.0),
            json!("1.0"),
            json!(""),
            json!(null),
            json!("null"),
            json!([1]),
            json!("[1]"),
            json!(["1"]),
            json!({"a": 1}),
            json!("{\"a\":1}"),
            json!("a,b"),
            json!("a\",b"),
        ];
        let mut names: Vec<String> = values.iter().map(|v| name(&[("k", v.clone())])).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), values.len(), "{names:?}");
        assert!(names
            .iter()
            .all(|n| !n.contains('}') || n.contains("{\"a\":1}")));
    }
}
