//! Matrix sweeps: expansion, naming, fan-out, gather, selective re-run.

use crate::common::*;

const SWEEP: &str = r#"
name: sweep
stages:
  train:
    cmd: "echo lr=${matrix.lr} seed=${matrix.seed} > {out}/model.txt; echo '{\"lr\": ${matrix.lr}}' > {out}/metrics.json"
    matrix: {lr: [0.0001, 0.001], seed: [1]}
  score:
    cmd: "cat {in.train}/model.txt > {out}/score.txt"
    needs: [train]
    matrix: {lr: [0.0001, 0.001], seed: [1]}
  table:
    cmd: "for d in {in.score}; do cat $d/score.txt; done > {out}/table.txt"
    needs: [score]
    gather: true
"#;

#[test]
fn members_are_named_and_fan_out_and_gather() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        r.ran(),
        [
            "score[lr=0.0001,seed=1]",
            "score[lr=0.001,seed=1]",
            "table",
            "train[lr=0.0001,seed=1]",
            "train[lr=0.001,seed=1]"
        ]
    );
    let show = p
        .run(&["show", "p.yaml", "score[lr=0.001,seed=1]", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let score = std::fs::read_to_string(
        std::path::Path::new(v["path"].as_str().unwrap()).join("score.txt"),
    )
    .unwrap();
    assert_eq!(
        score, "lr=0.001 seed=1\n",
        "fan-out must pair members with the same values"
    );
    let t = p.run(&["show", "p.yaml", "table", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(t.stdout.trim()).unwrap();
    let table = std::fs::read_to_string(
        std::path::Path::new(v["path"].as_str().unwrap()).join("table.txt"),
    )
    .unwrap();
    assert!(
        table.contains("lr=0.0001 seed=1") && table.contains("lr=0.001 seed=1"),
        "{table}"
    );
}

#[test]
fn adding_a_value_runs_only_the_new_member_and_the_gather() {
    let p = Project::new();
    p.write("p.yaml", SWEEP);
    p.run(&["run", "p.yaml"]).ok();
    p.write(
        "p.yaml",
        &SWEEP.replace("[0.0001, 0.001]", "[0.0001, 0.001, 0.01]"),
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        r.ran(),
        ["score[lr=0.01,seed=1]", "table", "train[lr=0.01,seed=1]"]
    );
}

#[test]
fn needing_a_matrix_stage_without_gather_or_matrix_is_an_error() {
    let p = Project::new();
    p.write("p.yaml", "name: m\nstages:\n  t: {cmd: 'true', matrix: {lr: [1, 2]}}\n  u: {cmd: 'true', needs: [t]}\n");
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("gather: true") && r.stderr.contains("p.yaml:4:"),
        "{}",
        r.stderr
    );
}

#[test]
fn collect_tabulates_a_sweep() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: t
stages:
  train:
    cmd: "echo '{\"best_epoch\": 3, \"train\": {\"bacc\": ${matrix.lr}}}' > {out}/metrics.json"
    matrix: {lr: [0.1, 0.2]}
  table:
    op: collect
    needs: [train]
    gather: true
    params: {columns: [train.best_epoch, train.train.bacc], headers: [best epoch, train bacc]}
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    let t = p.run(&["show", "p.yaml", "table", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(t.stdout.trim()).unwrap();
    let dir = std::path::Path::new(v["path"].as_str().unwrap());
    let tsv = std::fs::read_to_string(dir.join("table.tsv")).unwrap();
    assert_eq!(
        tsv,
        "lr\tbest epoch\ttrain bacc\n0.1\t3\t0.1000\n0.2\t3\t0.2000\n"
    );
    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        md.starts_with("| lr | best epoch | train bacc |\n|---|---|---|\n"),
        "{md}"
    );
}
