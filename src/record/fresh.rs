//! `hcpipe status`: each stage's freshness against the newest runs of its
//! pipeline, and why a stale one is stale.

use crate::cache::statcache::StatCache;
use crate::cache::{stale, Cache, CacheError, StaleReason};
use crate::dag::{Dag, StageId};
use crate::plan::{plan, Plan, Planned};
use crate::record::{runs_of, RunRecord};

/// A stage's freshness, with the reason when it is not fresh.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    Fresh,
    /// Why, one reason per changed input (never empty).
    Stale(Vec<StaleReason>),
    NeverRun,
    /// Its key depends on the output of this upstream, which will run first.
    AfterUpstream(String),
}

impl Freshness {
    /// The word `status` prints for it.
    pub fn label(&self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::NeverRun => "never run",
            Freshness::Stale(_) | Freshness::AfterUpstream(_) => "stale",
        }
    }

    /// Why it is stale, as `status` prints it (empty when it is not).
    pub fn why(&self) -> String {
        match self {
            Freshness::Fresh | Freshness::NeverRun => String::new(),
            Freshness::Stale(why) => stale::join(why),
            Freshness::AfterUpstream(up) => {
                StaleReason::UpstreamWillRun { stage: up.clone() }.to_string()
            }
        }
    }
}

/// `hcpipe status`: plan every stage (nothing forced), remember the deps'
/// hashes in the stat cache, and say how fresh each stage is.
pub fn status(dag: &Dag, cache: &Cache) -> Result<(Plan, Vec<Freshness>), CacheError> {
    let mut stat = StatCache::load(cache.stat_cache_path());
    let plan = plan(dag, cache, &mut stat, &|_| false)?;
    let _ = stat.save();
    let fresh = freshness(dag, cache, &plan);
    Ok((plan, fresh))
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
    // Each run's stages by name: a lookup per stage and run, not a scan of
    // the run's stages (which made `status` O(stages²) after a failed run).
    let runs: Vec<_> = runs.iter().map(RunRecord::by_name).collect();
    dag.ids()
        .map(|id: StageId| {
            let name = &dag.stage(id).name;
            let key = match &plan.stages[id.0] {
                Planned::Known {
                    cached: Some(_), ..
                } => return Freshness::Fresh,
                Planned::Known { key, .. } => key,
                Planned::Pending { upstream, .. } => {
                    let ran_before = runs.iter().any(|r| r.contains_key(name.as_str()));
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
                .filter_map(|r| r.get(name.as_str()).copied())
                .any(|s| &s.key == key);
            if failed_before {
                return Freshness::Stale(vec![StaleReason::LastAttemptUnfinished]);
            }
            let previous = runs
                .iter()
                .rev()
                .filter_map(|r| r.get(name.as_str()).copied())
                .find(|s| &s.key != key);
            match previous {
                None => Freshness::NeverRun,
                Some(prev) => match cache.entry(&prev.key).map(|e| e.map(|e| e.inputs.get())) {
                    Ok(Some(Ok(old))) => {
                        let why = plan.inputs(dag, id).why_differs(&old);
                        Freshness::Stale(if why.is_empty() {
                            vec![StaleReason::InputsChanged]
                        } else {
                            why
                        })
                    }
                    _ => Freshness::Stale(vec![StaleReason::PreviousResultGone]),
                },
            }
        })
        .collect()
}
