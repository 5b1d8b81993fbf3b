//! "Cached" means "the same as a clean re-run" (issue 13): keys chain the
//! content of upstream artifacts, deps are checked again after a stage ran,
//! dep folders are hashed through their symlinks, and `diff` hashes each
//! revision's deps from git. Each test failed on e704c78.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;

/// The artifact folder of `stage`'s newest result.
fn artifact(p: &Project, pipeline: &str, stage: &str) -> PathBuf {
    let show = p.run(&["show", pipeline, stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// Start `hcpipe run p.yaml --json` in the background.
fn spawn_run(p: &Project) -> std::process::Child {
    p.cmd(&["run", "p.yaml", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A stage that reads `d.txt`, then waits for the test to say `go`.
const EDIT_DURING: &str = r#"
name: e
stages:
  slow:
    cmd: "cat d.txt > {out}/r; touch started; while [ ! -f go ]; do sleep 0.02; done"
    deps: [d.txt]
"#;

#[test]
fn a_dep_edited_while_its_stage_runs_is_never_cached_under_the_old_key() {
    let p = Project::new();
    p.write("d.txt", "old\n");
    p.write("p.yaml", EDIT_DURING);
    let child = spawn_run(&p);
    wait_for(&p.path().join("started"));
    p.write("d.txt", "new\n");
    p.write("go", "");
    let out = Run::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("dep `d.txt` of stage `slow` changed while the stage ran"),
        "{}",
        out.stderr
    );
    // The old content must give the old result, never the one made from "new".
    p.write("d.txt", "old\n");
    std::fs::remove_file(p.path().join("started")).unwrap();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(read(&artifact(&p, "p.yaml", "slow"), "r"), "old\n");
}

#[test]
fn a_downstream_dep_edited_during_the_run_is_hashed_when_its_stage_starts() {
    let p = Project::new();
    p.write("d.txt", "d\n");
    p.write("e.txt", "old\n");
    p.write(
        "p.yaml",
        &format!(
            "{EDIT_DURING}  after:\n    cmd: \"cat e.txt > {{out}}/r\"\n    needs: [slow]\n    deps: [e.txt]\n"
        ),
    );
    let child = spawn_run(&p);
    wait_for(&p.path().join("started"));
    p.write("e.txt", "new\n");
    p.write("go", "");
    Run::from(child.wait_with_output().unwrap()).ok();
    assert_eq!(read(&artifact(&p, "p.yaml", "after"), "r"), "new\n");
    // Back to the old content: `after` must not serve the "new" result.
    p.write("e.txt", "old\n");
    let again = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(again.ran(), ["after"], "{}", again.stdout);
    assert_eq!(read(&artifact(&p, "p.yaml", "after"), "r"), "old\n");
}

#[test]
fn editing_through_a_symlink_in_a_dep_folder_reruns_the_stage() {
    let p = Project::new();
    p.write("elsewhere/x.txt", "1\n");
    p.write("elsewhere/sub/y.txt", "y\n");
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::os::unix::fs::symlink("../elsewhere/x.txt", p.path().join("data/x.txt")).unwrap();
    std::os::unix::fs::symlink("../elsewhere/sub", p.path().join("data/sub")).unwrap();
    p.write(
        "p.yaml",
        "name: s\nstages:\n  s:\n    cmd: \"cat data/x.txt data/sub/y.txt > {out}/r\"\n    deps: [data]\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    p.write("elsewhere/x.txt", "2\n");
    assert_eq!(p.run(&["run", "p.yaml", "--json"]).ok().ran(), ["s"]);
    p.write("elsewhere/sub/y.txt", "Y\n");
    assert_eq!(p.run(&["run", "p.yaml", "--json"]).ok().ran(), ["s"]);
    assert_eq!(read(&artifact(&p, "p.yaml", "s"), "r"), "2\nY\n");
}

const NONDETERMINISTIC: &str = r#"
name: f
stages:
  gen: {cmd: "date +%s%N > {out}/t; echo $$ >> {out}/t"}
  use:
    cmd: "cp {in.gen}/t {out}/t"
    needs: [gen]
"#;

#[test]
fn forcing_a_nondeterministic_stage_reruns_what_its_new_output_feeds() {
    let p = Project::new();
    p.write("p.yaml", NONDETERMINISTIC);
    p.run(&["run", "p.yaml"]).ok();
    let r = p.run(&["run", "p.yaml", "--json", "--force", "gen"]).ok();
    assert_eq!(r.ran(), ["gen", "use"], "{}", r.stdout);
    assert_eq!(
        read(&artifact(&p, "p.yaml", "use"), "t"),
        read(&artifact(&p, "p.yaml", "gen"), "t")
    );
}

#[test]
fn an_upstream_rerun_with_the_same_output_leaves_its_dependants_cached() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    // Same bytes from `a` again: b, c and d need not run (early cut-off).
    let r = p.run(&["run", "p.yaml", "--json", "--force", "a"]).ok();
    assert_eq!(r.ran(), ["a"], "{}", r.stdout);
    assert_eq!(r.status_of("d"), "cached");
    // A dep edit that leaves `a`'s output the same: a comment in the input
    // that `a` drops.
    p.write(
        "p.yaml",
        &DIAMOND.replace("cat input.txt", "grep -v '^#' input.txt"),
    );
    p.run(&["run", "p.yaml"]).ok();
    p.write("input.txt", "data\n# a comment\n");
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["a"], "{}", r.stdout);
}

#[test]
fn status_says_a_stage_waits_on_an_upstream_that_will_run() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    p.write("input.txt", "other\n");
    let st = p.run(&["status", "p.yaml"]).ok();
    assert!(st.stdout.contains("upstream `a` will run"), "{}", st.stdout);
}

const GATHER: &str = r#"
name: g
stages:
  m:
    cmd: "echo ${matrix.k} > {out}/v"
    matrix: {k: [1, 2, 3]}
  all:
    cmd: "for d in {in.m}; do cat $d/v; done > {out}/all"
    needs: [m]
    gather: true
"#;

#[test]
fn reordering_a_gathered_matrix_reruns_the_gather_in_the_new_order() {
    let p = Project::new();
    p.write("p.yaml", GATHER);
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(read(&artifact(&p, "p.yaml", "all"), "all"), "1\n2\n3\n");
    p.write("p.yaml", &GATHER.replace("[1, 2, 3]", "[3, 1, 2]"));
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["all"], "{}", r.stdout);
    assert_eq!(read(&artifact(&p, "p.yaml", "all"), "all"), "3\n1\n2\n");
}

#[test]
fn a_local_folder_fetch_has_its_content_in_the_key_and_never_touches_the_users_files() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.write("mydata/sub-01.txt", "one\n");
    p.write(
        "p.yaml",
        "name: l\nstages:\n  data: {op: fetch, params: {path: mydata}}\n  n:\n    cmd: \"cat {in.data}/*.txt > {out}/all\"\n    needs: [data]\n",
    );
    // Started from another folder: `path` is relative to the pipeline file.
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = p.cmd(args);
        c.current_dir(elsewhere.path());
        Run::from(c.output().unwrap())
    };
    let yaml = p.path().join("p.yaml");
    let yaml = yaml.to_str().unwrap();
    run(&["run", yaml]).ok();
    let mode = |f: &str| {
        std::fs::metadata(p.path().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("mydata/sub-01.txt") & 0o200,
        0o200,
        "the user's file became read-only"
    );
    p.write("mydata/sub-02.txt", "two\n");
    let r = run(&["run", yaml, "--json"]).ok();
    assert_eq!(r.ran(), ["data", "n"], "{}", r.stdout);
    assert_eq!(read(&artifact(&p, "p.yaml", "n"), "all"), "one\ntwo\n");
    // An in-place edit of the user's file changes nothing in the cache.
    let cached = artifact(&p, "p.yaml", "data");
    std::fs::write(p.path().join("mydata/sub-01.txt"), "ONE\n").unwrap();
    assert_eq!(read(&cached, "sub-01.txt"), "one\n");
    assert_eq!(run(&["run", yaml, "--json"]).ok().ran(), ["data", "n"]);
}

#[test]
fn a_dep_folder_holding_the_cache_is_fresh_on_the_second_run() {
    let p = Project::new();
    p.write("d.txt", "d\n");
    p.write(
        "p.yaml",
        "name: dot\nstages:\n  s:\n    cmd: \"cat d.txt > {out}/r\"\n    deps: [.]\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    assert!(p.run(&["run", "p.yaml", "--json"]).ok().ran().is_empty());
    p.write("d.txt", "e\n");
    assert_eq!(p.run(&["run", "p.yaml", "--json"]).ok().ran(), ["s"]);
}

#[test]
fn two_stages_sharing_a_key_cannot_tell_each_other_apart() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: env\nstages:\n  a: {cmd: \"echo x$HCPIPE_STAGE > {out}/n\"}\n  b: {cmd: \"echo x$HCPIPE_STAGE > {out}/n\"}\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(read(&artifact(&p, "p.yaml", "a"), "n"), "x\n");
    assert_eq!(read(&artifact(&p, "p.yaml", "b"), "n"), "x\n");
}

#[test]
fn diff_between_revisions_hashes_each_revisions_deps_from_git() {
    let p = Project::new();
    p.write(".gitignore", "cache/\n");
    p.write("tool.sh", "echo one\n");
    p.write("lib/a.txt", "a\n");
    p.write(
        "p.yaml",
        "name: r\nstages:\n  s:\n    cmd: \"sh tool.sh > {out}/r; cat lib/a.txt >> {out}/r\"\n    deps: [tool.sh, lib]\n  t:\n    cmd: \"cat {in.s}/r > {out}/r\"\n    needs: [s]\n",
    );
    p.git(&["init", "-q"]);
    p.git(&["add", "."]);
    p.git(&["commit", "-q", "-m", "one"]);
    p.run(&["run", "p.yaml"]).ok();
    p.write("tool.sh", "echo two\n");
    p.git(&["commit", "-q", "-am", "two"]);
    p.write("lib/a.txt", "A\n");
    p.git(&["commit", "-q", "-am", "three"]);
    let d = p
        .run(&["diff", "HEAD~2", "HEAD~1", "--pipeline", "p.yaml"])
        .ok();
    assert!(d.stdout.contains("dep `tool.sh` changed"), "{}", d.stdout);
    assert!(!d.stdout.contains("dep `lib` changed"), "{}", d.stdout);
    let d = p
        .run(&["diff", "HEAD~1", "HEAD", "--pipeline", "p.yaml"])
        .ok();
    assert!(d.stdout.contains("dep `lib` changed"), "{}", d.stdout);
    assert!(!d.stdout.contains("dep `tool.sh` changed"), "{}", d.stdout);
    // The first revision is what the working tree held when it ran: cached,
    // so its metrics and keys are found.
    let d = p
        .run(&["diff", "HEAD~2", "HEAD~2", "--pipeline", "p.yaml", "--json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(d.stdout.trim()).unwrap();
    assert!(
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["change"] == "same"),
        "{}",
        d.stdout
    );
    // An untracked dep is said to come from the working tree.
    p.write(
        "p.yaml",
        &std::fs::read_to_string(p.path().join("p.yaml"))
            .unwrap()
            .replace("deps: [tool.sh, lib]", "deps: [tool.sh, lib, extra.txt]"),
    );
    p.write("extra.txt", "x\n");
    p.git(&["add", "p.yaml"]);
    p.git(&["commit", "-q", "-m", "four"]);
    let d = p
        .run(&["diff", "HEAD~1", "HEAD", "--pipeline", "p.yaml"])
        .ok();
    assert!(
        d.stdout
            .contains("dep `extra.txt` of stage `s` at HEAD: git does not track it"),
        "{}",
        d.stdout
    );
}

/// Planning keeps only a cached stage's content (issue 15: a no-op run does
/// not hold every entry); a dependant that launches later reads the entry
/// again. When another run has replaced it meanwhile (`--force` on a stage
/// whose bytes vary), the dependant fails with a clear error instead of
/// running on files its key does not describe; the next run takes the new
/// content.
#[test]
fn an_upstream_replaced_by_another_run_after_planning_fails_its_dependant_clearly() {
    let p = Project::new();
    let stage_a = "  a:\n    cmd: \"date +%s%N > {out}/a\"\n";
    p.write("other.yaml", &format!("name: other\nstages:\n{stage_a}"));
    let pipeline = |v: &str| {
        format!(
            "name: t\nstages:\n{stage_a}  hold:\n    cmd: \"echo {v} > {{out}}/h; touch started; while [ ! -f go ]; do sleep 0.02; done\"\n  b:\n    cmd: \"cat {{in.a}}/a {{in.hold}}/h > {{out}}/b\"\n    needs: [a, hold]\n"
        )
    };
    p.write("p.yaml", &pipeline("1"));
    p.write("go", "");
    p.run(&["run", "p.yaml"]).ok();
    let first_a = read(&artifact(&p, "p.yaml", "a"), "a");
    std::fs::remove_file(p.path().join("go")).unwrap();
    std::fs::remove_file(p.path().join("started")).unwrap();

    // `a` is cached and planned; while `hold` runs, another run re-makes `a`.
    p.write("p.yaml", &pipeline("2"));
    let run = spawn_run(&p);
    wait_for(&p.path().join("started"));
    p.run(&["run", "other.yaml", "--force", "a"]).ok();
    p.write("go", "");
    let out = run.wait_with_output().unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.status_of("b"), "failed", "{}", run.stdout);
    assert!(
        run.stderr.contains("the cache entry of `a`")
            && run.stderr.contains("was replaced by another run"),
        "{}",
        run.stderr
    );

    // Run again: `b` reads the new `a`.
    let second_a = read(&artifact(&p, "other.yaml", "a"), "a");
    assert_ne!(first_a, second_a);
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(
        read(&artifact(&p, "p.yaml", "b"), "b"),
        format!("{second_a}2\n")
    );
}
