//! `extract_codes`: the autoencoder's codes of one split, for clustering.
//!
//! Artifact: `codes.tsv` (`participant_id label f0 … f79`), the lab's
//! `compute_dataset_features` in eval mode on unshifted patches.

use std::time::Instant;

use hcpipe::artifact::codes::{self, Codes};
use hcpipe::ops::torch_params::ExtractCodesParams;
use hcpipe::ops::{Metrics, OpCtx};
use serde_json::json;
use tch::nn::VarStore;
use tch::Device;

use super::common_metrics;
use crate::data::CropSplit;
use crate::error::{Result, TchContext};
use crate::models::AutoEncoder;

pub fn run(ctx: &OpCtx, p: ExtractCodesParams) -> Result<Metrics> {
    let started = Instant::now();
    let model = ctx.input_by_op("train_ae")?;
    let crop = ctx.input_by_op("crop")?;
    let device = crate::device::pick(p.device, ctx.threads)?;
    let data = CropSplit::load(&crop.dir, p.split, device)?;

    let vs = VarStore::new(device);
    let ae = AutoEncoder::new(&vs.root());
    crate::weights::load(&vs, &model.dir.join("weights.safetensors"), "train_ae")?;

    let n = data.len();
    let mut codes: Vec<Vec<f32>> = Vec::with_capacity(n);
    tch::no_grad(|| -> Result<()> {
        let mut start = 0;
        while start < n {
            let len = p.batch_size.max(1).min(n - start);
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
    m.insert("split".into(), json!(p.split.stem()));
    m.insert("n".into(), json!(n));
    m.insert("code_size".into(), json!(width));
    m.insert("region".into(), json!(data.meta.region));
    Ok(m)
}
