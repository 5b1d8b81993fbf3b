//! `collect`: one table from the metrics of gathered stages — a sweep's
//! results side by side (`pipelines/lr-sweep.yaml`).
//!
//! Rows are matrix members, keyed by their values (`lr=0.001`), in natural
//! order (numbers by value, so `2` before `16`); each column is
//! `BASE.dotted.metric.path`, read from the `metrics.json` of the member of
//! stage `BASE` with those values. A column whose numbers are all whole is
//! written without decimals, any other column with four for every number.
//! A column that no member has is an error naming the nearest metric paths
//! (a typo must not become a blank column). Writes `table.tsv` and
//! `table.md`.

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
    for col in &p.columns {
        check_column(ctx.stage, col, &rows)?;
    }
    let mut rows: Vec<(String, BTreeMap<String, Value>)> = rows.into_iter().collect();
    rows.sort_by(|(a, _), (b, _)| natural_cmp(a, b));
    // Per column: whole numbers only → no decimals; else four for every number.
    let whole: Vec<bool> = p
        .columns
        .iter()
        .map(|col| {
            rows.iter()
                .filter_map(|(_, by_base)| lookup(by_base, col))
                .filter_map(Value::as_number)
                .all(|n| n.is_i64() || n.is_u64())
        })
        .collect();
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
        for (col, &whole) in p.columns.iter().zip(&whole) {
            match lookup(by_base, col) {
                Some(Value::Number(n)) => {
                    cells.push(format_number(n.as_f64().unwrap_or(f64::NAN), whole))
                }
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

/// The value at `BASE.metric.path` in a row's metrics by base stage.
fn lookup<'v>(by_base: &'v BTreeMap<String, Value>, col: &str) -> Option<&'v Value> {
    let (base, path) = col.split_once('.').unwrap_or((col, ""));
    by_base
        .get(base)
        .and_then(|m| path.split('.').try_fold(m, |v, k| v.get(k)))
}

/// A column no row has is a mistake (a typo, a stage not gathered): an error
/// naming the gathered stages or the nearest metric paths of its stage.
fn check_column(
    stage: &str,
    col: &str,
    rows: &BTreeMap<String, BTreeMap<String, Value>>,
) -> Result<(), OpError> {
    if rows.values().any(|by_base| lookup(by_base, col).is_some()) {
        return Ok(());
    }
    let (base, _) = col.split_once('.').unwrap_or((col, ""));
    let bases: std::collections::BTreeSet<&str> = rows
        .values()
        .flat_map(|b| b.keys().map(String::as_str))
        .collect();
    if !bases.contains(base) {
        let near = crate::suggest::closest(base, bases.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return Err(OpError::Msg(format!(
            "stage `{stage}` (collect): column `{col}` names stage `{base}`, which it does not gather{near}; \
             it gathers {}",
            bases.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut paths = std::collections::BTreeSet::new();
    for by_base in rows.values() {
        if let Some(m) = by_base.get(base) {
            metric_paths(base, m, &mut paths);
        }
    }
    let near = crate::suggest::closest(col, paths.iter().map(String::as_str))
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default();
    let listed: Vec<&str> = paths.iter().map(String::as_str).take(30).collect();
    Err(OpError::Msg(format!(
        "stage `{stage}` (collect): no member of `{base}` has the metric `{col}`; {near}its metrics are: {}",
        if listed.is_empty() {
            "none (it wrote no metrics.json)".to_string()
        } else {
            listed.join(", ")
        }
    )))
}

/// Every leaf's `BASE.dotted.path` in a metrics object.
fn metric_paths(prefix: &str, v: &Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                metric_paths(&format!("{prefix}.{k}"), v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Member values (`lr=0.001,seed=2`) compared axis by axis, numbers by
/// value and other text with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<String> { s.split(',').map(str::to_string).collect() };
    let (a, b) = (parts(a), parts(b));
    for (x, y) in a.iter().zip(&b) {
        let vx = x.split_once('=').map_or(x.as_str(), |(_, v)| v);
        let vy = y.split_once('=').map_or(y.as_str(), |(_, v)| v);
        let ord = match (vx.parse::<f64>(), vy.parse::<f64>()) {
            (Ok(p), Ok(q)) => p.total_cmp(&q),
            _ => natural_text_cmp(vx, vy),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// `run2` before `run10`: digit runs by value, the rest by character.
fn natural_text_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (&a[..da], &b[..db]);
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

fn format_number(x: f64, whole_column: bool) -> String {
    if whole_column && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_values_sort_naturally() {
        let mut v = vec!["n=16", "n=2", "n=1e-3", "n=-1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["n=-1", "n=1e-3", "n=2", "n=16"]);
        let mut v = vec!["r=run10,s=1", "r=run2,s=2", "r=run2,s=10", "r=a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["r=a", "r=run2,s=2", "r=run2,s=10", "r=run10,s=1"]);
    }

    #[test]
    fn numbers_are_formatted_per_column() {
        assert_eq!(format_number(1.0, true), "1");
        assert_eq!(format_number(1.0, false), "1.0000");
        assert_eq!(format_number(0.98956, false), "0.9896");
    }
}
