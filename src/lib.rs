//! hcpipe: declarative experiment pipelines.
//!
//! The runner's architecture, one folder per concern:
//! - [`spec`]: what the user typed (YAML → typed, validated pipeline).
//! - [`dag`]: stage order, matrix expansion, stage ids.
//! - [`cache`]: stage keys, the content-addressed store, locks, stat cache.
//! - [`exec`]: the scheduler and its executors (local, slurm).
//! - [`ops`]: the built-in stage kinds; tensor ops run in the `hcpipe-torch` worker.
//! - [`record`]: run records, `show` and `diff`.
//! - [`report`]: everything printed for people.

pub mod cli;
pub mod ops;
