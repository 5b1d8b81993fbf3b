//! `hcpipe status`: each stage's freshness against the newest runs of its
//! pipeline, and why a stale one is stale.

use crate::cache::Cache;
use crate::dag::{Dag, StageId};
use crate::plan::{Plan, Planned};
use crate::record::runs_of;

/// A stage's freshness, with the reason when it is not fresh.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    Fresh,
    Stale(Vec<String>),
    NeverRun,
    /// Its key depends on the output of this upstream, which will run first.
    AfterUpstream(String),
}

/// Compare each stage's current key with what the newest run of this pipeline used.
pub fn freshness(dag: &Dag, cache: &Cache, plan: &Plan) -> Vec<Freshness> {
    // Run records explain stale stages only; when every stage is cached,
    // `status` need not read (every) one of them.
    let all_cached = dag.ids().all(|id| plan.cached(id).is_some());
    let runs = if all_cached {
        Vec::new()
    } else {
        runs_of(cache, &dag.pipeline.path)
    };
    dag.ids()
        .map(|id: StageId| {
            let name = &dag.stage(id).name;
            let key = match &plan.stages[id.0] {
                Planned::Known {
                    cached: Some(_), ..
                } => return Freshness::Fresh,
                Planned::Known { key, .. } => key,
                Planned::Pending { upstream, .. } => {
                    let ran_before = runs.iter().any(|r| r.stage(name).is_some());
                    return if ran_before {
                        Freshness::AfterUpstream(dag.stage(*upstream).name.clone())
                    } else {
                        Freshness::NeverRun
                    };
                }
            };
            let failed_before = runs
                .iter()
                .rev()
                .filter_map(|r| r.stage(name))
                .any(|s| &s.key == key);
            if failed_before {
                return Freshness::Stale(vec!["its last attempt did not finish".into()]);
            }
            let previous = runs
                .iter()
                .rev()
                .filter_map(|r| r.stage(name))
                .find(|s| &s.key != key);
            match previous {
                None => Freshness::NeverRun,
                Some(prev) => match cache.entry(&prev.key) {
                    Ok(Some(old)) => {
                        let why = plan
                            .inputs(id)
                            .map(|i| i.why_differs(&old.inputs))
                            .unwrap_or_default();
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
