//! The `report` op end to end: each section from fixture artifacts, errors
//! that name their file, and the whole page rendered by headless Chromium
//! (screenshot kept in `target/report-screenshot.png`).

mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hcpipe::ops::{report, Input, Metrics, OpCtx, OpError, Params};

use fixtures::input;

struct Ran {
    result: Result<Metrics, OpError>,
    out: PathBuf,
}

impl Ran {
    fn ok(&self) -> &Metrics {
        match &self.result {
            Ok(m) => m,
            Err(e) => panic!("report failed: {e}"),
        }
    }
    fn err(&self) -> String {
        match &self.result {
            Ok(_) => panic!("report succeeded, expected an error"),
            Err(e) => e.to_string(),
        }
    }
    fn html(&self) -> String {
        std::fs::read_to_string(self.out.join("report.html")).unwrap()
    }
    fn images(&self) -> Vec<String> {
        let m = self.ok();
        m["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
    /// Every image the page shows is a PNG in the artifact, at least `min` pixels wide.
    fn check_images(&self, min_width: u32) {
        for f in self.images() {
            let img = image::open(self.out.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(
                img.width() >= min_width && img.height() >= 200,
                "{f}: {}×{}",
                img.width(),
                img.height()
            );
            assert!(
                self.html().contains(&format!("src=\"{f}\"")),
                "{f} not linked"
            );
        }
    }
}

fn run_report(dir: &Path, inputs: &[Input], params: serde_json::Value) -> Ran {
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let params: Params = params.as_object().unwrap().clone();
    let ctx = OpCtx {
        stage: "report",
        params: &params,
        inputs,
        out: &out,
        threads: 1,
        scratch: None,
    };
    Ran {
        result: report::run(&ctx),
        out,
    }
}

fn no_params() -> serde_json::Value {
    serde_json::json!({})
}

#[test]
fn report_needs_something_to_show() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run_report(
        dir.path(),
        &[Input {
            stage: "prep".into(),
            op: None,
            dir: dir.path().into(),
            content: None,
        }],
        no_params(),
    );
    let msg = ran.err();
    assert!(
        msg.contains("nothing to show") && msg.contains("`needs`") && msg.contains("train_cnn"),
        "{msg}"
    );
    let bad =
        report::check_params(serde_json::json!({"titel": "x"}).as_object().unwrap()).unwrap_err();
    assert!(bad.contains("titel") && bad.contains("title"), "{bad}");
}

#[test]
fn report_population_section() {
    let dir = tempfile::tempdir().unwrap();
    let d = fixtures::demographics(dir.path());
    let ran = run_report(
        dir.path(),
        &[input("demographics", "demographics", &d)],
        no_params(),
    );
    let m = ran.ok();
    assert_eq!(
        m["sections"],
        serde_json::json!(["provenance", "population-1"])
    );
    // Provenance + all/train/validation + checks.
    assert_eq!(m["tables"], 5);
    let html = ran.html();
    for s in [
        "all subjects",
        "train subjects",
        "validation subjects",
        "Bias checks",
    ] {
        assert!(html.contains(s), "{s}");
    }
    assert!(html.contains("<td>78.2 ± 6.6</td>"));
    assert!(html.contains("<th>%sexF</th><th>education</th>"));
    // The `split` column became the tables' headings, not a column.
    assert!(!html.contains("<th>split</th>"));
    assert!(html.contains("AD older: &lt;b&gt;biased&lt;/b&gt;") && !html.contains("<b>"));

    std::fs::remove_file(d.join("population.tsv")).unwrap();
    let msg = run_report(
        dir.path(),
        &[input("demographics", "demographics", &d)],
        no_params(),
    )
    .err();
    assert!(msg.contains("population.tsv"), "{msg}");
}

#[test]
fn report_images_section_on_the_real_shape() {
    let dir = tempfile::tempdir().unwrap();
    let ds = fixtures::dataset(dir.path(), &["sub-OASIS10002", "sub-OASIS10005"], None);
    let ran = run_report(dir.path(), &[input("dataset", "synth", &ds)], no_params());
    let m = ran.ok();
    assert_eq!(m["subject"], "sub-OASIS10002");
    assert_eq!(
        ran.images(),
        ["preprocessed.png", "crop_left.png", "crop_right.png"]
    );
    ran.check_images(400);
    let html = ran.html();
    assert!(html.contains("Images of sub-OASIS10002"));
    assert!(html.contains("x 25:55, y 50:90, z 27:57") && html.contains("x 65:95"));

    // `subject` picks another; an unknown one names the missing file and the param.
    let ran = run_report(
        dir.path(),
        &[input("dataset", "synth", &ds)],
        serde_json::json!({"subject": "sub-OASIS10005"}),
    );
    assert_eq!(ran.ok()["subject"], "sub-OASIS10005");
    let msg = run_report(
        dir.path(),
        &[input("dataset", "fetch", &ds)],
        serde_json::json!({"subject": "sub-X"}),
    )
    .err();
    assert!(
        msg.contains("OASIS_BIDS.tsv: no subject `sub-X`") && msg.contains("`subject`"),
        "{msg}"
    );
}

#[test]
fn report_raw_t1_slices() {
    let Some(raw) = fixtures::real_raw_t1() else {
        eprintln!(
            "skipped: the lab's raw T1 (shared/data/oasis1/raw) is not beside the repository"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ds = fixtures::dataset(dir.path(), &["sub-OASIS10019"], Some(&raw));
    let ran = run_report(dir.path(), &[input("dataset", "fetch", &ds)], no_params());
    assert_eq!(ran.images()[0], "raw.png");
    ran.check_images(400);
    let html = ran.html();
    assert!(
        html.contains("raw T1 (256×256×160), slices x = 80, y = 130, z = 60"),
        "{html}"
    );
    // 256 rows of the turned sagittal slice at 260 px: the figure is 260 px of image plus margins.
    let img = image::open(ran.out.join("raw.png")).unwrap();
    assert!(img.height() > 260 && img.height() < 420);
}

#[test]
fn report_training_curves_per_sweep_member() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixtures::train_cnn(dir.path(), "a", 20, 0.2, "cuda:0");
    let b = fixtures::train_cnn(dir.path(), "b", 20, 0.05, "cuda:0");
    let inputs = [
        input("train[lr=0.001]", "train_cnn", &a),
        input("train[lr=0.0001]", "train_cnn", &b),
    ];
    let ran = run_report(
        dir.path(),
        &inputs,
        serde_json::json!({"pipeline": "oasis-lab"}),
    );
    assert_eq!(
        ran.images(),
        ["train_0.png", "train_1.png", "train_all.png"]
    );
    ran.check_images(800);
    let html = ran.html();
    assert!(html.contains("Trained on: cuda:0."));
    assert!(html.contains("Pipeline oasis-lab;"));
    assert!(
        html.contains("<td>train[lr=0.001]</td><td>20</td>"),
        "{html}"
    );
    // The artifact column is the input's content hash (the fixtures' is
    // `STAGE-content`), never the folder's name.
    assert!(
        html.contains("<td>train[lr=0.0</td><td>cuda:0</td>"),
        "{html}"
    );

    std::fs::write(a.join("history.tsv"), "epoch\tloss\n0\t0.5\n").unwrap();
    let msg = run_report(dir.path(), &inputs, no_params()).err();
    assert!(
        msg.contains("a/history.tsv") && msg.contains("no column `balanced_accuracy`"),
        "{msg}"
    );
}

#[test]
fn report_validation_table() {
    let dir = tempfile::tempdir().unwrap();
    let l = fixtures::evaluate(dir.path(), "l", 0.8, true);
    let r = fixtures::evaluate(dir.path(), "r", 0.7, true);
    let v = fixtures::soft_vote(dir.path(), 0.85);
    let inputs = [
        input("eval_left", "evaluate", &l),
        input("eval_right", "evaluate", &r),
        input("vote", "soft_vote", &v),
    ];
    let ran = run_report(dir.path(), &inputs, no_params());
    let html = ran.html();
    assert!(html.contains("age ≥ 62 (age_filter)"));
    let row = |name: &str| {
        let start = html
            .find(&format!("<tr><th>{name}"))
            .unwrap_or_else(|| panic!("no row {name}"));
        html[start..start + html[start..].find("</tr>").unwrap()].to_string()
    };
    assert_eq!(
        row("eval_left"),
        "<tr><th>eval_left</th><td>77</td><td>0.800</td><td>0.810</td><td>0.750</td><td>0.850</td><td>0.410</td>\
         <td>30</td><td>0.700</td><td>0.710</td><td>0.650</td><td>0.750</td><td>0.520</td>"
    );
    assert!(row("vote (soft vote)")
        .contains("<td>0.850</td><td>0.860</td><td>0.800</td><td>0.900</td><td>–</td>"));
    // Rows in `needs` order: left, right, vote.
    assert!(html.find("eval_left").unwrap() < html.find("<th>eval_right").unwrap());

    // Without age-filtered metrics there is no second group.
    let l = fixtures::evaluate(dir.path(), "l2", 0.8, false);
    let ran = run_report(
        dir.path(),
        &[input("eval_left", "evaluate", &l)],
        no_params(),
    );
    assert!(!ran.html().contains("age ≥ 62"));

    std::fs::write(l.join("metrics.json"), "{\"old\": {}}").unwrap();
    let msg = run_report(
        dir.path(),
        &[input("eval_left", "evaluate", &l)],
        no_params(),
    )
    .err();
    assert!(
        msg.contains("l2/metrics.json") && msg.contains("no `validation` metrics"),
        "{msg}"
    );
}

#[test]
fn report_autoencoder_section() {
    let dir = tempfile::tempdir().unwrap();
    let ae = fixtures::train_ae(dir.path(), "sub-OASIS10002");
    let ran = run_report(
        dir.path(),
        &[input("train_ae", "train_ae", &ae)],
        no_params(),
    );
    assert_eq!(
        ran.images(),
        ["ae_loss_0.png", "ae_input_0.png", "ae_output_0.png"]
    );
    ran.check_images(400);
    let html = ran.html();
    assert!(
        html.contains("Centre slices of the output image of sub-OASIS10002")
            || html.contains("autoencoder output for sub-OASIS10002")
    );

    std::fs::remove_file(ae.join("sample.safetensors")).unwrap();
    let ran = run_report(
        dir.path(),
        &[input("train_ae", "train_ae", &ae)],
        no_params(),
    );
    assert_eq!(ran.images(), ["ae_loss_0.png"]);
    assert!(ran.html().contains("no sample.safetensors"));
}

#[test]
fn report_paper_table_section_and_strip_plot() {
    let dir = tempfile::tempdir().unwrap();
    let t = fixtures::aggregate(dir.path());
    let ran = run_report(dir.path(), &[input("table", "aggregate", &t)], no_params());
    let m = ran.ok();
    assert_eq!(
        m["sections"],
        serde_json::json!(["provenance", "paper-table-0"])
    );
    assert_eq!(ran.images(), ["paper_table_0_0.png"]);
    ran.check_images(480);
    let html = ran.html();
    // left CNN: 0.6 + 0.05 fold + 0.01 seed over 3 folds × 2 seeds: mean 0.655, SD 0.045
    assert!(
        html.contains(
            "<tr><th>left CNN</th><td>6</td><td>0.655 ± 0.045</td><td>0.755 ± 0.045</td></tr>"
        ),
        "{html}"
    );
    assert!(
        html.contains("<tr><th>left CNN (pooled)</th><td>6</td><td>0.660</td><td>–</td></tr>"),
        "{html}"
    );
    assert!(html.contains("sample SD, ddof = 1") && html.contains("Note: row `soft vote`"));
    // one colour per fold (tab10's first three), and the black mean bars
    let img = image::open(ran.out.join("paper_table_0_0.png"))
        .unwrap()
        .to_rgb8();
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    for fold_colour in [[0x1f, 0x77, 0xb4], [0xff, 0x7f, 0x0e], [0x2c, 0xa0, 0x2c]] {
        assert!(
            count(fold_colour) > 100,
            "{fold_colour:?}: {}",
            count(fold_colour)
        );
    }
    assert_eq!(count([0xd6, 0x27, 0x28]), 0, "three folds, three colours");

    std::fs::write(t.join("table.json"), "{}").unwrap();
    let msg = run_report(dir.path(), &[input("table", "aggregate", &t)], no_params()).err();
    assert!(
        msg.contains("table.json") && msg.contains("not an aggregate table"),
        "{msg}"
    );
}

#[test]
fn report_clustering_section() {
    let dir = tempfile::tempdir().unwrap();
    let g = fixtures::gmm(dir.path(), true);
    let ran = run_report(dir.path(), &[input("gmm", "gmm", &g)], no_params());
    assert_eq!(ran.images(), ["clusters_0.png"]);
    ran.check_images(500);
    let img = image::open(ran.out.join("clusters_0.png"))
        .unwrap()
        .to_rgb8();
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    assert!(
        count([0x1f, 0x77, 0xb4]) > 200 && count([0xff, 0x7f, 0x0e]) > 200,
        "both clusters drawn"
    );
    let html = ran.html();
    assert!(
        html.contains("<td>-123.456</td><td>0.420</td><td>[0,1]</td>"),
        "{html}"
    );
    assert!(html.contains("<td>0.810</td><td>0.980</td><td>0.770</td><td>0.876</td>"));
    assert!(html.contains(
        "<td>1</td><td>0.500</td><td>20</td><td>20</td><td>0</td><td>75.000</td><td>23.000</td>"
    ));

    let g = fixtures::gmm(dir.path(), false);
    let ran = run_report(dir.path(), &[input("gmm", "gmm", &g)], no_params());
    assert!(ran.images().is_empty());
    assert!(ran.html().contains("no age and MMS columns"));
}

#[test]
fn report_escapes_every_string() {
    let dir = tempfile::tempdir().unwrap();
    let a = fixtures::train_cnn(dir.path(), "a", 3, 0.2, "<img src=x onerror=alert(1)>");
    let ran = run_report(
        dir.path(),
        &[input("<script>alert(1)</script>", "train_cnn", &a)],
        serde_json::json!({"title": "R&D <i>", "pipeline": "\"quoted\""}),
    );
    let html = ran.html();
    assert!(html.contains("<title>R&amp;D &lt;i&gt;</title>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("&quot;quoted&quot;"));
    assert!(!html.contains("<script") && !html.contains("<i>") && !html.contains("<img src=x"));
}

/// Every section's fixture artifacts in one report.
fn full_report(dir: &Path) -> Ran {
    let raw = fixtures::real_raw_t1();
    let pid = if raw.is_some() {
        "sub-OASIS10019"
    } else {
        "sub-OASIS10002"
    };
    let ds = fixtures::dataset(dir, &[pid], raw.as_deref());
    let inputs = [
        input("dataset", "fetch", &ds),
        input("demographics", "demographics", &fixtures::demographics(dir)),
        input(
            "train[lr=0.001]",
            "train_cnn",
            &fixtures::train_cnn(dir, "tl", 25, 0.15, "cuda:0"),
        ),
        input(
            "train[lr=0.0001]",
            "train_cnn",
            &fixtures::train_cnn(dir, "tr", 25, 0.05, "cuda:0"),
        ),
        input(
            "eval_left",
            "evaluate",
            &fixtures::evaluate(dir, "el", 0.8, true),
        ),
        input(
            "eval_right",
            "evaluate",
            &fixtures::evaluate(dir, "er", 0.72, true),
        ),
        input("vote", "soft_vote", &fixtures::soft_vote(dir, 0.84)),
        input("train_ae", "train_ae", &fixtures::train_ae(dir, pid)),
        input("gmm", "gmm", &fixtures::gmm(dir, true)),
    ];
    run_report(
        dir,
        &inputs,
        serde_json::json!({"title": "OASIS-1 AD vs CN", "pipeline": "oasis-lab"}),
    )
}

/// Runs `cmd`, killing it after `limit`; returns its stdout.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}; killed"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(profile: &Path) -> Command {
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        // Lets the page's load event and script run before the dump.
        "--virtual-time-budget=5000",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Whether Chromium is here, installing it with `scripts/ensure-chromium` if
/// needed; `false` (with a printed reason) means "skip".
pub fn have_chromium() -> bool {
    if !Path::new(CHROMIUM).exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-chromium");
        let status = Command::new(&script).status();
        if !Path::new(CHROMIUM).exists() {
            eprintln!(
                "skipped: Chromium is not installed and {} could not install it ({status:?})",
                script.display()
            );
            return false;
        }
    }
    true
}

/// Open `report_dir/report.html` in headless Chromium and return what it
/// loaded, as `loaded=N images=N tables=N`. The page is copied to `tmp` with
/// a probe script that writes those counts into the title (the cache's
/// artifact folders stay untouched).
pub fn loaded_in_chromium(report_dir: &Path, tmp: &Path) -> String {
    let copy = tmp.join("probe-page");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(report_dir).unwrap().flatten() {
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let probe = "<script>window.addEventListener('load', function () {\
        var imgs = Array.prototype.slice.call(document.images);\
        var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;\
        document.title = 'loaded=' + ok + ' images=' + imgs.length + ' tables=' + document.querySelectorAll('table').length;\
        });</script>";
    let page = std::fs::read_to_string(copy.join("report.html")).unwrap();
    let probed = copy.join("probe.html");
    std::fs::write(&probed, page.replace("</body>", &format!("{probe}</body>"))).unwrap();
    let mut dump = chromium(&tmp.join("profile-dump"));
    dump.arg("--dump-dom")
        .arg(format!("file://{}", probed.display()));
    let dom = run_with_limit(dump, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("chromium --dump-dom: {e}"));
    dom.split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or_else(|| panic!("no title in the dumped DOM:\n{dom}"))
        .to_string()
}

#[test]
fn report_renders_in_chromium() {
    if !have_chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ran = full_report(dir.path());
    let m = ran.ok().clone();
    assert_eq!(
        m["sections"],
        serde_json::json!([
            "provenance",
            "population-1",
            "images",
            "training",
            "validation",
            "autoencoder-0",
            "clustering-0"
        ])
    );
    let n_images = m["images"].as_array().unwrap().len();
    assert!(n_images >= 10, "{n_images}");
    ran.check_images(400);

    let title = loaded_in_chromium(&ran.out, dir.path());
    assert_eq!(
        title,
        format!("loaded={n_images} images={n_images} tables={}", m["tables"]),
        "what Chromium loaded"
    );

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let mut cap = chromium(&dir.path().join("profile-shot"));
    cap.arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1400,7000")
        .arg(format!("file://{}", ran.out.join("report.html").display()));
    run_with_limit(cap, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("chromium --screenshot: {e}"));
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.width(), 1400);
    // The page drew more than a blank canvas: plenty of dark (text, slices) pixels.
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
    assert!(dark > 50_000, "{dark} dark pixels");
    eprintln!("screenshot: {}", shot.display());
    // Keep the page beside it for a look by eye.
    let keep = shot.with_file_name("report-page");
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(&keep).unwrap();
    for f in std::fs::read_dir(&ran.out).unwrap().flatten() {
        std::fs::copy(f.path(), keep.join(f.file_name())).unwrap();
    }
}

/// Commits a stage made by `op` with one file to `cache` and returns its key.
fn commit_stage(
    cache: &hcpipe::cache::Cache,
    stage: &str,
    op: &str,
    file: &str,
) -> hcpipe::cache::StageKey {
    use hcpipe::cache::KeyInputs;
    let inputs = KeyInputs {
        cache_version: 1,
        op: Some(op.into()),
        op_version: Some(1),
        cmd: None,
        params: serde_json::json!({"stage": stage}),
        upstream: Default::default(),
        deps: Default::default(),
        outs: Vec::new(),
        env: Default::default(),
    };
    let key = inputs.key();
    let staging = cache.staging(&key).unwrap();
    std::fs::write(staging.out().join(file), "<!DOCTYPE html>").unwrap();
    let meta = hcpipe::cache::store::EntryMeta {
        stage: stage.into(),
        pipeline: "p".into(),
        inputs,
        metrics: Default::default(),
        wall_s: 0.1,
    };
    let _lock = cache.lock_stage(&key).unwrap();
    cache.commit(&staging, &key, meta).unwrap();
    key
}

/// A run record as `hcpipe run` writes it: each stage with its op and key.
fn save_run(
    cache: &hcpipe::cache::Cache,
    id: &str,
    stages: &[(&str, &str, &hcpipe::cache::StageKey)],
) {
    use hcpipe::record::{RunRecord, RunStatus, StageRecord, StageStatus};
    RunRecord {
        id: id.into(),
        pipeline: "p".into(),
        pipeline_path: "p.yaml".into(),
        pipeline_hash: "0".into(),
        git: None,
        params: Default::default(),
        executor: "local".into(),
        started: "2026-01-01T00:00:00Z".into(),
        finished: None,
        status: RunStatus::Ok,
        hcpipe_version: "0".into(),
        runner: None,
        stages: stages
            .iter()
            .map(|(s, op, k)| StageRecord {
                stage: s.to_string(),
                op: Some(op.to_string()),
                params: Default::default(),
                key: (*k).clone(),
                status: StageStatus::Ran,
                wall_s: 0.1,
                metrics: Default::default(),
                error: None,
            })
            .collect(),
    }
    .save(cache)
    .unwrap();
}

#[test]
fn show_prints_where_the_newest_report_is() {
    let project = crate::common::Project::new();
    let cache = hcpipe::cache::Cache::open(&project.cache()).unwrap();
    let plain = commit_stage(&cache, "stats", "collect", "report.html");
    save_run(
        &cache,
        "20260101-000000-000-aaaaaa",
        &[("stats", "collect", &plain)],
    );
    let run = project.run(&["show"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A `report.html` from another op is not a report.
    assert!(!run.stdout.contains("newest report"), "{}", run.stdout);

    let old = commit_stage(&cache, "report_old", "report", "report.html");
    let new = commit_stage(&cache, "report", "report", "report.html");
    save_run(
        &cache,
        "20260102-000000-000-bbbbbb",
        &[("stats", "collect", &plain), ("report", "report", &old)],
    );
    save_run(
        &cache,
        "20260103-000000-000-cccccc",
        &[("stats", "collect", &plain), ("report", "report", &new)],
    );
    save_run(
        &cache,
        "20260104-000000-000-dddddd",
        &[("stats", "collect", &plain)],
    );
    let run = project.run(&["show"]);
    let want = format!(
        "newest report: {}/report.html",
        cache.artifact_dir(&new).display()
    );
    assert!(
        run.stdout.lines().any(|l| l == want),
        "want {want}\n{}",
        run.stdout
    );
}

#[test]
fn report_shows_a_users_own_stages() {
    let dir = tempfile::tempdir().unwrap();
    let l = fixtures::evaluate(dir.path(), "l", 0.8, true);
    // A user's classifier: predictions.tsv and history.tsv in the documented
    // formats, its own metrics.json without the lab's groups.
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(
        mine.join("predictions.tsv"),
        "participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n\
         sub-1\t1\t1\t0.2\t0.8\nsub-2\t0\t0\t0.9\t0.1\nsub-3\t1\t0\t0.6\t0.4\nsub-4\t0\t0\t0.7\t0.3\n",
    )
    .unwrap();
    std::fs::write(
        mine.join("history.tsv"),
        "epoch\tloss\tbalanced_accuracy\n0\t0.9\t0.5\n1\t0.5\t0.75\n",
    )
    .unwrap();
    std::fs::write(
        mine.join("metrics.json"),
        r#"{"auc": 0.875, "old": {"n": 3}}"#,
    )
    .unwrap();
    let inputs = [
        input("eval_left", "evaluate", &l),
        Input {
            stage: "my_cnn".into(),
            op: None,
            dir: mine.clone(),
            content: None,
        },
    ];
    let ran = run_report(dir.path(), &inputs, no_params());
    let html = ran.html();
    let sections = ran.ok()["sections"].clone();
    assert!(
        ["training", "validation", "own"]
            .iter()
            .all(|s| sections.as_array().unwrap().contains(&(*s).into())),
        "{sections}"
    );
    // Its metrics, flattened.
    assert!(html.contains("<h3>my_cnn</h3>"), "no own-stage heading");
    assert!(
        html.contains("<td>auc</td><td>0.875</td>") || html.contains("<th>auc</th><td>0.875</td>"),
        "{html}"
    );
    // Its validation row, computed from its predictions: 3 of 4 right,
    // sensitivity 1/2, specificity 2/2, balanced accuracy 0.75.
    let start = html.find("<tr><th>my_cnn").expect("no validation row");
    let row = &html[start..start + html[start..].find("</tr>").unwrap()];
    assert!(
        row.starts_with(
            "<tr><th>my_cnn</th><td>4</td><td>0.750</td><td>0.750</td><td>0.500</td><td>1.000</td>"
        ),
        "{row}"
    );
    // A user stage alone is something to show.
    let ran = run_report(dir.path(), &inputs[1..], no_params());
    ran.ok();
}
