//! Crash injection: `kill -9` the runner (and, separately, a stage's
//! process) at random moments, then run to completion and check every
//! artifact against a clean run and that `hcpipe verify` is clean.
//!
//! `make test` runs 12 kills; `make soak` runs 100 (HCPIPE_SOAK_KILLS=100).
//! Figures for RELIABILITY.md are printed at the end.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// Eight stages; some write a few MiB so kills land inside commits too.
const PIPE: &str = r#"
name: soak
stages:
  gen: {cmd: "head -c 3000000 /dev/zero | tr '\\0' 'a' > {out}/big; echo g > {out}/small"}
  a: {cmd: "sleep 0.05; cat {in.gen}/small > {out}/a; head -c 2000000 {in.gen}/big > {out}/a.bin", needs: [gen]}
  b: {cmd: "sleep 0.08; echo b > {out}/b; mkdir -p {out}/sub/dir; echo deep > {out}/sub/dir/f", needs: [gen]}
  c: {cmd: "sleep 0.03; wc -c < {in.gen}/big > {out}/c", needs: [gen]}
  d: {cmd: "cat {in.a}/a {in.b}/b > {out}/d; cp {in.a}/a.bin {out}/d.bin", needs: [a, b]}
  e: {cmd: "sleep 0.05; cat {in.c}/c {in.b}/sub/dir/f > {out}/e", needs: [b, c]}
  f: {cmd: "cat {in.d}/d {in.e}/e > {out}/f; echo '{\"ok\": 1}' > {out}/metrics.json", needs: [d, e]}
  g: {cmd: "sleep 0.02; sha256sum {in.d}/d.bin | cut -c1-64 > {out}/g", needs: [d]}
"#;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// stage → (file → blake3) of the newest result, via `show --json` and the artifact folders.
fn artifacts(p: &Project) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for stage in ["gen", "a", "b", "c", "d", "e", "f", "g"] {
        let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
        let mut files = BTreeMap::new();
        collect(&dir, &dir, &mut files);
        out.insert(stage.to_string(), files);
    }
    out
}

fn collect(root: &std::path::Path, dir: &std::path::Path, files: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            collect(root, &e.path(), files);
        } else {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            files.insert(
                rel,
                blake3::hash(&std::fs::read(e.path()).unwrap())
                    .to_hex()
                    .to_string(),
            );
        }
    }
}

fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let mut out: Vec<u32> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    // Threads of the runner spawn the stage shells: look in every task.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(c.split_whitespace().filter_map(|s| s.parse::<u32>().ok()));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn kill_9_at_random_moments_never_corrupts_the_cache() {
    let kills: usize = std::env::var("HCPIPE_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);

    let clean = Project::new();
    clean.write("p.yaml", PIPE);
    clean.run(&["run", "p.yaml"]).ok();
    let expected = artifacts(&clean);

    let p = Project::new();
    p.write("p.yaml", PIPE);
    let (mut runner_kills, mut stage_kills, mut completed) = (0, 0, 0);
    let mut last_completed = false;
    for i in 0..kills {
        // Start over after a finished run, and now and then anyway, so every
        // attempt has work in flight to kill.
        if last_completed || i % 3 == 2 {
            let _ = std::fs::remove_dir_all(p.cache());
        }
        last_completed = false;
        let mut child = p
            .cmd(&["run", "p.yaml", "--jobs", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.next(300)));
        let kill_stage = rng.next(3) == 0;
        let target = if kill_stage {
            children(child.id()).first().copied()
        } else {
            None
        };
        match target {
            Some(pid) => {
                unsafe { kill(pid as i32, 9) };
                stage_kills += 1;
                let _ = child.wait();
            }
            None => {
                if child.try_wait().unwrap().is_some() {
                    completed += 1;
                    last_completed = true;
                } else {
                    unsafe { kill(child.id() as i32, 9) };
                    runner_kills += 1;
                }
                let _ = child.wait();
            }
        }
    }
    let finish = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(finish.statuses().len(), 8);
    let verify = p.run(&["verify"]);
    let got = artifacts(&p);
    let corrupted = expected
        .iter()
        .filter(|(stage, files)| got.get(*stage) != Some(files))
        .count();
    eprintln!(
        "soak: seed {seed}, {kills} attempts: {runner_kills} runner kills, {stage_kills} stage kills, {completed} runs finished first; corrupted entries: {corrupted}; verify exit {}",
        verify.code
    );
    assert_eq!(
        corrupted, 0,
        "artifacts differ from a clean run:\n{got:#?}\nvs\n{expected:#?}"
    );
    assert_eq!(verify.code, 0, "{}", verify.stdout);
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
