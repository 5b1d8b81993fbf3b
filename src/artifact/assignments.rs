//! `assignments.tsv` of a `gmm` stage: each subject's cluster,
//! `participant_id label cluster proba_0 … proba_(k-1) [age MMS]` (age and
//! MMS when the stage had the dataset; an empty cell where the dataset has none).

use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// One subject's cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub participant_id: String,
    /// 0 = CN, 1 = AD.
    pub label: i64,
    /// The most probable component.
    pub cluster: usize,
    /// The posterior of each component.
    pub proba: Vec<f64>,
    /// Age (years), NaN when unknown; only with [`Assignments::demographics`].
    pub age: f64,
    /// MMS, NaN when unknown; only with [`Assignments::demographics`].
    pub mms: f64,
}

/// A `gmm` stage's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignments {
    /// Mixture components (the `proba_*` columns).
    pub components: usize,
    /// Whether the table has the `age` and `MMS` columns.
    pub demographics: bool,
    pub rows: Vec<Assignment>,
}

pub const FILE: &str = "assignments.tsv";

impl Assignments {
    pub fn read(path: &Path) -> Result<Assignments> {
        let table = Table::read_with(path, &["participant_id", "label", "cluster"])?;
        let components = (0..)
            .take_while(|c| table.column(&format!("proba_{c}")).is_some())
            .count();
        let demographics = table.column("age").is_some() && table.column("MMS").is_some();
        let mut rows = Vec::with_capacity(table.len());
        for row in table.rows() {
            let cluster: usize = row.parse("cluster")?;
            if cluster >= components.max(1) {
                return Err(row.error(format!(
                    "cluster {cluster} but the table has {components} proba_* columns"
                )));
            }
            let proba = (0..components)
                .map(|c| row.parse::<f64>(&format!("proba_{c}")))
                .collect::<Result<Vec<_>>>()?;
            let (age, mms) = if demographics {
                (row.number_or_nan("age")?, row.number_or_nan("MMS")?)
            } else {
                (f64::NAN, f64::NAN)
            };
            rows.push(Assignment {
                participant_id: row.get("participant_id").to_string(),
                label: row.label("label")?,
                cluster,
                proba,
                age,
                mms,
            });
        }
        Ok(Assignments {
            components,
            demographics,
            rows,
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut header = vec![
            "participant_id".to_string(),
            "label".into(),
            "cluster".into(),
        ];
        header.extend((0..self.components).map(|c| format!("proba_{c}")));
        if self.demographics {
            header.extend(["age".to_string(), "MMS".into()]);
        }
        let cell = |v: f64| {
            if v.is_finite() {
                v.to_string()
            } else {
                String::new()
            }
        };
        let rows = self.rows.iter().map(|a| {
            let mut cells = vec![
                a.participant_id.clone(),
                a.label.to_string(),
                a.cluster.to_string(),
            ];
            cells.extend(a.proba.iter().map(f64::to_string));
            if self.demographics {
                cells.extend([cell(a.age), cell(a.mms)]);
            }
            cells
        });
        tsv::write(path, &header, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_with_and_without_demographics() {
        let a = super::super::assert_round_trip(
            "assignments/with_demographics.tsv",
            Assignments::read,
            |p, a| a.write(p),
        );
        assert_eq!((a.components, a.demographics), (2, true));
        assert_eq!(a.rows[1].cluster, 1);
        assert_eq!(a.rows[1].proba, [0.0012, 0.9988]);
        assert_eq!((a.rows[0].age, a.rows[0].mms), (81.0, 22.0));
        assert!(a.rows[2].mms.is_nan());
        let a = super::super::assert_round_trip(
            "assignments/codes_only.tsv",
            Assignments::read,
            |p, a| a.write(p),
        );
        assert_eq!((a.components, a.demographics), (3, false));
    }

    #[test]
    fn cluster_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        std::fs::write(&p, "participant_id\tlabel\tcluster\tproba_0\ns1\t0\t1\t1\n").unwrap();
        let e = Assignments::read(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: cluster 1"), "{e}");
    }
}
