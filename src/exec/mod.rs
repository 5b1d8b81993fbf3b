//! Execution: the scheduler loop over the DAG and the executors it drives.
//!
//! - [`plan`]: keys and freshness (nothing runs).
//! - [`job`]: one stage's execution, shared by every executor.
//! - [`local`]: stages as threads on this machine, within CPU/GPU slots.
//! - [`torch_server`]: on a GPU machine, one torch worker serving every
//!   torch stage of the run (their CUDA kernels overlap in one process).
//! - [`Scheduler`]: launches ready stages, honours slots, stops a failed
//!   stage's dependants while independent branches finish, and writes the
//!   run record after every stage.
//!
//! The loop never uses `?`: after a failure it stops launching that branch,
//! drains what is running, and reports everything at the end.

pub mod cmd_text;
pub mod interrupt;
pub mod job;
pub mod local;
pub mod plan;
pub mod slots;
pub mod slurm;
pub mod torch_server;

use std::collections::HashSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use crate::cache::Cache;
use crate::dag::{Dag, StageId};
use crate::ops::Input;
use crate::record::{RunRecord, StageRecord, StageStatus};
use crate::report::progress::Reporter;

use job::{Failure, Job, Outcome, Work};
use plan::Plan;
use slots::Slots;

/// A job's outcome, as sent back by an executor.
pub type Finished = (StageId, Outcome);

/// Something that runs jobs. Outcomes come back on the channel given to `launch`.
pub trait Executor {
    fn name(&self) -> &'static str;
    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>);
    /// Called between outcomes (at least every `poll_interval`); Slurm polls the queue here.
    fn poll(&mut self, _done: &Sender<(StageId, Outcome)>) {}
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
    /// Stop everything in flight (Ctrl-C, or a fatal error).
    fn cancel_all(&mut self) {}
}

pub struct RunOptions {
    pub jobs: usize,
    pub gpus: usize,
    /// Stage names (or base names of matrix stages) to run even when cached.
    pub force: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

/// Whether `--force` names `stage`: by name, by its matrix's base name, or `*`.
pub fn is_forced(force: &HashSet<String>, stage: &crate::spec::StageSpec) -> bool {
    force.contains(&stage.name) || force.contains(&stage.base) || force.contains("*")
}

/// Run every stage of `dag` not already cached. Returns whether all succeeded.
pub fn run_dag(
    dag: &Dag,
    cache: &Cache,
    plan: &Plan,
    opts: &RunOptions,
    executor: &mut dyn Executor,
    record: &mut RunRecord,
    reporter: &mut Reporter,
) -> bool {
    let n = dag.len();
    let mut state = vec![State::Waiting; n];
    let (tx, rx): (Sender<Finished>, Receiver<Finished>) = channel();
    let mut slots = Slots::new(opts.jobs, opts.gpus);
    let forced = |id: StageId| is_forced(&opts.force, dag.stage(id));

    // Cached stages are done before anything launches.
    for &id in dag.topo_order() {
        if let Some(entry) = &plan.cached[id.0] {
            if !forced(id) {
                state[id.0] = State::Done;
                let rec = stage_record(
                    dag,
                    plan,
                    id,
                    StageStatus::Cached,
                    0.0,
                    entry.metrics.clone(),
                    None,
                );
                reporter.finished(&rec, None);
                record.stages.push(rec);
            }
        }
    }

    let mut running = 0usize;
    let mut saved = usize::MAX;
    // Keys whose files were hashed this run: committed here, or re-hashed before first use.
    let mut verified = HashSet::new();
    loop {
        if interrupt::requested() {
            executor.cancel_all();
            break;
        }
        // Launch every ready stage that fits the free slots, in topological order.
        for &id in dag.topo_order() {
            if state[id.0] != State::Waiting {
                continue;
            }
            let needs = dag.needs(id);
            if needs
                .iter()
                .any(|u| matches!(state[u.0], State::Failed | State::Skipped))
            {
                state[id.0] = State::Skipped;
                let rec = stage_record(
                    dag,
                    plan,
                    id,
                    StageStatus::Skipped,
                    0.0,
                    Default::default(),
                    Some("an upstream stage failed".into()),
                );
                reporter.finished(&rec, None);
                record.stages.push(rec);
                continue;
            }
            if !needs.iter().all(|u| state[u.0] == State::Done) {
                continue;
            }
            let res = &dag.stage(id).resources;
            if !slots.try_take(res) {
                continue;
            }
            match build_job(
                dag,
                cache,
                plan,
                id,
                forced(id),
                slots.threads_for(res),
                &mut verified,
            ) {
                Ok(job) => {
                    state[id.0] = State::Running;
                    running += 1;
                    reporter.started(&dag.stage(id).name);
                    executor.launch(id, job, tx.clone());
                }
                Err(message) => {
                    slots.give_back(res);
                    state[id.0] = State::Failed;
                    let failure = Failure {
                        message,
                        log_tail: String::new(),
                        log: None,
                    };
                    fail(dag, plan, id, &failure, record, reporter);
                }
            }
        }
        // Rewritten only when a stage was added: every save is two fsyncs.
        if record.stages.len() != saved {
            saved = record.stages.len();
            let _ = record.save(cache);
        }
        if running == 0 {
            break;
        }
        let received = rx.recv_timeout(executor.poll_interval());
        executor.poll(&tx);
        let Ok((id, outcome)) = received else {
            continue;
        };
        running -= 1;
        slots.give_back(&dag.stage(id).resources);
        match outcome {
            Ok((status, entry)) => {
                state[id.0] = State::Done;
                if status == StageStatus::Ran {
                    verified.insert(entry.key.clone());
                }
                let rec = stage_record(
                    dag,
                    plan,
                    id,
                    status,
                    entry.wall_s,
                    entry.metrics.clone(),
                    None,
                );
                reporter.finished(&rec, None);
                record.stages.push(rec);
            }
            Err(failure) => {
                state[id.0] = State::Failed;
                fail(dag, plan, id, &failure, record, reporter);
            }
        }
    }
    state.iter().all(|s| *s == State::Done)
}

/// Record and report a stage that failed (or could not start).
fn fail(
    dag: &Dag,
    plan: &Plan,
    id: StageId,
    failure: &Failure,
    record: &mut RunRecord,
    reporter: &mut Reporter,
) {
    let rec = stage_record(
        dag,
        plan,
        id,
        StageStatus::Failed,
        0.0,
        Default::default(),
        Some(failure.message.clone()),
    );
    reporter.finished(&rec, Some(failure));
    record.stages.push(rec);
}

/// The run record's line for one stage.
fn stage_record(
    dag: &Dag,
    plan: &Plan,
    id: StageId,
    status: StageStatus,
    wall_s: f64,
    metrics: crate::ops::Metrics,
    error: Option<String>,
) -> StageRecord {
    let stage = dag.stage(id);
    StageRecord {
        stage: stage.name.clone(),
        op: stage.op_name().map(str::to_string),
        params: stage.params.clone(),
        key: plan.keys[id.0].clone(),
        status,
        wall_s,
        metrics,
        error,
    }
}

/// Resolve a stage's inputs to artifact folders and package it as a [`Job`].
fn build_job(
    dag: &Dag,
    cache: &Cache,
    plan: &Plan,
    id: StageId,
    force: bool,
    threads: usize,
    verified: &mut HashSet<crate::cache::StageKey>,
) -> Result<Job, String> {
    let stage = dag.stage(id);
    let mut inputs = Vec::new();
    for up in dag.needs(id) {
        // Read the entry now, not the plan's copy: a forced upstream stage
        // re-ran in this run and replaced its entry (same key, new files).
        let entry = cache
            .entry(&plan.keys[up.0])
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "upstream `{}` finished but its cache entry is missing",
                    dag.stage(up).name
                )
            })?;
        // Re-hash a cached input once per run, not once per consumer.
        let rehash = !verified.contains(&entry.key);
        let dir = cache
            .ensure_artifact(&entry, rehash)
            .map_err(|e| e.to_string())?;
        verified.insert(entry.key.clone());
        inputs.push(Input {
            stage: dag.stage(up).name.clone(),
            op: dag.stage(up).op_name().map(str::to_string),
            dir,
        });
    }
    let work = match &stage.kind {
        crate::spec::StageKind::Op(def) => Work::Op(def.name.to_string()),
        crate::spec::StageKind::Cmd(text) => Work::Cmd(text.clone()),
    };
    Ok(Job {
        stage: stage.name.clone(),
        pipeline: dag.pipeline.name.clone(),
        key: plan.keys[id.0].clone(),
        key_inputs: plan.inputs[id.0].clone(),
        work,
        params: stage.params.clone(),
        inputs,
        workdir: dag.pipeline.dir.clone(),
        outs: stage.outs.clone(),
        threads,
        force,
    })
}
