//! The section of a user's own stages (`cmd` stages in `needs`): each one's
//! metrics, flattened to `group.metric` rows, so that a result a user's
//! script computed (an AUC, a new model's accuracy) stands on the page beside
//! the lab's. Their `predictions.tsv` and `history.tsv` already join the
//! validation and training sections.

use serde_json::Value;

use super::html::{num, Page};
use crate::artifact::metrics;
use crate::ops::{Input, OpCtx, OpError};

/// At most this many metrics per stage: a stage that dumps a large table
/// into metrics.json must not drown the page.
const MAX_ROWS: usize = 40;

pub(super) fn own_stages(ctx: &OpCtx, page: &mut Page) -> Result<(), OpError> {
    let mut shown = Vec::new();
    for input in ctx.inputs.iter().filter(|i| i.op.is_none()) {
        let Some(m) = metrics::read_in(&input.dir)? else {
            continue;
        };
        let mut rows = Vec::new();
        flatten("", &Value::Object(m), &mut rows);
        if !rows.is_empty() {
            shown.push((input, rows));
        }
    }
    if shown.is_empty() {
        return Ok(());
    }
    page.section("own", "Your stages");
    for (input, rows) in shown {
        own_stage(input, rows, page);
    }
    page.end_section();
    Ok(())
}

fn own_stage(input: &Input, mut rows: Vec<(String, String)>, page: &mut Page) {
    page.heading(&input.stage);
    let more = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k, v]).collect();
    page.table(&["metric".into(), "value".into()], &rows);
    if more > 0 {
        page.para(&format!(
            "… and {more} more in its metrics.json (`hcpipe show PIPELINE {}`).",
            input.stage
        ));
    }
}

/// `{"a": {"b": 1}}` → `("a.b", "1.000")`; lists are shown as their JSON text.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Number(n) => out.push((
            prefix.to_string(),
            if n.is_f64() {
                num(n.as_f64())
            } else {
                n.to_string()
            },
        )),
        Value::Null => out.push((prefix.to_string(), "–".into())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_metrics() {
        let v = serde_json::json!({"auc": 0.91234, "n": 20, "old": {"auc": null}, "tag": "x", "l": [1, 2]});
        let mut rows = Vec::new();
        flatten("", &v, &mut rows);
        assert_eq!(
            rows,
            [
                ("auc".into(), "0.912".into()),
                ("n".into(), "20".into()),
                ("old.auc".into(), "–".into()),
                ("tag".into(), "x".into()),
                ("l".into(), "[1,2]".into()),
            ]
        );
    }
}
