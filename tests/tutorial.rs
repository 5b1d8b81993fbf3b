//! The README's "Your own stage" tutorial is a test (issue 20, item 8):
//! `pipelines/examples/own-stage.yaml` runs at one epoch with the repository's venv python,
//! and each of its own stages writes what the tutorial says — checked against values computed
//! here from the upstream files, not against numbers written down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::artifact_docs::{repo, venv_python};
use crate::common::*;

/// One row of a `predictions.tsv`.
#[derive(Debug)]
struct Prediction {
    id: String,
    truth: i64,
    predicted: i64,
    proba0: f64,
    proba1: f64,
}

/// A `predictions.tsv`: its header line and its rows.
fn predictions(dir: &Path) -> (String, Vec<Prediction>) {
    let text = std::fs::read_to_string(dir.join("predictions.tsv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("").to_string();
    let rows = lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), 5, "{}: `{l}`", dir.display());
            Prediction {
                id: c[0].to_string(),
                truth: c[1].parse().unwrap(),
                predicted: c[2].parse().unwrap(),
                proba0: c[3].parse().unwrap(),
                proba1: c[4].parse().unwrap(),
            }
        })
        .collect();
    (header, rows)
}

/// ROC AUC by ranks (Mann–Whitney U with mid-ranks for ties), a different route than auc.py's
/// pairwise count.
fn auc_by_ranks(rows: &[Prediction]) -> f64 {
    let mut scored: Vec<(f64, i64)> = rows.iter().map(|r| (r.proba1, r.truth)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_ad = 0.0;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j + 1 < scored.len() && scored[j + 1].0 == scored[i].0 {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_ad += mid_rank * scored[i..=j].iter().filter(|s| s.1 == 1).count() as f64;
        i = j + 1;
    }
    let n_ad = scored.iter().filter(|s| s.1 == 1).count() as f64;
    let n_cn = scored.len() as f64 - n_ad;
    (rank_sum_ad - n_ad * (n_ad + 1.0) / 2.0) / (n_ad * n_cn)
}

struct Tutorial {
    project: Project,
    args: Vec<String>,
}

impl Tutorial {
    fn file(&self, name: &str) -> String {
        self.project.path().join(name).display().to_string()
    }

    fn run(&self, file: &str) -> Run {
        let path = self.file(file);
        let mut args: Vec<&str> = vec!["run", path.as_str(), "--json", "--jobs", "2"];
        args.extend(self.args.iter().map(String::as_str));
        self.project.run(&args)
    }

    fn show(&self, stage: &str) -> (PathBuf, serde_json::Value) {
        let path = self.file("own-stage.yaml");
        let mut args: Vec<&str> = vec!["show", path.as_str(), stage, "--json"];
        args.extend(self.args.iter().map(String::as_str));
        let show = self.project.run(&args).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        assert_eq!(v["current"], true, "{stage}: {}", show.stdout);
        (
            PathBuf::from(v["path"].as_str().unwrap()),
            v["metrics"].clone(),
        )
    }
}

#[test]
fn the_own_stage_tutorial_runs_and_its_stages_write_what_the_readme_says() {
    if !crate::lab::worker_built() {
        return;
    }
    let Some(python) = venv_python() else {
        return;
    };
    // The example folder, copied: nothing is written beside the repository's files.
    let project = Project::new();
    let examples = repo().join("pipelines/examples");
    for name in ["own-stage.yaml", "auc.py", "my_cnn.py"] {
        std::fs::copy(examples.join(name), project.path().join(name)).unwrap();
    }
    let text = std::fs::read_to_string(examples.join("own-stage.yaml")).unwrap();
    // Everything but the vote first (then the vote alone must be what runs): the file up to its last stage.
    let (before_vote, _) = text
        .split_once("\n  vote:\n")
        .expect("own-stage.yaml ends with the `vote` stage");
    project.write("before-vote.yaml", before_vote);
    let t = Tutorial {
        project,
        args: ["python", "epochs=1", "my_epochs=1"]
            .iter()
            .flat_map(|kv| {
                let kv = if *kv == "python" {
                    format!("python={}", python.display())
                } else {
                    kv.to_string()
                };
                ["--set".to_string(), kv]
            })
            .collect(),
    };

    let first = t.run("before-vote.yaml").ok();
    assert_eq!(first.ran().len(), 11, "{}", first.stdout);

    // 1. auc_left: the AUC of the built-in CNN's predictions.
    let (eval_dir, _) = t.show("eval_left");
    let (eval_header, eval_rows) = predictions(&eval_dir);
    let (_, auc_left) = t.show("auc_left");
    assert!(
        (auc_left["auc"].as_f64().unwrap() - auc_by_ranks(&eval_rows)).abs() < 1e-12,
        "{auc_left}"
    );
    assert_eq!(auc_left["n"], eval_rows.len());
    assert_eq!(
        auc_left["n_AD"],
        eval_rows.iter().filter(|r| r.truth == 1).count()
    );

    // 2. my_cnn: predictions.tsv in evaluate's format, for the same subjects; the stage's
    // thread count; 3. one member per learning rate, each with its AUC in the sweep's table.
    let (_, old) = t.show("old_validation");
    let (sweep_dir, _) = t.show("sweep");
    let table = std::fs::read_to_string(sweep_dir.join("table.tsv")).unwrap();
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("lr\tvalidation bacc\told bacc\tAUC"),
        "{table}"
    );
    let rows: BTreeMap<&str, Vec<&str>> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split('\t').collect();
            (cells[0], cells)
        })
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    let mut mine = BTreeMap::new();
    for lr in ["0.001", "0.01"] {
        let (dir, metrics) = t.show(&format!("my_cnn[lr={lr}]"));
        let (header, rows_mine) = predictions(&dir);
        assert_eq!(header, eval_header, "my_cnn.py writes evaluate's columns");
        let ids = |r: &[Prediction]| -> Vec<(String, i64)> {
            r.iter().map(|r| (r.id.clone(), r.truth)).collect()
        };
        assert_eq!(ids(&rows_mine), ids(&eval_rows));
        for r in &rows_mine {
            assert!(
                (r.proba0 + r.proba1 - 1.0).abs() < 1e-9 && (0.0..=1.0).contains(&r.proba1),
                "{r:?}"
            );
            assert_eq!(r.predicted, i64::from(r.proba1 > r.proba0), "{r:?}");
        }
        assert!(dir.join("model.pt").is_file());
        assert_eq!(
            metrics["threads"], 2,
            "HCPIPE_THREADS = resources.cpu: {metrics}"
        );
        assert_eq!(metrics["lr"].as_f64(), lr.parse::<f64>().ok());
        assert_eq!(metrics["validation"]["n"], rows_mine.len());
        assert_eq!(metrics["old"]["n"], old["n"], "{metrics}");
        let correct = rows_mine.iter().filter(|r| r.truth == r.predicted).count() as f64;
        assert_eq!(
            metrics["validation"]["accuracy"].as_f64(),
            Some(correct / rows_mine.len() as f64)
        );
        let (_, auc) = t.show(&format!("my_auc[lr={lr}]"));
        let auc = auc["auc"].as_f64().unwrap();
        assert!((auc - auc_by_ranks(&rows_mine)).abs() < 1e-12);
        let cell: f64 = rows[lr][3].parse().unwrap();
        assert!((cell - auc).abs() < 1e-3, "sweep row {lr}: {table}");
        mine.insert(lr, rows_mine);
    }

    // 4. The vote of each swept model with the built-in CNN. Every other stage is cached.
    let full = t.run("own-stage.yaml");
    let others: Vec<(String, String)> = full
        .statuses()
        .into_iter()
        .filter(|(s, _)| !s.starts_with("vote["))
        .collect();
    assert!(
        others.iter().all(|(_, status)| status == "cached"),
        "{others:?}"
    );
    let full = full.ok();
    assert_eq!(full.ran(), ["vote[lr=0.001]", "vote[lr=0.01]"]);
    for (lr, rows_mine) in &mine {
        let (dir, metrics) = t.show(&format!("vote[lr={lr}]"));
        let (_, voted) = predictions(&dir);
        assert_eq!(voted.len(), eval_rows.len());
        for (v, (e, m)) in voted.iter().zip(eval_rows.iter().zip(rows_mine)) {
            assert_eq!((&v.id, &e.id), (&m.id, &m.id));
            assert!(
                (v.proba1 - (e.proba1 + m.proba1) / 2.0).abs() < 1e-12,
                "{v:?} {e:?} {m:?}"
            );
            assert_eq!(v.predicted, i64::from(v.proba1 > 0.5));
        }
        assert_eq!(metrics["validation"]["n"], voted.len());
        assert_eq!(metrics["old"]["n"], old["n"]);
    }
}

/// The code the README's "Your own stage" shows is the example files' code: every line of its
/// `python` and `yaml` blocks (but `...`) is a line of `pipelines/examples/`.
#[test]
fn the_readmes_excerpts_are_the_example_files_lines() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Your own stage\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a section `## Your own stage`");
    let examples = repo().join("pipelines/examples");
    let mut lines = std::collections::BTreeSet::new();
    for name in ["own-stage.yaml", "auc.py", "my_cnn.py"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        lines.extend(text.lines().map(|l| l.trim().to_string()));
    }
    let mut checked = 0;
    let mut in_code = false;
    for line in section.lines() {
        if let Some(info) = line.strip_prefix("```") {
            in_code = !in_code && (info == "python" || info == "yaml");
            continue;
        }
        let code = line.trim();
        if in_code && !code.is_empty() && code != "..." {
            assert!(
                lines.contains(code),
                "README \"Your own stage\" shows `{code}`, which is in none of pipelines/examples/*"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} lines of code found in the section"
    );
}

/// Without the worker or the venv the tutorial cannot run, but its pipeline still loads, with
/// the graph the README describes.
#[test]
fn the_tutorial_pipeline_loads_with_its_fan_out_and_gathers() {
    let p = Project::new();
    let file = repo().join("pipelines/examples/own-stage.yaml");
    let dag = p.run(&["dag", file.to_str().unwrap()]).ok().stdout;
    for edge in [
        "auc_left (cmd)  ← eval_left",
        "my_cnn[lr=0.01] (cmd)  ← crop_left, old_validation",
        "my_auc[lr=0.001] (cmd)  ← my_cnn[lr=0.001]",
        "sweep (collect)  ← my_cnn[lr=0.001], my_cnn[lr=0.01], my_auc[lr=0.001], my_auc[lr=0.01]",
        "vote[lr=0.01] (soft_vote)  ← eval_left, my_cnn[lr=0.01], old_validation",
    ] {
        assert!(dag.contains(edge), "no `{edge}` in:\n{dag}");
    }
}
