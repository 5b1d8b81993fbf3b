//! `aggregate` on hand-made member folders: the numbers, the pooled row, and each bad input's
//! message. End to end (a cmd matrix, the cache, numpy's numbers) in `tests/aggregate.rs`.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;
use crate::artifact::table::PaperTable;

struct Fixture {
    dir: tempfile::TempDir,
    inputs: Vec<Input>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            inputs: Vec::new(),
        }
    }

    /// A member folder named after the member, holding `metrics` (and `predictions`).
    fn member(&mut self, name: &str, metrics: Value, predictions: Option<&str>) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join(name.replace(['[', ']', ',', '='], "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
        if let Some(p) = predictions {
            std::fs::write(dir.join("predictions.tsv"), p).unwrap();
        }
        self.inputs.push(Input {
            stage: name.into(),
            op: Some("evaluate".into()),
            dir: dir.clone(),
            content: None,
        });
        dir
    }

    fn run(&self, params: Value) -> Result<Metrics, OpError> {
        let out = self.dir.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let params = params.as_object().unwrap().clone();
        check_params(&params).map_err(OpError::Params)?;
        run(&OpCtx {
            stage: "table",
            params: &params,
            inputs: &self.inputs,
            out: &out,
            threads: 1,
            scratch: None,
        })
    }

    fn table(&self) -> PaperTable {
        PaperTable::read(&self.dir.path().join("out/table.json")).unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("out").join(name)).unwrap()
    }
}

fn err(r: Result<Metrics, OpError>) -> String {
    match r {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e.to_string(),
    }
}

/// `left`'s balanced accuracy per (fold, seed), and what numpy says of them:
/// `x = [0.75, 0.8125, 0.6875, 0.7, 0.9, 0.85]`; numpy 2.4.6 `x.mean()` 0.7833333333333333,
/// `x.std(ddof=1)` 0.0850245062712314.
const LEFT_BA: [f64; 6] = [0.75, 0.8125, 0.6875, 0.7, 0.9, 0.85];
const NUMPY_MEAN: f64 = 0.7833333333333333;
const NUMPY_SD: f64 = 0.0850245062712314;

/// `predictions.tsv` of four subjects: (label, P(AD)).
fn predictions(rows: &[(i64, f64)]) -> String {
    let mut text = "participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n".to_string();
    for (i, (label, p1)) in rows.iter().enumerate() {
        text += &format!(
            "s{i}\t{label}\t{}\t{}\t{p1}\n",
            i64::from(*p1 > 0.5),
            1.0 - p1
        );
    }
    text
}

fn three_folds_two_seeds(f: &mut Fixture) {
    let mut i = 0;
    for fold in 0..3 {
        for seed in 0..2 {
            let ba = LEFT_BA[i];
            i += 1;
            f.member(
                &format!("left[fold={fold},seed={seed}]"),
                json!({"test": {"balanced_accuracy": ba, "sensitivity": ba + 0.05,
                                "roc_auc": 0.5 + ba / 2.0, "n": 4},
                       "validation": {"balanced_accuracy": ba - 0.1, "n": 4}}),
                Some(&predictions(&[(1, 0.9), (1, 0.4), (0, 0.3), (0, 0.6)])),
            );
        }
    }
}

#[test]
fn cells_are_numpys_mean_and_sample_sd_over_the_members() {
    let mut f = Fixture::new();
    three_folds_two_seeds(&mut f);
    let m = f
        .run(
            json!({"rows": [{"stage": "left", "label": "left CNN"}], "sets": ["test", "validation"],
                    "metrics": ["balanced_accuracy", "roc_auc"], "interval": true}),
        )
        .unwrap();
    assert_eq!(m["members"], json!({"left CNN": 6}));
    let t = f.table();
    let names: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{}.{}", c.set, c.metric))
        .collect();
    assert_eq!(
        names,
        [
            "test.balanced_accuracy",
            "test.roc_auc",
            "validation.balanced_accuracy",
            "validation.roc_auc"
        ]
    );
    let cells = t.mean_row("left CNN").unwrap();
    let ba = cells[0].as_ref().unwrap();
    assert_eq!(ba.n, 6);
    assert!((ba.mean - NUMPY_MEAN).abs() < 1e-12, "{}", ba.mean);
    assert!((ba.sd.unwrap() - NUMPY_SD).abs() < 1e-12);
    assert_eq!((ba.min, ba.max), (0.6875, 0.9));
    assert_eq!(ba.members[3].member, "left[fold=1,seed=1]");
    assert_eq!(
        Value::Object(ba.members[3].axes.clone()),
        json!({"fold": 1, "seed": 1})
    );
    assert_eq!(ba.members[3].value, 0.7);
    // validation has no roc_auc in any member: an empty cell and a note, not an error
    assert!(cells[3].is_none());
    assert!(
        t.notes.iter().any(|n| n.contains("validation.roc_auc")),
        "{:?}",
        t.notes
    );
    match &t.rows[0] {
        Row::Mean { axes, .. } => assert_eq!(axes, &["fold", "seed"]),
        other => panic!("{other:?}"),
    }
    let md = f.read("table.md");
    assert!(
        md.contains("| left CNN | 6 | 0.783 ± 0.085 [0.694, 0.873] (0.688–0.900) |"),
        "{md}"
    );
    let tsv = f.read("table.tsv");
    assert!(
        tsv.contains(&format!(
            "left CNN\tleft\tmean\ttest\tbalanced_accuracy\t6\t{}\t{}\t0.6875\t0.9\t",
            ba.mean,
            ba.sd.unwrap()
        )),
        "{tsv}"
    );
    assert!(f.read("table.tex").contains("\\toprule"));
}

#[test]
fn pooled_row_recomputes_metrics_on_all_predictions_together() {
    let mut f = Fixture::new();
    // Two members of 4 subjects each; member 0 predicts s1 right, member 1 wrong.
    let p0 = predictions(&[(1, 0.9), (1, 0.6), (0, 0.3), (0, 0.2)]);
    let p1 = predictions(&[(1, 0.9), (1, 0.4), (0, 0.3), (0, 0.7)]);
    for (fold, p) in [(0, &p0), (1, &p1)] {
        f.member(
            &format!("left[fold={fold}]"),
            json!({"test": {"balanced_accuracy": 0.5, "sensitivity": 0.5, "roc_auc": 0.5,
                            "mean_loss": 1.0, "n": 4},
                   "old": {"balanced_accuracy": 0.5, "sensitivity": 0.5, "roc_auc": 0.5, "n": 2}}),
            Some(p),
        );
    }
    f.run(json!({"rows": [{"stage": "left"}], "sets": ["test", "old"],
                 "metrics": ["sensitivity", "roc_auc", "mean_loss"]}))
        .unwrap();
    let t = f.table();
    let Row::Pooled {
        label,
        members,
        cells,
        ..
    } = &t.rows[1]
    else {
        panic!("{:?}", t.rows)
    };
    assert_eq!(label, "left");
    assert_eq!(members.len(), 2);
    // pooled: AD {0.9, 0.6, 0.9, 0.4} -> 3 of 4 predicted AD
    let sens = cells[0].as_ref().unwrap();
    assert_eq!(
        (sens.value, sens.n_members, sens.n_predictions),
        (0.75, 2, 8)
    );
    // AUC over 16 (AD, CN) pairs: AD 0.9 beats all 4 CN (×2), 0.6 beats 3 of {0.3,0.2,0.3,0.7},
    // 0.4 beats 0.3, 0.2, 0.3: (4 + 4 + 3 + 3) / 16
    assert_eq!(cells[1].as_ref().unwrap().value, 14.0 / 16.0);
    // mean_loss is not recomputable from predictions; `old` is not what predictions.tsv holds
    assert!(cells[2].is_none());
    assert!(cells[3..].iter().all(Option::is_none));
    assert!(
        t.notes.iter().any(|n| n.contains("do not hold set `old`")),
        "{:?}",
        t.notes
    );
    assert!(t
        .notes
        .iter()
        .any(|n| n.contains("`mean_loss` cannot be recomputed")));
    let md = f.read("table.md");
    assert!(
        md.contains("| left (pooled) | 2 | 0.750 | 0.875 | – |"),
        "{md}"
    );
}

#[test]
fn a_metric_missing_in_some_members_names_them() {
    let mut f = Fixture::new();
    three_folds_two_seeds(&mut f);
    f.member(
        "left[fold=3,seed=0]",
        json!({"test": {"balanced_accuracy": 0.5, "n": 4}}),
        None,
    );
    let e = err(f.run(json!({"rows": [{"stage": "left"}], "sets": ["test"],
                              "metrics": ["balanced_accuracy", "roc_auc"]})));
    assert!(
        e.contains("stage `table` (aggregate)")
            && e.contains("1 of the 7 members of `left` lack `test.roc_auc`")
            && e.contains("`left[fold=3,seed=0]`")
            && e.contains("leave `roc_auc` out of `metrics`"),
        "{e}"
    );
}

#[test]
fn null_and_non_numeric_metrics_are_refused() {
    let mut f = Fixture::new();
    f.member("v[seed=0]", json!({"test": {"roc_auc": 0.5}}), None);
    f.member("v[seed=1]", json!({"test": {"roc_auc": null}}), None);
    let e = err(f.run(json!({"rows": [{"stage": "v"}], "sets": ["test"], "metrics": ["roc_auc"]})));
    assert!(
        e.contains("`test.roc_auc` is null")
            && e.contains("member `v[seed=1]` of `v`")
            && e.contains("one class"),
        "{e}"
    );
    let mut f = Fixture::new();
    f.member("v[seed=0]", json!({"test": {"roc_auc": "high"}}), None);
    let e = err(f.run(json!({"rows": [{"stage": "v"}], "sets": ["test"], "metrics": ["roc_auc"]})));
    assert!(e.contains("is \"high\", not a number"), "{e}");
}

#[test]
fn typos_get_a_did_you_mean() {
    let mut f = Fixture::new();
    three_folds_two_seeds(&mut f);
    let e = err(f.run(json!({"rows": [{"stage": "left"}], "sets": ["test"],
                              "metrics": ["balanced_acuracy"]})));
    assert!(
        e.contains("no member of left has a metric `balanced_acuracy` under `test`.")
            && e.contains("did you mean `balanced_accuracy`?")
            && e.contains("fix `metrics`"),
        "{e}"
    );
    let e = err(f.run(json!({"rows": [{"stage": "left"}], "sets": ["tset"],
                              "metrics": ["balanced_accuracy"]})));
    assert!(
        e.contains("no member of left has a set `tset`")
            && e.contains("did you mean `test`?")
            && e.contains("fix `sets`"),
        "{e}"
    );
    let e = err(f.run(json!({"rows": [{"stage": "lfet"}], "sets": ["test"]})));
    assert!(
        e.contains("row 1 names stage `lfet`, which is not in its `needs` (left)")
            && e.contains("did you mean `left`?")
            && e.contains("`rows[0].stage`"),
        "{e}"
    );
}

#[test]
fn an_empty_gather_or_a_member_without_metrics_is_an_error() {
    let f = Fixture::new();
    let e = err(f.run(json!({"rows": [{"stage": "left"}], "sets": ["test"]})));
    assert!(
        e.contains("gathered no members") && e.contains("gather: true"),
        "{e}"
    );
    let mut f = Fixture::new();
    let dir = f.member("left[fold=0]", json!({}), None);
    std::fs::remove_file(dir.join("metrics.json")).unwrap();
    let e = err(f.run(json!({"rows": [{"stage": "left"}], "sets": ["test"]})));
    assert!(
        e.contains("member `left[fold=0]` has no metrics.json") && e.contains("{out}"),
        "{e}"
    );
}

#[test]
fn a_fanned_out_table_is_told_to_gather() {
    let mut f = Fixture::new();
    f.member(
        "left[fold=0]",
        json!({"test": {"balanced_accuracy": 0.5}}),
        None,
    );
    let params =
        json!({"rows": [{"stage": "left"}], "sets": ["test"], "metrics": ["balanced_accuracy"]});
    let params = params.as_object().unwrap().clone();
    let out = f.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ctx = |stage| OpCtx {
        stage,
        params: &params,
        inputs: &f.inputs,
        out: &out,
        threads: 1,
        scratch: None,
    };
    let e = run(&ctx("table[fold=0]")).unwrap_err().to_string();
    assert!(
        e.contains("one member of a fan-out (fold=0)") && e.contains("gather: true"),
        "{e}"
    );
    // a table with its own axis (not its members') is fine
    run(&ctx("table[digits=2]")).unwrap();
}

#[test]
fn set_keys_read_a_set_under_another_name_and_one_member_has_no_sd() {
    let mut f = Fixture::new();
    three_folds_two_seeds(&mut f);
    f.member(
        "clusters",
        json!({"matched": {"balanced_accuracy": 0.625}, "lab": {"balanced_accuracy": 0.375}}),
        None,
    );
    f.run(json!({"rows": [{"stage": "left", "label": "left CNN"},
                          {"stage": "clusters", "label": "AE + GMM", "set_keys": {"test": "matched"}}],
                 "sets": ["test"], "metrics": ["balanced_accuracy", "roc_auc"]}))
        .unwrap();
    let t = f.table();
    let gmm = t.mean_row("AE + GMM").unwrap();
    let ba = gmm[0].as_ref().unwrap();
    assert_eq!((ba.n, ba.mean, ba.sd, ba.ci95), (1, 0.625, None, None));
    assert!(ba.members[0].axes.is_empty());
    assert!(gmm[1].is_none(), "gmm has no AUC: an empty cell");
    let md = f.read("table.md");
    assert!(md.contains("| AE + GMM | 1 | 0.625 (n = 1) | – |"), "{md}");
    // rows are in the params' order, each mean row followed by its pooled row
    let order: Vec<(&str, &str)> = t.rows.iter().map(|r| (r.label(), r.variant())).collect();
    assert_eq!(
        order,
        [
            ("left CNN", "mean"),
            ("left CNN", "pooled"),
            ("AE + GMM", "mean")
        ]
    );
}

#[test]
fn params_are_checked_at_load_time() {
    let check = |v: Value| check_params(v.as_object().unwrap()).unwrap_err();
    assert!(check(json!({"rows": [], "sets": ["test"]})).contains("`rows` is empty"));
    assert!(check(json!({"rows": [{"stage": "a"}], "sets": []})).contains("`sets` is empty"));
    assert!(
        check(json!({"rows": [{"stage": "a"}], "sets": ["test", "test"]}))
            .contains("`sets` lists `test` twice")
    );
    assert!(
        check(json!({"rows": [{"stage": "a"}, {"stage": "b", "label": "a"}], "sets": ["t"]}))
            .contains("two rows are labelled `a`")
    );
    assert!(
        check(json!({"rows": [{"stage": "a", "set_keys": {"tset": "x"}}], "sets": ["test"]}))
            .contains("`set_keys` names set `tset`")
    );
    assert!(
        check(json!({"rows": [{"stage": "a", "lable": "x"}], "sets": ["t"]})).contains("lable")
    );
    assert!(
        check(json!({"rows": [{"stage": "a"}], "sets": ["t"], "intervals": true}))
            .contains("intervals")
    );
    assert!(check(json!({"rows": [{"stage": "a"}]})).contains("sets"));
    assert!(
        check(json!({"rows": [{"stage": "a", "label": "x\ty"}], "sets": ["t"]}))
            .contains("one line")
    );
    let ok = json!({"rows": [{"stage": "a"}], "sets": ["test"]});
    check_params(ok.as_object().unwrap()).unwrap();
}
