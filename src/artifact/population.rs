//! `population.tsv` of a `demographics` stage: the lab's population tables
//! (its `characteristics_table`), one row per split and diagnosis,
//! `split diagnosis N age %sexF education MMS CDR=0 CDR=0.5 CDR=1 CDR=2`.
//!
//! Cells are written as the lab prints them: `age`, `education` and `MMS`
//! as `'%.1f ± %.1f'` of the mean and the population standard deviation
//! (`NaN ± NaN` for a group with no value), `%sexF` as Python prints
//! `round(x, 1)` in a pandas table (`63`, `62.2`), the CDR columns as counts
//! of subjects with `cdr_global` 0, 0.5, 1 and 2. `split` is `all`, `train`
//! or `validation`. So a value read back is the written one rounded to one
//! decimal.

use std::path::Path;

use super::dataset::Diagnosis;
use super::tsv::{self, Row, Table};
use super::Result;

/// One row of the lab's table: one diagnosis within one split.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationRow {
    /// `all`, `train` or `validation`.
    pub split: String,
    pub diagnosis: Diagnosis,
    pub n: usize,
    /// Mean and population standard deviation.
    pub age: (f64, f64),
    /// Percent of women.
    pub pct_female: f64,
    pub education: (f64, f64),
    pub mms: (f64, f64),
    /// Counts of cdr_global = 0, 0.5, 1, 2.
    pub cdr: [usize; 4],
}

/// A `population.tsv`, in its rows' order (all, train, validation).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Population(pub Vec<PopulationRow>);

pub const FILE: &str = "population.tsv";
pub const COLUMNS: [&str; 11] = [
    "split",
    "diagnosis",
    "N",
    "age",
    "%sexF",
    "education",
    "MMS",
    "CDR=0",
    "CDR=0.5",
    "CDR=1",
    "CDR=2",
];
const CDR: [&str; 4] = ["CDR=0", "CDR=0.5", "CDR=1", "CDR=2"];

impl PopulationRow {
    /// The row's cells after `split diagnosis` (columns `N` to `CDR=2`), as the lab prints them.
    pub fn cells(&self) -> Vec<String> {
        let mut c = vec![
            self.n.to_string(),
            mean_std(self.age),
            py_round1(self.pct_female),
            mean_std(self.education),
            mean_std(self.mms),
        ];
        c.extend(self.cdr.iter().map(|n| n.to_string()));
        c
    }
}

impl Population {
    /// Reads a `population.tsv`: every column, known diagnoses, `m ± s` cells.
    pub fn read(path: &Path) -> Result<Population> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut rows = Vec::with_capacity(table.len());
        for row in table.rows() {
            let diagnosis = Diagnosis::parse(row.get("diagnosis")).ok_or_else(|| {
                row.error(format!(
                    "diagnosis is `{}`, expected AD or CN",
                    row.get("diagnosis")
                ))
            })?;
            let mut cdr = [0usize; 4];
            for (slot, name) in cdr.iter_mut().zip(CDR) {
                *slot = row.parse(name)?;
            }
            rows.push(PopulationRow {
                split: row.get("split").to_string(),
                diagnosis,
                n: row.parse("N")?,
                age: parse_mean_std(&row, "age")?,
                pct_female: row.parse("%sexF")?,
                education: parse_mean_std(&row, "education")?,
                mms: parse_mean_std(&row, "MMS")?,
                cdr,
            });
        }
        Ok(Population(rows))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let rows = self.0.iter().map(|r| {
            let mut cells = vec![r.split.clone(), r.diagnosis.as_str().to_string()];
            cells.extend(r.cells());
            cells
        });
        tsv::write(path, &COLUMNS, rows)
    }

    /// The splits in file order (all, train, validation), each once.
    pub fn splits(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.0 {
            if !out.contains(&r.split.as_str()) {
                out.push(&r.split);
            }
        }
        out
    }
}

/// `'%.1f ± %.1f'`.
fn mean_std((m, s): (f64, f64)) -> String {
    format!("{m:.1} ± {s:.1}")
}

fn parse_mean_std(row: &Row, name: &str) -> Result<(f64, f64)> {
    let cell = row.get(name);
    let parsed = cell
        .split_once(" ± ")
        .and_then(|(m, s)| Some((m.trim().parse().ok()?, s.trim().parse().ok()?)));
    parsed.ok_or_else(|| {
        row.error(format!(
            "column `{name}` holds `{cell}`, expected `mean ± std`"
        ))
    })
}

/// `round(x, 1)` as a pandas table prints it: `63` for 63.0, `62.2` otherwise.
pub fn py_round1(x: f64) -> String {
    let s = format!("{x:.1}");
    match s.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let p =
            super::super::assert_round_trip("population.tsv", Population::read, |f, p| p.write(f));
        assert_eq!(p.0.len(), 6);
        assert_eq!(p.splits(), ["all", "train", "validation"]);
        assert_eq!(
            p.0[0],
            PopulationRow {
                split: "all".into(),
                diagnosis: Diagnosis::AD,
                n: 73,
                age: (77.5, 7.4),
                pct_female: 63.0,
                education: (2.7, 1.3),
                mms: (22.7, 3.6),
                cdr: [0, 45, 26, 2],
            }
        );
        assert_eq!(p.0[1].pct_female, 62.2);
        assert_eq!(p.0[5].diagnosis, Diagnosis::CN);
        assert_eq!(p.0[5].cdr, [27, 0, 0, 0]);
    }

    #[test]
    fn rounds_as_the_lab_prints() {
        assert_eq!(py_round1(63.0), "63");
        assert_eq!(py_round1(62.2368), "62.2");
        assert_eq!(mean_std((f64::NAN, f64::NAN)), "NaN ± NaN");
    }

    #[test]
    fn bad_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let head = COLUMNS.join("\t") + "\n";
        for (body, want) in [
            (
                "all\tMCI\t1\t1.0 ± 0.0\t0\t1.0 ± 0.0\t1.0 ± 0.0\t0\t0\t0\t0\n",
                "line 2: diagnosis is `MCI`",
            ),
            (
                "all\tAD\t1\t1.0\t0\t1.0 ± 0.0\t1.0 ± 0.0\t0\t0\t0\t0\n",
                "line 2: column `age` holds `1.0`, expected `mean ± std`",
            ),
        ] {
            std::fs::write(&p, format!("{head}{body}")).unwrap();
            let e = Population::read(&p).unwrap_err().to_string();
            assert!(e.contains("population.tsv") && e.contains(want), "{e}");
        }
        std::fs::write(&p, "split\tdiagnosis\nall\tAD\n").unwrap();
        let e = Population::read(&p).unwrap_err().to_string();
        assert!(e.contains("`N`"), "{e}");
    }
}
