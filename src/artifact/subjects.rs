//! Subject tables: `subjects.tsv` of an `age_filter` stage ([`Subjects`]),
//! and the subject lists a learning stage trains and evaluates on
//! ([`SubjectSets`]).
//!
//! `subjects.tsv` holds the subjects of one split an `age_filter` kept
//! (`participant_id session_id diagnosis age`), in the split's order.
//!
//! A **subject list** is an artifact folder holding `train.tsv` and at least
//! one of `validation.tsv` / `test.tsv` (what `split` and `kfold` write). Each
//! file has a header line and the columns `participant_id session_id
//! diagnosis` (AD|CN), tab separated, then optionally more (`age`, `sex`,
//! `MMS`), which this reader ignores. It is deliberately minimal: learning
//! stages only need to know which subjects a set names.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::dataset::{tsv_number, Diagnosis};
use super::tsv::{self, Table};
use super::Result;

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

/// One subject a subject list names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubjectRef {
    pub participant_id: String,
    pub session_id: String,
    pub diagnosis: Diagnosis,
}

/// The sets of a subject-list artifact: `train` plus `validation` and/or `test`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectSets {
    pub dir: PathBuf,
    /// (set name, its subjects in file order), in [`SubjectSets::NAMES`] order.
    sets: Vec<(&'static str, Vec<SubjectRef>)>,
}

const LIST_COLUMNS: [&str; 3] = ["participant_id", "session_id", "diagnosis"];

impl SubjectSets {
    /// The set names a subject list may hold, each read from `<name>.tsv`.
    pub const NAMES: [&'static str; 3] = ["train", "validation", "test"];

    /// The subject list in `dir`, or `None` when `dir` is not one (no
    /// `train.tsv`, or neither `validation.tsv` nor `test.tsv`).
    pub fn open(dir: &Path) -> Result<Option<SubjectSets>> {
        let has = |name: &str| dir.join(format!("{name}.tsv")).is_file();
        if !has("train") || !(has("validation") || has("test")) {
            return Ok(None);
        }
        let mut sets = Vec::new();
        for name in Self::NAMES {
            if has(name) {
                sets.push((name, read_list(&dir.join(format!("{name}.tsv")))?));
            }
        }
        Ok(Some(SubjectSets {
            dir: dir.to_path_buf(),
            sets,
        }))
    }

    /// The subjects of set `name` (`train`, `validation`, `test`), if the list has it.
    pub fn get(&self, name: &str) -> Option<&[SubjectRef]> {
        self.sets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.as_slice())
    }

    /// The names of the sets this list holds, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.sets.iter().map(|(n, _)| *n).collect()
    }
}

/// One list file; a subject named twice is refused (it would count twice).
fn read_list(path: &Path) -> Result<Vec<SubjectRef>> {
    let table = Table::read_with(path, &LIST_COLUMNS)?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(table.len());
    for row in table.rows() {
        let text = row.get("diagnosis");
        let diagnosis = Diagnosis::parse(text).ok_or_else(|| {
            row.error(format!(
                "unknown diagnosis `{text}`; the lab knows AD and CN only"
            ))
        })?;
        let s = SubjectRef {
            participant_id: row.get("participant_id").to_string(),
            session_id: row.get("session_id").to_string(),
            diagnosis,
        };
        if !seen.insert((s.participant_id.clone(), s.session_id.clone())) {
            return Err(row.error(format!(
                "subject {} {} is listed twice",
                s.participant_id, s.session_id
            )));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS\n";

    #[test]
    fn a_folder_with_train_and_test_is_a_subject_list() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SubjectSets::open(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("train.tsv"),
            format!("{HEADER}sub-2\tses-M00\tAD\t70\tF\t22.0\nsub-1\tses-M00\tCN\t71\tM\t\n"),
        )
        .unwrap();
        // train.tsv alone is not a list (an age_filter or a crop folder may hold one).
        assert_eq!(SubjectSets::open(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join("test.tsv"),
            "participant_id\tsession_id\tdiagnosis\nsub-3\tses-M00\tCN\n",
        )
        .unwrap();
        let sets = SubjectSets::open(dir.path()).unwrap().unwrap();
        assert_eq!(sets.names(), ["train", "test"]);
        let train = sets.get("train").unwrap();
        assert_eq!(train.len(), 2);
        assert_eq!(
            (train[0].participant_id.as_str(), train[0].diagnosis),
            ("sub-2", Diagnosis::AD)
        );
        assert_eq!(sets.get("test").unwrap()[0].participant_id, "sub-3");
        assert!(sets.get("validation").is_none());
    }

    #[test]
    fn bad_lists_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("validation.tsv"), HEADER).unwrap();
        std::fs::write(
            dir.path().join("train.tsv"),
            format!("{HEADER}sub-1\tses-M00\tMCI\t70\tF\t22.0\n"),
        )
        .unwrap();
        let e = SubjectSets::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2: unknown diagnosis `MCI`"), "{e}");
        std::fs::write(
            dir.path().join("train.tsv"),
            "participant_id\tsession_id\tdiagnosis\ns1\tses-M00\tAD\ns1\tses-M00\tAD\n",
        )
        .unwrap();
        let e = SubjectSets::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("line 3: subject s1 ses-M00 is listed twice"),
            "{e}"
        );
        std::fs::write(dir.path().join("train.tsv"), "participant_id\tdiagnosis\n").unwrap();
        let e = SubjectSets::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("missing column(s) `session_id`"), "{e}");
    }

    #[test]
    fn golden() {
        let s = super::super::assert_round_trip("subjects.tsv", Subjects::read, |p, s| s.write(p));
        assert_eq!(s.0.len(), 3);
        assert_eq!(s.0[1].diagnosis, Diagnosis::CN);
        assert_eq!(s.0[1].age, 62.5);
        assert!(s.ids().contains("sub-OASIS10066"));
    }
}
