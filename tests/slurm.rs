//! `--executor slurm` against a real one-node Slurm started by
//! `scripts/slurm-local start` (Debian's slurm-wlm 22.05 + munge, as root).
//! Jobs are counted from the job-completion log via `sacct -c`, filtered by
//! each test's own `<cache>/slurm` working folder, so tests running at once
//! never count each other's jobs.
//!
//! Every test is skipped, with a printed reason, only when Slurm cannot be
//! had here: not root, the packages cannot be installed, or the daemons do
//! not start (`scripts/slurm-local` exits 3 for those).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// `hcpipe run ... --executor slurm`, polling squeue every 0.3 s (tests only).
fn slurm_cmd(p: &Project, args: &[&str]) -> Command {
    let mut c = p.cmd(args);
    c.args(["--executor", "slurm"])
        .env("HCPIPE_SLURM_POLL", "0.3");
    c
}

fn slurm_run(p: &Project, args: &[&str]) -> Run {
    Run::from(slurm_cmd(p, args).output().expect("spawn hcpipe"))
}

/// A finished job as `sacct -c` (the jobcomp/filetxt log) reports it.
#[derive(Debug, Clone)]
struct DoneJob {
    id: String,
    name: String,
    state: String,
}

/// The finished jobs this project's runs submitted (their working folder is `<cache>/slurm`).
fn done_jobs(p: &Project) -> Vec<DoneJob> {
    let out = Command::new("sacct")
        .args([
            "-c",
            "-S",
            "2020-01-01",
            "-n",
            "-P",
            "-o",
            "jobid,jobname,state,workdir",
        ])
        .output()
        .expect("run sacct -c");
    assert!(
        out.status.success(),
        "sacct -c failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let workdir = p.cache().join("slurm");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f.len() >= 4 && Path::new(f[3]) == workdir).then(|| DoneJob {
                id: f[0].to_string(),
                name: f[1].to_string(),
                state: f[2].to_string(),
            })
        })
        .collect()
}

/// Wait (slurmctld logs a completion shortly after the job's result exists) for `n` jobs.
fn wait_done_jobs(p: &Project, n: usize) -> Vec<DoneJob> {
    let start = Instant::now();
    loop {
        let jobs = done_jobs(p);
        if jobs.len() >= n || start.elapsed() > Duration::from_secs(20) {
            return jobs;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn keys(r: &Run) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_none())
        .map(|v| {
            (
                v["stage"].as_str().unwrap_or("").to_string(),
                v["key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn slurm_runs_one_job_per_stage_and_reruns_nothing() {
    if !slurm_up() {
        return;
    }
    let p = diamond();
    let r = slurm_run(&p, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["a", "b", "c", "d"], "{}", r.stderr);
    let jobs = wait_done_jobs(&p, 4);
    let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["hcpipe-a", "hcpipe-b", "hcpipe-c", "hcpipe-d"],
        "{jobs:?}"
    );
    assert!(jobs.iter().all(|j| j.state == "COMPLETED"), "{jobs:?}");
    // The job's outputs are the cache's: the artifact of `d` holds b's and c's work.
    let show = p.run(&["show", "p.yaml", "d", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let d = std::fs::read_to_string(Path::new(v["path"].as_str().unwrap()).join("d.txt")).unwrap();
    assert_eq!(d, "data\nhello\ndata\nhello\n11\n");
    // Successful jobs leave no files behind.
    let left: Vec<_> = std::fs::read_dir(p.cache().join("slurm"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The run record says which executor ran it.
    let runs = p.run(&["show", "--json"]).ok();
    let id = serde_json::from_str::<serde_json::Value>(runs.stdout.lines().next().unwrap())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rec: serde_json::Value =
        serde_json::from_str(&p.run(&["show", &id, "--json"]).ok().stdout).unwrap();
    assert_eq!(rec["executor"], "slurm");

    // Everything cached: nothing is submitted.
    let again = slurm_run(&p, &["run", "p.yaml", "--json"]).ok();
    assert!(again.ran().is_empty(), "{}", again.stdout);
    assert_eq!(again.statuses().len(), 4);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(done_jobs(&p).len(), 4, "a cached re-run submitted jobs");

    // A changed param submits only the stages whose keys change: c uses it, d needs c.
    let n2 = slurm_run(&p, &["run", "p.yaml", "--json", "--set", "n=2"]).ok();
    assert_eq!(n2.ran(), ["c", "d"], "{}", n2.stdout);
    assert_eq!(wait_done_jobs(&p, 6).len(), 6);
}

#[test]
fn slurm_and_local_runs_make_the_same_cache_keys() {
    if !slurm_up() {
        return;
    }
    let local = diamond();
    let l = local.run(&["run", "p.yaml", "--json"]).ok();
    let remote = diamond();
    let s = slurm_run(&remote, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(keys(&l).len(), 4);
    assert_eq!(keys(&l), keys(&s));
    // And the same files: `hcpipe verify` is clean and the outputs agree.
    for p in [&local, &remote] {
        p.run(&["verify"]).ok();
    }
    let path_of = |p: &Project| {
        let out = p.run(&["show", "p.yaml", "b", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        std::fs::read_to_string(Path::new(v["path"].as_str().unwrap()).join("b.txt")).unwrap()
    };
    assert_eq!(path_of(&local), path_of(&remote));
}

#[test]
fn slurm_failure_names_the_job_and_its_log_tail() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: f
stages:
  bad: {cmd: "echo 'the real reason' >&2; exit 3"}
  after_bad: {cmd: "true", needs: [bad]}
  nowhere: {cmd: "true", resources: {partition: no-such-partition}}
"#,
    );
    let r = slurm_run(&p, &["run", "p.yaml", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.status_of("bad"), "failed");
    assert_eq!(r.status_of("after_bad"), "skipped");
    assert_eq!(r.status_of("nowhere"), "failed");
    let jobs = wait_done_jobs(&p, 1);
    assert_eq!(jobs.len(), 1, "only `bad` was accepted by sbatch: {jobs:?}");
    let job = &jobs[0];
    assert_eq!(job.name, "hcpipe-bad");
    assert_eq!(job.state, "FAILED", "hcpipe exec exits 1 on a failed stage");
    assert!(
        r.stderr.contains(&format!("Slurm job {}: ", job.id))
            && r.stderr.contains("exited with status 3"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("| the real reason"), "{}", r.stderr);
    // sbatch's refusal is reported with the command and a fix.
    assert!(
        r.stderr.contains("sbatch refused stage `nowhere`")
            && r.stderr.contains("--partition=no-such-partition"),
        "{}",
        r.stderr
    );
    // A failed job keeps its files for inspection.
    let kept: Vec<String> = std::fs::read_dir(p.cache().join("slurm"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        kept.iter()
            .any(|n| n.starts_with("bad.") && n.ends_with(".log")),
        "{kept:?}"
    );
}

#[test]
fn slurm_opt_reaches_sbatch() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: o\nstages:\n  one: {cmd: \"echo 1 > {out}/x\"}\n",
    );
    let tag = format!("hcpipe-test-{}", std::process::id());
    // Both spellings: `--slurm-opt=VALUE` and `--slurm-opt VALUE` (a value starting with `-`).
    let comment = format!("--comment={tag}");
    slurm_run(
        &p,
        &[
            "run",
            "p.yaml",
            "--slurm-opt=--nice=5",
            "--slurm-opt",
            &comment,
        ],
    )
    .ok();
    let jobs = wait_done_jobs(&p, 1);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let out = Command::new("scontrol")
        .args(["show", "job", &jobs[0].id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Comment={tag}")), "{text}");
    assert!(text.contains("Nice=5"), "{text}");
    // Without --executor slurm the option is a mistake, said so.
    let r = p.run(&["run", "p.yaml", "--slurm-opt=--nice=5"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--executor slurm"), "{}", r.stderr);
}

/// Start `run p.yaml --executor slurm` for a one-stage `sleep 120` pipeline.
fn start_long_run(p: &Project) -> std::process::Child {
    p.write("p.yaml", "name: c\nstages:\n  long: {cmd: \"sleep 120\"}\n");
    slurm_cmd(p, &["run", "p.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait until the run's job is running; its Slurm job id.
fn wait_running(p: &Project, child: &mut std::process::Child) -> String {
    // Its job is the running one whose working folder is this project's.
    let workdir = p.cache().join("slurm");
    let start = Instant::now();
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-o", "%i %T %Z"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let found = text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] == "RUNNING" && Path::new(f[2]) == workdir)
                .then(|| f[0].to_string())
        });
        if let Some(id) = found {
            return id;
        }
        if start.elapsed() > Duration::from_secs(30) {
            // SIGINT: the runner cancels its job before we fail.
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
            panic!("the job never ran:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ctrl_c_cancels_the_runs_slurm_jobs() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    let mut child = start_long_run(&p);
    let job_id = wait_running(&p, &mut child);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("cancelled Slurm job(s) {job_id}")),
        "{}",
        r.stderr
    );
    let jobs = wait_done_jobs(&p, 1);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].state.starts_with("CANCELLED"), "{jobs:?}");
    let runs = p.run(&["show", "--json"]).ok();
    assert!(runs.stdout.contains("\"interrupted\""), "{}", runs.stdout);
}

#[test]
fn a_job_cancelled_by_someone_else_fails_its_stage() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    let mut child = start_long_run(&p);
    let job_id = wait_running(&p, &mut child);
    let out = Command::new("scancel").arg(&job_id).output().unwrap();
    assert!(out.status.success());
    let r = Run::from(child.wait_with_output().unwrap());
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "stage `long` failed: Slurm job {job_id} ended CANCELLED"
        )),
        "{}",
        r.stderr
    );
    // The tail of Slurm's log says who ended it.
    assert!(
        r.stderr.contains(&format!("*** JOB {job_id} ON ")) && r.stderr.contains(" CANCELLED AT "),
        "{}",
        r.stderr
    );
}

#[test]
fn slurm_runs_the_whole_tiny_lab_with_the_keys_of_a_local_run() {
    if !crate::lab::worker_built() || !slurm_up() {
        return;
    }
    // This one-node cluster has no GPU: sbatch refuses `--gres=gpu:1`, as a real one would.
    let lab = crate::lab::TINY_LAB.replace(", resources: {gpu: 1}", "");
    let p = Project::new();
    p.write("p.yaml", &lab);
    let r = slurm_run(&p, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran().len(), 14, "{}", r.stdout);
    let jobs = wait_done_jobs(&p, 14);
    assert_eq!(jobs.len(), 14, "one Slurm job per stage: {jobs:?}");
    assert!(jobs.iter().all(|j| j.state == "COMPLETED"), "{jobs:?}");
    // A local run of the same pipeline on a fresh cache makes the same bytes,
    // so the same keys (keys chain upstream content).
    let local = Project::new();
    local.write("p.yaml", &lab);
    let l = local.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(keys(&r), keys(&l));
    // Nothing is submitted again.
    let again = slurm_run(&p, &["run", "p.yaml", "--json"]).ok();
    assert!(again.ran().is_empty(), "{}", again.stdout);
}

/// A 6-member matrix whose member `i=3` fails until the file `fixed` exists
/// (not a dep, so its key does not change), over `prep`, gathered by `table`.
const ARRAY: &str = r#"
name: arr
stages:
  prep: {cmd: "echo prep > {out}/p"}
  m:
    cmd: "[ ${matrix.i} != 3 ] || [ -e fixed ] || { echo member 3 fails >&2; exit 3; }; cat {in.prep}/p > {out}/x; echo ${matrix.i} >> {out}/x"
    needs: [prep]
    matrix: {i: [0, 1, 2, 3, 4, 5]}
    resources: {array_throttle: 4}
  table: {cmd: "while read -r d; do cat \"$d/x\"; done < {in.m:list} > {out}/t", needs: [m], gather: true}
"#;

/// `sbatch` on PATH logs its arguments to `sbatch.log`, then runs the real one.
fn sbatch_logger(p: &Project) -> String {
    let real = Command::new("sh")
        .args(["-c", "command -v sbatch"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let log = p.path().join("sbatch.log");
    let bin = p.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("sbatch");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The submissions `sbatch.log` recorded (not `sbatch --version`), and empties it.
fn sbatch_calls(p: &Project) -> Vec<String> {
    let log = p.path().join("sbatch.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::write(&log, "").unwrap();
    text.lines()
        .filter(|l| *l != "--version")
        .map(str::to_string)
        .collect()
}

/// (sbatch calls, job arrays, array tasks, polls, squeue calls) from the `-v` line.
fn slurm_calls(stderr: &str) -> [u64; 5] {
    let line = stderr
        .lines()
        .find_map(|l| l.split("slurm: ").nth(1))
        .unwrap_or_else(|| panic!("no `slurm:` line in:\n{stderr}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    [n[0], n[1], n[2], n[3], n[4]]
}

#[test]
fn a_matrix_goes_to_slurm_as_one_job_array_and_a_rerun_runs_only_failed_members() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    p.write("p.yaml", ARRAY);
    let path = sbatch_logger(&p);
    let run = |args: &[&str]| {
        let mut c = slurm_cmd(&p, args);
        Run::from(c.env("PATH", &path).output().expect("spawn hcpipe"))
    };
    let r = run(&["-v", "run", "p.yaml", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.ran(),
        ["m[i=0]", "m[i=1]", "m[i=2]", "m[i=4]", "m[i=5]", "prep"],
        "{}",
        r.stderr
    );
    assert_eq!(r.status_of("m[i=3]"), "failed");
    assert_eq!(r.status_of("table"), "skipped");
    // Two submissions: `prep`, then the six members as one array of at most 4 at once.
    let calls = sbatch_calls(&p);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].contains("--job-name=hcpipe-prep"), "{calls:?}");
    assert!(
        calls[1].contains("--job-name=hcpipe-m ") && calls[1].contains(" --array=0-5%4 "),
        "{calls:?}"
    );
    let [sbatch, arrays, tasks, polls, squeue] = slurm_calls(&r.stderr);
    assert_eq!((sbatch, arrays, tasks), (2, 1, 6));
    assert_eq!(polls, squeue, "one squeue per poll");
    // The failing task is named as Slurm names it (ARRAY_TASK), with its own log.
    let array_id = r
        .stderr
        .split("submitted as Slurm job array ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("{}", r.stderr))
        .to_string();
    assert!(
        r.stderr
            .contains(&format!("stage `m[i=3]` failed: Slurm job {array_id}_3: "))
            && r.stderr.contains("| member 3 fails"),
        "{}",
        r.stderr
    );
    // Each task is one finished Slurm job.
    let jobs = wait_done_jobs(&p, 7);
    let mut names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["hcpipe-m"; 6]
            .iter()
            .chain(&["hcpipe-prep"])
            .copied()
            .collect::<Vec<_>>(),
        "{jobs:?}"
    );
    assert_eq!(
        jobs.iter().filter(|j| j.state == "FAILED").count(),
        1,
        "{jobs:?}"
    );
    // Only the failed task's files (and the array's script) are kept.
    let mut kept: Vec<String> = std::fs::read_dir(p.cache().join("slurm"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.iter().all(|k| k.starts_with("m.")), "{kept:?}");
    assert!(kept.iter().any(|k| k.ends_with(".3.log")), "{kept:?}");
    assert!(kept.iter().any(|k| k.ends_with(".sh")), "{kept:?}");

    // Fixed: the re-run runs member 3 alone (a plain job) and the gather.
    p.write("fixed", "");
    let again = run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(again.ran(), ["m[i=3]", "table"], "{}", again.stdout);
    let calls = sbatch_calls(&p);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("--job-name=hcpipe-m[i=3]") && !calls[0].contains("--array"),
        "{calls:?}"
    );
    let t = p.run(&["show", "p.yaml", "table", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(t.stdout.trim()).unwrap();
    let table = std::fs::read_to_string(Path::new(v["path"].as_str().unwrap()).join("t")).unwrap();
    assert_eq!(
        table,
        (0..6).map(|i| format!("prep\n{i}\n")).collect::<String>()
    );
}

#[test]
fn an_arrays_width_is_what_jobs_allows() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        &ARRAY
            .replace("    resources: {array_throttle: 4}\n", "")
            .replace("[0, 1, 2, 3, 4, 5]", "[0, 1, 2, 4, 5]"),
    );
    let path = sbatch_logger(&p);
    let mut c = slurm_cmd(&p, &["run", "p.yaml", "--json", "--jobs", "2"]);
    let r = Run::from(c.env("PATH", &path).output().unwrap()).ok();
    assert_eq!(r.ran().len(), 7, "{}", r.stdout);
    let calls = sbatch_calls(&p);
    // prep, the array (2 of 5 at once: --jobs 2 CPUs), table.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[1].contains(" --array=0-4%2 "), "{calls:?}");
}

#[test]
fn array_throttle_must_be_positive() {
    let p = Project::new();
    p.write(
        "p.yaml",
        &ARRAY.replace("array_throttle: 4", "array_throttle: 0"),
    );
    let r = p.run(&["status", "p.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("stage `m`: resources.array_throttle = 0: give at least 1"),
        "{}",
        r.stderr
    );
}
