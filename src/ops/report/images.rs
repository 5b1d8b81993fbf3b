//! The images section: one subject's preprocessed grey-matter map in the
//! lab's three slices with the hippocampus boxes drawn on them, both crops'
//! centre slices, and the raw T1's slices when the dataset has one. The map
//! is the lab's `.pt` tensor or a Clinica CAPS NIfTI (read as crop reads it). Paths,
//! the volume's shape and the boxes come from the dataset and crop artifacts
//! ([`crate::artifact::dataset`], [`crate::artifact::crop`]).

use std::path::Path;

use super::figures::{self, Outline, SlicePanel};
use super::html::Page;
use super::slices::{Grid3, Slice};
use super::{draw, three_slices, ReportParams, AXES, SLICE_HEIGHT};
use crate::artifact::crop::Region;
use crate::artifact::dataset::{Dataset, ImageFile, Split, IMAGE_SHAPE, NIFTI_GRID};
use crate::ops::{Input, OpCtx, OpError};

/// A region's lab box as `[lo, hi)` pairs per axis.
fn lab_box(region: Region) -> [(usize, usize); 3] {
    region.lab_box().map(|[a, b]| (a, b))
}

/// Box outlines on a slice through `axis`, as (horizontal, vertical) axes of the slice.
pub(super) fn outlines(axis: usize, index: usize) -> Vec<Outline> {
    let (h, v) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let mut out: Vec<Outline> = Vec::new();
    for (label, region, c) in [
        ("left HC", Region::LeftHc, figures::colour(1)),
        ("right HC", Region::RightHc, figures::colour(9)),
    ] {
        let b = lab_box(region);
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

/// The dataset's images of one subject; returns the subject shown.
pub(super) fn images(
    ctx: &OpCtx,
    dataset: &Input,
    params: &ReportParams,
    page: &mut Page,
) -> Result<String, OpError> {
    let ds = Dataset::open(&dataset.dir)?;
    let subject = match &params.subject {
        Some(pid) => ds.find_subject(pid).ok_or_else(|| {
            OpError::Msg(format!(
                "{}: no subject `{pid}`, so the report cannot show its images; check the `subject` \
                 param (a participant_id of the dataset's tables)",
                ds.layout.bids_tsv().display()
            ))
        })?,
        None => {
            let first = ds.validation.first().ok_or_else(|| {
                OpError::Msg(format!(
                    "{}: no subjects; set the report's `subject` param",
                    ds.layout.split_tsv(Split::Validation).display()
                ))
            })?;
            ds.subject(first)?
        }
    };
    let (pid, sid) = (subject.participant_id.clone(), subject.session_id.as_str());
    page.section("images", &format!("Images of {pid}"));
    // The lab's `.pt` tensor, or a CAPS NIfTI with the checks crop makes
    // (same grid: NIfTI voxel (x, y, z) is tensor [0, x, y, z]).
    let (shown, volume) = match ds.layout.find_image(&pid, sid)? {
        ImageFile::Tensor(pt) => {
            let shown = pt.display().to_string();
            let [_, a, b, c] = IMAGE_SHAPE;
            let volume = Grid3::c_order([a, b, c], ds.read_image(&pid, sid)?)
                .map_err(|e| OpError::Msg(format!("{shown}: {e}")))?;
            (shown, volume)
        }
        ImageFile::Nifti { path, kind } => {
            let inside = path.strip_prefix(&dataset.dir).unwrap_or(&path);
            let shown = format!("`{}` of stage `{}`", inside.display(), dataset.stage);
            let nifti = crate::ops::crop::read_caps_nifti(&path, &shown, kind)
                .map_err(|e| OpError::Msg(format!("subject {pid} {sid}: {e}")))?;
            let volume = Grid3::fortran_order(NIFTI_GRID.dims, nifti.data)
                .map_err(|e| OpError::Msg(format!("{shown}: {e}")))?;
            (shown, volume)
        }
    };

    let raw = ds.layout.raw_t1(&pid, sid);
    if raw.exists() {
        raw_slices(ctx, &raw, &pid, page)?;
    }

    // The lab's [0,60,:,:], [0,:,72,:], [0,:,:,60].
    let panels = three_slices(&volume, [60, 72, 60], true, &shown)?;
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
    for (name, region) in [("left", Region::LeftHc), ("right", Region::RightHc)] {
        let bounds = lab_box(region);
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
    let volume = crate::ops::nifti::read_nifti(path)?;
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
