//! The worker's ops, one file each, dispatched from the runner's table of torch ops.

pub mod evaluate;
pub mod extract_codes;
pub mod train_ae;
pub mod train_cnn;

use hcpipe::artifact::subjects::SubjectSets;
use hcpipe::ops::torch_ops::{TorchJob, TorchOp};
use hcpipe::ops::torch_params::{Split, SubjectSet};
use hcpipe::ops::{Input, Metrics, OpCtx, OpError};
use serde_json::{json, Value};
use tch::Device;

use crate::data::{CropMeta, CropSplit};
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

/// The stage's subject list, if it has one: the need (other than a `crop`) whose folder holds
/// `train.tsv` and `validation.tsv` or `test.tsv` (a `split` or `kfold` member, or any stage
/// writing those files). Found by its files, not by the op that made it.
fn subject_list<'a>(ctx: &OpCtx<'a>) -> Result<Option<(&'a Input, SubjectSets)>> {
    let mut found = Vec::new();
    for input in ctx.inputs {
        // A lab crop also holds train.tsv and validation.tsv: its patch tables, not a list.
        if input.op.as_deref() == Some("crop") {
            continue;
        }
        if let Some(sets) = SubjectSets::open(&input.dir)? {
            found.push((input, sets));
        }
    }
    if found.len() > 1 {
        let names: Vec<String> = found
            .iter()
            .map(|(i, _)| format!("`{}`", i.stage))
            .collect();
        return Err(msg(format!(
            "stage `{}` has several subject lists in its `needs` ({}); keep one",
            ctx.stage,
            names.join(", ")
        )));
    }
    Ok(found.pop())
}

/// The patches a stage works on, and the subject-list set they are when they come from one.
struct Patches {
    data: CropSplit,
    /// `Some(set)` when a subject list chose the subjects.
    set: Option<SubjectSet>,
}

/// Loads the patches of `crop` a stage works on: with a subject-list need, its set `set`
/// (default `default_set`) picked from the crop; without one, the lab crop's split `lab`
/// (and `set` is refused: it names a file of a list the stage does not have).
fn load_patches(
    ctx: &OpCtx,
    crop: &Input,
    device: Device,
    lab: Split,
    set: Option<SubjectSet>,
    default_set: SubjectSet,
) -> Result<Patches> {
    let Some((list, sets)) = subject_list(ctx)? else {
        if let Some(set) = set {
            return Err(msg(format!(
                "stage `{}`: `set: {}` picks a file of a subject list, but none of its needs is \
                 one (a folder with train.tsv and validation.tsv or test.tsv, as `split` and \
                 `kfold` write); add the list to `needs`, or drop `set` to use the lab's split",
                ctx.stage,
                set.name()
            )));
        }
        return Ok(Patches {
            data: CropSplit::load(&crop.dir, lab, device)?,
            set: None,
        });
    };
    let set = set.unwrap_or(default_set);
    let wanted = sets
        .get(set.name())
        .map(|l| l.0.as_slice())
        .ok_or_else(|| {
            msg(format!(
                "stage `{}`: subject list `{}` has no `{}` set (no {}.tsv in {}; it has {}); pick \
             one of those with `set:`",
                ctx.stage,
                list.stage,
                set.name(),
                set.name(),
                list.dir.display(),
                sets.names().join(", ")
            ))
        })?;
    let data = CropSplit::load_selected(
        &crop.dir,
        &crop.stage,
        set.name(),
        &list.stage,
        wanted,
        device,
    )?;
    Ok(Patches {
        data,
        set: Some(set),
    })
}

/// A training set from a subject list must hold both classes: a fold without AD (or CN)
/// subjects trains a model that has never seen one.
fn check_both_classes(ctx: &OpCtx, patches: &Patches) -> Result<()> {
    if patches.set.is_none() {
        return Ok(());
    }
    let labels = patches.data.labels_host();
    for (label, name) in [(1, "AD"), (0, "CN")] {
        if !labels.contains(&label) {
            let list = subject_list(ctx)?.map_or_else(String::new, |(i, _)| i.stage.clone());
            return Err(msg(format!(
                "stage `{}`: the training set of subject list `{list}` has no {name} subjects \
                 ({} subjects, all of the other class); draw the split or folds so that every \
                 training set holds both classes (fewer folds, or another seed)",
                ctx.stage,
                labels.len()
            )));
        }
    }
    Ok(())
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
