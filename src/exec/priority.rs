//! Which queued stage launches first: the one with the longest expected
//! path from its start to the end of the pipeline (its *critical path*),
//! weighted by how long each stage is expected to take.
//!
//! Launching in pipeline order leaves the longest chain for last: in the
//! lab, the two CNNs (declared first) trained side by side while the
//! autoencoder chain (ae_left → codes_left → clusters → report), the longest,
//! waited, then ran alone on one core while the other idled. Starting the
//! longest remaining path first is the classic list-scheduling rule (HLFET,
//! "highest level first"), which keeps that chain from ending the run.
//!
//! A stage's expected time is, in this order: its own time in a recent run of
//! this pipeline (the newest run records that ran it, by stage name); the
//! time its cache entry took, when it is forced to run again; else a rough
//! default per op ([`default_cost`]). Only the times' ratios matter.
//!
//! Work is O(stages + needs), once per run and only when something is to
//! run; reading past records is bounded ([`MAX_RECORDS`], [`MAX_RECORD_BYTES`]).
//! Ties (and stages of equal weight) keep topological order, so a run's
//! launch order is deterministic.

use std::collections::HashMap;

use crate::cache::Cache;
use crate::dag::Dag;
use crate::ops::torch_params::{TrainAeParams, TrainCnnParams};
use crate::plan::Plan;
use crate::record::{RunRecord, StageStatus};
use crate::spec::{StageKind, StageSpec};

/// Newest run records read for past stage times (any pipeline's, newest
/// first; only this pipeline's are used).
pub const MAX_RECORDS: usize = 8;

/// A record file larger than this is not read for times (a 100,000-stage
/// pipeline's record is ~20 MB: parsing it would cost more than the order
/// gains); its stages get the defaults.
pub const MAX_RECORD_BYTES: u64 = 8 << 20;

/// Each stage's priority: its expected remaining path to a sink, in tenths
/// of a second (higher launches first). Paths that differ by less tie, and
/// ties keep topological order: the few milliseconds by which two quick
/// stages' recorded times differ from run to run do not reorder them.
pub fn ranks(dag: &Dag, cost: &[f64]) -> Vec<u64> {
    let n = dag.len();
    // Longest path below each stage (the best of its dependants' ranks),
    // filled from the sinks up: a reverse topological pass visits each
    // stage after every stage that needs it.
    let mut below = vec![0.0f64; n];
    let mut rank = vec![0u64; n];
    for &id in dag.topo_order().iter().rev() {
        let r = cost[id.0].max(0.0) + below[id.0];
        rank[id.0] = (r * 10.0).round() as u64;
        for up in dag.needs_iter(id) {
            if below[up.0] < r {
                below[up.0] = r;
            }
        }
    }
    rank
}

/// Each stage's expected time in seconds (see the module docs for where it
/// comes from). `pipeline_path` picks this pipeline's records.
pub fn costs(dag: &Dag, plan: &Plan, cache: &Cache, pipeline_path: &str) -> Vec<f64> {
    let past = past_times(cache, pipeline_path);
    dag.ids()
        .map(|id| {
            let stage = dag.stage(id);
            past.get(stage.name.as_str())
                .copied()
                .or_else(|| plan.cached(id).map(|e| e.wall_s))
                .filter(|t| t.is_finite() && *t >= 0.0)
                .unwrap_or_else(|| default_cost(stage))
        })
        .collect()
}

/// Stage name → its newest time among the newest runs of `pipeline_path`
/// that ran it.
fn past_times(cache: &Cache, pipeline_path: &str) -> HashMap<String, f64> {
    let mut times = HashMap::new();
    let Ok(dir) = std::fs::read_dir(cache.runs_dir()) else {
        return times;
    };
    // Run ids start with their date and time: by name is by age.
    let mut files: Vec<(String, std::path::PathBuf, u64)> = dir
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let len = e.metadata().map_or(u64::MAX, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), e.path(), len)
        })
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, path, len) in files.into_iter().take(MAX_RECORDS) {
        if len > MAX_RECORD_BYTES {
            continue;
        }
        let Some(run) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok())
        else {
            continue;
        };
        if run.pipeline_path != pipeline_path {
            continue;
        }
        for st in run.stages {
            if st.status == StageStatus::Ran {
                times.entry(st.stage).or_insert(st.wall_s);
            }
        }
    }
    times
}

/// A stage's expected time before any run of it was recorded: rough seconds
/// of the lab's stages on one CPU core (demo.yaml), so that a first run
/// already starts the autoencoder chain early. Training scales with its
/// epochs; an autoencoder epoch (encoder and decoder over full patches) costs
/// about twice a CNN epoch.
pub fn default_cost(stage: &StageSpec) -> f64 {
    match &stage.kind {
        StageKind::Cmd(_) => 1.0,
        StageKind::Op(def) => match def.name {
            "train_cnn" => {
                let epochs = TrainCnnParams::from_params(&stage.params).map_or(30, |p| p.epochs);
                0.6 * epochs as f64
            }
            "train_ae" => {
                let epochs = TrainAeParams::from_params(&stage.params).map_or(30, |p| p.epochs);
                1.3 * epochs as f64
            }
            "evaluate" | "extract_codes" => 0.3,
            "fetch" => 5.0,
            "synth" => 2.0,
            _ => 0.1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::StageId;

    fn dag(yaml: &str) -> Dag {
        let path = std::path::Path::new("/nonexistent/p.yaml");
        let pipeline = crate::spec::load::load_pipeline_text(yaml, path, "p.yaml", &[]).unwrap();
        Dag::build(pipeline).unwrap()
    }

    fn id(d: &Dag, name: &str) -> StageId {
        d.ids().find(|&i| d.stage(i).name == name).unwrap()
    }

    #[test]
    fn a_stage_ranks_by_its_longest_weighted_path_to_a_sink() {
        let d = dag("name: p\nstages:\n  a: {cmd: \"true\"}\n  b: {cmd: \"true\", needs: [a]}\n  c: {cmd: \"true\", needs: [a]}\n  d: {cmd: \"true\", needs: [c]}\n");
        // a 1 s, b 5 s, c 2 s, d 2 s: b's path (5) beats c → d (4).
        let mut cost = vec![0.0; d.len()];
        for (name, t) in [("a", 1.0), ("b", 5.0), ("c", 2.0), ("d", 2.0)] {
            cost[id(&d, name).0] = t;
        }
        let r = ranks(&d, &cost);
        let at = |n| r[id(&d, n).0];
        assert_eq!((at("a"), at("b"), at("c"), at("d")), (60, 50, 40, 20));
    }

    #[test]
    fn the_autoencoder_outweighs_a_cnn_of_more_epochs_by_default() {
        let d = dag("name: p\nstages:\n  s: {op: synth}\n  c: {op: crop, needs: [s], params: {region: left_hc}}\n  cnn: {op: train_cnn, needs: [c], params: {epochs: 3}}\n  ae: {op: train_ae, needs: [c], params: {epochs: 2}}\n  x: {cmd: \"true\"}\n");
        let cost = |n| default_cost(d.stage(id(&d, n)));
        assert!(
            cost("ae") > cost("cnn"),
            "{} vs {}",
            cost("ae"),
            cost("cnn")
        );
        assert!(cost("cnn") > cost("c"));
        assert_eq!(cost("x"), 1.0);
    }
}
