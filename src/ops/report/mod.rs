//! `report`: one self-contained HTML page (`report.html`) with the PNG
//! figures it shows beside it, summarising a run of the lab's pipeline.
//!
//! The op finds what to show by the ops that produced its `needs`; every
//! section is optional and appears when its input is there:
//! - provenance: the title, the pipeline name (params), each upstream stage
//!   with its op, its artifact's short key (artifact folders are named by
//!   stage key) and the `device` its `metrics.json` reports;
//! - `demographics`: the population tables (all / train / validation) from
//!   `population.tsv` and the bias checks from `checks.tsv`;
//! - `fetch` / `synth` (the dataset): one subject's preprocessed grey-matter
//!   map in the lab's three slices with the hippocampus crop boxes drawn on
//!   them, both crops' centre slices, and the raw T1's slices when the
//!   dataset has `raw/<pid>_ses-M00_T1w.nii.gz`;
//! - `train_cnn`: loss and balanced accuracy per epoch, per stage (so per
//!   sweep member), and all stages overlaid when there are several;
//! - `evaluate` and `soft_vote`: the validation metrics, all subjects and
//!   the age-filtered ones;
//! - `train_ae`: the loss curve and one subject's input vs reconstruction;
//! - `gmm`: age vs MMS coloured by cluster and the clustering metrics.
//!
//! Artifact: `report.html` and `*.png`, linked by relative paths, so the
//! folder opens from disk without a server. Metrics: the sections shown,
//! the image files, the number of tables and the subject shown.

mod figures;
mod html;
mod read;
pub mod slices;

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use self::figures::{CurvePanel, Outline, Series, SlicePanel};
use self::html::{num, Page};
use self::slices::{Grid3, Slice};
use super::{Input, Metrics, OpCtx, OpError};

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

const LAB: &str = "OASIS-1_dataset/tsv_files/lab_1";
/// The preprocessed volume as the lab stores it: `[1, 121, 145, 121]`.
const PT_SHAPE: [usize; 4] = [1, 121, 145, 121];
/// The lab's hippocampus boxes (CropLeftHC / CropRightHC), `[lo, hi)` per axis.
const LEFT_BOX: [(usize, usize); 3] = [(25, 55), (50, 90), (27, 57)];
const RIGHT_BOX: [(usize, usize); 3] = [(65, 95), (50, 90), (27, 57)];
/// Pixel height of a slice row's images.
const SLICE_HEIGHT: u32 = 260;
const AXES: [&str; 3] = ["x", "y", "z"];

fn preprocessed_path(dataset: &Path, pid: &str) -> std::path::PathBuf {
    dataset.join(format!(
        "OASIS-1_dataset/CAPS/subjects/{pid}/ses-M00/deeplearning_prepare_data/image_based/custom/\
         {pid}_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt"
    ))
}

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
    ];
    if !ctx
        .inputs
        .iter()
        .any(|i| i.op.as_deref().is_some_and(|o| shown.contains(&o)))
    {
        return Err(OpError::Msg(format!(
            "stage `{}` (report) has nothing to show: its `needs` hold no stage made by {}; \
             add the stages whose results the page should show",
            ctx.stage,
            shown.join(", ")
        )));
    }
    let mut page = Page::default();
    provenance(ctx, &params, &mut page)?;
    for input in ctx.inputs_by_op("demographics") {
        population(input, ctx.inputs_by_op("demographics").len() > 1, &mut page)?;
    }
    let mut subject = None;
    if let Ok(dataset) = ctx.input_by_any_op(&["fetch", "synth"]) {
        subject = Some(images(ctx, dataset, &params, &mut page)?);
    }
    training(ctx, &mut page)?;
    validation(ctx, &mut page)?;
    for (i, input) in ctx.inputs_by_op("train_ae").iter().enumerate() {
        autoencoder(ctx, input, i, &mut page)?;
    }
    for (i, input) in ctx.inputs_by_op("gmm").iter().enumerate() {
        clustering(ctx, input, i, &mut page)?;
    }

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

/// The artifact's short key: its folder's name (the stage key) cut as
/// `hcpipe show` cuts keys.
fn short_key(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.chars().take(12).collect()
}

/// An input's `metrics.json` `device`, when it has one.
fn device_of(input: &Input) -> Option<String> {
    let path = input.dir.join("metrics.json");
    path.exists()
        .then(|| read::json_object(&path).ok())
        .flatten()
        .and_then(|m| m.get("device").and_then(Value::as_str).map(str::to_string))
}

fn provenance(ctx: &OpCtx, params: &ReportParams, page: &mut Page) -> Result<(), OpError> {
    page.section("provenance", "Provenance");
    let mut line = String::new();
    if let Some(p) = &params.pipeline {
        line.push_str(&format!("Pipeline {p}; "));
    }
    line.push_str(&format!(
        "page written by the report stage {} (hcpipe {}). The key column is each upstream artifact's folder name, the stage key's first 12 characters.",
        ctx.stage,
        env!("CARGO_PKG_VERSION")
    ));
    page.para(&line);
    let mut devices: Vec<String> = Vec::new();
    let rows: Vec<Vec<String>> = ctx
        .inputs
        .iter()
        .map(|i| {
            let device = device_of(i);
            let op = i.op.clone().unwrap_or_else(|| "cmd".into());
            if let Some(d) = &device {
                if matches!(op.as_str(), "train_cnn" | "train_ae") && !devices.contains(d) {
                    devices.push(d.clone());
                }
            }
            vec![
                i.stage.clone(),
                op,
                short_key(&i.dir),
                device.unwrap_or_default(),
            ]
        })
        .collect();
    if !devices.is_empty() {
        page.para(&format!("Trained on: {}.", devices.join(", ")));
    }
    page.table(
        &["stage".into(), "op".into(), "key".into(), "device".into()],
        &rows,
    );
    page.end_section();
    Ok(())
}

fn population(input: &Input, several: bool, page: &mut Page) -> Result<(), OpError> {
    let id = format!("population-{}", page.sections.len());
    let heading = if several {
        format!("Population ({})", input.stage)
    } else {
        "Population".to_string()
    };
    page.section(&id, &heading);
    let path = input.dir.join("population.tsv");
    let table = read::tsv(&path)?;
    let split = table.column(&path, "split")?;
    let header: Vec<String> = table
        .header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != split)
        .map(|(_, h)| h.clone())
        .collect();
    // Splits in file order (all, train, validation), each its own table as the lab prints them.
    let mut splits: Vec<&str> = Vec::new();
    for row in &table.rows {
        let s = row.get(split).map(String::as_str).unwrap_or("");
        if !splits.contains(&s) {
            splits.push(s);
        }
    }
    for s in splits {
        let rows: Vec<Vec<String>> = table
            .rows
            .iter()
            .filter(|r| r.get(split).map(String::as_str) == Some(s))
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != split)
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .collect();
        page.heading(&format!("{s} subjects"));
        page.table(&header, &rows);
    }
    let checks_path = input.dir.join("checks.tsv");
    if checks_path.exists() {
        let checks = read::tsv(&checks_path)?;
        page.heading("Bias checks");
        page.table(&checks.header, &checks.rows);
    } else {
        page.para("No bias checks (the demographics artifact has no checks.tsv).");
    }
    page.end_section();
    Ok(())
}

/// The first `participant_id` of the dataset's validation table.
fn first_validation_subject(dataset: &Path) -> Result<String, OpError> {
    let path = dataset.join(LAB).join("validation.tsv");
    let table = read::tsv(&path)?;
    let col = table.column(&path, "participant_id")?;
    table
        .rows
        .first()
        .and_then(|r| r.get(col))
        .cloned()
        .ok_or_else(|| {
            OpError::Msg(format!(
                "{}: no subjects; set the report's `subject` param",
                path.display()
            ))
        })
}

/// Box outlines on a slice through `axis`, as (horizontal, vertical) axes of the slice.
fn outlines(axis: usize, index: usize) -> Vec<Outline> {
    let (h, v) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let mut out: Vec<Outline> = Vec::new();
    for (label, b, c) in [
        ("left HC", LEFT_BOX, figures::colour(1)),
        ("right HC", RIGHT_BOX, figures::colour(9)),
    ] {
        let (hr, vr) = (b[h], b[v]);
        let cut = (b[axis].0..b[axis].1).contains(&index);
        // Both boxes project onto the same rectangle of a sagittal slice: one outline, both names.
        if let Some(same) = out.iter_mut().find(|o| o.h == hr && o.v == vr) {
            same.label = format!("{} + {label}", same.label);
            same.cut |= cut;
            continue;
        }
        out.push(Outline {
            label: label.into(),
            h: hr,
            v: vr,
            colour: c,
            cut,
        });
    }
    out
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
                outlines(axis, index)
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

/// The dataset's images of one subject; returns the subject shown.
fn images(
    ctx: &OpCtx,
    dataset: &Input,
    params: &ReportParams,
    page: &mut Page,
) -> Result<String, OpError> {
    let pid = match &params.subject {
        Some(s) => s.clone(),
        None => first_validation_subject(&dataset.dir)?,
    };
    page.section("images", &format!("Images of {pid}"));
    let pt = preprocessed_path(&dataset.dir, &pid);
    if !pt.exists() {
        return Err(OpError::Msg(format!(
            "{}: missing, so the report cannot show subject `{pid}`'s images; \
             check the `subject` param (a participant_id of the dataset's tables)",
            pt.display()
        )));
    }
    let values = super::pt::read_f32(&pt, &PT_SHAPE).map_err(|e| OpError::Msg(e.to_string()))?;
    let [_, a, b, c] = PT_SHAPE;
    let volume = Grid3::c_order([a, b, c], values)
        .map_err(|e| OpError::Msg(format!("{}: {e}", pt.display())))?;

    let raw = dataset
        .dir
        .join(format!("OASIS-1_dataset/raw/{pid}_ses-M00_T1w.nii.gz"));
    if raw.exists() {
        raw_slices(ctx, &raw, &pid, page)?;
    }

    // The lab's [0,60,:,:], [0,:,72,:], [0,:,:,60].
    let panels = three_slices(&volume, [60, 72, 60], true, &pt.display().to_string())?;
    let file = "preprocessed.png";
    draw(figures::slice_row(
        &ctx.out.join(file),
        &format!("Centre slices of the preprocessed image of {pid}"),
        &panels,
        SLICE_HEIGHT,
    ))?;
    page.figure(
        file,
        &format!(
            "{pid}: grey-matter probability (space Ixi549), slices x = 60, y = 72, z = 60. \
             Hippocampus crop boxes: thick where the slice cuts the box, thin where the box is projected onto it."
        ),
    );
    for (name, bounds) in [("left", LEFT_BOX), ("right", RIGHT_BOX)] {
        let crop = volume.crop(bounds).ok_or_else(|| {
            OpError::Msg(format!(
                "the {name} hippocampus box {bounds:?} leaves the {:?} volume",
                volume.dims
            ))
        })?;
        let centre = crop.dims.map(|d| d / 2);
        let panels = three_slices(&crop, centre, false, &format!("{name} crop"))?;
        let file = format!("crop_{name}.png");
        draw(figures::slice_row(
            &ctx.out.join(&file),
            &format!("Centre slices of the {name} hippocampus of {pid}"),
            &panels,
            SLICE_HEIGHT,
        ))?;
        let [x, y, z] = bounds;
        page.figure(
            &file,
            &format!(
                "{pid}: {name} hippocampus crop x {}:{}, y {}:{}, z {}:{} (crop voxel coordinates).",
                x.0, x.1, y.0, y.1, z.0, z.1
            ),
        );
    }
    page.end_section();
    Ok(pid)
}

/// The raw T1 as the lab shows it: raw[80,:,:] and raw[:,130,:] turned a
/// quarter (scipy's `rotate(s, 90)`), raw[:,:,60] as is.
fn raw_slices(ctx: &OpCtx, path: &Path, pid: &str, page: &mut Page) -> Result<(), OpError> {
    let volume = super::nifti::read_nifti(path)?;
    let dims: [usize; 3] = match volume.dims.as_slice() {
        [a, b, c] | [a, b, c, 1] => [*a, *b, *c],
        other => {
            return Err(OpError::Msg(format!(
                "{}: a {other:?} image, expected a 3-D T1",
                path.display()
            )))
        }
    };
    let grid = Grid3::fortran_order(dims, volume.data)
        .map_err(|e| OpError::Msg(format!("{}: {e}", path.display())))?;
    // The lab's indices fit OASIS' 256×256×160 images; a smaller grid gets its centre.
    let pick = |axis: usize, lab: usize| {
        if lab < dims[axis] {
            lab
        } else {
            dims[axis] / 2
        }
    };
    let idx = [pick(0, 80), pick(1, 130), pick(2, 60)];
    let mut panels = Vec::new();
    for (axis, &index) in idx.iter().enumerate() {
        let slice = grid.slice(axis, index).ok_or_else(|| {
            OpError::Msg(format!(
                "{}: no slice {index} along axis {axis}",
                path.display()
            ))
        })?;
        let rest: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
        let (slice, h, v): (Slice, String, String) = if axis < 2 {
            // rot90(s)[i, j] = s[j, n1-1-i]: across runs the second remaining axis, reversed.
            (
                slice.rot90(),
                format!("{} − {} (voxel)", dims[rest[1]] - 1, AXES[rest[1]]),
                format!("{} (voxel)", AXES[rest[0]]),
            )
        } else {
            (
                slice,
                format!("{} (voxel)", AXES[rest[0]]),
                format!("{} (voxel)", AXES[rest[1]]),
            )
        };
        panels.push(SlicePanel {
            slice,
            caption: format!("{} = {index}", AXES[axis]),
            h_label: h,
            v_label: v,
            outlines: Vec::new(),
        });
    }
    let file = "raw.png";
    draw(figures::slice_row(
        &ctx.out.join(file),
        &format!("Slices of the raw image of {pid}"),
        &panels,
        SLICE_HEIGHT,
    ))?;
    page.figure(
        file,
        &format!(
            "{pid}: raw T1 ({}×{}×{}), slices x = {}, y = {}, z = {}; the first two turned a quarter as in the lab.",
            dims[0], dims[1], dims[2], idx[0], idx[1], idx[2]
        ),
    );
    Ok(())
}

fn training(ctx: &OpCtx, page: &mut Page) -> Result<(), OpError> {
    let trains = ctx.inputs_by_op("train_cnn");
    if trains.is_empty() {
        return Ok(());
    }
    page.section("training", "Training curves");
    let mut histories = Vec::new();
    let mut rows = Vec::new();
    for (i, input) in trains.iter().enumerate() {
        let h = read::history(
            &input.dir.join("history.tsv"),
            &["loss", "balanced_accuracy"],
        )?;
        let device = device_of(input).unwrap_or_else(|| "unknown device".into());
        let file = format!("train_{i}.png");
        draw(figures::curves(
            &ctx.out.join(&file),
            &format!("Training of {}", input.stage),
            &[
                CurvePanel {
                    caption: "loss".into(),
                    x_label: "epoch".into(),
                    y_label: "mean training loss".into(),
                    series: vec![Series {
                        label: input.stage.clone(),
                        points: h.points("loss"),
                    }],
                },
                CurvePanel {
                    caption: "balanced accuracy".into(),
                    x_label: "epoch".into(),
                    y_label: "balanced accuracy (train)".into(),
                    series: vec![Series {
                        label: input.stage.clone(),
                        points: h.points("balanced_accuracy"),
                    }],
                },
            ],
        ))?;
        page.figure(
            &file,
            &format!(
                "{} ({device}): loss and balanced accuracy on the training split per epoch.",
                input.stage
            ),
        );
        let last = |name: &str| h.get(name).and_then(|v| v.last().copied());
        let best = h
            .get("balanced_accuracy")
            .and_then(|v| v.iter().copied().filter(|x| x.is_finite()).reduce(f64::max));
        rows.push(vec![
            input.stage.clone(),
            h.epoch.len().to_string(),
            num(last("loss")),
            num(last("balanced_accuracy")),
            num(best),
            device,
        ]);
        histories.push((input.stage.clone(), h));
    }
    if histories.len() > 1 {
        let panel = |name: &str, y: &str| CurvePanel {
            caption: name.replace('_', " "),
            x_label: "epoch".into(),
            y_label: y.into(),
            series: histories
                .iter()
                .map(|(s, h)| Series {
                    label: s.clone(),
                    points: h.points(name),
                })
                .collect(),
        };
        let file = "train_all.png";
        draw(figures::curves(
            &ctx.out.join(file),
            "All training stages",
            &[
                panel("loss", "mean training loss"),
                panel("balanced_accuracy", "balanced accuracy (train)"),
            ],
        ))?;
        page.figure(
            file,
            "Every train_cnn stage (sweep members included) on the same axes.",
        );
    }
    page.table(
        &[
            "stage".into(),
            "epochs".into(),
            "last loss".into(),
            "last balanced accuracy".into(),
            "best balanced accuracy".into(),
            "device".into(),
        ],
        &rows,
    );
    page.end_section();
    Ok(())
}

const METRIC_COLUMNS: [(&str, &str); 6] = [
    ("n", "n"),
    ("balanced_accuracy", "balanced acc."),
    ("accuracy", "accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("mean_loss", "mean loss"),
];

fn metric_cells(group: Option<&Value>) -> Vec<String> {
    METRIC_COLUMNS
        .iter()
        .map(|(key, _)| {
            let v = group.and_then(|g| g.get(*key));
            match (key, v) {
                (&"n", Some(n)) => n
                    .as_u64()
                    .map_or_else(|| num(n.as_f64()), |n| n.to_string()),
                (_, v) => num(v.and_then(Value::as_f64)),
            }
        })
        .collect()
}

fn validation(ctx: &OpCtx, page: &mut Page) -> Result<(), OpError> {
    let members: Vec<&Input> = ctx
        .inputs_by_op("evaluate")
        .into_iter()
        .chain(ctx.inputs_by_op("soft_vote"))
        .collect();
    if members.is_empty() {
        return Ok(());
    }
    page.section("validation", "Validation metrics");
    let mut rows = Vec::new();
    let mut any_old = false;
    let mut tables = Vec::new();
    for m in &members {
        let path = m.dir.join("metrics.json");
        let metrics = read::json_object(&path)?;
        let all = metrics.get("validation").ok_or_else(|| {
            OpError::Msg(format!(
                "{}: no `validation` metrics; expected what `evaluate`/`soft_vote` write",
                path.display()
            ))
        })?;
        any_old |= metrics.contains_key("old");
        tables.push((m, metrics.clone(), all.clone()));
    }
    for (m, metrics, all) in &tables {
        let mut row = vec![format!(
            "{}{}",
            m.stage,
            if m.op.as_deref() == Some("soft_vote") {
                " (soft vote)"
            } else {
                ""
            }
        )];
        row.extend(metric_cells(Some(all)));
        if any_old {
            row.extend(metric_cells(metrics.get("old")));
        }
        rows.push(row);
    }
    let cols: Vec<String> = METRIC_COLUMNS.iter().map(|(_, h)| h.to_string()).collect();
    let mut groups = vec![("all validation subjects".to_string(), cols.clone())];
    if any_old {
        groups.push(("age ≥ 62 (age_filter)".to_string(), cols));
    }
    page.grouped_table("stage", &groups, &rows);
    page.para("The soft vote averages its members' probabilities; it has no loss. – marks a value a stage does not report.");
    page.end_section();
    Ok(())
}

fn autoencoder(ctx: &OpCtx, input: &Input, i: usize, page: &mut Page) -> Result<(), OpError> {
    page.section(
        &format!("autoencoder-{i}"),
        &format!("Autoencoder {}", input.stage),
    );
    let h = read::history(&input.dir.join("history.tsv"), &["loss"])?;
    let device = device_of(input).unwrap_or_else(|| "unknown device".into());
    let file = format!("ae_loss_{i}.png");
    draw(figures::curves(
        &ctx.out.join(&file),
        &format!("Training of {}", input.stage),
        &[CurvePanel {
            caption: "reconstruction loss".into(),
            x_label: "epoch".into(),
            y_label: "mean training loss".into(),
            series: vec![Series {
                label: input.stage.clone(),
                points: h.points("loss"),
            }],
        }],
    ))?;
    page.figure(
        &file,
        &format!("{} ({device}): reconstruction loss per epoch.", input.stage),
    );

    let sample = input.dir.join("sample.safetensors");
    if sample.exists() {
        let (x, y) = read::ae_sample(&sample)?;
        let meta = input.dir.join("sample.json");
        let pid = if meta.exists() {
            read::json_object(&meta)?
                .get("participant_id")
                .and_then(Value::as_str)
                .unwrap_or("an unnamed subject")
                .to_string()
        } else {
            "an unnamed subject".to_string()
        };
        for (grid, what) in [(&x, "input"), (&y, "output")] {
            let centre = grid.dims.map(|d| d / 2);
            let panels =
                three_slices(grid, centre, false, &format!("{} {what}", sample.display()))?;
            let file = format!("ae_{what}_{i}.png");
            draw(figures::slice_row(
                &ctx.out.join(&file),
                &format!("Centre slices of the {what} image of {pid}"),
                &panels,
                SLICE_HEIGHT,
            ))?;
            page.figure(
                &file,
                &format!("{}: autoencoder {what} for {pid}.", input.stage),
            );
        }
    } else {
        page.para(
            "This train_ae artifact has no sample.safetensors, so no reconstruction is shown.",
        );
    }
    page.end_section();
    Ok(())
}

fn clustering(ctx: &OpCtx, input: &Input, i: usize, page: &mut Page) -> Result<(), OpError> {
    page.section(
        &format!("clustering-{i}"),
        &format!("Clustering {}", input.stage),
    );
    let path = input.dir.join("assignments.tsv");
    let table = read::tsv(&path)?;
    let cluster = table.column(&path, "cluster")?;
    let (age, mms) = (
        table.header.iter().position(|h| h == "age"),
        table.header.iter().position(|h| h == "MMS"),
    );
    if let (Some(age), Some(mms)) = (age, mms) {
        let mut groups: Vec<(i64, Vec<(f64, f64)>)> = Vec::new();
        for (r, row) in table.rows.iter().enumerate() {
            let cell = |c: usize| row.get(c).map(String::as_str).unwrap_or("");
            let k: i64 = cell(cluster).trim().parse().map_err(|_| {
                OpError::Msg(format!(
                    "{}: line {}: cluster `{}` is not an integer",
                    path.display(),
                    r + 2,
                    cell(cluster)
                ))
            })?;
            // Empty age/MMS cells are missing values: the point is left out.
            let value = |c: usize| cell(c).trim().parse::<f64>().unwrap_or(f64::NAN);
            let point = (value(age), value(mms));
            match groups.iter_mut().find(|(g, _)| *g == k) {
                Some((_, pts)) => pts.push(point),
                None => groups.push((k, vec![point])),
            }
        }
        groups.sort_by_key(|(k, _)| *k);
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(k, points)| Series {
                label: format!("cluster {k}"),
                points,
            })
            .collect();
        let file = format!("clusters_{i}.png");
        draw(figures::scatter(
            &ctx.out.join(&file),
            "Clustering values according to age and MMS score",
            "age (years)",
            "MMS",
            &series,
        ))?;
        page.figure(
            &file,
            &format!(
                "{}: each training subject's age and MMS, coloured by its cluster.",
                input.stage
            ),
        );
    } else {
        page.para("assignments.tsv has no age and MMS columns (the gmm stage did not need the dataset), so no scatter plot.");
    }

    let mpath = input.dir.join("metrics.json");
    if mpath.exists() {
        let m = read::json_object(&mpath)?;
        let get = |k: &str| m.get(k).and_then(Value::as_f64);
        page.table(
            &[
                "n".into(),
                "components".into(),
                "mean log-likelihood".into(),
                "adjusted Rand index".into(),
                "cluster → label".into(),
            ],
            &[vec![
                m.get("n").map(|v| v.to_string()).unwrap_or_default(),
                m.get("n_components")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                num(get("mean_log_likelihood")),
                num(get("adjusted_rand_index")),
                m.get("cluster_to_label")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ]],
        );
        let rows: Vec<Vec<String>> = [
            ("lab", "cluster index as label (the lab)"),
            ("matched", "best cluster → label mapping"),
        ]
        .iter()
        .filter_map(|(k, name)| {
            let g = m.get(*k)?;
            let mut row = vec![name.to_string()];
            row.extend(
                [
                    "accuracy",
                    "sensitivity",
                    "specificity",
                    "balanced_accuracy",
                ]
                .iter()
                .map(|c| num(g.get(*c).and_then(Value::as_f64))),
            );
            Some(row)
        })
        .collect();
        if !rows.is_empty() {
            page.table(
                &[
                    "labels from".into(),
                    "accuracy".into(),
                    "sensitivity".into(),
                    "specificity".into(),
                    "balanced acc.".into(),
                ],
                &rows,
            );
        }
        if let Some(clusters) = m.get("clusters").and_then(Value::as_array) {
            let cols = [
                "cluster", "weight", "n", "n_ad", "n_cn", "mean_age", "mean_mms",
            ];
            let rows: Vec<Vec<String>> = clusters
                .iter()
                .map(|c| {
                    cols.iter()
                        .map(|k| match c.get(*k) {
                            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                            Some(v) => num(v.as_f64()),
                            None => String::new(),
                        })
                        .collect()
                })
                .collect();
            page.table(&cols.map(str::to_string), &rows);
        }
    }
    page.end_section();
    Ok(())
}

#[cfg(test)]
mod tests;
