//! The CUDA path: ignored by default (CI has no GPU); run them on a GPU
//! machine with `cargo test --release -p hcpipe-torch -- --ignored gpu::`
//! (bench/gpu_run.sh does). Each fails, rather than skips, when libtorch
//! sees no CUDA device.

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

/// The trainable tensors of a checkpoint (BatchNorm's running statistics and
/// counters left out), sorted by name.
fn trainable(path: &Path) -> Vec<(String, Tensor)> {
    let mut w: Vec<(String, Tensor)> = Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".weight") || n.ends_with(".bias"))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// A step replayed from a CUDA graph computes what the same step run eagerly
/// computes. The autoencoder has no dropout, so the two runs differ only by
/// cuDNN's non-deterministic reductions: a small learning rate and one epoch
/// keep those from growing, and "the same" is measured against how far the
/// weights moved (a third run with lr 1e-12 gives the starting weights).
#[test]
#[ignore = "needs a CUDA GPU"]
fn graph_steps_match_eager_steps() {
    require_cuda();
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        patch: [8, 8, 8],
        seed: 3,
        ..Crop::lab(32, 1)
    }
    .write(&crop);
    let train = |name: &str, lr: f64, graphs: &str| {
        let out = work.path().join(name);
        let m = run_ok_env(
            &job(
                work.path(),
                "train_ae",
                json!({"epochs": 1, "lr": lr, "seed": 2, "batch_size": 2, "device": "cuda"}),
                vec![input("crop_left", "crop", &crop)],
                &out,
            ),
            &[("HCPIPE_CUDA_GRAPHS", graphs)],
        );
        assert_eq!(m["device"], "cuda:0", "{m}");
        (m, trainable(&out.join("weights.safetensors")))
    };
    // 16 steps: 3 eager, then 13 replays of the captured step.
    let (eager, we) = train("eager", 1e-4, "0");
    let (graphed, wg) = train("graphed", 1e-4, "1");
    let (_, w0) = train("start", 1e-12, "0");
    assert_eq!(eager["cuda_graph"], false, "{eager}");
    assert_eq!(graphed["cuda_graph"], true, "{graphed}");
    let (le, lg) = (
        eager["best_loss"].as_f64().unwrap(),
        graphed["best_loss"].as_f64().unwrap(),
    );
    assert!(
        (le - lg).abs() <= 1e-3 * le.abs(),
        "loss {le} eager vs {lg} graphed"
    );
    assert_eq!(we.len(), wg.len());
    // Over all trainable values at once: a conv bias followed by BatchNorm
    // has no true gradient (BatchNorm removes it), so Adam walks it by ±lr on
    // rounding noise, differently in every run; the weights that learn
    // dominate the sums.
    let (mut moved, mut apart) = (0.0, 0.0);
    for (((_, e), (_, g)), (_, s)) in we.iter().zip(&wg).zip(&w0) {
        moved += (e - s).square().sum(tch::Kind::Double).double_value(&[]);
        apart += (e - g).square().sum(tch::Kind::Double).double_value(&[]);
    }
    let (moved, apart) = (moved.sqrt(), apart.sqrt());
    assert!(moved > 0.0, "training did not move the weights");
    assert!(
        apart <= 0.05 * moved,
        "graphed and eager weights are {apart} apart; training moved them by {moved}"
    );
}

/// The CNN (dropout inside the captured step) learns a separable signal on
/// the GPU with and without graphs, and a CPU evaluation of the GPU-trained
/// weights agrees with the GPU's.
#[test]
#[ignore = "needs a CUDA GPU"]
fn cnn_learns_on_cuda_and_cpu_evaluation_agrees() {
    require_cuda();
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.5,
        seed: 11,
        ..Crop::lab(16, 8)
    }
    .write(&crop);
    let train = |name: &str, graphs: &str| {
        let out = work.path().join(name);
        let m = run_ok_env(
            &job(
                work.path(),
                "train_cnn",
                json!({"epochs": 4, "lr": 1e-3, "seed": 1, "device": "cuda"}),
                vec![input("crop_left", "crop", &crop)],
                &out,
            ),
            &[("HCPIPE_CUDA_GRAPHS", graphs)],
        );
        assert_eq!(m["device"], "cuda:0", "{m}");
        (m, out)
    };
    let (eager, _) = train("eager", "0");
    let (graphed, model) = train("graphed", "1");
    assert_eq!(graphed["cuda_graph"], true, "{graphed}");
    for m in [&eager, &graphed] {
        assert!(
            m["train_balanced_accuracy"].as_f64().unwrap() > 0.8,
            "eager: {eager}\ngraphed: {graphed}"
        );
    }
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
