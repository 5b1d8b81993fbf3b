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
    let cache = Cache::open(&job.cache).map_err(|e| failed(Some(&job), e.into()))?;
    let _use = cache.use_lock().map_err(|e| failed(Some(&job), e.into()))?;
    let stat = Mutex::new(StatCache::load(cache.stat_cache_path()));
    let outcome = run_job(&cache, &job.job, &stat, None);
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
