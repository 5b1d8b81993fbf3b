//! One exit code per kind of failure (README "Commands"; `src/error.rs`):
//! 1 a stage or check failed, 2 the user's mistake, 3 the file system,
//! 4 a program hcpipe relies on (Slurm, git, the torch worker).

use crate::common::*;

fn expect(r: &Run, code: i32, says: &str) {
    assert_eq!(
        r.code, code,
        "expected exit {code}:\nstdout:{}\nstderr:{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stderr.contains("error: ") && r.stderr.contains(says),
        "expected one `error:` paragraph saying {says:?}:\n{}",
        r.stderr
    );
}

#[test]
fn a_failed_stage_or_check_exits_1() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: f\nstages:\n  bad: {cmd: \"echo the reason >&2; exit 5\"}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    expect(
        &r,
        1,
        "stage `bad` failed: the cmd of stage `bad` exited with status 5",
    );
    assert!(r.stderr.contains("  | the reason"), "{}", r.stderr);

    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    let entries = p.cache().join("objects");
    let object = walkdir::WalkDir::new(&entries)
        .into_iter()
        .flatten()
        .find(|e| e.file_type().is_file())
        .unwrap();
    std::fs::remove_file(object.path()).unwrap();
    let v = p.run(&["verify"]);
    expect(&v, 1, "verify: 1 problem(s)");
    assert!(v.stdout.contains("CORRUPT"), "{}", v.stdout);
}

#[test]
fn mistakes_on_the_command_line_exit_2() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    expect(&p.run(&["run", "p.yaml", "--jobs", "0"]), 2, "--jobs 0");
    expect(&p.run(&["show", "no-such-run"]), 2, "no run `no-such-run`");
    expect(
        &p.run(&["show", "p.yaml", "nope"]),
        2,
        "no stage `nope` in p.yaml; stages: a, b, c, d",
    );
    expect(&p.run(&["run", "p.yaml", "--set", "x"]), 2, "KEY=VALUE");
    // A revision of a pipeline that is not in git.
    expect(
        &p.run(&["diff", "HEAD~1", "HEAD", "--pipeline", "p.yaml"]),
        2,
        "is not inside a git work tree",
    );
    // clap's own errors keep clap's rendering.
    let r = p.run(&["run", "p.yaml", "--no-such-flag"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--no-such-flag"), "{}", r.stderr);
    assert_eq!(p.run(&["--help"]).code, 0);
}

#[test]
fn a_cache_that_cannot_be_written_exits_3() {
    let p = diamond();
    // The cache path is a file.
    p.write("not-a-folder", "x");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_hcpipe"))
        .args(["status", "p.yaml", "--cache", "not-a-folder"])
        .current_dir(p.path())
        .output()
        .unwrap();
    expect(&Run::from(r), 3, "cannot create cache folder");
    // The run record cannot be written when the run ends (as after a failed
    // fsync or a full disk): the stage's own folder of records is gone.
    p.write(
        "r.yaml",
        "name: r\nstages:\n  s: {cmd: \"rm -rf cache/runs && echo x > cache/runs && echo ok > {out}/ok\"}\n",
    );
    expect(&p.run(&["run", "r.yaml"]), 3, "runs/");
}

#[test]
fn slurm_that_is_not_there_exits_4() {
    let p = diamond();
    let empty = tempfile::tempdir().unwrap();
    let r = p
        .cmd(&["run", "p.yaml", "--executor", "slurm"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    expect(&Run::from(r), 4, "cannot run `sbatch`");
}
