//! The Slurm executor: each stage is one `sbatch` job that runs
//! `hcpipe exec --job FILE` on a compute node against the same (shared) cache.
//!
//! What this module owns:
//! - the files of a submission, all under `<cache>/slurm/`: the job
//!   (`NAME.job.json`, an [`ExecJob`]), the batch script (`NAME.sh`), Slurm's
//!   log (`NAME.log`) and the outcome `hcpipe exec` writes (`NAME.result.json`,
//!   a [`JobResult`]); they are removed after a success and kept after a failure;
//! - the `sbatch` command line: the stage's `resources` as Slurm flags, then
//!   every `--slurm-opt` verbatim (so a user's option wins);
//! - polling: one `squeue` call for all jobs in flight, at most every
//!   [`DEFAULT_POLL`] (never hammering slurmctld); a job is done when its
//!   result file exists, or failed when it left the queue without one;
//! - `scancel` of every job in flight on Ctrl-C.
//!
//! The result file, not `sacct`, tells success from failure: clusters
//! without accounting work, and the cache entry the job committed is read
//! from the shared cache, exactly as a local run would have written it.

use std::collections::BTreeMap;
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

/// One submitted stage.
struct Submitted {
    id: StageId,
    stage: String,
    job_file: PathBuf,
    script: PathBuf,
    log: PathBuf,
    /// When `squeue` first stopped listing it without a result file.
    gone_since: Option<Instant>,
}

impl Submitted {
    fn result_file(&self) -> PathBuf {
        result_path_for(&self.job_file)
    }

    fn remove_files(&self) {
        for p in [&self.job_file, &self.script, &self.log, &self.result_file()] {
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
    /// Slurm job id → submission.
    jobs: BTreeMap<String, Submitted>,
    squeue_errors: u32,
}

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
            squeue_errors: 0,
        })
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
        let fail = |m: String| Failure {
            message: m,
            log_tail: String::new(),
            log: None,
        };
        let exec_job = ExecJob {
            cache: self.cache.root.clone(),
            job,
        };
        let bytes = serde_json::to_vec_pretty(&exec_job).map_err(|e| fail(e.to_string()))?;
        write_atomic(&job_file, &bytes)
            .map_err(|e| fail(format!("writing the Slurm job file: {e}")))?;
        let args = self.sbatch_args(&stage, &res, &log, &script);
        let text = format!(
            "#!/bin/sh\n# hcpipe stage `{stage}`; submitted as: sbatch {}\nexec {} exec --job {}\n",
            args.join(" "),
            shell_quote(&self.exe.to_string_lossy()),
            shell_quote(&job_file.to_string_lossy()),
        );
        write_atomic(&script, text.as_bytes())
            .map_err(|e| fail(format!("writing the Slurm batch script: {e}")))?;
        let out = Command::new("sbatch")
            .args(&args)
            .output()
            .map_err(|e| fail(format!("cannot run sbatch for stage `{stage}`: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
        let job_id = stdout
            .lines()
            .next()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .filter(|j| !j.is_empty() && j.chars().all(|c| c.is_ascii_digit()));
        let job_id = match (out.status.success(), job_id) {
            (true, Some(j)) => j.to_string(),
            _ => {
                for p in [&job_file, &script] {
                    let _ = std::fs::remove_file(p);
                }
                return Err(fail(format!(
                    "sbatch refused stage `{stage}`: {}{}\n  command: sbatch {}\n  fix the stage's `resources` or the --slurm-opt values",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    stdout.trim(),
                    args.join(" ")
                )));
            }
        };
        tracing::info!("stage `{stage}` submitted as Slurm job {job_id}");
        Ok((
            job_id,
            Submitted {
                id,
                stage,
                job_file,
                script,
                log,
                gone_since: None,
            },
        ))
    }

    /// Job ids `squeue` still lists, or `None` when it could not be asked.
    fn queued(&mut self) -> Option<Vec<String>> {
        let ids: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i %T", "-j", &ids.join(",")])
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
                return Some(Vec::new());
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

    /// The job's state according to `scontrol show job`, while slurmctld still knows it.
    fn job_state(job_id: &str) -> Option<(String, String)> {
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
    fn outcome_from_result(&self, job_id: &str, sub: &Submitted) -> Outcome {
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
            let killed = Self::job_state(job_id)
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
        let queued = self.queued();
        let mut finished = Vec::new();
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
            let state = Self::job_state(job_id);
            let ended_badly = state
                .as_ref()
                .is_some_and(|(s, _)| is_final(s) && s != "COMPLETED");
            if ended_badly || since.elapsed() >= RESULT_GRACE {
                finished.push(job_id.clone());
            }
        }
        for job_id in finished {
            let Some(sub) = self.jobs.remove(&job_id) else {
                continue;
            };
            let outcome = if sub.result_file().exists() {
                self.outcome_from_result(&job_id, &sub)
            } else {
                let what = match Self::job_state(&job_id) {
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
        let ids: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
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
            squeue_errors: 0,
        };
        let res = Resources {
            cpu: 4,
            gpu_milli: 1000,
            mem: Some("8G".into()),
            time: Some("1:00:00".into()),
            partition: Some("gpu".into()),
            account: None,
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
    fn final_states() {
        assert!(is_final("CANCELLED"));
        assert!(is_final("CANCELLED+"));
        assert!(is_final("TIMEOUT"));
        assert!(!is_final("RUNNING"));
        assert!(!is_final("COMPLETING"));
        assert!(!is_final("PENDING"));
    }
}
