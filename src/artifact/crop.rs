//! A `crop` artifact's description (`meta.json`) and subject tables
//! (`train.tsv`, `validation.tsv`).
//!
//! The lab crops `img[:, 25:55, 50:90, 27:57]` (left) or `img[:, 65:95, ...]`
//! (right), moved by a random ±`shift` voxels per axis while training. A crop
//! stores each patch grown by `shift` voxels on every side, so `meta.json`
//! says which box, which margin, and the two shapes:
//! ```json
//! {"region": "left_hc", "box": {"x": [25, 55], "y": [50, 90], "z": [27, 57]},
//!  "shift": 2, "patch_shape": [30, 40, 30], "stored_shape": [34, 44, 34]}
//! ```
//! (written pretty-printed, with a final newline). Row i of `<split>.tsv`
//! (`participant_id session_id diagnosis label age sex MMS`) describes patch
//! i of `<split>.safetensors`.
//!
//! A crop made with `subjects: all` holds one "split", [`ALL`]: `all.tsv` and
//! `all.safetensors`, every subject of the dataset's `OASIS_BIDS.tsv` once,
//! sorted by participant_id then session_id, labelled by that table's
//! `diagnosis`. Learning stages with a subject list pick their subjects from
//! it ([`select`]); a lab crop's `train` and `validation` serve the same way.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::dataset::{tsv_number, Diagnosis};
use super::subjects::ListedSubject;
use super::tsv::{self, Table};
use super::{Error, Result};

/// The file stem of a crop made with `subjects: all` (`all.tsv`, `all.safetensors`).
pub const ALL: &str = "all";

/// The lab's two hippocampus boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    LeftHc,
    RightHc,
}

impl Region {
    pub const ALL: [Region; 2] = [Region::LeftHc, Region::RightHc];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::LeftHc => "left_hc",
            Region::RightHc => "right_hc",
        }
    }

    /// The lab's box (CropLeftHC / CropRightHC), half-open `[start, end)` per axis x, y, z.
    pub fn lab_box(self) -> [[usize; 2]; 3] {
        let x = match self {
            Region::LeftHc => [25, 55],
            Region::RightHc => [65, 95],
        };
        [x, [50, 90], [27, 57]]
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A box, `[start, end)` voxels per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Box3 {
    pub x: [usize; 2],
    pub y: [usize; 2],
    pub z: [usize; 2],
}

impl Box3 {
    pub fn axes(&self) -> [[usize; 2]; 3] {
        [self.x, self.y, self.z]
    }
}

impl From<[[usize; 2]; 3]> for Box3 {
    fn from([x, y, z]: [[usize; 2]; 3]) -> Self {
        Box3 { x, y, z }
    }
}

/// `meta.json` of a `crop` artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropMeta {
    pub region: Region,
    /// The lab's box, before the margin.
    #[serde(rename = "box")]
    pub bx: Box3,
    /// Margin, in voxels, stored around the box on every side.
    pub shift: usize,
    /// The lab's patch: the box's size.
    pub patch_shape: [usize; 3],
    /// `patch_shape` grown by `shift` on every side.
    pub stored_shape: [usize; 3],
}

pub const META: &str = super::CROP_META;

impl CropMeta {
    /// The meta of `region`'s lab box stored with a margin of `shift`.
    pub fn new(region: Region, shift: usize) -> CropMeta {
        let bx = region.lab_box();
        let patch_shape = bx.map(|[a, b]| b - a);
        CropMeta {
            region,
            bx: bx.into(),
            shift,
            patch_shape,
            stored_shape: patch_shape.map(|d| d + 2 * shift),
        }
    }

    /// Reads `DIR/meta.json` and checks that its shapes agree.
    pub fn read(dir: &Path) -> Result<CropMeta> {
        let path = dir.join(META);
        let text = super::read_text(&path)?;
        let meta: CropMeta = serde_json::from_str(&text).map_err(|e| {
            Error::format(
                &path,
                format!("not a `crop` meta.json ({e}); rebuild the crop stage"),
            )
        })?;
        let expected = meta
            .patch_shape
            .map(|d| d.saturating_add(meta.shift.saturating_mul(2)));
        if meta.patch_shape.contains(&0) || expected != meta.stored_shape {
            return Err(Error::format(
                &path,
                format!(
                    "stored_shape {:?} is not patch_shape {:?} grown by shift {} on every side; \
                     rebuild the crop stage",
                    meta.stored_shape, meta.patch_shape, meta.shift
                ),
            ));
        }
        Ok(meta)
    }

    /// Writes `DIR/meta.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(META);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::format(&path, format!("cannot encode: {e}")))?;
        super::write_file(&path, text + "\n")
    }

    /// The stored (grown) box: `[start, end)` per axis.
    pub fn stored_box(&self) -> [[usize; 2]; 3] {
        self.bx
            .axes()
            .map(|[a, b]| [a.saturating_sub(self.shift), b + self.shift])
    }

    /// `patch_shape` as tensor sizes.
    pub fn patch_dims(&self) -> [i64; 3] {
        self.patch_shape.map(|d| d as i64)
    }

    /// `stored_shape` as tensor sizes.
    pub fn stored_dims(&self) -> [i64; 3] {
        self.stored_shape.map(|d| d as i64)
    }

    /// The margin as a tensor offset.
    pub fn margin(&self) -> i64 {
        self.shift as i64
    }
}

/// One row of a crop's `<split>.tsv`: patch i's subject.
#[derive(Debug, Clone, PartialEq)]
pub struct CropSubject {
    pub participant_id: String,
    pub session_id: String,
    pub diagnosis: Diagnosis,
    /// The lab's `label_code`: AD = 1, CN = 0 (also the patch's label tensor).
    pub label: i64,
    pub age: f64,
    pub sex: String,
    /// NaN when the dataset leaves it empty.
    pub mms: f64,
}

/// A crop's `<split>.tsv`, in patch order.
#[derive(Debug, Clone, PartialEq)]
pub struct CropSubjects(pub Vec<CropSubject>);

const COLUMNS: [&str; 7] = [
    "participant_id",
    "session_id",
    "diagnosis",
    "label",
    "age",
    "sex",
    "MMS",
];

impl CropSubjects {
    pub fn read(path: &Path) -> Result<CropSubjects> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut out = Vec::with_capacity(table.len());
        for row in table.rows() {
            let text = row.get("diagnosis");
            let diagnosis = Diagnosis::parse(text).ok_or_else(|| {
                row.error(format!(
                    "unknown diagnosis `{text}`; the lab knows AD and CN only"
                ))
            })?;
            let label = row.label("label")?;
            if label != diagnosis.label() {
                return Err(row.error(format!(
                    "label {label} disagrees with diagnosis {text} (AD = 1, CN = 0); rebuild the crop stage"
                )));
            }
            out.push(CropSubject {
                participant_id: row.get("participant_id").to_string(),
                session_id: row.get("session_id").to_string(),
                diagnosis,
                label,
                age: row.number_or_nan("age")?,
                sex: row.get("sex").to_string(),
                mms: row.number_or_nan("MMS")?,
            });
        }
        Ok(CropSubjects(out))
    }

    /// Writes the table; numbers as pandas writes the dataset's (MMS as a float).
    pub fn write(&self, path: &Path) -> Result<()> {
        let rows = self.0.iter().map(|s| {
            vec![
                s.participant_id.clone(),
                s.session_id.clone(),
                s.diagnosis.as_str().to_string(),
                s.label.to_string(),
                tsv_number(s.age, false),
                s.sex.clone(),
                tsv_number(s.mms, true),
            ]
        });
        tsv::write(path, &COLUMNS, rows)
    }
}

/// Why [`select`] cannot take a subject list's subjects from a crop.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectError {
    /// `participant_id session_id` of each listed subject the crop lacks.
    Missing(Vec<String>),
    /// A subject whose diagnosis in the list is not the crop's.
    Diagnosis {
        subject: String,
        listed: Diagnosis,
        cropped: Diagnosis,
    },
}

/// The positions in `available` (a crop's rows) of the subjects `wanted`
/// names, sorted by participant_id then session_id: the order of a list's
/// rows never changes what a seeded stage computes from its set.
pub fn select(
    available: &[CropSubject],
    wanted: &[ListedSubject],
) -> std::result::Result<Vec<usize>, SelectError> {
    let index: std::collections::HashMap<(&str, &str), usize> = available
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.participant_id.as_str(), s.session_id.as_str()), i))
        .collect();
    let mut sorted: Vec<&ListedSubject> = wanted.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.participant_id, &a.session_id).cmp(&(&b.participant_id, &b.session_id))
    });
    let mut missing = Vec::new();
    let mut rows = Vec::with_capacity(sorted.len());
    for s in sorted {
        match index.get(&(s.participant_id.as_str(), s.session_id.as_str())) {
            None => missing.push(format!("{} {}", s.participant_id, s.session_id)),
            Some(&i) => {
                let cropped = available.get(i).map_or(s.diagnosis, |c| c.diagnosis);
                if cropped != s.diagnosis {
                    return Err(SelectError::Diagnosis {
                        subject: format!("{} {}", s.participant_id, s.session_id),
                        listed: s.diagnosis,
                        cropped,
                    });
                }
                rows.push(i);
            }
        }
    }
    if !missing.is_empty() {
        return Err(SelectError::Missing(missing));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crop_row(pid: &str, diagnosis: Diagnosis) -> CropSubject {
        CropSubject {
            participant_id: pid.into(),
            session_id: "ses-M00".into(),
            diagnosis,
            label: diagnosis.label(),
            age: 70.0,
            sex: "F".into(),
            mms: f64::NAN,
        }
    }

    fn listed(pid: &str, diagnosis: Diagnosis) -> ListedSubject {
        ListedSubject {
            participant_id: pid.into(),
            session_id: "ses-M00".into(),
            diagnosis,
            age: f64::NAN,
            sex: None,
            mms: f64::NAN,
        }
    }

    #[test]
    fn select_sorts_by_subject_and_names_what_is_missing() {
        use Diagnosis::{AD, CN};
        let crop = [crop_row("s3", AD), crop_row("s1", CN), crop_row("s2", AD)];
        let a = select(
            &crop,
            &[listed("s2", AD), listed("s3", AD), listed("s1", CN)],
        );
        let b = select(
            &crop,
            &[listed("s1", CN), listed("s3", AD), listed("s2", AD)],
        );
        assert_eq!(a, Ok(vec![1, 2, 0]));
        assert_eq!(a, b, "the list's order must not matter");
        assert_eq!(
            select(
                &crop,
                &[listed("s9", AD), listed("s1", CN), listed("s0", CN)]
            ),
            Err(SelectError::Missing(vec![
                "s0 ses-M00".into(),
                "s9 ses-M00".into()
            ]))
        );
        assert_eq!(
            select(&crop, &[listed("s1", AD)]),
            Err(SelectError::Diagnosis {
                subject: "s1 ses-M00".into(),
                listed: AD,
                cropped: CN
            })
        );
    }

    #[test]
    fn golden_meta() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            super::super::testdata("crop/meta.json"),
            dir.path().join(META),
        )
        .unwrap();
        let meta = CropMeta::read(dir.path()).unwrap();
        assert_eq!(meta, CropMeta::new(Region::LeftHc, 2));
        assert_eq!(meta.stored_box(), [[23, 57], [48, 92], [25, 59]]);
        let out = tempfile::tempdir().unwrap();
        meta.write(out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join(META)).unwrap(),
            std::fs::read_to_string(dir.path().join(META)).unwrap()
        );
    }

    #[test]
    fn inconsistent_meta_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = CropMeta::new(Region::RightHc, 1);
        meta.stored_shape = [30, 40, 30];
        meta.write(dir.path()).unwrap();
        let e = CropMeta::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("meta.json") && e.contains("grown by shift 1"),
            "{e}"
        );
        std::fs::write(dir.path().join(META), "{\"region\": \"hc\"}").unwrap();
        let e = CropMeta::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a `crop` meta.json"), "{e}");
    }

    #[test]
    fn golden_subjects() {
        let t = super::super::assert_round_trip("crop/train.tsv", CropSubjects::read, |p, t| {
            t.write(p)
        });
        assert_eq!(t.0.len(), 3);
        assert_eq!(t.0[0].participant_id, "sub-OASIS10014");
        assert_eq!((t.0[0].label, t.0[0].mms), (1, 22.0));
        assert_eq!(t.0[2].session_id, "ses-M01");
        assert!(t.0[2].mms.is_nan());
    }

    #[test]
    fn label_must_match_diagnosis() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.tsv");
        std::fs::write(
            &p,
            "participant_id\tsession_id\tdiagnosis\tlabel\tage\tsex\tMMS\ns1\tses-M00\tAD\t0\t70\tF\t29.0\n",
        )
        .unwrap();
        let e = CropSubjects::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: label 0 disagrees"), "{e}");
    }
}
