//! What became of a stage's execution: [`Outcome`], and [`Failure`] (why it did not finish);
//! and what a running stage reports on the way, [`Progress`] (its line grammar).
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

/// What a running stage reports about itself, one line at a time, in the
/// file named by `$HCPIPE_PROGRESS` (the torch worker writes one per epoch;
/// a `cmd` stage may write its own). The grammar, one line per report:
///
/// ```text
/// progress DONE/TOTAL [NAME=NUMBER ...]
/// ```
///
/// `DONE` and `TOTAL` are whole numbers with `1 <= TOTAL` and `DONE <= TOTAL`;
/// each `NAME` is a letter or `_` then letters, digits, `_`, `.` or `-` (at
/// most 64), given once; each `NUMBER` is a decimal number (`nan` and `inf`
/// are accepted, and shown as null in JSON). Words are separated by spaces
/// or tabs. Blank lines are skipped; any other line that does not parse is
/// ignored and counted in the stage's log: progress never fails a stage.
/// None of it is in a stage's key.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    /// In the order written.
    pub metrics: Vec<(String, f64)>,
}

/// The variable that names a stage's progress file.
pub const PROGRESS_ENV: &str = "HCPIPE_PROGRESS";

/// Longest metric name a progress line may carry.
const MAX_METRIC_NAME: usize = 64;

impl Progress {
    /// Parses one line (without its newline); the error says what is wrong.
    pub fn parse(line: &str) -> Result<Progress, String> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("progress") {
            return Err("does not start with `progress`".into());
        }
        let count = words.next().ok_or("no DONE/TOTAL after `progress`")?;
        let (done, total) = count
            .split_once('/')
            .ok_or_else(|| format!("`{count}` is not DONE/TOTAL"))?;
        let whole = |s: &str| {
            // `u64::from_str` takes a leading `+`; the grammar does not.
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{s}` in `{count}` is not a whole number"));
            }
            s.parse::<u64>()
                .map_err(|_| format!("`{s}` in `{count}` is too large"))
        };
        let (done, total) = (whole(done)?, whole(total)?);
        if total == 0 {
            return Err(format!("`{count}`: TOTAL must be at least 1"));
        }
        if done > total {
            return Err(format!("`{count}`: DONE is larger than TOTAL"));
        }
        let mut metrics: Vec<(String, f64)> = Vec::new();
        for word in words {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("`{word}` is not NAME=NUMBER"))?;
            if !metric_name_ok(name) {
                return Err(format!(
                    "`{name}` is not a metric name (a letter or `_`, then letters, digits, `_`, \
                     `.` or `-`; at most {MAX_METRIC_NAME})"
                ));
            }
            // Only what looks like a number: Rust's float parser also takes
            // `infinity`, which is fine, but nothing else.
            let value: f64 = value
                .parse()
                .map_err(|_| format!("`{value}` (metric `{name}`) is not a number"))?;
            if metrics.iter().any(|(n, _)| n == name) {
                return Err(format!("metric `{name}` is given twice"));
            }
            metrics.push((name.to_string(), value));
        }
        Ok(Progress {
            done,
            total,
            metrics,
        })
    }

    /// The line [`Progress::parse`] reads back (without a newline).
    pub fn line(&self) -> String {
        let mut text = format!("progress {}/{}", self.done, self.total);
        for (name, value) in &self.metrics {
            text.push_str(&format!(" {name}={value}"));
        }
        text
    }

    /// The metrics as a JSON object (a non-finite number as null).
    pub fn metrics_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.metrics
            .iter()
            .map(|(name, value)| {
                let v = serde_json::Number::from_f64(*value)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number);
                (name.clone(), v)
            })
            .collect()
    }
}

fn metric_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && name.len() <= MAX_METRIC_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_parse() {
        let p = Progress::parse("progress 12/30 loss=0.31 bacc=0.7 epoch_s=1.5e0").unwrap();
        assert_eq!((p.done, p.total), (12, 30));
        assert_eq!(
            p.metrics,
            [
                ("loss".to_string(), 0.31),
                ("bacc".to_string(), 0.7),
                ("epoch_s".to_string(), 1.5)
            ]
        );
        let bare = Progress::parse("  progress\t0/1 ").unwrap();
        assert_eq!((bare.done, bare.total, bare.metrics.len()), (0, 1, 0));
        let odd = Progress::parse("progress 1/1 val.loss=nan g-norm=-inf _x=3").unwrap();
        assert!(odd.metrics[0].1.is_nan());
        assert_eq!(odd.metrics[1].1, f64::NEG_INFINITY);
        assert_eq!(
            odd.metrics_json(),
            serde_json::json!({"val.loss": null, "g-norm": null, "_x": 3.0})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn progress_lines_round_trip() {
        let p = Progress {
            done: 3,
            total: 30,
            metrics: vec![("loss".into(), 0.6931471805599461), ("bacc".into(), 0.5)],
        };
        assert_eq!(p.line(), "progress 3/30 loss=0.6931471805599461 bacc=0.5");
        assert_eq!(Progress::parse(&p.line()).unwrap(), p);
    }

    #[test]
    fn bad_progress_lines_say_why() {
        for (line, why) in [
            ("", "does not start with `progress`"),
            ("epoch 1/3", "does not start with `progress`"),
            ("progress", "no DONE/TOTAL"),
            ("progress 3", "not DONE/TOTAL"),
            ("progress 3/x", "not a whole number"),
            ("progress +3/4", "not a whole number"),
            ("progress -1/4", "not a whole number"),
            ("progress 1/0", "at least 1"),
            ("progress 5/4", "DONE is larger"),
            ("progress 1/99999999999999999999", "too large"),
            ("progress 1/2 loss", "not NAME=NUMBER"),
            ("progress 1/2 loss=abc", "is not a number"),
            ("progress 1/2 loss=", "is not a number"),
            ("progress 1/2 =3", "not a metric name"),
            ("progress 1/2 1x=3", "not a metric name"),
            ("progress 1/2 a/b=3", "not a metric name"),
            ("progress 1/2 a=1 a=2", "given twice"),
        ] {
            let err = Progress::parse(line).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
        let long = format!("progress 1/2 {}=1", "a".repeat(MAX_METRIC_NAME + 1));
        assert!(Progress::parse(&long).is_err());
    }
}
