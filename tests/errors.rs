//! Every user mistake: a clear error naming what and where, exit 2, no panic.

use crate::common::*;

fn fails(p: &Project, args: &[&str]) -> String {
    let r = p.run(args);
    assert_eq!(
        r.code, 2,
        "expected a user error:\nstdout:{}\nstderr:{}",
        r.stdout, r.stderr
    );
    r.stderr
}

#[test]
fn yaml_syntax_error_names_file_line_col() {
    let p = Project::new();
    p.write("p.yaml", "name: x\nstages:\n  a: {cmd: [oops\n");
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(err.contains("p.yaml:3:"), "{err}");
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {cmd: 'true'}\n  b: {cmd: 'true', nedds: [a]}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("p.yaml:4:") && err.contains("did you mean `needs`?"),
        "{err}"
    );
}

#[test]
fn cycle_names_every_stage_on_it() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {cmd: 'true', needs: [c]}\n  b: {cmd: 'true', needs: [a]}\n  c: {cmd: 'true', needs: [b]}\n  d: {cmd: 'true'}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("cycle") && err.contains("`a` → `b` → `c` → `a`"),
        "{err}"
    );
}

#[test]
fn unknown_need_lists_the_stages() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  prepare: {cmd: 'true'}\n  train: {cmd: 'true', needs: [prepar]}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("p.yaml:4:")
            && err.contains("unknown stage `prepar`")
            && err.contains("did you mean `prepare`"),
        "{err}"
    );
}

#[test]
fn unknown_op_lists_the_ops() {
    let p = Project::new();
    p.write("p.yaml", "name: x\nstages:\n  a: {op: no_such_op}\n");
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("unknown op `no_such_op`") && err.contains("valid ops"),
        "{err}"
    );
}

#[test]
fn missing_dep_names_the_path() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {cmd: 'true', deps: [data/missing.csv]}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("dep `data/missing.csv` does not exist") && err.contains("p.yaml:3:"),
        "{err}"
    );
}

#[test]
fn unknown_params_are_named_with_the_valid_ones() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nparams: {seed: 1}\nstages:\n  a: {cmd: 'echo ${params.sed}'}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("no params named `sed`") && err.contains("did you mean `seed`"),
        "{err}"
    );
    p.write(
        "p.yaml",
        "name: x\nparams: {seed: 1}\nstages:\n  a: {cmd: 'echo ${params.seed}'}\n",
    );
    let err = fails(&p, &["run", "p.yaml", "--set", "sede=2"]);
    assert!(
        err.contains("no param `sede`") && err.contains("`seed`"),
        "{err}"
    );
    let err = fails(&p, &["run", "p.yaml", "--set", "seed"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
}

#[test]
fn several_problems_are_reported_at_once() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {op: nope}\n  b: {cmd: 'true', needs: [zz]}\n  c: {}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(err.contains("3 problems"), "{err}");
    assert!(err.contains("neither `op` nor `cmd`"), "{err}");
}

#[test]
fn cmd_using_an_input_it_does_not_need_is_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {cmd: 'true'}\n  b: {cmd: 'cat {in.a}/x'}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(
        err.contains("`{in.a}`") && err.contains("not in its `needs`"),
        "{err}"
    );
}

#[test]
fn missing_pipeline_file_and_bad_force() {
    let p = Project::new();
    let err = fails(&p, &["run", "nope.yaml"]);
    assert!(
        err.contains("cannot read pipeline file `nope.yaml`"),
        "{err}"
    );
    p.write("p.yaml", "name: x\nstages:\n  a: {cmd: 'true'}\n");
    let err = fails(&p, &["run", "p.yaml", "--force", "b"]);
    assert!(err.contains("no stage `b`"), "{err}");
}

#[test]
fn duplicate_stage_names_are_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: x\nstages:\n  a: {cmd: 'true'}\n  a: {cmd: 'false'}\n",
    );
    let err = fails(&p, &["run", "p.yaml"]);
    assert!(err.contains("p.yaml:4:"), "{err}");
}
