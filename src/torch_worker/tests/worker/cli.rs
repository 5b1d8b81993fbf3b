//! The worker's command line: version, and clean errors on bad jobs.

use serde_json::json;

use crate::support::*;

#[test]
fn version_names_libtorch_and_cuda() {
    let out = worker(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libtorch 2.11"), "{text}");
    assert!(text.contains("CUDA"), "{text}");
}

#[test]
fn garbage_job_file_is_a_clean_error() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("job.json");
    std::fs::write(&path, "{ not json").unwrap();
    let err = run_err(&path);
    assert!(
        err.contains("job.json") && err.contains("not an hcpipe job file"),
        "{err}"
    );

    let missing = work.path().join("absent.json");
    let err = run_err(&missing);
    assert!(err.contains("absent.json"), "{err}");
}

#[test]
fn missing_input_names_the_needs() {
    let work = tempfile::tempdir().unwrap();
    let job = job(
        work.path(),
        "train_cnn",
        json!({"epochs": 1}),
        vec![],
        &work.path().join("out"),
    );
    let err = run_err(&job);
    assert!(
        err.contains("needs an upstream `crop` stage") && err.contains("needs"),
        "{err}"
    );
}

#[test]
fn bad_params_and_unknown_op_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop::lab(4, 2).write(&crop);
    let inputs = vec![input("crop_left", "crop", &crop)];
    let j = job(
        work.path(),
        "train_cnn",
        json!({"epoch": 1}),
        inputs.clone(),
        &work.path().join("o1"),
    );
    assert!(run_err(&j).contains("unknown field `epoch`"));
    let j = job(
        work.path(),
        "train_cnn",
        json!({"epochs": 1, "shift": 3}),
        inputs.clone(),
        &work.path().join("o2"),
    );
    assert!(run_err(&j).contains("exceeds the 2 voxels of margin"));
    let j = job(
        work.path(),
        "soft_vote",
        json!({}),
        inputs,
        &work.path().join("o3"),
    );
    assert!(run_err(&j).contains("no op `soft_vote`"));
}

#[test]
fn damaged_crop_artifacts_are_reported_with_their_file() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop::lab(4, 2).write(&crop);
    std::fs::remove_file(crop.join("train.safetensors")).unwrap();
    let inputs = vec![input("crop_left", "crop", &crop)];
    let j = job(
        work.path(),
        "train_ae",
        json!({"epochs": 1}),
        inputs.clone(),
        &work.path().join("o1"),
    );
    let err = run_err(&j);
    assert!(
        err.contains("train.safetensors") && err.contains("rebuild"),
        "{err}"
    );

    Crop::lab(4, 2).write(&crop);
    std::fs::write(
        crop.join("train.tsv"),
        "participant_id\tsession_id\tdiagnosis\tlabel\tage\tsex\tMMS\nsub-1\tses-M00\tAD\t1\t70\tF\t29\n",
    )
    .unwrap();
    let err = run_err(&j);
    assert!(
        err.contains("train.tsv") && err.contains("1 rows") && err.contains("4 patches"),
        "{err}"
    );

    // A model without weights: evaluate says which upstream to rebuild.
    let model = work.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    Crop::lab(4, 2).write(&crop);
    let inputs = vec![
        input("crop_left", "crop", &crop),
        input("cnn", "train_cnn", &model),
    ];
    let j = job(
        work.path(),
        "evaluate",
        json!({}),
        inputs,
        &work.path().join("o2"),
    );
    let err = run_err(&j);
    assert!(
        err.contains("weights.safetensors") && err.contains("train_cnn"),
        "{err}"
    );
}
