//! The CUDA path: ignored by default (CI has no GPU); run them on a GPU
//! machine with `cargo test --release -p hcpipe-torch -- --ignored gpu::`.
//! Each fails, rather than skips, when libtorch sees no CUDA device.

use std::path::Path;

use serde_json::json;
use tch::Tensor;

use crate::support::*;

fn require_cuda() {
    assert!(
        tch::Cuda::is_available(),
        "these tests need a CUDA device visible to libtorch"
    );
}

fn weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(path).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn history_losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("history.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// The autoencoder has no dropout, so a step replayed from a CUDA graph must
/// compute what the same step run eagerly computes (up to cuDNN's
/// non-deterministic backward reductions).
#[test]
#[ignore = "needs a CUDA GPU"]
fn graph_steps_match_eager_steps() {
    require_cuda();
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        patch: [8, 8, 8],
        seed: 3,
        ..Crop::lab(16, 1)
    }
    .write(&crop);
    let train = |name: &str, graphs: &str| {
        let out = work.path().join(name);
        let m = run_ok_env(
            &job(
                work.path(),
                "train_ae",
                json!({"epochs": 3, "seed": 2, "batch_size": 2, "device": "cuda"}),
                vec![input("crop_left", "crop", &crop)],
                &out,
            ),
            &[("HCPIPE_CUDA_GRAPHS", graphs)],
        );
        assert_eq!(m["device"], "cuda:0", "{m}");
        (m, out)
    };
    let (eager, eager_dir) = train("eager", "0");
    let (graphed, graphed_dir) = train("graphed", "1");
    assert_eq!(eager["cuda_graph"], false, "{eager}");
    assert_eq!(graphed["cuda_graph"], true, "{graphed}");
    for (a, b) in history_losses(&eager_dir)
        .iter()
        .zip(history_losses(&graphed_dir))
    {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "epoch losses {a} vs {b}");
    }
    let (wa, wb) = (
        weights(&eager_dir.join("weights.safetensors")),
        weights(&graphed_dir.join("weights.safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    for ((name, a), (_, b)) in wa.iter().zip(&wb) {
        let diff = (a - b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]).max(1e-6);
        assert!(
            diff <= 1e-3 * scale,
            "`{name}` differs by {diff} (scale {scale})"
        );
    }
}

/// The CNN (dropout inside the captured step) learns a separable signal on
/// the GPU, and its GPU evaluation agrees with a CPU evaluation of the same
/// weights.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cnn_learns_on_cuda_and_cpu_evaluation_agrees() {
    require_cuda();
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.5,
        seed: 11,
        ..Crop::lab(8, 8)
    }
    .write(&crop);
    let model = work.path().join("model");
    let m = run_ok(&job(
        work.path(),
        "train_cnn",
        json!({"epochs": 6, "lr": 1e-3, "seed": 1, "batch_size": 2, "device": "cuda"}),
        vec![input("crop_left", "crop", &crop)],
        &model,
    ));
    assert_eq!(m["device"], "cuda:0", "{m}");
    assert_eq!(m["cuda_graph"], true, "{m}");
    assert!(m["train_balanced_accuracy"].as_f64().unwrap() > 0.8, "{m}");
    let ages = work.path().join("ages");
    make_age_filter(&ages, &[1, 3]);
    let evaluate = |device: &str| {
        let out = work.path().join(format!("eval-{device}"));
        let e = run_ok(&job(
            work.path(),
            "evaluate",
            json!({"device": device}),
            vec![
                input("cnn", "train_cnn", &model),
                input("crop_left", "crop", &crop),
                input("old", "age_filter", &ages),
            ],
            &out,
        ));
        (
            e,
            std::fs::read_to_string(out.join("predictions.tsv")).unwrap(),
        )
    };
    let (gpu, gpu_rows) = evaluate("cuda");
    let (cpu, cpu_rows) = evaluate("cpu");
    assert_eq!(gpu["device"], "cuda:0");
    // cuDNN convolutions use TF32 by default (as in PyTorch): close, not equal.
    for (g, c) in gpu_rows.lines().zip(cpu_rows.lines()).skip(1) {
        let (g, c): (Vec<&str>, Vec<&str>) = (g.split('\t').collect(), c.split('\t').collect());
        assert_eq!(g[..3], c[..3], "same subject, label and prediction");
        let (pg, pc): (f64, f64) = (g[4].parse().unwrap(), c[4].parse().unwrap());
        assert!(
            (pg - pc).abs() < 1e-2,
            "P(AD) {pg} on the GPU vs {pc} on the CPU"
        );
    }
    let (lg, lc) = (
        gpu["validation"]["mean_loss"].as_f64().unwrap(),
        cpu["validation"]["mean_loss"].as_f64().unwrap(),
    );
    assert!((lg - lc).abs() <= 1e-2 * lc.abs().max(1e-3), "{lg} vs {lc}");
}
