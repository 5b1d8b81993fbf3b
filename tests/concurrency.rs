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
