//! `hcpipe diff` between runs and between git revisions of a pipeline.

use crate::common::*;

const PIPE: &str = r#"
name: d
params: {lr: 0.1}
stages:
  prep: {cmd: "echo prep > {out}/p"}
  train:
    cmd: "echo '{\"loss\": ${params.lr}, \"val\": {\"acc\": 0.5}}' > {out}/metrics.json"
    needs: [prep]
"#;

#[test]
fn diff_across_two_git_commits_shows_params_keys_and_metric_deltas() {
    let p = Project::new();
    p.write("p.yaml", PIPE);
    p.git(&["init", "-q"]);
    p.git(&["add", "p.yaml"]);
    p.git(&["commit", "-qm", "one"]);
    p.run(&["run", "p.yaml"]).ok();
    p.write("p.yaml", &PIPE.replace("lr: 0.1", "lr: 0.25"));
    p.git(&["commit", "-qam", "two"]);
    p.run(&["run", "p.yaml"]).ok();
    let text = p
        .run(&["diff", "HEAD~1", "HEAD", "--pipeline", "p.yaml"])
        .ok()
        .stdout;
    assert!(
        text.contains("lr") && text.contains("0.1") && text.contains("0.25"),
        "{text}"
    );
    assert!(text.contains("train  changed  cmd changed"), "{text}");
    assert!(text.contains("prep   same"), "{text}");
    assert!(text.contains("loss") && text.contains("+0.1500"), "{text}");
    let json = p
        .run(&["diff", "HEAD~1", "HEAD", "--pipeline", "p.yaml", "--json"])
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["params"][0]["param"], "lr");
    let loss = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "loss")
        .unwrap();
    assert!((loss["delta"].as_f64().unwrap() - 0.15).abs() < 1e-9);
}

#[test]
fn diff_between_two_run_ids() {
    let p = Project::new();
    p.write("p.yaml", PIPE);
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml", "--set", "lr=0.5"]).ok();
    let list = p.run(&["show"]).ok().stdout;
    let ids: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let text = p.run(&["diff", ids[0], ids[1]]).ok().stdout;
    assert!(text.contains("0.5") && text.contains("+0.4000"), "{text}");
    let err = p.run(&["diff", "nope", ids[1]]);
    assert_eq!(err.code, 2);
    assert!(err.stderr.contains("--pipeline FILE"), "{}", err.stderr);
}

#[test]
fn pipeline_revision_is_substituted_and_keys_the_stages_that_ask_for_it() {
    let p = Project::new();
    let pipe = "name: rev\nstages:\n  plain: {cmd: 'echo x > {out}/x'}\n  stamped: {cmd: 'echo ${pipeline.name} ${pipeline.revision} > {out}/r'}\n";
    p.write("p.yaml", pipe);
    let outside = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(outside.ran(), ["plain", "stamped"]);
    let read_r = |p: &Project| {
        let show = p.run(&["show", "p.yaml", "stamped", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        std::fs::read_to_string(std::path::Path::new(v["path"].as_str().unwrap()).join("r"))
            .unwrap()
    };
    assert_eq!(read_r(&p), "rev none\n");
    p.git(&["init", "-q"]);
    p.git(&["add", "p.yaml"]);
    p.git(&["commit", "-qm", "one"]);
    let inside = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(
        inside.ran(),
        ["stamped"],
        "only the stage that asked re-runs"
    );
    let r = read_r(&p);
    assert!(
        r.starts_with("rev ") && r.trim().len() == "rev ".len() + 12 && !r.contains("dirty"),
        "{r}"
    );
}

/// Run ids in `hcpipe show`'s order (oldest first).
fn run_ids(p: &Project) -> Vec<String> {
    p.run(&["show"])
        .ok()
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The paper table's cells before → after, with paired p-values over matched members:
/// issue 16's "did it help?". The p-values are checked against `hcpipe::stats::paired` on
/// the members' values each side's table.json lists.
#[test]
fn diff_of_two_paper_tables_shows_deltas_and_paired_p_values() {
    use crate::aggregate;
    use hcpipe::stats::paired;
    let p = aggregate::project();
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml", "--set", "shift=0.013"]).ok();
    let ids = run_ids(&p);
    let (a, b) = (&ids[0], &ids[1]);
    let text = p.run(&["diff", a, b]).ok().stdout;
    assert!(
        text.contains("table `table`: mean ± SD over members"),
        "{text}"
    );
    let json = p.run(&["diff", a, b, "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cells = v["tables"].as_array().unwrap();
    // 2 rows × (mean, pooled) × 2 columns; pooled roc_auc too
    assert_eq!(cells.len(), 8, "{json}");
    let table_of = |set: &str| -> serde_json::Value {
        let show = p
            .run(&["show", "p.yaml", "table", "--set", set, "--json"])
            .ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        let dir = std::path::Path::new(v["path"].as_str().unwrap());
        serde_json::from_str(&std::fs::read_to_string(dir.join("table.json")).unwrap()).unwrap()
    };
    let (ta, tb) = (table_of("shift=0.0"), table_of("shift=0.013"));
    let members = |t: &serde_json::Value, label: &str| -> Vec<f64> {
        let row = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["label"] == label && r["variant"] == "mean")
            .unwrap();
        row["cells"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_f64().unwrap())
            .collect()
    };
    // left CNN balanced accuracy: every fold and seed moved up by 0.0013 × (1 + f + 3 s)
    let (xa, xb) = (members(&ta, "left CNN"), members(&tb, "left CNN"));
    let d = paired::differences(&xa, &xb);
    let want_w = paired::wilcoxon(&d).unwrap();
    let want_t = paired::paired_t(&d).unwrap();
    // all six differences positive and distinct: the exact p is 2 / 2^6
    assert_eq!(want_w.p, 0.03125);
    let left = cells
        .iter()
        .find(|c| {
            c["row"] == "left CNN" && c["variant"] == "mean" && c["metric"] == "balanced_accuracy"
        })
        .unwrap();
    assert_eq!(left["paired"]["n"], 6);
    assert_eq!(left["paired"]["wilcoxon"]["p"].as_f64().unwrap(), want_w.p);
    assert_eq!(left["paired"]["t"]["p"].as_f64().unwrap(), want_t.p);
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let delta = left["delta"].as_f64().unwrap();
    assert!((delta - (mean(&xb) - mean(&xa))).abs() < 1e-12);
    assert!(left["only_a"].as_array().unwrap().is_empty());
    // the text row: before → after, delta, n, both p-values
    let line = text
        .lines()
        .find(|l| l.starts_with("left CNN ") && l.contains("test.balanced_accuracy"))
        .unwrap_or_else(|| panic!("{text}"));
    let want = format!(
        "{:.3} ± {:.3}",
        ta["rows"][0]["cells"][0]["mean"].as_f64().unwrap(),
        ta["rows"][0]["cells"][0]["sd"].as_f64().unwrap()
    );
    assert!(line.contains(&want), "{line}");
    assert!(line.contains(&format!("{delta:+.4}")), "{line}");
    assert!(line.contains(" 6 ") && line.contains("0.0312"), "{line}");
    assert!(line.contains(&format!("{:.4}", want_t.p)), "{line}");
    // right CNN did not change: delta 0, no test (every difference is zero)
    let right = cells
        .iter()
        .find(|c| {
            c["row"] == "right CNN" && c["variant"] == "mean" && c["metric"] == "balanced_accuracy"
        })
        .unwrap();
    assert_eq!(right["delta"], 0.0);
    assert!(right["paired"]["wilcoxon"].is_null() && right["paired"]["t"].is_null());

    // A third run with another fold list: the cells of eval_left are flagged.
    p.write(
        "p.yaml",
        &aggregate::PIPELINE.replacen("fold: [0, 1, 2]", "fold: [0, 1, 3]", 1),
    );
    p.run(&["run", "p.yaml"]).ok();
    let ids = run_ids(&p);
    let text = p.run(&["diff", &ids[0], &ids[2]]).ok().stdout;
    assert!(
        text.contains(&format!(
            "members differ in left CNN test.balanced_accuracy: only in {}: fold=2,seed=0; fold=2,seed=1; only in {}: fold=3,seed=0; fold=3,seed=1",
            ids[0], ids[2]
        )),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("left CNN ") && l.contains("test.roc_auc"))
        .unwrap();
    assert!(
        line.contains(" 4 ") && line.trim_end().ends_with("differ"),
        "{line}"
    );
}
