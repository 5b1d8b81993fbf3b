//! Independent stages run at the same time, within `--jobs`.

use std::time::Instant;

use crate::common::*;

// Distinct commands: identical ones would share one key and run once.
const TWO_SLEEPS: &str =
    "name: par\nstages:\n  s1: {cmd: 'sleep 1; echo 1 > {out}/x'}\n  s2: {cmd: 'sleep 1; echo 2 > {out}/x'}\n";

#[test]
fn two_one_second_stages_finish_well_under_two_seconds_with_jobs_2() {
    let p = Project::new();
    p.write("p.yaml", TWO_SLEEPS);
    let t = Instant::now();
    p.run(&["run", "p.yaml", "--jobs", "2"]).ok();
    let wall = t.elapsed().as_secs_f64();
    assert!(wall < 1.8, "took {wall:.2}s: the stages did not overlap");
}

#[test]
fn jobs_1_runs_them_one_after_the_other() {
    let p = Project::new();
    p.write("p.yaml", TWO_SLEEPS);
    let t = Instant::now();
    p.run(&["run", "p.yaml", "--jobs", "1"]).ok();
    assert!(t.elapsed().as_secs_f64() >= 2.0);
}

#[test]
fn gpu_slots_serialise_gpu_stages() {
    // Pretend one GPU is visible: two `gpu: 1` stages must not overlap.
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: g\nstages:\n  g1: {cmd: 'sleep 0.6; echo 1 > {out}/x', resources: {gpu: 1}}\n  g2: {cmd: 'sleep 0.6; echo 2 > {out}/x', resources: {gpu: 1}}\n",
    );
    let t = Instant::now();
    let out = p
        .cmd(&["run", "p.yaml", "--jobs", "4"])
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(t.elapsed().as_secs_f64() >= 1.2, "GPU stages overlapped");
}

#[test]
fn half_gpu_stages_share_one_gpu_and_bad_shares_are_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: g\nstages:\n  g1: {cmd: 'sleep 0.8; echo 1 > {out}/x', resources: {gpu: 0.5}}\n  g2: {cmd: 'sleep 0.8; echo 2 > {out}/x', resources: {gpu: 0.5}}\n",
    );
    let t = Instant::now();
    let out = p
        .cmd(&["run", "p.yaml", "--jobs", "4"])
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        t.elapsed().as_secs_f64() < 1.5,
        "two half-GPU stages did not share the GPU"
    );
    p.write(
        "p.yaml",
        "name: g\nstages:\n  g1: {cmd: 'true', resources: {gpu: 1.5}}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("resources.gpu = 1.5") && r.stderr.contains("p.yaml:3:"),
        "{}",
        r.stderr
    );
}
