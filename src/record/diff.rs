//! `hcpipe diff A B`: what changed between two runs or two revisions of a
//! pipeline — params, stage keys (and why), and metrics side by side.
//!
//! A side is either a run record (its params, keys and metrics) or a git
//! revision of the pipeline file, read with `git show` and planned against
//! the cache without running anything (metrics come from cached entries).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::cache::statcache::StatCache;
use crate::cache::{Cache, KeyInputs, StageKey};
use crate::dag::Dag;
use crate::exec::plan::plan;
use crate::ops::{Metrics, Params};
use crate::spec::load::load_pipeline_text;

/// One side of a diff.
pub struct Side {
    pub label: String,
    pub params: Params,
    /// Stage name → (key, key inputs when known, metrics when known).
    pub stages: Vec<(String, StageKey, Option<KeyInputs>, Option<Metrics>)>,
}

impl Side {
    /// A side from a run record.
    pub fn from_run(cache: &Cache, run: &super::RunRecord) -> Side {
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
                (
                    s.stage.clone(),
                    s.key.clone(),
                    entry.map(|e| e.inputs),
                    metrics,
                )
            })
            .collect();
        Side {
            label: run.id.clone(),
            params: run.params.clone(),
            stages,
        }
    }

    /// A side from the pipeline file as it was at git revision `rev`.
    pub fn from_revision(cache: &Cache, pipeline: &Path, rev: &str) -> Result<Side, String> {
        let text = super::git::show_at(pipeline, rev)?;
        let shown = format!("{}@{rev}", pipeline.display());
        let spec = load_pipeline_text(&text, pipeline, &shown, &[]).map_err(|e| e.to_string())?;
        let dag = Dag::build(spec).map_err(|e| e.to_string())?;
        let mut stat = StatCache::load(cache.stat_cache_path());
        let planned = plan(&dag, cache, &mut stat).map_err(|e| e.to_string())?;
        let stages = dag
            .topo_order()
            .iter()
            .map(|&id| {
                let metrics = planned.cached[id.0].as_ref().map(|e| e.metrics.clone());
                (
                    dag.stage(id).name.clone(),
                    planned.keys[id.0].clone(),
                    Some(planned.inputs[id.0].clone()),
                    metrics,
                )
            })
            .collect();
        Ok(Side {
            label: rev.to_string(),
            params: dag.pipeline.params.clone(),
            stages,
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
    pub why: Vec<String>,
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
    let b_by_name: BTreeMap<&str, _> = b.stages.iter().map(|s| (s.0.as_str(), s)).collect();
    let a_names: std::collections::HashSet<&str> = a.stages.iter().map(|s| s.0.as_str()).collect();
    let mut stages = Vec::new();
    let mut metrics = Vec::new();
    for (name, key_a, inputs_a, metrics_a) in &a.stages {
        match b_by_name.get(name.as_str()) {
            None => stages.push(StageChange {
                stage: name.clone(),
                change: "only_a",
                why: vec![],
            }),
            Some((_, key_b, inputs_b, metrics_b)) => {
                let (change, why) = if key_a == key_b {
                    ("same", vec![])
                } else {
                    let why = match (inputs_a, inputs_b) {
                        (Some(ia), Some(ib)) => ib.why_differs(ia),
                        _ => vec!["key inputs of one side are no longer in the cache".into()],
                    };
                    ("changed", why)
                };
                stages.push(StageChange {
                    stage: name.clone(),
                    change,
                    why,
                });
                metric_rows(name, metrics_a.as_ref(), metrics_b.as_ref(), &mut metrics);
            }
        }
    }
    for (name, ..) in &b.stages {
        if !a_names.contains(name.as_str()) {
            stages.push(StageChange {
                stage: name.clone(),
                change: "only_b",
                why: vec![],
            });
        }
    }
    Diff {
        a: a.label.clone(),
        b: b.label.clone(),
        params,
        stages,
        metrics,
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
    use crate::report::table::render as table;
    let show = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "—".into())
    };
    let mut out = format!("diff {} → {}\n\n", d.a, d.b);
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
        .map(|s| vec![s.stage.clone(), s.change.to_string(), s.why.join("; ")])
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
    out
}
