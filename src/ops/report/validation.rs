//! The validation section: the lab's metrics of every `evaluate` and
//! `soft_vote` stage, and of a user's own stage whose artifact holds a
//! `predictions.tsv`, on all evaluated subjects and the age-filtered ones.
//! A stage whose metrics.json lacks the lab's metrics (a user's stage) has
//! them computed from its predictions.

use serde_json::Value;

use super::html::{num, Page};
use crate::artifact::metrics;
use crate::artifact::predictions::{self, Predictions};
use crate::ops::{Input, OpCtx, OpError};

const METRIC_COLUMNS: [(&str, &str); 6] = [
    ("n", "n"),
    ("balanced_accuracy", "balanced acc."),
    ("accuracy", "accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("mean_loss", "mean loss"),
];

fn metric_cells(group: Option<&Value>) -> Vec<String> {
    METRIC_COLUMNS
        .iter()
        .map(|(key, _)| {
            let v = group.and_then(|g| g.get(*key));
            match (key, v) {
                (&"n", Some(n)) => n
                    .as_u64()
                    .map_or_else(|| num(n.as_f64()), |n| n.to_string()),
                (_, v) => num(v.and_then(Value::as_f64)),
            }
        })
        .collect()
}

pub(super) fn validation(ctx: &OpCtx, page: &mut Page) -> Result<(), OpError> {
    let members: Vec<&Input> = ctx
        .inputs
        .iter()
        .filter(|i| match i.op.as_deref() {
            Some(op) => op == "evaluate" || op == "soft_vote",
            None => i.dir.join(predictions::FILE).is_file(),
        })
        .collect();
    if members.is_empty() {
        return Ok(());
    }
    page.section("validation", "Validation metrics");
    let mut rows = Vec::new();
    let mut any_old = false;
    let mut tables = Vec::new();
    for m in &members {
        let metrics = metrics::read_in(&m.dir)?.unwrap_or_default();
        // The group of the evaluated set: `validation`, or a subject list's
        // set named by `"set"`; a user's stage may have neither.
        let set = metrics
            .get("set")
            .and_then(Value::as_str)
            .unwrap_or("validation");
        let all = match metrics.get(set) {
            Some(group) if group.is_object() => group.clone(),
            _ if m.op.is_none() => from_predictions(m)?,
            _ => {
                return Err(OpError::Msg(format!(
                    "{}: no `{set}` metrics; expected what `evaluate`/`soft_vote` write",
                    m.dir.join(metrics::FILE).display()
                )))
            }
        };
        any_old |= metrics.contains_key("old");
        tables.push((m, metrics.clone(), all));
    }
    for (m, metrics, all) in &tables {
        let mut row = vec![format!(
            "{}{}",
            m.stage,
            if m.op.as_deref() == Some("soft_vote") {
                " (soft vote)"
            } else {
                ""
            }
        )];
        row.extend(metric_cells(Some(all)));
        if any_old {
            row.extend(metric_cells(metrics.get("old")));
        }
        rows.push(row);
    }
    let cols: Vec<String> = METRIC_COLUMNS.iter().map(|(_, h)| h.to_string()).collect();
    let mut groups = vec![("all validation subjects".to_string(), cols.clone())];
    if any_old {
        groups.push(("age ≥ 62 (age_filter)".to_string(), cols));
    }
    page.grouped_table("stage", &groups, &rows);
    page.para("The soft vote averages its members' probabilities; it has no loss. – marks a value a stage does not report.");
    page.end_section();
    Ok(())
}

/// The lab's metrics (and ROC AUC) of a stage's own `predictions.tsv`.
fn from_predictions(m: &Input) -> Result<Value, OpError> {
    let rows = Predictions::read(&m.dir.join(predictions::FILE))?.0;
    Ok(crate::ops::soft_vote::metrics_json(&rows))
}
