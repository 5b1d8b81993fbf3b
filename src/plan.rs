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

use crate::cache::statcache::StatCache;
use crate::cache::{content_hash, Cache, CacheError, Entry, KeyInputs, StageKey, UpstreamInput};
use crate::dag::{Dag, StageId};
use crate::spec::{StageKind, StageSpec};

/// What planning knows of one stage.
#[derive(Debug, Clone)]
pub enum Planned {
    /// Every upstream is cached: the key is known, and so whether it is cached.
    Known {
        key: StageKey,
        cached: Option<Box<Entry>>,
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
    /// Per stage: the content of its artifact, when cached and not forced.
    content: Vec<Option<String>>,
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
                    content: self.content[up.0].clone()?,
                })
            })
            .collect();
        stage_key_inputs(dag.stage(id), upstream, self.deps[id.0].clone())
    }

    /// The entry for the stage's current key, when known and cached.
    pub fn cached(&self, id: StageId) -> Option<&Entry> {
        match &self.stages[id.0] {
            Planned::Known { cached, .. } => cached.as_deref(),
            Planned::Pending { .. } => None,
        }
    }
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
        content: vec![None; n],
    };
    let mut stages: Vec<Option<Planned>> = vec![None; n];
    for &id in dag.topo_order() {
        let mut pending_on = None;
        for up in dag.needs_iter(id) {
            if plan.content[up.0].is_none() {
                // Name the stage that actually runs, not a pending one between.
                let root = match &stages[up.0] {
                    Some(Planned::Pending { upstream }) => *upstream,
                    _ => up,
                };
                pending_on = Some(root);
                break;
            }
        }
        plan.deps[id.0] = deps(dag.stage(id))?;
        let planned = match pending_on {
            Some(upstream) => Planned::Pending { upstream },
            None => {
                let key = plan.inputs(dag, id).key();
                let cached = cache.entry(&key)?.map(Box::new);
                if !forced(id) {
                    plan.content[id.0] = cached.as_deref().map(artifact_content);
                }
                Planned::Known { key, cached }
            }
        };
        stages[id.0] = Some(planned);
    }
    plan.stages = stages
        .into_iter()
        .map(|p| p.expect("every stage planned in topological order"))
        .collect();
    Ok(plan)
}

/// The content hash a stage's key chains for an upstream artifact.
pub fn artifact_content(entry: &Entry) -> String {
    content_hash(&entry.files)
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
    let (op, op_version, cmd) = match &stage.kind {
        StageKind::Op(def) => (Some(def.name.to_string()), Some(def.version), None),
        StageKind::Cmd(text) => (None, None, Some(text.clone())),
    };
    let env = match &stage.kind {
        StageKind::Cmd(_) => cmd_env(stage),
        // A torch op's bytes depend on its intra-op thread count (libtorch
        // splits reductions by it), so the count it runs with is in its key.
        StageKind::Op(_) if is_torch(stage) => {
            BTreeMap::from([("HCPIPE_THREADS".to_string(), cmd_threads(stage).to_string())])
        }
        StageKind::Op(_) => BTreeMap::new(),
    };
    KeyInputs {
        cache_version: crate::cache::key::CACHE_VERSION,
        op,
        op_version,
        cmd,
        params: serde_json::Value::Object(stage.params.clone()),
        upstream,
        deps,
        outs: stage.outs.to_vec(),
        env,
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
