//! hcpipe: declarative experiment pipelines.
//!
//! The runner's architecture, one module per concern; each imports only the modules listed
//! before it (README "Layout"; `tests/module_graph.rs` fails on a cycle):
//! - [`ops`]: the built-in stage kinds and the torch ops' table; tensor ops run in the
//!   `hcpipe-torch` worker.
//! - [`cache`]: stage keys, the content-addressed store, locks, stat cache.
//! - [`git`]: the git state of a pipeline file, and files as they were at a revision.
//! - [`spec`]: what the user typed (YAML → typed, validated pipeline).
//! - [`dag`]: stage order and stage ids.
//! - [`plan`]: every stage's key known before running, and whether it is cached.
//! - [`record`]: run records, freshness (`status`), gc.
//! - [`outcome`]: what became of a stage's execution.
//! - [`report`]: everything printed for people.
//! - [`exec`]: the scheduler and its executors.
//! - [`diff`]: `hcpipe diff`.
//! - [`cli`]: the command line.

pub mod cache;
pub mod cli;
pub mod dag;
pub mod diff;
pub mod exec;
pub mod git;
pub mod ops;
pub mod outcome;
pub mod plan;
pub mod record;
pub mod report;
pub mod spec;
