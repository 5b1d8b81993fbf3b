//! Run records: one JSON file per `hcpipe run`, rewritten atomically after
//! every finished stage, so even a killed run leaves an account of what it
//! finished. `show`, `diff` and `gc` read them.

pub mod fresh;
pub mod gc;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::fsutil::write_atomic;
use crate::cache::{Cache, CacheError, StageKey};
use crate::git;
use crate::ops::{Metrics, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ran,
    Cached,
    Failed,
    /// Not run because an upstream stage failed.
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: String,
    /// The op that made it (absent for `cmd` stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The stage's resolved params (after `${…}` and `--set`).
    #[serde(default)]
    pub params: Params,
    pub key: StageKey,
    pub status: StageStatus,
    pub wall_s: f64,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    pub pipeline_path: String,
    pub pipeline_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<git::GitState>,
    pub params: Params,
    pub executor: String,
    pub started: String,
    #[serde(default)]
    pub finished: Option<String>,
    /// running | ok | failed | interrupted
    pub status: String,
    pub hcpipe_version: String,
    /// The process writing the record while it runs: a `running` record
    /// whose runner is gone (killed, or a second Ctrl-C) reads `interrupted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
    pub stages: Vec<StageRecord>,
}

/// A process, told apart from a later one that reuses its pid by its start time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runner {
    pub pid: u32,
    /// Clock ticks since boot at which it started (`/proc/PID/stat`, field 22).
    pub start: u64,
}

impl Runner {
    pub fn this_process() -> Option<Runner> {
        let pid = std::process::id();
        Some(Runner {
            pid,
            start: start_ticks(pid)?,
        })
    }

    pub fn is_alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl RunRecord {
    pub fn path(cache: &Cache, id: &str) -> PathBuf {
        cache.runs_dir().join(format!("{id}.json"))
    }

    pub fn save(&self, cache: &Cache) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| CacheError::Msg(e.to_string()))?;
        write_atomic(&Self::path(cache, &self.id), &bytes)
    }

    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.stage == name)
    }
}

/// A new run id: sortable by time, unique across concurrent runs.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).collect();
    let salt = blake3::hash(format!("{:?}{}", now, std::process::id()).as_bytes()).to_hex();
    // 20261126-203548-123-3da743: date, time, milliseconds, salt.
    let part = |a: usize, b: usize| digits.get(a..b).unwrap_or("");
    format!(
        "{}-{}-{}-{}",
        part(0, 8),
        part(8, 14),
        part(14, 17),
        &salt[..6]
    )
}

/// Every readable run record, oldest first.
pub fn list_runs(cache: &Cache) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = std::fs::read_dir(cache.runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<RunRecord>(&b).ok())
        .collect();
    for run in &mut runs {
        let gone = run.runner.as_ref().is_some_and(|r| !r.is_alive());
        if run.status == "running" && gone {
            run.status = "interrupted".into();
        }
    }
    runs.sort_by(|a, b| a.id.cmp(&b.id));
    runs
}

/// Find a run by id or unique id prefix.
pub fn find_run(cache: &Cache, id: &str) -> Result<RunRecord, String> {
    let runs = list_runs(cache);
    let matches: Vec<&RunRecord> = runs.iter().filter(|r| r.id.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no run `{id}` in {}; `hcpipe show` lists the runs",
            cache.runs_dir().display()
        )),
        many => Err(format!(
            "run id `{id}` is ambiguous: {}",
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The runs of one pipeline file, oldest first.
pub fn runs_of(cache: &Cache, pipeline_path: &Path) -> Vec<RunRecord> {
    let p = pipeline_path.display().to_string();
    list_runs(cache)
        .into_iter()
        .filter(|r| r.pipeline_path == p)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Runner::this_process().unwrap();
        assert!(me.is_alive());
        let reused = Runner {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!reused.is_alive());
    }
}
