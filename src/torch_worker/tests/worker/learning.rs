//! Training on the CPU: determinism, learning, and the downstream ops' files.

use serde_json::json;

use crate::support::*;

#[test]
fn same_seed_same_weights_bit_for_bit() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.2,
        seed: 7,
        ..Crop::lab(4, 1)
    }
    .write(&crop);
    let inputs = vec![input("crop_left", "crop", &crop)];
    let run = |seed: u64, name: &str| {
        let out = work.path().join(name);
        run_ok(&job(
            work.path(),
            "train_cnn",
            json!({"epochs": 2, "batch_size": 2, "seed": seed}),
            inputs.clone(),
            &out,
        ));
        (
            std::fs::read(out.join("weights.safetensors")).unwrap(),
            std::fs::read_to_string(out.join("history.tsv")).unwrap(),
        )
    };
    let (a, ha) = run(5, "a");
    let (b, hb) = run(5, "b");
    let (c, _) = run(6, "c");
    assert!(a == b, "same seed must give identical weights");
    assert_eq!(ha, hb);
    assert!(a != c, "another seed must give other weights");
}

#[test]
fn separable_signal_is_learnt_and_evaluated() {
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
        json!({"epochs": 3, "lr": 1e-3, "seed": 1}),
        vec![input("crop_left", "crop", &crop)],
        &model,
    ));
    let history = std::fs::read_to_string(model.join("history.tsv")).unwrap();
    assert_eq!(
        history.lines().next(),
        Some("epoch\tloss\tbalanced_accuracy")
    );
    assert_eq!(history.lines().count(), 4);
    assert!(
        m["train_balanced_accuracy"].as_f64().unwrap() > 0.8,
        "{m}\n{history}"
    );
    assert_eq!(m["device"], "cpu");
    assert_eq!(m["n_train"], 8);
    let best = m["best_epoch"].as_u64().unwrap() as usize;
    let best_line: Vec<&str> = history.lines().nth(best + 1).unwrap().split('\t').collect();
    assert_eq!(
        best_line[1].parse::<f64>().unwrap(),
        m["best_loss"].as_f64().unwrap()
    );

    // Evaluate on validation (8 subjects), with 4 "old" ones.
    let ages = work.path().join("ages");
    make_age_filter(&ages, &[1, 3, 5, 7]);
    let eval = work.path().join("eval");
    let e = run_ok(&job(
        work.path(),
        "evaluate",
        json!({"batch_size": 3}),
        vec![
            input("cnn", "train_cnn", &model),
            input("crop_left", "crop", &crop),
            input("old", "age_filter", &ages),
        ],
        &eval,
    ));
    assert_eq!(e["validation"]["n"], 8);
    assert_eq!(e["old"]["n"], 4);
    assert!(
        e["validation"]["balanced_accuracy"].as_f64().unwrap() > 0.8,
        "{e}"
    );
    let preds = std::fs::read_to_string(eval.join("predictions.tsv")).unwrap();
    let mut lines = preds.lines();
    assert_eq!(
        lines.next(),
        Some("participant_id\ttrue_label\tpredicted_label\tproba0\tproba1")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 8);
    // mean_loss recomputed from the written probabilities.
    let mut loss = 0.0;
    for r in &rows {
        let (p0, p1): (f64, f64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!((p0 + p1 - 1.0).abs() < 1e-9);
        assert_eq!(r[2], if p1 > p0 { "1" } else { "0" });
        loss -= if r[1] == "1" { p1.ln() } else { p0.ln() };
    }
    let mean = e["validation"]["mean_loss"].as_f64().unwrap();
    assert!((loss / 8.0 - mean).abs() < 1e-6, "{loss} vs {mean}");
    // roc_auc recomputed from the written P(AD) by counting (AD, CN) pairs, a tie counting 1/2.
    let scored: Vec<(bool, f64)> = rows
        .iter()
        .map(|r| (r[1] == "1", r[4].parse().unwrap()))
        .collect();
    let (mut won, mut pairs) = (0.0, 0.0);
    for &(_, p_ad) in scored.iter().filter(|s| s.0) {
        for &(_, p_cn) in scored.iter().filter(|s| !s.0) {
            pairs += 1.0;
            won += if p_ad > p_cn {
                1.0
            } else if p_ad == p_cn {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = e["validation"]["roc_auc"].as_f64().unwrap();
    assert!((won / pairs - auc).abs() < 1e-12, "{won}/{pairs} vs {auc}");

    // A model evaluated on another region's crop is refused.
    let right = work.path().join("crop_right");
    Crop {
        region: "right_hc",
        ..Crop::lab(4, 2)
    }
    .write(&right);
    let err = run_err(&job(
        work.path(),
        "evaluate",
        json!({}),
        vec![
            input("cnn", "train_cnn", &model),
            input("crop_right", "crop", &right),
        ],
        &work.path().join("eval2"),
    ));
    assert!(err.contains("trained on region `left_hc`"), "{err}");
}

#[test]
fn autoencoder_loss_decreases() {
    // The AE takes any patch size: 8³ keeps this test fast. Pure noise: the
    // AE learns its level and spread (in PyTorch too the per-voxel loss
    // drops to 0.6–0.7 of the first epoch's with this setup).
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        patch: [8, 8, 8],
        seed: 3,
        ..Crop::lab(16, 1)
    }
    .write(&crop);
    let model = work.path().join("ae");
    let m = run_ok(&job(
        work.path(),
        "train_ae",
        json!({"epochs": 5, "seed": 2, "batch_size": 2}),
        vec![input("crop_left", "crop", &crop)],
        &model,
    ));
    let (first, best) = (
        m["first_loss"].as_f64().unwrap(),
        m["best_loss"].as_f64().unwrap(),
    );
    assert!(best < 0.85 * first, "{m}");
    let history = std::fs::read_to_string(model.join("history.tsv")).unwrap();
    assert_eq!(history.lines().next(), Some("epoch\tloss"));
    assert_eq!(history.lines().count(), 6);
}

#[test]
fn autoencoder_codes_are_written() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.3,
        seed: 3,
        ..Crop::lab(2, 2)
    }
    .write(&crop);
    let model = work.path().join("ae");
    run_ok(&job(
        work.path(),
        "train_ae",
        json!({"epochs": 1}),
        vec![input("crop_left", "crop", &crop)],
        &model,
    ));

    for (split, n) in [("train", 2), ("validation", 2)] {
        let out = work.path().join(format!("codes_{split}"));
        let c = run_ok(&job(
            work.path(),
            "extract_codes",
            json!({"split": split}),
            vec![
                input("ae", "train_ae", &model),
                input("crop_left", "crop", &crop),
            ],
            &out,
        ));
        assert_eq!(c["n"], n);
        let codes = std::fs::read_to_string(out.join("codes.tsv")).unwrap();
        let header: Vec<&str> = codes.lines().next().unwrap().split('\t').collect();
        assert_eq!(header.len(), 82);
        assert_eq!(&header[..3], &["participant_id", "label", "f0"]);
        assert_eq!(header[81], "f79");
        assert_eq!(codes.lines().count(), n + 1);
        let row: Vec<&str> = codes.lines().nth(2).unwrap().split('\t').collect();
        assert_eq!(row[1], "1");
        assert!(row[2..]
            .iter()
            .all(|v| v.parse::<f32>().unwrap().is_finite()));
    }

    // A folder without an AE checkpoint: the error names the file and the op to rebuild.
    let err = run_err(&job(
        work.path(),
        "extract_codes",
        json!({}),
        vec![
            input("ae", "train_ae", &crop),
            input("crop_left", "crop", &crop),
        ],
        &work.path().join("bad"),
    ));
    assert!(
        err.contains("weights.safetensors") && err.contains("train_ae"),
        "{err}"
    );
}

/// Not a test: `cargo test --release -p hcpipe-torch -- --ignored --nocapture epoch_time`
/// prints the CPU seconds per epoch for 300 lab-size patches.
#[test]
#[ignore]
fn epoch_time_300_patches() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.3,
        ..Crop::lab(300, 2)
    }
    .write(&crop);
    for op in ["train_cnn", "train_ae"] {
        let m = run_ok(&job(
            work.path(),
            op,
            json!({"epochs": 1}),
            vec![input("c", "crop", &crop)],
            &work.path().join(op),
        ));
        println!(
            "{op}: {} s per epoch (300 patches, 2 threads, {})",
            m["seconds_per_epoch"], m["device"]
        );
    }
}
