//! The OASIS-1 dataset artifact as `fetch` or `synth` leaves it: its
//! [`Layout`] (where each table and volume lives) and its subject tables.
//!
//! Layout (the lab's tarball, kept as is):
//! ```text
//! OASIS-1_dataset/tsv_files/lab_1/{OASIS_BIDS,train,validation}.tsv
//! OASIS-1_dataset/CAPS/subjects/<pid>/<sid>/deeplearning_prepare_data/image_based/custom/
//!     <pid>_<sid>_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt
//! OASIS-1_dataset/raw/<pid>_<sid>_T1w.nii.gz          (optional: the raw T1s)
//! ```
//! A subject's volume may instead be a NIfTI image where Clinica's pipelines
//! leave it in the `CAPS` folder (a Clinica user's own CAPS; see
//! [`Layout::find_image`] for the paths looked at, in order): then `crop`
//! reads the NIfTI and checks its grid ([`NIFTI_GRID`]).
//!
//! Paths are always built from a subject's own `session_id` as the tables
//! give it. [`Dataset::open`] reads and cross-checks the three tables
//! (columns present, diagnoses known, no duplicate subject, every split
//! subject in `OASIS_BIDS.tsv`) so that the ops after it can index without
//! checks; volumes ([`IMAGE_SHAPE`]) are read on demand with
//! [`Dataset::read_image`]. Every error names the file and, where there is
//! one, the line and the subject.
//!
//! Numbers follow pandas' reading of the TSVs: an empty cell (or `nan`) is
//! NaN; [`tsv_number`] writes them back as pandas' `to_csv` does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::tsv::{self, Row, Table};
use super::{pt, Error, Result};

/// The top folder of the dataset inside its artifact.
pub const DATASET_DIR: &str = "OASIS-1_dataset";
/// The subject tables' folder, relative to [`DATASET_DIR`].
pub const TSV_DIR: &str = "tsv_files/lab_1";
/// Every volume's shape: channel, x, y, z (121 × 145 × 121 voxels of 1.5 mm).
pub const IMAGE_SHAPE: [usize; 4] = [1, 121, 145, 121];
/// The grid a NIfTI volume must have to stand for a `.pt` ([`IMAGE_SHAPE`]):
/// Clinica `t1-volume`'s grey-matter maps in `Ixi549Space` (SPM's TPM grid:
/// 121 × 145 × 121 voxels of 1.5 mm, the first axis from right to left).
/// ClinicaDL made the lab's tensors from them with NiBabel's `get_fdata()`,
/// which keeps the file's voxel order, so tensor `[0, x, y, z]` is voxel
/// (x, y, z) of the NIfTI and the crop boxes are boxes of this grid.
pub const NIFTI_GRID: NiftiGrid = NiftiGrid {
    dims: [121, 145, 121],
    voxel_mm: 1.5,
    axis_codes: "LAS",
};

/// What a NIfTI volume's header must say for the crop boxes to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NiftiGrid {
    /// Voxels along x, y, z.
    pub dims: [usize; 3],
    /// Voxel size on every axis (millimetres).
    pub voxel_mm: f32,
    /// Where the voxel axes point (NiBabel's `aff2axcodes`): `LAS` = x from
    /// right to left, y from posterior to anterior, z from inferior to superior.
    pub axis_codes: &'static str,
}

/// Clinica's name for the unmodulated grey-matter probability map in
/// `Ixi549Space` (what the lab's `.pt` files hold), after `<pid>_<sid>[_…]_T1w`.
pub const GM_MAP_SUFFIX: &str = "_segm-graymatter_space-Ixi549Space_modulated-off_probability";

/// Which Clinica output a subject's NIfTI is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapsImage {
    /// `t1-volume`'s DARTEL-to-MNI map: `t1/spm/dartel/group-<label>/…`.
    T1VolumeDartel,
    /// `t1-volume`'s segmentation in MNI space: `t1/spm/segmentation/normalized_space/…`.
    T1VolumeSegmentation,
    /// `t1-linear`'s affinely registered T1 (`t1_linear/…_space-MNI152NLin2009cSym…_T1w`):
    /// a 1 mm grid, not the crop boxes' one; found so that crop can say so.
    T1Linear,
}

impl CapsImage {
    pub fn describe(self) -> &'static str {
        match self {
            CapsImage::T1VolumeDartel => "Clinica t1-volume grey-matter map (DARTEL to MNI)",
            CapsImage::T1VolumeSegmentation => {
                "Clinica t1-volume grey-matter map (segmentation, normalized_space)"
            }
            CapsImage::T1Linear => "Clinica t1-linear T1w image",
        }
    }
}

/// Where a subject's volume is, and in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFile {
    /// The lab's `.pt` tensor ([`IMAGE_SHAPE`], x-major).
    Tensor(PathBuf),
    /// A NIfTI image (`.nii` or `.nii.gz`) of the CAPS folder.
    Nifti { path: PathBuf, kind: CapsImage },
}

/// Columns of `OASIS_BIDS.tsv`, in the published file's order.
pub const BIDS_COLUMNS: [&str; 12] = [
    "participant_id",
    "session_id",
    "alternative_id_1",
    "sex",
    "education_level",
    "age_bl",
    "cdr",
    "diagnosis_bl",
    "laterality",
    "MMS",
    "cdr_global",
    "diagnosis",
];
/// Columns of `train.tsv` / `validation.tsv`.
pub const SPLIT_COLUMNS: [&str; 3] = ["participant_id", "session_id", "diagnosis"];

/// The lab's two classes; the label is the lab's `label_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Diagnosis {
    AD,
    CN,
}

impl Diagnosis {
    pub const ALL: [Diagnosis; 2] = [Diagnosis::AD, Diagnosis::CN];

    /// AD = 1, CN = 0, as the lab's `MRIDataset.label_code`.
    pub fn label(self) -> i64 {
        match self {
            Diagnosis::AD => 1,
            Diagnosis::CN => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Diagnosis::AD => "AD",
            Diagnosis::CN => "CN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AD" => Some(Diagnosis::AD),
            "CN" => Some(Diagnosis::CN),
            _ => None,
        }
    }
}

/// The lab's two splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Validation];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
        }
    }
}

/// One row of `OASIS_BIDS.tsv`. NaN stands for an empty cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub participant_id: String,
    pub session_id: String,
    pub sex: String,
    pub education_level: f64,
    pub age: f64,
    pub mms: f64,
    pub cdr_global: f64,
    pub diagnosis: Diagnosis,
}

/// One row of a split table; `subject` indexes [`Dataset::subjects`].
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRow {
    pub participant_id: String,
    pub session_id: String,
    /// The split table's own diagnosis (the lab labels by it).
    pub diagnosis: Diagnosis,
    pub subject: usize,
}

/// Where everything of a dataset artifact lives, under its `OASIS-1_dataset` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The `OASIS-1_dataset` folder.
    pub root: PathBuf,
}

impl Layout {
    /// The layout a dataset op writes into its (empty) artifact folder `out`.
    pub fn create(out: &Path) -> Result<Layout> {
        let layout = Layout {
            root: out.join(DATASET_DIR),
        };
        let tables = layout.tables();
        std::fs::create_dir_all(&tables).map_err(|e| Error::io(&tables, e))?;
        Ok(layout)
    }

    /// Finds the dataset under an artifact folder: `DIR/OASIS-1_dataset`, or
    /// `DIR` itself when it holds `tsv_files/`.
    pub fn find(dir: &Path) -> Result<Layout> {
        let root = if dir.join(DATASET_DIR).is_dir() {
            dir.join(DATASET_DIR)
        } else if dir.join(TSV_DIR).is_dir() {
            dir.to_path_buf()
        } else {
            return Err(Error::Msg(format!(
                "{}: no `{DATASET_DIR}/{TSV_DIR}` folder; the dataset stage (fetch or synth) must produce the \
                 lab's tarball layout",
                dir.display()
            )));
        };
        Ok(Layout { root })
    }

    /// `tsv_files/lab_1`.
    pub fn tables(&self) -> PathBuf {
        self.root.join(TSV_DIR)
    }

    /// `OASIS_BIDS.tsv`: every subject's demographics.
    pub fn bids_tsv(&self) -> PathBuf {
        self.tables().join("OASIS_BIDS.tsv")
    }

    /// `train.tsv` or `validation.tsv`.
    pub fn split_tsv(&self, split: Split) -> PathBuf {
        self.tables().join(format!("{}.tsv", split.as_str()))
    }

    /// `CAPS/subjects/<pid>/<sid>/deeplearning_prepare_data/image_based/custom/<pid>_<sid>_T1w_...pt`:
    /// the preprocessed grey-matter map ([`IMAGE_SHAPE`]).
    pub fn image(&self, participant_id: &str, session_id: &str) -> PathBuf {
        self.root
            .join("CAPS/subjects")
            .join(participant_id)
            .join(session_id)
            .join("deeplearning_prepare_data/image_based/custom")
            .join(format!(
                "{participant_id}_{session_id}_T1w{GM_MAP_SUFFIX}.pt"
            ))
    }

    /// `CAPS/subjects/<pid>/<sid>`: a subject's session folder.
    pub fn session_dir(&self, participant_id: &str, session_id: &str) -> PathBuf {
        self.root
            .join("CAPS/subjects")
            .join(participant_id)
            .join(session_id)
    }

    /// A subject's volume: the lab's `.pt` ([`Layout::image`]) when there is
    /// one, else the first kind of Clinica NIfTI found under its session
    /// folder, in this order (`<src>` is `<pid>_<sid>[_…]_T1w`, `.nii` or `.nii.gz`):
    /// 1. `t1/spm/dartel/group-*/<src>_segm-graymatter_space-Ixi549Space_modulated-off_probability`
    ///    (t1-volume's final map: what ClinicaDL turned into the lab's tensors);
    /// 2. `t1/spm/segmentation/normalized_space/<src>_segm-graymatter_…` (same name);
    /// 3. `t1_linear/<src>_space-MNI152NLin2009cSym[_desc-Crop]_res-1x1x1_T1w`.
    ///
    /// Two files of the first kind found (two DARTEL groups, `.nii` beside
    /// `.nii.gz`) are an error naming both: which one is meant is the user's call.
    pub fn find_image(&self, participant_id: &str, session_id: &str) -> Result<ImageFile> {
        let pt = self.image(participant_id, session_id);
        if pt.is_file() {
            return Ok(ImageFile::Tensor(pt));
        }
        let ses = self.session_dir(participant_id, session_id);
        let prefix = format!("{participant_id}_{session_id}_");
        let gm = format!("T1w{GM_MAP_SUFFIX}");
        let dartel = ses.join("t1/spm/dartel");
        let groups: Vec<PathBuf> = list_dir(&dartel)
            .into_iter()
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("group-"))
            })
            .collect();
        let linear = vec![ses.join("t1_linear")];
        // Clinica's t1-linear writes the cropped image beside the whole one:
        // the cropped one is ClinicaDL's input, so it is looked for first.
        let searches = [
            (CapsImage::T1VolumeDartel, groups, gm.as_str()),
            (
                CapsImage::T1VolumeSegmentation,
                vec![ses.join("t1/spm/segmentation/normalized_space")],
                gm.as_str(),
            ),
            (
                CapsImage::T1Linear,
                linear.clone(),
                "T1w_space-MNI152NLin2009cSym_desc-Crop_res-1x1x1_T1w",
            ),
            (
                CapsImage::T1Linear,
                linear,
                "T1w_space-MNI152NLin2009cSym_res-1x1x1_T1w",
            ),
        ];
        for (kind, dirs, stem) in searches {
            let mut found: Vec<PathBuf> = dirs
                .iter()
                .flat_map(|d| list_dir(d))
                .filter(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    name.is_some_and(|n| {
                        let bare = n.strip_suffix(".nii.gz").or(n.strip_suffix(".nii"));
                        n.starts_with(&prefix) && bare.is_some_and(|b| b.ends_with(stem))
                    }) && p.is_file()
                })
                .collect();
            found.sort();
            match found.len() {
                0 => continue,
                1 => {
                    let path = found.remove(0);
                    return Ok(ImageFile::Nifti { path, kind });
                }
                _ => {
                    let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
                    return Err(Error::Msg(format!(
                        "subject {participant_id} {session_id}: {} images of one kind ({}): {}; \
                         keep one in the dataset (e.g. one DARTEL group-<label> folder)",
                        found.len(),
                        kind.describe(),
                        list.join(", ")
                    )));
                }
            }
        }
        Err(Error::Msg(format!(
            "subject {participant_id} {session_id}: image {} is missing, and {} holds no Clinica NIfTI \
             (t1/spm/dartel/group-*/{prefix}…{gm}.nii[.gz], t1/spm/segmentation/normalized_space/…, \
             t1_linear/…); the dataset is incomplete (re-run the fetch/synth stage with --force)",
            pt.display(),
            ses.display()
        )))
    }

    /// `raw/<pid>_<sid>_T1w.nii.gz`: the raw T1, when the dataset ships it.
    pub fn raw_t1(&self, participant_id: &str, session_id: &str) -> PathBuf {
        self.root
            .join("raw")
            .join(format!("{participant_id}_{session_id}_T1w.nii.gz"))
    }

    /// Writes `OASIS_BIDS.tsv`: one row of cells per subject, in [`BIDS_COLUMNS`] order.
    pub fn write_bids(&self, rows: &[Vec<String>]) -> Result<()> {
        tsv::write(&self.bids_tsv(), &BIDS_COLUMNS, rows)
    }

    /// Writes a split table: (participant_id, session_id, diagnosis) per subject.
    pub fn write_split(&self, split: Split, rows: &[(String, String, Diagnosis)]) -> Result<()> {
        let cells = rows
            .iter()
            .map(|(p, s, d)| vec![p.clone(), s.clone(), d.as_str().to_string()]);
        tsv::write(&self.split_tsv(split), &SPLIT_COLUMNS, cells)
    }
}

/// The tables of a dataset artifact, cross-checked.
#[derive(Debug)]
pub struct Dataset {
    pub layout: Layout,
    pub subjects: Vec<Subject>,
    pub train: Vec<SplitRow>,
    pub validation: Vec<SplitRow>,
}

impl Dataset {
    /// Finds the dataset under an artifact folder ([`Layout::find`]) and reads its tables.
    pub fn open(dir: &Path) -> Result<Self> {
        let layout = Layout::find(dir)?;
        let subjects = read_bids(&layout.bids_tsv())?;
        let mut index = HashMap::new();
        for (i, s) in subjects.iter().enumerate() {
            index.insert((s.participant_id.clone(), s.session_id.clone()), i);
        }
        let train = read_split(&layout.split_tsv(Split::Train), &index)?;
        let validation = read_split(&layout.split_tsv(Split::Validation), &index)?;
        Ok(Dataset {
            layout,
            subjects,
            train,
            validation,
        })
    }

    pub fn split(&self, split: Split) -> &[SplitRow] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
        }
    }

    /// The `OASIS_BIDS.tsv` row of a split row.
    pub fn subject(&self, row: &SplitRow) -> Result<&Subject> {
        self.subjects.get(row.subject).ok_or_else(|| {
            Error::Msg(format!(
                "internal error: subject index {} out of range (bug, please report)",
                row.subject
            ))
        })
    }

    /// The first `OASIS_BIDS.tsv` row of `participant_id`.
    pub fn find_subject(&self, participant_id: &str) -> Option<&Subject> {
        self.subjects
            .iter()
            .find(|s| s.participant_id == participant_id)
    }

    /// The grey-matter volume's path for a subject.
    pub fn image_path(&self, participant_id: &str, session_id: &str) -> PathBuf {
        self.layout.image(participant_id, session_id)
    }

    /// Read a subject's volume ([`IMAGE_SHAPE`], float32); errors name the subject.
    pub fn read_image(&self, participant_id: &str, session_id: &str) -> Result<Vec<f32>> {
        let path = self.image_path(participant_id, session_id);
        if !path.is_file() {
            return Err(Error::Msg(format!(
                "subject {participant_id} {session_id}: image {} is missing; the dataset is incomplete \
                 (re-run the fetch/synth stage with --force)",
                path.display()
            )));
        }
        pt::read_f32(&path, &IMAGE_SHAPE)
            .map_err(|e| Error::Msg(format!("subject {participant_id} {session_id}: {e}")))
    }

    /// The box `bx` (`[start, end)` on x, y, z) of a subject's `.pt` volume,
    /// x-major: what cutting it out of [`Dataset::read_image`]'s volume gives,
    /// read faster ([`pt::read_f32_box`]); errors name the subject.
    pub fn read_image_box(
        &self,
        participant_id: &str,
        session_id: &str,
        bx: [[usize; 2]; 3],
    ) -> Result<Vec<f32>> {
        let path = self.image_path(participant_id, session_id);
        let [x, y, z] = bx;
        pt::read_f32_box(&path, &IMAGE_SHAPE, &[[0, 1], x, y, z])
            .map_err(|e| Error::Msg(format!("subject {participant_id} {session_id}: {e}")))
    }
}

/// A folder's entries, or none when it cannot be read (absent).
fn list_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `(subject pid)` for error messages.
fn where_(row: &Row) -> String {
    format!("(subject {})", row.get("participant_id"))
}

/// The row's `diagnosis`, AD or CN (else an error naming the line and subject).
pub(super) fn diagnosis(row: &Row) -> Result<Diagnosis> {
    let s = row.get("diagnosis");
    Diagnosis::parse(s).ok_or_else(|| {
        row.error(format!(
            "{}: unknown diagnosis `{s}`; the lab knows AD and CN only",
            where_(row)
        ))
    })
}

/// The row's (participant_id, session_id), refused when unsafe as path
/// components or when `seen` (id pair → line) already holds them.
pub(super) fn unique_ids(
    table: &Table,
    row: &Row,
    seen: &mut HashMap<(String, String), u64>,
) -> Result<(String, String)> {
    let pid = row.get("participant_id").trim();
    let sid = row.get("session_id").trim();
    // Ids become path components: refuse anything that could leave the CAPS folder.
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !ok(pid) || !ok(sid) {
        return Err(row.error(format!(
            "participant_id `{pid}` / session_id `{sid}` must be non-empty letters, digits, `-` or `_`"
        )));
    }
    if let Some(first) = seen.insert((pid.to_string(), sid.to_string()), row.line) {
        return Err(table.error(format!(
            "subject {pid} {sid} appears twice (lines {first} and {}); keep one row per subject",
            row.line
        )));
    }
    Ok((pid.to_string(), sid.to_string()))
}

fn read_bids(path: &Path) -> Result<Vec<Subject>> {
    let required = [
        "participant_id",
        "session_id",
        "sex",
        "education_level",
        "age_bl",
        "MMS",
        "cdr_global",
        "diagnosis",
    ];
    let t = Table::read_with(path, &required)?;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(t.len());
    for row in t.rows() {
        let (pid, sid) = unique_ids(&t, &row, &mut seen)?;
        let number = |col: &str| {
            row.number_or_nan(col)
                .map_err(|e| Error::Msg(format!("{e} {}", where_(&row))))
        };
        let age = number("age_bl")?;
        if !age.is_finite() {
            return Err(row.error(format!("`age_bl` is empty {}", where_(&row))));
        }
        out.push(Subject {
            sex: row.get("sex").trim().to_string(),
            education_level: number("education_level")?,
            age,
            mms: number("MMS")?,
            cdr_global: number("cdr_global")?,
            diagnosis: diagnosis(&row)?,
            participant_id: pid,
            session_id: sid,
        });
    }
    Ok(out)
}

fn read_split(path: &Path, index: &HashMap<(String, String), usize>) -> Result<Vec<SplitRow>> {
    let t = Table::read_with(path, &SPLIT_COLUMNS)?;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(t.len());
    for row in t.rows() {
        let (pid, sid) = unique_ids(&t, &row, &mut seen)?;
        let subject = *index
            .get(&(pid.clone(), sid.clone()))
            .ok_or_else(|| row.error(format!("subject {pid} {sid} is not in OASIS_BIDS.tsv")))?;
        out.push(SplitRow {
            diagnosis: diagnosis(&row)?,
            participant_id: pid,
            session_id: sid,
            subject,
        });
    }
    Ok(out)
}

/// A number as pandas' `to_csv` writes it in these tables: NaN empty, a whole
/// float with `.0` when `float_col` (education, MMS, CDR), else shortest form.
pub fn tsv_number(v: f64, float_col: bool) -> String {
    if v.is_nan() {
        String::new()
    } else if float_col && v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Where the lab's real tables live for tests: `../shared/data/oasis1` beside the checkout.
#[cfg(test)]
pub(crate) fn shared_oasis1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/oasis1")
}

/// A dataset folder holding only the lab's real TSVs (no images), for table tests.
#[cfg(test)]
pub(crate) fn real_tables_dataset(tmp: &Path) -> PathBuf {
    let src = shared_oasis1().join(TSV_DIR);
    assert!(
        src.is_dir(),
        "the lab's real TSVs are expected at {} (shared/ beside the checkout)",
        src.display()
    );
    let dst = tmp.join(DATASET_DIR).join(TSV_DIR);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["OASIS_BIDS.tsv", "train.tsv", "validation.tsv"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    tmp.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_tables_and_layout() {
        let ds = Dataset::open(&super::super::testdata("dataset")).unwrap();
        assert_eq!(
            (ds.subjects.len(), ds.train.len(), ds.validation.len()),
            (3, 2, 1)
        );
        let s = ds.subject(&ds.validation[0]).unwrap();
        assert_eq!(
            (s.session_id.as_str(), s.age, s.mms),
            ("ses-M01", 81.5, 22.0)
        );
        assert!(s.education_level.is_nan());
        // Paths follow each subject's own session.
        let image = ds.image_path(&s.participant_id, &s.session_id);
        assert!(image.ends_with(
            "CAPS/subjects/sub-OASIS10002/ses-M01/deeplearning_prepare_data/image_based/custom/\
             sub-OASIS10002_ses-M01_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt"
        ));
        assert!(ds
            .layout
            .raw_t1("sub-OASIS10002", "ses-M01")
            .ends_with("OASIS-1_dataset/raw/sub-OASIS10002_ses-M01_T1w.nii.gz"));
        // Written back, the tables are the same bytes.
        let out = tempfile::tempdir().unwrap();
        let layout = Layout::create(out.path()).unwrap();
        let bids = Table::read(&ds.layout.bids_tsv()).unwrap();
        let cells: Vec<Vec<String>> = bids
            .rows()
            .map(|r| r.cells().map(str::to_string).collect())
            .collect();
        layout.write_bids(&cells).unwrap();
        for split in Split::ALL {
            let rows: Vec<(String, String, Diagnosis)> = ds
                .split(split)
                .iter()
                .map(|r| (r.participant_id.clone(), r.session_id.clone(), r.diagnosis))
                .collect();
            layout.write_split(split, &rows).unwrap();
        }
        for (a, b) in [
            (layout.bids_tsv(), ds.layout.bids_tsv()),
            (
                layout.split_tsv(Split::Train),
                ds.layout.split_tsv(Split::Train),
            ),
            (
                layout.split_tsv(Split::Validation),
                ds.layout.split_tsv(Split::Validation),
            ),
        ] {
            assert_eq!(
                std::fs::read_to_string(a).unwrap(),
                std::fs::read_to_string(b).unwrap()
            );
        }
        // pandas' number forms.
        assert_eq!(
            (
                tsv_number(2.0, true),
                tsv_number(74.0, false),
                tsv_number(f64::NAN, true)
            ),
            ("2.0".into(), "74".into(), String::new())
        );
    }

    #[test]
    fn reads_the_real_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = Dataset::open(&real_tables_dataset(tmp.path())).unwrap();
        assert_eq!(ds.subjects.len(), 377);
        assert_eq!((ds.train.len(), ds.validation.len()), (300, 77));
        let ad = ds
            .subjects
            .iter()
            .filter(|s| s.diagnosis == Diagnosis::AD)
            .count();
        assert_eq!(ad, 73);
        let s = ds
            .subjects
            .iter()
            .find(|s| s.participant_id == "sub-OASIS10004")
            .unwrap();
        assert!(s.education_level.is_nan());
        assert_eq!((s.age, s.cdr_global), (28.0, 30.0));
    }

    fn write_tables(dir: &Path, bids: &str, train: &str) -> PathBuf {
        let t = dir.join(DATASET_DIR).join(TSV_DIR);
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("OASIS_BIDS.tsv"), bids).unwrap();
        std::fs::write(t.join("train.tsv"), train).unwrap();
        std::fs::write(
            t.join("validation.tsv"),
            "participant_id\tsession_id\tdiagnosis\n",
        )
        .unwrap();
        dir.to_path_buf()
    }

    const HEAD: &str =
        "participant_id\tsession_id\tsex\teducation_level\tage_bl\tMMS\tcdr_global\tdiagnosis\n";

    #[test]
    fn bad_tables_are_named_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let split = "participant_id\tsession_id\tdiagnosis\nsub-1\tses-M00\tAD\n";
        let cases = [
            ("participant_id\tsession_id\tdiagnosis\nsub-1\tses-M00\tAD\n".to_string(), split, "missing column(s) `sex`"),
            (format!("{HEAD}sub-1\tses-M00\tF\t\t70\t29\t0\tMCI\n"), split, "unknown diagnosis `MCI`"),
            (format!("{HEAD}sub-1\tses-M00\tF\t\t70\t29\t0\tAD\nsub-1\tses-M00\tF\t\t70\t29\t0\tAD\n"), split, "appears twice"),
            (format!("{HEAD}sub-1\tses-M00\tF\t\tseventy\t29\t0\tAD\n"), split, "`age_bl` holds `seventy`"),
            (format!("{HEAD}sub-1\tses-M00\tF\t\tNaN\t29\t0\tAD\n"), split, "`age_bl` is empty"),
            (format!("{HEAD}sub-2\tses-M00\tF\t\t70\t29\t0\tAD\n"), split, "sub-1 ses-M00 is not in OASIS_BIDS.tsv"),
            (format!("{HEAD}../x\tses-M00\tF\t\t70\t29\t0\tAD\n"), split, "must be non-empty letters"),
        ];
        for (i, (bids, train, want)) in cases.iter().enumerate() {
            let d = tmp.path().join(i.to_string());
            let e = Dataset::open(&write_tables(&d, bids, train))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "case {i}: {e}");
            assert!(e.contains(".tsv"), "case {i} names no file: {e}");
        }
    }

    #[test]
    fn missing_and_corrupt_images_name_the_subject() {
        let tmp = tempfile::tempdir().unwrap();
        let d = write_tables(
            tmp.path(),
            &format!("{HEAD}sub-1\tses-M00\tF\t\t70\t29\t0\tAD\n"),
            "participant_id\tsession_id\tdiagnosis\nsub-1\tses-M00\tAD\n",
        );
        let ds = Dataset::open(&d).unwrap();
        let e = ds.read_image("sub-1", "ses-M00").unwrap_err().to_string();
        assert!(e.contains("sub-1 ses-M00") && e.contains("missing"), "{e}");
        let p = ds.image_path("sub-1", "ses-M00");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"PK\x03\x04garbage").unwrap();
        let e = ds.read_image("sub-1", "ses-M00").unwrap_err().to_string();
        assert!(
            e.contains("sub-1 ses-M00") && e.contains("probability.pt"),
            "{e}"
        );
    }

    #[test]
    fn find_image_prefers_the_pt_then_clinica_outputs_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        let (pid, sid) = ("sub-1", "ses-M00");
        let ses = layout.session_dir(pid, sid);
        let touch = |rel: &str| {
            let p = ses.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
            p
        };
        let e = layout.find_image(pid, sid).unwrap_err().to_string();
        assert!(
            e.contains("sub-1 ses-M00") && e.contains("missing") && e.contains("t1/spm/dartel"),
            "{e}"
        );
        let linear =
            touch("t1_linear/sub-1_ses-M00_T1w_space-MNI152NLin2009cSym_res-1x1x1_T1w.nii.gz");
        let nifti = |p: &Path, kind| ImageFile::Nifti {
            path: p.to_path_buf(),
            kind,
        };
        assert_eq!(
            layout.find_image(pid, sid).unwrap(),
            nifti(&linear, CapsImage::T1Linear)
        );
        let cropped = touch(
            "t1_linear/sub-1_ses-M00_T1w_space-MNI152NLin2009cSym_desc-Crop_res-1x1x1_T1w.nii.gz",
        );
        assert_eq!(
            layout.find_image(pid, sid).unwrap(),
            nifti(&cropped, CapsImage::T1Linear),
            "the cropped t1-linear image is ClinicaDL's"
        );
        let gm = format!("sub-1_ses-M00_T1w{GM_MAP_SUFFIX}.nii");
        let seg = touch(&format!("t1/spm/segmentation/normalized_space/{gm}"));
        assert_eq!(
            layout.find_image(pid, sid).unwrap(),
            nifti(&seg, CapsImage::T1VolumeSegmentation)
        );
        // Another subject's file, a smoothed map and a modulated one are not this map.
        touch(&format!(
            "t1/spm/dartel/group-a/sub-10_ses-M00_T1w{GM_MAP_SUFFIX}.nii.gz"
        ));
        touch("t1/spm/dartel/group-a/sub-1_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-off_fwhm-8mm_probability.nii.gz");
        touch("t1/spm/dartel/group-a/sub-1_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-on_probability.nii.gz");
        assert_eq!(
            layout.find_image(pid, sid).unwrap(),
            nifti(&seg, CapsImage::T1VolumeSegmentation)
        );
        let dartel = touch(&format!("t1/spm/dartel/group-a/{gm}.gz"));
        assert_eq!(
            layout.find_image(pid, sid).unwrap(),
            nifti(&dartel, CapsImage::T1VolumeDartel)
        );
        touch(&format!("t1/spm/dartel/group-b/{gm}"));
        let e = layout.find_image(pid, sid).unwrap_err().to_string();
        assert!(
            e.contains("sub-1 ses-M00: 2 images") && e.contains("group-a") && e.contains("group-b"),
            "{e}"
        );
        let pt = layout.image(pid, sid);
        std::fs::create_dir_all(pt.parent().unwrap()).unwrap();
        std::fs::write(&pt, b"x").unwrap();
        assert_eq!(layout.find_image(pid, sid).unwrap(), ImageFile::Tensor(pt));
    }
}
