//! PyTorch parity: the lab's own Python classes load the worker's
//! checkpoints with `load_state_dict` (strict) and compute the same outputs.
//!
//! Skipped, with a message, when the repository's `.venv/bin/python` has no
//! torch (the Makefile's `make torch` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use hcpipe_torch::models::{AutoEncoder, CustomNetwork};
use serde_json::json;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::support::*;

fn venv_python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(python)
}

/// A deterministic, non-trivial input batch (no global RNG).
fn input_batch() -> Tensor {
    let n = 3 * 30 * 40 * 30;
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 7919 % 1000) as f32) / 1000.0)
        .collect();
    Tensor::from_slice(&values).reshape([3, 1, 30, 40, 30])
}

#[test]
fn python_lab_classes_load_checkpoints_and_agree() {
    let Some(python) = venv_python() else {
        eprintln!("SKIPPED python_lab_classes_load_checkpoints_and_agree: .venv/bin/python with torch not found (run `make torch`)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.3,
        seed: 5,
        ..Crop::lab(4, 1)
    }
    .write(&crop);
    // One epoch each, so BatchNorm running statistics are not the defaults.
    let cnn_dir = work.path().join("cnn");
    run_ok(&job(
        work.path(),
        "train_cnn",
        json!({"epochs": 1, "lr": 1e-3, "batch_size": 2}),
        vec![input("c", "crop", &crop)],
        &cnn_dir,
    ));
    let ae_dir = work.path().join("ae");
    run_ok(&job(
        work.path(),
        "train_ae",
        json!({"epochs": 1}),
        vec![input("c", "crop", &crop)],
        &ae_dir,
    ));

    let x = input_batch();
    let vs = VarStore::new(Device::Cpu);
    let net = CustomNetwork::new(&vs.root());
    hcpipe_torch::weights::load(&vs, &cnn_dir.join("weights.safetensors"), "train_cnn").unwrap();
    let logits = tch::no_grad(|| net.forward_t(&x, false));
    let vs = VarStore::new(Device::Cpu);
    let ae = AutoEncoder::new(&vs.root());
    hcpipe_torch::weights::load(&vs, &ae_dir.join("weights.safetensors"), "train_ae").unwrap();
    let (code, recon) = tch::no_grad(|| ae.forward_t(&x, false));
    let expected = work.path().join("expected.safetensors");
    Tensor::write_safetensors(
        &[
            ("x", &x),
            ("logits", &logits),
            ("code", &code),
            ("recon", &recon),
        ],
        &expected,
    )
    .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/worker/lab_parity.py");
    let out = Command::new(python)
        .arg(script)
        .args([
            cnn_dir.join("weights.safetensors"),
            ae_dir.join("weights.safetensors"),
            expected,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cnn logits max diff") && stdout.contains("ae recon max diff"),
        "{stdout}"
    );
    eprintln!("{stdout}");
}
