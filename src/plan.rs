//! Planning: every stage's key that can be known now, and whether the cache
//! already holds it. Whether a stage is fresh, and why not, is `record::fresh`
//! (it compares these keys with the run records).
//!
//! A key chains the *content* of its upstream artifacts (see
//! `cache::key`), so a stage's key is known before the run only when every
//! stage it needs is cached and not forced; the others are [`Planned::Pending`]
//! until their upstream finishes, and the scheduler computes their key then
//! with [`stage_key_inputs`]. Dep files are hashed through the stat cache.
//! Nothing runs here, so `status` and `run --dry-run` are as fast as
//! hashing allows.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use crate::cache::key::KeyParts;
use crate::cache::statcache::StatCache;
use crate::cache::{Cache, CacheError, Entry, EntrySummary, KeyInputs, StageKey, UpstreamInput};
use crate::dag::{Dag, StageId};
use crate::spec::{StageKind, StageSpec};

/// What planning knows of one stage.
#[derive(Debug, Clone)]
pub enum Planned {
    /// Every upstream is cached: the key is known, and so whether it is cached.
    Known {
        key: StageKey,
        /// Its entry's summary, when cached (the entry: [`Plan::entry`]).
        cached: Option<EntrySummary>,
    },
    /// Its key depends on the output of `upstream`, which will (re-)run first.
    Pending { upstream: StageId },
}

/// Every stage's plan. Key inputs are not kept per stage (a million stages'
/// commands, params and variables would be held twice): [`Plan::inputs`]
/// puts them together again from the stage, the hashes of its deps (hashed
/// already, so a missing dep is reported before anything runs) and its
/// upstreams' contents.
pub struct Plan {
    pub stages: Vec<Planned>,
    /// Per stage: its deps' hashes.
    deps: Vec<BTreeMap<String, String>>,
    /// Per stage: named by `--force` (its cached artifact is not what its
    /// dependants will read).
    forced: Vec<bool>,
}

impl Plan {
    pub fn key(&self, id: StageId) -> Option<&StageKey> {
        match &self.stages[id.0] {
            Planned::Known { key, .. } => Some(key),
            Planned::Pending { .. } => None,
        }
    }

    /// The key inputs known now: every input of a [`Planned::Known`] stage;
    /// for a pending one, all but the upstreams that will (re-)run.
    pub fn inputs(&self, dag: &Dag, id: StageId) -> KeyInputs {
        let upstream = dag
            .needs_iter(id)
            .filter_map(|up| {
                Some(UpstreamInput {
                    stage: dag.stage(up).name.clone(),
                    content: self.content(up)?.to_string(),
                })
            })
            .collect();
        stage_key_inputs(dag.stage(id), upstream, self.deps[id.0].clone())
    }

    /// The summary of the entry for the stage's current key, when known
    /// and cached.
    pub fn cached(&self, id: StageId) -> Option<&EntrySummary> {
        cached_in(&self.stages[id.0])
    }

    /// The content of the stage's artifact that its dependants' keys chain:
    /// known when it is cached and not forced.
    pub fn content(&self, id: StageId) -> Option<&str> {
        content_in(&self.stages[id.0], self.forced[id.0])
    }

    /// The entry of a cached stage, read again: `Ok(None)` when the stage
    /// is not cached, an error when the entry is gone or no longer has the
    /// content planned (another run replaced it since, e.g. under `--force`:
    /// what was planned from it would not hold).
    pub fn entry(
        &self,
        cache: &Cache,
        dag: &Dag,
        id: StageId,
    ) -> Result<Option<Entry>, CacheError> {
        let Planned::Known {
            key,
            cached: Some(summary),
        } = &self.stages[id.0]
        else {
            return Ok(None);
        };
        let changed = |what: &str| {
            CacheError::Msg(format!(
                "the cache entry of `{}` ({}) {what} since this command planned; run it again",
                dag.stage(id).name,
                key.short()
            ))
        };
        let entry = cache.entry(key)?.ok_or_else(|| changed("was removed"))?;
        if artifact_content(&entry) != summary.content {
            return Err(changed("was replaced by another run"));
        }
        Ok(Some(entry))
    }
}

fn cached_in(planned: &Planned) -> Option<&EntrySummary> {
    match planned {
        Planned::Known { cached, .. } => cached.as_ref(),
        Planned::Pending { .. } => None,
    }
}

fn content_in(planned: &Planned, forced: bool) -> Option<&str> {
    cached_in(planned)
        .filter(|_| !forced)
        .map(|s| s.content.as_str())
}

/// Plan every stage; `forced(id)` stages will re-run whatever the cache holds,
/// so what they feed is pending.
pub fn plan(
    dag: &Dag,
    cache: &Cache,
    stat: &mut StatCache,
    forced: &dyn Fn(StageId) -> bool,
) -> Result<Plan, CacheError> {
    let dir = dag.pipeline.dir.clone();
    plan_with(dag, cache, forced, &mut |stage| {
        hash_deps(stage, &dir, stat)
    })
}

/// Hashes a stage's deps: path as written → content hash.
pub type DepHasher<'a> = dyn FnMut(&StageSpec) -> Result<BTreeMap<String, String>, CacheError> + 'a;

/// [`plan`] with deps hashed by `deps` (a git revision's, for `diff`).
///
/// Stages are planned level by level (a stage's level is one more than its
/// deepest need's), and the stages of one level at once on every core when
/// there are many: with everything cached, a stage's plan is its key and
/// one read of its cache entry, and a 100,000-member matrix is one level.
/// The result is what planning one stage after the other gives; of several
/// errors, the first by level, then by topological order, is returned.
pub fn plan_with(
    dag: &Dag,
    cache: &Cache,
    forced: &dyn Fn(StageId) -> bool,
    deps: &mut DepHasher,
) -> Result<Plan, CacheError> {
    let n = dag.len();
    let mut plan = Plan {
        stages: Vec::with_capacity(n),
        deps: vec![BTreeMap::new(); n],
        forced: dag.ids().map(forced).collect(),
    };
    let mut stages: Vec<Option<Planned>> = vec![None; n];
    for level in levels(dag) {
        // Deps are hashed here, in order: the stat cache is not shared.
        let hashed: Vec<_> = level.iter().map(|&id| deps(dag.stage(id))).collect();
        let one = |(&id, hashed): (&StageId, Result<_, CacheError>)| {
            plan_one(dag, cache, &plan.forced, &stages, id, hashed?)
        };
        let planned: Vec<Result<(Planned, _), CacheError>> = if level.len() >= PARALLEL_LEVEL {
            level.par_iter().zip(hashed).map(one).collect()
        } else {
            level.iter().zip(hashed).map(one).collect()
        };
        for (&id, planned) in level.iter().zip(planned) {
            let (planned, deps) = planned?;
            plan.deps[id.0] = deps;
            stages[id.0] = Some(planned);
        }
    }
    plan.stages = stages
        .into_iter()
        .map(|p| p.expect("every stage planned in topological order"))
        .collect();
    Ok(plan)
}

/// A level with at least this many stages is planned on every core (below,
/// starting the threads costs more than they save).
const PARALLEL_LEVEL: usize = 256;

/// The stages by level (0: no needs; else one more than the deepest need),
/// each level in topological order.
fn levels(dag: &Dag) -> Vec<Vec<StageId>> {
    let mut level = vec![0usize; dag.len()];
    let mut out: Vec<Vec<StageId>> = Vec::new();
    for &id in dag.topo_order() {
        let l = dag
            .needs_iter(id)
            .map(|up| level[up.0] + 1)
            .max()
            .unwrap_or(0);
        level[id.0] = l;
        if out.len() <= l {
            out.resize_with(l + 1, Vec::new);
        }
        out[l].push(id);
    }
    out
}

/// One stage's plan (and its deps' hashes, handed back), given the plans
/// of the levels before its own. When every upstream is cached, its key is
/// hashed from the stage's own fields without copying them (planning a
/// cached pipeline computes every stage's key).
fn plan_one(
    dag: &Dag,
    cache: &Cache,
    forced: &[bool],
    stages: &[Option<Planned>],
    id: StageId,
    deps: BTreeMap<String, String>,
) -> Result<(Planned, BTreeMap<String, String>), CacheError> {
    let mut upstream = Vec::with_capacity(dag.needs_iter(id).len());
    for up in dag.needs_iter(id) {
        let planned = stages[up.0]
            .as_ref()
            .expect("the levels before are planned");
        match content_in(planned, forced[up.0]) {
            Some(content) => upstream.push((dag.stage(up).name.as_str(), content)),
            None => {
                // Name the stage that actually runs, not a pending one between.
                let upstream = match planned {
                    Planned::Pending { upstream } => *upstream,
                    Planned::Known { .. } => up,
                };
                return Ok((Planned::Pending { upstream }, deps));
            }
        }
    }
    let key = stage_key(dag.stage(id), &upstream, &deps);
    let cached = cache.entry_summary(&key)?;
    Ok((Planned::Known { key, cached }, deps))
}

/// The content hash a stage's key chains for an upstream artifact.
pub fn artifact_content(entry: &Entry) -> String {
    crate::cache::store::manifest_hash(&entry.files)
}

/// Hash a stage's deps (declared, and those its op implies) under `dir`.
pub fn hash_deps(
    stage: &StageSpec,
    dir: &Path,
    stat: &mut StatCache,
) -> Result<BTreeMap<String, String>, CacheError> {
    let mut deps = BTreeMap::new();
    for dep in all_deps(stage) {
        let path = dir.join(&dep);
        let hash = stat.hash_path(&path).map_err(|e| match e {
            CacheError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                CacheError::MissingDep {
                    dep: dep.clone(),
                    stage: stage.name.clone(),
                    path,
                }
            }
            other => other,
        })?;
        deps.insert(dep, hash);
    }
    Ok(deps)
}

/// A stage's deps as written, then those its op implies.
pub fn all_deps(stage: &StageSpec) -> Vec<String> {
    let mut deps = stage.deps.to_vec();
    deps.extend(implied_deps(stage));
    deps
}

/// Local files an op reads besides its upstreams: their content belongs in
/// the key like a declared dep's (a `fetch` of a local folder or an unpinned
/// `file://` archive).
fn implied_deps(stage: &StageSpec) -> Vec<String> {
    match stage.op_name() {
        Some("fetch") => crate::ops::fetch::local_source(&stage.params)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// A stage's key inputs, from its spec, its upstreams' contents (in `needs`
/// order) and its deps' hashes.
pub fn stage_key_inputs(
    stage: &StageSpec,
    upstream: Vec<UpstreamInput>,
    deps: BTreeMap<String, String>,
) -> KeyInputs {
    let env = key_env(stage);
    let KeyParts {
        cache_version,
        op,
        op_version,
        cmd,
        ..
    } = stage_parts(stage, &[], &deps, &env);
    KeyInputs {
        cache_version,
        op: op.map(str::to_string),
        op_version,
        cmd: cmd.map(str::to_string),
        params: serde_json::Value::Object(stage.params.clone()),
        upstream,
        deps,
        outs: stage.outs.to_vec(),
        env,
    }
}

/// [`stage_key_inputs`]' key, from borrowed parts: `upstream` is each
/// need's (name, content) in `needs` order.
pub fn stage_key(
    stage: &StageSpec,
    upstream: &[(&str, &str)],
    deps: &BTreeMap<String, String>,
) -> StageKey {
    stage_parts(stage, upstream, deps, &key_env(stage)).key()
}

/// What a stage's key is made of, borrowed from its spec and the rest.
fn stage_parts<'a>(
    stage: &'a StageSpec,
    upstream: &'a [(&'a str, &'a str)],
    deps: &'a BTreeMap<String, String>,
    env: &'a BTreeMap<String, String>,
) -> KeyParts<'a> {
    let (op, op_version, cmd) = match &stage.kind {
        StageKind::Op(def) => (Some(def.name), Some(def.version), None),
        StageKind::Cmd(text) => (None, None, Some(text.as_str())),
    };
    KeyParts {
        cache_version: crate::cache::key::CACHE_VERSION,
        op,
        op_version,
        cmd,
        params: &stage.params,
        upstream,
        deps,
        outs: &stage.outs,
        env,
    }
}

/// The variables in a stage's key: a cmd's (see [`cmd_env`]); a torch op's
/// thread count; none for another op.
fn key_env(stage: &StageSpec) -> BTreeMap<String, String> {
    match &stage.kind {
        StageKind::Cmd(_) => cmd_env(stage),
        // A torch op's bytes depend on its intra-op thread count (libtorch
        // splits reductions by it), so the count it runs with is in its key.
        StageKind::Op(_) if is_torch(stage) => {
            BTreeMap::from([("HCPIPE_THREADS".to_string(), cmd_threads(stage).to_string())])
        }
        StageKind::Op(_) => BTreeMap::new(),
    }
}

/// The variables hcpipe sets for a cmd stage, all in its key (two stages that
/// share a key must not be able to tell each other apart):
/// `HCPIPE_THREADS` (declared `resources.cpu`) and, for a matrix member,
/// `HCPIPE_MATRIX_<AXIS>` per axis (the axis upper-cased, any character
/// other than a letter or digit made `_`; the value as the member name
/// writes it, a string without its quotes). The thread-count variables of
/// numeric libraries (`OMP_NUM_THREADS`, ...) follow `HCPIPE_THREADS` and are
/// set by the executor, not here: a user's own setting of them wins.
pub fn cmd_env(stage: &StageSpec) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([("HCPIPE_THREADS".to_string(), cmd_threads(stage).to_string())]);
    for (axis, value) in stage.matrix.iter() {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        env.insert(matrix_env_name(axis), value);
    }
    env
}

/// `HCPIPE_MATRIX_<AXIS>` for an axis name: `learning-rate` → `HCPIPE_MATRIX_LEARNING_RATE`.
pub fn matrix_env_name(axis: &str) -> String {
    let axis: String = axis
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HCPIPE_MATRIX_{axis}")
}

/// `$HCPIPE_THREADS` of a cmd stage, and the intra-op thread count of a
/// torch op stage: its declared `resources.cpu`, whatever `--jobs` is, so the
/// count (which is in the key) does not depend on how busy the machine is.
pub fn cmd_threads(stage: &StageSpec) -> u32 {
    stage.resources.cpu.max(1)
}

/// Whether a stage runs in the torch worker (an op of kind `Torch`).
pub fn is_torch(stage: &StageSpec) -> bool {
    matches!(&stage.kind, StageKind::Op(def) if matches!(def.kind, crate::ops::OpKind::Torch))
}

/// The thread count a stage runs with when it is fixed by its spec (and so
/// in its key): a cmd's or a torch op's declared `resources.cpu`. `None` for
/// a native op, which gets its CPU slots (its output does not depend on them).
pub fn fixed_threads(stage: &StageSpec) -> Option<usize> {
    (matches!(stage.kind, StageKind::Cmd(_)) || is_torch(stage))
        .then(|| cmd_threads(stage) as usize)
}
