//! `extract_codes`: the autoencoder's codes of one split, for clustering.
//!
//! Artifact: `codes.tsv` (`participant_id label f0 … f79`), the lab's
//! `compute_dataset_features` in eval mode on unshifted patches. The split is
//! the lab crop's `split` (default `train`), or with a subject-list need its
//! set `set` (default `train`), which the metrics name as `"set"` (for `gmm`).

use std::time::Instant;

use hcpipe::artifact::codes::{self, Codes};
use hcpipe::ops::torch_params::{ExtractCodesParams, Split, SubjectSet};
use hcpipe::ops::{Metrics, OpCtx};
use serde_json::json;
use tch::nn::VarStore;
use tch::Device;

use super::{common_metrics, load_patches};
use crate::error::{Result, TchContext};
use crate::models::AutoEncoder;

pub fn run(ctx: &OpCtx, p: ExtractCodesParams) -> Result<Metrics> {
    let started = Instant::now();
    let model = ctx.input_by_op("train_ae")?;
    let crop = ctx.input_by_op("crop")?;
    let device = crate::device::pick(p.device, ctx.threads)?;
    if p.split.is_some() && super::subject_list(ctx)?.is_some() {
        return Err(crate::error::msg(format!(
            "stage `{}`: `split` picks a split of a lab crop, but a subject list is among its \
             needs; name the list's file with `set: train|validation|test` instead",
            ctx.stage
        )));
    }
    let split = p.split.unwrap_or(Split::Train);
    let patches = load_patches(ctx, crop, device, split, p.set, SubjectSet::Train)?;
    let (data, set) = (patches.data, patches.set);

    let vs = VarStore::new(device);
    let ae = AutoEncoder::new(&vs.root());
    crate::weights::load(&vs, &model.dir.join("weights.safetensors"), "train_ae")?;

    let batch = p
        .batch_size
        .unwrap_or_else(|| crate::train::eval_batch(device, crate::train::Net::AutoEncoder));
    let n = data.len();
    let mut codes: Vec<Vec<f32>> = Vec::with_capacity(n);
    tch::no_grad(|| -> Result<()> {
        let mut start = 0;
        while start < n {
            let len = batch.max(1).min(n - start);
            let (code, _) = ae.forward_t(&data.centre_range(start, len), false);
            let code = code.to_device(Device::Cpu);
            for row in 0..len as i64 {
                codes.push(
                    Vec::<f32>::try_from(code.get(row)).context(|| "reading codes".to_string())?,
                );
            }
            start += len;
        }
        Ok(())
    })?;

    let width = codes.first().map_or(0, Vec::len);
    Codes {
        ids: data
            .subjects
            .iter()
            .map(|s| s.participant_id.clone())
            .collect(),
        labels: data.labels_host(),
        width,
        features: codes.into_iter().flatten().collect(),
    }
    .write(&ctx.out.join(codes::FILE))?;

    let mut m = common_metrics(device, started);
    match set {
        None => m.insert("split".into(), json!(split.stem())),
        Some(set) => m.insert("set".into(), json!(set.name())),
    };
    m.insert("n".into(), json!(n));
    m.insert("code_size".into(), json!(width));
    m.insert("region".into(), json!(data.meta.region));
    Ok(m)
}
