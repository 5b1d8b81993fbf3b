//! The command line: parsing (clap, one `Args` struct per subcommand) and
//! printing. What a command does lives next to what it is about: `run` in
//! [`crate::run`], `status` in `record::fresh`, `show`'s lookups in `record`,
//! `diff` in `diff`, `verify` in `cache`, `gc` in `record`, `exec` in
//! `exec::job_file`. Each command returns `Result<(), Error>`; `main` prints
//! the error and exits with its [`Error::exit_code`].

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::cache::statcache::StatCache;
use crate::cache::Cache;
use crate::dag::render::{render, DagFormat};
use crate::dag::Dag;
use crate::error::Error;
use crate::record::fresh::Freshness;
use crate::record::{self, StageStatus};
use crate::run::{self, ExecutorKind, PlannedRun};
use crate::spec::load_pipeline;
use crate::ui::table;

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

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: every stage whose key is not cached, independent branches at once.
    Run(RunArgs),
    /// Per stage: fresh, stale (and why), or never run.
    Status(StatusArgs),
    /// Print the stage graph.
    Dag(DagArgs),
    /// List runs; show one run; or a pipeline stage's newest result (key, path, metrics).
    Show(ShowArgs),
    /// Compare two runs (ids) or two git revisions of a pipeline: params, stage keys (and why), metrics.
    Diff(DiffArgs),
    /// Re-hash every cached object and report corruption, with the stages affected.
    Verify(VerifyArgs),
    /// Delete cache entries and objects no kept run references (`--remote`: on the remote cache).
    Gc(GcArgs),
    /// Upload results to the remote cache: a pipeline's cached stages (or these STAGEs), or every entry.
    Push(PushArgs),
    /// Download a pipeline's results (or these STAGEs' and what they need) from the remote cache; runs nothing.
    Pull(PullArgs),
    /// List the built-in ops.
    Ops,
    /// Print a shell completion script: `hcpipe completions bash > ~/.local/share/bash-completion/completions/hcpipe`.
    Completions(CompletionsArgs),
    /// Run one stage from a job file (used by the Slurm executor).
    #[command(hide = true)]
    Exec(ExecArgs),
    /// A pipeline's stage names, one per line (base names, then members): for shell completion.
    #[command(hide = true)]
    Stages(StagesArgs),
}

#[derive(Args)]
struct CompletionsArgs {
    shell: clap_complete::Shell,
}

#[derive(Args)]
struct StagesArgs {
    pipeline: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    pipeline: PathBuf,
    /// Run only these stages and what they need (a stage, a matrix member, or a matrix stage's
    /// base name for all its members); default: every stage.
    #[arg(value_name = "STAGE")]
    targets: Vec<String>,
    /// Stages at once (default: the number of cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Override a pipeline param: --set lr=0.001 (repeatable). The value keeps the type of the
    /// param's default; `--set k=str:007` forces a string.
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
    /// After a successful run, push its stages' results to the remote cache.
    #[arg(long)]
    push: bool,
    /// After the first failure, start no new stage: the running ones finish, the rest are skipped.
    #[arg(long, conflicts_with = "keep_going")]
    fail_fast: bool,
    /// Independent branches run to the end when a stage fails (the default; `make -k`).
    #[arg(long, short = 'k')]
    keep_going: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Where the remote cache is (`run`, `push`, `pull`).
#[derive(Args)]
struct RemoteArgs {
    /// The remote cache shared by machines: s3://BUCKET/PREFIX (credentials from the standard
    /// AWS environment or ~/.aws), or file:///PATH.
    #[arg(long, env = "HCPIPE_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// The S3 endpoint of a self-hosted server, e.g. http://127.0.0.1:9000 (default: $AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    remote_endpoint: Option<String>,
}

impl RemoteArgs {
    fn config(&self) -> Option<crate::remote::RemoteConfig> {
        let url = self.remote.as_deref().filter(|u| !u.is_empty())?;
        Some(crate::remote::RemoteConfig {
            url: url.to_string(),
            endpoint: self.remote_endpoint.clone(),
        })
    }

    /// The remote, opened, when one is configured.
    fn open(&self) -> Result<Option<crate::remote::Remote>, Error> {
        match self.config() {
            Some(config) => Ok(Some(crate::remote::Remote::open(&config)?)),
            None => Ok(None),
        }
    }

    fn require(&self, what: &str) -> Result<crate::remote::Remote, Error> {
        self.open()?.ok_or_else(|| {
            Error::Usage(format!(
                "{what} needs a remote cache: pass `--remote s3://BUCKET/PREFIX` or set $HCPIPE_REMOTE"
            ))
        })
    }
}

#[derive(Args)]
struct PushArgs {
    /// A pipeline file: push its stages' current results (default: every entry of the local cache).
    pipeline: Option<PathBuf>,
    /// Only these stages and what they need.
    #[arg(value_name = "STAGE")]
    targets: Vec<String>,
    #[arg(long = "set", value_name = "K=V")]
    set: Vec<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Args)]
struct PullArgs {
    pipeline: PathBuf,
    /// Only these stages and what they need.
    #[arg(value_name = "STAGE")]
    targets: Vec<String>,
    #[arg(long = "set", value_name = "K=V")]
    set: Vec<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// `verify --remote [URL]` and `gc --remote [URL]`: the remote cache instead of the local one.
#[derive(Args)]
struct RemoteTarget {
    /// Work on the remote cache: URL, or $HCPIPE_REMOTE when none is given.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    remote: Option<String>,
    /// The S3 endpoint of a self-hosted server (default: $AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    remote_endpoint: Option<String>,
}

impl RemoteTarget {
    fn open(&self, what: &str) -> Result<Option<crate::remote::Remote>, Error> {
        let Some(given) = &self.remote else {
            return Ok(None);
        };
        let url = if given.is_empty() {
            std::env::var("HCPIPE_REMOTE").unwrap_or_default()
        } else {
            given.clone()
        };
        RemoteArgs {
            remote: Some(url),
            remote_endpoint: self.remote_endpoint.clone(),
        }
        .require(what)
        .map(Some)
    }
}

#[derive(Args)]
struct StatusArgs {
    pipeline: PathBuf,
    /// Only these stages and what they need.
    #[arg(value_name = "STAGE")]
    targets: Vec<String>,
    /// Override a pipeline param, as `run --set` does.
    #[arg(long = "set", value_name = "K=V")]
    set: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DagArgs {
    pipeline: PathBuf,
    /// Only these stages and what they need.
    #[arg(value_name = "STAGE")]
    targets: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: DagFormat,
}

#[derive(Args)]
struct ShowArgs {
    /// A run id (or prefix), or a pipeline file.
    target: Option<String>,
    /// With a pipeline: the stage to show.
    stage: Option<String>,
    /// With a pipeline: show the result for these param overrides, as `run --set` made it.
    #[arg(long = "set", value_name = "K=V")]
    set: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DiffArgs {
    a: String,
    b: String,
    /// The pipeline file whose git revisions A and B are (needed when A or B is not a run id).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    remote: RemoteTarget,
}

#[derive(Args)]
struct GcArgs {
    /// Keep only the newest N run records (and what they reference); with --remote: the newest
    /// N entries of each stage (and the objects they use).
    #[arg(long)]
    keep_last: Option<usize>,
    #[command(flatten)]
    remote: RemoteTarget,
    /// With --remote: delete what the listing shows (without it, gc --remote only lists).
    #[arg(long)]
    yes: bool,
}

#[derive(Args)]
struct ExecArgs {
    #[arg(long)]
    job: PathBuf,
}

/// Parse the command line and run the command. `--help` and `--version`
/// print and succeed; a command line that does not parse is [`Error::Args`].
pub fn main() -> Result<(), Error> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(Error::Args(e)),
    };
    init_logging(cli.verbose);
    // Commands that only print end quietly when their reader goes away
    // (`hcpipe show | head`), as `cat` does. `run` keeps ignoring SIGPIPE:
    // a closed pipe must not stop a run, so its output ignores write errors.
    let runs_stages = match &cli.command {
        Command::Run(args) => !args.dry_run,
        Command::Exec(_) => true,
        _ => false,
    };
    if !runs_stages {
        // SAFETY: setting a signal's disposition to the default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let cache = cli.cache.as_path();
    match cli.command {
        Command::Run(args) => cmd_run(cache, args),
        Command::Status(args) => cmd_status(cache, args),
        Command::Dag(args) => {
            let dag = load_dag(&args.pipeline, &[])?
                .restrict(&args.targets, &args.pipeline)
                .map_err(Error::Usage)?;
            print!("{}", render(&dag, args.format));
            Ok(())
        }
        Command::Show(args) => cmd_show(cache, args),
        Command::Diff(args) => cmd_diff(cache, args),
        Command::Verify(args) => cmd_verify(cache, args),
        Command::Gc(args) => cmd_gc(cache, args),
        Command::Push(args) => cmd_push(cache, args),
        Command::Pull(args) => cmd_pull(cache, args),
        Command::Ops => {
            cmd_ops();
            Ok(())
        }
        Command::Exec(args) => cmd_exec(&args.job),
        Command::Completions(args) => {
            print_completions(args.shell);
            Ok(())
        }
        Command::Stages(args) => {
            let dag = load_dag(&args.pipeline, &[])?;
            let mut names: Vec<&str> = Vec::new();
            for s in &dag.pipeline.stages {
                if *s.base != *s.name && !names.contains(&&*s.base) {
                    names.push(&s.base);
                }
            }
            names.extend(dag.pipeline.stages.iter().map(|s| s.name.as_str()));
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
    }
}

/// clap_complete's script for `shell`; for bash, wrapped so that a stage
/// argument (`run|status|dag PIPELINE STAGE...`, `show PIPELINE STAGE`,
/// `--force STAGE`) completes to the named
/// pipeline's stages (`hcpipe stages PIPELINE`, a hidden command).
fn print_completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    let mut out = std::io::stdout();
    clap_complete::generate(shell, &mut Cli::command(), "hcpipe", &mut out);
    if shell == clap_complete::Shell::Bash {
        print!("{}", BASH_STAGES);
    }
}

const BASH_STAGES: &str = r#"
# Stage names for `hcpipe run|status|dag|show PIPELINE <TAB>` and `--force <TAB>`.
_hcpipe_stages() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    local sub="${COMP_WORDS[1]}" pipeline="${COMP_WORDS[2]}"
    if [[ -f "$pipeline" && "$cur" != -* ]] &&
       { [[ "$prev" == --force ]] || { [[ "$sub" == show && $COMP_CWORD -eq 3 ]]; } ||
         { [[ "$sub" =~ ^(run|status|dag)$ && $COMP_CWORD -ge 3 && "$prev" != --* ]]; }; }; then
        local IFS=$'
'
        COMPREPLY=( $(compgen -W "$(hcpipe stages "$pipeline" 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _hcpipe "$@"
}
complete -F _hcpipe_stages -o bashdefault -o default hcpipe
"#;

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

/// `--set K=V` values as pairs.
fn parse_sets(set: &[String]) -> Result<Vec<(String, String)>, Error> {
    set.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--set `{s}`: write it as KEY=VALUE, e.g. --set lr=0.001"
                    ))
                })
        })
        .collect()
}

fn load_dag(pipeline: &Path, set: &[String]) -> Result<Dag, Error> {
    let start = std::time::Instant::now();
    let spec = load_pipeline(pipeline, &parse_sets(set)?)?;
    let dag = Dag::build(spec)?;
    tracing::debug!(
        "loaded {} stage(s) in {:.0?}; {}",
        dag.len(),
        start.elapsed(),
        crate::run::memory_note()
    );
    Ok(dag)
}

fn cmd_run(cache_dir: &Path, args: RunArgs) -> Result<(), Error> {
    if !args.slurm_opt.is_empty() && args.executor != ExecutorKind::Slurm {
        return Err(Error::Usage(
            "--slurm-opt only applies with `--executor slurm`".into(),
        ));
    }
    let dag = load_dag(&args.pipeline, &args.set)?
        .restrict(&args.targets, &args.pipeline)
        .map_err(Error::Usage)?;
    let planned = PlannedRun::new(dag, &args.pipeline, cache_dir, args.force, !args.dry_run)?;
    if args.dry_run {
        print_dry_run(&planned.dry_run(), args.json);
        return Ok(());
    }
    // Opened (and its runtime started) only when configured.
    let remote = if args.push {
        Some(args.remote.require("--push")?)
    } else {
        args.remote.open()?
    };
    let record = planned.execute(run::Settings {
        jobs: args.jobs,
        executor: args.executor,
        slurm_opt: args.slurm_opt,
        json: args.json,
        fail_fast: args.fail_fast,
        remote: remote.clone(),
        remote_config: args.remote.config(),
    })?;
    if let (true, Some(remote)) = (args.push, remote) {
        let cache = Cache::open(cache_dir)?;
        let entries: Vec<_> = record
            .stages
            .iter()
            .filter_map(|s| cache.entry(&s.key).ok().flatten())
            .collect();
        let t = crate::remote::sync::push_entries(&remote, &cache, &entries)?;
        print_transfer("push", remote.url(), &t, args.json);
    }
    Ok(())
}

/// The last line of `push`/`pull`: what moved, and what was there already.
fn print_transfer(what: &str, url: &str, t: &crate::remote::sync::Transfer, json: bool) {
    if json {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        v["event"] = what.into();
        v["remote"] = url.into();
        println!("{v}");
    } else {
        eprintln!(
            "{what} {url}: {} entr{} and {} object(s) ({}) {}; {} entr{} and {} object(s) there already",
            t.entries,
            if t.entries == 1 { "y" } else { "ies" },
            t.objects,
            human_bytes(t.bytes),
            if what == "push" { "uploaded" } else { "downloaded" },
            t.entries_present,
            if t.entries_present == 1 { "y" } else { "ies" },
            t.objects_present,
        );
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn print_stage_syncs(stages: &[crate::remote::sync::StageSync], json: bool) {
    for s in stages {
        if json {
            println!(
                "{}",
                serde_json::json!({"stage": s.stage, "key": s.key, "status": s.status})
            );
        } else {
            let key = s.key.as_ref().map_or("", |k| k.short());
            println!("{:<8}{}  {key}", s.status, s.stage);
        }
    }
}

fn cmd_push(cache_dir: &Path, args: PushArgs) -> Result<(), Error> {
    let remote = args.remote.require("push")?;
    let cache = Cache::open(cache_dir)?;
    let _use = cache.use_lock()?;
    let t = match &args.pipeline {
        Some(pipeline) => {
            let dag = load_dag(pipeline, &args.set)?
                .restrict(&args.targets, pipeline)
                .map_err(Error::Usage)?;
            let mut stat = StatCache::load(cache.stat_cache_path());
            let (stages, t) = crate::remote::sync::push_pipeline(&remote, &dag, &cache, &mut stat)?;
            print_stage_syncs(&stages, args.json);
            t
        }
        None => {
            if !args.targets.is_empty() || !args.set.is_empty() {
                return Err(Error::Usage(
                    "push: STAGE and --set need a pipeline file: `hcpipe push PIPELINE STAGE...`"
                        .into(),
                ));
            }
            let mut entries = Vec::new();
            for e in cache.entries()? {
                entries.push(e?);
            }
            crate::remote::sync::push_entries(&remote, &cache, &entries)?
        }
    };
    print_transfer("push", remote.url(), &t, args.json);
    Ok(())
}

fn cmd_pull(cache_dir: &Path, args: PullArgs) -> Result<(), Error> {
    let remote = args.remote.require("pull")?;
    let dag = load_dag(&args.pipeline, &args.set)?
        .restrict(&args.targets, &args.pipeline)
        .map_err(Error::Usage)?;
    let cache = Cache::open(cache_dir)?;
    let _use = cache.use_lock()?;
    let mut stat = StatCache::load(cache.stat_cache_path());
    let (stages, t) = crate::remote::sync::pull_pipeline(&remote, &dag, &cache, &mut stat)?;
    let _ = stat.save();
    print_stage_syncs(&stages, args.json);
    print_transfer("pull", remote.url(), &t, args.json);
    Ok(())
}

fn print_dry_run(stages: &[run::DryRun], json: bool) {
    for s in stages {
        let name = s.stage;
        if json {
            let status = match &s.freshness {
                _ if s.forced => "would_run",
                Freshness::Fresh => "cached",
                Freshness::AfterUpstream(_) => "after_upstream",
                _ => "would_run",
            };
            println!(
                "{}",
                serde_json::json!({"stage": name, "key": s.key, "status": status})
            );
            continue;
        }
        match &s.freshness {
            _ if s.forced => println!("would run  {name}  (forced)"),
            Freshness::Fresh => println!("cached     {name}"),
            Freshness::NeverRun => println!("would run  {name}  (never run)"),
            Freshness::Stale(why) => {
                println!("would run  {name}  ({})", crate::cache::stale::join(why))
            }
            Freshness::AfterUpstream(up) => println!(
                "maybe      {name}  (upstream `{up}` runs first; cached if its output is unchanged)"
            ),
        }
    }
}

fn cmd_status(cache_dir: &Path, args: StatusArgs) -> Result<(), Error> {
    let dag = load_dag(&args.pipeline, &args.set)?
        .restrict(&args.targets, &args.pipeline)
        .map_err(Error::Usage)?;
    let cache = Cache::open(cache_dir)?;
    let (plan, fresh) = crate::record::fresh::status(&dag, &cache)?;
    let mut rows = Vec::new();
    for &id in dag.topo_order() {
        let s = dag.stage(id);
        let f = &fresh[id.0];
        if args.json {
            println!(
                "{}",
                serde_json::json!({"stage": s.name, "key": plan.key(id), "status": f.label(), "why": f.why()})
            );
        } else {
            rows.push(vec![s.name.clone(), f.label().to_string(), f.why()]);
        }
    }
    if !args.json {
        print!("{}", table::render(&["stage", "status", "why"], &rows));
    }
    Ok(())
}

fn cmd_show(cache_dir: &Path, args: ShowArgs) -> Result<(), Error> {
    let cache = Cache::open(cache_dir)?;
    let is_pipeline = args
        .target
        .as_deref()
        .is_some_and(|t| Path::new(t).is_file());
    if !args.set.is_empty() && !is_pipeline {
        return Err(Error::Usage(
            "--set applies to `show PIPELINE [STAGE]` only (a run's params are in its record)"
                .into(),
        ));
    }
    match args.target {
        None => show_runs(&cache, args.json),
        Some(target) if Path::new(&target).is_file() => {
            let dag = load_dag(Path::new(&target), &args.set)?;
            show_pipeline(
                &cache,
                &dag,
                Path::new(&target),
                args.stage.as_deref(),
                args.json,
            )
        }
        Some(target) => show_run(&cache, &target, args.json),
    }
}

/// `show`: every run, oldest first, and where the newest report is.
fn show_runs(cache: &Cache, json: bool) -> Result<(), Error> {
    let runs = record::list_summaries(cache);
    if json {
        for r in &runs {
            println!(
                "{}",
                serde_json::json!({"id": r.id, "pipeline": r.pipeline, "status": r.status, "started": r.started})
            );
        }
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs in {}", cache.root.display());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.pipeline.clone(),
                r.status.to_string(),
                format!(
                    "{} ran, {} cached, {}{} failed",
                    r.count(StageStatus::Ran),
                    r.count(StageStatus::Cached),
                    match r.count(StageStatus::Pulled) {
                        0 => String::new(),
                        n => format!("{n} pulled, "),
                    },
                    r.count(StageStatus::Failed)
                ),
                r.started.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["run", "pipeline", "status", "stages", "started"], &rows)
    );
    if let Some(path) = record::newest_report(cache, &runs) {
        println!("newest report: {}", path.display());
    }
    Ok(())
}

/// `show PIPELINE [STAGE]`: each stage's current result, else its newest one.
fn show_pipeline(
    cache: &Cache,
    dag: &Dag,
    pipeline: &Path,
    stage: Option<&str>,
    json: bool,
) -> Result<(), Error> {
    let mut stat = StatCache::load(cache.stat_cache_path());
    let plan = crate::plan::plan(dag, cache, &mut stat, &|_| false)?;
    let ids: Vec<_> = match stage {
        Some(name) => dag.select(name, pipeline).map_err(Error::Usage)?,
        None => dag.topo_order().to_vec(),
    };
    let mut results = Vec::new();
    for id in ids {
        let s = dag.stage(id);
        // The current key's result, else the newest run's result for this stage.
        let entry = match plan.entry(cache, dag, id)? {
            Some(e) => Some(e),
            None => record::newest_entry(cache, &dag.pipeline.path, &s.name),
        };
        let Some(entry) = entry else {
            if stage.is_some() {
                return Err(Error::Usage(format!(
                    "stage `{}` has no result in {} yet; run the pipeline first",
                    s.name,
                    cache.root.display()
                )));
            }
            println!("{}  (no result yet)", s.name);
            continue;
        };
        let path = cache.ensure_artifact(&entry, false)?;
        let current = Some(&entry.key) == plan.key(id);
        if json {
            println!(
                "{}",
                serde_json::json!({"stage": s.name, "key": entry.key, "path": path, "metrics": entry.metrics, "current": current})
            );
            continue;
        }
        let stale = if current {
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
            println!("  metrics:");
            print!("{}", crate::ui::metrics::indented(&entry.metrics, 4));
        }
        results.push((s.name.clone(), entry.metrics.clone(), path));
    }
    // After the whole pipeline: the classifiers' results side by side and
    // where the report is, what a reader of `make demo` looks for.
    if stage.is_none() && !json {
        let table = crate::ui::metrics::results_table(&results);
        if !table.is_empty() {
            println!("\n{table}");
        }
        if let Some((name, _, path)) = results
            .iter()
            .find(|(_, _, p)| p.join("report.html").is_file())
        {
            println!("report ({name}): {}", path.join("report.html").display());
        }
    }
    Ok(())
}

/// `show RUN`: one run's stages, keys, wall times and metrics.
fn show_run(cache: &Cache, id: &str, json: bool) -> Result<(), Error> {
    let run = record::find_run(cache, id).map_err(Error::Usage)?;
    if json {
        println!("{}", pretty(&run)?);
        return Ok(());
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
    Ok(())
}

fn cmd_diff(cache_dir: &Path, args: DiffArgs) -> Result<(), Error> {
    use crate::diff::{diff, render, Side};
    let cache = Cache::open(cache_dir)?;
    let pipeline = args.pipeline.as_deref();
    let d = diff(
        &Side::resolve(&cache, &args.a, pipeline)?,
        &Side::resolve(&cache, &args.b, pipeline)?,
    );
    if args.json {
        println!("{}", pretty(&d)?);
    } else {
        print!("{}", render(&d));
    }
    Ok(())
}

fn cmd_verify(cache_dir: &Path, args: VerifyArgs) -> Result<(), Error> {
    if let Some(remote) = args.remote.open("verify --remote")? {
        return verify_remote(&remote, args.json);
    }
    let cache = Cache::open(cache_dir)?;
    let report = crate::cache::verify::verify(&cache)?;
    if args.json {
        println!("{}", pretty(&report)?);
    }
    let problems: Vec<(String, &str, &[String])> = report
        .problems
        .iter()
        .map(|p| (p.path.clone(), p.what.as_str(), p.stages.as_slice()))
        .collect();
    checked(
        &VerifyTotals {
            place: cache.root.display().to_string(),
            counts_prefix: String::new(),
            entries: report.entries,
            objects: report.objects,
            bytes: report.bytes,
            fix: "re-run the affected stages with `hcpipe run PIPELINE --force STAGE` (their corrupt objects are replaced)",
        },
        &problems,
        args.json,
    )
}

/// `verify --remote`: every remote entry checked, every object it uses re-hashed.
fn verify_remote(remote: &crate::remote::Remote, json: bool) -> Result<(), Error> {
    let report = crate::remote::sync::verify(remote)?;
    if json {
        println!("{}", pretty(&report)?);
    }
    let problems: Vec<(String, &str, &[String])> = report
        .problems
        .iter()
        .map(|(path, what, stages)| {
            (
                format!("{}/{path}", remote.url()),
                what.as_str(),
                stages.as_slice(),
            )
        })
        .collect();
    checked(
        &VerifyTotals {
            place: remote.url().to_string(),
            counts_prefix: format!("{}: ", remote.url()),
            entries: report.entries,
            objects: report.objects,
            bytes: report.bytes,
            fix: "push the affected stages again from a cache where `hcpipe verify` passes (a damaged object is replaced; a bad entry must be deleted from the remote first)",
        },
        &problems,
        json,
    )
}

/// What `verify` checked in one place (the local cache or a remote).
struct VerifyTotals {
    /// Where, for the failure message.
    place: String,
    /// Before the counts line (the remote's URL).
    counts_prefix: String,
    entries: usize,
    objects: usize,
    bytes: u64,
    /// What to do about problems there.
    fix: &'static str,
}

/// `verify`'s text report (unless `json`, printed by the caller) and its
/// outcome: each problem as (path shown, what, stages affected).
fn checked(
    totals: &VerifyTotals,
    problems: &[(String, &str, &[String])],
    json: bool,
) -> Result<(), Error> {
    if !json {
        for (path, what, stages) in problems {
            println!(
                "CORRUPT  {path}\n         {what}\n         affects: {}",
                stages.join(", ")
            );
        }
        println!(
            "{}{} entries, {} objects ({} bytes) checked: {} problem(s)",
            totals.counts_prefix,
            totals.entries,
            totals.objects,
            totals.bytes,
            problems.len()
        );
        if !problems.is_empty() {
            println!("fix: {}", totals.fix);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckFailed(format!(
            "verify: {} problem(s) in {}",
            problems.len(),
            totals.place
        )))
    }
}

/// `gc --remote --keep-last N`: list what would go; delete it with `--yes`.
fn gc_remote(remote: &crate::remote::Remote, args: &GcArgs) -> Result<(), Error> {
    let Some(keep) = args.keep_last else {
        return Err(Error::Usage(
            "gc --remote deletes only with a bound: give --keep-last N (the newest N results of each stage stay)".into(),
        ));
    };
    if keep == 0 {
        return Err(Error::Usage(
            "gc --remote --keep-last 0 would empty the remote; give at least 1".into(),
        ));
    }
    let r = crate::remote::sync::gc(remote, keep, args.yes)?;
    let verb = if args.yes { "deleted" } else { "would delete" };
    for (path, stage) in &r.entries {
        println!("{verb}  {path}  ({stage})");
    }
    for path in &r.objects {
        println!("{verb}  {path}");
    }
    println!(
        "gc --remote {}: {verb} {} entr{} and {} object(s) ({} bytes); kept {} entr{}{}",
        remote.url(),
        r.entries.len(),
        if r.entries.len() == 1 { "y" } else { "ies" },
        r.objects.len(),
        r.bytes,
        r.entries_kept,
        if r.entries_kept == 1 { "y" } else { "ies" },
        if r.objects_young > 0 {
            format!(
                "; {} unreferenced object(s) younger than an hour stay (a push may be in flight)",
                r.objects_young
            )
        } else {
            String::new()
        }
    );
    let nothing = r.entries.is_empty() && r.objects.is_empty();
    if !args.yes && !nothing {
        println!("(a listing only: run again with --yes to delete)");
    }
    Ok(())
}

fn cmd_gc(cache_dir: &Path, args: GcArgs) -> Result<(), Error> {
    if let Some(remote) = args.remote.open("gc --remote")? {
        return gc_remote(&remote, &args);
    }
    if args.yes {
        return Err(Error::Usage(
            "--yes applies to `gc --remote` (a local gc needs no confirmation)".into(),
        ));
    }
    let cache = Cache::open(cache_dir)?;
    let r = crate::record::gc::gc(&cache, args.keep_last)?;
    println!(
        "gc: dropped {} run record(s), {} entr{}, {} object(s), {} stale partial download(s); freed {} bytes",
        r.runs_dropped,
        r.entries_dropped,
        if r.entries_dropped == 1 { "y" } else { "ies" },
        r.objects_dropped,
        r.downloads_dropped,
        r.bytes_freed
    );
    Ok(())
}

fn cmd_ops() {
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
}

/// `exec --job FILE`: one JSON line for the stage that finished (the job's
/// outcome itself is in its result file).
fn cmd_exec(job_file: &Path) -> Result<(), Error> {
    let done = crate::exec::job_file::run_job_file(job_file)?;
    println!(
        "{}",
        serde_json::json!({"stage": done.stage, "key": done.entry.key, "status": done.status.as_str(), "wall_s": done.entry.wall_s})
    );
    Ok(())
}

fn pretty<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Internal(e.to_string()))
}
