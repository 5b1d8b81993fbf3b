//! Live progress from inside stages (`$HCPIPE_PROGRESS`): a cmd stage's own
//! lines and the torch worker's epochs come out of `run --json` as
//! `{"event": "progress", ...}` lines, on a terminal as bars; none of it is
//! in a key, and a line that does not parse is counted in the stage's log.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// The `--json` progress events of `stage`, in order.
fn events(run: &Run, stage: &str) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "progress" && v["stage"] == stage)
        .collect()
}

/// `(done, total)` of each event.
fn counts(events: &[serde_json::Value]) -> Vec<(u64, u64)> {
    events
        .iter()
        .map(|e| (e["done"].as_u64().unwrap(), e["total"].as_u64().unwrap()))
        .collect()
}

/// The key of `stage` in a `--json` run.
fn key_of(run: &Run, stage: &str) -> String {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("event").is_none() && v["stage"] == stage)
        .map(|v| v["key"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no line for `{stage}` in:\n{}", run.stdout))
}

const CMD_PIPELINE: &str = r#"
name: progress
stages:
  train:
    cmd: |
      for i in 1 2 3; do echo "progress $i/3 loss=0.$i" >> "$HCPIPE_PROGRESS"; done
      echo "epoch three of three" >> "$HCPIPE_PROGRESS"
      echo trained > {out}/model.txt
  after:
    cmd: "cat {in.train}/model.txt > {out}/copy.txt"
    needs: [train]
"#;

#[test]
fn a_cmd_stage_reports_progress_as_json_events() {
    let p = Project::new();
    p.write("p.yaml", CMD_PIPELINE);
    let run = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(run.status_of("train"), "ran");
    let ev = events(&run, "train");
    assert_eq!(counts(&ev), [(1, 3), (2, 3), (3, 3)], "{}", run.stdout);
    for (i, e) in ev.iter().enumerate() {
        let loss = e["metrics"]["loss"].as_f64().unwrap();
        assert_eq!(loss, [0.1, 0.2, 0.3][i]);
        assert!(e["elapsed_s"].as_f64().unwrap() >= 0.0, "{e}");
    }
    assert_eq!(ev[2]["eta_s"], 0.0, "nothing left after 3/3");
    // A stage that reports nothing has no events.
    assert!(events(&run, "after").is_empty());
    // Its events come before its own line.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let last_event = lines
        .iter()
        .rposition(|l| l.contains("\"event\":\"progress\""))
        .unwrap();
    let own = lines
        .iter()
        .position(|l| l.contains("\"stage\":\"train\"") && l.contains("\"status\""))
        .unwrap();
    assert!(last_event < own, "{}", run.stdout);
    // The line that does not parse is ignored, and counted in the log.
    let log = std::fs::read_to_string(
        p.cache()
            .join("logs")
            .join(format!("{}.log", key_of(&run, "train"))),
    )
    .unwrap();
    assert!(
        log.contains("hcpipe: 1 line(s) written to $HCPIPE_PROGRESS were ignored")
            && log.contains("`epoch three of three`"),
        "{log}"
    );
    // The run's progress folder is gone with the run.
    let left: Vec<String> = std::fs::read_dir(p.cache().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Without `--json` and without a terminal, progress prints nothing: stderr
/// keeps its one line per stage.
#[test]
fn plain_stderr_has_no_progress() {
    let p = Project::new();
    p.write("p.yaml", CMD_PIPELINE);
    let run = p.run(&["run", "p.yaml"]).ok();
    assert!(!run.stderr.contains("progress"), "{}", run.stderr);
    assert!(!run.stderr.contains("1/3"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// The path of `$HCPIPE_PROGRESS` differs from run to run, and a stage may
/// write progress or not: its key is the same either way.
#[test]
fn progress_is_not_in_the_key() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: keys
stages:
  s:
    cmd: |
      case "$HCPIPE_PROGRESS" in {out}*) echo "progress file inside out" >&2; exit 1;; esac
      test -f "$HCPIPE_PROGRESS" || { echo "no progress file" >&2; exit 1; }
      if [ -n "$WRITE_PROGRESS" ]; then echo "progress 1/1" >> "$HCPIPE_PROGRESS"; fi
      echo same > {out}/x.txt
"#,
    );
    let quiet = Run::from(
        p.cmd(&["run", "p.yaml", "--json"])
            .env_remove("WRITE_PROGRESS")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(events(&quiet, "s").is_empty());
    // A nested hcpipe (one run inside another's cmd stage) gives its stages its own file.
    let talking = Run::from(
        p.cmd(&["run", "p.yaml", "--json", "--force", "s"])
            .env("WRITE_PROGRESS", "1")
            .env("HCPIPE_PROGRESS", p.path().join("outer"))
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(talking.status_of("s"), "ran");
    assert_eq!(counts(&events(&talking, "s")), [(1, 1)]);
    assert!(!p.path().join("outer").exists());
    assert_eq!(key_of(&quiet, "s"), key_of(&talking, "s"));
    let again = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(again.status_of("s"), "cached");
    assert_eq!(key_of(&again, "s"), key_of(&quiet, "s"));
}

/// A progress line that does not parse never fails a stage, and a stage
/// that fails still reports what it wrote before.
#[test]
fn bad_progress_never_fails_a_stage() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: bad
stages:
  ok:
    cmd: |
      printf 'progress 5/4\nprogress x\n\n\nprogress 1/2 a=1 a=2\nprogress 2/2' >> "$HCPIPE_PROGRESS"
      echo fine > {out}/x.txt
  fails:
    cmd: |
      echo "progress 1/10 loss=9" >> "$HCPIPE_PROGRESS"
      exit 3
"#,
    );
    let run = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.status_of("ok"), "ran");
    assert_eq!(
        counts(&events(&run, "ok")),
        [(2, 2)],
        "an unterminated last line counts once the stage is done"
    );
    assert_eq!(counts(&events(&run, "fails")), [(1, 10)]);
    let log = std::fs::read_to_string(
        p.cache()
            .join("logs")
            .join(format!("{}.log", key_of(&run, "ok"))),
    )
    .unwrap();
    assert!(log.contains("hcpipe: 3 line(s)"), "{log}");
    assert!(log.contains("DONE is larger than TOTAL"), "{log}");
}

const TORCH_PIPELINE: &str = r#"
name: torch-progress
stages:
  dataset:
    op: synth
    params: {n_train_ad: 6, n_train_cn: 6, n_val_ad: 4, n_val_cn: 4, seed: 0}
  crop_left: {op: crop, needs: [dataset], params: {region: left_hc}}
  cnn: {op: train_cnn, needs: [crop_left], params: {epochs: 3, seed: 0}}
  ae: {op: train_ae, needs: [crop_left], params: {epochs: 2}}
"#;

/// `history.tsv` of a stage's artifact.
fn history(p: &Project, stage: &str) -> hcpipe::artifact::history::History {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = Path::new(v["path"].as_str().unwrap());
    hcpipe::artifact::history::History::read(&dir.join("history.tsv")).unwrap()
}

/// The torch worker reports each epoch (loss, balanced accuracy, seconds),
/// in a worker process per stage and in the run's shared worker alike; the
/// numbers are the ones `history.tsv` keeps.
#[test]
fn a_torch_stage_reports_each_epoch() {
    if !crate::lab::worker_built() {
        return;
    }
    for server in ["0", "1"] {
        let p = Project::new();
        p.write("p.yaml", TORCH_PIPELINE);
        let run = Run::from(
            p.cmd(&["run", "p.yaml", "--json", "--jobs", "2"])
                .env("HCPIPE_TORCH_SERVER", server)
                .output()
                .unwrap(),
        )
        .ok();
        let cnn = events(&run, "cnn");
        assert_eq!(
            counts(&cnn),
            [(1, 3), (2, 3), (3, 3)],
            "server={server}: {}",
            run.stdout
        );
        let kept = history(&p, "cnn");
        for (e, h) in cnn.iter().zip(&kept.0) {
            let m = &e["metrics"];
            assert_eq!(m["loss"].as_f64(), Some(h.loss), "server={server}: {e}");
            assert_eq!(m["bacc"].as_f64(), h.balanced_accuracy, "{e}");
            assert!(m["epoch_s"].as_f64().unwrap() >= 0.0, "{e}");
        }
        let ae = events(&run, "ae");
        assert_eq!(counts(&ae), [(1, 2), (2, 2)], "server={server}");
        let kept = history(&p, "ae");
        for (e, h) in ae.iter().zip(&kept.0) {
            assert_eq!(e["metrics"]["loss"].as_f64(), Some(h.loss), "{e}");
            assert!(
                e["metrics"].get("bacc").is_none(),
                "an AE has no accuracy: {e}"
            );
        }
        assert!(events(&run, "crop_left").is_empty());
    }
}

/// On a terminal: a bar per running stage with its count and metrics, and
/// finished stages' lines above. The stage waits (for a file the test writes)
/// after its first report, so the bar is on screen when the test looks.
#[test]
fn a_terminal_shows_a_bar_per_running_stage() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no `script` (util-linux) to give hcpipe a terminal");
        return;
    }
    let p = Project::new();
    let release = p.path().join("release");
    p.write(
        "p.yaml",
        &format!(
            r#"
name: bars
stages:
  first:
    cmd: "echo 1 > {{out}}/x.txt"
  train:
    needs: [first]
    cmd: |
      echo "progress 1/3 loss=0.25" >> "$HCPIPE_PROGRESS"
      i=0; while [ ! -e {release} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
      echo "progress 3/3 loss=0.125" >> "$HCPIPE_PROGRESS"
      echo done > {{out}}/y.txt
"#,
            release = release.display()
        ),
    );
    let hcpipe = p.cmd(&["run", "p.yaml"]);
    let line: Vec<String> = std::iter::once(hcpipe.get_program())
        .chain(hcpipe.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .current_dir(p.path())
        .env("TERM", "xterm-256color")
        .env_remove("HCPIPE_CACHE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let reader = {
        let screen = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    let start = Instant::now();
    while !(text().contains("1/3") && text().contains("loss=0.25")) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no bar showed 1/3:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&release, "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let shown = text();
    assert!(status.success(), "{shown}");
    // Under the bar, the stage's name; above it, the finished stage's line.
    let bar_at = shown.find("1/3").unwrap();
    let before = &shown[..bar_at];
    assert!(before.contains("train"), "{shown}");
    assert!(
        before.contains("first"),
        "the finished stage's line: {shown}"
    );
    assert!(shown.contains("[="), "a drawn bar: {shown}");
    assert!(shown.contains("ran     train"), "{shown}");
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Under Slurm the job writes its progress file on the shared cache, and the
/// runner reads it at its polls and once more when the job is done.
#[test]
fn a_slurm_job_reports_progress() {
    if !slurm_up() {
        return;
    }
    let p = Project::new();
    // And the members of a matrix stage, which go as one job array.
    let sweep = r#"
  sweep:
    matrix: {n: [1, 2]}
    cmd: 'echo "progress ${matrix.n}/2 n=${matrix.n}" >> "$HCPIPE_PROGRESS"; echo x > {out}/x'
"#;
    p.write("p.yaml", &format!("{CMD_PIPELINE}{sweep}"));
    let run = Run::from(
        p.cmd(&["run", "p.yaml", "--json", "--executor", "slurm"])
            .env("HCPIPE_SLURM_POLL", "0.3")
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(run.status_of("train"), "ran");
    let ev = events(&run, "train");
    assert_eq!(counts(&ev).last(), Some(&(3, 3)), "{}", run.stdout);
    assert_eq!(ev.last().unwrap()["metrics"]["loss"], 0.3);
    let log = std::fs::read_to_string(
        p.cache()
            .join("logs")
            .join(format!("{}.log", key_of(&run, "train"))),
    )
    .unwrap();
    assert!(log.contains("hcpipe: 1 line(s)"), "{log}");
    for n in [1, 2] {
        let member = format!("sweep[n={n}]");
        let ev = events(&run, &member);
        assert_eq!(counts(&ev), [(n, 2)], "{member}: {}", run.stdout);
        assert_eq!(ev[0]["metrics"]["n"], n as f64);
    }
}
