//! `demographics`: the lab's population tables (its `characteristics_table`)
//! for all subjects, train and validation, and the bias checks the lab asks
//! the reader to make by eye, as tests with p-values.
//!
//! Artifact (written through `artifact::population` and `artifact::checks`):
//! - `population.tsv`: `split diagnosis N age %sexF education MMS CDR=0 CDR=0.5 CDR=1 CDR=2`,
//!   cells printed as the lab prints them: `'%.1f ± %.1f'` of the mean and the
//!   population standard deviation (pandas' NaN-skipping `np.mean`/`np.std`),
//!   `%sexF` as Python prints `round(x * 100, 1)` in a pandas table (`63`,
//!   `62.2`), CDR columns counting `cdr_global == value`. As in the lab, the
//!   train and validation rows look their subjects up in `OASIS_BIDS.tsv`
//!   but group them by the split table's own diagnosis.
//! - `checks.tsv`: `check group test statistic p_value detail`: AD vs CN age
//!   (Welch's t), and per class train vs validation age and MMS (Welch's t)
//!   and sex (Fisher's exact test), plus the class mix of the two splits
//!   (the tests are `crate::stats::balance`'s).

use serde::Deserialize;

use super::{Metrics, OpCtx, OpError};
use crate::artifact::checks::{self, Check, Checks};
use crate::artifact::dataset::{Dataset, Diagnosis, Subject};
use crate::artifact::population::{self, Population, PopulationRow};
use crate::stats::balance::{fisher_exact, welch_t};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemographicsParams {
    /// Significance level used for the words in `checks.tsv`'s `detail`.
    #[serde(default = "d_alpha")]
    pub alpha: f64,
}

fn d_alpha() -> f64 {
    0.05
}

/// Mean and population standard deviation, skipping NaN (pandas' `np.mean`/`np.std`).
pub fn nan_mean_std(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The lab's `characteristics_table` for one group of (subject, diagnosis).
fn table(split: &str, members: &[(&Subject, Diagnosis)]) -> Vec<PopulationRow> {
    let mut rows = Vec::new();
    for d in Diagnosis::ALL {
        let group: Vec<&Subject> = members.iter().filter(|m| m.1 == d).map(|m| m.0).collect();
        if group.is_empty() {
            continue; // np.unique(df.diagnosis) only lists present classes
        }
        let females = group.iter().filter(|s| s.sex == "F").count();
        let mut cdr = [0usize; 4];
        for (slot, value) in cdr.iter_mut().zip([0.0, 0.5, 1.0, 2.0]) {
            *slot = group.iter().filter(|s| s.cdr_global == value).count();
        }
        rows.push(PopulationRow {
            split: split.to_string(),
            diagnosis: d,
            n: group.len(),
            age: nan_mean_std(group.iter().map(|s| s.age)),
            pct_female: females as f64 / group.len() as f64 * 100.0,
            education: nan_mean_std(group.iter().map(|s| s.education_level)),
            mms: nan_mean_std(group.iter().map(|s| s.mms)),
            cdr,
        });
    }
    rows
}

/// The lab's three tables: all subjects, train, validation.
pub fn population_rows(ds: &Dataset) -> Result<Vec<PopulationRow>, OpError> {
    let all: Vec<(&Subject, Diagnosis)> = ds.subjects.iter().map(|s| (s, s.diagnosis)).collect();
    let mut rows = table("all", &all);
    for (name, split) in [("train", &ds.train), ("validation", &ds.validation)] {
        let members = split
            .iter()
            .map(|r| ds.subject(r).map(|s| (s, r.diagnosis)))
            .collect::<Result<Vec<_>, _>>()?;
        rows.extend(table(name, &members));
    }
    Ok(rows)
}

fn verdict(p: f64, alpha: f64, differ: &str, same: &str) -> String {
    if p.is_nan() {
        "not testable (fewer than two subjects on a side)".to_string()
    } else if p < alpha {
        format!("{differ} (p < {alpha})")
    } else {
        format!("{same} (p >= {alpha})")
    }
}

/// The checks the lab asks for: age confound and train/validation balance.
pub fn bias_checks(ds: &Dataset, alpha: f64) -> Result<Vec<Check>, OpError> {
    let mut out = Vec::new();
    let ages = |d: Diagnosis| {
        ds.subjects
            .iter()
            .filter(|s| s.diagnosis == d)
            .map(|s| s.age)
            .collect::<Vec<_>>()
    };
    let (ad, cn) = (ages(Diagnosis::AD), ages(Diagnosis::CN));
    let (t, p) = welch_t(&ad, &cn);
    let (mad, mcn) = (
        nan_mean_std(ad.iter().copied()).0,
        nan_mean_std(cn.iter().copied()).0,
    );
    out.push(Check {
        check: "age AD vs CN".into(),
        group: "all".into(),
        test: "welch_t".into(),
        statistic: t,
        p_value: p,
        detail: format!(
            "AD {mad:.1} vs CN {mcn:.1} years: {}",
            verdict(p, alpha, "the classes differ in age, a classifier may learn age instead of disease; check the >= 62 subgroup", "no age difference detected")
        ),
    });
    let members = |rows: &[crate::artifact::dataset::SplitRow],
                   d: Diagnosis|
     -> Result<Vec<&Subject>, OpError> {
        rows.iter()
            .filter(|r| r.diagnosis == d)
            .map(|r| ds.subject(r).map_err(OpError::from))
            .collect()
    };
    for d in Diagnosis::ALL {
        let (tr, va) = (members(&ds.train, d)?, members(&ds.validation, d)?);
        for (name, f) in [
            ("age", (|s: &Subject| s.age) as fn(&Subject) -> f64),
            ("MMS", |s: &Subject| s.mms),
        ] {
            let (a, b): (Vec<f64>, Vec<f64>) = (
                tr.iter().map(|s| f(s)).collect(),
                va.iter().map(|s| f(s)).collect(),
            );
            let (t, p) = welch_t(&a, &b);
            out.push(Check {
                check: format!("{name} train vs validation"),
                group: d.as_str().into(),
                test: "welch_t".into(),
                statistic: t,
                p_value: p,
                detail: format!(
                    "train {:.1} vs validation {:.1}: {}",
                    nan_mean_std(a.iter().copied()).0,
                    nan_mean_std(b.iter().copied()).0,
                    verdict(p, alpha, "unbalanced", "balanced")
                ),
            });
        }
        let f = |v: &[&Subject]| v.iter().filter(|s| s.sex == "F").count() as u64;
        let (tf, vf) = (f(&tr), f(&va));
        let (odds, p) = fisher_exact(tf, tr.len() as u64 - tf, vf, va.len() as u64 - vf);
        out.push(Check {
            check: "sex train vs validation".into(),
            group: d.as_str().into(),
            test: "fisher_exact".into(),
            statistic: odds,
            p_value: p,
            detail: format!(
                "women: train {tf}/{} vs validation {vf}/{}: {}",
                tr.len(),
                va.len(),
                verdict(p, alpha, "unbalanced", "balanced")
            ),
        });
    }
    let count = |rows: &[crate::artifact::dataset::SplitRow], d: Diagnosis| {
        rows.iter().filter(|r| r.diagnosis == d).count() as u64
    };
    let (tad, tcn, vad, vcn) = (
        count(&ds.train, Diagnosis::AD),
        count(&ds.train, Diagnosis::CN),
        count(&ds.validation, Diagnosis::AD),
        count(&ds.validation, Diagnosis::CN),
    );
    let (odds, p) = fisher_exact(tad, tcn, vad, vcn);
    out.push(Check {
        check: "diagnosis train vs validation".into(),
        group: "all".into(),
        test: "fisher_exact".into(),
        statistic: odds,
        p_value: p,
        detail: format!(
            "AD/CN: train {tad}/{tcn} vs validation {vad}/{vcn}: {}",
            verdict(p, alpha, "unbalanced", "balanced")
        ),
    });
    Ok(out)
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: DemographicsParams = ctx.params()?;
    if !(p.alpha > 0.0 && p.alpha < 1.0) {
        return Err(OpError::Params(format!(
            "demographics: `alpha` must lie in (0, 1), got {}",
            p.alpha
        )));
    }
    let ds = Dataset::open(&ctx.input_by_any_op(&["fetch", "synth"])?.dir)?;
    let rows = population_rows(&ds)?;
    let checks = bias_checks(&ds, p.alpha)?;
    let mut m = Metrics::new();
    for r in &rows {
        let key = format!("{}_{}", r.split, r.diagnosis.as_str());
        m.insert(format!("{key}_n"), r.n.into());
        m.insert(
            format!("{key}_age"),
            format!("{:.1} ± {:.1}", r.age.0, r.age.1).into(),
        );
    }
    for c in &checks {
        let key = format!("p_{}_{}", c.check.replace(' ', "_"), c.group);
        m.insert(
            key,
            serde_json::Number::from_f64(c.p_value).map_or(serde_json::Value::Null, Into::into),
        );
    }
    Population(rows).write(&ctx.out.join(population::FILE))?;
    Checks(checks).write(&ctx.out.join(checks::FILE))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Input;
    use super::*;
    use crate::artifact::dataset::real_tables_dataset;

    /// The seed's three printed tables, copied verbatim (lab section 0 and 1).
    const SEED_TABLES: &str = "\
all AD 73 77.5 ± 7.4 63 2.7 ± 1.3 22.7 ± 3.6 0 45 26 2
all CN 304 44.0 ± 23.3 62.2 3.5 ± 1.2 29.7 ± 0.6 124 0 0 0
train AD 58 77.4 ± 7.5 69 2.8 ± 1.4 22.6 ± 3.6 0 37 19 2
train CN 242 43.4 ± 23.5 62 3.6 ± 1.2 29.8 ± 0.5 97 0 0 0
validation AD 15 78.2 ± 6.6 40 2.5 ± 1.0 22.9 ± 3.6 0 8 7 0
validation CN 62 46.3 ± 22.6 62.9 3.4 ± 1.3 29.6 ± 0.7 27 0 0 0
";

    fn run_on(dir: &Path, out: &Path) -> Metrics {
        let inputs = [Input {
            stage: "dataset".into(),
            op: Some("fetch".into()),
            dir: dir.to_path_buf(),
            content: None,
        }];
        let params = Metrics::new();
        let ctx = OpCtx {
            stage: "demographics",
            params: &params,
            inputs: &inputs,
            out,
            threads: 1,
            scratch: None,
        };
        run(&ctx).unwrap()
    }

    #[test]
    fn reproduces_the_seed_tables_on_the_real_tsvs() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = real_tables_dataset(&tmp.path().join("ds"));
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let m = run_on(&ds, &out);
        let got = std::fs::read_to_string(out.join("population.tsv")).unwrap();
        let mut lines = got.lines();
        assert_eq!(
            lines.next().unwrap().replace('\t', " "),
            "split diagnosis N age %sexF education MMS CDR=0 CDR=0.5 CDR=1 CDR=2"
        );
        // The seed prints cells separated by spaces; `± ` sits inside a cell.
        let body: String = lines.map(|l| l.replace('\t', " ") + "\n").collect();
        assert_eq!(body, SEED_TABLES);
        assert_eq!(m["train_AD_n"], 58);
        let checks = std::fs::read_to_string(out.join("checks.tsv")).unwrap();
        let age = checks
            .lines()
            .find(|l| l.starts_with("age AD vs CN"))
            .unwrap();
        assert!(age.contains("the classes differ in age"), "{age}");
        // The lab's split was made to balance age, sex and MMS per class.
        for l in checks.lines().filter(|l| l.contains("train vs validation")) {
            assert!(
                l.ends_with("balanced (p >= 0.05)") || l.contains(" balanced (p >= 0.05)"),
                "{l}"
            );
        }
    }

    #[test]
    fn welch_and_fisher_match_reference_values() {
        // By hand: t = -4 / sqrt(2.5/5 + 14/6), Welch df = 6.9723; p from numeric
        // integration of the t density (what scipy's ttest_ind(equal_var=False) gives).
        let (t, p) = welch_t(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        );
        assert!((t + 2.376354).abs() < 1e-5, "{t}");
        assert!((p - 0.049284).abs() < 1e-5, "{p}");
        // scipy.stats.fisher_exact([[8, 2], [1, 5]]) -> (20.0, 0.03496503...)
        let (odds, p) = fisher_exact(8, 2, 1, 5);
        assert_eq!(odds, 20.0);
        assert!((p - 0.034965).abs() < 1e-5, "{p}");
        let (m, s) = nan_mean_std([1.0, f64::NAN, 3.0].into_iter());
        assert_eq!((m, s), (2.0, 1.0));
    }
}
