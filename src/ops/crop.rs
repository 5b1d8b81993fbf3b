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

use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde::Deserialize;

use super::pool::thread_pool;
use super::{Metrics, OpCtx, OpError};
pub use crate::artifact::crop::Region;
use crate::artifact::crop::{CropMeta, CropSubject, CropSubjects, ALL};
use crate::artifact::dataset::{Dataset, Diagnosis, Split, Subject, IMAGE_SHAPE};

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

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: CropParams = ctx.params()?;
    if p.shift > MAX_SHIFT {
        return Err(OpError::Params(format!(
            "crop: `shift` = {} would leave the volume; use at most {MAX_SHIFT} (the lab uses 2)",
            p.shift
        )));
    }
    let ds = Dataset::open(&ctx.input_by_any_op(&["fetch", "synth"])?.dir)?;
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
            .map(|(_, s)| {
                ds.read_image(&s.participant_id, &s.session_id)
                    .map(|v| crop_volume(&v, bx))
            })
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
    use super::super::{Input, Params};
    use super::*;

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
