//! Fixtures: `crop` artifacts made in the test, job files, and running the worker.

use std::path::{Path, PathBuf};
use std::process::Output;

use hcpipe::ops::{Input, JobSpec, Params};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tch::Tensor;

pub const SHIFT: i64 = 2;
pub const PATCH: [i64; 3] = [30, 40, 30];

/// A `crop` artifact to make: `n_train` and `n_val` subjects with
/// alternating labels (0, 1, 0, …). Voxels are uniform noise in
/// [0, `noise`) plus `signal` for AD (label 1) patches, so `signal > 0`
/// makes the classes separable by mean intensity. Values come from a ChaCha8
/// stream: no global torch RNG, which tests running in parallel would share.
#[derive(Clone, Copy)]
pub struct Crop {
    pub region: &'static str,
    pub n_train: usize,
    pub n_val: usize,
    pub signal: f32,
    pub noise: f32,
    /// The lab's patch (the CNN needs one that pools to 4×5×4; the AE takes any).
    pub patch: [i64; 3],
    pub seed: u64,
}

impl Crop {
    /// `n_train`/`n_val` subjects of the lab's 30×40×30 patches (stored 34×44×34).
    pub fn lab(n_train: usize, n_val: usize) -> Crop {
        Crop {
            region: "left_hc",
            n_train,
            n_val,
            signal: 0.0,
            noise: 0.5,
            patch: PATCH,
            seed: 1,
        }
    }

    pub fn write(self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let stored = self.patch.map(|d| d + 2 * SHIFT);
        let meta = json!({
            "region": self.region,
            "box": {"x": [25, 55], "y": [50, 90], "z": [27, 57]},
            "shift": SHIFT,
            "patch_shape": self.patch,
            "stored_shape": stored,
        });
        std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let voxels: i64 = stored.iter().product();
        for (split, n, first_id) in [("train", self.n_train, 0), ("validation", self.n_val, 1000)] {
            let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
            let mut values = Vec::with_capacity(n * voxels as usize);
            for &label in &labels {
                for _ in 0..voxels {
                    values.push(rng.random::<f32>() * self.noise + self.signal * label as f32);
                }
            }
            let patches =
                Tensor::from_slice(&values).reshape([n as i64, 1, stored[0], stored[1], stored[2]]);
            let labels_t = Tensor::from_slice(&labels);
            let file = dir.join(format!("{split}.safetensors"));
            Tensor::write_safetensors(&[("patches", &patches), ("labels", &labels_t)], file)
                .unwrap();
            let mut tsv =
                String::from("participant_id\tsession_id\tdiagnosis\tlabel\tage\tsex\tMMS\n");
            for (i, &label) in labels.iter().enumerate() {
                let diagnosis = if label == 1 { "AD" } else { "CN" };
                tsv.push_str(&format!(
                    "sub-OASIS1{:04}\tses-M00\t{diagnosis}\t{label}\t70\tF\t29\n",
                    first_id + i
                ));
            }
            std::fs::write(dir.join(format!("{split}.tsv")), tsv).unwrap();
        }
    }
}

/// An `age_filter` artifact listing the given validation subjects.
pub fn make_age_filter(dir: &Path, ids: &[usize]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tsv = String::from("participant_id\tsession_id\tdiagnosis\tage\n");
    for i in ids {
        tsv.push_str(&format!("sub-OASIS1{:04}\tses-M00\tCN\t70\n", 1000 + i));
    }
    std::fs::write(dir.join("subjects.tsv"), tsv).unwrap();
}

pub fn input(stage: &str, op: &str, dir: &Path) -> Input {
    Input {
        stage: stage.to_string(),
        op: Some(op.to_string()),
        dir: dir.to_path_buf(),
        content: None,
    }
}

pub fn params(v: serde_json::Value) -> Params {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("params must be an object, got {other}"),
    }
}

/// Writes a job file for `op` into `work` and returns its path.
pub fn job(work: &Path, op: &str, p: serde_json::Value, inputs: Vec<Input>, out: &Path) -> PathBuf {
    let spec = JobSpec {
        op: op.to_string(),
        stage: format!("{op}_stage"),
        params: params(p),
        inputs,
        out: out.to_path_buf(),
        threads: 2,
    };
    let path = work.join(format!(
        "{op}-{}.json",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

/// Runs the worker binary with `args`.
pub fn worker(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hcpipe-torch"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a job file and insists on success; returns the metrics it wrote.
pub fn run_ok(job: &Path) -> serde_json::Value {
    run_ok_env(job, &[])
}

/// [`run_ok`] with extra environment variables for the worker.
pub fn run_ok_env(job: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hcpipe-torch"))
        .args(["--job", job.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "worker failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let spec: JobSpec = serde_json::from_str(&std::fs::read_to_string(job).unwrap()).unwrap();
    serde_json::from_str(&std::fs::read_to_string(spec.out.join("metrics.json")).unwrap()).unwrap()
}

/// Runs a job file that must fail; returns its stderr.
pub fn run_err(job: &Path) -> String {
    let out = worker(&["--job", job.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panics: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one paragraph: {stderr}"
    );
    stderr
}
