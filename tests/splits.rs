//! `split` and `kfold` through `hcpipe run` (issue 16 items 1-2): a tiny
//! synthetic dataset → a balanced split → 3 folds as a matrix, and every bad
//! input a clear error (exit 2 for params at load time, 1 for what only the
//! data shows), with what was cached kept.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::*;

/// 8 AD and 8 CN subjects (the smallest synth that leaves kfold 2 of each
/// diagnosis per validation fold); p_threshold 0.3 because 8 subjects give
/// only 28 possible test pairs, too few to reach ClinicaDL's 0.8 on MMS.
const PIPELINE: &str = r#"
name: splits
params: {seed: 0}
stages:
  dataset: {op: synth, params: {n_train_ad: 6, n_train_cn: 6, n_val_ad: 2, n_val_cn: 2, seed: 0}}
  split: {op: split, needs: [dataset], params: {n_test: 2, seed: "${params.seed}", p_threshold: 0.3}}
  folds:
    op: kfold
    needs: [split]
    matrix: {fold: [0, 1, 2]}
    params: {k: 3, fold: "${matrix.fold}", seed: 0}
  lab_folds:
    op: kfold
    needs: [dataset]
    matrix: {fold: [0, 1]}
    params: {k: 2, fold: "${matrix.fold}", seed: 0, p_threshold: 0.05}
"#;

fn artifact(p: &Project, stage: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["show", "p.yaml", stage, "--json"];
    args.extend_from_slice(extra);
    let show = p.run(&args).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

/// A subject list's rows as (participant_id, diagnosis).
fn rows(dir: &std::path::Path, file: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS"),
        "{file}"
    );
    lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[2].to_string())
        })
        .collect()
}

fn ids(rows: &[(String, String)]) -> BTreeSet<String> {
    rows.iter().map(|r| r.0.clone()).collect()
}

fn count(rows: &[(String, String)], d: &str) -> usize {
    rows.iter().filter(|r| r.1 == d).count()
}

#[test]
fn synth_split_kfold_matrix_is_stratified_balanced_leak_free_and_seeded() {
    let p = Project::new();
    p.write("p.yaml", PIPELINE);
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        r.ran(),
        [
            "dataset",
            "folds[fold=0]",
            "folds[fold=1]",
            "folds[fold=2]",
            "lab_folds[fold=0]",
            "lab_folds[fold=1]",
            "split"
        ]
    );

    // The split: disjoint, 2 of each diagnosis to test, every subject placed.
    let split = artifact(&p, "split", &[]);
    let (train, test) = (rows(&split, "train.tsv"), rows(&split, "test.tsv"));
    assert_eq!((count(&test, "AD"), count(&test, "CN")), (2, 2));
    assert_eq!((count(&train, "AD"), count(&train, "CN")), (6, 6));
    assert!(ids(&train).is_disjoint(&ids(&test)));
    // Every balance test reached the threshold.
    let checks = std::fs::read_to_string(split.join("checks.tsv")).unwrap();
    let mut lines = checks.lines();
    assert_eq!(
        lines.next(),
        Some("compared\tgroup\tvariable\ttest\tstatistic\tp_value\tthreshold\tdraws")
    );
    let body: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(body.len(), 6, "{checks}");
    for row in &body {
        let p_value: f64 = row[5].parse().unwrap();
        assert!(p_value >= 0.3 && row[6] == "0.3", "{checks}");
        assert!(row[7].parse::<u64>().unwrap() >= 1);
    }
    let vars: BTreeSet<&str> = body.iter().map(|r| r[2]).collect();
    assert_eq!(vars, BTreeSet::from(["MMS", "age", "sex"]));

    // The folds: each validation part 2 AD + 2 CN, disjoint from its train
    // part and from the test set, together the split's train part once.
    let mut seen = Vec::new();
    let folds_tsv =
        std::fs::read_to_string(artifact(&p, "folds[fold=0]", &[]).join("folds.tsv")).unwrap();
    for fold in 0..3 {
        let dir = artifact(&p, &format!("folds[fold={fold}]"), &[]);
        let (tr, va, te) = (
            rows(&dir, "train.tsv"),
            rows(&dir, "validation.tsv"),
            rows(&dir, "test.tsv"),
        );
        assert_eq!((count(&va, "AD"), count(&va, "CN")), (2, 2), "fold {fold}");
        assert!(ids(&tr).is_disjoint(&ids(&va)) && ids(&va).is_disjoint(&ids(&te)));
        assert_eq!(te, test, "test.tsv is passed through");
        let union: BTreeSet<String> = ids(&tr).union(&ids(&va)).cloned().collect();
        assert_eq!(union, ids(&train));
        assert_eq!(
            std::fs::read_to_string(dir.join("folds.tsv")).unwrap(),
            folds_tsv
        );
        // folds.tsv says the same as validation.tsv.
        let listed: BTreeSet<String> = folds_tsv
            .lines()
            .skip(1)
            .filter(|l| l.ends_with(&format!("\t{fold}")))
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        assert_eq!(listed, ids(&va));
        seen.extend(ids(&va));
    }
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(
        (n, seen.len()),
        (12, 12),
        "each pool subject in one validation fold"
    );

    // From a dataset: the lab's train pool (12) and its validation as test (4).
    let lab = artifact(&p, "lab_folds[fold=1]", &[]);
    assert_eq!(rows(&lab, "test.tsv").len(), 4);
    assert_eq!(
        rows(&lab, "train.tsv").len() + rows(&lab, "validation.tsv").len(),
        12
    );

    // Deterministic: re-running the split gives the same bytes, so the folds stay cached.
    let again = p.run(&["run", "p.yaml", "--json", "--force", "split"]).ok();
    assert_eq!(again.status_of("split"), "ran");
    assert_eq!(again.status_of("folds[fold=0]"), "cached");
    // Another seed, another split (and new folds).
    let other = p.run(&["run", "p.yaml", "--json", "--set", "seed=1"]).ok();
    assert_eq!(other.status_of("folds[fold=2]"), "ran");
    let split1 = artifact(&p, "split", &["--set", "seed=1"]);
    assert_ne!(ids(&rows(&split1, "test.tsv")), ids(&test));
}

fn fails_at_load(p: &Project) -> String {
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "stdout:{}\nstderr:{}", r.stdout, r.stderr);
    assert!(r.stdout.is_empty(), "nothing runs: {}", r.stdout);
    r.stderr
}

#[test]
fn bad_params_are_refused_at_load_time() {
    let p = Project::new();
    let base = "name: x\nstages:\n  dataset: {op: synth, params: {n_train_ad: 4, n_train_cn: 4}}\n";
    for (stage, want) in [
        (
            "  split: {op: split, needs: [dataset], params: {n_test: 2, p_threshold: 1.5}}\n",
            "p.yaml:4:10: stage `split`: params for op `split`: `p_threshold` is 1.5; it must lie in [0, 1)",
        ),
        (
            "  split: {op: split, needs: [dataset], params: {n_test: 2, test_fraction: 0.2}}\n",
            "stage `split`: params for op `split`: give `test_fraction` or `n_test`, not both",
        ),
        (
            "  split: {op: split, needs: [dataset], params: {test_fraction: 0.2, max_draw: 5}}\n",
            "unknown field `max_draw`",
        ),
        (
            "  folds: {op: kfold, needs: [dataset], matrix: {fold: [0, 1, 2, 3]}, params: {k: 3, fold: \"${matrix.fold}\"}}\n",
            "stage `folds`: params for op `kfold`: `fold` is 3 but `k` is 3; folds are numbered 0 to 2",
        ),
        (
            "  folds: {op: kfold, needs: [dataset], params: {k: 3, fold: 0, p_threshold: -1}}\n",
            "`p_threshold` is -1; it must lie in [0, 1)",
        ),
    ] {
        p.write("p.yaml", &format!("{base}{stage}"));
        let err = fails_at_load(&p);
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

/// A `cmd` stage that writes `participants.tsv` from the given rows.
fn participants_pipeline(rows: &[&str], split_params: &str) -> String {
    let mut text = String::from("participant_id\\tsession_id\\tdiagnosis\\tage\\tsex\\tMMS\\n");
    for r in rows {
        text.push_str(&r.replace('\t', "\\t"));
        text.push_str("\\n");
    }
    format!(
        "name: x\nstages:\n  table: {{cmd: \"printf '{text}' > {{out}}/participants.tsv\"}}\n  \
         split: {{op: split, needs: [table], params: {split_params}}}\n"
    )
}

fn subjects(n_ad: usize, n_cn: usize) -> Vec<String> {
    (0..n_ad + n_cn)
        .map(|i| {
            let d = if i < n_ad { "AD" } else { "CN" };
            let sex = if i % 2 == 0 { "F" } else { "M" };
            format!(
                "s-{i:02}\tses-M00\t{d}\t{}\t{sex}\t{}",
                60 + (i * 7) % 25,
                20 + i % 10
            )
        })
        .collect()
}

fn fails_in_stage(p: &Project, stage: &str) -> String {
    let r = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(r.code, 1, "stdout:{}\nstderr:{}", r.stdout, r.stderr);
    assert_eq!(r.status_of(stage), "failed");
    r.stderr
}

#[test]
fn bad_data_fails_the_stage_with_the_fix_and_keeps_the_cache() {
    let p = Project::new();
    let all = subjects(6, 8);
    let rows: Vec<&str> = all.iter().map(String::as_str).collect();
    // n_test too large for 6 AD.
    p.write("p.yaml", &participants_pipeline(&rows, "{n_test: 5}"));
    let err = fails_in_stage(&p, "split");
    assert!(
        err.contains("stage `split` failed")
            && err.contains("`n_test` = 5 test subjects out of 6 AD")
            && err.contains("ask for 2 to 4 per diagnosis"),
        "{err}"
    );
    // Nothing cached is lost: the table stage's result is reused.
    p.write(
        "p.yaml",
        &participants_pipeline(&rows, "{n_test: 2, p_threshold: 0.999, max_draws: 50}"),
    );
    let r = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!((r.code, r.status_of("table")), (1, "cached".to_string()));
    assert!(
        r.stderr
            .contains("no draw of the 6 AD subjects (2 to test)")
            && r.stderr.contains("within 50 draws")
            && r.stderr.contains("the best draw reached age p=")
            && r.stderr
                .contains("Lower `p_threshold` or raise `max_draws`"),
        "{}",
        r.stderr
    );
    // A participant twice.
    let mut dup = rows.clone();
    dup.push("s-00\tses-M01\tAD\t70\tF\t25");
    p.write(
        "p.yaml",
        &participants_pipeline(&dup, "{n_test: 2, p_threshold: 0.1}"),
    );
    let err = fails_in_stage(&p, "split");
    assert!(
        err.contains("participant s-00 is listed twice") && err.contains("Keep one session"),
        "{err}"
    );
    // A missing column.
    p.write(
        "p.yaml",
        "name: x\nstages:\n  table: {cmd: \"printf 'participant_id\\tsession_id\\tdiagnosis\\tage\\n' > {out}/participants.tsv\"}\n  split: {op: split, needs: [table], params: {n_test: 2}}\n",
    );
    let err = fails_in_stage(&p, "split");
    assert!(
        err.contains("participants.tsv: missing column(s) `sex`"),
        "{err}"
    );
}

#[test]
fn a_fold_without_ad_subjects_is_refused() {
    let p = Project::new();
    let all = subjects(6, 8);
    let rows: Vec<&str> = all.iter().map(String::as_str).collect();
    // The split leaves 4 AD in the pool: 5 folds would leave one without AD.
    let pipeline = participants_pipeline(&rows, "{n_test: 2, p_threshold: 0.05}")
        + "  folds: {op: kfold, needs: [split], matrix: {fold: [0, 1, 2, 3, 4]}, params: {k: 5, fold: \"${matrix.fold}\"}}\n";
    p.write("p.yaml", &pipeline);
    let err = fails_in_stage(&p, "folds[fold=0]");
    assert!(
        err.contains("k = 5 but the train pool")
            && err.contains("has 4 AD subject(s), so a fold would have no AD subject")
            && err.contains("use k <= 4"),
        "{err}"
    );
    // The split itself succeeded and stays cached.
    let r = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(r.status_of("split"), "cached");
}
