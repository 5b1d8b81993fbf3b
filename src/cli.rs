//! The command line: parsing (clap) and one function per subcommand.
//! Each returns `Result<i32, String>`: the exit code, or one error paragraph
//! that `main` prints. Exit codes: 0 ok, 1 a stage or check failed, 2 the
//! user's input is wrong.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};

use crate::cache::statcache::StatCache;
use crate::cache::Cache;
use crate::dag::render::{render, DagFormat};
use crate::dag::Dag;
use crate::dag::StageId;
use crate::exec::local::LocalExecutor;
use crate::exec::slurm::{JobResult, SlurmExecutor};
use crate::exec::torch_server::{self, TorchServer};
use crate::exec::{interrupt, Executor};
use crate::exec::{is_forced, run_dag, slots, RunOptions};
use crate::plan::plan;
use crate::record::fresh::{freshness, Freshness};
use crate::record::{self, RunRecord};
use crate::report::progress::Reporter;
use crate::report::table;
use crate::spec::load_pipeline;

#[derive(Parser)]
#[command(
    name = "hcpipe",
    version,
    about = "Declarative experiment pipelines: YAML stages, blake3 keys, a content-addressed cache."
)]
struct Cli {
    /// Cache folder (default: $HCPIPE_CACHE, else ./cache).
    #[arg(long, global = true, env = "HCPIPE_CACHE", default_value = "cache")]
    cache: PathBuf,
    /// More log output (-v info, -vv debug); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Default `--jobs` with Slurm: CPUs requested by jobs in flight at once.
const SLURM_DEFAULT_JOBS: usize = 256;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExecutorKind {
    /// Stages as processes/threads on this machine.
    Local,
    /// One `sbatch` job per stage; the cache must be shared with the compute nodes.
    Slurm,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: every stage whose key is not cached, independent branches at once.
    Run {
        pipeline: PathBuf,
        /// Stages at once (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Override a pipeline param: --set lr=0.001 (repeatable).
        #[arg(long = "set", value_name = "K=V")]
        set: Vec<String>,
        /// Run this stage even when cached (repeatable; a matrix stage's base name forces every member; `*` forces all).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Show what would run, and why, without running anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value = "local")]
        executor: ExecutorKind,
        /// With `--executor slurm`: an sbatch option added verbatim to every job (repeatable), e.g. --slurm-opt=--qos=short.
        #[arg(long, value_name = "OPT", allow_hyphen_values = true)]
        slurm_opt: Vec<String>,
        /// One JSON object per finished stage on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Per stage: fresh, stale (and why), or never run.
    Status {
        pipeline: PathBuf,
        #[arg(long = "set", value_name = "K=V")]
        set: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the stage graph.
    Dag {
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: DagFormat,
    },
    /// List runs; show one run; or a pipeline stage's newest result (key, path, metrics).
    Show {
        /// A run id (or prefix), or a pipeline file.
        target: Option<String>,
        /// With a pipeline: the stage to show.
        stage: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Compare two runs (ids) or two git revisions of a pipeline: params, stage keys (and why), metrics.
    Diff {
        a: String,
        b: String,
        /// The pipeline file whose git revisions A and B are (needed when A or B is not a run id).
        #[arg(long)]
        pipeline: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every cached object and report corruption, with the stages affected.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Delete cache entries and objects no kept run references.
    Gc {
        /// Keep only the newest N run records (and what they reference).
        #[arg(long)]
        keep_last: Option<usize>,
    },
    /// List the built-in ops.
    Ops,
    /// Run one stage from a job file (used by the Slurm executor).
    #[command(hide = true)]
    Exec {
        #[arg(long)]
        job: PathBuf,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.verbose);
    // Commands that only print end quietly when their reader goes away
    // (`hcpipe show | head`), as `cat` does. `run` keeps ignoring SIGPIPE:
    // a closed pipe must not stop a run, so its output ignores write errors.
    let runs_stages = matches!(
        cli.command,
        Command::Run { dry_run: false, .. } | Command::Exec { .. }
    );
    if !runs_stages {
        // SAFETY: setting a signal's disposition to the default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match cli.command {
        Command::Run {
            pipeline,
            jobs,
            set,
            force,
            dry_run,
            executor,
            slurm_opt,
            json,
        } => cmd_run(
            &cli.cache,
            &pipeline,
            RunArgs {
                jobs,
                set,
                force,
                dry_run,
                executor,
                slurm_opt,
                json,
            },
        ),
        Command::Status {
            pipeline,
            set,
            json,
        } => cmd_status(&cli.cache, &pipeline, &set, json),
        Command::Dag { pipeline, format } => load_dag(&pipeline, &[]).map(|dag| {
            print!("{}", render(&dag, format));
            0
        }),
        Command::Show {
            target,
            stage,
            json,
        } => cmd_show(&cli.cache, target.as_deref(), stage.as_deref(), json),
        Command::Diff {
            a,
            b,
            pipeline,
            json,
        } => cmd_diff(&cli.cache, &a, &b, pipeline.as_deref(), json),
        Command::Verify { json } => cmd_verify(&cli.cache, json),
        Command::Gc { keep_last } => cmd_gc(&cli.cache, keep_last),
        Command::Ops => {
            for def in crate::ops::registry() {
                let kind = match def.kind {
                    crate::ops::OpKind::Native(_) => "native",
                    crate::ops::OpKind::Torch => "torch",
                };
                println!(
                    "{:<14} v{}  {:<6}  {}",
                    def.name, def.version, kind, def.summary
                );
            }
            Ok(0)
        }
        Command::Exec { job } => cmd_exec(&job),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            2
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

fn parse_sets(set: &[String]) -> Result<Vec<(String, String)>, String> {
    set.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("--set `{s}`: write it as KEY=VALUE, e.g. --set lr=0.001"))
        })
        .collect()
}

fn load_dag(pipeline: &Path, set: &[String]) -> Result<Dag, String> {
    let overrides = parse_sets(set)?;
    let spec = load_pipeline(pipeline, &overrides).map_err(|e| e.to_string())?;
    Dag::build(spec).map_err(|e| e.to_string())
}

fn open_cache(dir: &Path) -> Result<Cache, String> {
    Cache::open(dir).map_err(|e| e.to_string())
}

/// `hcpipe run`'s flags.
struct RunArgs {
    jobs: Option<usize>,
    set: Vec<String>,
    force: Vec<String>,
    dry_run: bool,
    executor: ExecutorKind,
    slurm_opt: Vec<String>,
    json: bool,
}

fn cmd_run(cache_dir: &Path, pipeline: &Path, args: RunArgs) -> Result<i32, String> {
    let RunArgs {
        jobs,
        set,
        force,
        dry_run,
        executor: executor_kind,
        slurm_opt,
        json,
    } = args;
    if !slurm_opt.is_empty() && executor_kind != ExecutorKind::Slurm {
        return Err("--slurm-opt only applies with `--executor slurm`".into());
    }
    let dag = load_dag(pipeline, &set)?;
    for f in &force {
        if f != "*"
            && !dag
                .pipeline
                .stages
                .iter()
                .any(|s| &s.name == f || &s.base == f)
        {
            let names: Vec<&str> = dag
                .pipeline
                .stages
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(format!(
                "--force {f}: no stage `{f}` in {}; stages: {}",
                pipeline.display(),
                names.join(", ")
            ));
        }
    }
    // git reads the pipeline's revision for the run record while we plan.
    let git = if dry_run {
        None
    } else {
        crate::git::start(&dag.pipeline.path)
    };
    let cache = open_cache(cache_dir)?;
    let _use = cache.use_lock().map_err(|e| e.to_string())?;
    let forced: HashSet<String> = force.into_iter().collect();
    let mut stat = StatCache::load(cache.stat_cache_path());
    let plan = plan(&dag, &cache, &mut stat, &|id| {
        is_forced(&forced, dag.stage(id))
    })
    .map_err(|e| e.to_string())?;
    tracing::info!("hashed {} dep file(s)", stat.hashed);
    let _ = stat.save();
    if dry_run {
        let fresh = freshness(&dag, &cache, &plan);
        for &id in dag.topo_order() {
            let s = dag.stage(id);
            let is_forced = is_forced(&forced, s);
            let line = match (&fresh[id.0], is_forced) {
                (_, true) => format!("would run  {}  (forced)", s.name),
                (Freshness::Fresh, _) => format!("cached     {}", s.name),
                (Freshness::NeverRun, _) => format!("would run  {}  (never run)", s.name),
                (Freshness::Stale(why), _) => {
                    format!("would run  {}  ({})", s.name, why.join("; "))
                }
                (Freshness::AfterUpstream(up), _) => format!(
                    "maybe      {}  (upstream `{up}` runs first; cached if its output is unchanged)",
                    s.name
                ),
            };
            if json {
                let status = match &fresh[id.0] {
                    _ if is_forced => "would_run",
                    Freshness::Fresh => "cached",
                    Freshness::AfterUpstream(_) => "after_upstream",
                    _ => "would_run",
                };
                println!(
                    "{}",
                    serde_json::json!({"stage": s.name, "key": plan.key(id), "status": status})
                );
            } else {
                println!("{line}");
            }
        }
        return Ok(0);
    }
    // With Slurm, --jobs caps the CPUs requested by jobs in flight, not this machine's cores.
    let jobs = jobs.unwrap_or_else(|| match executor_kind {
        ExecutorKind::Slurm => SLURM_DEFAULT_JOBS,
        ExecutorKind::Local => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    });
    if jobs == 0 {
        return Err("--jobs 0: give at least 1".into());
    }
    let mut record = RunRecord {
        id: record::new_run_id(),
        pipeline: dag.pipeline.name.clone(),
        pipeline_path: dag.pipeline.path.display().to_string(),
        pipeline_hash: dag.pipeline.file_hash.clone(),
        git: git.and_then(crate::git::Pending::finish),
        params: dag.pipeline.params.clone(),
        executor: match executor_kind {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
        .into(),
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        finished: None,
        status: "running".into(),
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
    };
    let stat = Arc::new(Mutex::new(stat));
    // On a GPU machine, one torch worker serves every torch stage of the
    // run (exec::torch_server), started now so that it loads libtorch and
    // CUDA while the first stages run. Never for a run with no torch work.
    let torch_work = (0..dag.len()).any(|i| {
        let s = dag.stage(StageId(i));
        let torch = s
            .op_name()
            .and_then(crate::ops::lookup)
            .is_some_and(|d| matches!(d.kind, crate::ops::OpKind::Torch));
        torch && (plan.cached(StageId(i)).is_none() || is_forced(&opts.force, s))
    });
    let mut torch = None;
    if matches!(executor_kind, ExecutorKind::Local) && torch_work && torch_server::wanted(opts.gpus)
    {
        let worker = crate::exec::job::torch_worker()?;
        let log = cache
            .root
            .join("logs")
            .join(format!("torch-worker-{}.log", record.id));
        torch = Some(Arc::new(TorchServer::start(&worker, &log)?));
    }
    let mut executor: Box<dyn Executor> = match executor_kind {
        ExecutorKind::Local => Box::new(LocalExecutor {
            cache: cache.clone(),
            stat: Arc::clone(&stat),
            torch,
        }),
        ExecutorKind::Slurm => {
            let resources = (0..dag.len())
                .map(|i| dag.stage(StageId(i)).resources.clone())
                .collect();
            Box::new(SlurmExecutor::new(cache.clone(), resources, slurm_opt)?)
        }
    };
    interrupt::install();
    let mut reporter = Reporter::new(json, dag.len());
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
    drop(executor); // stops the run's torch worker
    if let Ok(mut stat) = stat.lock() {
        let _ = stat.save();
    }
    let interrupted = interrupt::requested();
    record.status = if interrupted {
        "interrupted"
    } else if ok {
        "ok"
    } else {
        "failed"
    }
    .into();
    record.finished =
        Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    record.save(&cache).map_err(|e| e.to_string())?;
    if interrupted {
        let _ = writeln!(std::io::stderr(), "error: run {} interrupted", record.id);
        return Ok(130);
    }
    if ok {
        return Ok(0);
    }
    let mut msg = String::new();
    for (stage, f) in &reporter.failures {
        msg.push_str(&format!("stage `{stage}` failed: {}\n", f.message));
        if !f.log_tail.is_empty() {
            for l in f.log_tail.lines() {
                msg.push_str(&format!("  | {l}\n"));
            }
        }
        if let Some(log) = &f.log {
            msg.push_str(&format!("  full log: {}\n", log.display()));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "error: run {} failed\n{}",
        record.id,
        msg.trim_end()
    );
    Ok(1)
}

fn cmd_status(
    cache_dir: &Path,
    pipeline: &Path,
    set: &[String],
    json: bool,
) -> Result<i32, String> {
    let dag = load_dag(pipeline, set)?;
    let cache = open_cache(cache_dir)?;
    let mut stat = StatCache::load(cache.stat_cache_path());
    let plan = plan(&dag, &cache, &mut stat, &|_| false).map_err(|e| e.to_string())?;
    let _ = stat.save();
    let fresh = freshness(&dag, &cache, &plan);
    let mut rows = Vec::new();
    for &id in dag.topo_order() {
        let s = dag.stage(id);
        let (status, why) = match &fresh[id.0] {
            Freshness::Fresh => ("fresh", String::new()),
            Freshness::NeverRun => ("never run", String::new()),
            Freshness::Stale(why) => ("stale", why.join("; ")),
            Freshness::AfterUpstream(up) => (
                "stale",
                format!("upstream `{up}` will run (cached again if its output is unchanged)"),
            ),
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"stage": s.name, "key": plan.key(id), "status": status, "why": why})
            );
        } else {
            rows.push(vec![s.name.clone(), status.to_string(), why]);
        }
    }
    if !json {
        print!("{}", table::render(&["stage", "status", "why"], &rows));
    }
    Ok(0)
}

/// The `report.html` of the newest run with a `report` op stage whose
/// artifact is still in the cache (stage records carry keys, not ops: the
/// op is in the key's cache entry).
fn newest_report(cache: &Cache, runs: &[RunRecord]) -> Option<PathBuf> {
    runs.iter().rev().find_map(|run| {
        run.stages.iter().find_map(|st| {
            let entry = cache.entry(&st.key).ok().flatten()?;
            let page = cache.artifact_dir(&st.key).join("report.html");
            (entry.inputs.op.as_deref() == Some("report") && page.is_file()).then_some(page)
        })
    })
}

fn cmd_show(
    cache_dir: &Path,
    target: Option<&str>,
    stage: Option<&str>,
    json: bool,
) -> Result<i32, String> {
    let cache = open_cache(cache_dir)?;
    let Some(target) = target else {
        let runs = record::list_runs(&cache);
        if json {
            for r in &runs {
                println!(
                    "{}",
                    serde_json::json!({"id": r.id, "pipeline": r.pipeline, "status": r.status, "started": r.started})
                );
            }
            return Ok(0);
        }
        if runs.is_empty() {
            println!("no runs in {}", cache.root.display());
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                let count =
                    |st: record::StageStatus| r.stages.iter().filter(|s| s.status == st).count();
                vec![
                    r.id.clone(),
                    r.pipeline.clone(),
                    r.status.clone(),
                    format!(
                        "{} ran, {} cached, {} failed",
                        count(record::StageStatus::Ran),
                        count(record::StageStatus::Cached),
                        count(record::StageStatus::Failed)
                    ),
                    r.started.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(&["run", "pipeline", "status", "stages", "started"], &rows)
        );
        if let Some(path) = newest_report(&cache, &runs) {
            println!("newest report: {}", path.display());
        }
        return Ok(0);
    };
    if Path::new(target).is_file() {
        let dag = load_dag(Path::new(target), &[])?;
        let mut stat = StatCache::load(cache.stat_cache_path());
        let plan = plan(&dag, &cache, &mut stat, &|_| false).map_err(|e| e.to_string())?;
        let ids: Vec<_> = match stage {
            Some(name) => vec![dag.find(name).ok_or_else(|| {
                let names: Vec<&str> = dag
                    .pipeline
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                format!(
                    "no stage `{name}` in {target}; stages: {}",
                    names.join(", ")
                )
            })?],
            None => dag.topo_order().to_vec(),
        };
        for id in ids {
            let s = dag.stage(id);
            // The current key's result, else the newest run's result for this stage.
            let entry = match plan.cached(id) {
                Some(e) => Some(e.clone()),
                None => record::runs_of(&cache, &dag.pipeline.path)
                    .iter()
                    .rev()
                    .filter_map(|r| r.stage(&s.name))
                    .find_map(|st| cache.entry(&st.key).ok().flatten()),
            };
            let Some(entry) = entry else {
                if stage.is_some() {
                    return Err(format!(
                        "stage `{}` has no result in {} yet; run the pipeline first",
                        s.name,
                        cache.root.display()
                    ));
                }
                println!("{}  (no result yet)", s.name);
                continue;
            };
            let path = cache
                .ensure_artifact(&entry, false)
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"stage": s.name, "key": entry.key, "path": path, "metrics": entry.metrics, "current": Some(&entry.key) == plan.key(id)})
                );
            } else {
                let stale = if Some(&entry.key) == plan.key(id) {
                    ""
                } else {
                    "  (stale: an older result)"
                };
                println!(
                    "{}  {}{stale}\n  path: {}",
                    s.name,
                    entry.key.short(),
                    path.display()
                );
                if !entry.metrics.is_empty() {
                    println!(
                        "  metrics: {}",
                        serde_json::Value::Object(entry.metrics.clone())
                    );
                }
            }
        }
        return Ok(0);
    }
    let run = record::find_run(&cache, target)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run).map_err(|e| e.to_string())?
        );
        return Ok(0);
    }
    println!(
        "run {}  pipeline {} ({})  {}",
        run.id, run.pipeline, run.pipeline_path, run.status
    );
    if let Some(g) = &run.git {
        println!("git {}{}", g.commit, if g.dirty { " (dirty)" } else { "" });
    }
    let rows: Vec<Vec<String>> = run
        .stages
        .iter()
        .map(|s| {
            vec![
                s.stage.clone(),
                s.status.as_str().into(),
                format!("{:.2}", s.wall_s),
                s.key.short().into(),
                serde_json::Value::Object(s.metrics.clone()).to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["stage", "status", "wall_s", "key", "metrics"], &rows)
    );
    Ok(0)
}

fn cmd_diff(
    cache_dir: &Path,
    a: &str,
    b: &str,
    pipeline: Option<&Path>,
    json: bool,
) -> Result<i32, String> {
    use crate::diff::{diff, render, Side};
    let cache = open_cache(cache_dir)?;
    let side = |which: &str| -> Result<Side, String> {
        match (record::find_run(&cache, which), pipeline) {
            (Ok(run), _) => Ok(Side::from_run(&cache, &run)),
            (Err(_), Some(p)) => Side::from_revision(&cache, p, which),
            (Err(e), None) => Err(format!(
                "{e}\n  hint: to compare git revisions of a pipeline, add `--pipeline FILE`"
            )),
        }
    };
    let d = diff(&side(a)?, &side(b)?);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&d));
    }
    Ok(0)
}

fn cmd_verify(cache_dir: &Path, json: bool) -> Result<i32, String> {
    let cache = open_cache(cache_dir)?;
    let report = crate::cache::verify::verify(&cache).map_err(|e| e.to_string())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        for p in &report.problems {
            println!(
                "CORRUPT  {}\n         {}\n         affects: {}",
                p.path,
                p.what,
                p.stages.join(", ")
            );
        }
        println!(
            "{} entries, {} objects ({} bytes) checked: {} problem(s)",
            report.entries,
            report.objects,
            report.bytes,
            report.problems.len()
        );
        if !report.problems.is_empty() {
            println!("fix: re-run the affected stages with `hcpipe run PIPELINE --force STAGE` (their corrupt objects are replaced)");
        }
    }
    Ok(if report.problems.is_empty() { 0 } else { 1 })
}

fn cmd_gc(cache_dir: &Path, keep_last: Option<usize>) -> Result<i32, String> {
    let cache = open_cache(cache_dir)?;
    let r = crate::record::gc::gc(&cache, keep_last).map_err(|e| e.to_string())?;
    println!(
        "gc: dropped {} run record(s), {} entr{}, {} object(s); freed {} bytes",
        r.runs_dropped,
        r.entries_dropped,
        if r.entries_dropped == 1 { "y" } else { "ies" },
        r.objects_dropped,
        r.bytes_freed
    );
    Ok(0)
}

/// Run one stage from a job file, and leave its outcome in the result file
/// beside it (see `exec::slurm::result_path_for`): the runner reads that,
/// not the exit code, so it also learns why a job failed.
fn cmd_exec(job_file: &Path) -> Result<i32, String> {
    let stage = |job: Option<&crate::exec::job::ExecJob>| {
        job.map(|j| j.job.stage.clone()).unwrap_or_default()
    };
    let failed = |job: Option<&crate::exec::job::ExecJob>, message: String| {
        let result = JobResult {
            stage: stage(job),
            key: job.map(|j| j.job.key.clone()),
            status: None,
            failure: Some(crate::outcome::Failure {
                message: message.clone(),
                log_tail: String::new(),
                log: None,
            }),
        };
        if let Err(e) = crate::exec::slurm::write_result(job_file, &result) {
            eprintln!("error: {e}");
        }
        message
    };
    let job: crate::exec::job::ExecJob = std::fs::read(job_file)
        .map_err(|e| format!("cannot read job file {}: {e}", job_file.display()))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "job file {} is not a valid hcpipe job (written by another hcpipe version?): {e}",
                    job_file.display()
                )
            })
        })
        .map_err(|m| failed(None, m))?;
    let cache = open_cache(&job.cache).map_err(|m| failed(Some(&job), m))?;
    let _use = cache
        .use_lock()
        .map_err(|e| failed(Some(&job), e.to_string()))?;
    let stat = std::sync::Mutex::new(StatCache::load(cache.stat_cache_path()));
    let outcome = crate::exec::job::run_job(&cache, &job.job, &stat, None);
    let result = match &outcome {
        Ok((status, entry)) => JobResult {
            stage: job.job.stage.clone(),
            key: Some(entry.key.clone()),
            status: Some(*status),
            failure: None,
        },
        Err(f) => JobResult {
            stage: job.job.stage.clone(),
            key: Some(job.job.key.clone()),
            status: None,
            failure: Some(f.clone()),
        },
    };
    match &outcome {
        Ok((status, entry)) => println!(
            "{}",
            serde_json::json!({"stage": job.job.stage, "key": entry.key, "status": status.as_str(), "wall_s": entry.wall_s})
        ),
        Err(f) => {
            eprintln!("error: stage `{}` failed: {}", job.job.stage, f.message);
            if !f.log_tail.is_empty() {
                eprintln!("{}", f.log_tail);
            }
        }
    }
    crate::exec::slurm::write_result(job_file, &result)?;
    Ok(if outcome.is_ok() { 0 } else { 1 })
}
