//! The whole lab, tiny: synth → demographics, age_filter, crops → CNNs →
//! evaluate → soft vote; AE → codes → GMM. Needs the torch worker
//! (`make build`); skipped with a message when it is not built.

use crate::common::*;

pub const TINY_LAB: &str = r#"
name: tiny-lab
params: {seed: 0, epochs: 2}
stages:
  dataset:
    op: synth
    params: {n_train_ad: 6, n_train_cn: 6, n_val_ad: 4, n_val_cn: 4, seed: "${params.seed}"}
  demographics: {op: demographics, needs: [dataset]}
  old: {op: age_filter, needs: [dataset], params: {split: validation, min_age: 62}}
  crop_left: {op: crop, needs: [dataset], params: {region: left_hc}}
  crop_right: {op: crop, needs: [dataset], params: {region: right_hc}}
  cnn_left: {op: train_cnn, needs: [crop_left], params: {epochs: "${params.epochs}", seed: "${params.seed}"}, resources: {gpu: 1}}
  cnn_right: {op: train_cnn, needs: [crop_right], params: {epochs: "${params.epochs}", seed: "${params.seed}"}, resources: {gpu: 1}}
  eval_left: {op: evaluate, needs: [cnn_left, crop_left, old]}
  eval_right: {op: evaluate, needs: [cnn_right, crop_right, old]}
  vote: {op: soft_vote, needs: [eval_left, eval_right, old]}
  ae: {op: train_ae, needs: [crop_left], params: {epochs: 1}}
  codes: {op: extract_codes, needs: [ae, crop_left]}
  clusters: {op: gmm, needs: [codes, dataset]}
  report: {op: report, needs: [dataset, demographics, cnn_left, cnn_right, eval_left, eval_right, vote, ae, clusters]}
"#;

/// The torch worker beside the test's hcpipe binary, if built.
pub fn worker_built() -> bool {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_hcpipe"));
    let found = exe.with_file_name("hcpipe-torch").is_file();
    if !found {
        eprintln!(
            "SKIPPED: the torch worker is not built beside {} (run `make build` or `make test`)",
            exe.display()
        );
    }
    found
}

fn metrics(p: &Project, stage: &str) -> serde_json::Value {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    v["metrics"].clone()
}

#[test]
fn the_whole_lab_runs_and_a_second_run_is_all_cached() {
    if !worker_built() {
        return;
    }
    let p = Project::new();
    p.write("p.yaml", TINY_LAB);
    let first = p.run(&["run", "p.yaml", "--json", "--jobs", "2"]).ok();
    assert_eq!(first.ran().len(), 14, "{}", first.stdout);
    let vote = metrics(&p, "vote");
    for k in [
        "accuracy",
        "sensitivity",
        "specificity",
        "balanced_accuracy",
        "roc_auc",
    ] {
        let x = vote["validation"][k].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "soft vote {k} = {x}: {vote}");
    }
    assert_eq!(vote["validation"]["n"], 8);
    assert!(vote["old"]["n"].as_u64().is_some(), "{vote}");
    let cnn = metrics(&p, "cnn_left");
    assert_eq!(cnn["device"], "cpu", "{cnn}");
    let clusters = metrics(&p, "clusters");
    assert!(
        clusters["mean_log_likelihood"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "{clusters}"
    );
    assert!(
        clusters["adjusted_rand_index"].as_f64().is_some(),
        "{clusters}"
    );
    let report = p.run(&["show", "p.yaml", "report", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(report.stdout.trim()).unwrap();
    let page = std::fs::read_to_string(
        std::path::Path::new(v["path"].as_str().unwrap()).join("report.html"),
    )
    .unwrap();
    for section in ["Population", "Validation", "Autoencoder", "Clustering"] {
        assert!(page.contains(section), "report lacks {section}");
    }
    if crate::report::have_chromium() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::path::Path::new(v["path"].as_str().unwrap());
        let title = crate::report::loaded_in_chromium(dir, tmp.path());
        let n = |k: &str| {
            title
                .split(&format!("{k}="))
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse::<usize>().ok())
                .unwrap_or(0)
        };
        assert!(
            n("images") >= 10 && n("loaded") == n("images") && n("tables") >= 5,
            "Chromium loaded: {title}"
        );
    }
    let shown = p.run(&["show"]).ok();
    assert!(
        shown.stdout.contains("newest report: ") && shown.stdout.contains("report.html"),
        "{}",
        shown.stdout
    );
    let second = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(second.ran().is_empty(), "{}", second.stdout);
    // One learning param re-runs the right CNN's branch only.
    p.write(
        "p.yaml",
        &TINY_LAB.replace(
            "cnn_right: {op: train_cnn, needs: [crop_right], params: {epochs",
            "cnn_right: {op: train_cnn, needs: [crop_right], params: {lr: 0.001, epochs",
        ),
    );
    let third = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(third.ran(), ["cnn_right", "eval_right", "report", "vote"]);
}

fn artifact_file(p: &Project, stage: &str, file: &str) -> Vec<u8> {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::fs::read(std::path::Path::new(v["path"].as_str().unwrap()).join(file)).unwrap()
}

fn worker_logs(p: &Project) -> usize {
    std::fs::read_dir(p.cache().join("logs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("torch-worker-"))
        .count()
}

/// By default (no `HCPIPE_TORCH_SERVER`, GPU or not) one worker process
/// serves every torch stage of the run. With two stages at once in it (the
/// two CNNs, each seeding and drawing dropout masks), it writes the same
/// bytes as one worker process per stage (`HCPIPE_TORCH_SERVER=0`); a
/// failing stage's error comes back through it.
#[test]
fn one_torch_worker_for_the_whole_run_gives_the_same_results() {
    if !worker_built() {
        return;
    }
    let run = |server: Option<&str>| {
        let p = Project::new();
        p.write("p.yaml", TINY_LAB);
        let mut cmd = p.cmd(&["run", "p.yaml", "--json", "--jobs", "2"]);
        match server {
            Some(v) => cmd.env("HCPIPE_TORCH_SERVER", v),
            None => cmd.env_remove("HCPIPE_TORCH_SERVER"),
        };
        let out = Run::from(cmd.output().unwrap()).ok();
        assert_eq!(out.ran().len(), 14, "{}", out.stdout);
        p
    };
    // A socket folder left by a runner killed with SIGKILL (its pid is gone).
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let stale = std::env::temp_dir().join(format!("hcpipe-torch-{dead}-1"));
    std::fs::create_dir_all(&stale).unwrap();
    let (served, per_stage) = (run(None), run(Some("0")));
    assert!(!stale.exists(), "a served run removes stale socket folders");
    assert_eq!(
        worker_logs(&served),
        1,
        "the served run keeps its worker's log"
    );
    assert_eq!(worker_logs(&per_stage), 0);
    for (stage, file) in [
        ("cnn_left", "weights.safetensors"),
        ("cnn_right", "weights.safetensors"),
        ("ae", "weights.safetensors"),
        ("eval_left", "predictions.tsv"),
        ("codes", "codes.tsv"),
    ] {
        assert!(
            artifact_file(&served, stage, file) == artifact_file(&per_stage, stage, file),
            "{stage}/{file} differs between a served and a per-stage run"
        );
    }
    // A stage failing inside the served worker reports its own error.
    served.write(
        "p.yaml",
        &TINY_LAB.replace(
            "cnn_left: {op: train_cnn, needs: [crop_left], params: {epochs",
            "cnn_left: {op: train_cnn, needs: [crop_left], params: {shift: 9, epochs",
        ),
    );
    let failed = Run::from(
        served
            .cmd(&["run", "p.yaml"])
            .env("HCPIPE_TORCH_SERVER", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("stage `cnn_left`") && failed.stderr.contains("shift: 9"),
        "{}",
        failed.stderr
    );
}

/// The run's torch worker (`HCPIPE_TORCH_SERVER=1`), as seen from /proc:
/// the `hcpipe-torch --serve` process whose parent is `runner`.
fn served_worker_of(runner: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4 of /proc/PID/stat (after the parenthesised name) is the parent.
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(runner) && cmdline.windows(7).any(|w| w == b"--serve") {
            return Some(pid);
        }
    }
    None
}

/// Ctrl-C during a stage served by the run's torch worker: the run stops
/// with 130, commits nothing for that stage, and leaves no worker behind.
#[test]
fn interrupting_a_served_run_stops_its_torch_worker() {
    if !worker_built() {
        return;
    }
    let p = Project::new();
    p.write(
        "p.yaml",
        &TINY_LAB.replace(
            "cnn_left: {op: train_cnn, needs: [crop_left], params: {epochs: \"${params.epochs}\"",
            "cnn_left: {op: train_cnn, needs: [crop_left], params: {epochs: 1000",
        ),
    );
    let mut child = p
        .cmd(&["run", "p.yaml", "--jobs", "1"])
        .env("HCPIPE_TORCH_SERVER", "1")
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let worker = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no served torch worker"
        );
        if let Some(pid) = served_worker_of(child.id()) {
            break pid;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Wait until a torch job is in flight (its job file exists), then Ctrl-C.
    let tmp = p.cache().join("tmp");
    while !std::fs::read_dir(&tmp)
        .map(|d| d.flatten().any(|e| e.path().join("job.json").is_file()))
        .unwrap_or(false)
    {
        assert!(std::time::Instant::now() < deadline, "no torch job started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on the runner we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let alive = std::fs::read_to_string(format!("/proc/{worker}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "the torch worker outlived the interrupted run");
    let shown = p.run(&["show", "p.yaml", "cnn_left"]);
    assert_ne!(shown.code, 0, "cnn_left was committed: {}", shown.stdout);
}

/// A job that fails inside the run's shared torch worker with an internal
/// error (a libtorch panic; injected here) is retried in a worker process of
/// its own: the run succeeds and the stage log says what happened.
#[test]
fn an_internal_error_in_the_shared_worker_is_retried_in_a_process() {
    if !worker_built() {
        return;
    }
    let p = Project::new();
    p.write("p.yaml", TINY_LAB);
    let out = Run::from(
        p.cmd(&["run", "p.yaml", "--json", "--jobs", "2"])
            .env("HCPIPE_TORCH_SERVER", "1")
            .env("HCPIPE_TORCH_FAULT_SERVED", "1")
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(out.ran().len(), 14, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("stage `cnn_left`: the shared torch worker failed (internal error)"),
        "{}",
        out.stderr
    );
    let show = p.run(&["show", "p.yaml", "cnn_left", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let log = std::fs::read_to_string(
        p.cache()
            .join("logs")
            .join(format!("{}.log", v["key"].as_str().unwrap())),
    )
    .unwrap();
    assert!(
        log.contains("retrying in a worker process of its own"),
        "{log}"
    );
}

/// A torch stage's result depends only on its key: it runs with exactly its
/// declared `resources.cpu` intra-op threads, whatever `--jobs` is (libtorch's
/// reductions split by thread count, so 1 and 2 threads give other bytes),
/// and that count is in its key. A `--jobs 1` run in a per-stage worker
/// process and a `--jobs 2` run in the shared worker agree to the byte;
/// another declared count is another key.
#[test]
fn a_torch_stage_runs_with_its_declared_threads_whatever_jobs_is() {
    if !worker_built() {
        return;
    }
    let pipeline = |cpu: u32| {
        format!(
            r#"
name: threads
stages:
  dataset: {{op: synth, params: {{n_train_ad: 6, n_train_cn: 6, n_val_ad: 2, n_val_cn: 2, seed: 0}}}}
  crop: {{op: crop, needs: [dataset], params: {{region: left_hc}}}}
  cnn: {{op: train_cnn, needs: [crop], params: {{epochs: 2, seed: 0}}, resources: {{cpu: {cpu}}}}}
  ae: {{op: train_ae, needs: [crop], params: {{epochs: 1, seed: 0}}, resources: {{cpu: {cpu}}}}}
  codes: {{op: extract_codes, needs: [ae, crop], resources: {{cpu: {cpu}}}}}
"#
        )
    };
    let run = |cpu: u32, jobs: &str, server: &str| {
        let p = Project::new();
        p.write("p.yaml", &pipeline(cpu));
        let out = Run::from(
            p.cmd(&["run", "p.yaml", "--json", "--jobs", jobs])
                .env("HCPIPE_TORCH_SERVER", server)
                .output()
                .unwrap(),
        )
        .ok();
        assert_eq!(out.ran().len(), 5, "{}", out.stdout);
        p
    };
    let key = |p: &Project, stage: &str| {
        let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        v["key"].as_str().unwrap().to_string()
    };
    let (one, two) = (run(2, "1", "0"), run(2, "2", "1"));
    for (stage, file) in [
        ("cnn", "weights.safetensors"),
        ("ae", "weights.safetensors"),
        ("codes", "codes.tsv"),
    ] {
        assert_eq!(key(&one, stage), key(&two, stage), "{stage}'s key");
        assert!(
            artifact_file(&one, stage, file) == artifact_file(&two, stage, file),
            "{stage}/{file} differs between --jobs 1 and --jobs 2"
        );
    }
    let single = run(1, "2", "1");
    for stage in ["cnn", "ae", "codes"] {
        assert_ne!(
            key(&single, stage),
            key(&two, stage),
            "{stage}: 1 and 2 declared threads share a key"
        );
    }
    // A native op's key does not hold its thread count.
    assert_eq!(key(&single, "crop"), key(&two, "crop"));
}
