//! `matrix:` expansion: one stage per combination of the listed values.
//!
//! Members are named `stage[k1=v1,k2=v2]`, keys in sorted order, values as
//! they read in text (`lr=0.0001`). Adding a value to a list adds a member and
//! leaves the other members' names, and so their keys, unchanged.

use std::collections::BTreeMap;

use serde_json::Value;

use super::subst::display_value;

/// Every combination of `matrix`, as (member suffix, values).
pub fn combinations(matrix: &BTreeMap<String, Vec<Value>>) -> Vec<BTreeMap<String, Value>> {
    let mut out = vec![BTreeMap::new()];
    for (key, values) in matrix {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for partial in &out {
            for v in values {
                let mut m = partial.clone();
                m.insert(key.clone(), v.clone());
                next.push(m);
            }
        }
        out = next;
    }
    out
}

/// `train` + {lr: 0.001} → `train[lr=0.001]`.
pub fn member_name(base: &str, values: &BTreeMap<String, Value>) -> String {
    if values.is_empty() {
        return base.to_string();
    }
    let inner = values
        .iter()
        .map(|(k, v)| format!("{k}={}", display_value(v)))
        .collect::<Vec<_>>()
        .join(",");
    format!("{base}[{inner}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_in_sorted_key_order() {
        let mut m = BTreeMap::new();
        m.insert("seed".to_string(), vec![json!(1), json!(2)]);
        m.insert("lr".to_string(), vec![json!(0.0001), json!(0.001)]);
        let names: Vec<String> = combinations(&m)
            .iter()
            .map(|c| member_name("train", c))
            .collect();
        assert_eq!(
            names,
            [
                "train[lr=0.0001,seed=1]",
                "train[lr=0.0001,seed=2]",
                "train[lr=0.001,seed=1]",
                "train[lr=0.001,seed=2]"
            ]
        );
    }
}
