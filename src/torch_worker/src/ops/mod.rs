//! The worker's ops, one file each, dispatched from the runner's table of torch ops.

pub mod evaluate;
pub mod extract_codes;
pub mod train_ae;
pub mod train_cnn;

use hcpipe::ops::torch_ops::{TorchJob, TorchOp};
use hcpipe::ops::{Metrics, OpCtx, OpError};
use serde_json::{json, Value};
use tch::Device;

use crate::data::CropMeta;
use crate::error::{msg, Result};

/// Runs `op`, one of the table's ([`hcpipe::ops::torch_ops`]), with its params parsed by the
/// type the table gives it; what it writes under `ctx.out` is the artifact.
pub fn run(op: &str, ctx: &OpCtx) -> Result<Metrics> {
    let op = TorchOp::from_name(op).ok_or_else(|| {
        msg(format!(
            "the torch worker has no op `{op}`; it runs {} (is the runner newer than the \
             worker? rebuild with `make build`)",
            TorchOp::names()
        ))
    })?;
    let job = op
        .job(ctx.params)
        .map_err(|e| OpError::Params(format!("stage `{}`: {e}", ctx.stage)))?;
    match job {
        TorchJob::TrainCnn(p) => train_cnn::run(ctx, p),
        TorchJob::Evaluate(p) => evaluate::run(ctx, p),
        TorchJob::TrainAe(p) => train_ae::run(ctx, p),
        TorchJob::ExtractCodes(p) => extract_codes::run(ctx, p),
    }
}

/// The training shift: the param, else the crop's stored margin; never more than the margin.
fn resolve_shift(stage: &str, asked: Option<usize>, meta: &CropMeta) -> Result<i64> {
    let shift = asked.unwrap_or(meta.shift);
    if shift > meta.shift {
        return Err(msg(format!(
            "stage `{stage}`: `shift: {shift}` exceeds the {} voxels of margin the `crop` stage \
             stored; lower `shift` or raise the crop's `shift`",
            meta.shift
        )));
    }
    Ok(shift as i64)
}

/// Metrics every op reports.
fn common_metrics(device: Device, started: std::time::Instant) -> Metrics {
    let mut m = Metrics::new();
    m.insert("device".into(), json!(crate::device::name(device)));
    m.insert("libtorch".into(), json!(crate::LIBTORCH_VERSION));
    m.insert("wall_s".into(), json!(started.elapsed().as_secs_f64()));
    m
}

/// What `train_cnn` and `train_ae` both report about their schedule and data.
fn training_metrics(
    m: &mut Metrics,
    schedule: &crate::train::Schedule,
    outcome: &crate::train::Outcome,
    data: &crate::data::CropSplit,
) {
    m.insert("epochs".into(), json!(schedule.epochs));
    m.insert("seconds_per_epoch".into(), json!(outcome.seconds_per_epoch));
    m.insert("optimizer".into(), json!("adam (fused)"));
    m.insert("cuda_graph".into(), json!(outcome.cuda_graph));
    m.insert("n_train".into(), json!(data.len()));
    m.insert("seed".into(), json!(schedule.seed));
    m.insert("shift".into(), json!(schedule.shift));
    m.insert("region".into(), json!(data.meta.region));
    m.insert("patch_shape".into(), json!(data.meta.patch_shape));
}

/// JSON for a possibly non-finite loss (JSON has no NaN).
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}
