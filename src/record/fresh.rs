//! `hcpipe status`: each stage's freshness against the newest runs of its
//! pipeline, and why a stale one is stale.

use crate::cache::statcache::StatCache;
use crate::cache::StageKey;
use crate::cache::{stale, Cache, CacheError, StaleReason};
use crate::dag::{Dag, StageId};
use crate::plan::{plan, Plan, Planned};
use crate::record::history::history;

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
    // Run records explain stale stages only: the runs' past of the stages
    // not cached is read, nothing when every stage is.
    let unsettled: Vec<StageId> = dag.ids().filter(|&id| plan.cached(id).is_none()).collect();
    let wanted: Vec<(&str, Option<&StageKey>)> = unsettled
        .iter()
        .map(|&id| (dag.stage(id).name.as_str(), plan.key(id)))
        .collect();
    let past = history(cache, &dag.pipeline.path, &wanted);
    let mut fresh = vec![Freshness::Fresh; dag.len()];
    for (&id, past) in unsettled.iter().zip(past) {
        // Not cached (so `Known` has no entry): only what the runs say decides.
        fresh[id.0] = match &plan.stages[id.0] {
            Planned::Pending { upstream } => {
                if past.seen {
                    Freshness::AfterUpstream(dag.stage(*upstream).name.clone())
                } else {
                    Freshness::NeverRun
                }
            }
            Planned::Known { .. } if past.same_key => {
                Freshness::Stale(vec![StaleReason::LastAttemptUnfinished])
            }
            Planned::Known { .. } => match past.newest_other {
                None => Freshness::NeverRun,
                Some(prev) => match cache.entry(&prev).map(|e| e.map(|e| e.inputs.get())) {
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
            },
        };
    }
    fresh
}
