//! The local executor: each job on its own thread, in this process.
//! Concurrency is bounded by the scheduler's slots, not here.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::job::{run_job, Job, Outcome};
use super::Executor;
use crate::cache::statcache::StatCache;
use crate::cache::Cache;
use crate::dag::StageId;

pub struct LocalExecutor {
    pub cache: Cache,
    /// Shared with the scheduler: a job re-hashes its deps through it after running.
    pub stat: Arc<Mutex<StatCache>>,
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>) {
        let cache = self.cache.clone();
        let stat = Arc::clone(&self.stat);
        std::thread::spawn(move || {
            let outcome = run_job(&cache, &job, &stat);
            let _ = done.send((id, outcome));
        });
    }

    fn cancel_all(&mut self) {
        super::job::kill_running();
    }
}
