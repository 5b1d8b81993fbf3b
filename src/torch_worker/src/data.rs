//! `crop` artifacts: patches stored with a margin, their labels and subjects.
//!
//! A `crop` stage stores each split as `<split>.safetensors` (`patches` F32
//! [N,1,D+2s,H+2s,W+2s], `labels` I64 [N]) plus `<split>.tsv` (row i
//! describes patch i) and `meta.json` (`shift` s, `patch_shape` [D,H,W]).
//! The centre crop `[s..s+D, s..s+H, s..s+W]` is the lab's unshifted patch;
//! a training batch takes each patch at a random offset within the margin,
//! like the lab's `CropLeftHC(random_shift)` in train mode.
//!
//! A stage with a subject list takes its subjects from the crop instead
//! ([`CropSplit::load_selected`]): from `all.*` (a crop made with `subjects:
//! all`) or else from the lab crop's `train.*` and `validation.*` together,
//! in participant_id/session_id order whatever the list's order.
//!
//! All patches are moved to the job's device once, on load: a GPU run then
//! slices batches on the device without host copies.

use std::path::{Path, PathBuf};

pub use hcpipe::artifact::crop::CropMeta;
use hcpipe::artifact::crop::{select, CropSubject, CropSubjects, SelectError, ALL};
use hcpipe::artifact::subjects::ListedSubject;
use hcpipe::ops::torch_params::Split;
use tch::{Device, Kind, Tensor};

use crate::error::{msg, Result, TchContext};

/// One patch's subject (row i of the crop's `<split>.tsv`).
pub type Subject = CropSubject;

/// One split of a `crop` artifact, resident on the job's device.
pub struct CropSplit {
    pub meta: CropMeta,
    /// F32 [N, 1, stored D, H, W] on the device.
    pub patches: Tensor,
    /// I64 [N] on the device.
    pub labels: Tensor,
    pub subjects: Vec<Subject>,
    pub device: Device,
}

fn tensor_named(file: &Path, tensors: &mut Vec<(String, Tensor)>, name: &str) -> Result<Tensor> {
    let pos = tensors.iter().position(|(n, _)| n == name).ok_or_else(|| {
        msg(format!(
            "{}: no tensor `{name}`; rebuild the crop stage",
            file.display()
        ))
    })?;
    Ok(tensors.swap_remove(pos).1)
}

/// One patches file of a crop, on the CPU, checked against `meta.json` and its table.
struct CropFile {
    patches: Tensor,
    labels: Tensor,
    subjects: Vec<Subject>,
}

impl CropFile {
    /// `<stem>.safetensors` and `<stem>.tsv` of the crop in `dir`.
    fn read(dir: &Path, stem: &str, meta: &CropMeta) -> Result<CropFile> {
        let file: PathBuf = dir.join(format!("{stem}.safetensors"));
        if !file.is_file() {
            let why = if dir.join(format!("{ALL}.safetensors")).is_file() {
                "it was made with `subjects: all`, which crops every subject into `all.*`: give \
                 this stage a subject list (a `split` or `kfold` stage) in its `needs` to choose \
                 its subjects, or crop with the default `subjects: lab`"
            } else {
                "rebuild it"
            };
            return Err(msg(format!(
                "{}: missing; the `crop` stage did not write its {stem} split ({why})",
                file.display(),
            )));
        }
        let mut tensors = Tensor::read_safetensors(&file)
            .context(|| format!("{}: cannot read", file.display()))?;
        let patches = tensor_named(&file, &mut tensors, "patches")?;
        let labels = tensor_named(&file, &mut tensors, "labels")?;
        let n = patches.size().first().copied().unwrap_or(0);
        let [d, h, w] = meta.stored_dims();
        if patches.kind() != Kind::Float || patches.size() != [n, 1, d, h, w] {
            return Err(msg(format!(
                "{}: `patches` is {:?} {:?}, expected F32 [N, 1, {d}, {h}, {w}] (meta.json's \
                 stored_shape); rebuild the crop stage",
                file.display(),
                patches.kind(),
                patches.size()
            )));
        }
        if labels.kind() != Kind::Int64 || labels.size() != [n] {
            return Err(msg(format!(
                "{}: `labels` is {:?} {:?}, expected I64 [{n}]; rebuild the crop stage",
                file.display(),
                labels.kind(),
                labels.size()
            )));
        }
        let label_values = Vec::<i64>::try_from(&labels)
            .context(|| format!("{}: reading `labels`", file.display()))?;
        let subjects = read_subjects(&dir.join(format!("{stem}.tsv")), &label_values)?;
        Ok(CropFile {
            patches,
            labels,
            subjects,
        })
    }
}

impl CropSplit {
    /// Load `split` of the `crop` artifact in `dir` onto `device`, checking
    /// that shapes, labels and the subject table agree.
    pub fn load(dir: &Path, split: Split, device: Device) -> Result<CropSplit> {
        let meta = CropMeta::read(dir)?;
        let f = CropFile::read(dir, split.stem(), &meta)?;
        if f.subjects.is_empty() {
            return Err(msg(format!(
                "{}: the {} split is empty",
                dir.join(format!("{}.safetensors", split.stem())).display(),
                split.stem()
            )));
        }
        Ok(CropSplit {
            meta,
            patches: f.patches.to_device(device),
            labels: f.labels.to_device(device),
            subjects: f.subjects,
            device,
        })
    }

    /// The subjects `wanted` (set `set` of subject list `list`) of the crop
    /// `crop` in `dir`, sorted by participant_id then session_id, onto `device`.
    pub fn load_selected(
        dir: &Path,
        crop: &str,
        set: &str,
        list: &str,
        wanted: &[ListedSubject],
        device: Device,
    ) -> Result<CropSplit> {
        let meta = CropMeta::read(dir)?;
        let all = dir.join(format!("{ALL}.safetensors")).is_file();
        let stems: &[&str] = if all {
            &[ALL]
        } else {
            &["train", "validation"]
        };
        let mut files = Vec::with_capacity(stems.len());
        for stem in stems {
            files.push(CropFile::read(dir, stem, &meta)?);
        }
        let available: Vec<Subject> = files.iter().flat_map(|f| f.subjects.clone()).collect();
        let rows = select(&available, wanted).map_err(|e| match e {
            SelectError::Missing(missing) => {
                let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
                let more = match missing.len().saturating_sub(shown.len()) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                let fix = if all {
                    format!(
                        "`{crop}` holds every subject of its dataset (`subjects: all`), so the \
                         list was made from another dataset: make it from the dataset `{crop}` needs"
                    )
                } else {
                    format!(
                        "`{crop}` holds the lab's train and validation splits only: give it \
                         `subjects: all` to crop every subject of the dataset"
                    )
                };
                msg(format!(
                    "set `{set}` of subject list `{list}` names {} subject(s) that crop `{crop}` \
                     does not hold: {}{more}. {fix}",
                    missing.len(),
                    shown.join(", ")
                ))
            }
            SelectError::Diagnosis {
                subject,
                listed,
                cropped,
            } => msg(format!(
                "set `{set}` of subject list `{list}` gives {subject} the diagnosis {} but crop \
                 `{crop}` has {}; make the list and the crop from the same dataset",
                listed.as_str(),
                cropped.as_str()
            )),
        })?;
        if rows.is_empty() {
            return Err(msg(format!(
                "set `{set}` of subject list `{list}` is empty; a stage needs at least one subject"
            )));
        }
        let index = Tensor::from_slice(&rows.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let (patches, labels): (Vec<Tensor>, Vec<Tensor>) =
            files.into_iter().map(|f| (f.patches, f.labels)).unzip();
        let subjects = rows
            .iter()
            .filter_map(|&i| available.get(i).cloned())
            .collect();
        Ok(CropSplit {
            meta,
            patches: Tensor::cat(&patches, 0)
                .index_select(0, &index)
                .to_device(device),
            labels: Tensor::cat(&labels, 0)
                .index_select(0, &index)
                .to_device(device),
            subjects,
            device,
        })
    }

    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    pub fn labels_host(&self) -> Vec<i64> {
        self.subjects.iter().map(|s| s.label).collect()
    }

    /// Patches `idx`, each cut at `offsets[k]` (per axis, 0..=2·margin) or
    /// at the centre when `offsets` is `None`. Result: [k, 1, D, H, W].
    pub fn batch(&self, idx: &[usize], offsets: Option<&[[i64; 3]]>) -> Tensor {
        let [pd, ph, pw] = self.meta.patch_dims();
        let m = self.meta.margin();
        let parts: Vec<Tensor> = idx
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let [ox, oy, oz] = offsets.and_then(|o| o.get(k)).copied().unwrap_or([m, m, m]);
                self.patches
                    .get(i as i64)
                    .narrow(1, ox, pd)
                    .narrow(2, oy, ph)
                    .narrow(3, oz, pw)
            })
            .collect();
        Tensor::stack(&parts, 0)
    }

    /// Centre patches `start..start+len` as one view-based slice (no per-patch stack).
    pub fn centre_range(&self, start: usize, len: usize) -> Tensor {
        let [pd, ph, pw] = self.meta.patch_dims();
        let m = self.meta.margin();
        self.patches
            .narrow(0, start as i64, len as i64)
            .narrow(2, m, pd)
            .narrow(3, m, ph)
            .narrow(4, m, pw)
    }

    /// Labels of the patches in `order`, as one device tensor.
    pub fn labels_in_order(&self, order: &[usize]) -> Tensor {
        let index: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        self.labels
            .index_select(0, &Tensor::from_slice(&index).to_device(self.device))
    }
}

/// `<split>.tsv`: one row per patch, its label agreeing with the tensor's.
fn read_subjects(path: &Path, labels: &[i64]) -> Result<Vec<Subject>> {
    let table = CropSubjects::read(path)?;
    if table.0.len() != labels.len() {
        return Err(msg(format!(
            "{}: {} rows but the patches file holds {} patches; rebuild the crop stage",
            path.display(),
            table.0.len(),
            labels.len()
        )));
    }
    for (i, (s, &label)) in table.0.iter().zip(labels).enumerate() {
        if s.label != label {
            return Err(msg(format!(
                "{}: line {} (`{}`): label `{}` but the patches file says {label} (labels are \
                 0 = CN, 1 = AD); rebuild the crop stage",
                path.display(),
                i + 2,
                s.participant_id,
                s.label
            )));
        }
    }
    Ok(table.0)
}
