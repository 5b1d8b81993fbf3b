//! `hcpipe run PIPELINE STAGE...` (issue 19): those stages and what they
//! need, nothing else; `status` and `dag` take the same targets.

use crate::common::*;

fn pipeline(p: &Project) {
    p.write(
        "p.yaml",
        r#"name: t
stages:
  a: {cmd: 'echo a > {out}/x'}
  b: {cmd: 'cat {in.a}/x > {out}/x; echo b >> {out}/x', needs: [a]}
  c: {cmd: 'cat {in.a}/x > {out}/x; echo c >> {out}/x', needs: [a]}
  sweep: {cmd: 'echo ${matrix.k} > {out}/x', matrix: {k: [1, 2]}}
  d: {cmd: 'cat {in.b}/x {in.c}/x > {out}/x', needs: [b, c]}
"#,
    );
}

#[test]
fn a_target_runs_itself_and_what_it_needs_only() {
    let p = Project::new();
    pipeline(&p);
    let r = p.run(&["run", "p.yaml", "b", "--json"]).ok();
    assert_eq!(r.ran(), ["a", "b"]);
    // Matrix members by base name, together with another target.
    let r = p.run(&["run", "p.yaml", "sweep", "c", "--json"]).ok();
    assert_eq!(r.ran(), ["c", "sweep[k=1]", "sweep[k=2]"]);
    assert_eq!(
        r.statuses().len(),
        4,
        "a is listed, cached: {:?}",
        r.statuses()
    );
    // The same keys as a whole run: everything run so far is cached then.
    let all = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(all.ran(), ["d"]);
    // One member by its full name.
    p.run(&["run", "p.yaml", "--force", "sweep", "sweep[k=2]", "--json"])
        .ok();
}

#[test]
fn status_and_dag_take_targets_and_a_typo_is_a_clear_error() {
    let p = Project::new();
    pipeline(&p);
    let st = p.run(&["status", "p.yaml", "b"]).ok().stdout;
    assert!(st.contains("\na ") && st.contains("\nb "), "{st}");
    assert!(!st.contains("\nc ") && !st.contains("\nd "), "{st}");
    let dag = p.run(&["dag", "p.yaml", "d"]).ok().stdout;
    assert!(dag.contains("d (cmd)") && !dag.contains("sweep"), "{dag}");
    let r = p.run(&["run", "p.yaml", "dd"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("no stage `dd` in p.yaml; did you mean `d`?"),
        "{}",
        r.stderr
    );
    let made = std::fs::read_dir(p.cache().join("artifacts"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(made, 0, "nothing ran");
}
