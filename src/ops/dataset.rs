//! The OASIS-1 dataset artifact as `fetch` or `synth` leaves it: its subject
//! tables and where each subject's grey-matter volume lives.
//!
//! Layout (the lab's tarball, kept as is):
//! ```text
//! OASIS-1_dataset/tsv_files/lab_1/{OASIS_BIDS,train,validation}.tsv
//! OASIS-1_dataset/CAPS/subjects/<pid>/<sid>/deeplearning_prepare_data/image_based/custom/
//!     <pid>_<sid>_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt
//! ```
//! [`Dataset::open`] reads and cross-checks the three tables (columns present,
//! diagnoses known, no duplicate subject, every split subject in
//! `OASIS_BIDS.tsv`) so that the ops after it can index without checks; volumes
//! are read on demand with [`Dataset::read_image`]. Every error names the file
//! and, where there is one, the line and the subject.
//!
//! Numbers follow pandas' reading of the TSVs: an empty cell (or `nan`) is NaN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{pt, OpError};

/// The top folder of the dataset inside its artifact.
pub const DATASET_DIR: &str = "OASIS-1_dataset";
/// The subject tables' folder, relative to [`DATASET_DIR`].
pub const TSV_DIR: &str = "tsv_files/lab_1";
/// Every volume's shape: channel, x, y, z (121 × 145 × 121 voxels of 1.5 mm).
pub const IMAGE_SHAPE: [usize; 4] = [1, 121, 145, 121];
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

    fn parse(s: &str) -> Option<Self> {
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

/// The tables of a dataset artifact, cross-checked.
#[derive(Debug)]
pub struct Dataset {
    /// The `OASIS-1_dataset` folder.
    pub root: PathBuf,
    pub subjects: Vec<Subject>,
    pub train: Vec<SplitRow>,
    pub validation: Vec<SplitRow>,
}

impl Dataset {
    /// Find the dataset under an artifact folder (`DIR/OASIS-1_dataset`, or
    /// `DIR` itself when it holds `tsv_files/`) and read its tables.
    pub fn open(dir: &Path) -> Result<Self, OpError> {
        let root = if dir.join(DATASET_DIR).is_dir() {
            dir.join(DATASET_DIR)
        } else if dir.join(TSV_DIR).is_dir() {
            dir.to_path_buf()
        } else {
            return Err(OpError::Msg(format!(
                "{}: no `{DATASET_DIR}/{TSV_DIR}` folder; the dataset stage (fetch or synth) must produce the \
                 lab's tarball layout",
                dir.display()
            )));
        };
        let tsv = root.join(TSV_DIR);
        let subjects = read_bids(&tsv.join("OASIS_BIDS.tsv"))?;
        let mut index = HashMap::new();
        for (i, s) in subjects.iter().enumerate() {
            index.insert((s.participant_id.clone(), s.session_id.clone()), i);
        }
        let train = read_split(&tsv.join("train.tsv"), &index)?;
        let validation = read_split(&tsv.join("validation.tsv"), &index)?;
        Ok(Dataset {
            root,
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
    pub fn subject(&self, row: &SplitRow) -> Result<&Subject, OpError> {
        self.subjects.get(row.subject).ok_or_else(|| {
            OpError::Msg(format!(
                "internal error: subject index {} out of range (bug, please report)",
                row.subject
            ))
        })
    }

    /// The grey-matter volume's path for a subject.
    pub fn image_path(&self, participant_id: &str, session_id: &str) -> PathBuf {
        image_path(&self.root, participant_id, session_id)
    }

    /// Read a subject's volume ([`IMAGE_SHAPE`], float32); errors name the subject.
    pub fn read_image(&self, participant_id: &str, session_id: &str) -> Result<Vec<f32>, OpError> {
        let path = self.image_path(participant_id, session_id);
        if !path.is_file() {
            return Err(OpError::Msg(format!(
                "subject {participant_id} {session_id}: image {} is missing; the dataset is incomplete \
                 (re-run the fetch/synth stage with --force)",
                path.display()
            )));
        }
        pt::read_f32(&path, &IMAGE_SHAPE)
            .map_err(|e| OpError::Msg(format!("subject {participant_id} {session_id}: {e}")))
    }
}

/// `ROOT/CAPS/subjects/<pid>/<sid>/deeplearning_prepare_data/image_based/custom/<pid>_<sid>_T1w_...pt`.
pub fn image_path(root: &Path, participant_id: &str, session_id: &str) -> PathBuf {
    root.join("CAPS/subjects")
        .join(participant_id)
        .join(session_id)
        .join("deeplearning_prepare_data/image_based/custom")
        .join(format!(
            "{participant_id}_{session_id}_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt"
        ))
}

/// A TSV with its header mapped to column positions.
struct Table {
    path: PathBuf,
    cols: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path, required: &[&str]) -> Result<Self, OpError> {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .flexible(false)
            .from_path(path)
            .map_err(|e| {
                OpError::Msg(format!(
                    "{}: cannot open the subject table: {e}",
                    path.display()
                ))
            })?;
        let header = rdr
            .headers()
            .map_err(|e| OpError::Msg(format!("{}: cannot read the header: {e}", path.display())))?
            .clone();
        let cols: HashMap<String, usize> = header
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i))
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !cols.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(OpError::Msg(format!(
                "{}: missing column(s) {}; the header has {}",
                path.display(),
                missing
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                header.iter().collect::<Vec<_>>().join(" ")
            )));
        }
        let mut rows = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| OpError::Msg(format!("{}: {e}", path.display())))?;
            let line = rec.position().map_or(0, |p| p.line());
            rows.push((line, rec));
        }
        Ok(Table {
            path: path.to_path_buf(),
            cols,
            rows,
        })
    }

    fn get<'r>(&self, rec: &'r csv::StringRecord, col: &str) -> &'r str {
        self.cols.get(col).and_then(|&i| rec.get(i)).unwrap_or("")
    }

    fn where_(&self, line: u64, rec: &csv::StringRecord) -> String {
        format!(
            "{}:{line} (subject {})",
            self.path.display(),
            self.get(rec, "participant_id")
        )
    }

    fn number(&self, line: u64, rec: &csv::StringRecord, col: &str) -> Result<f64, OpError> {
        let s = self.get(rec, col).trim();
        if s.is_empty() || s.eq_ignore_ascii_case("nan") || s.eq_ignore_ascii_case("n/a") {
            return Ok(f64::NAN);
        }
        s.parse::<f64>().map_err(|_| {
            OpError::Msg(format!(
                "{}: column `{col}` holds `{s}`, not a number",
                self.where_(line, rec)
            ))
        })
    }

    fn diagnosis(&self, line: u64, rec: &csv::StringRecord) -> Result<Diagnosis, OpError> {
        let s = self.get(rec, "diagnosis");
        Diagnosis::parse(s).ok_or_else(|| {
            OpError::Msg(format!(
                "{}: unknown diagnosis `{s}`; the lab knows AD and CN only",
                self.where_(line, rec)
            ))
        })
    }

    /// The row's (participant_id, session_id), refused when unsafe as path
    /// components or when `seen` (id pair → line) already holds them.
    fn unique_ids(
        &self,
        line: u64,
        rec: &csv::StringRecord,
        seen: &mut HashMap<(String, String), u64>,
    ) -> Result<(String, String), OpError> {
        let pid = self.get(rec, "participant_id").trim();
        let sid = self.get(rec, "session_id").trim();
        // Ids become path components: refuse anything that could leave the CAPS folder.
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok(pid) || !ok(sid) {
            return Err(OpError::Msg(format!(
                "{}: participant_id `{pid}` / session_id `{sid}` must be non-empty letters, digits, `-` or `_`",
                self.where_(line, rec)
            )));
        }
        if let Some(first) = seen.insert((pid.to_string(), sid.to_string()), line) {
            return Err(OpError::Msg(format!(
                "{}: subject {pid} {sid} appears twice (lines {first} and {line}); keep one row per subject",
                self.path.display()
            )));
        }
        Ok((pid.to_string(), sid.to_string()))
    }
}

fn read_bids(path: &Path) -> Result<Vec<Subject>, OpError> {
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
    let t = Table::read(path, &required)?;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let (pid, sid) = t.unique_ids(*line, rec, &mut seen)?;
        let age = t.number(*line, rec, "age_bl")?;
        if !age.is_finite() {
            return Err(OpError::Msg(format!(
                "{}: `age_bl` is empty",
                t.where_(*line, rec)
            )));
        }
        out.push(Subject {
            sex: t.get(rec, "sex").trim().to_string(),
            education_level: t.number(*line, rec, "education_level")?,
            age,
            mms: t.number(*line, rec, "MMS")?,
            cdr_global: t.number(*line, rec, "cdr_global")?,
            diagnosis: t.diagnosis(*line, rec)?,
            participant_id: pid,
            session_id: sid,
        });
    }
    Ok(out)
}

fn read_split(
    path: &Path,
    index: &HashMap<(String, String), usize>,
) -> Result<Vec<SplitRow>, OpError> {
    let t = Table::read(path, &SPLIT_COLUMNS)?;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let (pid, sid) = t.unique_ids(*line, rec, &mut seen)?;
        let subject = *index.get(&(pid.clone(), sid.clone())).ok_or_else(|| {
            OpError::Msg(format!(
                "{}: subject {pid} {sid} is not in OASIS_BIDS.tsv",
                t.where_(*line, rec)
            ))
        })?;
        out.push(SplitRow {
            diagnosis: t.diagnosis(*line, rec)?,
            participant_id: pid,
            session_id: sid,
            subject,
        });
    }
    Ok(out)
}

/// A rayon pool of `threads` workers (the stage's `resources.cpu`), so an op
/// never takes more cores than the scheduler granted it.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, OpError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| OpError::Msg(format!("cannot start {threads} worker threads: {e}")))
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
}
