//! `subjects.tsv` of an `age_filter` stage: the subjects of one split it
//! kept (`participant_id session_id diagnosis age`), in the split's order.

use std::collections::HashSet;
use std::path::Path;

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
}
