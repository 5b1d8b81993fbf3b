//! The one error type of the `hcpipe` binary, and the exit code each error
//! means. `main` prints the error (one paragraph, `error: …`) and exits with
//! [`Error::exit_code`]; nothing else picks an exit code.
//!
//! | code | meaning | variants |
//! |---|---|---|
//! | 0 | success | |
//! | 1 | a stage or a check failed | [`Error::RunFailed`], [`Error::StageFailed`], [`Error::CheckFailed`] |
//! | 2 | the user's mistake: the pipeline file, a flag, an unknown stage, run or revision, `gc` while a run uses the cache | [`Error::Spec`], [`Error::Usage`], [`Error::Args`], and [`CacheError`]/[`GitError`] variants that say so |
//! | 3 | the file system: I/O, a full disk, a failed fsync, an unreadable cache entry | [`Error::Io`], other [`CacheError`]s |
//! | 4 | a program or service hcpipe relies on: Slurm (`sbatch`), git, the torch worker, the remote cache (unreachable, refused credentials, or holding corrupt data) | [`Error::Slurm`], [`Error::TorchWorker`], [`GitError::Spawn`], [`Error::Remote`] |
//! | 101 | a bug in hcpipe | [`Error::Internal`] |
//! | 130 | interrupted (Ctrl-C, SIGTERM) | [`Error::Interrupted`] |

use std::fmt::Write as _;
use std::io::Write as _;

use crate::cache::CacheError;
use crate::git::GitError;
use crate::outcome::Failure;
use crate::remote::RemoteError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `hcpipe run`: some stages failed (each with its log tail).
    #[error("run {id} failed\n{}", render_failures(.failures))]
    RunFailed {
        id: String,
        /// (stage, failure) in the order they happened.
        failures: Vec<(String, Failure)>,
    },
    /// `hcpipe exec`: the job's one stage failed.
    #[error("stage `{stage}` failed: {}{}", .failure.message, tail_after(&.failure.log_tail))]
    StageFailed { stage: String, failure: Failure },
    /// A check found problems it has already listed (`verify`).
    #[error("{0}")]
    CheckFailed(String),
    /// Ctrl-C or SIGTERM stopped the run; the record says `interrupted`.
    #[error("run {id} interrupted")]
    Interrupted { id: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A flag, or a name given on the command line, that does not fit.
    #[error("{0}")]
    Usage(String),
    /// The command line did not parse (clap renders it).
    #[error("{0}")]
    Args(clap::Error),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// A file-system step outside the cache's own (a job file, a result file).
    #[error("{0}")]
    Io(String),
    /// `--executor slurm` cannot submit jobs from here.
    #[error("{0}")]
    Slurm(String),
    /// The torch worker cannot be found or started.
    #[error("{0}")]
    TorchWorker(String),
    /// The remote cache (`--remote`): a bad URL (2), the server or its data (4).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("internal error: {0} (a bug in hcpipe; please report it)")]
    Internal(String),
}

impl Error {
    /// The process's exit status for this error (the table in the module doc).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::RunFailed { .. } | Error::StageFailed { .. } | Error::CheckFailed(_) => 1,
            Error::Spec(_) | Error::Usage(_) | Error::Args(_) => 2,
            Error::Cache(e) => match e {
                CacheError::MissingDep { .. } | CacheError::Busy { .. } => 2,
                CacheError::Io { .. } | CacheError::BadEntry { .. } | CacheError::Msg(_) => 3,
            },
            Error::Git(e) => match e {
                GitError::Spawn(_) => 4,
                GitError::NotInWorkTree(_) | GitError::Failed { .. } | GitError::NotUtf8(_) => 2,
            },
            Error::Io(_) => 3,
            Error::Slurm(_) | Error::TorchWorker(_) => 4,
            Error::Remote(e) => match e {
                RemoteError::Config(_) => 2,
                RemoteError::Service(_) | RemoteError::Corrupt(_) => 4,
                RemoteError::Cache(_) => 3,
            },
            Error::Internal(_) => 101,
            Error::Interrupted { .. } => 130,
        }
    }

    /// Print the error for people on stderr: clap's own rendering for a bad
    /// command line, else `error: ` and the paragraph.
    pub fn print(&self) {
        match self {
            Error::Args(e) => {
                let _ = e.print();
            }
            other => {
                let _ = writeln!(std::io::stderr(), "error: {other}");
            }
        }
    }
}

/// Each failed stage: its message, its log's last lines, where the whole log is.
fn render_failures(failures: &[(String, Failure)]) -> String {
    let mut msg = String::new();
    for (stage, f) in failures {
        let _ = writeln!(msg, "stage `{stage}` failed: {}", f.message);
        for l in f.log_tail.lines() {
            let _ = writeln!(msg, "  | {l}");
        }
        if let Some(log) = &f.log {
            let _ = writeln!(msg, "  full log: {}", log.display());
        }
    }
    msg.trim_end().to_string()
}

fn tail_after(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(message: &str, log_tail: &str) -> Failure {
        Failure {
            message: message.into(),
            log_tail: log_tail.into(),
            log: Some("/c/logs/k.log".into()),
        }
    }

    #[test]
    fn each_kind_of_error_has_its_exit_code() {
        let io = || std::io::Error::other("boom");
        let cases: Vec<(Error, i32)> = vec![
            (
                Error::RunFailed {
                    id: "r".into(),
                    failures: vec![],
                },
                1,
            ),
            (Error::CheckFailed("2 problems".into()), 1),
            (Error::Spec(SpecError::new("p.yaml:1:1: bad")), 2),
            (Error::Usage("--jobs 0: give at least 1".into()), 2),
            (Error::Cache(CacheError::Busy { root: "/c".into() }), 2),
            (Error::Cache(CacheError::io("/c/runs/r.json", io())), 3),
            (Error::Io("cannot write /c/slurm/x.result.json".into()), 3),
            (Error::Git(GitError::Spawn(io())), 4),
            (Error::Git(GitError::NotInWorkTree("p.yaml".into())), 2),
            (Error::Slurm("no sbatch".into()), 4),
            (Error::TorchWorker("no worker".into()), 4),
            (
                Error::Remote(RemoteError::Config("s3:// needs a bucket".into())),
                2,
            ),
            (Error::Remote(RemoteError::Service("refused".into())), 4),
            (Error::Remote(RemoteError::Corrupt("bad bytes".into())), 4),
            (Error::Internal("x".into()), 101),
            (Error::Interrupted { id: "r".into() }, 130),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }

    #[test]
    fn a_failed_run_lists_each_stage_with_its_log_tail() {
        let e = Error::RunFailed {
            id: "20260101-000000-000-abcdef".into(),
            failures: vec![("bad".into(), failure("exited with status 3", "a\nb\n"))],
        };
        assert_eq!(
            e.to_string(),
            "run 20260101-000000-000-abcdef failed\nstage `bad` failed: exited with status 3\n  | a\n  | b\n  full log: /c/logs/k.log"
        );
        let e = Error::StageFailed {
            stage: "bad".into(),
            failure: failure("exited with status 3", "the real reason"),
        };
        assert_eq!(
            e.to_string(),
            "stage `bad` failed: exited with status 3\nthe real reason"
        );
    }
}
