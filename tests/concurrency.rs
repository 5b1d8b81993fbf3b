//! Two runners on one cache: both succeed, each stage executes once.

use crate::common::*;

#[test]
fn two_concurrent_runs_execute_each_stage_once() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: c
stages:
  a: {cmd: "echo run >> ../a.count; sleep 0.5; echo A > {out}/a"}
  b: {cmd: "echo run >> ../b.count; cat {in.a}/a > {out}/b", needs: [a]}
"#,
    );
    std::fs::create_dir_all(p.path().join("w")).unwrap();
    std::fs::rename(p.path().join("p.yaml"), p.path().join("w/p.yaml")).unwrap();
    let spawn = || {
        p.cmd(&["run", "w/p.yaml", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (c1, c2) = (spawn(), spawn());
    let r1 = Run::from(c1.wait_with_output().unwrap()).ok();
    let r2 = Run::from(c2.wait_with_output().unwrap()).ok();
    assert_eq!(
        p.read("a.count"),
        "run\n",
        "stage a executed more than once"
    );
    assert_eq!(
        p.read("b.count"),
        "run\n",
        "stage b executed more than once"
    );
    let mut statuses = vec![r1.status_of("a"), r2.status_of("a")];
    statuses.sort();
    assert_eq!(statuses, ["cached", "ran"]);
}

#[test]
fn four_runners_on_one_cache_each_stage_once_same_results() {
    let p = Project::new();
    p.write(
        "w/p.yaml",
        r#"
name: c4
stages:
  a: {cmd: "echo run >> ../a.count; sleep 0.3; echo A > {out}/a"}
  b: {cmd: "echo run >> ../b.count; sleep 0.2; cat {in.a}/a > {out}/b", needs: [a]}
  c: {cmd: "echo run >> ../c.count; cat {in.a}/a {in.a}/a > {out}/c", needs: [a]}
  d: {cmd: "echo run >> ../d.count; cat {in.b}/b {in.c}/c > {out}/d", needs: [b, c]}
"#,
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            p.cmd(&["run", "w/p.yaml", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().unwrap()).ok())
        .collect();
    for stage in ["a", "b", "c", "d"] {
        assert_eq!(
            p.read(&format!("{stage}.count")),
            "run\n",
            "stage {stage} executed more than once"
        );
        let ran = runs.iter().filter(|r| r.status_of(stage) == "ran").count();
        assert_eq!(ran, 1, "stage {stage}");
    }
    // Every runner saw the same keys.
    let keys: Vec<String> = runs
        .iter()
        .map(|r| {
            let mut v: Vec<String> = r
                .stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|v| format!("{}={}", v["stage"], v["key"]))
                .collect();
            v.sort();
            v.join(",")
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    p.run(&["verify"]).ok();
}

#[test]
fn runners_of_two_pipelines_share_upstream_stages() {
    let p = Project::new();
    let shared = "  prep: {cmd: \"echo run >> ../prep.count; sleep 0.3; echo P > {out}/p\"}\n";
    p.write("w/one.yaml", &format!("name: one\nstages:\n{shared}  x: {{cmd: \"cat {{in.prep}}/p > {{out}}/x\", needs: [prep]}}\n"));
    p.write("w/two.yaml", &format!("name: two\nstages:\n{shared}  y: {{cmd: \"cat {{in.prep}}/p {{in.prep}}/p > {{out}}/y\", needs: [prep]}}\n"));
    let c1 = p
        .cmd(&["run", "w/one.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c2 = p
        .cmd(&["run", "w/two.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(c1.wait_with_output().unwrap().status.success());
    assert!(c2.wait_with_output().unwrap().status.success());
    assert_eq!(p.read("prep.count"), "run\n", "the shared stage ran twice");
}
