//! The `aggregate` op end to end: a fold × seed matrix of cmd stages writing known metrics
//! and predictions, gathered into the paper table; its numbers against numpy's, recomputed
//! from the members' own artifacts; bad input through `hcpipe run`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// A stand-in for an evaluate stage: fold `$1`, seed `$2`, a shift `$3` (a "change" for
/// `hcpipe diff`), the output folder `$4`, and a hemisphere `$5`. Writes metrics.json with
/// `test.balanced_accuracy`, `test.roc_auc`, `test.n` and a 4-subject predictions.tsv.
pub const MEMBER_SH: &str = r#"f=$1; s=$2; d=$3; out=$4; side=$5
if [ "$side" = left ]; then base=0.6; step=0.07; sstep=0.011; else base=0.55; step=0.03; sstep=0.02; fi
ba=$(awk -v b=$base -v t=$step -v u=$sstep -v f=$f -v s=$s -v d=$d 'BEGIN { printf "%.4f", b + t * f + u * s + d * (1 + f + 3 * s) / 10 }')
auc=$(awk -v x=$ba 'BEGIN { printf "%.4f", x + 0.05 }')
printf '{"test": {"balanced_accuracy": %s, "roc_auc": %s, "n": 4}}\n' $ba $auc > $out/metrics.json
p=$(awk -v f=$f -v s=$s 'BEGIN { printf "%.2f", 0.3 + 0.1 * f + 0.05 * s }')
q=$(awk -v p=$p 'BEGIN { printf "%.2f", 1 - p }')
printf 'participant_id\ttrue_label\tpredicted_label\tproba0\tproba1\n' > $out/predictions.tsv
printf 's1\t1\t1\t0.1\t0.9\ns2\t1\t0\t%s\t%s\ns3\t0\t0\t0.8\t0.2\ns4\t0\t1\t0.4\t0.6\n' $q $p >> $out/predictions.tsv
"#;

/// Two "evaluate" matrices over 3 folds × 2 seeds and their table.
pub const PIPELINE: &str = r#"
name: paper
params: {shift: 0.0}
stages:
  eval_left:
    cmd: "sh member.sh ${matrix.fold} ${matrix.seed} ${params.shift} {out} left"
    deps: [member.sh]
    matrix: {fold: [0, 1, 2], seed: [0, 1]}
  eval_right:
    cmd: "sh member.sh ${matrix.fold} ${matrix.seed} 0 {out} right"
    deps: [member.sh]
    matrix: {fold: [0, 1, 2], seed: [0, 1]}
  table:
    op: aggregate
    needs: [eval_left, eval_right]
    gather: true
    params:
      rows: [{stage: eval_left, label: left CNN}, {stage: eval_right, label: right CNN}]
      sets: [test]
      metrics: [balanced_accuracy, roc_auc]
      interval: true
"#;

pub fn project() -> Project {
    let p = Project::new();
    p.write("member.sh", MEMBER_SH);
    p.write("p.yaml", PIPELINE);
    p
}

/// `hcpipe show p.yaml STAGE --json`'s artifact folder.
pub fn artifact(p: &Project, stage: &str) -> PathBuf {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

fn table_json(p: &Project) -> Value {
    let dir = artifact(p, "table");
    serde_json::from_str(&std::fs::read_to_string(dir.join("table.json")).unwrap()).unwrap()
}

/// Each member's value of `test.<metric>`, read from its own metrics.json in the cache.
fn member_values(p: &Project, stage: &str, metric: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for fold in 0..3 {
        for seed in 0..2 {
            let name = format!("{stage}[fold={fold},seed={seed}]");
            let m: Value = serde_json::from_str(
                &std::fs::read_to_string(artifact(p, &name).join("metrics.json")).unwrap(),
            )
            .unwrap();
            out.push((name, m["test"][metric].as_f64().unwrap()));
        }
    }
    out
}

/// The mean and sample SD by the textbook's two passes, written here apart from the op's.
fn two_pass(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn cell<'a>(table: &'a Value, label: &str, column: usize) -> &'a Value {
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == label && r["variant"] == "mean")
        .unwrap_or_else(|| panic!("no mean row `{label}` in {table}"));
    &row["cells"][column]
}

#[test]
fn the_table_equals_numpy_over_the_members() {
    let p = project();
    p.run(&["run", "p.yaml"]).ok();
    let table = table_json(&p);
    // numpy 2.4.6, once, over the values member.sh prints (shift 0):
    // left  ba [0.6, 0.611, 0.67, 0.681, 0.74, 0.751]: mean 0.6755, std(ddof=1) 0.06289912559010657
    // left  auc [0.65, 0.661, 0.72, 0.731, 0.79, 0.801]: 0.7254999999999999, 0.06289912559010659
    // right ba [0.55, 0.57, 0.58, 0.6, 0.61, 0.63]: 0.59, 0.028982753492378874
    let numpy = [
        ("left CNN", 0, 0.6755, 0.06289912559010657),
        ("left CNN", 1, 0.7254999999999999, 0.06289912559010659),
        ("right CNN", 0, 0.59, 0.028982753492378874),
    ];
    for (label, column, mean, sd) in numpy {
        let c = cell(&table, label, column);
        assert_eq!(c["n"], 6, "{c}");
        assert!(
            (c["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{label}: {c}"
        );
        assert!(
            (c["sd"].as_f64().unwrap() - sd).abs() < 1e-12,
            "{label}: {c}"
        );
    }
    // And recomputed from the members' own artifacts, member by member.
    for (label, stage, column, metric) in [
        ("left CNN", "eval_left", 0, "balanced_accuracy"),
        ("left CNN", "eval_left", 1, "roc_auc"),
        ("right CNN", "eval_right", 0, "balanced_accuracy"),
        ("right CNN", "eval_right", 1, "roc_auc"),
    ] {
        let members = member_values(&p, stage, metric);
        let c = cell(&table, label, column);
        let listed: Vec<(String, f64)> = c["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["member"].as_str().unwrap().to_string(),
                    m["value"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(listed, members, "{label} {metric}");
        let values: Vec<f64> = members.iter().map(|m| m.1).collect();
        let (mean, sd) = two_pass(&values);
        assert!((c["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert!((c["sd"].as_f64().unwrap() - sd).abs() < 1e-12);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(c["min"].as_f64().unwrap(), min);
        let (lo, hi) = (
            c["ci95"]["lo"].as_f64().unwrap(),
            c["ci95"]["hi"].as_f64().unwrap(),
        );
        // scipy.stats.t.ppf(0.975, 5) = 2.5705818356363146
        let half = 2.5705818356363146 * sd / 6f64.sqrt();
        assert!((lo - (mean - half)).abs() < 1e-9 && (hi - (mean + half)).abs() < 1e-9);
    }
    // axis values of a member, and the pooled row over all 24 predictions
    let left = cell(&table, "left CNN", 0);
    assert_eq!(
        left["members"][3]["axes"],
        serde_json::json!({"fold": 1, "seed": 1})
    );
    let pooled = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"] == "left CNN" && r["variant"] == "pooled")
        .unwrap();
    assert_eq!(pooled["cells"][0]["n_predictions"], 24);
    // Each member: s1 TP, s2 FN (member.sh predicts CN whatever its P(AD)), s3 TN, s4 FP:
    // balanced accuracy 1/2 in every member, so pooled too.
    assert_eq!(pooled["cells"][0]["value"], 0.5);

    let dir = artifact(&p, "table");
    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        md.contains("| left CNN | 6 | 0.675 ± 0.063 [0.609, 0.742] (0.600–0.751) |"),
        "{md}"
    );
    assert!(md.contains("| right CNN (pooled) | 6 | 0.500 |"), "{md}");
    let tex = std::fs::read_to_string(dir.join("table.tex")).unwrap();
    assert!(
        tex.contains("left CNN & 6 & $0.675 \\pm 0.063$ [0.609, 0.742] (0.600--0.751)"),
        "{tex}"
    );
    let tsv = std::fs::read_to_string(dir.join("table.tsv")).unwrap();
    assert!(
        tsv.contains("right CNN\teval_right\tmean\ttest\tbalanced_accuracy\t6\t0.59\t"),
        "{tsv}"
    );
    // a second run is all cached
    let again = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(again.ran().is_empty(), "{:?}", again.ran());
}

/// A Python with numpy: `$HCPIPE_NUMPY_PYTHON`, else `python3`; `None` (said on stderr) if
/// neither imports numpy.
fn python_with_numpy() -> Option<String> {
    let candidates: Vec<String> = std::env::var("HCPIPE_NUMPY_PYTHON")
        .into_iter()
        .chain(["python3".to_string()])
        .collect();
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.clone());
        }
    }
    eprintln!(
        "SKIPPED: no Python with numpy ({}); set HCPIPE_NUMPY_PYTHON to one to compare with numpy live",
        candidates.join(", ")
    );
    None
}

#[test]
fn the_table_equals_live_numpy_when_numpy_is_here() {
    let Some(python) = python_with_numpy() else {
        return;
    };
    let p = project();
    p.run(&["run", "p.yaml", "--set", "shift=0.013"]).ok();
    let table = table_json(&p);
    for (label, stage, column, metric) in [
        ("left CNN", "eval_left", 0, "balanced_accuracy"),
        ("right CNN", "eval_right", 1, "roc_auc"),
    ] {
        let values: Vec<String> = member_values(&p, stage, metric)
            .iter()
            .map(|m| format!("{:?}", m.1))
            .collect();
        let script = format!(
            "import numpy as np; x = np.array([{}]); print(repr(float(x.mean())), repr(float(x.std(ddof=1))))",
            values.join(", ")
        );
        let out = Command::new(&python)
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let numbers: Vec<f64> = text
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        let c = cell(&table, label, column);
        assert!(
            (c["mean"].as_f64().unwrap() - numbers[0]).abs() < 1e-12,
            "{c} vs {text}"
        );
        assert!(
            (c["sd"].as_f64().unwrap() - numbers[1]).abs() < 1e-12,
            "{c} vs {text}"
        );
    }
}

#[test]
fn bad_tables_fail_the_stage_naming_what_to_fix() {
    let p = project();
    p.write(
        "p.yaml",
        &PIPELINE.replace("stage: eval_right, label", "stage: eval_rihgt, label"),
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("stage `table` (aggregate): row 2 names stage `eval_rihgt`")
            && r.stderr.contains("did you mean `eval_right`?"),
        "{}",
        r.stderr
    );
    // Typos in params fail at load time, before anything runs.
    p.write(
        "p.yaml",
        &PIPELINE.replace("interval: true", "intervals: true"),
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("intervals"), "{}", r.stderr);
    // A metric one member lacks names that member.
    p.write("p.yaml", PIPELINE);
    p.write(
        "member.sh",
        &format!(
            "{MEMBER_SH}\nif [ $f = 2 ] && [ $s = 1 ]; then echo '{{\"test\": {{\"balanced_accuracy\": 0.5, \"n\": 4}}}}' > $out/metrics.json; fi\n"
        ),
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("lack `test.roc_auc`") && r.stderr.contains("`eval_left[fold=2,seed=1]`"),
        "{}",
        r.stderr
    );
}
