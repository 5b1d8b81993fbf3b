//! Run records: one JSON file per `hcpipe run`, rewritten atomically as
//! stages finish (at most every half second, less often when a rewrite is
//! slow: see `exec`'s RECORD_SHARE; and at the end), so even a
//! killed run leaves an account of what it finished (the cache entries, not
//! the record, are what a next run continues from). `show`, `diff` and `gc` read them.

pub mod fresh;
pub mod gc;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::fsutil::write_atomic_with;
use crate::cache::{Cache, CacheError, Entry, StageKey};
use crate::git;
use crate::ops::{Metrics, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    Ran,
    Cached,
    /// Not in the local cache: its result came from the remote cache.
    Pulled,
    Failed,
    /// Not run because an upstream stage failed.
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Pulled => "pulled",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
        }
    }
}

/// How a run ended, or that it has not (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Its runner is still at work (or was killed: see [`list_runs`]).
    Running,
    /// Every stage ran or was cached.
    Ok,
    /// At least one stage failed.
    Failed,
    /// Stopped by Ctrl-C or SIGTERM, or its runner is gone.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    pub status: RunStatus,
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
        write_atomic_with(&Self::path(cache, &self.id), |f| {
            serde_json::to_writer_pretty(f, self).map_err(std::io::Error::other)
        })
    }

    /// One stage's record (a scan: for many lookups use [`RunRecord::by_name`]).
    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// Every stage's record by name (the first, as [`RunRecord::stage`] finds it).
    pub fn by_name(&self) -> std::collections::HashMap<&str, &StageRecord> {
        let mut map = std::collections::HashMap::with_capacity(self.stages.len());
        for s in &self.stages {
            map.entry(s.stage.as_str()).or_insert(s);
        }
        map
    }

    /// How many of its stages ended with `status`.
    pub fn count(&self, status: StageStatus) -> usize {
        self.stages.iter().filter(|s| s.status == status).count()
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
        if run.status == RunStatus::Running && gone {
            run.status = RunStatus::Interrupted;
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

/// The newest result a run of this pipeline recorded for `stage` whose
/// entry the cache still holds (`show PIPELINE` when the current key is not
/// cached).
pub fn newest_entry(cache: &Cache, pipeline_path: &Path, stage: &str) -> Option<Entry> {
    runs_of(cache, pipeline_path)
        .iter()
        .rev()
        .filter_map(|r| r.stage(stage))
        .find_map(|st| cache.entry(&st.key).ok().flatten())
}

/// The `report.html` of the newest run with a `report` op stage whose
/// artifact is still in the cache (stage records carry keys, not ops: the
/// op is in the key's cache entry).
pub fn newest_report(cache: &Cache, runs: &[RunRecord]) -> Option<PathBuf> {
    runs.iter().rev().find_map(|run| {
        run.stages.iter().find_map(|st| {
            let entry = cache.entry(&st.key).ok().flatten()?;
            let page = cache.artifact_dir(&st.key).join("report.html");
            (entry.inputs.op().as_deref() == Some("report") && page.is_file()).then_some(page)
        })
    })
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

    #[test]
    fn run_status_reads_and_writes_the_words_records_hold() {
        for (status, word) in [
            (RunStatus::Running, "running"),
            (RunStatus::Ok, "ok"),
            (RunStatus::Failed, "failed"),
            (RunStatus::Interrupted, "interrupted"),
        ] {
            let json = format!("\"{word}\"");
            assert_eq!(serde_json::to_string(&status).unwrap(), json);
            assert_eq!(serde_json::from_str::<RunStatus>(&json).unwrap(), status);
            assert_eq!(status.to_string(), word);
        }
    }
}
