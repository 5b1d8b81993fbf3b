//! hcpipe: declarative experiment pipelines.
//!
//! The runner's architecture, one folder per concern:
//! - [`spec`]: what the user typed (YAML → typed, validated pipeline).
//! - [`dag`]: stage order and stage ids.
//! - [`cache`]: stage keys, the content-addressed store, locks, stat cache.
//! - [`exec`]: the scheduler and its executors.
//! - [`ops`]: the built-in stage kinds; tensor ops run in the `hcpipe-torch` worker.
//! - [`record`]: run records.
//! - [`report`]: everything printed for people.
//! - [`cli`]: the command line.

pub mod cache;
pub mod cli;
pub mod dag;
pub mod exec;
pub mod ops;
pub mod outcome;
pub mod record;
pub mod report;
pub mod spec;
