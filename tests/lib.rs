//! hcpipe's integration tests: the real `hcpipe` binary, real processes, temp dirs.
//! One test binary, one module per feature.

mod common;

mod caching;
mod concurrency;
mod errors;
mod failures;
mod parallel;
mod slurm;
mod verify_gc;
