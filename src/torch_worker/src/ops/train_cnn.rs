//! `train_cnn`: the lab's CustomNetwork trained on one `crop` stage (its train split, or the
//! `train` set of a subject-list need).
//!
//! Artifact: `weights.safetensors` (the best epoch's weights, lab names),
//! `history.tsv` (epoch, loss, balanced_accuracy on the training split).

use std::time::Instant;

use hcpipe::ops::torch_params::{Split, SubjectSet, TrainCnnParams};
use hcpipe::ops::{Metrics, OpCtx};
use serde_json::json;
use tch::nn::ModuleT;
use tch::{Reduction, Tensor};

use super::{
    check_both_classes, common_metrics, finite, load_patches, resolve_shift, training_metrics,
};
use crate::error::{msg, Result};
use crate::models::CustomNetwork;
use crate::train::{classifier_stats, eval_batch, fit, seeded_store, write_history, Net, Schedule};

pub fn run(ctx: &OpCtx, p: TrainCnnParams) -> Result<Metrics> {
    let started = Instant::now();
    let crop = ctx.input_by_op("crop")?;
    let device = crate::device::pick(p.device, ctx.threads)?;
    // A subject list's `train` set, else the lab crop's train split.
    let patches = load_patches(ctx, crop, device, Split::Train, None, SubjectSet::Train)?;
    check_both_classes(ctx, &patches)?;
    let data = patches.data;
    if !CustomNetwork::accepts(data.meta.patch_dims()) {
        return Err(msg(format!(
            "stage `{}`: the lab's CNN needs patches that pool to 4×5×4 (e.g. 30×40×30); \
             `{}` made {:?} patches. Use the lab's crop boxes",
            ctx.stage, crop.stage, data.meta.patch_shape
        )));
    }
    let schedule = Schedule {
        lr: p.lr,
        epochs: p.epochs,
        batch_size: p.batch_size,
        seed: p.seed,
        shift: resolve_shift(ctx.stage, p.shift, &data.meta)?,
    };

    let (vs, mut net, generator) = seeded_store(p.seed, device, CustomNetwork::new)?;
    net.draw_dropout_from(generator);
    let outcome = fit(
        &vs,
        &data,
        &schedule,
        |images, labels| {
            net.forward_t(images, true).cross_entropy_loss::<Tensor>(
                labels,
                None,
                Reduction::Sum,
                -100,
                0.0,
            )
        },
        || classifier_stats(&net, &data, eval_batch(device, Net::Cnn)),
    )?;

    outcome.best.save(
        &CustomNetwork::BATCH_NORMS,
        outcome.best_steps,
        &ctx.out.join("weights.safetensors"),
    )?;
    write_history(
        &ctx.out.join(hcpipe::artifact::history::FILE),
        &outcome.history,
    )?;

    let best = outcome.best_epoch.and_then(|e| outcome.history.get(e));
    let last = outcome.history.last();
    let mut m = common_metrics(device, started);
    m.insert("best_epoch".into(), json!(outcome.best_epoch));
    m.insert("best_loss".into(), finite(outcome.best_loss));
    m.insert(
        "train_balanced_accuracy".into(),
        json!(best.and_then(|s| s.balanced_accuracy)),
    );
    m.insert(
        "last_loss".into(),
        last.map_or(serde_json::Value::Null, |s| finite(s.loss)),
    );
    m.insert(
        "last_balanced_accuracy".into(),
        json!(last.and_then(|s| s.balanced_accuracy)),
    );
    training_metrics(&mut m, &schedule, &outcome, &data);
    Ok(m)
}
