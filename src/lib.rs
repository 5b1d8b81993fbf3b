//! hcpipe: declarative experiment pipelines.
//!
//! The runner's architecture, one folder per concern:
//! - [`artifact`]: the files ops hand to each other, one typed format per file.
//! - [`spec`]: what the user typed (YAML → typed, validated pipeline).
//! - [`dag`]: stage order and stage ids.
//! - [`cache`]: stage keys, the content-addressed store, locks, stat cache.
//! - [`exec`]: the scheduler and its executors.
//! - [`ops`]: the built-in stage kinds; tensor ops run in the `hcpipe-torch` worker.
//! - [`record`]: run records.
//! - [`ui`]: everything printed for people (progress lines, tables).
//! - [`run`]: one `hcpipe run`, from the planned graph to the run record:
//!   the executor, the run's torch worker, the scheduler, the outcome.
//! - [`cli`]: the command line: parses flags (clap) and prints.
//! - [`error`]: the binary's one [`Error`] type and the exit code of each
//!   error (1 a stage or check failed, 2 the user's mistake, 3 the file
//!   system, 4 a program hcpipe relies on, 130 interrupted).

pub mod artifact;
pub mod cache;
pub mod cli;
pub mod dag;
pub mod error;
pub mod exec;
pub mod ops;
pub mod record;
pub mod run;
pub mod spec;
pub mod ui;

pub use error::Error;
