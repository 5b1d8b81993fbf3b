//! hcpipe's integration tests: the real `hcpipe` binary, real processes, temp dirs.
//! One test binary, one module per feature.

mod common;

mod caching;
mod concurrency;
mod diff;
mod disk_full;
mod errors;
mod failures;
mod hostile;
mod matrix;
mod parallel;
mod report;
mod soak;
mod verify_gc;
