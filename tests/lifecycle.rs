//! A run's life when its reader, its terminal or its user goes away: a
//! closed pipe never stops it, a second Ctrl-C leaves nothing running, and a
//! record whose runner died reads `interrupted`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_closed_output_pipe_does_not_stop_the_run() {
    let p = Project::new();
    let mut yaml = String::from("name: pipe\nstages:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  s{i}: {{cmd: \"sleep 0.1; echo {i} > {{out}}/v\"}}\n"
        ));
    }
    p.write("p.yaml", &yaml);
    for args in [
        &["run", "p.yaml"][..],
        &["run", "p.yaml", "--json", "--force", "*"][..],
    ] {
        let mut child = p
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away at once (`| head -0`).
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{args:?}");
        let again = p.run(&["run", "p.yaml", "--json"]).ok();
        assert!(again.ran().is_empty(), "{}", again.stdout);
    }
    // `show | head` ends quietly, as `cat` does.
    let mut child = p
        .cmd(&["show"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SLOW: &str = r#"
name: slow
stages:
  s:
    cmd: "sh -c 'echo $$ > grandchild.pid; exec sleep 300' & touch started; wait"
"#;

#[test]
fn a_second_ctrl_c_leaves_no_stage_process_running() {
    let p = Project::new();
    p.write("p.yaml", SLOW);
    let child = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&p.path().join("started"));
    wait_for(&p.path().join("grandchild.pid"));
    std::thread::sleep(Duration::from_millis(100));
    let grandchild: i32 = p.read("grandchild.pid").trim().parse().unwrap();
    assert!(alive(grandchild));
    let pid = child.id() as i32;
    // Two separate signals (back to back they could merge into one), the
    // second before the scheduler's next look at the first (every 200 ms).
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    std::thread::sleep(Duration::from_millis(30));
    // SAFETY: as above.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let start = Instant::now();
    while alive(grandchild) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(grandchild), "the stage's own child outlived the run");
    let show = p.run(&["show"]).ok();
    assert!(show.stdout.contains("interrupted"), "{}", show.stdout);
}

#[test]
fn a_record_whose_runner_was_killed_reads_interrupted() {
    let p = Project::new();
    p.write("p.yaml", SLOW);
    let mut child = p
        .cmd(&["run", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&p.path().join("started"));
    child.kill().unwrap();
    child.wait().unwrap();
    let show = p.run(&["show", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(v["status"], "interrupted", "{}", show.stdout);
    // Its stage was never stored, and runs again.
    let grandchild: i32 = p.read("grandchild.pid").trim().parse().unwrap_or(0);
    if grandchild > 0 {
        // SAFETY: the test's own leftover `sleep` (SIGKILL gives the runner no chance).
        unsafe {
            libc::kill(grandchild, libc::SIGKILL);
        }
    }
}
