//! `checks.tsv` of a `demographics` stage: the bias checks the lab asks the
//! reader to make by eye, as tests with p-values, one per row,
//! `check group test statistic p_value detail`.
//!
//! `statistic` and `p_value` are written with six decimals (`NaN` when the
//! test could not be made, `inf` for an unbounded statistic), so a value
//! read back is the written one rounded to six decimals. `detail` is free
//! text for people (no tab or line break).

use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// One bias check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is compared (`age AD vs CN`, `sex train vs validation`).
    pub check: String,
    /// The subjects it is made on (`all`, `AD`, `CN`).
    pub group: String,
    /// The test (`welch_t`, `fisher_exact`).
    pub test: String,
    /// The test's statistic (t, or the odds ratio).
    pub statistic: f64,
    pub p_value: f64,
    /// The result in words.
    pub detail: String,
}

/// A `checks.tsv`, in its rows' order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checks(pub Vec<Check>);

pub const FILE: &str = "checks.tsv";
pub const COLUMNS: [&str; 6] = ["check", "group", "test", "statistic", "p_value", "detail"];

impl Check {
    /// The row's cells, as they are written.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.check.clone(),
            self.group.clone(),
            self.test.clone(),
            number(self.statistic),
            number(self.p_value),
            self.detail.clone(),
        ]
    }
}

impl Checks {
    /// Reads a `checks.tsv`: every column, numeric statistic and p-value.
    pub fn read(path: &Path) -> Result<Checks> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut rows = Vec::with_capacity(table.len());
        for row in table.rows() {
            rows.push(Check {
                check: row.get("check").to_string(),
                group: row.get("group").to_string(),
                test: row.get("test").to_string(),
                statistic: row.parse("statistic")?,
                p_value: row.parse("p_value")?,
                detail: row.get("detail").to_string(),
            });
        }
        Ok(Checks(rows))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        tsv::write(path, &COLUMNS, self.0.iter().map(Check::cells))
    }
}

/// Six decimals, `NaN` for NaN.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:.6}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let c = super::super::assert_round_trip("checks.tsv", Checks::read, |f, c| c.write(f));
        assert_eq!(c.0.len(), 4);
        assert_eq!(
            c.0[0],
            Check {
                check: "age AD vs CN".into(),
                group: "all".into(),
                test: "welch_t".into(),
                statistic: 17.245981,
                p_value: 0.0,
                detail: "AD 77.5 vs CN 44.0 years: the classes differ in age (p < 0.05)".into(),
            }
        );
        assert!(c.0[1].statistic.is_nan() && c.0[1].p_value.is_nan());
        assert_eq!(c.0[2].statistic, f64::INFINITY);
        assert_eq!(c.0[3].p_value, 0.806452);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        let head = COLUMNS.join("\t") + "\n";
        std::fs::write(&p, format!("{head}age\tall\twelch_t\tx\t0.5\td\n")).unwrap();
        let e = Checks::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("checks.tsv: line 2: column `statistic` holds `x`"),
            "{e}"
        );
        std::fs::write(&p, "check\tgroup\nage\tall\n").unwrap();
        let e = Checks::read(&p).unwrap_err().to_string();
        assert!(e.contains("`p_value`"), "{e}");
    }
}
