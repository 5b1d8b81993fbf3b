//! `hcpipe diff A B`: what changed between two runs or two revisions of a
//! pipeline — params, stage keys (and why), and metrics side by side.
//!
//! A side is either a run record (its params, keys and metrics) or a git
//! revision of the pipeline file, read with `git show` and planned against
//! the cache without running anything (metrics come from cached entries).
//!
//! When both sides have a cached `aggregate` stage (the paper table), each of its cells is
//! compared too ([`TableCellDiff`]): before → after (mean ± SD), the delta of the means, and
//! the paired Wilcoxon signed-rank and t tests over the members the two sides share (matched
//! by their axis values, so `fold=0,seed=1` is compared with `fold=0,seed=1`), with n and p;
//! a cell whose members differ between the sides says which.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::artifact::table::{self, PaperTable};
use crate::cache::statcache::StatCache;
use crate::cache::{stale, Cache, CacheError, KeyInputs, StageKey, StaleReason};
use crate::dag::{Dag, StageId};
use crate::error::Error;
use crate::git;
use crate::ops::{Metrics, Params};
use crate::plan::{all_deps, plan_with, Plan, Planned};
use crate::record::RunRecord;
use crate::spec::load::load_pipeline_text;

mod tables;
pub use tables::{CellSide, PairedTests, TableCellDiff};

/// One stage as one side of a diff sees it.
pub struct SideStage {
    pub name: String,
    /// `None` when the key depends on an upstream the cache does not hold.
    pub key: Option<StageKey>,
    /// The key's inputs when known (for a pending key: all but the upstreams
    /// that are not cached).
    pub inputs: Option<KeyInputs>,
    pub metrics: Option<Metrics>,
    /// The paper table of a cached `aggregate` stage.
    pub table: Option<PaperTable>,
}

/// The `table.json` of a cached `aggregate` stage (`stage` names it); a
/// table that cannot be read is a note.
fn aggregate_table(
    cache: &Cache,
    stage: &str,
    entry: Result<&crate::cache::Entry, String>,
    notes: &mut Vec<String>,
) -> Option<PaperTable> {
    let read = entry.and_then(|entry| {
        let dir = cache
            .ensure_artifact(entry, false)
            .map_err(|e| e.to_string())?;
        PaperTable::read(&dir.join(table::FILE)).map_err(|e| e.to_string())
    });
    match read {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(format!("the table of `{stage}` cannot be compared: {e}"));
            None
        }
    }
}

/// The table of stage `id` of a planned revision, when it is a cached
/// `aggregate` stage.
fn planned_table(
    cache: &Cache,
    dag: &Dag,
    plan: &Plan,
    id: StageId,
    notes: &mut Vec<String>,
) -> Option<PaperTable> {
    // The op is in the key: a cached entry of this stage was made by it.
    if dag.stage(id).op_name() != Some("aggregate") {
        return None;
    }
    let name = &dag.stage(id).name;
    match plan.entry(cache, dag, id) {
        Ok(None) => None,
        Ok(Some(e)) => aggregate_table(cache, name, Ok(&e), notes),
        Err(e) => aggregate_table(cache, name, Err(e.to_string()), notes),
    }
}

/// One side of a diff.
pub struct Side {
    pub label: String,
    pub params: Params,
    pub stages: Vec<SideStage>,
    /// What this side could not take from where it says it comes from.
    pub notes: Vec<String>,
}

impl Side {
    /// A side from a run record.
    pub fn from_run(cache: &Cache, run: &RunRecord) -> Side {
        let mut notes = Vec::new();
        let stages = run
            .stages
            .iter()
            .map(|s| {
                let entry = cache.entry(&s.key).ok().flatten();
                let metrics = if s.metrics.is_empty() {
                    entry.as_ref().map(|e| e.metrics.clone())
                } else {
                    Some(s.metrics.clone())
                };
                let table = match &entry {
                    Some(e) if e.inputs.op().as_deref() == Some("aggregate") => {
                        aggregate_table(cache, &s.stage, Ok(e), &mut notes)
                    }
                    _ => None,
                };
                SideStage {
                    name: s.stage.clone(),
                    key: (!s.key.0.is_empty()).then(|| s.key.clone()),
                    inputs: entry.and_then(|e| e.inputs.get().ok()),
                    metrics,
                    table,
                }
            })
            .collect();
        Side {
            label: run.id.clone(),
            params: run.params.clone(),
            stages,
            notes,
        }
    }

    /// `which` as `hcpipe diff` reads it: a run id (or a unique prefix), else,
    /// with `--pipeline`, a git revision of that pipeline file.
    pub fn resolve(cache: &Cache, which: &str, pipeline: Option<&Path>) -> Result<Side, Error> {
        match (crate::record::find_run(cache, which), pipeline) {
            (Ok(run), _) => Ok(Side::from_run(cache, &run)),
            (Err(_), Some(p)) => Side::from_revision(cache, p, which),
            (Err(e), None) => Err(Error::Usage(format!(
                "{e}\n  hint: to compare git revisions of a pipeline, add `--pipeline FILE`"
            ))),
        }
    }

    /// A side from the pipeline file as it was at git revision `rev`.
    pub fn from_revision(cache: &Cache, pipeline: &Path, rev: &str) -> Result<Side, Error> {
        let text = git::show_at(pipeline, rev)?;
        let shown = format!("{}@{rev}", pipeline.display());
        let spec = load_pipeline_text(&text, pipeline, &shown, &[])?;
        let dag = Dag::build(spec)?;
        // Deps as they were at `rev`: from git where it has them, else from
        // the working tree, said in a note.
        let mut stat = StatCache::load(cache.stat_cache_path());
        let mut notes = Vec::new();
        let dir = dag.pipeline.dir.clone();
        let mut deps_at = |stage: &crate::spec::StageSpec| {
            let mut deps = BTreeMap::new();
            for dep in all_deps(stage) {
                let path = dir.join(&dep);
                let hash = match git::dep_at(&path, rev)
                    .map_err(|e| CacheError::Msg(e.to_string()))?
                {
                    git::DepAtRevision::Hash(h) => h,
                    git::DepAtRevision::NotInGit(why) => {
                        notes.push(format!(
                            "dep `{dep}` of stage `{}` at {rev}: {why}; its working-tree content was used",
                            stage.name
                        ));
                        stat.hash_path(&path)?
                    }
                };
                deps.insert(dep, hash);
            }
            Ok(deps)
        };
        let planned = plan_with(&dag, cache, &|_| false, &mut deps_at)?;
        let stages = dag
            .topo_order()
            .iter()
            .map(|&id| {
                let (key, inputs, metrics, table) = match &planned.stages[id.0] {
                    Planned::Known { key, cached } => (
                        Some(key.clone()),
                        Some(planned.inputs(&dag, id)),
                        cached.as_ref().map(|e| e.metrics.clone()),
                        planned_table(cache, &dag, &planned, id, &mut notes),
                    ),
                    Planned::Pending { .. } => (None, Some(planned.inputs(&dag, id)), None, None),
                };
                SideStage {
                    name: dag.stage(id).name.clone(),
                    key,
                    inputs,
                    metrics,
                    table,
                }
            })
            .collect();
        notes.dedup();
        Ok(Side {
            label: rev.to_string(),
            params: dag.pipeline.params.clone(),
            stages,
            notes,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ParamChange {
    pub param: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct StageChange {
    pub stage: String,
    /// same | changed | only_a | only_b
    pub change: &'static str,
    pub why: Vec<StaleReason>,
}

#[derive(Debug, Serialize)]
pub struct MetricRow {
    pub stage: String,
    pub metric: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
    pub delta: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    pub params: Vec<ParamChange>,
    pub stages: Vec<StageChange>,
    pub metrics: Vec<MetricRow>,
    /// The cells of the `aggregate` stages both sides hold (see [`TableCellDiff`]).
    pub tables: Vec<TableCellDiff>,
    /// Deps taken from the working tree because git could not give them, and similar.
    pub notes: Vec<String>,
}

pub fn diff(a: &Side, b: &Side) -> Diff {
    let mut params = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        a.params.keys().chain(b.params.keys()).collect();
    for k in keys {
        let (va, vb) = (a.params.get(k), b.params.get(k));
        if va != vb {
            params.push(ParamChange {
                param: k.clone(),
                a: va.cloned(),
                b: vb.cloned(),
            });
        }
    }
    let b_by_name: BTreeMap<&str, &SideStage> =
        b.stages.iter().map(|s| (s.name.as_str(), s)).collect();
    let a_names: std::collections::HashSet<&str> =
        a.stages.iter().map(|s| s.name.as_str()).collect();
    let mut stages = Vec::new();
    let mut metrics = Vec::new();
    let mut tables = Vec::new();
    let mut notes: Vec<String> = a.notes.iter().chain(&b.notes).cloned().collect();
    for sa in &a.stages {
        let name = &sa.name;
        match b_by_name.get(name.as_str()) {
            None => stages.push(StageChange {
                stage: name.clone(),
                change: "only_a",
                why: vec![],
            }),
            Some(sb) => {
                let (change, why) = compare(sa, sb);
                stages.push(StageChange {
                    stage: name.clone(),
                    change,
                    why,
                });
                metric_rows(name, sa.metrics.as_ref(), sb.metrics.as_ref(), &mut metrics);
                match (&sa.table, &sb.table) {
                    (Some(ta), Some(tb)) => tables.extend(tables::compare(name, ta, tb)),
                    (Some(_), None) | (None, Some(_)) => notes.push(format!(
                        "the table of `{name}` is cached on one side only; run the other \
                         side to compare its cells"
                    )),
                    (None, None) => {}
                }
            }
        }
    }
    for sb in &b.stages {
        if !a_names.contains(sb.name.as_str()) {
            stages.push(StageChange {
                stage: sb.name.clone(),
                change: "only_b",
                why: vec![],
            });
        }
    }
    notes.dedup();
    Diff {
        a: a.label.clone(),
        b: b.label.clone(),
        params,
        stages,
        metrics,
        tables,
        notes,
    }
}

/// One stage's change between the sides, and why.
fn compare(a: &SideStage, b: &SideStage) -> (&'static str, Vec<StaleReason>) {
    match (&a.key, &b.key) {
        (Some(ka), Some(kb)) if ka == kb => ("same", vec![]),
        (Some(_), Some(_)) => match (&a.inputs, &b.inputs) {
            (Some(ia), Some(ib)) => ("changed", ib.why_differs(ia)),
            _ => ("changed", vec![StaleReason::KeyInputsGone]),
        },
        // A key waits on an upstream's output: compare what is known.
        _ => match (&a.inputs, &b.inputs) {
            (Some(ia), Some(ib)) => {
                let strip = |i: &KeyInputs| KeyInputs {
                    upstream: Vec::new(),
                    ..i.clone()
                };
                let why = strip(ib).why_differs(&strip(ia));
                if why.is_empty() {
                    ("unknown", vec![StaleReason::UpstreamNotCached])
                } else {
                    ("changed", why)
                }
            }
            _ => ("unknown", vec![StaleReason::KeyInputsGone]),
        },
    }
}

fn metric_rows(stage: &str, a: Option<&Metrics>, b: Option<&Metrics>, out: &mut Vec<MetricRow>) {
    let mut fa = BTreeMap::new();
    let mut fb = BTreeMap::new();
    if let Some(m) = a {
        flatten("", &Value::Object(m.clone()), &mut fa);
    }
    if let Some(m) = b {
        flatten("", &Value::Object(m.clone()), &mut fb);
    }
    let names: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    for name in names {
        let (va, vb) = (fa.get(name).cloned(), fb.get(name).cloned());
        let delta = match (
            va.as_ref().and_then(Value::as_f64),
            vb.as_ref().and_then(Value::as_f64),
        ) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        };
        out.push(MetricRow {
            stage: stage.to_string(),
            metric: name.clone(),
            a: va,
            b: vb,
            delta,
        });
    }
}

/// Nested metrics → dotted names (`validation.balanced_accuracy`); arrays are skipped.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        Value::Array(_) => {}
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The diff as text tables.
pub fn render(d: &Diff) -> String {
    use crate::ui::table::render as table;
    let show = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "—".into())
    };
    let mut out = format!("diff {} → {}\n\n", d.a, d.b);
    for note in &d.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    if !d.notes.is_empty() {
        out.push('\n');
    }
    if d.params.is_empty() {
        out.push_str("params: unchanged\n\n");
    } else {
        let rows: Vec<Vec<String>> = d
            .params
            .iter()
            .map(|p| vec![p.param.clone(), show(&p.a), show(&p.b)])
            .collect();
        out.push_str(&table(&["param", &d.a, &d.b], &rows));
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = d
        .stages
        .iter()
        .map(|s| vec![s.stage.clone(), s.change.to_string(), stale::join(&s.why)])
        .collect();
    out.push_str(&table(&["stage", "key", "why"], &rows));
    let changed: Vec<&MetricRow> = d.metrics.iter().filter(|m| m.a != m.b).collect();
    out.push('\n');
    if changed.is_empty() {
        out.push_str("metrics: no differences\n");
    } else {
        let rows: Vec<Vec<String>> = changed
            .iter()
            .map(|m| {
                let delta = m.delta.map(|x| format!("{x:+.4}")).unwrap_or_default();
                vec![
                    m.stage.clone(),
                    m.metric.clone(),
                    show(&m.a),
                    show(&m.b),
                    delta,
                ]
            })
            .collect();
        out.push_str(&table(&["stage", "metric", &d.a, &d.b, "delta"], &rows));
    }
    let mut stages: Vec<&str> = d.tables.iter().map(|c| c.stage.as_str()).collect();
    stages.dedup();
    for stage in stages {
        let mine: Vec<&TableCellDiff> = d.tables.iter().filter(|c| c.stage == stage).collect();
        out.push_str(&format!(
            "\ntable `{stage}`: mean ± SD over members; p: two-sided Wilcoxon signed-rank and \
             paired t over the n members both sides have (matched by axis values)\n"
        ));
        out.push_str(&tables::render(&mine, &d.a, &d.b));
    }
    out
}
