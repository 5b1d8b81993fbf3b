//! Metrics for people: a stage's metrics as an indented tree (`hcpipe show`),
//! and the classifiers of a pipeline side by side (the end of `make demo`).

use serde_json::Value;

use crate::ops::Metrics;

/// One line per metric, nested groups indented under their name, numbers
/// with four significant decimals, names aligned per group.
pub fn indented(metrics: &Metrics, indent: usize) -> String {
    let mut out = String::new();
    write_group(metrics, indent, &mut out);
    out
}

fn write_group(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    let width = map
        .iter()
        .filter(|(_, v)| !v.is_object())
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in map {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(inner) => {
                out.push_str(&format!("{pad}{k}:\n"));
                write_group(inner, indent + 2, out);
            }
            other => {
                let gap = " ".repeat(width - k.chars().count() + 2);
                out.push_str(&format!("{pad}{k}{gap}{}\n", scalar(other)));
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.1}")
            } else {
                format!("{x:.4}")
            }
        }
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// The classification results of a pipeline's stages: a row per (stage,
/// set) whose metrics hold `balanced_accuracy` (`validation`, `test`, the
/// `old` ≥ 62 subgroup, ...), with sensitivity, specificity and ROC AUC.
/// Empty when no stage has any.
pub fn results_table(stages: &[(String, Metrics, std::path::PathBuf)]) -> String {
    let mut rows = Vec::new();
    for (stage, metrics, _) in stages {
        for (set, group) in metrics {
            let Some(g) = group.as_object() else { continue };
            let Some(bacc) = g.get("balanced_accuracy") else {
                continue;
            };
            let cell = |k: &str| g.get(k).map_or_else(|| "–".to_string(), num3);
            rows.push(vec![
                stage.clone(),
                set.clone(),
                g.get("n").map_or_else(|| "–".to_string(), Value::to_string),
                num3(bacc),
                cell("sensitivity"),
                cell("specificity"),
                cell("roc_auc"),
            ]);
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    super::table::render(
        &[
            "stage",
            "set",
            "n",
            "balanced acc.",
            "sensitivity",
            "specificity",
            "ROC AUC",
        ],
        &rows,
    )
}

fn num3(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "–".to_string(), |x| format!("{x:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_metrics_are_indented_and_aligned() {
        let m: Metrics = serde_json::from_str(
            r#"{"validation": {"n": 20, "balanced_accuracy": 0.83333333, "roc_auc": null}, "device": "cpu", "wall_s": 2.0}"#,
        )
        .unwrap();
        assert_eq!(
            indented(&m, 2),
            "  validation:\n    n                  20\n    balanced_accuracy  0.8333\n    roc_auc            –\n  device  cpu\n  wall_s  2.0\n"
        );
    }

    #[test]
    fn results_table_lists_each_evaluated_set() {
        let m: Metrics = serde_json::from_str(
            r#"{"validation": {"n": 20, "balanced_accuracy": 0.8, "sensitivity": 0.75, "specificity": 0.85, "roc_auc": 0.9}, "old": {"n": 9, "balanced_accuracy": 0.7}, "members": ["a"]}"#,
        )
        .unwrap();
        let t = results_table(&[("vote".into(), m, "/x".into())]);
        assert_eq!(
            t,
            "stage  set         n   balanced acc.  sensitivity  specificity  ROC AUC\n\
             vote   validation  20  0.800          0.750        0.850        0.900\n\
             vote   old         9   0.700          –            –            –\n"
        );
        assert!(results_table(&[("x".into(), Metrics::new(), "/x".into())]).is_empty());
    }
}
