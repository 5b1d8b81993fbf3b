//! `hcpipe exec --job FILE`: what a Slurm job does on its compute node. It
//! runs the one stage of an [`ExecJob`] against the shared cache and leaves
//! the outcome in the result file beside the job file
//! ([`slurm::result_path_for`]): the runner reads that, not the job's exit
//! code, so it also learns why a job failed, even one that failed before
//! its stage could start.

use std::path::Path;
use std::sync::Mutex;

use super::job::{run_job, ExecJob};
use super::slurm::{self, JobResult};
use crate::cache::statcache::StatCache;
use crate::cache::{Cache, Entry};
use crate::error::Error;
use crate::outcome::Failure;
use crate::record::StageStatus;

/// A job whose stage finished (ran, or was found cached).
pub struct Done {
    pub stage: String,
    pub status: StageStatus,
    pub entry: Entry,
}

/// Run the job in `job_file` and write its result file.
pub fn run_job_file(job_file: &Path) -> Result<Done, Error> {
    // A job that cannot start still leaves a result saying why.
    let failed = |job: Option<&ExecJob>, error: Error| {
        let result = JobResult {
            stage: job.map(|j| j.job.stage.clone()).unwrap_or_default(),
            key: job.map(|j| j.job.key.clone()),
            status: None,
            failure: Some(Failure {
                message: error.to_string(),
                log_tail: String::new(),
                log: None,
            }),
        };
        if let Err(e) = slurm::write_result(job_file, &result) {
            eprintln!("error: {e}");
        }
        error
    };
    let job: ExecJob = std::fs::read(job_file)
        .map_err(|e| Error::Io(format!("cannot read job file {}: {e}", job_file.display())))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::Io(format!(
                    "job file {} is not a valid hcpipe job (written by another hcpipe version?): {e}",
                    job_file.display()
                ))
            })
        })
        .map_err(|e| failed(None, e))?;
    if let Some(remote) = job.remote.clone() {
        return run_remote_job(job_file, job, &remote);
    }
    let cache = Cache::open(&job.cache).map_err(|e| failed(Some(&job), e.into()))?;
    let _use = cache.use_lock().map_err(|e| failed(Some(&job), e.into()))?;
    let stat = Mutex::new(StatCache::load(cache.stat_cache_path()));
    let outcome = run_job(&cache, &job.job, &stat, None);
    finish(job_file, &job, outcome)
}

/// A job without the shared cache folder: its inputs are pulled from the
/// remote into a node-local scratch cache (every object verified), the
/// stage runs there, and its result is pushed before the result file says
/// it finished; the submitting side pulls it. The scratch cache goes at the end.
fn run_remote_job(
    job_file: &Path,
    mut job: ExecJob,
    remote: &crate::remote::RemoteJob,
) -> Result<Done, Error> {
    type Prepared = (crate::remote::Remote, crate::remote::ScratchCache);
    let prepared = (|| -> Result<Prepared, String> {
        let r = crate::remote::Remote::open(&remote.config()).map_err(|e| e.to_string())?;
        let scratch = crate::remote::ScratchCache::create().map_err(|e| e.to_string())?;
        if remote.inputs.len() != job.job.inputs.len() {
            return Err(
                "the job file's remote inputs do not match its inputs (bug, please report)".into(),
            );
        }
        for (input, key) in job.job.inputs.iter_mut().zip(&remote.inputs) {
            let (entry, _) = crate::remote::sync::pull_entry(&r, &scratch.cache, key)
                .map_err(|e| format!("pulling input `{}`: {e}", input.stage))?
                .ok_or_else(|| {
                    format!(
                        "input `{}` ({}) is not on the remote {}",
                        input.stage,
                        key.short(),
                        r.url()
                    )
                })?;
            input.dir = scratch
                .cache
                .ensure_artifact(&entry, false)
                .map_err(|e| e.to_string())?;
        }
        Ok((r, scratch))
    })();
    let (r, scratch) = match prepared {
        Ok(p) => p,
        Err(message) => return finish(job_file, &job, Err(Failure::msg(message))),
    };
    let stat = Mutex::new(StatCache::load(scratch.cache.stat_cache_path()));
    let mut outcome = run_job(&scratch.cache, &job.job, &stat, None);
    if let Ok((_, entry)) = &outcome {
        if let Err(e) = crate::remote::sync::push_entry(&r, &scratch.cache, entry) {
            outcome = Err(Failure::msg(format!("pushing the result: {e}")));
        }
    }
    // The stage's log goes with the scratch cache: its tail stays in the failure.
    if let Err(f) = &mut outcome {
        if let Some(log) = f.log.take() {
            if f.log_tail.is_empty() {
                f.log_tail = crate::outcome::tail(&log, 20);
            }
        }
    }
    finish(job_file, &job, outcome)
}

/// Write the job's result file; the stage's outcome as this command's.
fn finish(job_file: &Path, job: &ExecJob, outcome: crate::outcome::Outcome) -> Result<Done, Error> {
    let stage = job.job.stage.clone();
    let result = match &outcome {
        Ok((status, entry)) => JobResult {
            stage: stage.clone(),
            key: Some(entry.key.clone()),
            status: Some(*status),
            failure: None,
        },
        Err(f) => JobResult {
            stage: stage.clone(),
            key: Some(job.job.key.clone()),
            status: None,
            failure: Some(f.clone()),
        },
    };
    let written = slurm::write_result(job_file, &result).map_err(Error::Io);
    match outcome {
        Ok((status, entry)) => written.map(|()| Done {
            stage,
            status,
            entry,
        }),
        Err(failure) => {
            written?;
            Err(Error::StageFailed { stage, failure })
        }
    }
}
