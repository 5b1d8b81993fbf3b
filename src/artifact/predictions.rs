//! `predictions.tsv` of an `evaluate` or `soft_vote` stage: one row per
//! subject, `participant_id true_label predicted_label proba0 proba1`
//! (labels 0 = CN, 1 = AD; proba0 + proba1 = 1).

use std::collections::HashSet;
use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// One subject's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub participant_id: String,
    pub true_label: i64,
    pub predicted_label: i64,
    /// P(CN).
    pub proba0: f64,
    /// P(AD).
    pub proba1: f64,
}

/// A `predictions.tsv`, in its rows' order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Predictions(pub Vec<Prediction>);

pub const FILE: &str = "predictions.tsv";
const COLUMNS: [&str; 5] = [
    "participant_id",
    "true_label",
    "predicted_label",
    "proba0",
    "proba1",
];

impl Predictions {
    /// Reads and checks a `predictions.tsv`: unique subjects, 0/1 labels,
    /// probabilities in [0, 1].
    pub fn read(path: &Path) -> Result<Predictions> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut rows = Vec::with_capacity(table.len());
        let mut seen = HashSet::new();
        for row in table.rows() {
            let id = row.get("participant_id");
            let bad = |what: String| row.error(format!("subject `{id}`: {what}"));
            if !seen.insert(id) {
                return Err(bad("listed twice; each subject must appear once".into()));
            }
            let true_label = row.label("true_label")?;
            let predicted_label = row.label("predicted_label")?;
            let (proba0, proba1) = (row.parse::<f64>("proba0")?, row.parse::<f64>("proba1")?);
            for (name, p) in [("proba0", proba0), ("proba1", proba1)] {
                if !(0.0..=1.0).contains(&p) {
                    return Err(bad(format!(
                        "{name} is {p}, expected a probability in [0, 1]"
                    )));
                }
            }
            rows.push(Prediction {
                participant_id: id.to_string(),
                true_label,
                predicted_label,
                proba0,
                proba1,
            });
        }
        Ok(Predictions(rows))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let rows = self.0.iter().map(|r| {
            vec![
                r.participant_id.clone(),
                r.true_label.to_string(),
                r.predicted_label.to_string(),
                r.proba0.to_string(),
                r.proba1.to_string(),
            ]
        });
        tsv::write(path, &COLUMNS, rows)
    }

    pub fn true_labels(&self) -> Vec<i64> {
        self.0.iter().map(|r| r.true_label).collect()
    }

    pub fn predicted_labels(&self) -> Vec<i64> {
        self.0.iter().map(|r| r.predicted_label).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let p = super::super::assert_round_trip("predictions.tsv", Predictions::read, |f, p| {
            p.write(f)
        });
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.0[0].proba1, 0.6094810534838264);
        assert_eq!(p.0[2].proba0, 0.0000032);
        assert_eq!(p.true_labels(), [1, 1, 0]);
        assert_eq!(p.predicted_labels(), [1, 0, 1]);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let head = "participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n";
        for (body, want) in [
            (
                "s1\t0\t0\t0.6\t1.4\n",
                "line 2: subject `s1`: proba1 is 1.4",
            ),
            (
                "s1\t0\t0\t0.6\t0.4\ns1\t0\t0\t0.6\t0.4\n",
                "line 3: subject `s1`: listed twice",
            ),
            ("s1\t2\t0\t0.6\t0.4\n", "true_label is `2`"),
        ] {
            std::fs::write(&p, format!("{head}{body}")).unwrap();
            let e = Predictions::read(&p).unwrap_err().to_string();
            assert!(e.contains("predictions.tsv") && e.contains(want), "{e}");
        }
        std::fs::write(&p, "participant_id\tproba1\ns1\t0.5\n").unwrap();
        let e = Predictions::read(&p).unwrap_err().to_string();
        assert!(e.contains("`true_label`"), "{e}");
    }
}
