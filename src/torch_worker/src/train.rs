//! The lab's training loop, shared by `train_cnn` and `train_ae`.
//!
//! Per epoch ([`fit`]): shuffle the training split, cut each patch at a
//! random shift of up to ±`shift` voxels per axis (the lab's
//! `CropLeftHC(2)` in train mode; here a slice of the stored margin), take
//! one Adam step per mini-batch, then evaluate on the whole training split
//! in eval mode without shift (the lab's `test` / `testAE`) and keep the
//! weights of the epoch with the lowest such loss (the lab's `best_model`).
//!
//! Randomness: weight init and dropout draw from libtorch's generator,
//! seeded by the op; shuffling and shifts draw from a ChaCha8 stream seeded
//! with the same seed (ChaCha8 streams are fixed by the `rand_chacha`
//! crate's spec, so they do not change with crate upgrades). Same seed, same
//! thread count, same device ⇒ same CPU result, bit for bit.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use hcpipe::ops::metrics::compute_metrics;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, ModuleT, OptimizerConfig, VarStore};
use tch::{Kind, Reduction, Tensor};

use crate::data::CropSplit;
use crate::error::{Result, TchContext};
use crate::models::CustomNetwork;
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
}

/// Trains the variables of `vs` on `data`; `batch_loss(images, labels)` runs
/// the network in training mode and returns the summed loss of a batch;
/// `evaluate()` returns the epoch's statistics on the training split.
pub fn fit(
    vs: &VarStore,
    data: &CropSplit,
    schedule: &Schedule,
    mut batch_loss: impl FnMut(&Tensor, &Tensor) -> Tensor,
    mut evaluate: impl FnMut() -> Result<EpochStats>,
) -> Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(schedule.seed);
    let mut opt = nn::Adam::default()
        .build(vs, schedule.lr)
        .context(|| "creating the Adam optimiser".to_string())?;
    let margin = data.meta.margin();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut best = Snapshot::take(vs);
    let (mut best_epoch, mut best_loss, mut best_steps) = (None, f64::INFINITY, 0);
    let mut history = Vec::with_capacity(schedule.epochs);
    let mut steps = 0i64;
    let started = Instant::now();
    for epoch in 0..schedule.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(schedule.batch_size.max(1)) {
            let offsets: Vec<[i64; 3]> = chunk
                .iter()
                .map(|_| {
                    [0; 3].map(|_| margin + rng.random_range(-schedule.shift..=schedule.shift))
                })
                .collect();
            let images = data.batch(chunk, Some(&offsets));
            let labels = data.batch_labels(chunk);
            let loss = batch_loss(&images, &labels);
            opt.backward_step(&loss);
            steps += 1;
        }
        let stats = evaluate()?;
        history.push(stats);
        // `<` as in the lab: a NaN loss never becomes the best.
        if stats.loss < best_loss {
            best = Snapshot::take(vs);
            best_epoch = Some(epoch);
            best_loss = stats.loss;
            best_steps = steps;
        }
    }
    let seconds_per_epoch = started.elapsed().as_secs_f64() / schedule.epochs.max(1) as f64;
    Ok(Outcome {
        history,
        best_epoch,
        best_loss,
        best,
        best_steps,
        seconds_per_epoch,
    })
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
    let classifier = history.iter().any(|h| h.balanced_accuracy.is_some());
    let mut text = String::from(if classifier {
        "epoch\tloss\tbalanced_accuracy\n"
    } else {
        "epoch\tloss\n"
    });
    for (epoch, h) in history.iter().enumerate() {
        match h.balanced_accuracy {
            Some(b) => writeln!(text, "{epoch}\t{}\t{b}", h.loss),
            None => writeln!(text, "{epoch}\t{}", h.loss),
        }
        .ok();
    }
    crate::tsv::write(path, &text)
}
