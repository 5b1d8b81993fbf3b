//! Run records: one JSON file per `hcpipe run`, rewritten atomically as
//! stages finish (at most every half second, less often when a rewrite is
//! slow: see `exec`'s RECORD_SHARE; and at the end), so even a
//! killed run leaves an account of what it finished (the cache entries, not
//! the record, are what a next run continues from). `show`, `diff` and `gc` read them.

pub mod fresh;
pub mod gc;
pub mod history;
mod summary;

pub use summary::RunSummary;

use std::io::Write;
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

    /// Write the record: one run field per line, and each element of a
    /// list field (the stages) on a line of its own, compact. A 100,000-stage
    /// record is a quarter smaller than with every field indented (a run
    /// writes one each time), and a stage's line can be found with `grep`.
    pub fn save(&self, cache: &Cache) -> Result<(), CacheError> {
        write_atomic_with(&Self::path(cache, &self.id), |f| {
            let mut ser = serde_json::Serializer::with_formatter(&mut *f, LineFormatter::default());
            self.serialize(&mut ser).map_err(std::io::Error::other)?;
            f.write_all(b"\n")
        })
    }

    /// How many of its stages ended with `status`.
    pub fn count(&self, status: StageStatus) -> usize {
        self.stages.iter().filter(|s| s.status == status).count()
    }
}

/// serde_json's layout for run records: the top object's fields one per
/// line, the elements of a list among them one per line, and everything
/// deeper compact (serde_json offers all-pretty or all-compact only).
#[derive(Default)]
struct LineFormatter {
    /// Objects and lists open around the value being written.
    depth: usize,
    /// Per open list: whether it has an element yet (to close it on its own line).
    filled: Vec<bool>,
}

impl serde_json::ser::Formatter for LineFormatter {
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth -= 1;
        w.write_all(if self.depth == 0 { b"\n}" } else { b"}" })
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        w.write_all(match (self.depth, first) {
            (1, true) => b"\n  ",
            (1, false) => b",\n  ",
            (_, true) => b"",
            (_, false) => b",",
        })
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(if self.depth == 1 { b": " } else { b":" })
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        self.filled.push(false);
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        let filled = self.filled.pop().unwrap_or(false);
        self.depth -= 1;
        w.write_all(if self.depth == 1 && filled {
            b"\n  ]"
        } else {
            b"]"
        })
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if let Some(filled) = self.filled.last_mut() {
            *filled = true;
        }
        w.write_all(match (self.depth, first) {
            (2, true) => b"\n    ",
            (2, false) => b",\n    ",
            (_, true) => b"",
            (_, false) => b",",
        })
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
    let mut runs: Vec<RunRecord> = read_all(cache);
    for run in &mut runs {
        run.status = seen_status(run.status, run.runner.as_ref());
    }
    runs
}

/// Every readable run record's summary, oldest first: for listing runs,
/// where whole records would be read into memory for a count.
pub fn list_summaries(cache: &Cache) -> Vec<RunSummary> {
    let mut runs: Vec<RunSummary> = read_all(cache);
    for run in &mut runs {
        run.status = seen_status(run.status, run.runner.as_ref());
    }
    runs
}

/// The files of `runs/` that hold records (`ID.json`), oldest first: run
/// ids sort by time.
fn record_files(cache: &Cache) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache.runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// Every record that can be read as `T`, oldest first.
fn read_all<T: serde::de::DeserializeOwned>(cache: &Cache) -> Vec<T> {
    record_files(cache)
        .iter()
        .filter_map(|path| read_record(path))
        .collect()
}

fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A `running` record whose runner is gone (killed, or a second Ctrl-C) reads `interrupted`.
fn seen_status(status: RunStatus, runner: Option<&Runner>) -> RunStatus {
    let gone = runner.is_some_and(|r| !r.is_alive());
    if status == RunStatus::Running && gone {
        RunStatus::Interrupted
    } else {
        status
    }
}

/// Find a run by id or unique id prefix. A record is named by its id, so
/// only the one found is read.
pub fn find_run(cache: &Cache, id: &str) -> Result<RunRecord, String> {
    let ids: Vec<String> = record_files(cache)
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .filter(|stem| stem.starts_with(id))
        .collect();
    match ids.as_slice() {
        [one] => {
            let mut run: RunRecord =
                read_record(&RunRecord::path(cache, one)).ok_or_else(|| {
                    format!(
                    "the record of run `{one}` in {} cannot be read (cut short by a full disk?); \
                     `hcpipe show` lists the runs that can",
                    cache.runs_dir().display()
                )
                })?;
            run.status = seen_status(run.status, run.runner.as_ref());
            Ok(run)
        }
        [] => Err(format!(
            "no run `{id}` in {}; `hcpipe show` lists the runs",
            cache.runs_dir().display()
        )),
        many => Err(format!("run id `{id}` is ambiguous: {}", many.join(", "))),
    }
}

/// The newest result a run of this pipeline recorded for `stage` whose
/// entry the cache still holds (`show PIPELINE` when the current key is not
/// cached).
pub fn newest_entry(cache: &Cache, pipeline_path: &Path, stage: &str) -> Option<Entry> {
    let mut newest = None;
    history::each_run(
        cache,
        pipeline_path,
        &[stage],
        history::Order::NewestFirst,
        |_, found| {
            // The run's first record of the stage.
            newest = found
                .first()
                .and_then(|(_, key)| cache.entry(key).ok().flatten());
            if newest.is_some() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        },
    );
    newest
}

/// The `report.html` of the newest run with a `report` op stage whose
/// artifact is still in the cache.
pub fn newest_report(cache: &Cache, runs: &[RunSummary]) -> Option<PathBuf> {
    runs.iter().rev().find_map(|run| {
        run.report_keys().iter().find_map(|key| {
            let page = cache.artifact_dir(key).join("report.html");
            (cache.entry_path(key).is_file() && page.is_file()).then_some(page)
        })
    })
}

/// A finished run's record with these stages, for tests.
#[cfg(test)]
pub(crate) fn record_for_test(
    id: &str,
    pipeline_path: &str,
    stages: Vec<StageRecord>,
) -> RunRecord {
    RunRecord {
        id: id.into(),
        pipeline: "p".into(),
        pipeline_path: pipeline_path.into(),
        pipeline_hash: "h".into(),
        git: None,
        params: Default::default(),
        executor: "local".into(),
        started: "2026-11-30T00:00:00Z".into(),
        finished: None,
        status: RunStatus::Ok,
        hcpipe_version: "0".into(),
        runner: None,
        stages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_record_has_a_line_per_stage_and_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let stage = |name: &str, status| StageRecord {
            stage: name.into(),
            op: Some("crop".into()),
            params: [("shift".to_string(), serde_json::json!([1, {"a": "b\n"}]))]
                .into_iter()
                .collect(),
            key: StageKey(format!("{:064x}", name.len()).into()),
            status,
            wall_s: 0.25,
            metrics: Default::default(),
            error: None,
        };
        let mut record = record_for_test("20261130-000000-000-abcdef", "/x/p.yaml", Vec::new());
        record.params = [("lr".to_string(), serde_json::json!(0.1))]
            .into_iter()
            .collect();
        record.runner = Runner::this_process();
        for stages in [
            vec![],
            vec![
                stage("a", StageStatus::Ran),
                stage("b[x=1]", StageStatus::Cached),
            ],
        ] {
            record.stages = stages;
            record.save(&cache).unwrap();
            let text = std::fs::read_to_string(RunRecord::path(&cache, &record.id)).unwrap();
            let back: RunRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&record).unwrap()
            );
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines[0], "{");
            assert!(lines.contains(&"  \"params\": {\"lr\":0.1},"), "{text}");
            for s in &record.stages {
                let line = format!("    {}", serde_json::to_string(s).unwrap());
                assert!(
                    lines.iter().any(|l| l.trim_end_matches(',') == line),
                    "{text}"
                );
            }
            assert_eq!(lines.last(), Some(&"}"));
        }
    }

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
