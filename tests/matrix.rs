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

/// `run --json` lines as (stage, key), in stage order.
fn keys(r: &Run) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["stage"].is_string())
        .map(|v| {
            (
                v["stage"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The file `name` in `stage`'s artifact.
fn artifact_file(p: &Project, stage: &str, name: &str) -> String {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::fs::read_to_string(std::path::Path::new(v["path"].as_str().unwrap()).join(name)).unwrap()
}

/// Axes declared once (issue 16, item 4): `folds` introduces `fold`, `cnn`
/// inherits it and adds `seed`, `eval` inherits both from `cnn` and `fold`
/// again from `folds` (they agree), `table` gathers.
const AXES: &str = r#"
name: axes
stages:
  data: {cmd: "echo data > {out}/d"}
  folds:
    cmd: "echo fold=${matrix.fold} > {out}/f"
    needs: [data]
    matrix: {fold: [0, 1]}
  cnn:
    cmd: "cat {in.folds}/f > {out}/m; echo seed=${matrix.seed} fold=${matrix.fold} >> {out}/m"
    needs: [data, folds]
    matrix: {seed: [0, 1, 2]}
  eval:
    cmd: "cat {in.cnn}/m {in.folds}/f > {out}/e; echo in=${matrix.fold},${matrix.seed} >> {out}/e"
    needs: [cnn, folds]
  table:
    cmd: "cat {in.eval:list} > {out}/t; cat {in.eval[fold=1,seed=2]}/e > {out}/one"
    needs: [eval]
    gather: true
"#;

#[test]
fn dependants_inherit_axes_and_add_their_own() {
    let p = Project::new();
    p.write("p.yaml", AXES);
    let dag = p.run(&["dag", "p.yaml"]).ok();
    // Inherited axes first (`fold`, from `folds`), then own (`seed`): the first varies slowest.
    let cnn: Vec<&str> = dag
        .stdout
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()
                .filter(|w| w.starts_with("cnn["))
        })
        .collect();
    assert_eq!(
        cnn,
        [
            "cnn[fold=0,seed=0]",
            "cnn[fold=0,seed=1]",
            "cnn[fold=0,seed=2]",
            "cnn[fold=1,seed=0]",
            "cnn[fold=1,seed=1]",
            "cnn[fold=1,seed=2]"
        ],
        "{}",
        dag.stdout
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    let ran = r.ran();
    assert_eq!(ran.len(), 1 + 2 + 6 + 6 + 1, "{ran:?}");
    assert!(ran.contains(&"eval[fold=1,seed=2]".to_string()), "{ran:?}");
    // Each member is paired with the upstream members its values project onto.
    assert_eq!(
        artifact_file(&p, "eval[fold=1,seed=0]", "e"),
        "fold=1\nseed=0 fold=1\nfold=1\nin=1,0\n"
    );
    assert_eq!(
        artifact_file(&p, "table", "one"),
        "fold=1\nseed=2 fold=1\nfold=1\nin=1,2\n",
        "selecting one member `{{in.eval[fold=1,seed=2]}}` keeps working"
    );
    // A gather receives every member, in member order.
    assert_eq!(artifact_file(&p, "table", "t").lines().count(), 6);
}

#[test]
fn inheriting_runs_only_the_new_members_of_a_longer_axis() {
    let p = Project::new();
    p.write("p.yaml", AXES);
    p.run(&["run", "p.yaml"]).ok();
    p.write("p.yaml", &AXES.replace("fold: [0, 1]", "fold: [0, 1, 2]"));
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        r.ran(),
        [
            "cnn[fold=2,seed=0]",
            "cnn[fold=2,seed=1]",
            "cnn[fold=2,seed=2]",
            "eval[fold=2,seed=0]",
            "eval[fold=2,seed=1]",
            "eval[fold=2,seed=2]",
            "folds[fold=2]",
            "table"
        ]
    );
}

#[test]
fn an_explicit_repeated_matrix_keeps_its_names_and_keys() {
    // SWEEP repeats `train`'s matrix on `score`; the same file without the
    // repetition inherits it: same members, same keys.
    let explicit = Project::new();
    explicit.write("p.yaml", SWEEP);
    let inherited = Project::new();
    inherited.write(
        "p.yaml",
        &SWEEP.replacen(
            "    needs: [train]\n    matrix: {lr: [0.0001, 0.001], seed: [1]}\n",
            "    needs: [train]\n",
            1,
        ),
    );
    assert_ne!(explicit.read("p.yaml"), inherited.read("p.yaml"));
    let a = explicit.run(&["run", "p.yaml", "--json"]).ok();
    let b = inherited.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(keys(&a).len(), 5);
    assert_eq!(keys(&a), keys(&b));
    let dag = |p: &Project| p.run(&["dag", "p.yaml"]).ok().stdout;
    assert_eq!(dag(&explicit), dag(&inherited));
}

#[test]
fn reordering_needs_renames_no_member() {
    let two = |needs: &str| {
        format!(
            "name: o\nstages:\n  a: {{cmd: 'echo ${{matrix.seed}} > {{out}}/x', matrix: {{seed: [1, 2]}}}}\n  b: {{cmd: 'echo ${{matrix.lr}} > {{out}}/x', matrix: {{lr: [3]}}}}\n  c: {{cmd: 'cat {{in.a}}/x {{in.b}}/x > {{out}}/x', needs: {needs}}}\n"
        )
    };
    let p = Project::new();
    p.write("p.yaml", &two("[a, b]"));
    let first = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(
        first.ran().contains(&"c[lr=3,seed=2]".to_string()),
        "{:?}",
        first.ran()
    );
    p.write("p.yaml", &two("[b, a]"));
    let again = p.run(&["run", "p.yaml", "--json"]).ok();
    // Same names; `needs` order is in the key (a gather's `{in.X}` order), so c re-runs.
    let mut names: Vec<String> = again
        .statuses()
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    let mut before: Vec<String> = first
        .statuses()
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| !s.is_empty())
        .collect();
    before.sort();
    assert_eq!(names, before);
}

#[test]
fn upstreams_that_disagree_on_an_axis_are_an_error() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: m\nstages:\n  a: {cmd: 'echo > {out}/x', matrix: {seed: [0, 1]}}\n  b: {cmd: 'echo > {out}/x', matrix: {seed: [0, 1, 2]}}\n  c:\n    cmd: 'echo > {out}/x'\n    needs: [a, b]\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("p.yaml:7:16: stage `c`: inherits matrix axis `seed` from `a` ([0, 1]) and from `b` ([0, 1, 2]), which differ; make the two lists agree, or give `c` its own `matrix: {seed: [...]}`"),
        "{}",
        r.stderr
    );
    // Listing the values to run settles it; each must be one both have.
    p.write(
        "p.yaml",
        &p.read("p.yaml")
            .replace("needs: [a, b]", "needs: [a, b]\n    matrix: {seed: [1, 0]}"),
    );
    let ok = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(ok.status_of("c[seed=0]"), "ran");
    assert_eq!(ok.status_of("c[seed=1]"), "ran");
    p.write(
        "p.yaml",
        &p.read("p.yaml").replace("seed: [1, 0]}", "seed: [1, 7]}"),
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("stage `c`: matrix key `seed` lists [7], which `a` (in `needs`, and so fanned out with) does not have: its `seed` is [0, 1]")
            && r.stderr.contains("matrix key `seed` lists [7], which `b`"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_own_axis_may_run_a_subset_of_an_inherited_one() {
    // Valid before axes were inherited, and still: `score` runs two of three seeds.
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: m\nstages:\n  t: {cmd: 'echo ${matrix.seed} > {out}/x', matrix: {seed: [0, 1, 2]}}\n  score: {cmd: 'cat {in.t}/x > {out}/x', needs: [t], matrix: {seed: [2, 0]}}\n",
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        r.ran(),
        [
            "score[seed=0]",
            "score[seed=2]",
            "t[seed=0]",
            "t[seed=1]",
            "t[seed=2]"
        ]
    );
    assert_eq!(artifact_file(&p, "score[seed=2]", "x"), "2\n");
}

#[test]
fn inherited_axes_count_towards_the_stage_cap_before_expansion() {
    let values = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!(
            "name: m\nstages:\n  a: {{cmd: 'true', matrix: {{k: [{}]}}}}\n  b: {{cmd: 'true', needs: [a], matrix: {{j: [{}]}}}}\n",
            values(2000),
            values(1001)
        ),
    );
    let r = p.run(&["status", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("stage `b`: matrix expands to 2002000 members (2000 `k` (from `a`) × 1001 `j`), over the limit of 2000000 stages per pipeline"),
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
