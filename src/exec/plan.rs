//! Planning: every stage's key, and whether the cache already holds it.
//!
//! Keys are computed in topological order (a key needs its upstream keys);
//! dep files are hashed through the stat cache. Nothing runs here, so
//! `status` and `run --dry-run` are as fast as hashing allows.

use std::collections::BTreeMap;

use crate::cache::statcache::StatCache;
use crate::cache::{Cache, CacheError, Entry, KeyInputs, StageKey};
use crate::dag::{Dag, StageId};
use crate::record::runs_of;
use crate::spec::StageKind;

pub struct Plan {
    pub keys: Vec<StageKey>,
    pub inputs: Vec<KeyInputs>,
    /// The entry for each stage's current key, when cached.
    pub cached: Vec<Option<Entry>>,
}

pub fn plan(dag: &Dag, cache: &Cache, stat: &mut StatCache) -> Result<Plan, CacheError> {
    let n = dag.len();
    let mut keys: Vec<Option<StageKey>> = vec![None; n];
    let mut inputs: Vec<Option<KeyInputs>> = vec![None; n];
    for &id in dag.topo_order() {
        let stage = dag.stage(id);
        let mut upstream = BTreeMap::new();
        for up in dag.needs(id) {
            let k = keys[up.0].clone().ok_or_else(|| {
                CacheError::Msg(
                    "internal: stage planned before its needs (bug, please report)".into(),
                )
            })?;
            upstream.insert(dag.stage(up).name.clone(), k);
        }
        let mut deps = BTreeMap::new();
        for dep in &stage.deps {
            let path = dag.pipeline.dir.join(dep);
            let hash = stat.hash_path(&path).map_err(|e| match e {
                CacheError::Io { path, source }
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    CacheError::Msg(format!(
                        "dep `{dep}` of stage `{}` does not exist ({})",
                        stage.name,
                        path.display()
                    ))
                }
                other => other,
            })?;
            deps.insert(dep.clone(), hash);
        }
        let (op, op_version, cmd) = match &stage.kind {
            StageKind::Op(def) => (Some(def.name.to_string()), Some(def.version), None),
            StageKind::Cmd(text) => (None, None, Some(text.clone())),
        };
        let ki = KeyInputs {
            cache_version: crate::cache::key::CACHE_VERSION,
            op,
            op_version,
            cmd,
            params: serde_json::Value::Object(stage.params.clone()),
            upstream,
            deps,
            outs: stage.outs.clone(),
        };
        keys[id.0] = Some(ki.key());
        inputs[id.0] = Some(ki);
    }
    let keys: Vec<StageKey> = keys
        .into_iter()
        .map(|k| k.unwrap_or_else(|| StageKey(String::new())))
        .collect();
    let mut cached = Vec::with_capacity(n);
    for key in &keys {
        cached.push(cache.entry(key)?);
    }
    Ok(Plan {
        keys,
        inputs: inputs
            .into_iter()
            .map(|k| k.expect("every stage planned"))
            .collect(),
        cached,
    })
}

/// A stage's freshness, with the reason when it is not fresh.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    Fresh,
    Stale(Vec<String>),
    NeverRun,
}

/// Compare each stage's current key with what the newest run of this pipeline used.
pub fn freshness(dag: &Dag, cache: &Cache, plan: &Plan) -> Vec<Freshness> {
    // Run records explain stale stages only; when every stage is cached,
    // `status` need not read (every) one of them.
    let runs = if plan.cached.iter().all(Option::is_some) {
        Vec::new()
    } else {
        runs_of(cache, &dag.pipeline.path)
    };
    dag.ids()
        .map(|id: StageId| {
            if plan.cached[id.0].is_some() {
                return Freshness::Fresh;
            }
            let name = &dag.stage(id).name;
            let failed_before = runs
                .iter()
                .rev()
                .filter_map(|r| r.stage(name))
                .any(|s| s.key == plan.keys[id.0]);
            if failed_before {
                return Freshness::Stale(vec!["its last attempt did not finish".into()]);
            }
            let previous = runs
                .iter()
                .rev()
                .filter_map(|r| r.stage(name))
                .find(|s| s.key != plan.keys[id.0]);
            match previous {
                None => Freshness::NeverRun,
                Some(prev) => match cache.entry(&prev.key) {
                    Ok(Some(old)) => {
                        let why = plan.inputs[id.0].why_differs(&old.inputs);
                        Freshness::Stale(if why.is_empty() {
                            vec!["inputs changed".into()]
                        } else {
                            why
                        })
                    }
                    _ => Freshness::Stale(vec!["its last result is no longer in the cache".into()]),
                },
            }
        })
        .collect()
}
