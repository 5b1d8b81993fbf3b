//! A failing stage stops its dependants; independent branches finish.

use crate::common::*;

#[test]
fn failure_stops_dependants_but_not_independent_branches() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: f
stages:
  bad: {cmd: "echo about to fail >&2; echo 'the real reason' >&2; exit 3"}
  after_bad: {cmd: "true", needs: [bad]}
  good: {cmd: "sleep 0.3; echo ok > {out}/ok"}
  after_good: {cmd: "cat {in.good}/ok > {out}/ok", needs: [good]}
"#,
    );
    let r = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status_of("bad"), "failed");
    assert_eq!(r.status_of("after_bad"), "skipped");
    assert_eq!(r.status_of("good"), "ran");
    assert_eq!(r.status_of("after_good"), "ran");
    assert!(
        r.stderr.contains("stage `bad` failed") && r.stderr.contains("exited with status 3"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("| the real reason"),
        "stderr tail missing:\n{}",
        r.stderr
    );
    // Nothing of the failed stage was cached: a re-run tries it again, the rest is cached.
    let again = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(again.status_of("bad"), "failed");
    assert_eq!(again.status_of("good"), "cached");
}

#[test]
fn a_declared_out_that_is_missing_fails_the_stage() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: o\nstages:\n  a: {cmd: 'true', outs: [model.bin]}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("outs: [model.bin]"), "{}", r.stderr);
}

#[test]
fn kill_9_loses_nothing_finished_and_the_next_run_continues() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: k
stages:
  quick: {cmd: "echo done > {out}/x"}
  slow: {cmd: "sleep 30; echo late > {out}/y", needs: [quick]}
"#,
    );
    let mut child = p
        .cmd(&["run", "p.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until `quick` is committed (its entry exists), then kill -9 mid-`slow`.
    let entries = p.cache().join("entries");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&entries).map(|d| d.count()).unwrap_or(0) < 1 {
        assert!(std::time::Instant::now() < deadline, "quick never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe { libc_kill(child.id() as i32, 9) };
    child.wait().unwrap();
    // The next run finds `quick` cached; `slow` is re-run (shortened so the test is quick).
    let text = p.read("p.yaml").replace("sleep 30; ", "");
    p.write("p.yaml", &text);
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.status_of("quick"), "cached");
    assert_eq!(r.status_of("slow"), "ran");
    p.run(&["verify"]).ok();
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn interrupting_the_runner_kills_the_stage_and_its_children() {
    let p = Project::new();
    p.write(
        "w/p.yaml",
        "name: i\nstages:\n  s: {cmd: \"sleep 30 & echo $! > ../sleep.pid; wait\"}\n",
    );
    let mut child = p
        .cmd(&["run", "w/p.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.read("sleep.pid").trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid: i32 = p.read("sleep.pid").trim().parse().unwrap();
    unsafe { libc_kill(child.id() as i32, 2) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "the stage's `sleep` outlived the interrupted run");
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure() {
    let p = Project::new();
    // One slot: `bad` runs first (topological order), then nothing else starts.
    p.write(
        "p.yaml",
        r#"
name: f
stages:
  bad: {cmd: "exit 3"}
  after_bad: {cmd: "true", needs: [bad]}
  good: {cmd: "echo ok > {out}/ok"}
  after_good: {cmd: "cat {in.good}/ok > {out}/ok", needs: [good]}
"#,
    );
    let r = p.run(&["run", "p.yaml", "--json", "--jobs", "1", "--fail-fast"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status_of("bad"), "failed");
    for s in ["after_bad", "good", "after_good"] {
        assert_eq!(r.status_of(s), "skipped", "{s}: {}", r.stdout);
    }
    // `--keep-going` (`-k`) is the default, spelt out: every independent branch runs.
    let r = p.run(&["run", "p.yaml", "--json", "--jobs", "1", "-k"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status_of("good"), "ran");
    assert_eq!(r.status_of("after_good"), "ran");
    assert_eq!(r.status_of("after_bad"), "skipped");
    // Both at once is a usage error.
    let r = p.run(&["run", "p.yaml", "--fail-fast", "--keep-going"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
