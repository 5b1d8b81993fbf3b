//! `kfold`: one fold of a stratified k-fold cross-validation of a train pool,
//! used with a matrix over `fold` (one member per fold):
//!
//! ```yaml
//! folds: {op: kfold, needs: [split], matrix: {fold: [0, 1, 2, 3, 4]},
//!         params: {k: 5, fold: "${matrix.fold}", seed: 0}}
//! ```
//!
//! The pool and the held-out test set come from the one upstream that has
//! them: a `split` (or any subject-list artifact with `train.tsv` and
//! `test.tsv`: pool and test), or a dataset (the lab's `train.tsv` as pool and
//! its `validation.tsv` as test, demographics joined from `OASIS_BIDS.tsv`).
//!
//! Folds are stratified by diagnosis, as ClinicaDL's (scikit-learn's
//! `StratifiedKFold`): each diagnosis's subjects, sorted by id, are shuffled
//! with a seeded stream of their own and dealt round-robin into the k folds,
//! each diagnosis starting where the previous one stopped, so every fold has
//! ⌊n/k⌋ or ⌈n/k⌉ subjects of each diagnosis and of all. Every member builds
//! all k folds (the same ones, from the same seed) and proves there is no
//! leakage before writing: every pool subject is in exactly one validation
//! fold, none is in the test set, and each fold's train and validation parts
//! split the pool. Otherwise the stage fails.
//!
//! Balance: `checks.tsv` reports, for this fold and each diagnosis, the tests
//! `split` makes (age, sex, MMS) between the fold's train and validation
//! parts. ClinicaDL's k-fold only stratifies, and so does `kfold` by default;
//! with `p_threshold` it redraws each diagnosis's assignment (up to
//! `max_draws`) until the tests of every fold reach it.
//!
//! Artifact: `train.tsv`, `validation.tsv` (this fold), `test.tsv` (the
//! held-out set, passed through), `folds.tsv` (every pool subject → its
//! validation fold), `checks.tsv`; metrics: sizes, `min_p`, `draws`.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::draws::{self, Rng, DEFAULT_MAX_DRAWS};
use super::split::check_threshold;
use super::{Metrics, OpCtx, OpError};
use crate::artifact::balance::{self, BalanceChecks};
use crate::artifact::dataset::{Dataset, Diagnosis, Split};
use crate::artifact::folds::{self, FoldRow, Folds};
use crate::artifact::subjects::{ListedSubject, SubjectList};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KfoldParams {
    /// Number of folds (at least 2).
    pub k: usize,
    /// This member's fold, 0 to k-1 (`"${matrix.fold}"`).
    pub fold: usize,
    #[serde(default)]
    pub seed: u64,
    /// When given, redraw until every fold's balance tests reach it.
    #[serde(default)]
    pub p_threshold: Option<f64>,
    /// Draws of one diagnosis tried before giving up (with `p_threshold`).
    #[serde(default)]
    pub max_draws: Option<u64>,
}

impl KfoldParams {
    /// Range checks serde cannot express; run at pipeline load time too.
    pub fn check(&self) -> Result<(), String> {
        if self.k < 2 {
            return Err(format!(
                "`k` is {}; cross-validation needs at least 2 folds (the lab's paper uses 5)",
                self.k
            ));
        }
        if self.fold >= self.k {
            return Err(format!(
                "`fold` is {} but `k` is {}; folds are numbered 0 to {} (e.g. `matrix: {{fold: [0, \
                 1, ..., {}]}}`)",
                self.fold,
                self.k,
                self.k - 1,
                self.k - 1
            ));
        }
        if let Some(p) = self.p_threshold {
            check_threshold(p)?;
        }
        match self.max_draws {
            Some(_) if self.p_threshold.is_none() => Err(
                "`max_draws` applies only with `p_threshold` (without it folds are drawn once); \
                 give both or neither"
                    .into(),
            ),
            Some(0) => Err(format!(
                "`max_draws` is 0; allow at least one draw (default {DEFAULT_MAX_DRAWS})"
            )),
            _ => Ok(()),
        }
    }
}

pub fn check_params(params: &super::Params) -> Result<(), String> {
    super::parse_params::<KfoldParams>(params)?.check()
}

/// The train pool and the held-out test set.
struct Source {
    /// Where the pool comes from, for messages: "`train.tsv` of `split`".
    what: String,
    pool: SubjectList,
    test: SubjectList,
}

fn source(ctx: &OpCtx) -> Result<Source, OpError> {
    let (input, (what, pool, test)) = draws::one_source(
        ctx,
        "a train pool and a test set: a `split` (`train.tsv` + `test.tsv`) or a dataset \
         (`fetch` or `synth`)",
        |input| {
            if let Some(sets) = draws::sets_of(input)? {
                let (Some(train), Some(test)) = (sets.get("train"), sets.get("test")) else {
                    return Err(OpError::Msg(format!(
                        "upstream `{}` has {} but no `test.tsv`; kfold needs a train \
                         pool and a test set (a `split` stage, or a dataset)",
                        input.stage,
                        sets.names()
                            .iter()
                            .map(|n| format!("`{n}.tsv`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                return Ok(Some(("`train.tsv`", train.clone(), test.clone())));
            }
            if draws::is_dataset(&input.dir) {
                let ds = Dataset::open(&input.dir)?;
                return Ok(Some((
                    "the lab's `train.tsv`",
                    draws::dataset_split(&ds, Split::Train)?,
                    draws::dataset_split(&ds, Split::Validation)?,
                )));
            }
            Ok(None)
        },
    )?;
    Ok(Source {
        what: format!("{what} of `{}`", input.stage),
        pool,
        test,
    })
}

/// Each fold's (train, validation) parts, from each pool subject's fold.
type FoldParts<'a> = Vec<(Vec<&'a ListedSubject>, Vec<&'a ListedSubject>)>;

fn parts<'a>(assigned: &[(&'a ListedSubject, usize)], k: usize) -> FoldParts<'a> {
    (0..k)
        .map(|f| {
            let (val, train): (Vec<&(&ListedSubject, usize)>, Vec<_>) =
                assigned.iter().partition(|(_, g)| *g == f);
            (
                train.into_iter().map(|&(s, _)| s).collect(),
                val.into_iter().map(|&(s, _)| s).collect(),
            )
        })
        .collect()
}

/// The proof that the folds leak nothing, made on the materialised parts:
/// every pool subject is in exactly one validation part, none is in the
/// test set, and each fold's train part is the pool minus its validation
/// part (so train and validation share no subject). An error names the
/// first subject that breaks it.
fn prove_no_leakage(
    pool: &[ListedSubject],
    test: &SubjectList,
    folds: &FoldParts,
) -> Result<(), OpError> {
    let leak = |what: String| {
        OpError::Msg(format!(
            "the folds leak: {what}. This is a bug in kfold unless the upstream \
             sets overlap; please report it"
        ))
    };
    let test_ids = test.participant_ids();
    let mut in_val: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, val) in folds {
        for s in val {
            *in_val.entry(s.key()).or_default() += 1;
        }
    }
    for s in pool {
        if test_ids.contains(s.participant_id.as_str()) {
            return Err(leak(format!(
                "participant {} is in both the train pool and the test set",
                s.participant_id
            )));
        }
        let n = in_val.get(&s.key()).copied().unwrap_or(0);
        if n != 1 {
            return Err(leak(format!(
                "{} {} is in {n} validation folds, not exactly one",
                s.participant_id, s.session_id
            )));
        }
    }
    let pool_keys: HashSet<(&str, &str)> = pool.iter().map(ListedSubject::key).collect();
    for (f, (train, val)) in folds.iter().enumerate() {
        let mut seen = HashSet::new();
        let exact = train
            .iter()
            .chain(val)
            .all(|s| pool_keys.contains(&s.key()) && seen.insert(s.key()));
        if !exact || seen.len() != pool_keys.len() {
            return Err(leak(format!(
                "fold {f}'s train and validation parts do not split the pool exactly"
            )));
        }
    }
    Ok(())
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: KfoldParams = ctx.params()?;
    p.check()
        .map_err(|e| OpError::Params(format!("kfold: {e}")))?;
    let src = source(ctx)?;
    draws::check_subjects(&src.what, &src.pool.0)?;
    let with_mms = draws::has_mms(&src.pool.0);
    let threshold = p.p_threshold;
    let max_draws = p.max_draws.unwrap_or(DEFAULT_MAX_DRAWS);
    let mut assigned: Vec<(&ListedSubject, usize)> = Vec::new();
    let mut checks = BalanceChecks::default();
    let mut m = Metrics::new();
    let mut total_draws = 0;
    // Where the round-robin deal stands: the next diagnosis starts here.
    let mut offset = 0;
    for d in Diagnosis::ALL {
        let members = draws::of_class(&src.pool.0, d);
        let n = members.len();
        if n < p.k {
            return Err(OpError::Msg(format!(
                "k = {} but the train pool ({}) has {n} {} subject(s), so a fold \
                 would have no {} subject to validate on; use k <= {n}, or a larger pool",
                p.k,
                src.what,
                d.as_str(),
                d.as_str()
            )));
        }
        if threshold.is_some() && n < 2 * p.k {
            return Err(OpError::Msg(format!(
                "with `p_threshold`, every fold needs at least 2 {} subjects to \
                 validate on for the balance tests, but the pool has {n} for k = {}; use k <= {} \
                 or drop `p_threshold` (the checks are then reported only)",
                d.as_str(),
                p.k,
                n / 2
            )));
        }
        let mut rng = Rng::new("kfold", p.seed, d);
        let mut order: Vec<usize> = (0..n).collect();
        let mut deal = || {
            order.sort_unstable();
            rng.choose_front(&mut order, n);
            let mut fold_of = vec![0; n];
            for (pos, &i) in order.iter().enumerate() {
                fold_of[i] = (offset + pos) % p.k;
            }
            let tests: Vec<_> = (0..p.k)
                .map(|f| {
                    let (val, train): (Vec<_>, Vec<_>) = (0..n).partition(|&i| fold_of[i] == f);
                    let pick =
                        |idx: Vec<usize>| idx.into_iter().map(|i| members[i]).collect::<Vec<_>>();
                    draws::balance_tests(&pick(train), &pick(val), with_mms)
                })
                .collect();
            (fold_of, tests)
        };
        let (fold_of, tests, n_draws) = match threshold {
            None => {
                let (fold_of, tests) = deal();
                (fold_of, tests, 1)
            }
            Some(t) => {
                let drawn = draws::redraw(max_draws, t, || {
                    let (fold_of, tests) = deal();
                    let flat: Vec<_> = tests.iter().flatten().copied().collect();
                    ((fold_of, tests), flat)
                })
                .map_err(|best| {
                    OpError::Msg(format!(
                        "no assignment of the {n} {} subjects to {} folds passed every \
                         balance test at p >= {t} within {max_draws} draws (seed {}); the best \
                         draw reached {} (over all folds). Lower `p_threshold`, raise \
                         `max_draws`, or drop `p_threshold` to report the checks only",
                        d.as_str(),
                        p.k,
                        p.seed,
                        draws::describe(&best)
                    ))
                })?;
                let (fold_of, tests) = drawn.value;
                (fold_of, tests, drawn.draws)
            }
        };
        offset = (offset + n) % p.k;
        total_draws += n_draws;
        checks.0.extend(draws::check_rows(
            "train vs validation",
            d,
            &tests[p.fold],
            threshold,
            n_draws,
        ));
        assigned.extend(members.iter().zip(fold_of).map(|(s, f)| (*s, f)));
    }
    let folds = parts(&assigned, p.k);
    prove_no_leakage(&src.pool.0, &src.test, &folds)?;
    let (train, val) = &folds[p.fold];
    let list = |v: &[&ListedSubject]| SubjectList(v.iter().map(|s| (*s).clone()).collect());
    list(train).write(&ctx.out.join("train.tsv"))?;
    list(val).write(&ctx.out.join("validation.tsv"))?;
    src.test.write(&ctx.out.join("test.tsv"))?;
    Folds(
        assigned
            .iter()
            .map(|(s, f)| FoldRow {
                participant_id: s.participant_id.clone(),
                session_id: s.session_id.clone(),
                diagnosis: s.diagnosis,
                fold: *f,
            })
            .collect(),
    )
    .write(&ctx.out.join(folds::FILE))?;
    checks.write(&ctx.out.join(balance::FILE))?;
    m.insert("k".into(), p.k.into());
    m.insert("fold".into(), p.fold.into());
    m.insert("n_pool".into(), src.pool.len().into());
    m.insert("n_train".into(), train.len().into());
    m.insert("n_validation".into(), val.len().into());
    m.insert("n_test".into(), src.test.len().into());
    for d in Diagnosis::ALL {
        let n = val.iter().filter(|s| s.diagnosis == d).count();
        m.insert(format!("n_validation_{}", d.as_str()), n.into());
    }
    m.insert("draws".into(), total_draws.into());
    m.insert("min_p".into(), draws::json_number(checks.min_p()));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::split::tests::{participants, run_op};
    use super::*;
    use crate::artifact::dataset::real_tables_dataset;
    use crate::artifact::subjects::SubjectSets;

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn real_tables_folds_are_stratified_and_leak_free() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = real_tables_dataset(&tmp.path().join("ds"));
        let k = 5;
        let mut validations = Vec::new();
        for fold in 0..k {
            let out = tmp.path().join(format!("f{fold}"));
            let params = format!(r#"{{"k": {k}, "fold": {fold}, "seed": 0}}"#);
            let m = run_op(run, &params, &ds, Some("fetch"), &out).unwrap();
            assert_eq!(
                (m["n_pool"].as_u64(), m["n_test"].as_u64()),
                (Some(300), Some(77))
            );
            let sets = SubjectSets::open(&out).unwrap().unwrap();
            assert_eq!(sets.names(), ["train", "validation", "test"]);
            let (train, val) = (sets.get("train").unwrap(), sets.get("validation").unwrap());
            assert_eq!(train.len() + val.len(), 300);
            // The lab's train pool: 58 AD, 242 CN, dealt evenly.
            let ad = val.count(Diagnosis::AD);
            assert!((11..=12).contains(&ad), "fold {fold}: {ad} AD");
            assert!((48..=49).contains(&val.count(Diagnosis::CN)));
            assert!((60..=61).contains(&val.len()));
            // Every member writes the same folds.tsv; checks report this fold only.
            assert_eq!(
                read(&out, "folds.tsv"),
                read(&tmp.path().join("f0"), "folds.tsv")
            );
            let checks =
                crate::artifact::balance::BalanceChecks::read(&out.join("checks.tsv")).unwrap();
            assert_eq!(checks.0.len(), 6);
            assert!(checks
                .0
                .iter()
                .all(|c| c.threshold.is_none() && c.draws == 1));
            validations.push(
                val.participant_ids()
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            );
        }
        let mut all: Vec<String> = validations.concat();
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!(
            (n, all.len()),
            (300, 300),
            "each pool subject in exactly one validation fold"
        );
        // test.tsv: the lab's validation subjects with their demographics.
        let test = read(&tmp.path().join("f0"), "test.tsv");
        assert!(test
            .lines()
            .skip(1)
            .all(|l| l.split('\t').nth(3).is_some_and(|a| !a.is_empty())));
    }

    #[test]
    fn a_split_upstream_and_redrawing_for_balance() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 20, 30);
        let split = tmp.path().join("split");
        run_op(
            super::super::split::run,
            r#"{"n_test": 4, "p_threshold": 0.5}"#,
            &up,
            None,
            &split,
        )
        .unwrap();
        let out = tmp.path().join("f1");
        let m = run_op(
            run,
            r#"{"k": 3, "fold": 1, "seed": 2, "p_threshold": 0.2}"#,
            &split,
            Some("split"),
            &out,
        )
        .unwrap();
        assert_eq!(
            (m["n_pool"].as_u64(), m["n_test"].as_u64()),
            (Some(42), Some(8))
        );
        assert_eq!(read(&out, "test.tsv"), read(&split, "test.tsv"));
        let checks =
            crate::artifact::balance::BalanceChecks::read(&out.join("checks.tsv")).unwrap();
        assert!(checks
            .0
            .iter()
            .all(|c| c.threshold == Some(0.2) && c.p_value >= 0.2));
        // Same params: same fold; another seed: another.
        let again = tmp.path().join("again");
        run_op(
            run,
            r#"{"k": 3, "fold": 1, "seed": 2, "p_threshold": 0.2}"#,
            &split,
            Some("split"),
            &again,
        )
        .unwrap();
        assert_eq!(read(&out, "validation.tsv"), read(&again, "validation.tsv"));
        let other = tmp.path().join("other");
        run_op(
            run,
            r#"{"k": 3, "fold": 1, "seed": 3}"#,
            &split,
            Some("split"),
            &other,
        )
        .unwrap();
        assert_ne!(read(&out, "validation.tsv"), read(&other, "validation.tsv"));
    }

    #[test]
    fn bad_input_is_a_named_error() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 7, 12);
        let split = tmp.path().join("split");
        run_op(
            super::super::split::run,
            r#"{"n_test": 2, "p_threshold": 0.3}"#,
            &up,
            None,
            &split,
        )
        .unwrap();
        let out = tmp.path().join("o");
        let err = |params: &str| {
            run_op(run, params, &split, None, &out)
                .unwrap_err()
                .to_string()
        };
        // 5 AD left in the pool.
        let e = err(r#"{"k": 6, "fold": 0}"#);
        assert!(
            e.contains("k = 6") && e.contains("has 5 AD subject(s)") && e.contains("use k <= 5"),
            "{e}"
        );
        let e = err(r#"{"k": 3, "fold": 0, "p_threshold": 0.5}"#);
        assert!(
            e.contains("at least 2 AD subjects") && e.contains("use k <= 2"),
            "{e}"
        );
        let e = err(r#"{"k": 2, "fold": 0, "p_threshold": 0.999, "max_draws": 3}"#);
        assert!(
            e.contains("within 3 draws") && e.contains("best draw reached age p="),
            "{e}"
        );
        // An upstream without a test set, and none at all.
        std::fs::remove_file(split.join("test.tsv")).unwrap();
        std::fs::write(
            split.join("validation.tsv"),
            "participant_id\tsession_id\tdiagnosis\n",
        )
        .unwrap();
        let e = err(r#"{"k": 2, "fold": 0}"#);
        assert!(
            e.contains("has `train.tsv`, `validation.tsv` but no `test.tsv`"),
            "{e}"
        );
        let e = run_op(run, r#"{"k": 2, "fold": 0}"#, &up, None, &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a train pool and a test set"), "{e}");
    }

    #[test]
    fn the_leakage_proof_catches_every_kind_of_leak() {
        let tmp = tempfile::tempdir().unwrap();
        let up = participants(&tmp.path().join("up"), 4, 4);
        let pool = SubjectList::read_participants(&up.join("participants.tsv")).unwrap();
        let s: Vec<&ListedSubject> = pool.0.iter().collect();
        let good: FoldParts = vec![
            (s[4..].to_vec(), s[..4].to_vec()),
            (s[..4].to_vec(), s[4..].to_vec()),
        ];
        let none = SubjectList::default();
        prove_no_leakage(&pool.0, &none, &good).unwrap();
        let leak = |folds: &FoldParts, test: &SubjectList| {
            prove_no_leakage(&pool.0, test, folds)
                .unwrap_err()
                .to_string()
        };
        // A subject in two validation folds, and one in none.
        let mut twice = good.clone();
        twice[1].1.push(s[0]);
        assert!(leak(&twice, &none).contains("is in 2 validation folds"));
        let mut lost = good.clone();
        lost[0].1.pop();
        assert!(leak(&lost, &none).contains("is in 0 validation folds"));
        // Train overlapping validation.
        let mut overlap = good.clone();
        overlap[0].0.push(s[0]);
        assert!(leak(&overlap, &none).contains("fold 0's train and validation parts"));
        // A pool subject in the test set.
        let test = SubjectList(vec![pool.0[3].clone()]);
        let e = leak(&good, &test);
        assert!(
            e.contains("is in both the train pool and the test set"),
            "{e}"
        );
    }

    #[test]
    fn params_are_checked_at_load_time() {
        let check = |j: &str| check_params(&serde_json::from_str(j).unwrap());
        assert!(check(r#"{"k": 5, "fold": 4, "seed": 1}"#).is_ok());
        assert!(check(r#"{"k": 5, "fold": 0, "p_threshold": 0.5, "max_draws": 10}"#).is_ok());
        for (j, want) in [
            (
                r#"{"k": 5, "fold": 5}"#,
                "`fold` is 5 but `k` is 5; folds are numbered 0 to 4",
            ),
            (r#"{"k": 1, "fold": 0}"#, "`k` is 1"),
            (r#"{"fold": 0}"#, "missing field `k`"),
            (
                r#"{"k": 3, "fold": 0, "p_threshold": 2}"#,
                "must lie in [0, 1)",
            ),
            (
                r#"{"k": 3, "fold": 0, "max_draws": 9}"#,
                "only with `p_threshold`",
            ),
            (
                r#"{"k": 3, "fold": 0, "folds": 9}"#,
                "unknown field `folds`",
            ),
        ] {
            let e = check(j).unwrap_err();
            assert!(e.contains(want), "{j}: {e}");
        }
    }
}
