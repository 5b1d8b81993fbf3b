//! The shipped pipelines load, validate and form the expected graphs.

use crate::common::*;

fn dag(name: &str) -> String {
    let p = Project::new();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    p.run(&["dag", path.to_str().unwrap()]).ok().stdout
}

#[test]
fn demo_and_oasis_have_the_labs_stages() {
    for name in ["demo.yaml", "oasis.yaml"] {
        let text = dag(name);
        for stage in [
            "dataset",
            "demographics",
            "crop_left",
            "cnn_right",
            "soft_vote",
            "codes_left",
            "clusters",
        ] {
            assert!(text.contains(stage), "{name} lacks {stage}:\n{text}");
        }
        assert!(
            text.contains("soft_vote (soft_vote)  ← eval_left, eval_right, old_validation"),
            "{text}"
        );
    }
    assert!(dag("oasis.yaml").contains("dataset (fetch)"));
    assert!(dag("demo.yaml").contains("dataset (synth)"));
}

#[test]
fn lr_sweep_expands_three_members_and_gathers_them() {
    let text = dag("lr-sweep.yaml");
    for lr in ["0.00001", "0.0001", "0.001"] {
        assert!(
            text.contains(&format!("cnn[lr={lr}] (train_cnn)")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "eval[lr={lr}] (evaluate)  ← cnn[lr={lr}], crop_left, old_validation"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains(
            "table (collect)  ← cnn[lr=0.00001], cnn[lr=0.0001], cnn[lr=0.001], eval[lr=0.00001]"
        ),
        "{text}"
    );
}
