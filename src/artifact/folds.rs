//! `folds.tsv` of a `kfold` stage: every subject of the train pool and the
//! one fold whose validation set holds it, for all k folds (the same file in
//! every member of the fold matrix): `participant_id session_id diagnosis
//! fold`, sorted by participant_id then session_id, folds numbered from 0.
//!
//! It is the record of the no-leakage proof `kfold` makes before writing:
//! each pool subject in exactly one validation fold, none in the test set.

use std::collections::HashMap;
use std::path::Path;

use super::dataset::{self, Diagnosis};
use super::tsv::{self, Table};
use super::Result;

/// One pool subject and its validation fold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldRow {
    pub participant_id: String,
    pub session_id: String,
    pub diagnosis: Diagnosis,
    pub fold: usize,
}

/// A `folds.tsv`, in the order read; [`Folds::write`] sorts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Folds(pub Vec<FoldRow>);

pub const FILE: &str = "folds.tsv";
pub const COLUMNS: [&str; 4] = ["participant_id", "session_id", "diagnosis", "fold"];

impl Folds {
    /// Reads a `folds.tsv`; a subject listed twice is an error naming both lines.
    pub fn read(path: &Path) -> Result<Folds> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        let mut rows = Vec::with_capacity(table.len());
        for row in table.rows() {
            let (participant_id, session_id) = dataset::unique_ids(&table, &row, &mut seen)?;
            rows.push(FoldRow {
                diagnosis: dataset::diagnosis(&row)?,
                fold: row.parse("fold")?,
                participant_id,
                session_id,
            });
        }
        Ok(Folds(rows))
    }

    /// Writes the rows sorted by participant_id then session_id.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut rows: Vec<&FoldRow> = self.0.iter().collect();
        rows.sort_by(|a, b| {
            (&a.participant_id, &a.session_id).cmp(&(&b.participant_id, &b.session_id))
        });
        let cells = rows.into_iter().map(|r| {
            vec![
                r.participant_id.clone(),
                r.session_id.clone(),
                r.diagnosis.as_str().to_string(),
                r.fold.to_string(),
            ]
        });
        tsv::write(path, &COLUMNS, cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let f = super::super::assert_round_trip("folds.tsv", Folds::read, |p, f| f.write(p));
        assert_eq!(f.0.len(), 4);
        assert_eq!(
            f.0[1],
            FoldRow {
                participant_id: "sub-OASIS10002".into(),
                session_id: "ses-M00".into(),
                diagnosis: Diagnosis::AD,
                fold: 1,
            }
        );
    }

    #[test]
    fn bad_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let head = COLUMNS.join("\t") + "\n";
        std::fs::write(&p, format!("{head}s-1\tses-M00\tAD\tone\n")).unwrap();
        let e = Folds::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("folds.tsv: line 2: column `fold` holds `one`"),
            "{e}"
        );
        std::fs::write(
            &p,
            format!("{head}s-1\tses-M00\tAD\t0\ns-1\tses-M00\tAD\t1\n"),
        )
        .unwrap();
        let e = Folds::read(&p).unwrap_err().to_string();
        assert!(e.contains("appears twice (lines 2 and 3)"), "{e}");
    }
}
