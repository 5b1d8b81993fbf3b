//! One stage execution, the same code for every executor: the local
//! executor calls [`run_job`] on a thread; a Slurm job calls it through
//! `hcpipe exec --job FILE` on a compute node.
//!
//! Steps: take the stage lock → if another run finished the key meanwhile,
//! reuse it → run in a staging folder → commit to the cache. The lock makes
//! two runners on one cache execute each key once.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use std::sync::Mutex;

use super::torch_server::{JobError, TorchServer};
use crate::artifact;
use crate::cache::statcache::StatCache;
use crate::cache::store::{EntryMeta, Staging};
use crate::cache::{Cache, KeyInputs, StageKey};
use crate::ops::{self, Input, JobSpec, Metrics, OpCtx, OpKind, Params};
use crate::outcome::{last_lines, Failure, Outcome, PROGRESS_ENV};
use crate::record::StageStatus;
use crate::spec::cmd_text::expand_cmd;

/// Everything needed to run one stage, resolved and serialisable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub stage: String,
    pub pipeline: String,
    pub key: StageKey,
    pub key_inputs: KeyInputs,
    pub work: Work,
    pub params: Params,
    /// Upstream artifacts, in `needs` order.
    pub inputs: Vec<Input>,
    /// Each input's matrix values (empty for a plain stage), for `{in.X:members}`.
    #[serde(default)]
    pub input_matrix: Vec<std::collections::BTreeMap<String, serde_json::Value>>,
    /// The pipeline's folder: `cmd` stages run here.
    pub workdir: PathBuf,
    pub outs: Vec<String>,
    /// `outs: []`: an empty `{out}` is this cmd's expected result, not a mistake.
    #[serde(default)]
    pub empty_out_ok: bool,
    pub threads: usize,
    /// Run even when the key is cached (`--force`).
    pub force: bool,
    /// The file the stage reports its progress to (`$HCPIPE_PROGRESS`, see
    /// `exec::progress`); `None` (an older job file, `hcpipe exec` alone)
    /// gives a cmd stage `/dev/null`. Not in the key.
    #[serde(default)]
    pub progress: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Work {
    Cmd(String),
    Op(String),
}

/// Run `job` against `cache`, or reuse what another run finished. A torch
/// stage runs in `torch`, the run's shared torch worker, when there is one.
///
/// The stage's deps are hashed again (through `stat`) after it ran: one
/// edited meanwhile would file a result made from the new bytes under the
/// old bytes' key, so such a result is refused, never committed.
pub fn run_job(
    cache: &Cache,
    job: &Job,
    stat: &Mutex<StatCache>,
    torch: Option<&TorchServer>,
) -> Outcome {
    let _lock = cache
        .lock_stage(&job.key)
        .map_err(|e| Failure::msg(e.to_string()))?;
    if !job.force {
        if let Some(entry) = cache
            .entry(&job.key)
            .map_err(|e| Failure::msg(e.to_string()))?
        {
            return Ok((StageStatus::Cached, entry));
        }
    }
    let staging = cache
        .staging(&job.key)
        .map_err(|e| Failure::msg(e.to_string()))?;
    // The log lives outside the staging folder so it outlasts a failed attempt.
    let log_path = cache.log_path(&job.key);
    let started = Instant::now();
    // Partial downloads live here across attempts (a kill, a lost
    // connection): the next run resumes them instead of starting over.
    let scratch = cache.root.join("downloads");
    if let Some(progress) = &job.progress {
        super::progress::prepare(progress);
    }
    let result = execute(job, &staging, &log_path, torch, &scratch);
    if let Some(progress) = &job.progress {
        super::progress::note_unparsed(progress, &log_path);
    }
    let wall_s = started.elapsed().as_secs_f64();
    let metrics = result.map_err(|mut f| {
        if log_path.exists() {
            f.log = Some(log_path.clone());
        }
        f
    })?;
    for out in &job.outs {
        if !staging.out().join(out).exists() {
            return Err(Failure::msg(format!(
                "stage `{}` promised `outs: [{out}]` but did not write {{out}}/{out}",
                job.stage
            )));
        }
    }
    if !job.empty_out_ok {
        refuse_empty(&job.stage, &job.work, &staging.out())?;
    }
    deps_unchanged(job, stat)?;
    let meta = EntryMeta {
        stage: job.stage.clone(),
        pipeline: job.pipeline.clone(),
        inputs: job.key_inputs.clone(),
        metrics,
        wall_s,
    };
    let entry = cache
        .commit(&staging, &job.key, meta)
        .map_err(|e| Failure::msg(format!("storing the result of `{}`: {e}", job.stage)))?;
    Ok((StageStatus::Ran, entry))
}

/// Refuse to commit when a dep no longer hashes as it did when the key was made.
fn deps_unchanged(job: &Job, stat: &Mutex<StatCache>) -> Result<(), Failure> {
    let mut stat = stat
        .lock()
        .map_err(|_| Failure::msg("internal: stat cache lock poisoned (bug, please report)"))?;
    for (dep, before) in &job.key_inputs.deps {
        let now = stat.hash_path(&job.workdir.join(dep)).ok();
        if now.as_deref() != Some(before.as_str()) {
            return Err(Failure::msg(format!(
                "dep `{dep}` of stage `{}` changed while the stage ran, so its result was not \
                 stored (it may have read either version); run again to build it from the dep \
                 as it is now",
                job.stage
            )));
        }
    }
    Ok(())
}

fn execute(
    job: &Job,
    staging: &Staging,
    log: &Path,
    torch: Option<&TorchServer>,
    scratch: &Path,
) -> Result<Metrics, Failure> {
    let out = staging.out();
    match &job.work {
        Work::Cmd(text) => {
            let cmd = expand_cmd(text, &out, &job.inputs, &job.input_matrix);
            let mut command = Command::new("sh");
            command.arg("-c").arg(&cmd).current_dir(&job.workdir);
            // Only variables whose values are in the key (HCPIPE_OUT is `{out}`,
            // the others `plan::cmd_env`): two stages that share a key must
            // not be able to tell each other apart.
            command.env("HCPIPE_OUT", &out).envs(&job.key_inputs.env);
            // Where it may report progress: outside `{out}` and the key (a
            // path that differs from run to run). A stage that writes there
            // must not let the path into its results.
            command.env(PROGRESS_ENV, progress_file(job));
            // Numeric libraries (OpenMP, MKL, OpenBLAS: PyTorch, numpy) start
            // one thread per core by default, so parallel stages would
            // oversubscribe the machine; they get the stage's CPU slots
            // instead, unless the user chose a value in their environment.
            for var in THREAD_VARS {
                if std::env::var_os(var).is_none() {
                    command.env(var, job.threads.to_string());
                }
            }
            spawn_logged(command, log, &format!("cmd of stage `{}`", job.stage))?;
            read_metrics(&out, &job.stage)
        }
        Work::Op(name) => {
            let def = ops::lookup(name).ok_or_else(|| {
                Failure::msg(format!(
                    "unknown op `{name}` (this hcpipe is older than the pipeline?)"
                ))
            })?;
            match def.kind {
                OpKind::Native(f) => {
                    let ctx = OpCtx {
                        stage: &job.stage,
                        params: &job.params,
                        inputs: &job.inputs,
                        out: &out,
                        threads: job.threads,
                        scratch: Some(scratch),
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx)));
                    let metrics = match result {
                        Ok(Ok(m)) => m,
                        Ok(Err(e)) => return Err(Failure::msg(format!("op `{name}`: {e}"))),
                        Err(_) => {
                            return Err(Failure::msg(format!(
                                "op `{name}` crashed (bug, please report)"
                            )))
                        }
                    };
                    // What measures the attempt, not the result, stays out of
                    // the artifact (see ops::VOLATILE_METRICS) but in the entry.
                    let mut artifact_metrics = metrics.clone();
                    artifact_metrics.retain(|k, _| !ops::VOLATILE_METRICS.contains(&k.as_str()));
                    artifact::metrics::write(&out.join(artifact::metrics::FILE), &artifact_metrics)
                        .map_err(|e| Failure::msg(format!("writing metrics.json: {e}")))?;
                    Ok(metrics)
                }
                OpKind::Torch => {
                    let worker = torch_worker().map_err(Failure::msg)?;
                    let spec = JobSpec {
                        op: name.clone(),
                        stage: job.stage.clone(),
                        params: job.params.clone(),
                        inputs: job.inputs.clone(),
                        out: out.clone(),
                        threads: job.threads,
                    };
                    let job_file = staging.root.join("job.json");
                    let bytes = serde_json::to_vec_pretty(&spec)
                        .map_err(|e| Failure::msg(e.to_string()))?;
                    std::fs::write(&job_file, bytes).map_err(|e| {
                        Failure::msg(format!("writing {}: {e}", job_file.display()))
                    })?;
                    let progress = job.progress.as_deref();
                    run_torch_job(
                        &worker, torch, &job_file, progress, staging, log, &job.stage,
                    )?;
                    let mut metrics = read_metrics(&out, &job.stage)?;
                    add_timings(&staging.root, &mut metrics);
                    Ok(metrics)
                }
            }
        }
    }
}

/// Runs a torch stage's job file: in the run's shared torch worker `server`
/// when there is one (every local run unless `HCPIPE_TORCH_SERVER=0`, see
/// torch_server), else in a worker process of its
/// own. After an internal error in the shared worker (concurrent jobs in one
/// process are the newer, less-trodden path) the stage is retried once in a
/// process of its own, with a warning and a note in the stage log.
fn run_torch_job(
    worker: &Path,
    server: Option<&TorchServer>,
    job_file: &Path,
    progress: Option<&Path>,
    staging: &Staging,
    log: &Path,
    stage: &str,
) -> Result<(), Failure> {
    let what = format!("torch worker for stage `{stage}`");
    let mut note = String::new();
    if let Some(server) = server {
        match server.run_job(job_file, progress, &what) {
            Ok(()) => {
                let _ = std::fs::write(log, "");
                return Ok(());
            }
            Err(JobError::Stage(f)) => {
                let _ = std::fs::write(log, format!("{}\n{}\n", f.message, f.log_tail));
                return Err(f);
            }
            Err(JobError::Internal(f)) => {
                eprintln!(
                    "warning: stage `{stage}`: the shared torch worker failed (internal error); \
                     retrying in its own process"
                );
                note = format!(
                    "hcpipe: retrying in a worker process of its own after the run's shared \
                     torch worker failed: {}\n",
                    f.message
                );
                let out = staging.out();
                let _ = std::fs::remove_dir_all(&out);
                std::fs::create_dir_all(&out)
                    .map_err(|e| Failure::msg(format!("recreating {}: {e}", out.display())))?;
            }
        }
    }
    let mut command = Command::new(worker);
    command
        .arg("--job")
        .arg(job_file)
        .current_dir(&staging.root);
    // A retry after the shared worker failed appends from epoch 1 again.
    match progress {
        Some(p) => command.env(PROGRESS_ENV, p),
        None => command.env_remove(PROGRESS_ENV),
    };
    let ran = spawn_logged(command, log, &what);
    if !note.is_empty() {
        let mut text = note.into_bytes();
        text.extend(std::fs::read(log).unwrap_or_default());
        let _ = std::fs::write(log, text);
    }
    ran
}

/// `$HCPIPE_PROGRESS` for a cmd stage: its progress file, or `/dev/null`
/// when nobody reads it, so that `>> "$HCPIPE_PROGRESS"` always works.
fn progress_file(job: &Job) -> &Path {
    job.progress.as_deref().unwrap_or(Path::new("/dev/null"))
}

/// Thread-count variables set from a cmd stage's CPU slots (see [`execute`]).
pub const THREAD_VARS: [&str; 4] = [
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
];

/// Where the torch worker lives: `$HCPIPE_TORCH_WORKER`, else beside this binary.
pub fn torch_worker() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("HCPIPE_TORCH_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the hcpipe binary: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    // `cargo test` binaries live in target/<profile>/deps; the worker is one level up.
    for candidate in [dir.join("hcpipe-torch"), dir.join("../hcpipe-torch")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "this stage runs in the torch worker `hcpipe-torch`, which is not beside {} ; build it with `make build` (it links libtorch) or set HCPIPE_TORCH_WORKER=/path/to/hcpipe-torch",
        exe.display()
    ))
}

/// Bytes of a child's output kept in memory for the error message, so the
/// reason survives even when the log file cannot be written (a full disk).
const TAIL_BYTES: usize = 16 * 1024;

/// The first argument that makes `hcpipe` a stage's launcher (see [`spawn_logged`]).
pub const CHILD_ARG: &str = "__stage-child";

/// `hcpipe __stage-child RUNNER_PID PROGRAM ARGS...` (what [`spawn_logged`]
/// starts): ask to be killed when the runner's thread that started it dies
/// (PR_SET_PDEATHSIG), then become PROGRAM. `None` when this process is not
/// one (the normal command line). Called first thing in `main`.
pub fn stage_child() -> Option<i32> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != CHILD_ARG {
        return None;
    }
    let parent: i32 = args.next()?.to_str()?.parse().ok()?;
    let program = args.next()?;
    // SAFETY: prctl and getppid only read or set this process's own flags.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The runner died before the flag was set: nothing would kill us.
        if libc::getppid() != parent {
            return Some(137);
        }
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!("hcpipe: cannot start {}: {err}", program.to_string_lossy());
    Some(127)
}

/// Run a child with stdout+stderr into `log` (and the last bytes in memory);
/// the child dies with us (PR_SET_PDEATHSIG) and has its own process group,
/// so cancelling reaches the stage's whole tree (a `sh -c` and what it
/// started), not just the shell.
///
/// Setting PDEATHSIG in the child would take a `pre_exec` hook, which makes
/// std `fork` the runner: a copy of its page tables per stage, which grow
/// with the pipeline (fork and the child's exec were a third of the runner's
/// CPU at 5,000 stages, issue 15). Instead the child is spawned without a
/// copy (posix_spawn, a vfork) as `hcpipe __stage-child`, which sets the flag
/// itself and then becomes the command: a constant cost per stage.
fn spawn_logged(command: Command, log: &Path, what: &str) -> Result<(), Failure> {
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| Failure::msg(format!("cannot make a pipe: {e}")))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Failure::msg(e.to_string()))?;
    let mut launcher = Command::new("/proc/self/exe");
    launcher
        .arg(CHILD_ARG)
        .arg(std::process::id().to_string())
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => launcher.env(k, v),
            None => launcher.env_remove(k),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        launcher.current_dir(dir);
    }
    drop(command);
    let mut command = launcher;
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| Failure::msg(format!("cannot start the {what}: {e}")))?;
    let _running = RunningGuard::new(child.id());
    // Our copies of the write end must go, or the read below never sees EOF.
    drop(command);
    let mut file = std::fs::File::create(log).ok();
    let mut tail_buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(f) = file.as_mut() {
                    if f.write_all(&chunk[..n]).is_err() {
                        file = None;
                    }
                }
                tail_buf.extend_from_slice(&chunk[..n]);
                if tail_buf.len() > 2 * TAIL_BYTES {
                    tail_buf.drain(..tail_buf.len() - TAIL_BYTES);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let status = child
        .wait()
        .map_err(|e| Failure::msg(format!("waiting for the {what}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(Failure {
        message: format!("the {what} {how}"),
        log_tail: last_lines(&String::from_utf8_lossy(&tail_buf), 20),
        log: None,
    })
}

fn read_metrics(out: &Path, stage: &str) -> Result<Metrics, Failure> {
    let path = out.join("metrics.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(Metrics::new());
    };
    let (value, non_finite) = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => (v, Vec::new()),
        // Python's `json.dumps` writes NaN and ±Infinity, which JSON lacks: a
        // diverged loss must not fail the stage and discard its outputs.
        Err(e) => non_finite_as_null(&bytes).ok_or_else(|| {
            Failure::msg(format!("stage `{stage}` wrote invalid metrics.json: {e}"))
        })?,
    };
    let serde_json::Value::Object(m) = value else {
        return Err(Failure::msg(format!(
            "stage `{stage}` wrote metrics.json that is not a JSON object"
        )));
    };
    if !non_finite.is_empty() {
        let names: Vec<String> = non_finite
            .iter()
            .map(|(name, v)| format!("`{name}` = {v}"))
            .collect();
        eprintln!(
            "warning: stage `{stage}`: metrics.json has numbers JSON cannot hold ({}); they are stored as null",
            names.join(", ")
        );
    }
    Ok(m)
}

/// The tokens Python's `json.dumps` writes for non-finite floats, longest
/// first (so `-Infinity` is not read as `-` and `Infinity`).
const NON_FINITE: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

/// Stands for a non-finite number while parsing: a string no metric holds
/// (it starts with a NUL).
const NON_FINITE_MARK: &str = "\0hcpipe-non-finite:";

/// Parse JSON that has bare `NaN`, `Infinity` or `-Infinity` tokens, with
/// each as null; returns the value and the (path, token) of each replaced
/// one, or `None` when there were none or the text is invalid anyway.
/// Tokens inside strings are left alone: the scan tracks strings and their
/// escapes, and each token is first replaced by a marker string, so which
/// metric held it is known after parsing.
fn non_finite_as_null(bytes: &[u8]) -> Option<(serde_json::Value, Vec<(String, String)>)> {
    let mut text = Vec::with_capacity(bytes.len() + 64);
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            text.push(c);
            if c == b'\\' {
                if let Some(&next) = bytes.get(i + 1) {
                    text.push(next);
                    i += 1;
                }
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
        } else if let Some(token) = NON_FINITE
            .iter()
            .find(|t| bytes[i..].starts_with(t.as_bytes()))
        {
            // A JSON string (the NUL escaped), parsed back to the marker.
            let mark = serde_json::Value::String(format!("{NON_FINITE_MARK}{token}"));
            text.extend_from_slice(mark.to_string().as_bytes());
            i += token.len();
            continue;
        }
        text.push(c);
        i += 1;
    }
    let mut value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let mut found = Vec::new();
    null_marks(&mut value, String::new(), &mut found);
    (!found.is_empty()).then_some((value, found))
}

/// Replace the marker strings under `value` by null, noting where they were
/// (`loss`, `val.loss`, `history[3]`).
fn null_marks(value: &mut serde_json::Value, at: String, found: &mut Vec<(String, String)>) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Some(token) = s.strip_prefix(NON_FINITE_MARK) {
                found.push((at, token.to_string()));
                *value = Value::Null;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                null_marks(item, format!("{at}[{i}]"), found);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                null_marks(item, path, found);
            }
        }
        _ => {}
    }
}

/// The worker's times (kept out of the artifact, see
/// [`ops::VOLATILE_METRICS`]) go into the stage's entry.
fn add_timings(staging_root: &Path, metrics: &mut Metrics) {
    let timings = std::fs::read(staging_root.join(ops::TIMINGS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Metrics>(&b).ok())
        .unwrap_or_default();
    metrics.extend(timings);
}

/// A job as handed to `hcpipe exec` on another machine: the job and the
/// (shared) cache it commits to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecJob {
    pub cache: PathBuf,
    pub job: Job,
    /// With a remote cache: the job works in a node-local scratch cache
    /// instead of `cache` (see `job_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::remote::RemoteJob>,
}

/// Process groups of the stages this process is running, for [`kill_running`].
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

struct RunningGuard(u32);

impl RunningGuard {
    fn new(pid: u32) -> RunningGuard {
        if let Ok(mut r) = RUNNING.lock() {
            r.push(pid);
        }
        RunningGuard(pid)
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = RUNNING.lock() {
            r.retain(|p| *p != self.0);
        }
    }
}

/// Kill every stage process group this process started (Ctrl-C, SIGTERM).
/// Jobs given to a torch server are its owner's to cancel
/// ([`super::local::LocalExecutor`]).
pub fn kill_running() {
    let groups = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
    for pgid in groups {
        // SAFETY: kill(2) with a negative pid signals that process group only.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
    }
}

/// Refuse the result of a cmd stage that succeeded but left `{out}` without
/// a single file: it most likely wrote its result elsewhere (a relative path,
/// a typo), and caching an empty artifact would hide that for good. A stage
/// whose empty result is intended says so with `outs: []`. Ops are not
/// checked: hcpipe writes their metrics.json itself.
pub fn refuse_empty(stage: &str, work: &Work, out: &Path) -> Result<(), Failure> {
    if !matches!(work, Work::Cmd(_)) || !out.is_dir() {
        // A missing {out} is the commit's error to report.
        return Ok(());
    }
    // Folders alone hold nothing; an unreadable entry counts as something
    // (the commit reports it).
    let wrote_something = walkdir::WalkDir::new(out)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .any(|e| e.map_or(true, |e| !e.file_type().is_dir()));
    if wrote_something {
        return Ok(());
    }
    Err(Failure::msg(format!(
        "stage `{stage}` exited 0 but wrote nothing to {{out}}, so nothing was stored; write its \
         results into {{out}} (e.g. `cmd: \"... > {{out}}/result.txt\"`: files written elsewhere \
         are not cached), or declare `outs: []` if an empty result is what it makes"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_empty_only_for_cmd_stages_without_files() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        let cmd = Work::Cmd("true".to_string());
        let err = refuse_empty("s", &cmd, &out).unwrap_err();
        assert!(err.message.contains("outs: []"), "{}", err.message);
        assert!(refuse_empty("s", &Work::Op("hist".to_string()), &out).is_ok());
        std::fs::write(out.join("sub/x"), "x").unwrap();
        assert!(refuse_empty("s", &cmd, &out).is_ok());
        // A missing {out} is the commit's error to report.
        assert!(refuse_empty("s", &cmd, &dir.path().join("gone")).is_ok());
    }

    #[test]
    fn metrics_with_nan_and_infinity_become_null() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.json"),
            r#"{"loss": NaN, "b": [1, -Infinity], "c": {"d": Infinity}, "s": "NaN \" Infinity", "e": -1.5e3}"#,
        )
        .unwrap();
        let m = read_metrics(dir.path(), "s").unwrap();
        assert!(m["loss"].is_null());
        assert_eq!(m["b"], serde_json::json!([1, null]));
        assert_eq!(m["c"], serde_json::json!({"d": null}));
        assert_eq!(m["s"], "NaN \" Infinity");
        assert_eq!(m["e"], -1500.0);
        let (_, found) = non_finite_as_null(br#"{"a": [NaN], "b": {"c": -Infinity}}"#).unwrap();
        assert_eq!(
            found,
            [
                ("a[0]".to_string(), "NaN".to_string()),
                ("b.c".to_string(), "-Infinity".to_string())
            ]
        );
    }

    #[test]
    fn invalid_metrics_still_fail() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.json"), "{\"a\": NaN,}").unwrap();
        assert!(read_metrics(dir.path(), "s").is_err());
        std::fs::write(dir.path().join("metrics.json"), "{\"a\": nan}").unwrap();
        assert!(read_metrics(dir.path(), "s").is_err());
        // Only inside a string: nothing to replace, so the parse error stands.
        std::fs::write(dir.path().join("metrics.json"), "{\"a\": \"NaN\"").unwrap();
        assert!(read_metrics(dir.path(), "s").is_err());
    }
}
