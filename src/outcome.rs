//! What became of a stage's execution: [`Outcome`], and [`Failure`] (why it did not finish).
//!
//! Its own module because both sides of the run need it: the executors (`exec`) produce
//! outcomes, and the progress reporter (`report`) prints them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::Entry;
use crate::record::StageStatus;

/// Why a stage did not finish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
    /// The last lines of its output, when it had any.
    pub log_tail: String,
    pub log: Option<PathBuf>,
}

impl Failure {
    pub(crate) fn msg(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            log_tail: String::new(),
            log: None,
        }
    }
}

/// A stage's result: ran or cached, with its cache entry; or why not.
pub type Outcome = Result<(StageStatus, Entry), Failure>;

/// The last `n` lines of a file (for logs written elsewhere, e.g. by Slurm).
pub fn tail(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    last_lines(&String::from_utf8_lossy(&bytes), n)
}

/// The last `n` lines of `text`, joined by newlines.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
