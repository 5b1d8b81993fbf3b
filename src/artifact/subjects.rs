//! Subject lists: which subjects a stage works on.
//!
//! - `subjects.tsv` of an `age_filter` stage ([`Subjects`]): the subjects of
//!   one split it kept (`participant_id session_id diagnosis age`), in the
//!   split's order.
//! - The sets of a `split` or `kfold` stage ([`SubjectSets`]): `train.tsv`,
//!   `validation.tsv`, `test.tsv`, each a subject-list TSV ([`SubjectList`]):
//!   `participant_id session_id diagnosis age sex MMS`, tab separated, one
//!   row per subject, sorted by participant_id then session_id; `diagnosis`
//!   is AD or CN, `sex` F or M, an empty cell an unknown value. A list made
//!   by hand may stop after `diagnosis` (the other columns are optional).
//! - A participants table ([`SubjectList::read_participants`]): the
//!   demographics `split` draws from when its upstream is not a dataset
//!   (`participants.tsv`: participant_id, session_id, diagnosis, age or
//!   age_bl, sex, and optionally MMS, in any order).
//!
//! A learning stage finds its subjects by artifact, not by the op that made
//! them: [`SubjectSets::open`] on each upstream folder says whether it is a
//! subject-list artifact and returns its sets by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::dataset::{self, tsv_number, Diagnosis};
use super::tsv::{self, Row, Table};
use super::{Error, Result};

/// One kept subject.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptSubject {
    pub participant_id: String,
    pub session_id: String,
    pub diagnosis: Diagnosis,
    pub age: f64,
}

/// An `age_filter` artifact's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Subjects(pub Vec<KeptSubject>);

pub const FILE: &str = "subjects.tsv";
const COLUMNS: [&str; 4] = ["participant_id", "session_id", "diagnosis", "age"];

impl Subjects {
    pub fn read(path: &Path) -> Result<Subjects> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut out = Vec::with_capacity(table.len());
        for row in table.rows() {
            let text = row.get("diagnosis");
            let diagnosis = Diagnosis::parse(text).ok_or_else(|| {
                row.error(format!(
                    "unknown diagnosis `{text}`; the lab knows AD and CN only"
                ))
            })?;
            out.push(KeptSubject {
                participant_id: row.get("participant_id").to_string(),
                session_id: row.get("session_id").to_string(),
                diagnosis,
                age: row.number_or_nan("age")?,
            });
        }
        Ok(Subjects(out))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let rows = self.0.iter().map(|s| {
            vec![
                s.participant_id.clone(),
                s.session_id.clone(),
                s.diagnosis.as_str().to_string(),
                tsv_number(s.age, false),
            ]
        });
        tsv::write(path, &COLUMNS, rows)
    }

    /// The kept participant ids.
    pub fn ids(&self) -> HashSet<&str> {
        self.0.iter().map(|s| s.participant_id.as_str()).collect()
    }
}

/// A subject's sex as the tables write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    F,
    M,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::F => "F",
            Sex::M => "M",
        }
    }

    pub fn parse(s: &str) -> Option<Sex> {
        match s {
            "F" => Some(Sex::F),
            "M" => Some(Sex::M),
            _ => None,
        }
    }
}

/// One row of a subject list. Unknown numbers are NaN, unknown sex `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedSubject {
    pub participant_id: String,
    pub session_id: String,
    pub diagnosis: Diagnosis,
    /// Age in years (OASIS: at the baseline visit).
    pub age: f64,
    pub sex: Option<Sex>,
    /// Mini-Mental State score.
    pub mms: f64,
}

impl ListedSubject {
    /// (participant_id, session_id): how lists are sorted and subjects matched.
    pub fn key(&self) -> (&str, &str) {
        (&self.participant_id, &self.session_id)
    }
}

/// A subject-list TSV (`train.tsv`, `validation.tsv`, `test.tsv`), in the
/// order read; [`SubjectList::write`] sorts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectList(pub Vec<ListedSubject>);

/// The columns a subject list is written with; a list needs the first three.
pub const LIST_COLUMNS: [&str; 6] = [
    "participant_id",
    "session_id",
    "diagnosis",
    "age",
    "sex",
    "MMS",
];
/// The table `split` draws from when its upstream is not a dataset.
pub const PARTICIPANTS_FILE: &str = "participants.tsv";

impl SubjectList {
    /// Reads a subject-list TSV: `participant_id`, `session_id`, `diagnosis`
    /// required, `age`, `sex`, `MMS` read when present. Refuses unknown
    /// diagnoses or sexes and a subject listed twice, naming the line.
    pub fn read(path: &Path) -> Result<SubjectList> {
        let table = Table::read_with(path, &LIST_COLUMNS[..3])?;
        let age = table.column("age").map(|_| "age");
        read_rows(&table, age)
    }

    /// Reads a participants table: like [`SubjectList::read`] but `sex` and
    /// `age` (or OASIS' `age_bl`) are required, for the balance tests.
    pub fn read_participants(path: &Path) -> Result<SubjectList> {
        let table = Table::read_with(path, &["participant_id", "session_id", "diagnosis", "sex"])?;
        let age = ["age", "age_bl"]
            .into_iter()
            .find(|c| table.column(c).is_some())
            .ok_or_else(|| {
                table.error(format!(
                    "missing column `age` (or `age_bl`); the header has {}",
                    table.header.join(" ")
                ))
            })?;
        read_rows(&table, Some(age))
    }

    /// Writes the list with [`LIST_COLUMNS`], rows sorted by participant_id
    /// then session_id (whatever the order in memory).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut rows: Vec<&ListedSubject> = self.0.iter().collect();
        rows.sort_by(|a, b| a.key().cmp(&b.key()));
        let cells = rows.into_iter().map(|s| {
            vec![
                s.participant_id.clone(),
                s.session_id.clone(),
                s.diagnosis.as_str().to_string(),
                tsv::number(s.age),
                s.sex.map_or("", Sex::as_str).to_string(),
                tsv::number(s.mms),
            ]
        });
        tsv::write(path, &LIST_COLUMNS, cells)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many subjects have diagnosis `d`.
    pub fn count(&self, d: Diagnosis) -> usize {
        self.0.iter().filter(|s| s.diagnosis == d).count()
    }

    /// The listed participant ids.
    pub fn participant_ids(&self) -> HashSet<&str> {
        self.0.iter().map(|s| s.participant_id.as_str()).collect()
    }

    /// Whether (participant_id, session_id) is listed.
    pub fn contains(&self, participant_id: &str, session_id: &str) -> bool {
        self.0
            .iter()
            .any(|s| s.key() == (participant_id, session_id))
    }
}

/// The rows of a subject table whose columns were checked; `age` names the
/// age column, if any.
fn read_rows(table: &Table, age: Option<&str>) -> Result<SubjectList> {
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut out = Vec::with_capacity(table.len());
    let has_sex = table.column("sex").is_some();
    let has_mms = table.column("MMS").is_some();
    for row in table.rows() {
        let (participant_id, session_id) = dataset::unique_ids(table, &row, &mut seen)?;
        out.push(ListedSubject {
            diagnosis: dataset::diagnosis(&row)?,
            age: match age {
                Some(col) => row.number_or_nan(col)?,
                None => f64::NAN,
            },
            sex: if has_sex { sex(&row)? } else { None },
            mms: if has_mms {
                row.number_or_nan("MMS")?
            } else {
                f64::NAN
            },
            participant_id,
            session_id,
        });
    }
    Ok(SubjectList(out))
}

/// The row's `sex`: F, M, or empty (unknown).
fn sex(row: &Row) -> Result<Option<Sex>> {
    let s = row.get("sex").trim();
    if s.is_empty() {
        return Ok(None);
    }
    Sex::parse(s).map(Some).ok_or_else(|| {
        row.error(format!(
            "sex is `{s}` (subject {}); write F or M, or leave the cell empty if unknown",
            row.get("participant_id")
        ))
    })
}

/// The subject lists of a `split` or `kfold` artifact, by name.
#[derive(Debug, Clone)]
pub struct SubjectSets {
    /// The artifact folder they were read from.
    pub dir: PathBuf,
    /// Present sets in [`SET_NAMES`] order.
    sets: Vec<(&'static str, SubjectList)>,
}

/// The sets a subject-list artifact may hold, each as `NAME.tsv`.
pub const SET_NAMES: [&str; 3] = ["train", "validation", "test"];

impl SubjectSets {
    /// Whether `dir` is a subject-list artifact, and if so its sets.
    ///
    /// `Ok(None)`: not one, i.e. `dir` lacks `train.tsv`, or has neither
    /// `validation.tsv` nor `test.tsv`, or is a `crop` artifact (its
    /// `meta.json` beside them: a crop's tables index its patches). Otherwise
    /// every present set is read ([`SubjectList::read`]) and the sets are
    /// checked to share no participant: an error names the participant and
    /// both files.
    pub fn open(dir: &Path) -> Result<Option<SubjectSets>> {
        let file = |name: &str| dir.join(format!("{name}.tsv"));
        let is_sets = file("train").is_file()
            && (file("validation").is_file() || file("test").is_file())
            && !dir.join(super::CROP_META).exists();
        if !is_sets {
            return Ok(None);
        }
        let mut sets = Vec::new();
        for name in SET_NAMES {
            if file(name).is_file() {
                sets.push((name, SubjectList::read(&file(name))?));
            }
        }
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for (name, list) in &sets {
            for s in &list.0 {
                if let Some(first) = owner.insert(&s.participant_id, name) {
                    if first != *name {
                        return Err(Error::Msg(format!(
                            "{}: participant {} is in both `{first}.tsv` and `{name}.tsv`; a subject \
                             must be in one set only (remake the split: its stage would leak)",
                            dir.display(),
                            s.participant_id
                        )));
                    }
                }
            }
        }
        Ok(Some(SubjectSets {
            dir: dir.to_path_buf(),
            sets,
        }))
    }

    /// The set called `name` (`train`, `validation`, `test`), if present.
    pub fn get(&self, name: &str) -> Option<&SubjectList> {
        self.sets.iter().find(|(n, _)| *n == name).map(|(_, l)| l)
    }

    /// The set called `name`, or an error naming the folder and the sets it has.
    pub fn require(&self, name: &str) -> Result<&SubjectList> {
        self.get(name).ok_or_else(|| {
            Error::Msg(format!(
                "{}: no `{name}.tsv` in this subject-list artifact; it has {}",
                self.dir.display(),
                self.names()
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The names of the sets present, in [`SET_NAMES`] order.
    pub fn names(&self) -> Vec<&'static str> {
        self.sets.iter().map(|(n, _)| *n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let s = super::super::assert_round_trip("subjects.tsv", Subjects::read, |p, s| s.write(p));
        assert_eq!(s.0.len(), 3);
        assert_eq!(s.0[1].diagnosis, Diagnosis::CN);
        assert_eq!(s.0[1].age, 62.5);
        assert!(s.ids().contains("sub-OASIS10066"));
    }

    fn subject(pid: &str, d: Diagnosis, age: f64, sex: Option<Sex>, mms: f64) -> ListedSubject {
        ListedSubject {
            participant_id: pid.into(),
            session_id: "ses-M00".into(),
            diagnosis: d,
            age,
            sex,
            mms,
        }
    }

    #[test]
    fn subject_list_golden_and_sorted_on_write() {
        let l = super::super::assert_round_trip("subject_list.tsv", SubjectList::read, |p, l| {
            l.write(p)
        });
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.0[0],
            subject("sub-OASIS10001", Diagnosis::CN, 74.0, Some(Sex::F), 29.0)
        );
        assert!(l.0[2].age.is_nan() && l.0[2].sex.is_none() && l.0[2].mms.is_nan());
        assert_eq!((l.count(Diagnosis::AD), l.count(Diagnosis::CN)), (1, 2));
        assert!(l.contains("sub-OASIS10003", "ses-M00"));
        // Written sorted, whatever the order in memory.
        let mut rev = l.clone();
        rev.0.reverse();
        let dir = tempfile::tempdir().unwrap();
        rev.write(&dir.path().join("x.tsv")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("x.tsv")).unwrap(),
            std::fs::read_to_string(super::super::testdata("subject_list.tsv")).unwrap()
        );
    }

    #[test]
    fn minimal_lists_and_participants_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.tsv");
        std::fs::write(
            &p,
            "participant_id\tsession_id\tdiagnosis\ns-1\tses-M00\tAD\n",
        )
        .unwrap();
        let l = SubjectList::read(&p).unwrap();
        assert!(l.0[0].age.is_nan() && l.0[0].sex.is_none());
        // A participants table needs sex and an age column; age_bl will do.
        let e = SubjectList::read_participants(&p).unwrap_err().to_string();
        assert!(e.contains("missing column(s) `sex`"), "{e}");
        std::fs::write(
            &p,
            "participant_id\tsession_id\tdiagnosis\tsex\ns-1\tses-M00\tAD\tF\n",
        )
        .unwrap();
        let e = SubjectList::read_participants(&p).unwrap_err().to_string();
        assert!(e.contains("missing column `age` (or `age_bl`)"), "{e}");
        std::fs::write(
            &p,
            "sex\tage_bl\tdiagnosis\tsession_id\tparticipant_id\nM\t70\tCN\tses-M00\ts-1\n",
        )
        .unwrap();
        let l = SubjectList::read_participants(&p).unwrap();
        let s = &l.0[0];
        assert_eq!(
            (s.key(), s.diagnosis, s.age, s.sex),
            (("s-1", "ses-M00"), Diagnosis::CN, 70.0, Some(Sex::M))
        );
        assert!(s.mms.is_nan(), "no MMS column: unknown");
    }

    #[test]
    fn bad_lists_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.tsv");
        let head = "participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS\n";
        for (rows, want) in [
            (
                "s-1\tses-M00\tMCI\t70\tF\t\n",
                "line 2: (subject s-1): unknown diagnosis `MCI`",
            ),
            (
                "s-1\tses-M00\tAD\t70\tX\t\n",
                "line 2: sex is `X` (subject s-1)",
            ),
            (
                "s-1\tses-M00\tAD\told\tF\t\n",
                "line 2: column `age` holds `old`",
            ),
            (
                "s-1\tses-M00\tAD\t70\tF\t\ns-1\tses-M00\tCN\t70\tF\t\n",
                "appears twice (lines 2 and 3)",
            ),
        ] {
            std::fs::write(&p, format!("{head}{rows}")).unwrap();
            let e = SubjectList::read(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("l.tsv"), "{e}");
        }
    }

    #[test]
    fn sets_are_found_by_their_files_not_by_a_crop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let list = |pids: &[&str]| {
            SubjectList(
                pids.iter()
                    .map(|p| subject(p, Diagnosis::AD, 70.0, Some(Sex::F), 25.0))
                    .collect(),
            )
        };
        assert!(SubjectSets::open(d).unwrap().is_none(), "an empty folder");
        list(&["s-1", "s-2"]).write(&d.join("train.tsv")).unwrap();
        assert!(SubjectSets::open(d).unwrap().is_none(), "train.tsv alone");
        list(&["s-3"]).write(&d.join("test.tsv")).unwrap();
        let sets = SubjectSets::open(d).unwrap().unwrap();
        assert_eq!(sets.names(), ["train", "test"]);
        assert_eq!(sets.get("train").unwrap().len(), 2);
        assert!(sets.get("validation").is_none());
        let e = sets.require("validation").unwrap_err().to_string();
        assert!(
            e.contains("no `validation.tsv`") && e.contains("`train`, `test`"),
            "{e}"
        );
        // A leak between sets is refused.
        list(&["s-2"]).write(&d.join("validation.tsv")).unwrap();
        let e = SubjectSets::open(d).unwrap_err().to_string();
        assert!(
            e.contains("participant s-2 is in both `train.tsv` and `validation.tsv`"),
            "{e}"
        );
        std::fs::remove_file(d.join("validation.tsv")).unwrap();
        // A crop's train.tsv/validation.tsv are not subject sets.
        std::fs::write(d.join(super::super::CROP_META), "{}").unwrap();
        assert!(SubjectSets::open(d).unwrap().is_none());
    }
}
