//! `checks.tsv` of a `split` or `kfold` stage: the balance tests between
//! the two parts it made, one row per diagnosis and variable:
//! `compared group variable test statistic p_value threshold draws`.
//!
//! - `compared`: the parts (`train vs test`, `train vs validation`);
//! - `group`: the diagnosis the test is made within (AD, CN);
//! - `variable` (`age`, `sex`, `MMS`) and `test` (`welch_t`, `chi2`,
//!   `fisher_exact`), with its statistic (t of train minus the other part,
//!   chi-square, or the odds ratio) and two-sided p-value, written in Rust's
//!   shortest round-trip form (`NaN` when not testable, `inf` unbounded), so
//!   a value read back is the value tested;
//! - `threshold`: the p-value every test had to reach (`p_threshold`),
//!   empty when the stage only reports;
//! - `draws`: how many random draws of this group it took to pass.
//!
//! (`demographics` writes a `checks.tsv` of its own shape,
//! [`super::checks::Checks`]; the two never share a stage.)

use std::path::Path;

use super::tsv::{self, Table};
use super::Result;

/// One balance test.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceCheck {
    pub compared: String,
    pub group: String,
    pub variable: String,
    pub test: String,
    pub statistic: f64,
    pub p_value: f64,
    pub threshold: Option<f64>,
    pub draws: u64,
}

impl BalanceCheck {
    /// Whether the test reached its threshold (true when there is none).
    pub fn passed(&self) -> bool {
        self.threshold.is_none_or(|t| self.p_value >= t)
    }
}

/// A balance `checks.tsv`, in its rows' order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalanceChecks(pub Vec<BalanceCheck>);

pub const FILE: &str = "checks.tsv";
pub const COLUMNS: [&str; 8] = [
    "compared",
    "group",
    "variable",
    "test",
    "statistic",
    "p_value",
    "threshold",
    "draws",
];

impl BalanceChecks {
    pub fn read(path: &Path) -> Result<BalanceChecks> {
        let table = Table::read_with(path, &COLUMNS)?;
        let mut rows = Vec::with_capacity(table.len());
        for row in table.rows() {
            let threshold = row.number_or_nan("threshold")?;
            rows.push(BalanceCheck {
                compared: row.get("compared").to_string(),
                group: row.get("group").to_string(),
                variable: row.get("variable").to_string(),
                test: row.get("test").to_string(),
                statistic: row.parse("statistic")?,
                p_value: row.parse("p_value")?,
                threshold: (!threshold.is_nan()).then_some(threshold),
                draws: row.parse("draws")?,
            });
        }
        Ok(BalanceChecks(rows))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let cells = self.0.iter().map(|c| {
            vec![
                c.compared.clone(),
                c.group.clone(),
                c.variable.clone(),
                c.test.clone(),
                c.statistic.to_string(),
                c.p_value.to_string(),
                c.threshold.map_or(String::new(), |t| t.to_string()),
                c.draws.to_string(),
            ]
        });
        tsv::write(path, &COLUMNS, cells)
    }

    /// The smallest p-value (NaN counts as smallest: it passes nothing).
    pub fn min_p(&self) -> f64 {
        self.0
            .iter()
            .map(|c| c.p_value)
            .fold(f64::INFINITY, |m, p| {
                if p.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.min(p)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let c =
            super::super::assert_round_trip("balance_checks.tsv", BalanceChecks::read, |p, c| {
                c.write(p)
            });
        assert_eq!(c.0.len(), 4);
        assert_eq!(
            c.0[0],
            BalanceCheck {
                compared: "train vs test".into(),
                group: "AD".into(),
                variable: "age".into(),
                test: "welch_t".into(),
                statistic: -0.1234567890123,
                p_value: 0.9031181589571297,
                threshold: Some(0.8),
                draws: 3,
            }
        );
        assert!(c.0.iter().take(2).all(BalanceCheck::passed));
        assert_eq!(c.0[1].statistic, f64::INFINITY);
        assert!(c.0[2].threshold.is_none() && c.0[2].passed());
        assert!(c.0[3].p_value.is_nan() && !c.0[3].passed());
        assert!(c.min_p().is_nan());
        assert_eq!(BalanceChecks(c.0[..2].to_vec()).min_p(), 0.85);
    }
}
