//! A job's live progress: one line per epoch in the file the runner named
//! (`$HCPIPE_PROGRESS` of a `--job` worker, the request's `progress` in a
//! `--serve` worker), in the grammar of [`hcpipe::outcome::Progress`].
//!
//! Its own module, below `job` and the ops (as `cancel` is): `train` reports,
//! `job` says where to, per thread, since a served worker runs several jobs
//! at once, each on its own thread.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use hcpipe::outcome::Progress;

thread_local! {
    /// This thread's job's progress file, opened for appending.
    static SINK: RefCell<Option<File>> = const { RefCell::new(None) };
}

/// Progress reported on this thread goes to `path` (nothing when `None`, or
/// when it cannot be opened: progress never fails a job) until the returned guard drops.
pub fn report_to(path: Option<&Path>) -> Reporting {
    let file = path.and_then(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .ok()
    });
    SINK.with(|s| *s.borrow_mut() = file);
    Reporting(())
}

/// While it lives, [`report`] writes to the file given to [`report_to`].
pub struct Reporting(());

impl Drop for Reporting {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

/// Appends `p` as one line (one write, so a reader never sees half of it);
/// a failed write is dropped.
pub fn report(p: &Progress) {
    SINK.with(|s| {
        if let Some(file) = s.borrow_mut().as_mut() {
            let _ = file.write_all(format!("{}\n", p.line()).as_bytes());
        }
    });
}

/// An epoch of `total` ended (`epoch` counts from 1): its loss, balanced
/// accuracy (classifiers) and seconds; a non-finite loss is reported as such.
pub fn epoch(epoch: usize, total: usize, loss: f64, bacc: Option<f64>, seconds: f64) {
    let mut metrics = vec![("loss".to_string(), loss)];
    if let Some(b) = bacc {
        metrics.push(("bacc".to_string(), b));
    }
    metrics.push(("epoch_s".to_string(), (seconds * 1000.0).round() / 1000.0));
    report(&Progress {
        done: epoch as u64,
        total: total.max(1) as u64,
        metrics,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_lines_the_runner_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        {
            let _reporting = report_to(Some(&path));
            epoch(1, 3, 0.5, Some(0.75), 1.23456);
            epoch(2, 3, f64::NAN, None, 1.0);
        }
        // After the guard: nowhere.
        epoch(3, 3, 0.1, None, 1.0);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Progress> = text.lines().map(|l| Progress::parse(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!((lines[0].done, lines[0].total), (1, 3));
        assert_eq!(
            lines[0].metrics,
            [
                ("loss".to_string(), 0.5),
                ("bacc".to_string(), 0.75),
                ("epoch_s".to_string(), 1.235)
            ]
        );
        assert!(lines[1].metrics[0].1.is_nan());
    }
}
