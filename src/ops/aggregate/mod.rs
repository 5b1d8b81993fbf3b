//! `aggregate`: the paper table. A gather stage over the matrix stages a paper reports (the
//! left and right CNN's evaluations, their soft vote, AE + GMM), each trained on k folds ×
//! seeds: one row per stage, one column per (evaluated set, metric), each cell the mean ±
//! sample SD over the stage's members (the lab's paper, Wen et al. 2020, and ClinicaDL
//! report this), with min–max and the 95 % t-interval on request; and a *pooled* row per
//! stage, the metrics recomputed on all members' predictions together (as nnU-Net does),
//! always labelled as such.
//!
//! ```yaml
//! table:
//!   op: aggregate
//!   needs: [eval_left, eval_right, vote]
//!   gather: true
//!   params:
//!     rows: [{stage: eval_left, label: "left CNN"}, {stage: eval_right, label: "right CNN"},
//!            {stage: vote, label: "soft vote"}]
//!     sets: [test]                      # `<set>.<metric>` in each member's metrics.json
//!     metrics: [balanced_accuracy, sensitivity, specificity, accuracy, roc_auc]  # the default
//!     interval: false                   # true: min–max and the 95 % interval in .md/.tex
//! ```
//!
//! A member's values come from its `metrics.json` at `<set>.<metric>` (a row may read a set
//! under another name: `{stage: clusters, label: "AE + GMM", set_keys: {test: matched}}`).
//! The pooled row of a set exists where every member of the row has a `predictions.tsv`
//! holding that set (as many rows as the member's `<set>.n`); its cells are the metrics
//! `evaluate` and `soft_vote` compute (`ops::metrics::ScoredMetrics`).
//!
//! Artifact: `table.json` ([`crate::artifact::table`], every member's value in every cell),
//! `table.tsv` (long format, one line per cell), `table.md` (one table per set) and
//! `table.tex` (booktabs). Bad input is an error naming the stage, the member and the fix: a
//! metric some members lack, a null (NaN) value, a row stage not in `needs`, an empty gather;
//! a metric no member has gets a "did you mean".

mod members;
pub mod render;
mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use self::members::{closest, lookup, split_name, Lookup};
use super::metrics::{scored_metrics, ScoredMetrics};
use super::{Input, Metrics, OpCtx, OpError, Params};
use crate::artifact::metrics as metrics_file;
use crate::artifact::predictions::{self, Predictions};
use crate::artifact::table::{self, Column, MemberValue, PaperTable, PooledCell, Row};

/// The columns a paper on the lab's task reports (Wen et al. 2020, table 5), AUC last.
pub const DEFAULT_METRICS: [&str; 5] = [
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "accuracy",
    "roc_auc",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateParams {
    /// The table's rows, in order: each a gathered stage.
    pub rows: Vec<RowParams>,
    /// The evaluated sets, in column order (`test`, `validation`, `old`).
    pub sets: Vec<String>,
    /// The metrics under each set, in column order.
    #[serde(default = "default_metrics")]
    pub metrics: Vec<String>,
    /// Show min–max and the 95 % t-interval in `table.md` and `table.tex`.
    #[serde(default)]
    pub interval: bool,
    /// Add the pooled rows where the members have predictions.
    #[serde(default = "yes")]
    pub pooled: bool,
    /// Decimals shown in `table.md` and `table.tex` (the JSON and TSV keep every digit).
    #[serde(default = "default_digits")]
    pub digits: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowParams {
    /// A stage in `needs` (its name as the pipeline writes it, without `[..]`).
    pub stage: String,
    /// The row's name in the table (default: the stage's name).
    #[serde(default)]
    pub label: Option<String>,
    /// Where this row's members keep a set under another name: `{test: matched}` reads the
    /// table's `test` columns from `matched.<metric>` (gmm's metrics).
    #[serde(default)]
    pub set_keys: BTreeMap<String, String>,
}

impl RowParams {
    fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.stage)
    }

    /// The key under which this row's members hold the table's `set`.
    fn key<'a>(&'a self, set: &'a str) -> &'a str {
        self.set_keys.get(set).map_or(set, String::as_str)
    }
}

fn default_metrics() -> Vec<String> {
    DEFAULT_METRICS.iter().map(|s| s.to_string()).collect()
}

fn yes() -> bool {
    true
}

fn default_digits() -> usize {
    3
}

/// Checks the params when the pipeline loads.
pub fn check_params(params: &Params) -> Result<(), String> {
    let p: AggregateParams = super::parse_params(params)?;
    if p.rows.is_empty() {
        return Err(
            "`rows` is empty; list the gathered stages, e.g. `rows: [{stage: eval_left, label: \"left CNN\"}]`"
                .into(),
        );
    }
    for (what, list) in [("sets", &p.sets), ("metrics", &p.metrics)] {
        if list.is_empty() {
            return Err(format!(
                "`{what}` is empty; name at least one (e.g. `sets: [test]`)"
            ));
        }
        if let Some(dup) = duplicate(list.iter().map(String::as_str)) {
            return Err(format!("`{what}` lists `{dup}` twice"));
        }
        if let Some(bad) = list
            .iter()
            .find(|s| s.is_empty() || s.starts_with('.') || s.ends_with('.'))
        {
            return Err(format!(
                "`{what}` has `{bad}`, which is not a name in metrics.json"
            ));
        }
    }
    if let Some(dup) = duplicate(p.rows.iter().map(RowParams::label)) {
        return Err(format!(
            "two rows are labelled `{dup}`; give each row its own `label`"
        ));
    }
    for row in &p.rows {
        if row.label().contains(['\t', '\n', '\r']) || row.label().trim().is_empty() {
            return Err(format!(
                "row label {:?} must be one line of text (no tab or line break)",
                row.label()
            ));
        }
        if let Some(set) = row.set_keys.keys().find(|s| !p.sets.contains(s)) {
            return Err(format!(
                "row `{}`: `set_keys` names set `{set}`, which `sets` ({}) does not list",
                row.label(),
                p.sets.join(", ")
            ));
        }
    }
    if p.digits > 12 {
        return Err(format!(
            "`digits: {}` is more than the 12 a table can mean; the JSON and TSV keep every digit",
            p.digits
        ));
    }
    Ok(())
}

fn duplicate<'a>(items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().find(|s| !seen.insert(*s))
}

/// One gathered member.
struct Member<'a> {
    input: &'a Input,
    axes: Map<String, Value>,
    metrics: Map<String, Value>,
}

/// The op's entry point (see the module docs).
pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: AggregateParams = ctx.params()?;
    check_params(ctx.params).map_err(OpError::Params)?;
    let fail = |msg: String| OpError::Msg(format!("stage `{}` (aggregate): {msg}", ctx.stage));
    if ctx.inputs.is_empty() {
        return Err(fail(
            "it gathered no members; give it `needs: [STAGE, ...]` and `gather: true`".into(),
        ));
    }
    // A member of a fan-out (`table[fold=0]`, its needs projected onto fold 0) would make a
    // table per member, each over one member: the stage must gather instead.
    if let Some((_, own)) = split_name(ctx.stage).filter(|(_, own)| !own.is_empty()) {
        let projected = ctx.inputs.iter().all(|i| {
            split_name(&i.stage)
                .is_some_and(|(_, axes)| own.iter().all(|(k, v)| axes.get(k) == Some(v)))
        });
        if projected {
            return Err(fail(format!(
                "this stage is one member of a fan-out ({}), so it sees only its own members'                  results; give it `gather: true` to tabulate every member",
                own.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
    }
    // Members by stage, in `needs` order.
    let mut by_stage: BTreeMap<&str, Vec<&Input>> = BTreeMap::new();
    for input in ctx.inputs {
        let (base, _) = split_name(&input.stage).ok_or_else(|| {
            fail(format!(
                "cannot read the axis values of member `{}`",
                input.stage
            ))
        })?;
        by_stage.entry(base).or_default().push(input);
    }
    let mut rows: Vec<Vec<Member>> = Vec::new();
    for (i, row) in p.rows.iter().enumerate() {
        let Some(inputs) = by_stage.get(row.stage.as_str()) else {
            let hint = closest(&row.stage, by_stage.keys().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            return Err(fail(format!(
                "row {} names stage `{}`, which is not in its `needs` ({}); {hint}add it to \
                 `needs` or fix `rows[{i}].stage`",
                i + 1,
                row.stage,
                by_stage.keys().copied().collect::<Vec<_>>().join(", ")
            )));
        };
        let mut members = Vec::with_capacity(inputs.len());
        for input in inputs {
            let metrics = metrics_file::read_in(&input.dir)?.ok_or_else(|| {
                fail(format!(
                    "member `{}` has no metrics.json; aggregate reads `<set>.<metric>` from each \
                     member's metrics.json (a cmd stage writes it into {{out}})",
                    input.stage
                ))
            })?;
            let (_, axes) = split_name(&input.stage).unwrap_or_default();
            members.push(Member {
                input,
                axes,
                metrics,
            });
        }
        rows.push(members);
    }

    let columns: Vec<Column> = p
        .sets
        .iter()
        .flat_map(|set| {
            p.metrics.iter().map(move |metric| Column {
                set: set.clone(),
                metric: metric.clone(),
                header: render::header(metric),
            })
        })
        .collect();
    let mut notes = Vec::new();
    // cells[row][column]
    let mut cells: Vec<Vec<Option<table::Cell>>> = vec![Vec::new(); rows.len()];
    for column in &columns {
        let found: Vec<Vec<(&Member, Lookup)>> = p
            .rows
            .iter()
            .zip(&rows)
            .map(|(row, members)| {
                members
                    .iter()
                    .map(|m| (m, lookup(&m.metrics, row.key(&column.set), &column.metric)))
                    .collect()
            })
            .collect();
        if let Some(typo) = typo(&p, &rows, column) {
            return Err(fail(typo));
        }
        for (r, (row, looked)) in p.rows.iter().zip(found).enumerate() {
            cells[r].push(cell(row, column, looked, &mut notes).map_err(fail)?);
        }
    }

    let mut out_rows = Vec::new();
    for ((row, members), row_cells) in p.rows.iter().zip(&rows).zip(cells) {
        let mut axes: Vec<String> = members
            .iter()
            .flat_map(|m| m.axes.keys().cloned())
            .collect();
        axes.sort();
        axes.dedup();
        out_rows.push(Row::Mean {
            label: row.label().to_string(),
            stage: row.stage.clone(),
            axes,
            cells: row_cells,
        });
        if p.pooled {
            if let Some(pooled) = pooled_row(row, members, &columns, &mut notes)? {
                out_rows.push(pooled);
            }
        }
    }
    let table = PaperTable {
        schema: table::SCHEMA,
        columns,
        interval: p.interval,
        rows: out_rows,
        notes,
    };
    table.write(&ctx.out.join(table::FILE))?;
    render::write_tsv(&table, &ctx.out.join("table.tsv"))?;
    write(ctx.out, "table.md", &render::markdown(&table, p.digits))?;
    write(ctx.out, "table.tex", &render::latex(&table, p.digits))?;

    let mut m = Metrics::new();
    m.insert("rows".into(), json!(p.rows.len()));
    m.insert("columns".into(), json!(table.columns.len()));
    let members: Map<String, Value> = p
        .rows
        .iter()
        .zip(&rows)
        .map(|(r, ms)| (r.label().to_string(), json!(ms.len())))
        .collect();
    m.insert("members".into(), Value::Object(members));
    let pooled = table
        .rows
        .iter()
        .filter(|r| matches!(r, Row::Pooled { .. }))
        .count();
    m.insert("pooled_rows".into(), json!(pooled));
    m.insert(
        "empty_cells".into(),
        json!(table
            .rows
            .iter()
            .map(|r| match r {
                Row::Mean { cells, .. } => cells.iter().filter(|c| c.is_none()).count(),
                Row::Pooled { cells, .. } => cells.iter().filter(|c| c.is_none()).count(),
            })
            .sum::<usize>()),
    );
    Ok(m)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), OpError> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| OpError::io(&path, e))
}

/// The error for a column no member of any row has, when that is a typo: its set is in no
/// member, or its metric is under none of the table's sets in any member. `None` when both
/// names exist elsewhere (gmm has no `roc_auc`; an `old` set may lack a metric `test` has):
/// those cells are left empty.
fn typo(p: &AggregateParams, rows: &[Vec<Member>], column: &Column) -> Option<String> {
    let members = || {
        p.rows
            .iter()
            .zip(rows)
            .flat_map(|(r, ms)| ms.iter().map(move |m| (r, m)))
    };
    let row_stages: Vec<&str> = p.rows.iter().map(|r| r.stage.as_str()).collect();
    let listing = |member: &Member, have: &[String]| {
        format!(
            "`{}` has: {}",
            member.input.stage,
            if have.is_empty() {
                "nothing at that level".to_string()
            } else {
                have.join(", ")
            }
        )
    };
    let has_set = |r: &RowParams, m: &Member| m.metrics.contains_key(r.key(&column.set));
    if !members().any(|(r, m)| has_set(r, m)) {
        let (_, first) = members().next()?;
        let have: Vec<String> = first.metrics.keys().cloned().collect();
        let hint = closest(&column.set, have.iter().map(String::as_str))
            .map(|c| format!(" did you mean `{c}`?"))
            .unwrap_or_default();
        return Some(format!(
            "no member of {} has a set `{}` in its metrics.json.{hint} ({}); fix `sets` (or a \
             row's `set_keys`)",
            row_stages.join(", "),
            column.set,
            listing(first, &have)
        ));
    }
    let has_metric = |r: &RowParams, m: &Member| {
        p.sets.iter().any(|s| {
            !matches!(
                lookup(&m.metrics, r.key(s), &column.metric),
                Lookup::Missing { .. }
            )
        })
    };
    if members().any(|(r, m)| has_metric(r, m)) {
        return None;
    }
    // What the first member holds under the column's set (it has it, or another member does).
    let (member, have) = members().find_map(|(r, m)| {
        match lookup(&m.metrics, r.key(&column.set), &column.metric) {
            Lookup::Missing {
                have,
                set_missing: false,
                ..
            } => Some((m, have)),
            _ => None,
        }
    })?;
    let hint = closest(&column.metric, have.iter().map(String::as_str))
        .map(|c| format!(" did you mean `{c}`?"))
        .unwrap_or_default();
    Some(format!(
        "no member of {} has a metric `{}` under {}.{hint} ({} under `{}`); fix `metrics`",
        row_stages.join(", "),
        column.metric,
        p.sets
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" or "),
        listing(member, &have),
        column.set
    ))
}

/// One (row, column) cell from what each member holds, or an error naming the members.
fn cell(
    row: &RowParams,
    column: &Column,
    looked: Vec<(&Member, Lookup)>,
    notes: &mut Vec<String>,
) -> Result<Option<table::Cell>, String> {
    let path = format!("{}.{}", row.key(&column.set), column.metric);
    let names = |pred: &dyn Fn(&Lookup) -> bool| -> Vec<String> {
        looked
            .iter()
            .filter(|(_, l)| pred(l))
            .map(|(m, _)| format!("`{}`", m.input.stage))
            .collect()
    };
    let missing = names(&|l| matches!(l, Lookup::Missing { .. }));
    if missing.len() == looked.len() {
        notes.push(format!(
            "row `{}` has no `{path}` in any member: cell left empty",
            row.label()
        ));
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} of the {} members of `{}` lack `{path}` in their metrics.json: {}; the others \
             have it. Re-run those members with the op version that writes it (`hcpipe run` \
             re-runs what changed), or leave `{}` out of `metrics`",
            missing.len(),
            looked.len(),
            row.stage,
            shorten(&missing),
            column.metric
        ));
    }
    let nulls = names(&|l| matches!(l, Lookup::Null));
    if !nulls.is_empty() {
        return Err(format!(
            "`{path}` is null (NaN, or undefined such as an AUC on a set with one class) in \
             member{} {} of `{}`; a mean over it would be meaningless. Fix what made it (a fold \
             without AD or CN subjects?) or leave `{}` out of `metrics`",
            if nulls.len() > 1 { "s" } else { "" },
            shorten(&nulls),
            row.stage,
            column.metric
        ));
    }
    let mut values = Vec::with_capacity(looked.len());
    for (m, l) in looked {
        match l {
            Lookup::Number(value) => values.push(MemberValue {
                member: m.input.stage.clone(),
                axes: m.axes.clone(),
                value,
            }),
            Lookup::NotNumber(v) => {
                return Err(format!(
                    "`{path}` of member `{}` is {v}, not a number; name a numeric metric in \
                     `metrics`",
                    m.input.stage
                ))
            }
            Lookup::Null | Lookup::Missing { .. } => {
                return Err(format!(
                    "internal: `{path}` of `{}` was checked; please report",
                    m.input.stage
                ))
            }
        }
    }
    Ok(Some(summary::summarise(values)))
}

/// At most five names, then how many more.
fn shorten(names: &[String]) -> String {
    if names.len() <= 5 {
        names.join(", ")
    } else {
        format!("{} and {} more", names[..5].join(", "), names.len() - 5)
    }
}

/// The pooled row of `row`, when its members have predictions for some of the table's sets.
fn pooled_row(
    row: &RowParams,
    members: &[Member],
    columns: &[Column],
    notes: &mut Vec<String>,
) -> Result<Option<Row>, OpError> {
    let with: Vec<&Member> = members
        .iter()
        .filter(|m| m.input.dir.join(predictions::FILE).is_file())
        .collect();
    if with.len() != members.len() {
        if !with.is_empty() {
            notes.push(format!(
                "row `{}`: only {} of its {} members have a predictions.tsv; no pooled row",
                row.label(),
                with.len(),
                members.len()
            ));
        }
        return Ok(None);
    }
    let mut tables = Vec::with_capacity(members.len());
    for m in members {
        tables.push(Predictions::read(&m.input.dir.join(predictions::FILE))?.0);
    }
    // Per set: the pooled metrics when every member's predictions hold that set.
    let mut per_set: BTreeMap<&str, Option<ScoredMetrics>> = BTreeMap::new();
    for column in columns {
        per_set.entry(column.set.as_str()).or_insert_with(|| {
            let holds = members.iter().zip(&tables).all(|(m, rows)| {
                lookup(&m.metrics, row.key(&column.set), "n") == Lookup::Number(rows.len() as f64)
            });
            if !holds {
                notes.push(format!(
                    "row `{}`: the members' predictions.tsv do not hold set `{}` (their row \
                     counts differ from `{}.n`); no pooled `{}` cells",
                    row.label(),
                    column.set,
                    row.key(&column.set),
                    column.set
                ));
                return None;
            }
            let all: Vec<_> = tables.iter().flatten().collect();
            let truth: Vec<i64> = all.iter().map(|r| r.true_label).collect();
            let predicted: Vec<i64> = all.iter().map(|r| r.predicted_label).collect();
            let proba1: Vec<f64> = all.iter().map(|r| r.proba1).collect();
            Some(scored_metrics(&truth, &predicted, &proba1))
        });
    }
    let n_predictions = tables.iter().map(Vec::len).sum();
    let cells: Vec<Option<PooledCell>> = columns
        .iter()
        .map(|c| {
            let scored = per_set.get(c.set.as_str()).copied().flatten()?;
            Some(PooledCell {
                value: scored.get(&c.metric)?,
                n_members: members.len(),
                n_predictions,
            })
        })
        .collect();
    if cells.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(c) = columns
        .iter()
        .find(|c| !ScoredMetrics::NAMES.contains(&c.metric.as_str()))
    {
        notes.push(format!(
            "row `{}`: `{}` cannot be recomputed from predictions ({} can); its pooled cell is \
             empty",
            row.label(),
            c.metric,
            ScoredMetrics::NAMES.join(", ")
        ));
    }
    Ok(Some(Row::Pooled {
        label: row.label().to_string(),
        stage: row.stage.clone(),
        members: members.iter().map(|m| m.input.stage.clone()).collect(),
        cells,
    }))
}

#[cfg(test)]
mod tests;
