//! `train_ae`: the lab's AutoEncoder trained on one `crop` stage (its train split, or the
//! `train` set of a subject-list need).
//!
//! Artifact: `weights.safetensors` (best epoch, lab names `encoder.*`,
//! `decoder.*`), `history.tsv` (epoch, loss). The loss is the lab's `testAE`:
//! summed squared error over the training split / N / voxels per patch.

use std::time::Instant;

use hcpipe::ops::torch_params::{Split, SubjectSet, TrainAeParams};
use hcpipe::ops::{Metrics, OpCtx};
use serde_json::json;
use tch::Reduction;

use super::{
    check_both_classes, common_metrics, finite, load_patches, resolve_shift, training_metrics,
};
use crate::data::CropSplit;
use crate::error::{Result, TchContext};
use crate::models::AutoEncoder;
use crate::train::{eval_batch, fit, seeded_store, write_history, EpochStats, Net, Schedule};

/// The lab's `testAE`: Σ squared error / N / prod(patch shape), eval mode, no shift.
pub fn reconstruction_loss(ae: &AutoEncoder, data: &CropSplit, batch_size: usize) -> f64 {
    let n = data.len();
    let voxels: i64 = data.meta.patch_dims().iter().product();
    let mut total = 0.0;
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = batch_size.max(1).min(n - start);
            let images = data.centre_range(start, len);
            let (_, out) = ae.forward_t(&images, false);
            total += out.mse_loss(&images, Reduction::Sum).double_value(&[]);
            start += len;
        }
    });
    total / n.max(1) as f64 / voxels.max(1) as f64
}

pub fn run(ctx: &OpCtx, p: TrainAeParams) -> Result<Metrics> {
    let started = Instant::now();
    let crop = ctx.input_by_op("crop")?;
    let device = crate::device::pick(p.device, ctx.threads)?;
    // A subject list's `train` set, else the lab crop's train split.
    let patches = load_patches(ctx, crop, device, Split::Train, None, SubjectSet::Train)?;
    check_both_classes(ctx, &patches)?;
    let data = patches.data;
    let schedule = Schedule {
        lr: p.lr,
        epochs: p.epochs,
        batch_size: p.batch_size,
        seed: p.seed,
        shift: resolve_shift(ctx.stage, p.shift, &data.meta)?,
    };

    // The autoencoder draws no random numbers after its initialisation.
    let (vs, ae, _) = seeded_store(p.seed, device, AutoEncoder::new)?;
    let outcome = fit(
        &vs,
        &data,
        &schedule,
        |images, _labels| {
            ae.forward_t(images, true)
                .1
                .mse_loss(images, Reduction::Sum)
        },
        || {
            Ok(EpochStats {
                loss: reconstruction_loss(&ae, &data, eval_batch(device, Net::AutoEncoder)),
                balanced_accuracy: None,
            })
        },
    )?;

    outcome.best.save(
        &AutoEncoder::BATCH_NORMS,
        outcome.best_steps,
        &ctx.out.join("weights.safetensors"),
    )?;
    write_history(
        &ctx.out.join(hcpipe::artifact::history::FILE),
        &outcome.history,
    )?;
    // The best epoch's reconstruction of one subject, for the report's
    // "input vs reconstruction" slices (the lab's visual check).
    outcome.best.restore(&vs)?;
    write_sample(&ae, &data, ctx.out)?;

    let mut m = common_metrics(device, started);
    m.insert("best_epoch".into(), json!(outcome.best_epoch));
    m.insert("best_loss".into(), finite(outcome.best_loss));
    m.insert(
        "first_loss".into(),
        outcome
            .history
            .first()
            .map_or(serde_json::Value::Null, |s| finite(s.loss)),
    );
    m.insert(
        "last_loss".into(),
        outcome
            .history
            .last()
            .map_or(serde_json::Value::Null, |s| finite(s.loss)),
    );
    training_metrics(&mut m, &schedule, &outcome, &data);
    Ok(m)
}

/// `sample.safetensors` (F32 `input` and `output`, the patch shape) and
/// `sample.json` {participant_id} for the first training subject, eval mode.
fn write_sample(ae: &AutoEncoder, data: &CropSplit, out: &std::path::Path) -> Result<()> {
    let Some(subject) = data.subjects.first() else {
        return Ok(());
    };
    let input = data.centre_range(0, 1);
    let (_, output) = tch::no_grad(|| ae.forward_t(&input, false));
    let shape: Vec<i64> = data.meta.patch_dims().to_vec();
    let cpu = |t: &tch::Tensor| {
        t.reshape(shape.as_slice())
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
    };
    let named = [("input", cpu(&input)), ("output", cpu(&output))];
    let path = out.join("sample.safetensors");
    tch::Tensor::write_safetensors(&named, &path)
        .context(|| format!("{}: cannot write the AE sample", path.display()))?;
    let json_path = out.join("sample.json");
    std::fs::write(
        &json_path,
        json!({"participant_id": subject.participant_id}).to_string(),
    )
    .map_err(|e| crate::error::msg(format!("{}: {e}", json_path.display())))?;
    Ok(())
}
