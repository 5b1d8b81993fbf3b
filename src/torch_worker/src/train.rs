//! The lab's training loop, shared by `train_cnn` and `train_ae`.
//!
//! Per epoch ([`fit`]): shuffle the training split, cut each patch at a
//! random shift of up to ±`shift` voxels per axis (the lab's
//! `CropLeftHC(2)` in train mode; here a slice of the stored margin), take
//! one Adam step per mini-batch, then evaluate on the whole training split
//! in eval mode without shift (the lab's `test` / `testAE`) and keep the
//! weights of the epoch with the lowest such loss (the lab's `best_model`).
//!
//! Randomness: weight init draws from libtorch's default generator, seeded
//! by the op; dropout (CPU) from a copy of it taken right after
//! ([`seeded_store`], [`crate::rng`]), so jobs sharing a process do not
//! share a stream; shuffling and shifts draw from a ChaCha8 stream seeded
//! with the same seed (ChaCha8 streams are fixed by the `rand_chacha`
//! crate's spec, so they do not change with crate upgrades). Same seed, same
//! thread count, same device ⇒ same CPU result, bit for bit, whether the job
//! runs in a worker process of its own or beside others in a `--serve` one.

use std::path::Path;
use std::time::Instant;

use hcpipe::artifact::history::{Epoch, History};
use hcpipe::ops::metrics::compute_metrics;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, ModuleT, VarStore};
use tch::{Kind, Reduction, Tensor};

use crate::data::CropSplit;
use crate::error::{Result, TchContext};
use crate::fast_step::{self, CudaGraph, FusedAdam, SideStream};
use crate::models::CustomNetwork;
use crate::rng::{self, JobGenerator};
use crate::weights::Snapshot;

/// How to train (from the op's params, the shift resolved against the crop).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub lr: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Random shift per axis, 0..=the crop's stored margin.
    pub shift: i64,
}

/// What an epoch's evaluation reports.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// The lab's `mean_loss`.
    pub loss: f64,
    /// Only for classifiers.
    pub balanced_accuracy: Option<f64>,
}

/// Everything [`fit`] learnt.
pub struct Outcome {
    /// One entry per epoch, in order.
    pub history: Vec<EpochStats>,
    /// 0-based, as the lab prints; `None` when no epoch had a finite loss
    /// (then `best` is the initial network, as in the lab).
    pub best_epoch: Option<usize>,
    pub best_loss: f64,
    pub best: Snapshot,
    /// Optimiser steps taken up to the end of the best epoch.
    pub best_steps: i64,
    pub seconds_per_epoch: f64,
    /// Whether full batches ran as a replayed CUDA graph.
    pub cuda_graph: bool,
}

/// Steps taken eagerly before a CUDA graph is captured: they run cuDNN's
/// algorithm choice and create the gradients and Adam's state, so that the
/// captured step allocates nothing new. They are real training steps.
const EAGER_STEPS_BEFORE_CAPTURE: i64 = 3;

/// A VarStore on `device` holding the model `build` makes, its weights
/// drawn right after `tch::manual_seed(seed)`, on the CPU, under a process-
/// wide lock ([`rng::default_generator`]): libtorch's generators are global,
/// and in a `--serve` worker several jobs start at once. Drawing on the CPU
/// also makes a seed give the same initial weights on every device. The
/// [`JobGenerator`] goes on from there: the job's dropout draws what a worker
/// process of its own would draw from the default generator next.
pub fn seeded_store<M>(
    seed: u64,
    device: tch::Device,
    build: impl FnOnce(&nn::Path) -> M,
) -> Result<(VarStore, M, JobGenerator)> {
    let _guard = rng::default_generator();
    // Re-seeding touches the CUDA generator too: not while a graph is captured.
    let _outside = fast_step::outside_capture();
    tch::manual_seed(seed as i64);
    let mut vs = VarStore::new(tch::Device::Cpu);
    let model = build(&vs.root());
    let generator = JobGenerator::copy_default()?;
    vs.set_device(device);
    Ok((vs, model, generator))
}

/// The network a per-epoch evaluation runs (its best batch size differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Cnn,
    AutoEncoder,
}

/// Batch size of the per-epoch evaluation over the training split on
/// `device`, and of `evaluate` and `extract_codes` when their params give
/// none: in eval mode the values depend on it only through rounding
/// (BatchNorm uses its running statistics), so it is picked for speed. A GPU
/// takes big batches. On the CPU (one thread, measured with libtorch 2.11
/// on the lab's patches) small ones are about twice as fast per patch as 32:
/// the activations of 32 patches (37 MB for the CNN's first block) overflow
/// the caches, and for batches this small the autoencoder's deeper layers
/// take libtorch's own kernels instead of oneDNN's, which are slower there.
/// The CNN's logits are the same bytes for every batch from 2 to 32 on the
/// machine measured; other CPUs may pick other kernels, so the change came
/// with new op versions.
pub fn eval_batch(device: tch::Device, net: Net) -> usize {
    match (device.is_cuda(), net) {
        (true, _) => 256,
        (false, Net::Cnn) => 4,
        (false, Net::AutoEncoder) => 1,
    }
}

/// Trains the variables of `vs` on `data`; `batch_loss(images, labels)` runs
/// the network in training mode and returns the summed loss of a batch;
/// `evaluate()` returns the epoch's statistics on the training split.
///
/// Every step is the lab's (zero the gradients, forward, backward, Adam);
/// Adam is [`FusedAdam`]. On CUDA the loop runs on a side stream and, after
/// a few eager steps, records one full step as a [`CudaGraph`] and replays
/// it for every full batch (a last, smaller batch runs eagerly). Each
/// epoch's statistics also go to the runner as a progress line
/// ([`crate::progress::epoch`]) as soon as they are known.
pub fn fit(
    vs: &VarStore,
    data: &CropSplit,
    schedule: &Schedule,
    mut batch_loss: impl FnMut(&Tensor, &Tensor) -> Tensor,
    mut evaluate: impl FnMut() -> Result<EpochStats>,
) -> Result<Outcome> {
    let cuda = data.device.is_cuda();
    // Declared before the side stream, so that on an early return the stream
    // is drained (dropped first) before the graph's memory goes.
    let mut graph: Option<StepGraph> = None;
    let side_stream = if cuda {
        Some(SideStream::enter()?)
    } else {
        None
    };
    let mut rng = ChaCha8Rng::seed_from_u64(schedule.seed);
    let mut opt = FusedAdam::new(vs, schedule.lr);
    let batch_size = schedule.batch_size.max(1);
    let capture = cuda && fast_step::graphs_enabled();
    let margin = data.meta.margin();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut best = Snapshot::take(vs);
    let (mut best_epoch, mut best_loss, mut best_steps) = (None, f64::INFINITY, 0);
    let mut history = Vec::with_capacity(schedule.epochs);
    let mut steps = 0i64;
    let started = Instant::now();
    for epoch in 0..schedule.epochs {
        let epoch_started = Instant::now();
        order.shuffle(&mut rng);
        // The epoch's labels in shuffled order, gathered on the device once.
        let labels = data.labels_in_order(&order);
        for (k, chunk) in order.chunks(batch_size).enumerate() {
            let offsets: Vec<[i64; 3]> = chunk
                .iter()
                .map(|_| {
                    [0; 3].map(|_| margin + rng.random_range(-schedule.shift..=schedule.shift))
                })
                .collect();
            crate::cancel::check_cancelled()?;
            let images = data.batch(chunk, Some(&offsets));
            let labels = labels.narrow(0, (k * batch_size) as i64, chunk.len() as i64);
            match &graph {
                Some(g) if chunk.len() == batch_size => g.replay(&images, &labels)?,
                _ => {
                    {
                        // Eager dropout draws from the CUDA generator.
                        let _outside = fast_step::outside_capture();
                        train_step(&mut opt, &images, &labels, &mut batch_loss)?;
                    }
                    if capture
                        && graph.is_none()
                        && chunk.len() == batch_size
                        && steps + 1 >= EAGER_STEPS_BEFORE_CAPTURE
                    {
                        graph = Some(StepGraph::capture(&images, &labels, |x, y| {
                            train_step(&mut opt, x, y, &mut batch_loss)
                        })?);
                    }
                }
            }
            steps += 1;
        }
        let stats = evaluate()?;
        history.push(stats);
        // The runner shows it live (a bar, or `--json` events); not in the artifact.
        crate::progress::epoch(
            epoch + 1,
            schedule.epochs,
            stats.loss,
            stats.balanced_accuracy,
            epoch_started.elapsed().as_secs_f64(),
        );
        // `<` as in the lab: a NaN loss never becomes the best.
        if stats.loss < best_loss {
            best = Snapshot::take(vs);
            best_epoch = Some(epoch);
            best_loss = stats.loss;
            best_steps = steps;
        }
    }
    if let Some(side_stream) = side_stream {
        side_stream.exit()?;
    }
    // Only now, with the stream drained, may the graph's memory go.
    let graphed = graph.is_some();
    drop(graph);
    let seconds_per_epoch = started.elapsed().as_secs_f64() / schedule.epochs.max(1) as f64;
    Ok(Outcome {
        history,
        best_epoch,
        best_loss,
        best,
        best_steps,
        seconds_per_epoch,
        cuda_graph: graphed,
    })
}

/// One training step, as the lab's loop takes it.
fn train_step(
    opt: &mut FusedAdam,
    images: &Tensor,
    labels: &Tensor,
    batch_loss: &mut impl FnMut(&Tensor, &Tensor) -> Tensor,
) -> Result<()> {
    opt.zero_grad();
    let loss = batch_loss(images, labels);
    loss.f_backward().context(|| "backward pass".to_string())?;
    opt.step()
}

/// A training step recorded as a CUDA graph over fixed input buffers.
struct StepGraph {
    graph: CudaGraph,
    images: Tensor,
    labels: Tensor,
}

impl StepGraph {
    /// Records `step` over copies of `images` and `labels` (not run).
    fn capture(
        images: &Tensor,
        labels: &Tensor,
        step: impl FnOnce(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<StepGraph> {
        let (images, labels) = (images.copy(), labels.copy());
        let graph = CudaGraph::capture(|| step(&images, &labels))?;
        Ok(StepGraph {
            graph,
            images,
            labels,
        })
    }

    /// Runs the recorded step on this batch.
    fn replay(&self, images: &Tensor, labels: &Tensor) -> Result<()> {
        let (mut x, mut y) = (self.images.shallow_clone(), self.labels.shallow_clone());
        x.f_copy_(images).context(|| "graph input".to_string())?;
        y.f_copy_(labels).context(|| "graph labels".to_string())?;
        self.graph.replay()
    }
}

/// A classifier's results over a split, as the lab's `test` computes them.
pub struct Classified {
    /// Cross-entropy per patch (their sum / n is the lab's `mean_loss`).
    pub losses: Vec<f64>,
    /// Softmax (P(CN), P(AD)) per patch.
    pub proba: Vec<[f64; 2]>,
    /// argmax of the logits per patch.
    pub predicted: Vec<i64>,
}

impl Classified {
    pub fn mean_loss(&self) -> f64 {
        self.losses.iter().sum::<f64>() / self.losses.len().max(1) as f64
    }
}

/// Runs `net` in eval mode over every (unshifted) patch of `data`.
pub fn classify(net: &CustomNetwork, data: &CropSplit, batch_size: usize) -> Result<Classified> {
    let n = data.len();
    let mut out = Classified {
        losses: Vec::with_capacity(n),
        proba: Vec::with_capacity(n),
        predicted: Vec::with_capacity(n),
    };
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = batch_size.max(1).min(n - start);
            let images = data.centre_range(start, len);
            let labels = data.labels.narrow(0, start as i64, len as i64);
            let logits = net.forward_t(&images, false);
            let loss = logits
                .f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::None, -100, 0.0)
                .context(|| "cross-entropy".to_string())?;
            let loss = loss.to_kind(Kind::Double).to_device(tch::Device::Cpu);
            out.losses
                .extend(Vec::<f64>::try_from(loss).context(|| "losses".to_string())?);
            let proba = logits.softmax(1, Kind::Double).to_device(tch::Device::Cpu);
            let predicted = logits.argmax(1, false).to_device(tch::Device::Cpu);
            let proba = Vec::<f64>::try_from(proba.flatten(0, -1))
                .context(|| "probabilities".to_string())?;
            let predicted =
                Vec::<i64>::try_from(predicted).context(|| "predictions".to_string())?;
            out.proba
                .extend(proba.chunks_exact(2).map(|p| [p[0], p[1]]));
            out.predicted.extend(predicted);
            start += len;
        }
        Ok(out)
    })
}

/// The lab's per-epoch report for a classifier: mean loss and balanced accuracy on `data`.
pub fn classifier_stats(
    net: &CustomNetwork,
    data: &CropSplit,
    batch_size: usize,
) -> Result<EpochStats> {
    let c = classify(net, data, batch_size)?;
    let m = compute_metrics(&data.labels_host(), &c.predicted);
    Ok(EpochStats {
        loss: c.mean_loss(),
        balanced_accuracy: Some(m.balanced_accuracy),
    })
}

/// `history.tsv`: epoch, loss and (classifiers) balanced accuracy.
pub fn write_history(path: &Path, history: &[EpochStats]) -> Result<()> {
    let epochs = history.iter().enumerate().map(|(epoch, h)| Epoch {
        epoch,
        loss: h.loss,
        balanced_accuracy: h.balanced_accuracy,
    });
    Ok(History(epochs.collect()).write(path)?)
}
