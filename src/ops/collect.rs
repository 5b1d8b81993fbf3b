//! `collect`: one table from the metrics of gathered stages — a sweep's
//! results side by side (`pipelines/lr-sweep.yaml`).
//!
//! Rows are matrix members, keyed by their values (`lr=0.001`); each column
//! is `BASE.dotted.metric.path`, read from the `metrics.json` of the member
//! of stage `BASE` with those values. Writes `table.tsv` and `table.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::Value;

use super::{Metrics, OpCtx, OpError};
use crate::artifact::metrics;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectParams {
    /// Columns as `STAGE.metric.path` (STAGE: a gathered stage's name in the file).
    pub columns: Vec<String>,
    /// Optional headers, one per column (default: the column paths).
    #[serde(default)]
    pub headers: Vec<String>,
}

pub fn check(params: &super::Params) -> Result<(), String> {
    let p: CollectParams = super::parse_params(params)?;
    if p.columns.is_empty() {
        return Err("`columns` is empty; list metrics as STAGE.metric.path".into());
    }
    if !p.headers.is_empty() && p.headers.len() != p.columns.len() {
        return Err(format!(
            "`headers` has {} names for {} columns",
            p.headers.len(),
            p.columns.len()
        ));
    }
    for c in &p.columns {
        if !c.contains('.') {
            return Err(format!("column `{c}` must read STAGE.metric.path"));
        }
    }
    Ok(())
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: CollectParams = ctx.params()?;
    // member values ("lr=0.001") → base stage → metrics
    let mut rows: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut matrix_keys: Vec<String> = Vec::new();
    for input in ctx.inputs {
        let (base, values) = match input.stage.split_once('[') {
            Some((b, rest)) => (b.to_string(), rest.trim_end_matches(']').to_string()),
            None => (input.stage.clone(), String::new()),
        };
        for kv in values.split(',').filter(|s| !s.is_empty()) {
            let k = kv.split('=').next().unwrap_or(kv).to_string();
            if !matrix_keys.contains(&k) {
                matrix_keys.push(k);
            }
        }
        // A member without metrics (a cmd stage that wrote none) gives empty cells.
        let metrics = Value::Object(metrics::read_in(&input.dir)?.unwrap_or_default());
        rows.entry(values).or_default().insert(base, metrics);
    }
    if rows.is_empty() {
        return Err(OpError::Msg(format!(
            "stage `{}` gathered nothing; give it `needs` and `gather: true`",
            ctx.stage
        )));
    }
    let headers: Vec<String> = if p.headers.is_empty() {
        p.columns.clone()
    } else {
        p.headers.clone()
    };
    let mut tsv = String::new();
    let mut md = String::new();
    let head: Vec<String> = matrix_keys
        .iter()
        .cloned()
        .chain(headers.iter().cloned())
        .collect();
    let _ = writeln!(tsv, "{}", head.join("\t"));
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(head.len()));
    let mut missing = Vec::new();
    for (values, by_base) in &rows {
        let kv: BTreeMap<&str, &str> = values
            .split(',')
            .filter_map(|s| s.split_once('='))
            .collect();
        let mut cells: Vec<String> = matrix_keys
            .iter()
            .map(|k| kv.get(k.as_str()).unwrap_or(&"").to_string())
            .collect();
        for col in &p.columns {
            let (base, path) = col.split_once('.').unwrap_or((col, ""));
            let v = by_base
                .get(base)
                .and_then(|m| path.split('.').try_fold(m, |v, k| v.get(k)));
            match v {
                Some(Value::Number(n)) => cells.push(format_number(n.as_f64().unwrap_or(f64::NAN))),
                Some(Value::String(s)) => cells.push(s.clone()),
                Some(other) => cells.push(other.to_string()),
                None => {
                    missing.push(format!("{col} for [{values}]"));
                    cells.push(String::new());
                }
            }
        }
        let _ = writeln!(tsv, "{}", cells.join("\t"));
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    if missing.len() == rows.len() * p.columns.len() {
        return Err(OpError::Msg(format!(
            "stage `{}`: none of the columns were found ({}); check the STAGE.metric paths against the gathered stages' metrics.json",
            ctx.stage,
            p.columns.join(", ")
        )));
    }
    std::fs::write(ctx.out.join("table.tsv"), tsv)
        .map_err(|e| OpError::io(ctx.out.join("table.tsv"), e))?;
    std::fs::write(ctx.out.join("table.md"), &md)
        .map_err(|e| OpError::io(ctx.out.join("table.md"), e))?;
    let mut m = Metrics::new();
    m.insert("rows".into(), Value::from(rows.len()));
    if !missing.is_empty() {
        m.insert("missing".into(), Value::from(missing));
    }
    Ok(m)
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}
