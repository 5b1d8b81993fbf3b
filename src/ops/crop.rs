//! `crop`: the lab's hippocampus patches for every train and validation
//! subject, one region per stage (the pipeline has `crop_left` and
//! `crop_right`).
//!
//! The lab crops `img[:, 25:55, 50:90, 27:57]` (left) or `img[:, 65:95, ...]`
//! (right), moved by a random ±`shift` voxels per axis while training. So
//! that training can draw those shifts without the 8 MB volumes, each patch is
//! stored grown by `shift` voxels on every side: the centre crop
//! `[s:s+30, s:s+40, s:s+30]` is the lab's unshifted patch, and any shifted
//! patch is a window inside it.
//!
//! Artifact: `meta.json`, `{train,validation}.safetensors` (`patches` F32
//! [N,1,30+2s,40+2s,30+2s], `labels` I64 [N], AD = 1), `{train,validation}.tsv`
//! (row i describes patch i). Each volume is read once; subjects of both
//! splits are cropped in parallel (rayon, `resources.cpu` threads).
//!
//! With `subjects: all` it crops every subject of `OASIS_BIDS.tsv` once
//! instead, into `all.safetensors` + `all.tsv` (same formats, rows sorted by
//! participant_id then session_id, labels from that table's `diagnosis`):
//! learning stages then take their subjects from it through a subject list
//! (a `split`/`kfold` member), so a grid of folds × seeds crops each region
//! once. The default, `subjects: lab`, is the lab's two splits (same keys).
//!
//! A subject's volume is the lab's `.pt`, or a Clinica CAPS NIfTI when the
//! dataset holds no `.pt` for it
//! ([`crate::artifact::dataset::Layout::find_image`]). A NIfTI is read
//! with [`super::nifti`] and must be on the grid the boxes are boxes of
//! ([`NIFTI_GRID`]: 121 × 145 × 121 voxels of 1.5 mm, `LAS`): a different
//! shape, voxel size or orientation (axes flipped or permuted), a datatype
//! that is not a real number, or a truncated file is refused with an error
//! naming the subject, the file, what it holds and what was expected.
//! Voxel (x, y, z) of a NIfTI is tensor `[0, x, y, z]` of a `.pt`, so both
//! give the same patch bytes.

use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde::Deserialize;

use super::nifti::{self, axis_codes, Affine, Volume};
use super::pool::thread_pool;
use super::{Input, Metrics, OpCtx, OpError};
pub use crate::artifact::crop::Region;
use crate::artifact::crop::{CropMeta, CropSubject, CropSubjects, ALL};
use crate::artifact::dataset::{
    CapsImage, Dataset, Diagnosis, ImageFile, Split, Subject, IMAGE_SHAPE, NIFTI_GRID,
};

fn d_shift() -> usize {
    2
}

/// Which subjects a crop holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropSet {
    /// The lab's `train` and `validation` splits, one file each.
    #[default]
    Lab,
    /// Every subject of `OASIS_BIDS.tsv` once, in `all.*`.
    All,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropParams {
    pub region: Region,
    /// The lab's `random_shift` (CropLeftHC(2)): margin kept on every side.
    #[serde(default = "d_shift")]
    pub shift: usize,
    /// Absent means `lab`, so pipelines without it keep their keys.
    #[serde(default)]
    pub subjects: CropSet,
}

/// Largest margin that keeps both boxes inside the 121×145×121 volume.
pub const MAX_SHIFT: usize = 20;

/// Cut the stored box out of one x-major volume.
pub fn crop_volume(vol: &[f32], bx: [[usize; 2]; 3]) -> Vec<f32> {
    let [_, _, ny, nz] = IMAGE_SHAPE;
    let [[x0, x1], [y0, y1], [z0, z1]] = bx;
    let mut out = Vec::with_capacity((x1 - x0) * (y1 - y0) * (z1 - z0));
    for x in x0..x1 {
        for y in y0..y1 {
            let start = (x * ny + y) * nz;
            out.extend_from_slice(vol.get(start + z0..start + z1).unwrap_or_default());
        }
    }
    out
}

/// Cut the stored box out of a NIfTI-ordered volume (x fastest), in the
/// `.pt` order [`crop_volume`] gives: x-major, z fastest.
pub fn crop_nifti(vol: &[f32], dims: [usize; 3], bx: [[usize; 2]; 3]) -> Vec<f32> {
    let [nx, ny, _] = dims;
    let [[x0, x1], [y0, y1], [z0, z1]] = bx;
    let mut out = Vec::with_capacity((x1 - x0) * (y1 - y0) * (z1 - z0));
    for x in x0..x1 {
        for y in y0..y1 {
            for z in z0..z1 {
                out.push(vol.get(x + nx * (y + ny * z)).copied().unwrap_or(f32::NAN));
            }
        }
    }
    out
}

/// One subject's patch (the stored box `bx`), from its `.pt` or its NIfTI.
/// `input` is the dataset stage: errors name a NIfTI by its path inside it
/// (the user's own folder layout), not by the cache's object path.
fn subject_patch(
    ds: &Dataset,
    input: &Input,
    participant_id: &str,
    session_id: &str,
    bx: [[usize; 2]; 3],
) -> Result<Vec<f32>, OpError> {
    match ds.layout.find_image(participant_id, session_id)? {
        ImageFile::Tensor(_) => Ok(ds.read_image_box(participant_id, session_id, bx)?),
        ImageFile::Nifti { path, kind } => {
            let inside = path.strip_prefix(&input.dir).unwrap_or(&path);
            let shown = format!("`{}` of stage `{}`", inside.display(), input.stage);
            let vol = read_caps_nifti(&path, &shown, kind)
                .map_err(|e| OpError::Msg(format!("subject {participant_id} {session_id}: {e}")))?;
            Ok(crop_nifti(&vol.data, NIFTI_GRID.dims, bx))
        }
    }
}

/// Reads a CAPS NIfTI and checks that the crop boxes apply to it: 3-D (or
/// trailing axes of size 1), [`NIFTI_GRID`]'s shape, voxel size and
/// orientation, real-valued voxels, every voxel there. The header is checked
/// before the voxels are decoded. The error (without the subject, which the
/// caller adds) names the file as `shown`, what it holds and what was expected.
pub fn read_caps_nifti(path: &Path, shown: &str, kind: CapsImage) -> Result<Volume, String> {
    // The reader's messages start with the file's full path; `shown` replaces it.
    let full = format!("{}: ", path.display());
    let corrupt = |e: OpError| {
        let e = e.to_string();
        format!(
            "{shown} ({}): {}. The file is truncated or corrupt, or not a NIfTI-1 image; copy \
             or re-export it from the CAPS folder Clinica wrote",
            kind.describe(),
            e.strip_prefix(&full).unwrap_or(&e)
        )
    };
    let header = nifti::read_header(path).map_err(corrupt)?;
    match header.datatype {
        (_, Some(t)) if nifti::SUPPORTED.contains(&t) => {}
        (code, name) => {
            let name = name.map_or_else(|| "an unknown code".to_string(), |t| format!("{t:?}"));
            return Err(format!(
                "{shown} ({}) has datatype {code} ({name}); crop needs real voxel values \
                 (int/uint 8-32 bits, float32 or float64), not complex, RGB or 64-bit integer ones",
                kind.describe()
            ));
        }
    }
    check_grid(&header.dims, &header.voxel_size, header.affine.as_ref()).map_err(|what| {
        format!(
            "{shown} ({}) has {what}; the crop boxes are boxes of Clinica t1-volume's Ixi549Space \
             grid, the lab's tensors' grid: shape {}×{}×{}, voxels of {} mm, orientation {}{}",
            kind.describe(),
            NIFTI_GRID.dims[0],
            NIFTI_GRID.dims[1],
            NIFTI_GRID.dims[2],
            NIFTI_GRID.voxel_mm,
            NIFTI_GRID.axis_codes,
            match kind {
                CapsImage::T1Linear => {
                    ". t1-linear images are on another grid; run Clinica's t1-volume pipeline instead"
                }
                _ => ". Resample the image onto that grid (t1-volume's default 1.5 mm voxels)",
            }
        )
    })?;
    nifti::read_nifti(path).map_err(corrupt)
}

/// What differs between a header and [`NIFTI_GRID`], all of it at once.
fn check_grid(dims: &[usize], voxel_size: &[f32], affine: Option<&Affine>) -> Result<(), String> {
    let mut wrong = Vec::new();
    let dims3: Option<[usize; 3]> = match dims {
        [x, y, z, rest @ ..] if rest.iter().all(|&d| d == 1) => Some([*x, *y, *z]),
        _ => None,
    };
    if dims3 != Some(NIFTI_GRID.dims) {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        wrong.push(format!("shape {}", shape.join("×")));
    }
    let sizes = voxel_size.get(..3).unwrap_or(voxel_size);
    if sizes.len() != 3
        || sizes
            .iter()
            .any(|s| (s.abs() - NIFTI_GRID.voxel_mm).abs() > 0.01)
    {
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        wrong.push(format!("voxels of {} mm", sizes.join("×")));
    }
    match affine {
        None => wrong.push(
            "no orientation (its qform_code and sform_code are 0, so where its axes point is unknown)"
                .to_string(),
        ),
        Some(affine) => {
            let codes = axis_codes(affine);
            if codes != NIFTI_GRID.axis_codes {
                wrong.push(format!(
                    "orientation {codes} (axes flipped or permuted relative to {})",
                    NIFTI_GRID.axis_codes
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join(", "))
    }
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: CropParams = ctx.params()?;
    if p.shift > MAX_SHIFT {
        return Err(OpError::Params(format!(
            "crop: `shift` = {} would leave the volume; use at most {MAX_SHIFT} (the lab uses 2)",
            p.shift
        )));
    }
    let input = ctx.input_by_any_op(&["fetch", "synth"])?;
    let ds = Dataset::open(&input.dir)?;
    let meta = CropMeta::new(p.region, p.shift);
    // (file stem, subject) for every patch, in file order.
    let jobs: Vec<(&str, CropSubject)> = match p.subjects {
        CropSet::Lab => {
            let mut jobs = Vec::new();
            for split in Split::ALL {
                for row in ds.split(split) {
                    // The lab labels by the split table's diagnosis.
                    let subject = crop_subject(ds.subject(row)?, row.diagnosis);
                    jobs.push((split.as_str(), subject));
                }
            }
            jobs
        }
        CropSet::All => {
            let mut all: Vec<&Subject> = ds.subjects.iter().collect();
            all.sort_by(|a, b| {
                (&a.participant_id, &a.session_id).cmp(&(&b.participant_id, &b.session_id))
            });
            all.into_iter()
                .map(|s| (ALL, crop_subject(s, s.diagnosis)))
                .collect()
        }
    };
    let bx = meta.stored_box();
    let patches: Vec<Vec<f32>> = thread_pool(ctx.threads)?.install(|| {
        jobs.par_iter()
            .map(|(_, s)| subject_patch(&ds, input, &s.participant_id, &s.session_id, bx))
            .collect::<Result<_, _>>()
    })?;
    let stems: &[&str] = match p.subjects {
        CropSet::Lab => &["train", "validation"],
        CropSet::All => &[ALL],
    };
    let mut m = Metrics::new();
    for &stem in stems {
        let items: Vec<(&CropSubject, &Vec<f32>)> = jobs
            .iter()
            .zip(&patches)
            .filter(|((s, _), _)| *s == stem)
            .map(|((_, subject), patch)| (subject, patch))
            .collect();
        write_patches(ctx.out, stem, &items, meta.stored_shape)?;
        for d in Diagnosis::ALL {
            let n = items.iter().filter(|(s, _)| s.diagnosis == d).count();
            m.insert(format!("{stem}_{}", d.as_str()), n.into());
        }
    }
    meta.write(ctx.out)?;
    m.insert("region".into(), p.region.as_str().into());
    if p.subjects == CropSet::All {
        m.insert("subjects".into(), "all".into());
    }
    Ok(m)
}

/// A patch's row: the dataset's subject, labelled by `diagnosis`.
fn crop_subject(s: &Subject, diagnosis: Diagnosis) -> CropSubject {
    CropSubject {
        participant_id: s.participant_id.clone(),
        session_id: s.session_id.clone(),
        diagnosis,
        label: diagnosis.label(),
        age: s.age,
        sex: s.sex.clone(),
        mms: s.mms,
    }
}

/// `<stem>.safetensors` and `<stem>.tsv`: the patches and their subjects, in `items` order.
fn write_patches(
    out: &Path,
    stem: &str,
    items: &[(&CropSubject, &Vec<f32>)],
    stored: [usize; 3],
) -> Result<(), OpError> {
    let n = items.len();
    let mut bytes = Vec::with_capacity(n * stored.iter().product::<usize>() * 4);
    let mut labels = Vec::with_capacity(n * 8);
    let mut subjects = Vec::with_capacity(n);
    for (subject, patch) in items {
        bytes.extend(patch.iter().flat_map(|v| v.to_le_bytes()));
        labels.extend(subject.label.to_le_bytes());
        subjects.push((*subject).clone());
    }
    let st = out.join(format!("{stem}.safetensors"));
    let fail = |e: safetensors::SafeTensorError| {
        OpError::Msg(format!("{}: cannot write: {e}", st.display()))
    };
    let patches = TensorView::new(
        Dtype::F32,
        vec![n, 1, stored[0], stored[1], stored[2]],
        &bytes,
    )
    .map_err(fail)?;
    let labels = TensorView::new(Dtype::I64, vec![n], &labels).map_err(fail)?;
    safetensors::serialize_to_file([("patches", patches), ("labels", labels)], None, &st)
        .map_err(fail)?;
    CropSubjects(subjects).write(&out.join(format!("{stem}.tsv")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::synth::{draw_subjects, volume, write_dataset, SynthParams};
    use super::super::Params;
    use super::*;
    use crate::artifact::dataset::Layout;

    #[test]
    fn crops_synth_data_with_the_margin() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sp: SynthParams = serde_json::from_str("{}").unwrap();
        (sp.n_train_ad, sp.n_train_cn, sp.n_val_ad, sp.n_val_cn) = (1, 2, 1, 1);
        let subjects = draw_subjects(&sp);
        let data = tmp.path().join("ds");
        write_dataset(&data, &sp, &subjects, 2).unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let inputs = [Input {
            stage: "dataset".into(),
            op: Some("synth".into()),
            dir: data,
            content: None,
        }];
        let params: Params = serde_json::from_str(r#"{"region": "right_hc", "shift": 2}"#).unwrap();
        let m = run(&OpCtx {
            stage: "crop_right",
            params: &params,
            inputs: &inputs,
            out: &out,
            threads: 2,
            scratch: None,
        })
        .unwrap();
        assert_eq!(
            (
                m["train_AD"].as_u64(),
                m["train_CN"].as_u64(),
                m["validation_CN"].as_u64()
            ),
            (Some(1), Some(2), Some(1))
        );
        let bytes = std::fs::read(out.join("train.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("patches").unwrap();
        assert_eq!(t.shape(), &[3, 1, 34, 44, 34]);
        let tsv = std::fs::read_to_string(out.join("train.tsv")).unwrap();
        let first = tsv.lines().nth(1).unwrap();
        let pid = first.split('\t').next().unwrap();
        let label: i64 = first.split('\t').nth(3).unwrap().parse().unwrap();
        assert_eq!(
            i64::from_le_bytes(st.tensor("labels").unwrap().data()[..8].try_into().unwrap()),
            label
        );
        // Patch 0's centre crop is the lab's img[:, 65:95, 50:90, 27:57].
        let s = subjects.iter().find(|s| s.participant_id() == pid).unwrap();
        let vol = volume(&sp, s);
        let f = |i: usize| f32::from_le_bytes(t.data()[i * 4..i * 4 + 4].try_into().unwrap());
        for (x, y, z) in [(0, 0, 0), (29, 39, 29), (15, 20, 15), (3, 31, 7)] {
            let patch_idx = ((x + 2) * 44 + (y + 2)) * 34 + (z + 2);
            assert_eq!(f(patch_idx), vol[((65 + x) * 145 + 50 + y) * 121 + 27 + z]);
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["stored_shape"], serde_json::json!([34, 44, 34]));
        assert_eq!(meta["box"]["x"], serde_json::json!([65, 95]));
    }

    #[test]
    fn subjects_all_crops_every_subject_once_sorted_with_the_lab_patches() {
        let tmp = tempfile::tempdir().unwrap();
        let mut sp: SynthParams = serde_json::from_str("{}").unwrap();
        (sp.n_train_ad, sp.n_train_cn, sp.n_val_ad, sp.n_val_cn) = (2, 2, 1, 2);
        let subjects = draw_subjects(&sp);
        let data = tmp.path().join("ds");
        write_dataset(&data, &sp, &subjects, 2).unwrap();
        let inputs = [Input {
            stage: "dataset".into(),
            op: Some("synth".into()),
            dir: data,
            content: None,
        }];
        let crop = |params: &str, name: &str| {
            let out = tmp.path().join(name);
            std::fs::create_dir_all(&out).unwrap();
            let params: Params = serde_json::from_str(params).unwrap();
            let m = run(&OpCtx {
                stage: name,
                params: &params,
                inputs: &inputs,
                out: &out,
                threads: 2,
                scratch: None,
            })
            .unwrap();
            (out, m)
        };
        let (all, m) = crop(r#"{"region": "left_hc", "subjects": "all"}"#, "all");
        let (lab, _) = crop(r#"{"region": "left_hc", "subjects": "lab"}"#, "lab");
        assert_eq!(
            (m["all_AD"].as_u64(), m["all_CN"].as_u64()),
            (Some(3), Some(4))
        );
        assert_eq!(m["subjects"], "all");
        let mut names: Vec<_> = std::fs::read_dir(&all)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["all.safetensors", "all.tsv", "meta.json"]);
        let table = CropSubjects::read(&all.join("all.tsv")).unwrap().0;
        let keys: Vec<_> = table
            .iter()
            .map(|s| (s.participant_id.clone(), s.session_id.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "all.tsv is sorted by subject");
        // Each subject's patch is the lab crop's patch of that subject.
        let read = |dir: &Path, stem: &str| {
            let bytes = std::fs::read(dir.join(format!("{stem}.safetensors"))).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let patches = st.tensor("patches").unwrap().data().to_vec();
            let rows = CropSubjects::read(&dir.join(format!("{stem}.tsv")))
                .unwrap()
                .0;
            (patches, rows)
        };
        let (all_patches, all_rows) = read(&all, "all");
        let size = 34 * 44 * 34 * 4;
        for stem in ["train", "validation"] {
            let (lab_patches, lab_rows) = read(&lab, stem);
            for (i, s) in lab_rows.iter().enumerate() {
                let j = all_rows.iter().position(|a| a == s).unwrap();
                assert_eq!(
                    all_patches[j * size..(j + 1) * size],
                    lab_patches[i * size..(i + 1) * size],
                    "{}",
                    s.participant_id
                );
            }
        }
        let p: Params =
            serde_json::from_str(r#"{"region": "left_hc", "subjects": "some"}"#).unwrap();
        let e = super::super::parse_params::<CropParams>(&p).unwrap_err();
        assert!(e.contains("lab") && e.contains("all"), "{e}");
    }

    /// Clinica's Ixi549Space affine (SPM's TPM grid, first axis right to left).
    const LAS: [[f32; 4]; 3] = [
        [-1.5, 0.0, 0.0, 90.0],
        [0.0, 1.5, 0.0, -126.0],
        [0.0, 0.0, 1.5, -72.0],
    ];

    /// A float32 NIfTI of `pt_order` (x-major, as a `.pt` holds it), voxel
    /// (x, y, z) = tensor `[0, x, y, z]`, with `sform` rows.
    fn nifti_of(pt_order: &[f32], dims: [usize; 3], sform: [[f32; 4]; 3]) -> Vec<u8> {
        let [nx, ny, nz] = dims;
        let mut data = Vec::with_capacity(pt_order.len() * 4);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    data.extend(pt_order[(x * ny + y) * nz + z].to_le_bytes());
                }
            }
        }
        let dims16 = dims.map(|d| d as u16);
        let mut bytes = nifti::nifti_bytes(false, &dims16, 16, 32, 0.0, 0.0, &data);
        nifti::set_sform(&mut bytes, sform);
        bytes
    }

    /// A synth dataset, and the same volumes as a Clinica CAPS of NIfTIs
    /// (DARTEL group folder, gzipped) with no `.pt`.
    fn pt_and_caps(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<String>) {
        let mut sp: SynthParams = serde_json::from_str("{}").unwrap();
        (sp.n_train_ad, sp.n_train_cn, sp.n_val_ad, sp.n_val_cn) = (1, 1, 1, 0);
        let subjects = draw_subjects(&sp);
        let pt = tmp.join("pt");
        write_dataset(&pt, &sp, &subjects, 2).unwrap();
        let caps = tmp.join("caps");
        let tables = Layout::find(&pt).unwrap().tables();
        let caps_layout = Layout::create(&caps).unwrap();
        for f in ["OASIS_BIDS.tsv", "train.tsv", "validation.tsv"] {
            std::fs::copy(tables.join(f), caps_layout.tables().join(f)).unwrap();
        }
        let mut pids = Vec::new();
        for s in &subjects {
            let pid = s.participant_id();
            let dir = caps_layout
                .session_dir(&pid, "ses-M00")
                .join("t1/spm/dartel/group-lab");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!(
                "{pid}_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.nii.gz"
            ));
            nifti::write_gz(&file, &nifti_of(&volume(&sp, s), NIFTI_GRID.dims, LAS));
            pids.push(pid);
        }
        (pt, caps, pids)
    }

    fn crop_dir(data: &Path, out: &Path, region: &str) -> Result<Metrics, OpError> {
        std::fs::create_dir_all(out).unwrap();
        let inputs = [Input {
            stage: "dataset".into(),
            op: Some("fetch".into()),
            dir: data.to_path_buf(),
            content: None,
        }];
        let params: Params = serde_json::from_str(&format!(r#"{{"region": "{region}"}}"#)).unwrap();
        run(&OpCtx {
            stage: "crop",
            params: &params,
            inputs: &inputs,
            out,
            threads: 2,
            scratch: None,
        })
    }

    #[test]
    fn a_caps_nifti_crops_to_the_same_bytes_as_its_pt() {
        let tmp = tempfile::tempdir().unwrap();
        let (pt, caps, _) = pt_and_caps(tmp.path());
        for region in ["left_hc", "right_hc"] {
            let a = tmp.path().join(format!("a_{region}"));
            let b = tmp.path().join(format!("b_{region}"));
            let ma = crop_dir(&pt, &a, region).unwrap();
            let mb = crop_dir(&caps, &b, region).unwrap();
            assert_eq!(ma, mb);
            for f in [
                "train.safetensors",
                "validation.safetensors",
                "train.tsv",
                "validation.tsv",
                "meta.json",
            ] {
                let (x, y) = (
                    std::fs::read(a.join(f)).unwrap(),
                    std::fs::read(b.join(f)).unwrap(),
                );
                assert!(
                    x == y,
                    "{region}: {f} differs between the .pt and the NIfTI crop"
                );
            }
        }
    }

    #[test]
    fn bad_caps_niftis_name_the_subject_the_file_and_the_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, caps, pids) = pt_and_caps(tmp.path());
        let pid = &pids[0];
        let layout = Layout::find(&caps).unwrap();
        let ImageFile::Nifti { path, .. } = layout.find_image(pid, "ses-M00").unwrap() else {
            panic!("expected the NIfTI")
        };
        let good = std::fs::read(&path).unwrap();
        let n = 121 * 145 * 121;
        let flat = vec![0.5f32; n];
        let rebuild = |bytes: &[u8]| nifti::write_gz(&path, bytes);
        let run_err = |name: &str| {
            let e = crop_dir(&caps, &tmp.path().join(name), "left_hc")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("subject {pid} ses-M00")) && e.contains("probability.nii.gz"),
                "{name}: {e}"
            );
            e
        };
        // Flipped: x from left to right (RAS).
        let mut ras = LAS;
        ras[0] = [1.5, 0.0, 0.0, -90.0];
        rebuild(&nifti_of(&flat, NIFTI_GRID.dims, ras));
        let e = run_err("ras");
        assert!(e.contains("orientation RAS") && e.contains("LAS"), "{e}");
        // Permuted (x and y swapped) on a grid of the right size.
        let swapped = [
            [0.0, -1.5, 0.0, 90.0],
            [1.5, 0.0, 0.0, -126.0],
            [0.0, 0.0, 1.5, -72.0],
        ];
        rebuild(&nifti_of(&flat, NIFTI_GRID.dims, swapped));
        assert!(run_err("permuted").contains("has orientation ALS"));
        // Wrong shape: a t1-linear-sized grid.
        let small = vec![0.5f32; 20 * 30 * 20];
        rebuild(&nifti_of(&small, [20, 30, 20], LAS));
        let e = run_err("shape");
        assert!(
            e.contains("has shape 20×30×20") && e.contains("121×145×121"),
            "{e}"
        );
        // Complex voxels: the header says Complex64, whatever follows.
        let mut complex = nifti_of(&flat, NIFTI_GRID.dims, LAS);
        complex[70..72].copy_from_slice(&32i16.to_le_bytes());
        complex[72..74].copy_from_slice(&64i16.to_le_bytes());
        rebuild(&complex);
        let e = run_err("complex");
        assert!(
            e.contains("datatype 32 (Complex64)") && e.contains("real voxel"),
            "{e}"
        );
        // No orientation at all.
        let bare = nifti::nifti_bytes(false, &[121, 145, 121], 16, 32, 0.0, 0.0, &vec![0; n * 4]);
        rebuild(&bare);
        assert!(run_err("bare").contains("has no orientation"));
        // Truncated: the gzip stream cut in the middle of the voxels.
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let e = run_err("truncated");
        assert!(e.contains("truncated or corrupt"), "{e}");
        // Put back, it crops again.
        std::fs::write(&path, &good).unwrap();
        crop_dir(&caps, &tmp.path().join("fine"), "left_hc").unwrap();
    }

    #[test]
    fn bad_region_and_shift_are_refused() {
        let p: Params = serde_json::from_str(r#"{"region": "hc"}"#).unwrap();
        assert!(super::super::parse_params::<CropParams>(&p)
            .unwrap_err()
            .contains("left_hc"));
        let p: Params = serde_json::from_str(r#"{"region": "left_hc", "shift": 50}"#).unwrap();
        let out = tempfile::tempdir().unwrap();
        let e = run(&OpCtx {
            stage: "c",
            params: &p,
            inputs: &[],
            out: out.path(),
            threads: 1,
            scratch: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("at most 20"), "{e}");
    }
}
