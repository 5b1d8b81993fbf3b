//! The local executor: each job on its own thread, in this process.
//! Concurrency is bounded by the scheduler's slots, not here.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::job::{run_job, Job};
use super::torch_server::TorchServer;
use super::Executor;
use crate::cache::statcache::StatCache;
use crate::cache::Cache;
use crate::dag::StageId;
use crate::outcome::Outcome;

pub struct LocalExecutor {
    pub cache: Cache,
    /// Shared with the scheduler: a job re-hashes its deps through it after running.
    pub stat: Arc<Mutex<StatCache>>,
    /// The run's shared torch worker (a GPU machine), given to every job;
    /// stopped when the executor is dropped.
    pub torch: Option<Arc<TorchServer>>,
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>) {
        let cache = self.cache.clone();
        let stat = Arc::clone(&self.stat);
        let torch = self.torch.clone();
        std::thread::spawn(move || {
            let outcome = run_job(&cache, &job, &stat, torch.as_deref());
            let _ = done.send((id, outcome));
        });
    }

    fn cancel_all(&mut self) {
        if let Some(torch) = &self.torch {
            torch.cancel_all();
        }
        super::job::kill_running();
    }
}

impl Drop for LocalExecutor {
    /// The end of the run stops its torch worker, even while a job thread
    /// still holds it.
    fn drop(&mut self) {
        if let Some(torch) = &self.torch {
            torch.stop();
        }
    }
}
