//! The worker's ops, one file each, dispatched by name from a job.

pub mod evaluate;
pub mod extract_codes;
pub mod train_ae;
pub mod train_cnn;

use hcpipe::ops::{Metrics, OpCtx, OpError};
use serde_json::{json, Value};
use tch::Device;

use crate::data::CropMeta;
use crate::error::{msg, Result};

/// The ops this worker runs.
pub const NAMES: [&str; 4] = ["train_cnn", "evaluate", "train_ae", "extract_codes"];

/// Runs `op`; what it writes under `ctx.out` is the artifact.
pub fn run(op: &str, ctx: &OpCtx) -> Result<Metrics> {
    match op {
        "train_cnn" => train_cnn::run(ctx),
        "evaluate" => evaluate::run(ctx),
        "train_ae" => train_ae::run(ctx),
        "extract_codes" => extract_codes::run(ctx),
        other => Err(msg(format!(
            "the torch worker has no op `{other}`; it runs `{}` (is the runner newer than the \
             worker? rebuild with `make build`)",
            NAMES.join("`, `")
        ))),
    }
}

/// Parses params with a typed struct's checker, as the runner does at load time.
fn params<T>(
    ctx: &OpCtx,
    parse: fn(&hcpipe::ops::Params) -> std::result::Result<T, String>,
) -> Result<T> {
    parse(ctx.params).map_err(|e| OpError::Params(format!("stage `{}`: {e}", ctx.stage)))
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
