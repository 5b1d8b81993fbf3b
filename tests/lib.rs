//! hcpipe's integration tests: the real `hcpipe` binary, real processes, temp dirs.
//! One test binary, one module per feature.

mod common;

mod caching;
mod concurrency;
mod data_pipeline;
mod diff;
mod disk_full;
mod errors;
mod failures;
mod hostile;
pub mod lab;
mod matrix;
mod parallel;
mod pipelines;
pub mod report;
mod slurm;
mod soak;
mod spec_safety;
mod verify_gc;
