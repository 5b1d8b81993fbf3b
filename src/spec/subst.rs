//! `${params.NAME}` and `${matrix.KEY}` substitution, done before hashing so
//! a stage key sees the values, not the placeholders.
//!
//! A string that is exactly one placeholder takes the value's type
//! (`lr: ${params.lr}` stays a number); otherwise values are interpolated as
//! text. `{in.X}` and `{out}` (single braces) are left for run time.
//!
//! `${pipeline.name}` and `${pipeline.revision}` (the pipeline file's git
//! commit, `-dirty` when it differs from it, `none` outside git) let a stage
//! state its provenance, e.g. the report's params. Being substituted, they
//! are part of that stage's key: it re-runs on a new revision, and no stage
//! sees them unless it asks.

use serde_json::Value;

use super::Matrix;
use crate::ops::Params;

/// What placeholders may refer to.
pub struct Scope<'a> {
    pub params: &'a Params,
    pub matrix: &'a Matrix,
    /// `name` and, when the file mentions it, `revision`.
    pub pipeline: &'a Params,
    /// The stage's own params, already substituted (`${stage.params.x}` in a
    /// cmd); `None` while the stage's params themselves are substituted.
    pub stage: Option<&'a Params>,
}

/// Substitute every placeholder inside `value`, recursively.
pub fn subst_value(value: &Value, scope: &Scope) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => subst_string_typed(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| subst_value(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), subst_value(v, scope)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn subst_string_typed(s: &str, scope: &Scope) -> Result<Value, String> {
    let trimmed = s.trim();
    if let Some(inner) = trimmed.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if !inner.contains("${") && !inner.contains('}') {
            return lookup(inner, scope).cloned();
        }
    }
    subst_string(s, scope).map(Value::String)
}

/// Interpolate placeholders into text (for `cmd` and mixed strings).
pub fn subst_string(s: &str, scope: &Scope) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`; write `${{params.NAME}}`"))?;
        match lookup(&after[..end], scope)? {
            Value::String(text) => out.push_str(text),
            other => out.push_str(&display_value(other)),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn lookup<'a>(path: &str, scope: &'a Scope) -> Result<&'a Value, String> {
    let path = path.trim();
    let (ns, name) = path
        .split_once('.')
        .ok_or_else(|| format!("`${{{path}}}` must be `${{params.NAME}}` or `${{matrix.KEY}}`"))?;
    if ns == "stage" {
        return lookup_stage(path, name, scope);
    }
    let found = match ns {
        "params" => scope.params.get(name),
        "matrix" => scope.matrix.get(name),
        "pipeline" => scope.pipeline.get(name),
        _ => {
            return Err(format!(
                "`${{{path}}}`: unknown namespace `{ns}`; use `params`, `matrix`, `pipeline` or `stage.params`"
            ))
        }
    };
    // The valid names only for the error: a million members substitute
    // without listing them once each.
    let map_keys = || -> Vec<&str> {
        match ns {
            "params" => scope.params.keys().map(String::as_str).collect(),
            "matrix" => scope.matrix.keys().collect(),
            _ => scope.pipeline.keys().map(String::as_str).collect(),
        }
    };
    found.ok_or_else(|| {
        let map_keys = map_keys();
        let valid = if map_keys.is_empty() {
            "none are defined".to_string()
        } else {
            map_keys
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let hint = crate::suggest::closest(name, map_keys.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        format!("`${{{path}}}`: no {ns} named `{name}`{hint}; valid: {valid}")
    })
}

/// `${stage.params.NAME}`: a cmd stage's own `params:` (after their own
/// substitution), so a stage can name its settings once and use them in its
/// command.
fn lookup_stage<'a>(path: &str, rest: &str, scope: &'a Scope) -> Result<&'a Value, String> {
    let Some(name) = rest.strip_prefix("params.") else {
        return Err(format!(
            "`${{{path}}}`: write `${{stage.params.NAME}}` for one of this stage's own params"
        ));
    };
    let Some(own) = scope.stage else {
        return Err(format!(
            "`${{{path}}}`: a stage's params cannot refer to each other; use `${{params.NAME}}` (the pipeline's) here"
        ));
    };
    own.get(name).ok_or_else(|| {
        let keys: Vec<&str> = own.keys().map(String::as_str).collect();
        let hint = crate::suggest::closest(name, keys.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let valid = if keys.is_empty() {
            "the stage has no `params:`".to_string()
        } else {
            format!(
                "its params: {}",
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!("`${{{path}}}`: this stage has no param `{name}`{hint}; {valid}")
    })
}

/// How a value reads inside text and inside matrix member names.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn scope_with(params: &Params, matrix: &BTreeMap<String, Value>) -> String {
        let pipeline = Params::new();
        let scope = Scope {
            params,
            matrix: &Matrix::from_map(matrix),
            pipeline: &pipeline,
            stage: None,
        };
        subst_string(
            "python x.py --lr ${params.lr} --seed ${matrix.seed}",
            &scope,
        )
        .unwrap()
    }

    #[test]
    fn typed_and_text_substitution() {
        let mut params = Params::new();
        params.insert("lr".into(), json!(0.0001));
        let mut matrix = BTreeMap::new();
        matrix.insert("seed".into(), json!(3));
        assert_eq!(
            scope_with(&params, &matrix),
            "python x.py --lr 0.0001 --seed 3"
        );
        let pipeline = Params::new();
        let matrix = Matrix::from_map(&matrix);
        let scope = Scope {
            params: &params,
            matrix: &matrix,
            pipeline: &pipeline,
            stage: None,
        };
        assert_eq!(
            subst_value(&json!("${params.lr}"), &scope).unwrap(),
            json!(0.0001)
        );
        assert_eq!(
            subst_value(&json!({"a": ["${matrix.seed}"]}), &scope).unwrap(),
            json!({"a": [3]})
        );
    }

    #[test]
    fn unknown_param_lists_valid_ones() {
        let mut params = Params::new();
        params.insert("seed".into(), json!(0));
        let matrix = Matrix::default();
        let pipeline = Params::new();
        let scope = Scope {
            params: &params,
            matrix: &matrix,
            pipeline: &pipeline,
            stage: None,
        };
        let err = subst_string("${params.sed}", &scope).unwrap_err();
        assert!(err.contains("did you mean `seed`"), "{err}");
        assert!(subst_string("${params.seed", &scope)
            .unwrap_err()
            .contains("unclosed"));
    }
}
