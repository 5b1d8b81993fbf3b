//! Subject lists (issue 16, item 3): a `crop` with `subjects: all` crops every
//! subject once; learning stages with a subject-list need (here a cmd stage
//! writing train.tsv / validation.tsv / test.tsv, as `kfold` does) train on
//! its `train` set and evaluate its `set:`; `soft_vote` and `gmm` key their
//! metrics by that set. Needs the torch worker; skipped when it is not built.

use crate::common::*;
use crate::lab::worker_built;

/// A lab of 14 synthetic subjects; `folds` lists 2 AD + 2 CN of the lab's train
/// split as `train`, the other 5 as `validation` and the lab's validation split as
/// `test`. `LIST_EXTRA` is appended to the train list's command (to break it).
const PIPELINE: &str = r#"
name: subjects
stages:
  dataset:
    op: synth
    params: {n_train_ad: 4, n_train_cn: 5, n_val_ad: 2, n_val_cn: 3, seed: 0}
  old: {op: age_filter, needs: [dataset], params: {split: validation, min_age: 62}}
  folds:
    needs: [dataset]
    cmd: >-
      T={in.dataset}/OASIS-1_dataset/tsv_files/lab_1 &&
      awk -F'\t' 'NR == 1 || ($3 == "AD" && a++ < 2) || ($3 == "CN" && c++ < 2)' $T/train.tsv > {out}/train.tsv &&
      awk -F'\t' 'NR == 1 || ($3 == "AD" && a++ >= 2) || ($3 == "CN" && c++ >= 2)' $T/train.tsv > {out}/validation.tsv &&
      cp $T/validation.tsv {out}/test.tsv LIST_EXTRA
  crop_left: {op: crop, needs: [dataset], params: {region: left_hc, subjects: CROP_SUBJECTS}}
  crop_right: {op: crop, needs: [dataset], params: {region: right_hc, subjects: all}}
  cnn_left: {op: train_cnn, needs: [crop_left, folds], params: {epochs: 1, seed: 1}}
  cnn_right: {op: train_cnn, needs: [crop_right, folds], params: {epochs: 1, seed: 1}}
  eval_left: {op: evaluate, needs: [cnn_left, crop_left, folds, old], params: {set: EVAL_SET}}
  eval_right: {op: evaluate, needs: [cnn_right, crop_right, folds, old], params: {set: test}}
  vote: {op: soft_vote, needs: [eval_left, eval_right, old]}
  ae: {op: train_ae, needs: [crop_right, folds], params: {epochs: 1}}
  codes: {op: extract_codes, needs: [ae, crop_right, folds], params: {set: test}}
  clusters: {op: gmm, needs: [codes, dataset, old]}
"#;

fn pipeline(crop_subjects: &str, eval_set: &str, list_extra: &str) -> String {
    PIPELINE
        .replace("CROP_SUBJECTS", crop_subjects)
        .replace("EVAL_SET", eval_set)
        .replace("LIST_EXTRA", list_extra)
}

fn metrics(p: &Project, stage: &str) -> serde_json::Value {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    v["metrics"].clone()
}

fn artifact(p: &Project, stage: &str) -> std::path::PathBuf {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::path::PathBuf::from(v["path"].as_str().unwrap())
}

/// Runs `p.yaml`, which must fail in `stage`; returns stderr.
fn fails_in(p: &Project, stage: &str) -> String {
    let r = p.run(&["run", "p.yaml", "--json", "--jobs", "2"]);
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.status_of(stage), "failed", "{}", r.stdout);
    r.stderr
}

#[test]
fn learning_stages_take_their_subjects_from_a_list() {
    if !worker_built() {
        return;
    }
    let p = Project::new();
    p.write("p.yaml", &pipeline("all", "test", ""));
    let first = p.run(&["run", "p.yaml", "--json", "--jobs", "2"]).ok();
    assert_eq!(first.ran().len(), 13, "{}", first.stdout);

    // One crop of all 14 subjects per region.
    let crop = metrics(&p, "crop_left");
    assert_eq!(
        (crop["all_AD"].as_u64(), crop["all_CN"].as_u64()),
        (Some(6), Some(8))
    );
    let tsv = std::fs::read_to_string(artifact(&p, "crop_left").join("all.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 15);

    // Trained on the 4 listed subjects only, evaluated on the 5 test subjects.
    for cnn in ["cnn_left", "cnn_right"] {
        assert_eq!(metrics(&p, cnn)["n_train"], 4, "{cnn}");
    }
    assert_eq!(metrics(&p, "ae")["n_train"], 4);
    let eval = metrics(&p, "eval_left");
    assert_eq!(
        (eval["test"]["n"].clone(), eval["set"].clone()),
        (5.into(), "test".into())
    );
    assert!(eval.get("validation").is_none(), "{eval}");
    assert!(eval["old"]["n"].as_u64().is_some(), "{eval}");
    let test_ids: Vec<String> = std::fs::read_to_string(artifact(&p, "folds").join("test.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let predictions =
        std::fs::read_to_string(artifact(&p, "eval_left").join("predictions.tsv")).unwrap();
    let mut predicted: Vec<String> = predictions
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let mut expected = test_ids.clone();
    expected.sort();
    assert_eq!(
        predicted, expected,
        "predictions follow the sorted test set"
    );
    predicted.dedup();
    assert_eq!(predicted.len(), 5);

    // The vote and the clustering are keyed by the set, with the ≥ 62 subgroup kept.
    let vote = metrics(&p, "vote");
    assert_eq!(
        (vote["test"]["n"].clone(), vote["set"].clone()),
        (5.into(), "test".into())
    );
    assert!(vote["old"]["n"].as_u64().is_some(), "{vote}");
    let codes = metrics(&p, "codes");
    assert_eq!(
        (codes["n"].clone(), codes["set"].clone()),
        (5.into(), "test".into())
    );
    let clusters = metrics(&p, "clusters");
    assert_eq!(clusters["test"], clusters["matched"], "{clusters}");
    assert_eq!(clusters["old"]["n"], 2, "{clusters}");

    // The ≥ 62 subgroup (of the lab's validation split) is not in the fold's validation set.
    p.write("p.yaml", &pipeline("all", "validation", ""));
    let e = fails_in(&p, "eval_left");
    assert!(
        e.contains(
            "none of the 2 subjects listed by `old` is in the validation set of `crop_left`"
        ),
        "{e}"
    );
    // Without it, evaluating another set re-runs that evaluation and the vote only...
    p.write(
        "p.yaml",
        &pipeline("all", "validation", "").replace(
            "needs: [cnn_left, crop_left, folds, old]",
            "needs: [cnn_left, crop_left, folds]",
        ),
    );
    let r = p.run(&["run", "p.yaml", "--json", "--jobs", "2"]);
    assert_eq!(r.status_of("eval_left"), "ran", "{}", r.stdout);
    assert_eq!(r.status_of("cnn_left"), "cached", "{}", r.stdout);
    assert_eq!(metrics(&p, "eval_left")["validation"]["n"], 5);
    // ...and a vote over two sets is refused, naming both.
    assert_eq!(r.status_of("vote"), "failed", "{}", r.stdout);
    assert!(
        r.stderr
            .contains("`eval_left` evaluated validation set but `eval_right` test set"),
        "{}",
        r.stderr
    );
}

#[test]
fn bad_subject_lists_are_clear_errors() {
    if !worker_built() {
        return;
    }
    let p = Project::new();

    // A subject the crop lacks: named, with the fix (a lab crop holds the lab's splits only).
    p.write(
        "p.yaml",
        &pipeline(
            "lab",
            "test",
            r#"&& printf 'sub-OASIS19999\tses-M00\tAD\n' >> {out}/train.tsv"#,
        ),
    );
    let e = fails_in(&p, "cnn_left");
    assert!(
        e.contains("set `train` of subject list `folds` names 1 subject(s) that crop `crop_left` does not hold: sub-OASIS19999 ses-M00")
            && e.contains("give it `subjects: all`"),
        "{e}"
    );

    // A set the list does not have.
    p.write("p.yaml", &pipeline("all", "test", "&& rm {out}/test.tsv"));
    let e = fails_in(&p, "eval_left");
    assert!(
        e.contains("subject list `folds` has no `test` set")
            && e.contains("it has train, validation"),
        "{e}"
    );

    // A training set without AD subjects.
    p.write(
        "p.yaml",
        &pipeline(
            "all",
            "test",
            r#"&& awk -F'\t' '$3 != "AD"' {out}/train.tsv > {out}/cn.tsv && mv {out}/cn.tsv {out}/train.tsv"#,
        ),
    );
    let e = fails_in(&p, "cnn_left");
    assert!(
        e.contains("stage `cnn_left`: the training set of subject list `folds` has no AD subjects"),
        "{e}"
    );

    // A crop of every subject without a list to choose from it.
    p.write(
        "p.yaml",
        &pipeline("all", "test", "").replace(
            "cnn_left: {op: train_cnn, needs: [crop_left, folds]",
            "cnn_left: {op: train_cnn, needs: [crop_left]",
        ),
    );
    let e = fails_in(&p, "cnn_left");
    assert!(
        e.contains("made with `subjects: all`") && e.contains("subject list"),
        "{e}"
    );

    // A typo in `subjects` or `set` fails before anything runs.
    p.write("p.yaml", &pipeline("every", "test", ""));
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("unknown variant `every`"), "{}", r.stderr);
    p.write("p.yaml", &pipeline("all", "holdout", ""));
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unknown variant `holdout`"),
        "{}",
        r.stderr
    );
}
