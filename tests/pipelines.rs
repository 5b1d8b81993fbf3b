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

#[test]
fn paper_pipelines_fan_out_folds_and_seeds_into_one_table() {
    for (name, folds, seeds) in [("paper-demo.yaml", 3, 2), ("paper.yaml", 5, 3)] {
        let text = dag(name);
        let members = |stage: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{stage}[")))
                .count()
        };
        assert_eq!(members("folds"), folds, "{name}:\n{text}");
        assert_eq!(members("cnn_left"), folds * seeds, "{name}:\n{text}");
        assert_eq!(members("eval_right"), folds * seeds, "{name}:\n{text}");
        assert!(text.contains("table (aggregate)"), "{name}:\n{text}");
        // Each hemisphere is cropped once, whatever the grid.
        assert_eq!(members("crop_left"), 0, "{name}:\n{text}");
    }
}
