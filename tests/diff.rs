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
