//! The Slurm executor: each stage is one `sbatch` job that runs
//! `hcpipe exec --job FILE` on a compute node against the same (shared) cache;
//! the members of one matrix stage that are ready together are one job
//! array (`sbatch --array=0-N[%W]`), task `i` running member `i`.
//!
//! What this module owns:
//! - the files of a submission, all under `<cache>/slurm/`: the job
//!   (`NAME.job.json`, an [`ExecJob`]), the batch script (`NAME.sh`), Slurm's
//!   log (`NAME.log`) and the outcome `hcpipe exec` writes (`NAME.result.json`,
//!   a [`JobResult`]); they are removed after a success and kept after a failure.
//!   A job array of stem `S` has one script `S.sh` and, per task `i`, the
//!   member's own `S.i.job.json`, `S.i.log` and `S.i.result.json`: a task is
//!   exactly a single job (it takes its stage's lock and commits under its
//!   own key), so a re-run after some tasks failed runs only those members;
//! - the `sbatch` command line: the stage's `resources` as Slurm flags, then
//!   every `--slurm-opt` verbatim (so a user's option wins); for an array,
//!   `%W` is the scheduler's width (`--jobs` and `resources.array_throttle`),
//!   and an array longer than the cluster's `MaxArraySize` is split;
//! - polling: one `squeue -r` call for all jobs and arrays in flight (each
//!   array task on its own line), at most every [`DEFAULT_POLL`] (never
//!   hammering slurmctld); a job or task is done when its result file exists,
//!   or failed when it left the queue without one;
//! - `scancel` of every job and array in flight on Ctrl-C.
//!
//! Calls to Slurm are counted and logged at `-v` (`slurm: N sbatch calls …`).
//!
//! The result file, not `sacct`, tells success from failure: clusters
//! without accounting work, and the cache entry the job committed is read
//! from the shared cache, exactly as a local run would have written it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::job::{ExecJob, Job};
use super::Executor;
use crate::cache::fsutil::write_atomic;
use crate::cache::{Cache, StageKey};
use crate::dag::StageId;
use crate::outcome::{tail, Failure, Outcome};
use crate::record::StageStatus;
use crate::spec::cmd_text::shell_quote;
use crate::spec::Resources;

/// How often `squeue` is asked by default; `HCPIPE_SLURM_POLL` (seconds) overrides it.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// The floor for `HCPIPE_SLURM_POLL`: a busy slurmctld serves many users.
const MIN_POLL: Duration = Duration::from_millis(250);
/// How long a job that left the queue may take to show its result file
/// (NFS attribute caches can hide a new file for tens of seconds).
const RESULT_GRACE: Duration = Duration::from_secs(30);

/// What `hcpipe exec` writes beside its job file when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub stage: String,
    pub key: Option<StageKey>,
    /// `ran` or `cached` (another runner finished the key first) on success.
    pub status: Option<StageStatus>,
    pub failure: Option<Failure>,
}

/// The result file that belongs to a job file: `X.job.json` → `X.result.json`.
pub fn result_path_for(job_file: &Path) -> PathBuf {
    let name = job_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = match name.strip_suffix(".job.json") {
        Some(stem) => format!("{stem}.result.json"),
        None => format!("{name}.result.json"),
    };
    job_file.with_file_name(result)
}

/// Write `result` atomically (a half-written file must never look like an outcome).
pub fn write_result(job_file: &Path, result: &JobResult) -> Result<(), String> {
    let path = result_path_for(job_file);
    let bytes = serde_json::to_vec_pretty(result).map_err(|e| e.to_string())?;
    write_atomic(&path, &bytes)
        .map_err(|e| format!("writing the job result {}: {e}", path.display()))
}

/// One submitted stage: a job, or one task of a job array.
struct Submitted {
    id: StageId,
    stage: String,
    job_file: PathBuf,
    log: PathBuf,
    /// The Slurm job that `squeue -j` and `scancel` are given: the job's own
    /// id, or its array's.
    parent: String,
    /// When `squeue` first stopped listing it without a result file.
    gone_since: Option<Instant>,
}

impl Submitted {
    fn result_file(&self) -> PathBuf {
        result_path_for(&self.job_file)
    }

    fn remove_files(&self) {
        for p in [&self.job_file, &self.log, &self.result_file()] {
            let _ = std::fs::remove_file(p);
        }
    }

    fn failure(&self, job_id: &str, what: &str) -> Failure {
        Failure {
            message: format!("Slurm job {job_id} {what}"),
            log_tail: tail(&self.log, 20),
            log: Some(self.log.clone()),
        }
    }
}

pub struct SlurmExecutor {
    cache: Cache,
    dir: PathBuf,
    /// The running hcpipe binary: compute nodes run the same file (shared install).
    exe: PathBuf,
    /// Per stage id: its name and what it asks of Slurm.
    resources: Vec<Resources>,
    /// `--slurm-opt` values, appended verbatim to every `sbatch`.
    extra: Vec<String>,
    poll_every: Duration,
    last_poll: Option<Instant>,
    /// Slurm job id (`JOB`, or `ARRAY_TASK` for an array's task) → submission.
    jobs: BTreeMap<String, Submitted>,
    /// Per submitted job or array: its batch script and how many of its
    /// stages are in flight; the script goes when the last one succeeded.
    scripts: BTreeMap<String, Script>,
    squeue_errors: u32,
    /// The cluster's `MaxArraySize`, asked once, when the first array goes out.
    max_array: Option<usize>,
    calls: Calls,
    /// With a remote cache: jobs work in node-local scratch caches, through it.
    remote: Option<(crate::remote::Remote, crate::remote::RemoteConfig)>,
}

/// A batch script shared by the tasks of one submission.
struct Script {
    path: PathBuf,
    left: usize,
    /// A task failed: the script stays for inspection.
    keep: bool,
}

/// Calls made to Slurm, logged at `-v` when the executor ends (tests and
/// `bench/slurm_scale.py` read the line).
#[derive(Debug, Default)]
struct Calls {
    sbatch: u64,
    arrays: u64,
    array_tasks: u64,
    polls: u64,
    squeue: u64,
    scontrol: u64,
}

impl Drop for SlurmExecutor {
    fn drop(&mut self) {
        let c = &self.calls;
        tracing::info!(
            "slurm: {} sbatch calls ({} job arrays of {} tasks), {} polls, {} squeue calls, {} scontrol calls",
            c.sbatch,
            c.arrays,
            c.array_tasks,
            c.polls,
            c.squeue,
            c.scontrol
        );
    }
}

/// Slurm's default `MaxArraySize` (task ids 0 to 1000).
const DEFAULT_MAX_ARRAY: usize = 1001;

impl SlurmExecutor {
    /// `resources[i]` belongs to stage id `i`. Fails when `sbatch` is not on PATH.
    pub fn new(
        cache: Cache,
        resources: Vec<Resources>,
        extra: Vec<String>,
    ) -> Result<SlurmExecutor, String> {
        match Command::new("sbatch").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "--executor slurm: `sbatch --version` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "--executor slurm: cannot run `sbatch` ({e}); run hcpipe on a Slurm login node, or start a one-node test cluster with `scripts/slurm-local start`"
                ))
            }
        }
        let exe = std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| format!("cannot locate the running hcpipe binary: {e}"))?;
        let dir = cache.root.join("slurm");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let poll_every = std::env::var("HCPIPE_SLURM_POLL")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s).max(MIN_POLL))
            .unwrap_or(DEFAULT_POLL);
        Ok(SlurmExecutor {
            cache,
            dir,
            exe,
            resources,
            extra,
            poll_every,
            last_poll: None,
            jobs: BTreeMap::new(),
            scripts: BTreeMap::new(),
            squeue_errors: 0,
            max_array: None,
            calls: Calls::default(),
            remote: None,
        })
    }

    /// Jobs without the shared cache folder: each job pulls its inputs from
    /// `remote` into a node-local scratch cache, runs there and pushes its
    /// result, which this side pulls. Only the small `slurm/` folder (job,
    /// result and log files) must be visible to the nodes.
    pub fn with_remote(
        mut self,
        remote: crate::remote::Remote,
        config: crate::remote::RemoteConfig,
    ) -> SlurmExecutor {
        self.remote = Some((remote, config));
        self
    }

    /// The `sbatch` arguments for one stage (script last).
    fn sbatch_args(&self, stage: &str, res: &Resources, log: &Path, script: &Path) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=hcpipe-{stage}"),
            format!("--output={}", log.display()),
            format!("--chdir={}", self.dir.display()),
            format!("--cpus-per-task={}", res.cpu.max(1)),
        ];
        if res.whole_gpus() > 0 {
            args.push(format!("--gres=gpu:{}", res.whole_gpus()));
        }
        for (flag, value) in [
            ("mem", &res.mem),
            ("time", &res.time),
            ("partition", &res.partition),
            ("account", &res.account),
        ] {
            if let Some(v) = value {
                args.push(format!("--{flag}={v}"));
            }
        }
        args.extend(self.extra.iter().cloned());
        args.push(script.display().to_string());
        args
    }

    fn submit(&mut self, id: StageId, mut job: Job) -> Result<(String, Submitted), Failure> {
        let res = self.resources.get(id.0).cloned().unwrap_or_default();
        // Inside the allocation the stage may use every CPU it asked Slurm for.
        job.threads = res.cpu.max(1) as usize;
        let base = format!(
            "{}.{}.{}-{}",
            file_safe(&job.stage),
            job.key.short(),
            std::process::id(),
            crate::cache::fsutil::unique_suffix()
        );
        let job_file = self.dir.join(format!("{base}.job.json"));
        let script = self.dir.join(format!("{base}.sh"));
        let log = self.dir.join(format!("{base}.log"));
        let stage = job.stage.clone();
        self.write_job_file(&job_file, job)?;
        let args = self.sbatch_args(&stage, &res, &log, &script);
        let text = format!(
            "#!/bin/sh\n# hcpipe stage `{stage}`; submitted as: sbatch {}\nexec {} exec --job {}\n",
            args.join(" "),
            shell_quote(&self.exe.to_string_lossy()),
            shell_quote(&job_file.to_string_lossy()),
        );
        let job_id = self
            .sbatch(&script, &text, &args, &format!("stage `{stage}`"))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&job_file);
            })?;
        tracing::info!("stage `{stage}` submitted as Slurm job {job_id}");
        self.scripts.insert(
            job_id.clone(),
            Script {
                path: script,
                left: 1,
                keep: false,
            },
        );
        Ok((
            job_id.clone(),
            Submitted {
                id,
                stage,
                job_file,
                log,
                parent: job_id,
                gone_since: None,
            },
        ))
    }

    /// Write the job file `hcpipe exec --job` reads.
    fn write_job_file(&self, path: &Path, job: Job) -> Result<(), Failure> {
        let remote = match &self.remote {
            Some((remote, config)) => Some(self.remote_job(remote, config, &job)?),
            None => None,
        };
        let exec_job = ExecJob {
            cache: self.cache.root.clone(),
            job,
            remote,
        };
        let bytes =
            serde_json::to_vec_pretty(&exec_job).map_err(|e| Failure::msg(e.to_string()))?;
        write_atomic(path, &bytes)
            .map_err(|e| Failure::msg(format!("writing the Slurm job file: {e}")))
    }

    /// A job's remote part: its inputs pushed (the remote may lack what ran
    /// or was cached here), and their keys. An input's folder is
    /// `<cache>/artifacts/<key>`: its name is the key.
    fn remote_job(
        &self,
        remote: &crate::remote::Remote,
        config: &crate::remote::RemoteConfig,
        job: &Job,
    ) -> Result<crate::remote::RemoteJob, Failure> {
        let mut keys = Vec::new();
        for input in &job.inputs {
            let key = input
                .dir
                .file_name()
                .and_then(|n| StageKey::parse(&n.to_string_lossy()))
                .ok_or_else(|| {
                    Failure::msg(format!(
                        "internal: input `{}` is not a cache artifact ({}) (bug, please report)",
                        input.stage,
                        input.dir.display()
                    ))
                })?;
            let entry = self.cache.entry(&key).ok().flatten().ok_or_else(|| {
                Failure::msg(format!("input `{}` has no cache entry", input.stage))
            })?;
            crate::remote::sync::push_entry(remote, &self.cache, &entry).map_err(|e| {
                Failure::msg(format!(
                    "pushing input `{}` for the job to pull: {e}",
                    input.stage
                ))
            })?;
            keys.push(key);
        }
        Ok(crate::remote::RemoteJob {
            url: config.url.clone(),
            endpoint: config.endpoint.clone(),
            inputs: keys,
        })
    }

    /// Write `script` and submit it; Slurm's job id. On a refusal the script
    /// is removed and the failure names the command and the fix.
    fn sbatch(
        &mut self,
        script: &Path,
        text: &str,
        args: &[String],
        what: &str,
    ) -> Result<String, Failure> {
        write_atomic(script, text.as_bytes())
            .map_err(|e| Failure::msg(format!("writing the Slurm batch script: {e}")))?;
        self.calls.sbatch += 1;
        let out = Command::new("sbatch").args(args).output().map_err(|e| {
            let _ = std::fs::remove_file(script);
            Failure::msg(format!("cannot run sbatch for {what}: {e}"))
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
        let job_id = stdout
            .lines()
            .next()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .filter(|j| !j.is_empty() && j.chars().all(|c| c.is_ascii_digit()));
        match (out.status.success(), job_id) {
            (true, Some(j)) => Ok(j.to_string()),
            _ => {
                let _ = std::fs::remove_file(script);
                Err(Failure::msg(format!(
                    "sbatch refused {what}: {}{}\n  command: sbatch {}\n  fix the stage's `resources` or the --slurm-opt values",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    stdout.trim(),
                    args.join(" ")
                )))
            }
        }
    }

    /// The cluster's `MaxArraySize` (`scontrol show config`), asked once.
    fn max_array(&mut self) -> usize {
        if let Some(n) = self.max_array {
            return n;
        }
        self.calls.scontrol += 1;
        let n = Command::new("scontrol")
            .args(["show", "config"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| parse_max_array_size(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or(DEFAULT_MAX_ARRAY);
        self.max_array = Some(n);
        n
    }

    /// Submit members of one matrix stage as job arrays (one, unless they
    /// outnumber `MaxArraySize`); what could not be submitted fails at once.
    fn submit_group(
        &mut self,
        jobs: Vec<(StageId, Job)>,
        width: usize,
        done: &Sender<(StageId, Outcome)>,
    ) {
        let total = jobs.len();
        let max = self.max_array().max(1);
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<(StageId, Job)> = jobs.by_ref().take(max).collect();
            // Each part of a split array gets its share of the width.
            let share = if width >= total {
                chunk.len()
            } else {
                (width * chunk.len() / total).max(1)
            };
            let ids: Vec<StageId> = chunk.iter().map(|(id, _)| *id).collect();
            if let Err(f) = self.submit_array(chunk, share) {
                for id in ids {
                    let _ = done.send((id, Err(f.clone())));
                }
            }
        }
    }

    /// One `sbatch --array=0-(n-1)[%width]`: task `i` runs `jobs[i]`.
    fn submit_array(&mut self, jobs: Vec<(StageId, Job)>, width: usize) -> Result<(), Failure> {
        let Some((first, job)) = jobs.first() else {
            return Ok(());
        };
        let res = self.resources.get(first.0).cloned().unwrap_or_default();
        let base = job
            .stage
            .split_once('[')
            .map_or(job.stage.as_str(), |(b, _)| b)
            .to_string();
        let n = jobs.len();
        let stem = format!(
            "{}.{}-{}",
            file_safe(&base),
            std::process::id(),
            crate::cache::fsutil::unique_suffix()
        );
        let task_file = |i: usize, ext: &str| self.dir.join(format!("{stem}.{i}.{ext}"));
        let mut members = Vec::with_capacity(n);
        let mut written = Vec::with_capacity(n);
        for (i, (id, mut job)) in jobs.into_iter().enumerate() {
            job.threads = res.cpu.max(1) as usize;
            let job_file = task_file(i, "job.json");
            let stage = job.stage.clone();
            if let Err(f) = self.write_job_file(&job_file, job) {
                for p in &written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(f);
            }
            written.push(job_file.clone());
            members.push((id, stage, job_file, task_file(i, "log")));
        }
        let script = self.dir.join(format!("{stem}.sh"));
        // `%a` is the task id: each task logs to its own member's file.
        let log = self.dir.join(format!("{stem}.%a.log"));
        let mut args = self.sbatch_args(&base, &res, &log, &script);
        let throttle = if width < n {
            format!("%{}", width.max(1))
        } else {
            String::new()
        };
        args.insert(args.len() - 1, format!("--array=0-{}{throttle}", n - 1));
        let text = format!(
            "#!/bin/sh\n# hcpipe stage `{base}`: {n} members as one job array, task i runs the member in {stem}.i.job.json; submitted as: sbatch {}\nexec {} exec --job {}\"$SLURM_ARRAY_TASK_ID\"{}\n",
            args.join(" "),
            shell_quote(&self.exe.to_string_lossy()),
            shell_quote(&format!("{}/{stem}.", self.dir.display())),
            shell_quote(".job.json"),
        );
        let what = format!("the job array of {n} members of stage `{base}`");
        let array_id = self.sbatch(&script, &text, &args, &what).inspect_err(|_| {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
        })?;
        tracing::info!("{n} members of stage `{base}` submitted as Slurm job array {array_id}");
        self.calls.arrays += 1;
        self.calls.array_tasks += n as u64;
        self.scripts.insert(
            array_id.clone(),
            Script {
                path: script,
                left: n,
                keep: false,
            },
        );
        for (i, (id, stage, job_file, log)) in members.into_iter().enumerate() {
            self.jobs.insert(
                format!("{array_id}_{i}"),
                Submitted {
                    id,
                    stage,
                    job_file,
                    log,
                    parent: array_id.clone(),
                    gone_since: None,
                },
            );
        }
        Ok(())
    }

    /// Job ids (`JOB`, `ARRAY_TASK`) `squeue` still lists, or `None` when it
    /// could not be asked. One call for every job and array in flight; `-r`
    /// lists each array task on its own line, pending ones too.
    fn queued(&mut self) -> Option<HashSet<String>> {
        let ids = self.parents().into_iter().collect::<Vec<_>>().join(",");
        self.calls.squeue += 1;
        let out = Command::new("squeue")
            .args(["-h", "-r", "-o", "%i %T", "-j", &ids])
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.squeue_failed(&e.to_string());
                return None;
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Every id was purged from slurmctld: none is queued.
            if stderr.contains("Invalid job id") {
                self.squeue_errors = 0;
                return Some(HashSet::new());
            }
            self.squeue_failed(stderr.trim());
            return None;
        }
        self.squeue_errors = 0;
        let queued = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                let id = parts.next()?;
                let state = parts.next().unwrap_or("");
                // Finished states can linger in squeue's output; those jobs left the queue.
                (!is_final(state)).then(|| id.to_string())
            })
            .collect();
        Some(queued)
    }

    fn squeue_failed(&mut self, why: &str) {
        self.squeue_errors += 1;
        // slurmctld restarts and hiccups happen: say so, keep waiting.
        if self.squeue_errors == 1 || self.squeue_errors.is_multiple_of(30) {
            tracing::warn!(
                "squeue failed ({why}); {} Slurm job(s) in flight, retrying",
                self.jobs.len()
            );
        }
    }

    /// The jobs and arrays in flight, each once.
    fn parents(&self) -> BTreeSet<&str> {
        self.jobs.values().map(|s| s.parent.as_str()).collect()
    }

    /// The job's state according to `scontrol show job`, while slurmctld still knows it.
    fn job_state(&mut self, job_id: &str) -> Option<(String, String)> {
        self.calls.scontrol += 1;
        let out = Command::new("scontrol")
            .args(["show", "job", "-o", job_id])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        Some((field("JobState=")?, field("ExitCode=").unwrap_or_default()))
    }

    /// The outcome of a job whose result file exists.
    fn outcome_from_result(&mut self, job_id: &str, sub: &Submitted) -> Outcome {
        let path = sub.result_file();
        let result: JobResult = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                sub.failure(
                    job_id,
                    &format!("left an unreadable result {}: {e}", path.display()),
                )
            })?;
        if let Some(f) = result.failure {
            // Killed by Slurm (scancel, time limit, memory): say so, and show
            // Slurm's log, which names the cause, rather than the stage's.
            let killed = self
                .job_state(job_id)
                .map(|(state, _)| state)
                .filter(|s| is_final(s) && s != "COMPLETED" && s != "FAILED");
            if let Some(state) = killed {
                return Err(Failure {
                    message: format!("Slurm job {job_id} ended {state}: {}", f.message),
                    log_tail: tail(&sub.log, 20),
                    log: Some(sub.log.clone()),
                });
            }
            let tail = if f.log_tail.is_empty() {
                tail(&sub.log, 20)
            } else {
                f.log_tail
            };
            return Err(Failure {
                message: format!("Slurm job {job_id}: {}", f.message),
                log_tail: tail,
                log: f.log.or_else(|| Some(sub.log.clone())),
            });
        }
        let (Some(key), Some(status)) = (result.key, result.status) else {
            return Err(sub.failure(
                job_id,
                "wrote a result that names neither a key nor a failure",
            ));
        };
        match self.cache.entry(&key) {
            Ok(Some(entry)) => Ok((status, entry)),
            // The job worked in its own scratch cache and pushed the result.
            Ok(None) if self.remote.is_some() => {
                let remote = &self.remote.as_ref().expect("checked").0;
                match crate::remote::sync::pull_entry(remote, &self.cache, &key) {
                    Ok(Some((entry, _))) => Ok((status, entry)),
                    Ok(None) => Err(sub.failure(
                        job_id,
                        &format!("finished {} but its result is not on the remote {}", key.short(), remote.url()),
                    )),
                    Err(e) => Err(sub.failure(job_id, &format!("finished, but pulling its result failed: {e}"))),
                }
            }
            Ok(None) => Err(sub.failure(
                job_id,
                &format!(
                    "committed {} but this machine does not see it in {}; the cache must be on a file system shared by this machine and the compute nodes",
                    key.short(),
                    self.cache.root.display()
                ),
            )),
            Err(e) => Err(sub.failure(job_id, &format!("succeeded, but its cache entry is unreadable: {e}"))),
        }
    }
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>) {
        match self.submit(id, job) {
            Ok((job_id, sub)) => {
                self.jobs.insert(job_id, sub);
            }
            Err(f) => {
                let _ = done.send((id, Err(f)));
            }
        }
    }

    fn groups(&self) -> bool {
        true
    }

    fn launch_group(
        &mut self,
        jobs: Vec<(StageId, Job)>,
        width: usize,
        done: Sender<(StageId, Outcome)>,
    ) {
        self.submit_group(jobs, width, &done);
    }

    fn poll(&mut self, done: &Sender<(StageId, Outcome)>) {
        if self.jobs.is_empty() {
            return;
        }
        if self
            .last_poll
            .is_some_and(|t| t.elapsed() < self.poll_every)
        {
            return;
        }
        self.last_poll = Some(Instant::now());
        self.calls.polls += 1;
        let queued = self.queued();
        let mut finished = Vec::new();
        let mut gone = Vec::new();
        for (job_id, sub) in self.jobs.iter_mut() {
            // A result file is the job's last act: done, whatever squeue says.
            if sub.result_file().exists() {
                finished.push(job_id.clone());
                continue;
            }
            let Some(queued) = &queued else { continue };
            if queued.contains(job_id) {
                continue;
            }
            let since = *sub.gone_since.get_or_insert_with(Instant::now);
            gone.push((job_id.clone(), since));
        }
        // Left the queue without a result: ended badly, or the result is not
        // visible yet (a shared file system's attribute cache).
        for (job_id, since) in gone {
            let state = self.job_state(&job_id);
            let ended_badly = state
                .as_ref()
                .is_some_and(|(s, _)| is_final(s) && s != "COMPLETED");
            if ended_badly || since.elapsed() >= RESULT_GRACE {
                finished.push(job_id);
            }
        }
        for job_id in finished {
            let Some(sub) = self.jobs.remove(&job_id) else {
                continue;
            };
            let outcome = if sub.result_file().exists() {
                self.outcome_from_result(&job_id, &sub)
            } else {
                let what = match self.job_state(&job_id) {
                    Some((state, code)) => format!(
                        "ended {state} (exit code {code}) before stage `{}` wrote its result",
                        sub.stage
                    ),
                    None => format!(
                        "left the queue before stage `{}` wrote {}; is {} shared with the compute nodes?",
                        sub.stage,
                        sub.result_file().display(),
                        self.cache.root.display()
                    ),
                };
                Err(sub.failure(&job_id, &what))
            };
            if outcome.is_ok() {
                sub.remove_files();
            }
            if let Some(script) = self.scripts.get_mut(&sub.parent) {
                script.left = script.left.saturating_sub(1);
                script.keep |= outcome.is_err();
                if script.left == 0 {
                    if !script.keep {
                        let _ = std::fs::remove_file(&script.path);
                    }
                    self.scripts.remove(&sub.parent);
                }
            }
            let _ = done.send((sub.id, outcome));
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll_every
    }

    fn cancel_all(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        // An array's id cancels its tasks still queued or running.
        let ids: Vec<&str> = self.parents().into_iter().collect();
        match Command::new("scancel").args(&ids).output() {
            Ok(out) if out.status.success() => {
                eprintln!("cancelled Slurm job(s) {}", ids.join(" "));
            }
            Ok(out) => eprintln!(
                "warning: scancel {} failed: {}; cancel them by hand",
                ids.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!(
                "warning: cannot run scancel ({e}); cancel Slurm job(s) {} by hand",
                ids.join(" ")
            ),
        }
        self.jobs.clear();
    }
}

/// Slurm job states after which a job no longer runs.
fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
    ) || state.starts_with("CANCELLED")
}

/// `MaxArraySize = 1001` from `scontrol show config`.
fn parse_max_array_size(config: &str) -> Option<usize> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "MaxArraySize").then(|| v.trim().parse().ok())?
    })
}

/// A stage name as a file name part (matrix names hold `[`, `=`, `,`).
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_file_sits_beside_the_job_file() {
        assert_eq!(
            result_path_for(Path::new("/c/slurm/a.k.1-2.job.json")),
            PathBuf::from("/c/slurm/a.k.1-2.result.json")
        );
        assert_eq!(
            result_path_for(Path::new("/tmp/x.json")),
            PathBuf::from("/tmp/x.json.result.json")
        );
    }

    #[test]
    fn sbatch_gets_resources_then_user_options() {
        let dir = tempfile::tempdir().unwrap();
        let exec = SlurmExecutor {
            cache: Cache::open(dir.path()).unwrap(),
            dir: dir.path().join("slurm"),
            exe: PathBuf::from("/bin/hcpipe"),
            resources: Vec::new(),
            extra: vec!["--qos=short".into(), "--partition=big".into()],
            poll_every: DEFAULT_POLL,
            last_poll: None,
            jobs: BTreeMap::new(),
            scripts: BTreeMap::new(),
            squeue_errors: 0,
            max_array: None,
            calls: Calls::default(),
            remote: None,
        };
        let res = Resources {
            cpu: 4,
            gpu_milli: 1000,
            mem: Some("8G".into()),
            time: Some("1:00:00".into()),
            partition: Some("gpu".into()),
            account: None,
            array_throttle: None,
        };
        let args = exec.sbatch_args(
            "train[fold=0]",
            &res,
            Path::new("/l.log"),
            Path::new("/s.sh"),
        );
        let pos = |a: &str| args.iter().position(|x| x == a).unwrap();
        assert!(args.contains(&"--job-name=hcpipe-train[fold=0]".to_string()));
        assert!(args.contains(&"--cpus-per-task=4".to_string()));
        assert!(args.contains(&"--gres=gpu:1".to_string()));
        assert!(args.contains(&"--mem=8G".to_string()));
        assert!(args.contains(&"--time=1:00:00".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--account")));
        // The user's --partition comes after the stage's, so sbatch takes it.
        assert!(pos("--partition=gpu") < pos("--partition=big"));
        assert_eq!(args.last().map(String::as_str), Some("/s.sh"));
        let no_gpu = Resources {
            cpu: 0,
            ..Default::default()
        };
        let args = exec.sbatch_args("a", &no_gpu, Path::new("/l"), Path::new("/s"));
        assert!(args.contains(&"--cpus-per-task=1".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--gres")));
    }

    #[test]
    fn max_array_size_is_read_from_the_config() {
        let config = "MailProg                = /bin/mail\nMaxArraySize            = 4001\nMaxJobCount             = 10000\n";
        assert_eq!(parse_max_array_size(config), Some(4001));
        assert_eq!(parse_max_array_size("MaxJobCount = 1\n"), None);
    }

    #[test]
    fn final_states() {
        assert!(is_final("CANCELLED"));
        assert!(is_final("CANCELLED+"));
        assert!(is_final("TIMEOUT"));
        assert!(!is_final("RUNNING"));
        assert!(!is_final("COMPLETING"));
        assert!(!is_final("PENDING"));
    }
}
