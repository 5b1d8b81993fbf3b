//! Subject lists: learning stages take their subjects from the crop by a list's set.

use std::path::Path;

use serde_json::json;

use crate::support::*;
use hcpipe::ops::Input;

/// A subject-list folder: one `<set>.tsv` per (set, subjects), subjects as
/// (crop index, AD?) where the crop index is `Crop`'s (0.. train, 1000.. validation).
fn write_list(dir: &Path, sets: &[(&str, &[(usize, bool)])]) {
    std::fs::create_dir_all(dir).unwrap();
    for (set, subjects) in sets {
        let mut tsv = String::from("participant_id\tsession_id\tdiagnosis\tage\tsex\tMMS\n");
        for (i, ad) in subjects.iter() {
            let d = if *ad { "AD" } else { "CN" };
            tsv.push_str(&format!("sub-OASIS1{i:04}\tses-M00\t{d}\t70\tF\t29.0\n"));
        }
        std::fs::write(dir.join(format!("{set}.tsv")), tsv).unwrap();
    }
}

/// `Crop`'s labels alternate: odd indices are AD.
fn s(i: usize) -> (usize, bool) {
    (i, i % 2 == 1)
}

#[test]
fn a_list_selects_its_subjects_whatever_their_order() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.3,
        seed: 5,
        ..Crop::lab(8, 4)
    }
    .write(&crop);
    // Train on lab-train and lab-validation subjects mixed; test on the others.
    let train = [s(0), s(1), s(2), s(3), s(1000), s(1001)];
    let test = [s(1003), s(4), s(1002)];
    let mut train_rev = train;
    train_rev.reverse();
    write_list(
        &work.path().join("list"),
        &[("train", &train), ("test", &test)],
    );
    write_list(
        &work.path().join("list_rev"),
        &[("train", &train_rev), ("test", &test)],
    );
    let train_on = |list: &str, out: &str| {
        let m = run_ok(&job(
            work.path(),
            "train_cnn",
            json!({"epochs": 1, "seed": 3, "batch_size": 2}),
            vec![
                input("crop_left", "crop", &crop),
                input(list, "kfold", &work.path().join(list)),
            ],
            &work.path().join(out),
        ));
        let weights = std::fs::read(work.path().join(out).join("weights.safetensors")).unwrap();
        (m, weights)
    };
    let (m, a) = train_on("list", "cnn");
    let (_, b) = train_on("list_rev", "cnn_rev");
    assert_eq!(m["n_train"], 6, "{m}");
    assert!(a == b, "the list's row order must not change the weights");

    let eval = work.path().join("eval");
    let e = run_ok(&job(
        work.path(),
        "evaluate",
        json!({"set": "test"}),
        vec![
            input("cnn", "train_cnn", &work.path().join("cnn")),
            input("crop_left", "crop", &crop),
            // A cmd stage's list: found by its files, not its op.
            Input {
                op: None,
                ..input("folds", "cmd", &work.path().join("list"))
            },
        ],
        &eval,
    ));
    assert_eq!(e["test"]["n"], 3, "{e}");
    assert_eq!(e["set"], "test");
    assert!(e.get("validation").is_none(), "{e}");
    let preds = std::fs::read_to_string(eval.join("predictions.tsv")).unwrap();
    let ids: Vec<&str> = preds
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, ["sub-OASIS10004", "sub-OASIS11002", "sub-OASIS11003"]);

    let ae = work.path().join("ae");
    let m = run_ok(&job(
        work.path(),
        "train_ae",
        json!({"epochs": 1}),
        vec![
            input("crop_left", "crop", &crop),
            input("list", "split", &work.path().join("list")),
        ],
        &ae,
    ));
    assert_eq!(m["n_train"], 6, "{m}");
    let codes = work.path().join("codes");
    let c = run_ok(&job(
        work.path(),
        "extract_codes",
        json!({"set": "test"}),
        vec![
            input("ae", "train_ae", &ae),
            input("crop_left", "crop", &crop),
            input("list", "split", &work.path().join("list")),
        ],
        &codes,
    ));
    assert_eq!(
        (c["n"].clone(), c["set"].clone()),
        (json!(3), json!("test"))
    );
    assert!(c.get("split").is_none(), "{c}");
}

#[test]
fn bad_lists_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop::lab(4, 2).write(&crop);
    let model = work.path().join("cnn");
    run_ok(&job(
        work.path(),
        "train_cnn",
        json!({"epochs": 1}),
        vec![input("crop_left", "crop", &crop)],
        &model,
    ));
    let list = work.path().join("list");
    // `model`: the op of the model need, if the op takes one (its weights are never read here).
    let err_of = |op: &str, p: serde_json::Value, model_op: Option<&str>| {
        let mut inputs = vec![
            input("crop_left", "crop", &crop),
            input("folds", "kfold", &list),
        ];
        if let Some(model_op) = model_op {
            inputs.insert(0, input("model", model_op, &model));
        }
        run_err(&job(work.path(), op, p, inputs, &work.path().join("out")))
    };

    // Subjects the crop does not hold are named, with the fix.
    write_list(
        &list,
        &[
            ("train", &[s(0), s(1), s(7777), s(9998)]),
            ("validation", &[s(2)]),
        ],
    );
    let e = err_of("train_cnn", json!({"epochs": 1}), None);
    assert!(
        e.contains("set `train` of subject list `folds` names 2 subject(s) that crop `crop_left` does not hold")
            && e.contains("sub-OASIS17777 ses-M00, sub-OASIS19998 ses-M00")
            && e.contains("`subjects: all`"),
        "{e}"
    );

    // A set the list lacks.
    write_list(&list, &[("train", &[s(0), s(1)]), ("validation", &[s(2)])]);
    let e = err_of("evaluate", json!({"set": "test"}), Some("train_cnn"));
    assert!(
        e.contains("subject list `folds` has no `test` set")
            && e.contains("it has train, validation"),
        "{e}"
    );

    // A training set with one class only.
    write_list(&list, &[("train", &[s(0), s(2)]), ("validation", &[s(1)])]);
    let e = err_of("train_ae", json!({"epochs": 1}), None);
    assert!(
        e.contains("training set of subject list `folds` has no AD subjects"),
        "{e}"
    );

    // A diagnosis the crop disagrees with.
    write_list(
        &list,
        &[("train", &[(0, true), s(1)]), ("validation", &[s(2)])],
    );
    let e = err_of("train_cnn", json!({"epochs": 1}), None);
    assert!(
        e.contains("gives sub-OASIS10000 ses-M00 the diagnosis AD but crop `crop_left` has CN"),
        "{e}"
    );

    // `split` with a list, `set` without one.
    write_list(&list, &[("train", &[s(0), s(1)]), ("validation", &[s(2)])]);
    let e = err_of(
        "extract_codes",
        json!({"split": "validation"}),
        Some("train_ae"),
    );
    assert!(
        e.contains("name the list's file with `set: train|validation|test`"),
        "{e}"
    );
    let e = run_err(&job(
        work.path(),
        "evaluate",
        json!({"set": "test"}),
        vec![
            input("cnn", "train_cnn", &model),
            input("crop_left", "crop", &crop),
        ],
        &work.path().join("out"),
    ));
    assert!(
        e.contains("`set: test` picks a file of a subject list, but none of its needs is one"),
        "{e}"
    );
}
