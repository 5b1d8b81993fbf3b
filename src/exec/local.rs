//! The local executor: each job on its own thread, in this process.
//! Concurrency is bounded by the scheduler's slots, not here.

use std::sync::mpsc::Sender;

use super::job::{run_job, Job, Outcome};
use super::Executor;
use crate::cache::Cache;
use crate::dag::StageId;

pub struct LocalExecutor {
    pub cache: Cache,
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>) {
        let cache = self.cache.clone();
        std::thread::spawn(move || {
            let outcome = run_job(&cache, &job);
            let _ = done.send((id, outcome));
        });
    }

    fn cancel_all(&mut self) {
        super::job::kill_running();
    }
}
