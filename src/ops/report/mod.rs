//! `report`: one self-contained HTML page (`report.html`) with the PNG
//! figures it shows beside it, summarising a run of the lab's pipeline.
//!
//! The op finds what to show by the ops that produced its `needs`; every
//! section is optional and appears when its input is there:
//! - provenance: the title, the pipeline name (params), each upstream stage
//!   with its op, its artifact's short content hash (from the runner's
//!   [`Input`], so in this stage's key) and the `device` its `metrics.json`
//!   reports;
//! - `demographics`: the population tables (all / train / validation) from
//!   `population.tsv` and the bias checks from `checks.tsv`;
//! - `fetch` / `synth` (the dataset): one subject's preprocessed grey-matter
//!   map in the lab's three slices with the hippocampus crop boxes drawn on
//!   them, both crops' centre slices, and the raw T1's slices when the
//!   dataset has `raw/<pid>_<sid>_T1w.nii.gz`;
//! - `train_cnn`: loss and balanced accuracy per epoch, per stage (so per
//!   sweep member), and all stages overlaid when there are several;
//! - `evaluate` and `soft_vote`: the validation metrics, all subjects and
//!   the age-filtered ones;
//! - `train_ae`: the loss curve and one subject's input vs reconstruction;
//! - `gmm`: age vs MMS coloured by cluster and the clustering metrics;
//! - a user's own stages (`cmd`): their metrics; their `predictions.tsv`
//!   and classifier `history.tsv` join the validation and training sections,
//!   which find their members by those files, not by op;
//! - `aggregate`: the paper table (mean ± SD over folds and seeds, pooled rows labelled) and a
//!   strip plot per set of each row's members' balanced accuracy, coloured by fold.
//!
//! One file per section of the page; every upstream file is read through
//! its type in [`crate::artifact`].
//!
//! Artifact: `report.html` and `*.png`, linked by relative paths, so the
//! folder opens from disk without a server. Metrics: the sections shown,
//! the image files, the number of tables and the subject shown.

mod autoencoder;
mod clustering;
mod figures;
mod html;
mod images;
mod own;
mod paper_table;
mod population;
mod provenance;
mod read;
pub mod slices;
mod training;
mod validation;

use serde::Deserialize;
use serde_json::json;

use self::figures::SlicePanel;
use self::html::Page;
use self::slices::Grid3;
use super::{Input, Metrics, OpCtx, OpError};
use crate::artifact::metrics;

/// Params: all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// The page's heading.
    #[serde(default = "default_title")]
    pub title: String,
    /// The pipeline's name, printed under the heading (the op cannot know
    /// it: pass `${pipeline}`-style text or a literal).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The subject whose images are shown; default: the first subject of
    /// the dataset's `tsv_files/lab_1/validation.tsv`.
    #[serde(default)]
    pub subject: Option<String>,
}

fn default_title() -> String {
    "hcpipe report".to_string()
}

pub fn check_params(params: &super::Params) -> Result<(), String> {
    super::parse_params::<ReportParams>(params).map(|_| ())
}

/// Pixel height of a slice row's images.
const SLICE_HEIGHT: u32 = 260;
const AXES: [&str; 3] = ["x", "y", "z"];

/// The op's entry point (see the module docs).
pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let params: ReportParams = ctx.params()?;
    let shown = [
        "demographics",
        "fetch",
        "synth",
        "train_cnn",
        "evaluate",
        "soft_vote",
        "train_ae",
        "gmm",
        "aggregate",
    ];
    if !ctx.inputs.iter().any(|i| match i.op.as_deref() {
        Some(op) => shown.contains(&op),
        // A user's stage shows what it wrote in the documented formats.
        None => ["metrics.json", "predictions.tsv", "history.tsv"]
            .iter()
            .any(|f| i.dir.join(f).is_file()),
    }) {
        return Err(OpError::Msg(format!(
            "stage `{}` (report) has nothing to show: its `needs` hold no stage made by {}, nor a cmd stage of yours that wrote metrics.json, predictions.tsv or history.tsv; \
             add the stages whose results the page should show",
            ctx.stage,
            shown.join(", ")
        )));
    }
    let mut page = Page::default();
    provenance::provenance(ctx, &params, &mut page)?;
    for input in ctx.inputs_by_op("demographics") {
        population::population(input, ctx.inputs_by_op("demographics").len() > 1, &mut page)?;
    }
    let mut subject = None;
    if let Ok(dataset) = ctx.input_by_any_op(&["fetch", "synth"]) {
        subject = Some(images::images(ctx, dataset, &params, &mut page)?);
    }
    training::training(ctx, &mut page)?;
    validation::validation(ctx, &mut page)?;
    for (i, input) in ctx.inputs_by_op("train_ae").iter().enumerate() {
        autoencoder::autoencoder(ctx, input, i, &mut page)?;
    }
    for (i, input) in ctx.inputs_by_op("gmm").iter().enumerate() {
        clustering::clustering(ctx, input, i, &mut page)?;
    }
    for (i, input) in ctx.inputs_by_op("aggregate").iter().enumerate() {
        paper_table::paper_table(ctx, input, i, &mut page)?;
    }
    own::own_stages(ctx, &mut page)?;

    let mut metrics = Metrics::new();
    metrics.insert("sections".into(), json!(page.sections));
    metrics.insert("images".into(), json!(page.images));
    metrics.insert("tables".into(), json!(page.tables));
    if let Some(s) = subject {
        metrics.insert("subject".into(), json!(s));
    }
    let path = ctx.out.join("report.html");
    std::fs::write(&path, page.finish(&params.title)).map_err(|e| OpError::io(&path, e))?;
    Ok(metrics)
}

/// An input's `metrics.json` `device`, when it has a readable one.
fn device_of(input: &Input) -> Option<String> {
    metrics::read_in(&input.dir)
        .ok()
        .flatten()
        .and_then(|m| metrics::device(&m).map(str::to_string))
}

/// Three slices at `indices` (one per axis) of `grid`; `name(axis)` labels axes.
fn three_slices(
    grid: &Grid3,
    indices: [usize; 3],
    boxes: bool,
    what: &str,
) -> Result<Vec<SlicePanel>, OpError> {
    let mut panels = Vec::new();
    for (axis, &index) in indices.iter().enumerate() {
        let slice = grid.slice(axis, index).ok_or_else(|| {
            OpError::Msg(format!(
                "{what}: slice {index} along axis {axis} is outside the {:?} volume",
                grid.dims
            ))
        })?;
        let rest: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
        panels.push(SlicePanel {
            slice,
            caption: format!("{} = {index}", AXES[axis]),
            h_label: format!("{} (voxel)", AXES[rest[0]]),
            v_label: format!("{} (voxel)", AXES[rest[1]]),
            outlines: if boxes {
                images::outlines(axis, index)
            } else {
                Vec::new()
            },
        });
    }
    Ok(panels)
}

fn draw(result: Result<(), String>) -> Result<(), OpError> {
    result.map_err(OpError::Msg)
}

#[cfg(test)]
mod tests;
