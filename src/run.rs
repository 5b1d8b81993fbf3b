//! `hcpipe run`: from a pipeline's stage graph and the run's flags to a
//! finished run record.
//!
//! [`PlannedRun::new`] checks `--force`, opens the cache (a shared use lock:
//! `gc` waits for the run) and plans every key that can be known now, while
//! git reads the pipeline's revision. Then either [`PlannedRun::dry_run`]
//! says what would run and why, or [`PlannedRun::execute`] writes the run
//! record, picks the executor, starts the run's torch worker (local runs),
//! hands the graph to the scheduler (`exec::run_dag`) and ends with
//! the run's outcome: `Ok` when every stage ran or was cached, else
//! [`Error::RunFailed`] (each failed stage with its log tail) or
//! [`Error::Interrupted`]. The command line (`cli`) only prints.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::cache::lock::UseLock;
use crate::cache::statcache::StatCache;
use crate::cache::{Cache, StageKey};
use crate::dag::Dag;
use crate::error::Error;
use crate::exec::local::LocalExecutor;
use crate::exec::slurm::SlurmExecutor;
use crate::exec::torch_server::{self, TorchServer};
use crate::exec::{interrupt, is_forced, run_dag, slots, Executor, RunOptions};
use crate::plan::{plan, Plan};
use crate::record::fresh::{freshness, Freshness};
use crate::record::{self, RunRecord, RunStatus};
use crate::ui::progress::Reporter;

/// Default `--jobs` with Slurm: CPUs requested by jobs in flight at once.
const SLURM_DEFAULT_JOBS: usize = 256;

/// Where the stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Stages as processes/threads on this machine.
    Local,
    /// One `sbatch` job per stage; the cache must be shared with the compute nodes.
    Slurm,
}

impl ExecutorKind {
    /// The name the run record keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// How to execute a planned run (`hcpipe run`'s flags past planning).
pub struct Settings {
    /// Stages at once (local) or CPUs requested by jobs in flight (Slurm);
    /// `None`: this machine's cores, or [`SLURM_DEFAULT_JOBS`].
    pub jobs: Option<usize>,
    pub executor: ExecutorKind,
    /// `--slurm-opt`: sbatch options appended to every job.
    pub slurm_opt: Vec<String>,
    /// One JSON line per finished stage on stdout instead of progress lines.
    pub json: bool,
    /// `--fail-fast`: no stage starts after the first failure.
    pub fail_fast: bool,
    /// The remote cache: a stage missing locally is pulled from it, when it
    /// has it, instead of run.
    pub remote: Option<crate::remote::Remote>,
    /// How `remote` was opened (Slurm jobs open it again on their node).
    pub remote_config: Option<crate::remote::RemoteConfig>,
}

/// One stage of `run --dry-run`: what would happen to it, and why.
pub struct DryRun<'a> {
    pub stage: &'a str,
    /// `None` while the key waits on an upstream that runs first.
    pub key: Option<&'a StageKey>,
    /// Named by `--force`: runs whatever the cache holds.
    pub forced: bool,
    pub freshness: Freshness,
}

/// A run whose keys are planned, holding the cache for the run.
pub struct PlannedRun {
    dag: Dag,
    cache: Cache,
    /// Shared with other runs; `gc` takes it exclusively.
    _use: UseLock,
    plan: Plan,
    stat: StatCache,
    forced: HashSet<String>,
    git: Option<crate::git::Pending>,
}

impl PlannedRun {
    /// Check `force` against the stages of `dag` (read from `pipeline`, as
    /// the user named it), open the cache at `cache_dir` and plan.
    /// `read_git`: read the pipeline's git revision for the record (a dry
    /// run writes none).
    pub fn new(
        dag: Dag,
        pipeline: &Path,
        cache_dir: &Path,
        force: Vec<String>,
        read_git: bool,
    ) -> Result<PlannedRun, Error> {
        check_force(&dag, pipeline, &force)?;
        // git reads the pipeline's revision for the run record while we plan.
        let git = if read_git {
            crate::git::start(&dag.pipeline.path)
        } else {
            None
        };
        let cache = Cache::open(cache_dir)?;
        let use_lock = cache.use_lock()?;
        let forced: HashSet<String> = force.into_iter().collect();
        let mut stat = StatCache::load(cache.stat_cache_path());
        let start = std::time::Instant::now();
        let plan = plan(&dag, &cache, &mut stat, &|id| {
            is_forced(&forced, dag.stage(id))
        })?;
        tracing::info!("hashed {} dep file(s)", stat.hashed);
        tracing::debug!("planned in {:.0?}; {}", start.elapsed(), memory_note());
        let _ = stat.save();
        Ok(PlannedRun {
            dag,
            cache,
            _use: use_lock,
            plan,
            stat,
            forced,
            git,
        })
    }

    /// Every stage in topological order, with what a run would do to it.
    pub fn dry_run(&self) -> Vec<DryRun<'_>> {
        let mut fresh = freshness(&self.dag, &self.cache, &self.plan);
        self.dag
            .topo_order()
            .iter()
            .map(|&id| {
                let s = self.dag.stage(id);
                DryRun {
                    stage: &s.name,
                    key: self.plan.key(id),
                    forced: is_forced(&self.forced, s),
                    freshness: std::mem::replace(&mut fresh[id.0], Freshness::Fresh),
                }
            })
            .collect()
    }

    /// Run every stage that is not cached (or is forced), and save the
    /// run record. `Ok` only when every stage succeeded.
    pub fn execute(self, settings: Settings) -> Result<RunRecord, Error> {
        let PlannedRun {
            dag,
            cache,
            _use,
            plan,
            stat,
            forced,
            git,
        } = self;
        let Settings {
            jobs,
            executor: executor_kind,
            slurm_opt,
            json,
            fail_fast,
            remote,
            remote_config,
        } = settings;
        // With Slurm, --jobs caps the CPUs requested by jobs in flight, not this machine's cores.
        let jobs = jobs.unwrap_or_else(|| match executor_kind {
            ExecutorKind::Slurm => SLURM_DEFAULT_JOBS,
            ExecutorKind::Local => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        });
        if jobs == 0 {
            return Err(Error::Usage("--jobs 0: give at least 1".into()));
        }
        let mut record = RunRecord {
            id: record::new_run_id(),
            pipeline: dag.pipeline.name.clone(),
            pipeline_path: dag.pipeline.path.display().to_string(),
            pipeline_hash: dag.pipeline.file_hash.clone(),
            git: git.and_then(crate::git::Pending::finish),
            params: dag.pipeline.params.clone(),
            executor: executor_kind.as_str().into(),
            started: now(),
            finished: None,
            status: RunStatus::Running,
            hcpipe_version: env!("CARGO_PKG_VERSION").into(),
            runner: record::Runner::this_process(),
            stages: Vec::new(),
        };
        let opts = RunOptions {
            jobs,
            // Slurm places GPU jobs itself; this machine's GPUs are no limit then.
            gpus: match executor_kind {
                ExecutorKind::Local => slots::detect_gpus(),
                ExecutorKind::Slurm => 0,
            },
            force: forced,
            fail_fast,
            remote: remote.clone().map(crate::remote::Lookup::new),
        };
        let stat = Arc::new(Mutex::new(stat));
        // On a local run, one torch worker serves every torch stage of the
        // run (exec::torch_server), started now so that it loads libtorch and
        // CUDA while the first stages run. Never for a run with no torch work.
        let torch_work = dag.ids().any(|id| {
            let s = dag.stage(id);
            let torch = s
                .op_name()
                .and_then(crate::ops::lookup)
                .is_some_and(|d| matches!(d.kind, crate::ops::OpKind::Torch));
            torch && (plan.cached(id).is_none() || is_forced(&opts.force, s))
        });
        let mut torch = None;
        if executor_kind == ExecutorKind::Local && torch_work && torch_server::wanted() {
            let worker = crate::exec::job::torch_worker().map_err(Error::TorchWorker)?;
            let log = cache
                .root
                .join("logs")
                .join(format!("torch-worker-{}.log", record.id));
            torch = Some(Arc::new(
                TorchServer::start(&worker, &log).map_err(Error::TorchWorker)?,
            ));
        }
        let mut executor: Box<dyn Executor> = match executor_kind {
            ExecutorKind::Local => Box::new(LocalExecutor {
                cache: cache.clone(),
                stat: Arc::clone(&stat),
                torch,
            }),
            ExecutorKind::Slurm => {
                let resources = dag
                    .ids()
                    .map(|id| (*dag.stage(id).resources).clone())
                    .collect();
                let slurm = SlurmExecutor::new(cache.clone(), resources, slurm_opt)
                    .map_err(Error::Slurm)?;
                // With a remote, jobs need no shared cache folder (exec::job_file).
                Box::new(match (&remote, &remote_config) {
                    (Some(r), Some(c)) => slurm.with_remote(r.clone(), c.clone()),
                    _ => slurm,
                })
            }
        };
        interrupt::install();
        let mut reporter = Reporter::new(json, dag.len());
        let start = std::time::Instant::now();
        let ok = run_dag(
            &dag,
            &cache,
            &plan,
            &stat,
            &opts,
            executor.as_mut(),
            &mut record,
            &mut reporter,
        );
        reporter.finish();
        tracing::debug!("scheduled in {:.0?}; {}", start.elapsed(), memory_note());
        drop(executor); // stops the run's torch worker
        if let Ok(mut stat) = stat.lock() {
            let _ = stat.save();
        }
        let interrupted = interrupt::requested();
        record.status = if interrupted {
            RunStatus::Interrupted
        } else if ok {
            RunStatus::Ok
        } else {
            RunStatus::Failed
        };
        record.finished = Some(now());
        let start = std::time::Instant::now();
        record.save(&cache)?;
        tracing::debug!("record saved in {:.0?}; {}", start.elapsed(), memory_note());
        reporter.run_finished(&record);
        match record.status {
            RunStatus::Interrupted => Err(Error::Interrupted { id: record.id }),
            RunStatus::Failed => Err(Error::RunFailed {
                id: record.id,
                failures: reporter.failures,
            }),
            RunStatus::Ok | RunStatus::Running => Ok(record),
        }
    }
}

/// This process's resident memory now and at its peak, for `-vv`'s phase
/// lines (where a big pipeline's memory goes: `VmRSS`/`VmHWM` of
/// `/proc/self/status`; empty where there is no such file).
pub fn memory_note() -> String {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return String::new();
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or("?".to_string(), |kib| format!("{} MB", kib / 1024))
    };
    format!("memory {}, peak {}", field("VmRSS:"), field("VmHWM:"))
}

/// Every `--force` value names a stage, a matrix stage's base name, or is `*`.
fn check_force(dag: &Dag, pipeline: &Path, force: &[String]) -> Result<(), Error> {
    for f in force.iter().filter(|f| *f != "*") {
        dag.select(f, pipeline)
            .map_err(|e| Error::Usage(format!("--force {f}: {e}")))?;
    }
    Ok(())
}

/// The pipeline's stage names, for an error that lists the valid ones.
pub fn stage_names(dag: &Dag) -> String {
    dag.pipeline
        .stages
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
