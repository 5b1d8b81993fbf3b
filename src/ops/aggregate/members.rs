//! A gathered member as `aggregate` sees it: its stage, its axis values read back from its
//! name, and the numbers of its `metrics.json`.

use serde_json::{Map, Value};

/// `eval_left[fold=0,seed=1]` → (`eval_left`, {"fold": 0, "seed": 1}); a name without `[..]`
/// → (the name, {}). `None` when the brackets do not parse.
///
/// The runner writes member names (its `spec::matrix::member_name`, which the op cannot
/// import): `KEY=VALUE` pairs, keys sorted, a value as it reads in text, written as JSON
/// where plain text would be ambiguous (a string holding `,` or `=`, one that reads as a
/// number, arrays, maps). So a value that parses as JSON is that JSON, anything else is a
/// plain string, and a name always gives back the values it was made from.
pub fn split_name(name: &str) -> Option<(&str, Map<String, Value>)> {
    let Some(open) = name.find('[') else {
        return Some((name, Map::new()));
    };
    let inner = name.get(open + 1..)?.strip_suffix(']')?;
    let mut axes = Map::new();
    for pair in split_top(inner, ',') {
        let mut kv = split_top(pair, '=').into_iter();
        let (key, value) = (kv.next()?, kv.collect::<Vec<_>>().join("="));
        if value.is_empty() && !pair.contains('=') {
            return None;
        }
        let key = if key.starts_with('"') {
            serde_json::from_str::<String>(key).ok()?
        } else {
            key.to_string()
        };
        let value = serde_json::from_str::<Value>(&value).unwrap_or(Value::String(value));
        axes.insert(key, value);
    }
    Some((name.get(..open)?, axes))
}

/// `text` split at each `sep` outside JSON strings and brackets.
fn split_top(text: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut depth) = (Vec::new(), 0, 0i32);
    let (mut in_string, mut escaped) = (false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// What a member's metrics hold at `set.metric`.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Number(f64),
    /// `null`: the op could not compute it (an AUC with one class), or a cmd wrote NaN.
    Null,
    /// Something else than a number (a string, a list, a map).
    NotNumber(Value),
    /// The path ends early: `missing` is the first name not found, `have` what its level
    /// holds (for "did you mean"), `set_missing` whether that was the set itself.
    Missing {
        missing: String,
        have: Vec<String>,
        set_missing: bool,
    },
}

/// `metrics[set][metric...]`, `metric` possibly dotted (`loss.mean`).
pub fn lookup(metrics: &Map<String, Value>, set: &str, metric: &str) -> Lookup {
    let mut level = metrics;
    let mut names = std::iter::once(set).chain(metric.split('.')).peekable();
    let mut first = true;
    while let Some(name) = names.next() {
        let Some(v) = level.get(name) else {
            return Lookup::Missing {
                missing: name.to_string(),
                have: level.keys().cloned().collect(),
                set_missing: first,
            };
        };
        first = false;
        if names.peek().is_none() {
            return match v {
                Value::Number(n) => n.as_f64().map_or(Lookup::Null, Lookup::Number),
                Value::Null => Lookup::Null,
                other => Lookup::NotNumber(other.clone()),
            };
        }
        match v {
            Value::Object(map) => level = map,
            _ => {
                return Lookup::Missing {
                    missing: names.next().unwrap_or_default().to_string(),
                    have: Vec::new(),
                    set_missing: false,
                }
            }
        }
    }
    Lookup::Missing {
        missing: set.to_string(),
        have: Vec::new(),
        set_missing: true,
    }
}

pub use crate::suggest::closest;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_give_back_their_values() {
        let (base, axes) = split_name("eval_left[fold=0,seed=1]").unwrap();
        assert_eq!(base, "eval_left");
        assert_eq!(Value::Object(axes), json!({"fold": 0, "seed": 1}));
        let (base, axes) = split_name("plain").unwrap();
        assert_eq!((base, axes.len()), ("plain", 0));
        // strings that would read as something else are JSON strings; plain text is text
        let (_, axes) =
            split_name(r#"s[hemi=left,lr=0.001,v="1.10",w="a,b",x=[1,2],"k=y"=z]"#).unwrap();
        assert_eq!(
            Value::Object(axes),
            json!({"hemi": "left", "lr": 0.001, "v": "1.10", "w": "a,b", "x": [1, 2], "k=y": "z"})
        );
        assert!(split_name("s[fold=0").is_none());
        assert!(split_name("s[fold]").is_none());
    }

    #[test]
    fn lookup_says_what_is_there() {
        let m = json!({"test": {"balanced_accuracy": 0.75, "roc_auc": null, "loss": {"mean": 2}},
                       "members": ["a"]});
        let m = m.as_object().unwrap();
        assert_eq!(lookup(m, "test", "balanced_accuracy"), Lookup::Number(0.75));
        assert_eq!(lookup(m, "test", "loss.mean"), Lookup::Number(2.0));
        assert_eq!(lookup(m, "test", "roc_auc"), Lookup::Null);
        assert!(matches!(lookup(m, "test", "loss"), Lookup::NotNumber(_)));
        match lookup(m, "test", "balanced_acuracy") {
            Lookup::Missing {
                missing,
                have,
                set_missing: false,
            } => {
                assert_eq!(missing, "balanced_acuracy");
                assert_eq!(
                    closest(&missing, have.iter().map(String::as_str)).as_deref(),
                    Some("balanced_accuracy")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup(m, "tset", "roc_auc"),
            Lookup::Missing {
                set_missing: true,
                ..
            }
        ));
        assert!(matches!(
            lookup(m, "members", "x"),
            Lookup::Missing {
                set_missing: false,
                ..
            }
        ));
    }
}
