//! Fixture artifacts for the report op, laid out as each producing op
//! writes them, in temp dirs.

use std::path::{Path, PathBuf};

use hcpipe::ops::Input;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn input(stage: &str, op: &str, dir: &Path) -> Input {
    Input {
        stage: stage.into(),
        op: Some(op.into()),
        dir: dir.to_path_buf(),
        content: Some(format!("{stage}-content")),
    }
}

/// The lab's raw OASIS T1, beside the repository (absent: `None`).
pub fn real_raw_t1() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/oasis1/raw/sub-OASIS10019_ses-M00_T1w.nii.gz");
    p.exists().then_some(p)
}

/// A grey-matter-probability-like phantom of the lab's [121, 145, 121] grid
/// (C order, value[x, y, z]): a folded cortical ribbon, deep grey nuclei and
/// two bright hippocampi inside the lab's crop boxes.
pub fn phantom() -> Vec<f32> {
    let (nx, ny, nz) = (121usize, 145usize, 121usize);
    let mut v = Vec::with_capacity(nx * ny * nz);
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                let (dx, dy, dz) = (
                    (x as f32 - 60.0) / 52.0,
                    (y as f32 - 70.0) / 64.0,
                    (z as f32 - 58.0) / 50.0,
                );
                let r = (dx * dx + dy * dy + dz * dz).sqrt();
                let folds = 0.05 * ((dx * 9.0).sin() * (dy * 11.0).cos() + (dz * 10.0).sin());
                let mut p = if (0.82 + folds..1.0 + folds).contains(&r) {
                    0.85
                } else if r < 0.82 + folds {
                    0.12
                } else {
                    0.0
                };
                // Deep grey nuclei either side of the midline.
                for cx in [45.0f32, 75.0] {
                    let d = ((x as f32 - cx) / 9.0).powi(2)
                        + ((y as f32 - 78.0) / 12.0).powi(2)
                        + ((z as f32 - 62.0) / 9.0).powi(2);
                    if d < 1.0 {
                        p = 0.7;
                    }
                }
                // Hippocampi: elongated along y, in the crop boxes' centres.
                for cx in [40.0f32, 80.0] {
                    let d = ((x as f32 - cx) / 6.0).powi(2)
                        + ((y as f32 - 70.0) / 14.0).powi(2)
                        + ((z as f32 - 42.0) / 5.0).powi(2);
                    if d < 1.0 {
                        p = 0.95 - 0.3 * d;
                    }
                }
                v.push(p);
            }
        }
    }
    v
}

/// A dataset artifact: lab_1 tables listing `pids` (the first is the
/// validation table's first), a preprocessed `.pt` for each and, with
/// `raw`, that NIfTI as the first subject's raw T1.
pub fn dataset(dir: &Path, pids: &[&str], raw: Option<&Path>) -> PathBuf {
    let root = dir.join("dataset");
    let lab = root.join("OASIS-1_dataset/tsv_files/lab_1");
    let mut bids = hcpipe::artifact::dataset::BIDS_COLUMNS.join("\t") + "\n";
    let mut table = String::from("participant_id\tsession_id\tdiagnosis\n");
    for p in pids {
        bids.push_str(&format!(
            "{p}\tses-M00\tOAS1\tF\t\t70\t0.0\tCN\tR\t29.0\t0.0\tCN\n"
        ));
        table.push_str(&format!("{p}\tses-M00\tCN\n"));
    }
    write(&lab.join("OASIS_BIDS.tsv"), &bids);
    write(&lab.join("validation.tsv"), &table);
    write(&lab.join("train.tsv"), &table);
    let volume = phantom();
    for p in pids {
        let pt = root.join(format!(
            "OASIS-1_dataset/CAPS/subjects/{p}/ses-M00/deeplearning_prepare_data/image_based/custom/\
             {p}_ses-M00_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt"
        ));
        std::fs::create_dir_all(pt.parent().unwrap()).unwrap();
        hcpipe::artifact::pt::write_f32(&pt, &[1, 121, 145, 121], &volume).unwrap();
    }
    if let Some(raw) = raw {
        let to = root.join(format!(
            "OASIS-1_dataset/raw/{}_ses-M00_T1w.nii.gz",
            pids[0]
        ));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(raw, to).unwrap();
    }
    root
}

/// A `demographics` artifact: the seed's population tables and two checks.
pub fn demographics(dir: &Path) -> PathBuf {
    let d = dir.join("demographics");
    write(
        &d.join("population.tsv"),
        "split\tdiagnosis\tN\tage\t%sexF\teducation\tMMS\tCDR=0\tCDR=0.5\tCDR=1\tCDR=2\n\
         all\tAD\t73\t77.5 ± 7.4\t63\t2.7 ± 1.3\t22.7 ± 3.6\t0\t45\t26\t2\n\
         all\tCN\t304\t44.0 ± 23.3\t62.2\t3.5 ± 1.2\t29.7 ± 0.6\t124\t0\t0\t0\n\
         train\tAD\t58\t77.4 ± 7.5\t69\t2.8 ± 1.4\t22.6 ± 3.6\t0\t37\t19\t2\n\
         train\tCN\t242\t43.4 ± 23.5\t62\t3.6 ± 1.2\t29.8 ± 0.5\t97\t0\t0\t0\n\
         validation\tAD\t15\t78.2 ± 6.6\t40\t2.5 ± 1.0\t22.9 ± 3.6\t0\t8\t7\t0\n\
         validation\tCN\t62\t46.3 ± 22.6\t62.9\t3.4 ± 1.3\t29.6 ± 0.7\t27\t0\t0\t0\n",
    );
    write(
        &d.join("checks.tsv"),
        "check\tgroup\ttest\tstatistic\tp_value\tdetail\n\
         age AD vs CN\tall\tWelch t\t17.2\t0.000000\tAD older: <b>biased</b>\n\
         sex train vs validation\tAD\tFisher exact\t0.3\t0.040000\tdiffers at alpha 0.05\n",
    );
    d
}

/// A `train_cnn` artifact over `epochs` epochs, loss falling at `rate`.
pub fn train_cnn(dir: &Path, name: &str, epochs: usize, rate: f64, device: &str) -> PathBuf {
    let d = dir.join(name);
    let mut h = String::from("epoch\tloss\tbalanced_accuracy\n");
    for e in 0..epochs {
        let loss = 0.7 * (-(rate) * e as f64).exp();
        let ba = 0.5 + 0.45 * (1.0 - (-(rate) * e as f64).exp());
        h.push_str(&format!("{e}\t{loss}\t{ba}\n"));
    }
    write(&d.join("history.tsv"), &h);
    write(
        &d.join("metrics.json"),
        &format!("{{\"device\": \"{device}\", \"epochs\": {epochs}}}"),
    );
    d
}

fn metric_group(ba: f64, n: u64, loss: Option<f64>) -> serde_json::Value {
    let mut g = serde_json::json!({
        "accuracy": ba + 0.01, "sensitivity": ba - 0.05, "specificity": ba + 0.05,
        "balanced_accuracy": ba, "n": n,
    });
    if let Some(l) = loss {
        g["mean_loss"] = serde_json::json!(l);
    }
    g
}

/// An `evaluate` artifact (`with_old`: also the age-filtered metrics).
pub fn evaluate(dir: &Path, name: &str, ba: f64, with_old: bool) -> PathBuf {
    let d = dir.join(name);
    let mut m =
        serde_json::json!({"validation": metric_group(ba, 77, Some(0.41)), "device": "cuda:0"});
    if with_old {
        m["old"] = metric_group(ba - 0.1, 30, Some(0.52));
    }
    write(&d.join("metrics.json"), &m.to_string());
    d
}

pub fn soft_vote(dir: &Path, ba: f64) -> PathBuf {
    let d = dir.join("vote");
    let m = serde_json::json!({"validation": metric_group(ba, 77, None), "old": metric_group(ba - 0.1, 30, None), "members": ["eval_left", "eval_right"]});
    write(&d.join("metrics.json"), &m.to_string());
    d
}

fn tensor_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A `train_ae` artifact: loss history and one subject's [30, 40, 30]
/// input (the phantom's left crop) and a smoothed "reconstruction".
pub fn train_ae(dir: &Path, pid: &str) -> PathBuf {
    let d = dir.join("ae");
    let mut h = String::from("epoch\tloss\n");
    for e in 0..12 {
        h.push_str(&format!(
            "{e}\t{}\n",
            0.05 * (-0.3 * e as f64).exp() + 0.002
        ));
    }
    write(&d.join("history.tsv"), &h);
    let full = phantom();
    let at = |x: usize, y: usize, z: usize| full[(x * 145 + y) * 121 + z];
    let mut input = Vec::new();
    let mut output = Vec::new();
    for x in 25..55 {
        for y in 50..90 {
            for z in 27..57 {
                input.push(at(x, y, z));
                // A blurred copy: the mean of the 3×3×3 neighbourhood.
                let mut s = 0.0;
                for (a, b, c) in
                    (0..27).map(|i| (x + i / 9 - 1, y + (i / 3) % 3 - 1, z + i % 3 - 1))
                {
                    s += at(a, b, c);
                }
                output.push(s / 27.0);
            }
        }
    }
    let (bi, bo) = (tensor_bytes(&input), tensor_bytes(&output));
    let views = vec![
        (
            "input".to_string(),
            TensorView::new(Dtype::F32, vec![30, 40, 30], &bi).unwrap(),
        ),
        (
            "output".to_string(),
            TensorView::new(Dtype::F32, vec![30, 40, 30], &bo).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &d.join("sample.safetensors")).unwrap();
    write(
        &d.join("sample.json"),
        &format!("{{\"participant_id\": \"{pid}\"}}"),
    );
    write(&d.join("metrics.json"), "{\"device\": \"cuda:0\"}");
    d
}

/// A `gmm` artifact of 40 subjects in two clusters (`with_demographics`:
/// the age and MMS columns a gmm stage that needed the dataset writes).
pub fn gmm(dir: &Path, with_demographics: bool) -> PathBuf {
    let d = dir.join(if with_demographics {
        "gmm"
    } else {
        "gmm_plain"
    });
    let mut t = String::from("participant_id\tlabel\tcluster\tproba_0\tproba_1");
    if with_demographics {
        t.push_str("\tage\tMMS");
    }
    t.push('\n');
    for i in 0..40 {
        let cluster = i % 2;
        let (age, mms) = if cluster == 0 {
            (30.0 + i as f64, 30.0 - (i % 3) as f64)
        } else {
            (65.0 + i as f64 / 2.0, 20.0 + (i % 7) as f64)
        };
        t.push_str(&format!(
            "sub-{i:02}\t{cluster}\t{cluster}\t{}\t{}",
            1 - cluster,
            cluster
        ));
        if with_demographics {
            // One subject without an MMS: left out of the plot, not an error.
            if i == 3 {
                t.push_str(&format!("\t{age}\t"));
            } else {
                t.push_str(&format!("\t{age}\t{mms}"));
            }
        }
        t.push('\n');
    }
    write(&d.join("assignments.tsv"), &t);
    let m = serde_json::json!({
        "n": 40, "n_features": 80, "n_components": 2, "mean_log_likelihood": -123.456,
        "converged": true, "weights": [0.5, 0.5],
        "lab": {"accuracy": 0.81, "sensitivity": 0.98, "specificity": 0.77, "balanced_accuracy": 0.876},
        "matched": {"accuracy": 0.81, "sensitivity": 0.98, "specificity": 0.77, "balanced_accuracy": 0.876},
        "cluster_to_label": [0, 1], "adjusted_rand_index": 0.42,
        "clusters": [
            {"cluster": 0, "weight": 0.5, "n": 20, "n_ad": 0, "n_cn": 20, "mean_age": 49.0, "mean_mms": 29.0},
            {"cluster": 1, "weight": 0.5, "n": 20, "n_ad": 20, "n_cn": 0, "mean_age": 75.0, "mean_mms": 23.0}
        ]
    });
    write(&d.join("metrics.json"), &m.to_string());
    d
}

/// An `aggregate` stage's table.json: "left CNN" and "soft vote" over 3 folds × 2 seeds on
/// `test` (balanced accuracy, ROC AUC), and the left CNN's pooled row.
pub fn aggregate(dir: &Path) -> PathBuf {
    use hcpipe::artifact::table::{Cell, Column, MemberValue, PaperTable, PooledCell, Row};
    let cell = |stage: &str, base: f64| {
        let mut members = Vec::new();
        for fold in 0..3 {
            for seed in 0..2 {
                members.push(MemberValue {
                    member: format!("{stage}[fold={fold},seed={seed}]"),
                    axes: serde_json::json!({"fold": fold, "seed": seed})
                        .as_object()
                        .unwrap()
                        .clone(),
                    value: base + 0.05 * fold as f64 + 0.01 * seed as f64,
                });
            }
        }
        let n = members.len() as f64;
        let mean = members.iter().map(|m| m.value).sum::<f64>() / n;
        let sd = (members
            .iter()
            .map(|m| (m.value - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0))
            .sqrt();
        Some(Cell {
            n: members.len(),
            mean,
            sd: Some(sd),
            min: base,
            max: base + 0.11,
            ci95: None,
            members,
        })
    };
    let column = |metric: &str, header: &str| Column {
        set: "test".into(),
        metric: metric.into(),
        header: header.into(),
    };
    let table = PaperTable {
        schema: 1,
        columns: vec![
            column("balanced_accuracy", "balanced accuracy"),
            column("roc_auc", "ROC AUC"),
        ],
        interval: false,
        rows: vec![
            Row::Mean {
                label: "left CNN".into(),
                stage: "eval_left".into(),
                axes: vec!["fold".into(), "seed".into()],
                cells: vec![cell("eval_left", 0.6), cell("eval_left", 0.7)],
            },
            Row::Pooled {
                label: "left CNN".into(),
                stage: "eval_left".into(),
                members: vec![],
                cells: vec![
                    Some(PooledCell {
                        value: 0.66,
                        n_members: 6,
                        n_predictions: 120,
                    }),
                    None,
                ],
            },
            Row::Mean {
                label: "soft vote".into(),
                stage: "vote".into(),
                axes: vec!["fold".into(), "seed".into()],
                cells: vec![cell("vote", 0.65), None],
            },
        ],
        notes: vec!["row `soft vote` has no `test.roc_auc` in any member: cell left empty".into()],
    };
    let out = dir.join("aggregate");
    std::fs::create_dir_all(&out).unwrap();
    table.write(&out.join("table.json")).unwrap();
    out
}
