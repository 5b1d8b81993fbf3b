//! The thread pool an op's parallel work runs on.

use super::OpError;

/// A rayon pool of `threads` workers (the stage's `resources.cpu`), so an op
/// never takes more cores than the scheduler granted it.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, OpError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| OpError::Msg(format!("cannot start {threads} worker threads: {e}")))
}
