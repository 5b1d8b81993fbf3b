//! `evaluate`: a `train_cnn` model on the validation split of its `crop`, or,
//! with a subject-list need, on its set `set` (default `validation`) taken
//! from the crop.
//!
//! Artifact: `predictions.tsv` (`participant_id true_label predicted_label
//! proba0 proba1`, one row per evaluated patch) and metrics
//! `{"validation": {...}, "old": {...}}` with the lab's `compute_metrics`
//! plus `roc_auc` (of P(AD); null with one class only) and `mean_loss`
//! (summed cross-entropy / n, as the lab's `test`). "old"
//! restricts to the subjects an upstream `age_filter` stage lists (the lab's
//! check on participants aged 62 and over). With a subject list the first
//! key is the set's name (`test`, ...) and `"set"` names it too, so that
//! `soft_vote` keys its metrics the same way.

use std::path::Path;
use std::time::Instant;

use hcpipe::artifact::metrics;
use hcpipe::artifact::predictions::{self, Prediction, Predictions};
use hcpipe::artifact::subjects::{self, Subjects};
use hcpipe::ops::metrics::scored_metrics;
use hcpipe::ops::torch_params::{EvaluateParams, Split, SubjectSet};
use hcpipe::ops::{Metrics, OpCtx};
use serde_json::{json, Value};
use tch::nn::VarStore;

use super::{common_metrics, finite, load_patches};
use crate::data::CropSplit;
use crate::error::{msg, Result};
use crate::models::CustomNetwork;
use crate::train::{classify, Classified};

pub fn run(ctx: &OpCtx, p: EvaluateParams) -> Result<Metrics> {
    let started = Instant::now();
    let model = ctx.input_by_op("train_cnn")?;
    let crop = ctx.input_by_op("crop")?;
    let old_filter = match ctx.inputs_by_op("age_filter").as_slice() {
        [] => None,
        [one] => Some(*one),
        _ => {
            return Err(msg(format!(
                "stage `{}` has several upstream `age_filter` stages; keep at most one in `needs`",
                ctx.stage
            )))
        }
    };
    let device = crate::device::pick(p.device, ctx.threads)?;
    // A subject list's set `set` (default validation), else the lab crop's validation split.
    let patches = load_patches(
        ctx,
        crop,
        device,
        Split::Validation,
        p.set,
        SubjectSet::Validation,
    )?;
    let (data, set) = (patches.data, patches.set);
    let set_name = set.map_or("validation", SubjectSet::name);
    check_same_crop(ctx.stage, &model.dir, &model.stage, &data, &crop.stage)?;

    let vs = VarStore::new(device);
    let net = CustomNetwork::new(&vs.root());
    crate::weights::load(&vs, &model.dir.join("weights.safetensors"), "train_cnn")?;
    let batch = p
        .batch_size
        .unwrap_or_else(|| crate::train::eval_batch(device, crate::train::Net::Cnn));
    let c = classify(&net, &data, batch)?;

    let rows =
        data.subjects
            .iter()
            .zip(&c.predicted)
            .zip(&c.proba)
            .map(|((s, &predicted_label), pr)| Prediction {
                participant_id: s.participant_id.clone(),
                true_label: s.label,
                predicted_label,
                proba0: pr[0],
                proba1: pr[1],
            });
    Predictions(rows.collect()).write(&ctx.out.join(predictions::FILE))?;

    let truth = data.labels_host();
    let all: Vec<usize> = (0..data.len()).collect();
    let mut m = Metrics::new();
    m.insert(set_name.into(), subset_metrics(&truth, &c, &all));
    if let Some(filter) = old_filter {
        let kept = Subjects::read(&filter.dir.join(subjects::FILE))?;
        let keep = kept.ids();
        let old: Vec<usize> = (0..data.len())
            .filter(|&i| {
                data.subjects
                    .get(i)
                    .is_some_and(|s| keep.contains(s.participant_id.as_str()))
            })
            .collect();
        if old.is_empty() {
            let fix = match set {
                None => "give the age_filter stage `split: validation`",
                Some(_) => "give the age_filter stage the split these subjects come from",
            };
            return Err(msg(format!(
                "stage `{}`: none of the {} subjects listed by `{}` is in the {set_name} set of \
                 `{}`; {fix}",
                ctx.stage,
                keep.len(),
                filter.stage,
                crop.stage
            )));
        }
        m.insert("old".into(), subset_metrics(&truth, &c, &old));
    }
    m.extend(common_metrics(device, started));
    m.insert("region".into(), json!(data.meta.region));
    if let Some(set) = set {
        m.insert("set".into(), json!(set.name()));
    }
    Ok(m)
}

/// The lab's metrics, the ROC AUC of P(AD) (null with one class only) and the mean loss
/// (summed cross-entropy / n) over the patches `idx`.
fn subset_metrics(truth: &[i64], c: &Classified, idx: &[usize]) -> Value {
    let pick = |v: &[i64]| -> Vec<i64> { idx.iter().filter_map(|&i| v.get(i).copied()).collect() };
    let proba1: Vec<f64> = idx
        .iter()
        .filter_map(|&i| c.proba.get(i))
        .map(|p| p[1])
        .collect();
    let loss: f64 = idx.iter().filter_map(|&i| c.losses.get(i)).sum();
    let s = scored_metrics(&pick(truth), &pick(&c.predicted), &proba1);
    let b = s.binary;
    json!({
        "accuracy": b.accuracy,
        "sensitivity": b.sensitivity,
        "specificity": b.specificity,
        "balanced_accuracy": b.balanced_accuracy,
        "roc_auc": s.roc_auc,
        "mean_loss": finite(loss / idx.len().max(1) as f64),
        "n": b.n,
    })
}

/// Refuses a model trained on another region or patch size than the crop it is evaluated on.
fn check_same_crop(
    stage: &str,
    model_dir: &Path,
    model_stage: &str,
    data: &CropSplit,
    crop_stage: &str,
) -> Result<()> {
    // Older or hand-made model folders may lack metrics; the weight shapes are still checked.
    let Some(trained) = metrics::read_in(model_dir)? else {
        return Ok(());
    };
    if let Some(region) = trained.get("region").and_then(Value::as_str) {
        if region != data.meta.region.as_str() {
            return Err(msg(format!(
                "stage `{stage}`: model `{model_stage}` was trained on region `{region}` but `{crop_stage}` \
                 crops `{}`; put the crop the model was trained on in `needs`",
                data.meta.region
            )));
        }
    }
    Ok(())
}
