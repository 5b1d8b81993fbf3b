//! Execution: the scheduler loop over the DAG and the executors it drives.
//!
//! - [`job`]: one stage's execution, shared by every executor.
//! - [`job_file`]: `hcpipe exec --job FILE`, a Slurm job's side.
//! - [`local`]: stages as threads on this machine, within CPU/GPU slots.
//! - [`priority`]: which ready stage launches first (longest expected path
//!   to the end of the pipeline).
//! - [`progress`]: each running stage's progress file (`$HCPIPE_PROGRESS`),
//!   read each time the scheduler wakes and handed to the reporter.
//! - [`torch_server`]: on a GPU machine, one torch worker serving every
//!   torch stage of the run (their CUDA kernels overlap in one process).
//! - [`Scheduler`]: launches ready stages, honours slots, stops a failed
//!   stage's dependants while independent branches finish, and writes the
//!   run record as stages finish (at most every half second, or 20× as long
//!   as a rewrite took).
//!
//! The loop never uses `?`: after a failure it stops launching that branch,
//! drains what is running, and reports everything at the end.

pub mod interrupt;
pub mod job;
pub mod job_file;
pub mod local;
pub mod priority;
pub mod progress;
pub mod slots;
pub mod slurm;
pub mod torch_server;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::statcache::StatCache;
use crate::cache::{Cache, Entry, KeyInputs, StageKey, UpstreamInput};
use crate::dag::{Dag, StageId};
use crate::ops::Input;
use crate::record::{RunRecord, StageRecord, StageStatus};
use crate::ui::progress::Reporter;

use crate::outcome::{Failure, Outcome};
use crate::plan::{self, Plan};
use job::{Job, Work};
use slots::Slots;

/// A job's outcome, as sent back by an executor.
pub type Finished = (StageId, Outcome);

/// Something that runs jobs. Outcomes come back on the channel given to `launch`.
pub trait Executor {
    fn name(&self) -> &'static str;
    fn launch(&mut self, id: StageId, job: Job, done: Sender<(StageId, Outcome)>);
    /// Whether members of one matrix stage that are ready together should be
    /// launched together, through [`Executor::launch_group`] (Slurm: one job array).
    fn groups(&self) -> bool {
        false
    }
    /// Launch members of one matrix stage (same resources) together, of
    /// which at most `width` may run at once: the scheduler holds slots for
    /// `width` of them, however many wait in the executor's queue.
    fn launch_group(&mut self, jobs: Vec<(StageId, Job)>, _width: usize, done: Sender<Finished>) {
        for (id, job) in jobs {
            self.launch(id, job, done.clone());
        }
    }
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
    /// `--fail-fast`: after the first failure no stage starts; the running
    /// ones finish and every other is skipped. Without it (`make -k`, the
    /// default) independent branches run to the end.
    pub fail_fast: bool,
    /// The remote cache, asked for a stage the local cache lacks before it
    /// is launched (or submitted to Slurm).
    pub remote: Option<crate::remote::Lookup>,
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
    force.contains(&stage.name) || force.contains(&*stage.base) || force.contains("*")
}

/// Run every stage of `dag` not already cached. Returns whether all succeeded.
///
/// A stage's key is computed when its needs are done, from their artifacts'
/// content and its deps hashed at that moment (through `stat`); a key the
/// cache holds is reused without running (an upstream that re-ran and wrote
/// the same bytes leaves its dependants cached).
#[allow(clippy::too_many_arguments)]
pub fn run_dag(
    dag: &Dag,
    cache: &Cache,
    plan: &Plan,
    stat: &Mutex<StatCache>,
    opts: &RunOptions,
    executor: &mut dyn Executor,
    record: &mut RunRecord,
    reporter: &mut Reporter,
) -> bool {
    let n = dag.len();
    record.stages.reserve(n);
    let mut state = vec![State::Waiting; n];
    // The finished artifact of each done stage: what its dependants' keys chain.
    let mut done: Vec<Option<Done>> = vec![None; n];
    // Each stage's key once its needs are done.
    let mut resolved: Vec<Option<StageKey>> = vec![None; n];
    // Its key's inputs, from then until it launches (a job takes them):
    // held for every finished stage, they were most of a big run's memory.
    let mut inputs: Vec<Option<KeyInputs>> = vec![None; n];
    let (tx, rx): (Sender<Finished>, Receiver<Finished>) = channel();
    let mut slots = Slots::new(opts.jobs, opts.gpus);
    let forced = |id: StageId| is_forced(&opts.force, dag.stage(id));

    // Cached stages are done before anything launches.
    reporter.hold();
    for &id in dag.topo_order() {
        if let (Some(key), Some(cached)) = (plan.key(id), plan.cached(id)) {
            if !forced(id) {
                state[id.0] = State::Done;
                settle(dag, id, key, End::Cached(&cached.metrics), record, reporter);
                done[id.0] = Some(Done::Planned);
            }
        }
    }

    reporter.release();

    // Readiness by counters, not scans: `unmet[id]` is how many of its needs
    // are not done yet (one per entry in `needs`), `children[up]` the stages
    // that list `up`, once per listing. A stage is examined when its last need
    // is done or one of them failed; each stage is examined a bounded number
    // of times, so the scheduler's work is O(stages + needs) in all.
    let mut children: Vec<Vec<StageId>> = vec![Vec::new(); n];
    let mut unmet: Vec<usize> = vec![0; n];
    let mut pos: Vec<usize> = vec![0; n];
    for (i, &id) in dag.topo_order().iter().enumerate() {
        pos[id.0] = i;
    }
    for id in dag.ids() {
        for up in dag.needs_iter(id) {
            children[up.0].push(id);
            if state[up.0] != State::Done {
                unmet[id.0] += 1;
            }
        }
    }
    let mut counts = Counts::default();
    // Stages to examine (ready, or an upstream failed), by topological position.
    let mut check: BTreeSet<usize> = dag
        .ids()
        .filter(|id| state[id.0] == State::Waiting && unmet[id.0] == 0)
        .map(|id| pos[id.0])
        .collect();
    // Stages whose key is known and not cached, waiting for slots, highest
    // priority first (the longest expected path to the end of the pipeline,
    // see `priority`), then in topological order. Priorities are computed
    // only when something is left to run (a no-op run reads no past records).
    let rank: Vec<u64> = if state.contains(&State::Waiting) {
        let cost = priority::costs(dag, plan, cache, &record.pipeline_path);
        priority::ranks(dag, &cost)
    } else {
        vec![0; n]
    };
    let order = dag.topo_order();
    let qkey = |p: usize| (Reverse(rank[order[p].0]), p);
    let mut queued: BTreeSet<(Reverse<u64>, usize)> = BTreeSet::new();
    // With an executor that launches groups: each matrix stage's queued
    // members (by topological position), so a launch finds a member's
    // siblings without scanning the queue.
    let grouping = executor.groups();
    let base_of: Vec<Option<usize>> = if grouping {
        base_indices(dag)
    } else {
        vec![None; n]
    };
    let mut queued_of: Vec<BTreeSet<usize>> =
        vec![BTreeSet::new(); base_of.iter().flatten().max().map_or(0, |m| m + 1)];
    // The group each launched member belongs to, and each group's slot holding.
    let mut group_of: Vec<Option<usize>> = vec![None; n];
    let mut groups: Vec<Group> = Vec::new();

    let mut running = 0usize;
    let mut saved = usize::MAX;
    let mut last_save: Option<Instant> = None;
    // How often the record is rewritten at most: RECORD_INTERVAL, or longer
    // once a rewrite (O(stages)) takes long, see below.
    let mut save_every = RECORD_INTERVAL;
    // Keys whose files were hashed this run: committed here, or re-hashed before first use.
    let mut verified = HashSet::new();
    // Each running stage's progress file (none when its folder cannot be made).
    let mut watch = progress::Watch::new(cache);
    // Stages of this pass missing here, to look up in the remote cache
    // (by topological position).
    let mut to_pull: Vec<usize> = Vec::new();
    // A stage failed (for `--fail-fast`).
    let mut failed = false;
    let mut stopped = false;
    loop {
        if interrupt::requested() {
            executor.cancel_all();
            break;
        }
        // Examine every stage whose needs changed, in topological order; a stage
        // settled here (cached, skipped, failed) may make a later one ready,
        // which this same pass then examines.
        let mut cursor = 0usize;
        reporter.hold();
        while let Some(&p) = check.range(cursor..).next() {
            cursor = p + 1;
            check.remove(&p);
            let id = order[p];
            if state[id.0] != State::Waiting {
                continue;
            }
            counts.examined += 1;
            let needs = dag.needs(id);
            counts.need_visits += needs.len() as u64;
            if needs
                .iter()
                .any(|u| matches!(state[u.0], State::Failed | State::Skipped))
            {
                state[id.0] = State::Skipped;
                queued.remove(&qkey(p));
                if let Some(b) = base_of[id.0] {
                    queued_of[b].remove(&p);
                }
                let key = key_so_far(&resolved, plan, id);
                settle(dag, id, &key, End::Skipped, record, reporter);
                doom(&children[id.0], &state, &pos, &mut check);
                continue;
            }
            if unmet[id.0] != 0 || queued.contains(&qkey(p)) {
                continue;
            }
            if resolved[id.0].is_none() {
                counts.keys += 1;
                match resolve_key(dag, plan, id, &done, stat) {
                    Ok((i, key)) => {
                        resolved[id.0] = Some(key);
                        inputs[id.0] = Some(i);
                    }
                    Err(message) => {
                        state[id.0] = State::Failed;
                        let key = plan.key(id).cloned().unwrap_or_else(StageKey::unknown);
                        let failure = Failure::msg(message);
                        settle(dag, id, &key, End::Failed(&failure), record, reporter);
                        failed = true;
                        doom(&children[id.0], &state, &pos, &mut check);
                        continue;
                    }
                }
            }
            if !forced(id) {
                // Known only now (an upstream ran): the cache may hold it already.
                let key = resolved[id.0].as_ref().expect("resolved above");
                if let Ok(Some(entry)) = cache.entry(key) {
                    state[id.0] = State::Done;
                    inputs[id.0] = None;
                    let key = key.clone();
                    settle(dag, id, &key, End::Cached(&entry.metrics), record, reporter);
                    done[id.0] = Some(Done::Entry(Arc::new(entry)));
                    ready_children(&children[id.0], &mut unmet, &pos, &mut check);
                    continue;
                }
                // Else the remote cache may (then it is pulled, not run): the
                // pass's lookups go out together once it is over.
                if opts.remote.is_some() {
                    to_pull.push(p);
                    continue;
                }
            }
            queued.insert(qkey(p));
            if let Some(b) = base_of[id.0] {
                queued_of[b].insert(p);
            }
        }
        if let (Some(remote), false) = (&opts.remote, to_pull.is_empty()) {
            let wanted: Vec<(StageKey, String)> = to_pull
                .iter()
                .map(|&p| {
                    let id = order[p];
                    let key = resolved[id.0].as_ref().expect("resolved before a lookup");
                    (key.clone(), dag.stage(id).name.clone())
                })
                .collect();
            counts.remote_lookups += wanted.len() as u64;
            counts.remote_batches += 1;
            let found = remote.pull_all(cache, &wanted);
            for (p, entry) in std::mem::take(&mut to_pull).into_iter().zip(found) {
                let id = order[p];
                match entry {
                    Some(entry) => {
                        state[id.0] = State::Done;
                        inputs[id.0] = None;
                        let key = entry.key.clone();
                        settle(dag, id, &key, End::Pulled(&entry), record, reporter);
                        done[id.0] = Some(Done::Entry(Arc::new(entry)));
                        ready_children(&children[id.0], &mut unmet, &pos, &mut check);
                    }
                    None => {
                        queued.insert(qkey(p));
                        if let Some(b) = base_of[id.0] {
                            queued_of[b].insert(p);
                        }
                    }
                }
            }
            // What the pulls made ready is examined before anything launches.
            reporter.release();
            continue;
        }
        reporter.release();
        if failed && opts.fail_fast && !stopped {
            // Once, O(stages): every stage not started is skipped, which
            // leaves only the running ones to wait for.
            stopped = true;
            check.clear();
            queued.clear();
            queued_of.iter_mut().for_each(BTreeSet::clear);
            for &id in order {
                if state[id.0] == State::Waiting {
                    state[id.0] = State::Skipped;
                    let key = key_so_far(&resolved, plan, id);
                    settle(dag, id, &key, End::Skipped, record, reporter);
                }
            }
        }
        // Launch queued stages that fit the free slots, highest priority
        // first; a stage that does not fit lets the next ones try; once no
        // CPU slot is free nothing else can start.
        let mut cursor = Bound::Unbounded;
        while slots.any_free() {
            let Some(&(prio, p)) = queued.range((cursor, Bound::Unbounded)).next() else {
                break;
            };
            cursor = Bound::Excluded((prio, p));
            let id = order[p];
            let res = &dag.stage(id).resources;
            if !slots.try_take(res) {
                continue;
            }
            queued.remove(&(prio, p));
            // This stage, and with a grouping executor every queued sibling
            // of its matrix stage: they share its resources.
            let mut members = vec![p];
            if let Some(b) = base_of[id.0] {
                queued_of[b].remove(&p);
                for q in std::mem::take(&mut queued_of[b]) {
                    queued.remove(&qkey(q));
                    members.push(q);
                }
            }
            // One slot share is taken; a group takes up to its throttle's worth more.
            let throttle = res.array_throttle.map_or(usize::MAX, |t| t as usize);
            let mut taken = 1;
            while taken < members.len().min(throttle) && slots.try_take(res) {
                taken += 1;
            }
            let mut jobs = Vec::with_capacity(members.len());
            for q in members {
                let id = order[q];
                let (Some(key), Some(key_inputs)) = (resolved[id.0].clone(), inputs[id.0].take())
                else {
                    continue;
                };
                match build_job(
                    dag,
                    cache,
                    plan,
                    id,
                    (key_inputs, key.clone()),
                    &mut done,
                    forced(id),
                    slots.threads_for(res),
                    &mut verified,
                ) {
                    Ok(job) => jobs.push((id, job)),
                    Err(message) => {
                        state[id.0] = State::Failed;
                        let failure = Failure::msg(message);
                        settle(dag, id, &key, End::Failed(&failure), record, reporter);
                        failed = true;
                        doom(&children[id.0], &state, &pos, &mut check);
                    }
                }
            }
            // Slots beyond what the launched members can use go back.
            let width = taken.min(jobs.len());
            for _ in width..taken {
                slots.give_back(res);
            }
            for (id, job) in &mut jobs {
                state[id.0] = State::Running;
                running += 1;
                reporter.started(&dag.stage(*id).name);
                job.progress = watch.as_mut().and_then(|w| w.add(*id, &job.stage));
            }
            if jobs.len() > 1 {
                for (id, _) in &jobs {
                    group_of[id.0] = Some(groups.len());
                }
                groups.push(Group {
                    width,
                    left: jobs.len(),
                });
                executor.launch_group(jobs, width, tx.clone());
            } else if let Some((id, job)) = jobs.pop() {
                executor.launch(id, job, tx.clone());
            }
        }
        if running == 0 && check.is_empty() {
            // The caller writes the final record at once.
            break;
        }
        // Rewritten only when a stage was added, and at most every
        // RECORD_INTERVAL: a save is the whole record and two fsyncs, so one per
        // stage would make a run O(stages²). The cache entries are the truth;
        // a killed run's record may miss the last interval's stages, never one's result.
        if record.stages.len() != saved && last_save.is_none_or(|t| t.elapsed() >= save_every) {
            saved = record.stages.len();
            let start = Instant::now();
            last_save = Some(start);
            counts.record_writes += 1;
            let _ = record.save(cache);
            // The loop launches nothing while it writes: a rewrite may take
            // at most 1/RECORD_SHARE of the time between two, however many
            // stages the record holds (issue 15: at 10,000 stages a rewrite
            // is 2.2 MB and two fsyncs, every half second).
            save_every = RECORD_INTERVAL.max(start.elapsed() * RECORD_SHARE);
        }
        if running == 0 {
            continue;
        }
        let wait = match last_save {
            Some(t) if record.stages.len() != saved => save_every
                .saturating_sub(t.elapsed())
                .min(executor.poll_interval()),
            _ => executor.poll_interval(),
        };
        let received = rx.recv_timeout(wait);
        executor.poll(&tx);
        // Every outcome at hand, before launching again: stages that become
        // ready together launch together (one Slurm job array, not one each).
        let outcomes: Vec<Finished> = received.into_iter().chain(rx.try_iter()).collect();
        if let Some(watch) = watch.as_mut() {
            for (id, p) in watch.poll() {
                reporter.progress(&dag.stage(id).name, &p);
            }
        }
        for (id, outcome) in outcomes {
            running -= 1;
            // What it reported last comes before its end.
            for p in watch.as_mut().map(|w| w.finish(id)).unwrap_or_default() {
                reporter.progress(&dag.stage(id).name, &p);
            }
            let res = &dag.stage(id).resources;
            match group_of[id.0] {
                Some(g) => {
                    if groups[g].finished() {
                        slots.give_back(res);
                    }
                }
                None => slots.give_back(res),
            }
            let key = resolved[id.0].clone().unwrap_or_else(StageKey::unknown);
            match outcome {
                Ok((status, entry)) => {
                    state[id.0] = State::Done;
                    if status == StageStatus::Ran {
                        verified.insert(entry.key.clone());
                    }
                    settle(
                        dag,
                        id,
                        &key,
                        End::Finished(status, &entry),
                        record,
                        reporter,
                    );
                    done[id.0] = Some(Done::Entry(Arc::new(entry)));
                    ready_children(&children[id.0], &mut unmet, &pos, &mut check);
                }
                Err(failure) => {
                    state[id.0] = State::Failed;
                    settle(dag, id, &key, End::Failed(&failure), record, reporter);
                    failed = true;
                    doom(&children[id.0], &state, &pos, &mut check);
                }
            }
        }
    }
    tracing::info!(
        "scheduler: {} stages, {} examined, {} need visits, {} key computations, {} record writes",
        n,
        counts.examined,
        counts.need_visits,
        counts.keys,
        counts.record_writes
    );
    if opts.remote.is_some() {
        tracing::info!(
            "remote: {} lookups in {} batches",
            counts.remote_lookups,
            counts.remote_batches
        );
    }
    state.iter().all(|s| *s == State::Done)
}

/// Members of one matrix stage launched together (a Slurm job array).
struct Group {
    /// How many members' slots the group holds: at most this many run at once.
    width: usize,
    /// Members not finished yet.
    left: usize,
}

impl Group {
    /// One member finished; whether one member's slots go back. A group holds
    /// slots for min(width, members left): while more members wait than run,
    /// a waiting one takes the finished one's place (Slurm's `%width`).
    fn finished(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        if self.width > self.left {
            self.width -= 1;
            true
        } else {
            false
        }
    }
}

/// Per stage: an index shared by the members of its matrix stage, or `None`
/// for a plain stage (which is launched alone).
fn base_indices(dag: &Dag) -> Vec<Option<usize>> {
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    dag.ids()
        .map(|id| {
            let s = dag.stage(id);
            if s.matrix.is_empty() {
                return None;
            }
            let next = index.len();
            Some(*index.entry(&*s.base).or_insert(next))
        })
        .collect()
}

/// How often a run record is rewritten at most while stages finish.
const RECORD_INTERVAL: Duration = Duration::from_millis(500);

/// A record rewrite is spaced at least this many times its own duration
/// from the next: rewriting stays under 5 % of the scheduler's time.
const RECORD_SHARE: u32 = 20;

/// What the scheduler did, logged at `-v` (tests count it: it must stay O(stages + needs)).
#[derive(Default)]
struct Counts {
    examined: u64,
    need_visits: u64,
    keys: u64,
    record_writes: u64,
    /// Stages looked up in the remote cache, and in how many batches.
    remote_lookups: u64,
    remote_batches: u64,
}

/// `up` is done: each child with no unmet need left is examined next.
fn ready_children(
    children: &[StageId],
    unmet: &mut [usize],
    pos: &[usize],
    check: &mut BTreeSet<usize>,
) {
    for c in children {
        unmet[c.0] -= 1;
        if unmet[c.0] == 0 {
            check.insert(pos[c.0]);
        }
    }
}

/// `up` failed or was skipped: its waiting children are examined (and skipped).
fn doom(children: &[StageId], state: &[State], pos: &[usize], check: &mut BTreeSet<usize>) {
    for c in children {
        if state[c.0] == State::Waiting {
            check.insert(pos[c.0]);
        }
    }
}

/// A done stage's artifact, as its dependants need it.
#[derive(Clone)]
enum Done {
    /// Cached when the run was planned: its content is the plan's, and its
    /// entry is read when a dependant launches (see [`need_entry`]); on a
    /// no-op run none does.
    Planned,
    /// Made, pulled, or found cached during the run.
    Entry(Arc<Entry>),
}

fn not_done(dag: &Dag, up: StageId) -> String {
    format!(
        "internal: upstream `{}` is done but has no result (bug, please report)",
        dag.stage(up).name
    )
}

/// The content of a done need's artifact, which its dependants' keys chain.
fn need_content(
    dag: &Dag,
    plan: &Plan,
    done: &[Option<Done>],
    up: StageId,
) -> Result<String, String> {
    match &done[up.0] {
        Some(Done::Entry(entry)) => Ok(plan::artifact_content(entry)),
        Some(Done::Planned) => plan
            .content(up)
            .map(str::to_string)
            .ok_or_else(|| not_done(dag, up)),
        None => Err(not_done(dag, up)),
    }
}

/// A done need's entry. A planned one is read now, once, and must still
/// hold the content its dependants' keys were planned with.
fn need_entry(
    dag: &Dag,
    cache: &Cache,
    plan: &Plan,
    done: &mut [Option<Done>],
    up: StageId,
) -> Result<Arc<Entry>, String> {
    match &done[up.0] {
        Some(Done::Entry(entry)) => Ok(Arc::clone(entry)),
        Some(Done::Planned) => {
            let entry = plan
                .entry(cache, dag, up)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| not_done(dag, up))?;
            let entry = Arc::new(entry);
            done[up.0] = Some(Done::Entry(Arc::clone(&entry)));
            Ok(entry)
        }
        None => Err(not_done(dag, up)),
    }
}

/// A stage's key as far as it is known: resolved this run, else planned,
/// else unknown (an upstream failed before it could be computed).
fn key_so_far(resolved: &[Option<StageKey>], plan: &Plan, id: StageId) -> StageKey {
    resolved[id.0]
        .clone()
        .or_else(|| plan.key(id).cloned())
        .unwrap_or_else(StageKey::unknown)
}

/// A ready stage's key: its needs' artifact contents and its deps as they are now.
fn resolve_key(
    dag: &Dag,
    plan: &Plan,
    id: StageId,
    done: &[Option<Done>],
    stat: &Mutex<StatCache>,
) -> Result<(KeyInputs, StageKey), String> {
    let stage = dag.stage(id);
    let mut upstream = Vec::new();
    for up in dag.needs_iter(id) {
        upstream.push(UpstreamInput {
            stage: dag.stage(up).name.clone(),
            content: need_content(dag, plan, done, up)?,
        });
    }
    let mut stat = stat
        .lock()
        .map_err(|_| "internal: stat cache lock poisoned".to_string())?;
    let deps = plan::hash_deps(stage, &dag.pipeline.dir, &mut stat).map_err(|e| e.to_string())?;
    let inputs = plan::stage_key_inputs(stage, upstream, deps);
    let key = inputs.key();
    Ok((inputs, key))
}

/// How a stage ended, for its line in the run record and in the progress report.
enum End<'a> {
    /// The cache held its key before it was launched (its metrics).
    Cached(&'a crate::ops::Metrics),
    /// The remote cache held its key; pulled instead of launched.
    Pulled(&'a Entry),
    /// Its job's outcome: `Ran`, or `Cached` when another run made it meanwhile.
    Finished(StageStatus, &'a Entry),
    /// It failed, or could not start.
    Failed(&'a Failure),
    /// An upstream stage failed.
    Skipped,
}

/// Records and reports how a stage ended.
fn settle(
    dag: &Dag,
    id: StageId,
    key: &StageKey,
    end: End,
    record: &mut RunRecord,
    reporter: &mut Reporter,
) {
    let (status, wall_s, metrics, error, failure) = match end {
        End::Cached(metrics) => (StageStatus::Cached, 0.0, metrics.clone(), None, None),
        End::Pulled(entry) => (StageStatus::Pulled, 0.0, entry.metrics.clone(), None, None),
        End::Finished(status, entry) => (status, entry.wall_s, entry.metrics.clone(), None, None),
        End::Failed(f) => (
            StageStatus::Failed,
            0.0,
            Default::default(),
            Some(f.message.clone()),
            Some(f),
        ),
        End::Skipped => (
            StageStatus::Skipped,
            0.0,
            Default::default(),
            Some("an upstream stage failed".to_string()),
            None,
        ),
    };
    let stage = dag.stage(id);
    let rec = StageRecord {
        stage: stage.name.clone(),
        op: stage.op_name().map(str::to_string),
        params: stage.params.clone(),
        key: key.clone(),
        status,
        wall_s,
        metrics,
        error,
    };
    reporter.finished(&rec, failure);
    record.stages.push(rec);
}

/// Resolve a stage's inputs to artifact folders and package it as a [`Job`].
#[allow(clippy::too_many_arguments)]
fn build_job(
    dag: &Dag,
    cache: &Cache,
    plan: &Plan,
    id: StageId,
    (key_inputs, key): (KeyInputs, StageKey),
    done: &mut [Option<Done>],
    force: bool,
    threads: usize,
    verified: &mut HashSet<StageKey>,
) -> Result<Job, String> {
    let stage = dag.stage(id);
    let mut inputs = Vec::new();
    let mut input_matrix = Vec::new();
    // The key already holds each need's content, in `needs` order: not hashed again here.
    for (up, upstream) in dag.needs_iter(id).zip(&key_inputs.upstream) {
        let entry = need_entry(dag, cache, plan, done, up)?;
        // Re-hash a cached input once per run, not once per consumer.
        let rehash = !verified.contains(&entry.key);
        let dir = cache
            .ensure_artifact(&entry, rehash)
            .map_err(|e| e.to_string())?;
        verified.insert(entry.key.clone());
        input_matrix.push(dag.stage(up).matrix.to_map());
        inputs.push(Input {
            stage: dag.stage(up).name.clone(),
            op: dag.stage(up).op_name().map(str::to_string),
            dir,
            content: Some(upstream.content.clone()),
        });
    }
    let mut params = stage.params.clone();
    let work = match &stage.kind {
        crate::spec::StageKind::Op(def) => {
            if def.name == "fetch" {
                crate::ops::fetch::resolve_local_path(&mut params, &dag.pipeline.dir);
            }
            Work::Op(def.name.to_string())
        }
        crate::spec::StageKind::Cmd(text) => Work::Cmd(text.clone()),
    };
    // A cmd or a torch op sees its declared thread count (which is in its
    // key), not the free slots: its bytes must not depend on `--jobs`.
    let threads = plan::fixed_threads(stage).unwrap_or(threads);
    Ok(Job {
        stage: stage.name.clone(),
        pipeline: dag.pipeline.name.clone(),
        key,
        key_inputs,
        work,
        params,
        inputs,
        input_matrix,
        workdir: dag.pipeline.dir.clone(),
        outs: stage.outs.to_vec(),
        empty_out_ok: stage.empty_out_ok,
        threads,
        force,
        // Given by the scheduler as the job launches (see `progress::Watch`).
        progress: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_gives_slots_back_only_when_fewer_members_wait_than_run() {
        let mut g = Group { width: 3, left: 5 };
        let back: Vec<bool> = (0..5).map(|_| g.finished()).collect();
        assert_eq!(back, [false, false, true, true, true]);
        assert_eq!(
            back.iter().filter(|b| **b).count(),
            3,
            "every slot taken comes back"
        );
        let mut all = Group { width: 4, left: 4 };
        assert!((0..4).all(|_| all.finished()));
    }
}
