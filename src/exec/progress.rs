//! Live progress from inside stages: the runner's side of `$HCPIPE_PROGRESS`.
//!
//! Every launched stage gets a file of its own, `<cache>/tmp/progress.<pid>.<n>/<stage>.<k>`
//! ([`Watch::add`]), which the stage appends [`Progress`] lines to: a `cmd` stage through
//! `$HCPIPE_PROGRESS`, the torch worker once per epoch. The file is outside the stage's
//! `{out}` and its path is not in the key (a run's path differs from the next run's, and
//! a key must not). The same file works for every executor: in the cache, it is on the
//! shared file system a Slurm job writes its result to.
//!
//! The scheduler reads what is new in the files of running stages each time it wakes
//! ([`Watch::poll`]: at least every poll interval, so at each Slurm poll) and, when a stage
//! ends, the rest ([`Watch::finish`]), then removes the file. A line that does not parse is
//! skipped here; the job's side counts such lines into the stage's log
//! ([`note_unparsed`]). Nothing here can fail a stage or the run: without a folder for the
//! files, stages run without progress.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::dag::StageId;
use crate::outcome::Progress;

/// A partial line longer than this is dropped (a writer that never ends its
/// lines must not make the runner hold its whole output).
const MAX_LINE: usize = 64 * 1024;

/// New complete lines of one progress file, read from where the last read stopped.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    /// Bytes after the last newline read so far.
    partial: Vec<u8>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The reports written since the last call; with `last`, an unterminated
    /// final line counts too (the writer is gone). Lines that do not parse are skipped.
    pub fn read(&mut self, last: bool) -> Vec<Progress> {
        let mut reports = Vec::new();
        // One stat for a file with nothing new (most polls of most files).
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len == self.offset && (!last || self.partial.is_empty()) {
            return reports;
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return reports;
        };
        if len < self.offset {
            // Truncated by its writer: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len > self.offset && file.seek(SeekFrom::Start(self.offset)).is_ok() {
            let mut bytes = Vec::new();
            if let Ok(n) = file.take(len - self.offset).read_to_end(&mut bytes) {
                self.offset += n as u64;
                self.partial.extend_from_slice(&bytes);
            }
        }
        // Complete lines only, unless the writer is gone: then all of it,
        // the unterminated last line too (even when no poll came between
        // its complete lines and it).
        let end = if last {
            self.partial.len()
        } else {
            self.partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        };
        let complete: Vec<u8> = self.partial.drain(..end).collect();
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        for line in complete.split(|&b| b == b'\n') {
            if let Ok(p) = Progress::parse(&String::from_utf8_lossy(line)) {
                reports.push(p);
            }
        }
        if last {
            self.partial.clear();
        }
        reports
    }
}

/// The progress files of a run's running stages.
pub struct Watch {
    dir: PathBuf,
    tails: BTreeMap<StageId, Tail>,
    next: u64,
    last_poll: Option<Instant>,
}

/// The files are read at most this often (the scheduler may wake for every
/// outcome of a busy run; hundreds of running Slurm jobs are as many files).
const POLL_EVERY: Duration = Duration::from_millis(150);

impl Watch {
    /// A fresh folder in the cache's `tmp/` (named as the cache's staging
    /// folders are, so `gc` removes one a killed run left); `None` when it
    /// cannot be made, and the run goes on without progress.
    pub fn new(cache: &Cache) -> Option<Watch> {
        let dir = cache.root.join("tmp").join(format!(
            "progress.{}.{}",
            std::process::id(),
            crate::cache::fsutil::unique_suffix()
        ));
        match std::fs::create_dir_all(&dir) {
            Ok(()) => Some(Watch {
                dir,
                tails: BTreeMap::new(),
                next: 0,
                last_poll: None,
            }),
            Err(e) => {
                tracing::warn!(
                    "no live progress this run: cannot create {}: {e}",
                    dir.display()
                );
                None
            }
        }
    }

    /// The (empty, existing) progress file for stage `id` launched now.
    pub fn add(&mut self, id: StageId, stage: &str) -> Option<PathBuf> {
        let safe: String = stage
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        self.next += 1;
        let path = self.dir.join(format!("{safe}.{}", self.next));
        std::fs::File::create(&path).ok()?;
        self.tails.insert(id, Tail::new(path.clone()));
        Some(path)
    }

    /// What every running stage reported since the last poll (nothing when
    /// the last poll was less than [`POLL_EVERY`] ago).
    pub fn poll(&mut self) -> Vec<(StageId, Progress)> {
        let mut all = Vec::new();
        if self.last_poll.is_some_and(|t| t.elapsed() < POLL_EVERY) {
            return all;
        }
        self.last_poll = Some(Instant::now());
        for (id, tail) in self.tails.iter_mut() {
            all.extend(tail.read(false).into_iter().map(|p| (*id, p)));
        }
        all
    }

    /// Stage `id` ended: what it reported last, and its file goes.
    pub fn finish(&mut self, id: StageId) -> Vec<Progress> {
        let Some(mut tail) = self.tails.remove(&id) else {
            return Vec::new();
        };
        let reports = tail.read(true);
        let _ = std::fs::remove_file(&tail.path);
        reports
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes sure the progress file at `path` exists before the stage starts,
/// so that a stage's `>> "$HCPIPE_PROGRESS"` cannot fail (under `set -e`,
/// it would fail the stage) even when the runner's folder is gone: a
/// runner killed while its Slurm jobs run, a `gc` meanwhile. A file made
/// here for nobody is in a folder `gc` removes.
pub fn prepare(path: &Path) {
    if path.exists() {
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path);
}

/// How many non-blank lines of the progress file at `path` do not parse,
/// and the first of them with why.
pub fn unparsed(path: &Path) -> (u64, Option<(String, String)>) {
    let Ok(file) = std::fs::File::open(path) else {
        return (0, None);
    };
    let (mut count, mut first) = (0, None);
    for line in std::io::BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        if let Err(why) = Progress::parse(&text) {
            count += 1;
            if first.is_none() {
                let shown: String = text.chars().take(200).collect();
                first = Some((shown, why));
            }
        }
    }
    (count, first)
}

/// Appends to the stage's `log` how many lines of its progress file did not
/// parse (nothing when all did): they were ignored, and this is where they
/// are counted.
pub fn note_unparsed(progress: &Path, log: &Path) {
    let (count, first) = unparsed(progress);
    let Some((line, why)) = first else { return };
    let text = format!(
        "hcpipe: {count} line(s) written to ${} were ignored because they do not parse; the \
         first, `{line}`: {why} (a progress line reads `progress DONE/TOTAL [NAME=NUMBER ...]`)\n",
        crate::outcome::PROGRESS_ENV
    );
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log);
    if let Ok(mut file) = file {
        use std::io::Write;
        let _ = file.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn a_tail_reads_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut tail = Tail::new(path.clone());
        assert!(tail.read(false).is_empty(), "no file yet");
        append(&path, "progress 1/3 loss=1\ngarbage\nprogress 2/");
        let got: Vec<u64> = tail.read(false).iter().map(|p| p.done).collect();
        assert_eq!(got, [1], "the unfinished line waits");
        append(&path, "3\n\nprogress 3/3");
        let got: Vec<u64> = tail.read(false).iter().map(|p| p.done).collect();
        assert_eq!(got, [2]);
        let got: Vec<u64> = tail.read(true).iter().map(|p| p.done).collect();
        assert_eq!(got, [3], "the last read takes an unterminated line");
        assert!(tail.read(true).is_empty());
        // A writer that truncates starts over.
        std::fs::write(&path, "progress 1/2\n").unwrap();
        let got: Vec<u64> = tail.read(false).iter().map(|p| p.done).collect();
        assert_eq!(got, [1]);
    }

    #[test]
    fn the_last_read_takes_complete_and_unterminated_lines_alike() {
        // No poll came between the stage's writes and its end (a busy
        // machine): the final read sees complete lines and an unterminated
        // last one at once. tests/progress.rs failed in CI this way.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut tail = Tail::new(path.clone());
        append(&path, "progress 1/2\nprogress 2/2");
        let got: Vec<u64> = tail.read(true).iter().map(|p| p.done).collect();
        assert_eq!(got, [1, 2]);
        assert!(tail.partial.is_empty());
    }

    #[test]
    fn a_tail_drops_an_endless_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut tail = Tail::new(path.clone());
        append(&path, &"x".repeat(MAX_LINE + 1));
        assert!(tail.read(false).is_empty());
        assert!(tail.partial.is_empty());
        append(&path, "\nprogress 1/1\n");
        assert_eq!(tail.read(false).len(), 1);
    }

    #[test]
    fn unparsed_lines_are_counted_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (progress, log) = (dir.path().join("p"), dir.path().join("log"));
        std::fs::write(&log, "the stage's output\n").unwrap();
        std::fs::write(
            &progress,
            "progress 1/2\n\nnot progress\nprogress 2/2\nprogress 3/2",
        )
        .unwrap();
        assert_eq!(unparsed(&progress).0, 2);
        note_unparsed(&progress, &log);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("the stage's output\n"), "{text}");
        assert!(
            text.contains("hcpipe: 2 line(s) written to $HCPIPE_PROGRESS were ignored")
                && text.contains("`not progress`"),
            "{text}"
        );
        // All good: the log is left alone.
        std::fs::write(&progress, "progress 1/2\n").unwrap();
        std::fs::write(&log, "x").unwrap();
        note_unparsed(&progress, &log);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "x");
    }

    #[test]
    fn a_progress_file_is_there_when_the_stage_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.1.x/s.1");
        prepare(&path);
        assert!(path.is_file());
        std::fs::write(&path, "progress 1/2\n").unwrap();
        prepare(&path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "progress 1/2\n");
    }

    #[test]
    fn a_watch_hands_out_files_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let mut watch = Watch::new(&cache).unwrap();
        let a = watch.add(StageId(0), "train/a b").unwrap();
        let b = watch.add(StageId(1), "train/a b").unwrap();
        assert_ne!(a, b);
        assert!(a.is_file() && !a.starts_with(dir.path().join("artifacts")));
        append(&a, "progress 1/2\n");
        append(&b, "progress 2/2\n");
        let got: Vec<(usize, u64)> = watch.poll().iter().map(|(i, p)| (i.0, p.done)).collect();
        assert_eq!(got, [(0, 1), (1, 2)]);
        append(&a, "progress 2/2");
        // Too soon after the last poll: read at the stage's end, not now.
        watch.last_poll = Some(Instant::now());
        assert!(watch.poll().is_empty());
        assert_eq!(watch.finish(StageId(0)).len(), 1);
        assert!(!a.exists());
        let folder = a.parent().unwrap().to_path_buf();
        drop(watch);
        assert!(!folder.exists());
    }
}
