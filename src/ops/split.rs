//! `split`: a balanced train/test split, the lab's and ClinicaDL's
//! (`clinicadl tsvtools split`): per diagnosis, a random test part of
//! `n_test` subjects (or `test_fraction` of them, rounded down as ClinicaDL
//! does), drawn again until every balance test between the train and test
//! parts of that diagnosis reaches `p_threshold` (ClinicaDL: 0.80): age
//! (Welch's t), sex (chi-square, or Fisher's exact test when an expected
//! count is below 5) and MMS (Welch's t; only when the table has MMS
//! scores). Where ClinicaDL uses Student's t and a chi-square of proportions,
//! these are the tests that hold for unequal variances and small counts.
//!
//! Input: a dataset (`fetch`/`synth`: every subject of `OASIS_BIDS.tsv`, its
//! `diagnosis`, `age_bl`, `sex` and `MMS`), or any upstream whose artifact
//! holds a `participants.tsv` (see [`crate::artifact::subjects`]).
//!
//! Artifact: `train.tsv`, `test.tsv` (subject lists), `checks.tsv` (each
//! test, its statistic, p-value, threshold and the draws its diagnosis
//! needed); metrics: sizes, `draws` (all diagnoses), `min_p`.
//!
//! No draw passing within `max_draws` is an error with the best p-values
//! reached; nothing is written.

use serde::Deserialize;

use super::draws::{self, Rng, DEFAULT_MAX_DRAWS, DEFAULT_P_THRESHOLD};
use super::{Metrics, OpCtx, OpError};
use crate::artifact::balance::{self, BalanceChecks};
use crate::artifact::dataset::{Dataset, Diagnosis};
use crate::artifact::subjects::{ListedSubject, SubjectList, PARTICIPANTS_FILE};

fn d_p_threshold() -> f64 {
    DEFAULT_P_THRESHOLD
}
fn d_max_draws() -> u64 {
    DEFAULT_MAX_DRAWS
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    /// Share of each diagnosis that goes to test, in (0, 1); or `n_test`.
    #[serde(default)]
    pub test_fraction: Option<f64>,
    /// Test subjects per diagnosis; or `test_fraction`.
    #[serde(default)]
    pub n_test: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Every balance test's p-value must reach this (ClinicaDL: 0.80).
    #[serde(default = "d_p_threshold")]
    pub p_threshold: f64,
    /// Draws of one diagnosis tried before giving up.
    #[serde(default = "d_max_draws")]
    pub max_draws: u64,
}

impl SplitParams {
    /// Range checks serde cannot express; run at pipeline load time too.
    pub fn check(&self) -> Result<(), String> {
        match (self.test_fraction, self.n_test) {
            (None, None) => {
                return Err(
                    "give `test_fraction` (e.g. 0.2) or `n_test` (test subjects per \
                            diagnosis), one of them"
                        .into(),
                )
            }
            (Some(_), Some(_)) => {
                return Err("give `test_fraction` or `n_test`, not both".into());
            }
            (Some(f), None) if !(f > 0.0 && f < 1.0) => {
                return Err(format!(
                    "`test_fraction` is {f}; it must lie strictly between 0 and 1 (e.g. 0.2)"
                ));
            }
            (None, Some(0)) => {
                return Err("`n_test` is 0; ask for at least 2 test subjects per diagnosis".into())
            }
            _ => {}
        }
        check_threshold(self.p_threshold)?;
        if self.max_draws == 0 {
            return Err(format!(
                "`max_draws` is 0; allow at least one draw (default {DEFAULT_MAX_DRAWS})"
            ));
        }
        Ok(())
    }

    /// Test subjects for a diagnosis of `n` subjects.
    fn n_test(&self, n: usize) -> usize {
        match (self.n_test, self.test_fraction) {
            (Some(k), _) => k,
            // ClinicaDL: int(n_test * len(diagnosis_df)), rounded down.
            (None, Some(f)) => (f * n as f64).floor() as usize,
            (None, None) => 0,
        }
    }
}

/// A p-value threshold must be a number in [0, 1): a p-value of 1 needs two
/// identical parts, so `1` could only pass by luck.
pub fn check_threshold(p: f64) -> Result<(), String> {
    if p.is_finite() && (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!(
            "`p_threshold` is {p}; it must lie in [0, 1) (ClinicaDL uses {DEFAULT_P_THRESHOLD}; \
             p = 1 would need two identical parts)"
        ))
    }
}

pub fn check_params(params: &super::Params) -> Result<(), String> {
    super::parse_params::<SplitParams>(params)?.check()
}

/// Where the subjects come from: a dataset's `OASIS_BIDS.tsv` or a `participants.tsv`.
fn participants(ctx: &OpCtx) -> Result<(String, SubjectList), OpError> {
    let (input, (what, list)) = draws::one_source(
        ctx,
        "a dataset (`fetch` or `synth`) or an artifact with a `participants.tsv`",
        |input| {
            if draws::is_dataset(&input.dir) {
                let ds = Dataset::open(&input.dir)?;
                let list = ds
                    .subjects
                    .iter()
                    .map(|s| draws::listed(s, s.diagnosis))
                    .collect();
                return Ok(Some(("OASIS_BIDS.tsv", SubjectList(list))));
            }
            let path = input.dir.join(PARTICIPANTS_FILE);
            if path.is_file() {
                return Ok(Some((
                    PARTICIPANTS_FILE,
                    SubjectList::read_participants(&path)?,
                )));
            }
            Ok(None)
        },
    )?;
    Ok((format!("`{what}` of `{}`", input.stage), list))
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: SplitParams = ctx.params()?;
    p.check()
        .map_err(|e| OpError::Params(format!("split: {e}")))?;
    let (what, pool) = participants(ctx)?;
    draws::check_subjects(&what, &pool.0)?;
    let with_mms = draws::has_mms(&pool.0);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let mut checks = BalanceChecks::default();
    let mut m = Metrics::new();
    let mut total_draws = 0;
    // Sizes first, for every diagnosis, so the error names the real problem.
    for d in Diagnosis::ALL {
        let n = pool.count(d);
        if n < 4 {
            return Err(OpError::Msg(format!(
                "{what} has {n} {} subject(s); a stratified split with balance \
                 tests needs at least 4 of every diagnosis (2 per part)",
                d.as_str()
            )));
        }
        let k = p.n_test(n);
        if k < 2 || k > n - 2 {
            let by = match p.n_test {
                Some(_) => format!("`n_test` = {k}"),
                None => format!(
                    "`test_fraction` = {} gives {k}",
                    p.test_fraction.unwrap_or(f64::NAN)
                ),
            };
            return Err(OpError::Msg(format!(
                "{by} test subjects out of {n} {}; each part needs at least 2 of \
                 every diagnosis for the balance tests, so ask for 2 to {} per diagnosis \
                 (`n_test`, or a `test_fraction` giving that)",
                d.as_str(),
                n - 2
            )));
        }
    }
    for d in Diagnosis::ALL {
        let members = draws::of_class(&pool.0, d);
        let n = members.len();
        let k = p.n_test(n);
        let mut rng = Rng::new("split", p.seed, d);
        let mut order: Vec<usize> = (0..n).collect();
        let drawn = draws::redraw(p.max_draws, p.p_threshold, || {
            order.sort_unstable();
            rng.choose_front(&mut order, k);
            let (te, tr) = order.split_at(k);
            let part = |idx: &[usize]| idx.iter().map(|&i| members[i]).collect::<Vec<_>>();
            let (tr, te) = (part(tr), part(te));
            let tests = draws::balance_tests(&tr, &te, with_mms);
            ((tr, te), tests)
        })
        .map_err(|best| {
            OpError::Msg(format!(
                "no draw of the {n} {} subjects ({k} to test) passed every balance \
                 test at p >= {} within {} draws (seed {}); the best draw reached {}. Lower \
                 `p_threshold` or raise `max_draws`",
                d.as_str(),
                p.p_threshold,
                p.max_draws,
                p.seed,
                draws::describe(&best)
            ))
        })?;
        let (tr, te) = drawn.value;
        checks.0.extend(draws::check_rows(
            "train vs test",
            d,
            &drawn.tests,
            Some(p.p_threshold),
            drawn.draws,
        ));
        total_draws += drawn.draws;
        m.insert(format!("n_train_{}", d.as_str()), tr.len().into());
        m.insert(format!("n_test_{}", d.as_str()), te.len().into());
        m.insert(format!("draws_{}", d.as_str()), drawn.draws.into());
        train.extend(tr.into_iter().cloned());
        test.extend(te.into_iter().cloned());
    }
    write(ctx, &train, &test, &checks)?;
    m.insert("n_train".into(), train.len().into());
    m.insert("n_test".into(), test.len().into());
    m.insert("draws".into(), total_draws.into());
    m.insert("min_p".into(), draws::json_number(checks.min_p()));
    m.insert("p_threshold".into(), draws::json_number(p.p_threshold));
    Ok(m)
}

fn write(
    ctx: &OpCtx,
    train: &[ListedSubject],
    test: &[ListedSubject],
    checks: &BalanceChecks,
) -> Result<(), OpError> {
    SubjectList(train.to_vec()).write(&ctx.out.join("train.tsv"))?;
    SubjectList(test.to_vec()).write(&ctx.out.join("test.tsv"))?;
    checks.write(&ctx.out.join(balance::FILE))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::super::{Input, Params};
    use super::*;
    use crate::artifact::balance::BalanceChecks;
    use crate::artifact::dataset::real_tables_dataset;

    /// Runs op `run` with JSON params on one upstream folder made by `op`.
    pub(crate) fn run_op(
        run: fn(&OpCtx) -> Result<Metrics, OpError>,
        params: &str,
        upstream: &Path,
        op: Option<&str>,
        out: &Path,
    ) -> Result<Metrics, OpError> {
        std::fs::create_dir_all(out).unwrap();
        let inputs = [Input {
            stage: "up".into(),
            op: op.map(str::to_string),
            dir: upstream.to_path_buf(),
            content: None,
        }];
        let params: Params = serde_json::from_str(params).unwrap();
        run(&OpCtx {
            stage: "s",
            params: &params,
            inputs: &inputs,
            out,
            threads: 1,
            scratch: None,
        })
    }

    /// A participants.tsv of `n_ad` AD and `n_cn` CN subjects with spread
    /// ages, mixed sexes and MMS; rows in reverse id order.
    pub(crate) fn participants(dir: &Path, n_ad: usize, n_cn: usize) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let mut rows = Vec::new();
        for i in 0..n_ad + n_cn {
            let ad = i < n_ad;
            let age = 60.0 + ((i * 37) % 31) as f64 + if ad { 5.0 } else { 0.0 };
            let sex = if (i * 7) % 5 < 3 { "F" } else { "M" };
            let mms = if ad {
                20 + (i * 13) % 8
            } else {
                28 + (i * 5) % 3
            };
            let d = if ad { "AD" } else { "CN" };
            rows.push(format!("sub-{i:04}\tses-M00\t{d}\t{age}\t{sex}\t{mms}\n"));
        }
        rows.reverse();
        let text = format!(
            "participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS\n{}",
            rows.concat()
        );
        std::fs::write(dir.join(PARTICIPANTS_FILE), text).unwrap();
        dir.to_path_buf()
    }

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn real_tables_split_is_stratified_balanced_and_seeded() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = real_tables_dataset(&tmp.path().join("ds"));
        let params = r#"{"test_fraction": 0.2, "seed": 3}"#;
        let out = tmp.path().join("a");
        let m = run_op(run, params, &ds, Some("fetch"), &out).unwrap();
        // 73 AD and 304 CN: int(0.2 * n) of each to test, as ClinicaDL.
        assert_eq!(
            (m["n_test_AD"].as_u64(), m["n_test_CN"].as_u64()),
            (Some(14), Some(60))
        );
        assert_eq!(m["n_train"].as_u64(), Some(377 - 74));
        let train = SubjectList::read(&out.join("train.tsv")).unwrap();
        let test = SubjectList::read(&out.join("test.tsv")).unwrap();
        assert_eq!(
            (train.count(Diagnosis::AD), test.count(Diagnosis::AD)),
            (59, 14)
        );
        assert!(train.participant_ids().is_disjoint(&test.participant_ids()));
        let checks = BalanceChecks::read(&out.join("checks.tsv")).unwrap();
        assert_eq!(checks.0.len(), 6, "age, sex, MMS for AD and CN");
        assert!(checks.0.iter().all(|c| c.p_value >= 0.8 && c.passed()));
        assert_eq!(m["min_p"].as_f64(), Some(checks.min_p()));
        // Same seed, same bytes; another seed, another split.
        let again = tmp.path().join("b");
        run_op(run, params, &ds, Some("fetch"), &again).unwrap();
        for f in ["train.tsv", "test.tsv", "checks.tsv"] {
            assert_eq!(read(&out, f), read(&again, f), "{f}");
        }
        let other = tmp.path().join("c");
        run_op(
            run,
            r#"{"test_fraction": 0.2, "seed": 4}"#,
            &ds,
            Some("fetch"),
            &other,
        )
        .unwrap();
        assert_ne!(read(&out, "test.tsv"), read(&other, "test.tsv"));
    }

    #[test]
    fn participants_table_order_does_not_matter() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 12, 16);
        let params = r#"{"n_test": 4, "seed": 1, "p_threshold": 0.5}"#;
        let a = tmp.path().join("a");
        let m = run_op(run, params, &up, None, &a).unwrap();
        assert_eq!(
            (m["n_test"].as_u64(), m["n_train"].as_u64()),
            (Some(8), Some(20))
        );
        // The same rows in another order give the same split.
        let p = up.join(PARTICIPANTS_FILE);
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[1..].sort();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        let b = tmp.path().join("b");
        run_op(run, params, &up, None, &b).unwrap();
        assert_eq!(read(&a, "test.tsv"), read(&b, "test.tsv"));
        // The lists are sorted and carry the demographics.
        let test = read(&a, "test.tsv");
        let ids: Vec<&str> = test
            .lines()
            .skip(1)
            .map(|l| l.split('\t').next().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{test}");
        assert!(test.starts_with("participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS\n"));
    }

    #[test]
    fn no_passing_draw_names_the_best_p_values_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 12, 16);
        let e = run_op(
            run,
            r#"{"n_test": 4, "p_threshold": 0.999, "max_draws": 20}"#,
            &up,
            None,
            &tmp.path().join("o"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no draw of the 12 AD subjects (4 to test)")
                && e.contains("at p >= 0.999 within 20 draws")
                && e.contains("the best draw reached age p=")
                && e.contains("sex p=")
                && e.contains("MMS p=")
                && e.contains("Lower `p_threshold` or raise `max_draws`"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(tmp.path().join("o")).unwrap().count(), 0);
    }

    #[test]
    fn bad_input_is_a_named_error() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 6, 8);
        let out = tmp.path().join("o");
        let err =
            |params: &str, up: &Path| run_op(run, params, up, None, &out).unwrap_err().to_string();
        // n_test too large, or too small a fraction.
        let e = err(r#"{"n_test": 5}"#, &up);
        assert!(
            e.contains("`n_test` = 5") && e.contains("6 AD") && e.contains("ask for 2 to 4"),
            "{e}"
        );
        let e = err(r#"{"test_fraction": 0.1}"#, &up);
        assert!(e.contains("`test_fraction` = 0.1 gives 0"), "{e}");
        // A participant twice (two sessions would leak).
        let p = up.join(PARTICIPANTS_FILE);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}sub-0000\tses-M01\tAD\t70\tF\t25\n")).unwrap();
        let e = err(r#"{"n_test": 2}"#, &up);
        assert!(
            e.contains("participant sub-0000 is listed twice") && e.contains("ses-M01"),
            "{e}"
        );
        // A missing column.
        std::fs::write(
            &p,
            "participant_id\tsession_id\tdiagnosis\tage\ns-1\tses-M00\tAD\t70\n",
        )
        .unwrap();
        let e = err(r#"{"n_test": 2}"#, &up);
        assert!(
            e.contains("participants.tsv") && e.contains("missing column(s) `sex`"),
            "{e}"
        );
        // No upstream with subjects.
        let e = err(r#"{"n_test": 2}"#, tmp.path());
        assert!(
            e.contains("stage `s` needs a dataset") && e.contains("`up`"),
            "{e}"
        );
        // One diagnosis only.
        let up = participants(&tmp.path().join("ad"), 6, 0);
        let e = err(r#"{"n_test": 2}"#, &up);
        assert!(
            e.contains("has 0 CN subject(s)") && e.contains("at least 4"),
            "{e}"
        );
    }

    #[test]
    fn params_are_checked_at_load_time() {
        let check = |j: &str| check_params(&serde_json::from_str(j).unwrap());
        assert!(check(r#"{"test_fraction": 0.2}"#).is_ok());
        assert!(check(r#"{"n_test": 10, "seed": 2, "p_threshold": 0.5, "max_draws": 5}"#).is_ok());
        for (j, want) in [
            ("{}", "give `test_fraction`"),
            (r#"{"n_test": 3, "test_fraction": 0.2}"#, "not both"),
            (r#"{"test_fraction": 1.5}"#, "strictly between 0 and 1"),
            (r#"{"n_test": 0}"#, "`n_test` is 0"),
            (r#"{"n_test": 3, "p_threshold": 1.0}"#, "must lie in [0, 1)"),
            (
                r#"{"n_test": 3, "p_threshold": -0.1}"#,
                "must lie in [0, 1)",
            ),
            (r#"{"n_test": 3, "max_draws": 0}"#, "`max_draws` is 0"),
            (r#"{"n_test": 3, "p": 0.5}"#, "unknown field `p`"),
        ] {
            let e = check(j).unwrap_err();
            assert!(e.contains(want), "{j}: {e}");
        }
    }
}
