//! hcpipe: declarative experiment pipelines.
//!
//! The runner's architecture, one module per concern; each imports only the modules listed
//! before it (README "Layout"; `tests/module_graph.rs` fails on a cycle):
//! - [`artifact`]: the files ops hand to each other, one typed format per file.
//! - [`stats`]: statistical tests on plain numbers (balance of two parts of a population,
//!   paired tests for `diff`).
//! - [`suggest`]: "did you mean": the valid name nearest to a typo.
//! - [`ops`]: the built-in stage kinds and the torch ops' table; tensor ops run in the
//!   `hcpipe-torch` worker.
//! - [`cache`]: stage keys, the content-addressed store, locks, stat cache.
//! - [`git`]: the git state of a pipeline file, and files as they were at a revision.
//! - [`spec`]: what the user typed (YAML → typed, validated pipeline).
//! - [`dag`]: stage order and stage ids.
//! - [`plan`]: every stage's key known before running, and whether it is cached.
//! - [`record`]: run records, freshness (`status`), gc.
//! - [`outcome`]: what became of a stage's execution.
//! - [`ui`]: everything printed for people (progress lines, tables).
//! - [`exec`]: the scheduler and its executors.
//! - [`diff`]: `hcpipe diff`.
//! - [`error`]: the binary's one [`Error`] type and the exit code of each
//!   error (1 a stage or check failed, 2 the user's mistake, 3 the file
//!   system, 4 a program hcpipe relies on, 130 interrupted).
//! - [`run`]: one `hcpipe run`, from the planned graph to the run record:
//!   the executor, the run's torch worker, the scheduler, the outcome.
//! - [`cli`]: the command line: parses flags (clap) and prints.

pub mod artifact;
pub mod cache;
pub mod cli;
pub mod dag;
pub mod diff;
pub mod error;
pub mod exec;
pub mod git;
pub mod ops;
pub mod outcome;
pub mod plan;
pub mod record;
pub mod remote;
pub mod run;
pub mod spec;
pub mod stats;
pub mod suggest;
pub mod ui;

pub use error::Error;
