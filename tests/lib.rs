//! hcpipe's integration tests: the real `hcpipe` binary, real processes, temp dirs.
//! One test binary, one module per feature.

mod common;

pub mod aggregate;
mod artifact_docs;
mod cache_trust;
mod caching;
mod caps;
mod commit_safety;
mod completions;
mod concurrency;
mod data_pipeline;
mod diff;
mod differential;
mod disk_full;
mod downloads;
mod errors;
mod exit_codes;
mod failures;
mod hostile;
pub mod lab;
mod lifecycle;
mod matrix;
mod own_stages;
mod parallel;
mod pipelines;
mod priority;
mod progress;
mod remote;
pub mod report;
mod scale;
mod slurm;
mod soak;
mod spec_safety;
mod splits;
mod subjects;
mod targets;
mod tutorial;
mod verify_gc;
