//! Which ready stage starts first (exec::priority): the one with the longest
//! expected path to the end of the pipeline, expected times coming from the
//! newest runs that ran a stage, else per-op defaults; topological order
//! breaks ties. Checked by launch order under `--jobs 1`, where one stage
//! runs at a time: each stage appends its name to `order` as it runs.

use crate::common::*;

fn stage(name: &str, needs: &[&str], tag: &str) -> String {
    format!(
        "  {name}: {{cmd: \"echo {name} >> order; echo {tag} > {{out}}/x\", needs: [{}]}}\n",
        needs.join(", ")
    )
}

fn order(p: &Project) -> Vec<String> {
    p.read("order").lines().map(str::to_string).collect()
}

/// `a` and `b` (declared first) are one stage each; the chain c1 → c2 → c3
/// (declared last) is three: it starts first, and the ties left (c3, a, b:
/// one stage to the end each) go in declaration order.
#[test]
fn a_long_chain_declared_last_starts_first() {
    let p = Project::new();
    let mut yaml = String::from("name: prio\nstages:\n");
    for (name, needs) in [
        ("a", vec![]),
        ("b", vec![]),
        ("c1", vec![]),
        ("c2", vec!["c1"]),
        ("c3", vec!["c2"]),
    ] {
        yaml.push_str(&stage(name, &needs, "1"));
    }
    p.write("p.yaml", &yaml);
    let run = p.run(&["run", "p.yaml", "--json", "--jobs", "1"]).ok();
    assert_eq!(run.ran().len(), 5, "{}", run.stdout);
    assert_eq!(order(&p), ["c1", "c2", "a", "b", "c3"]);
}

/// A stage that took long in the newest run of the pipeline starts first
/// the next time it runs, though declared last.
#[test]
fn a_stage_that_took_long_last_time_starts_first() {
    let p = Project::new();
    let yaml = |tag: &str| {
        let mut y = String::from("name: prio\nstages:\n");
        for name in ["x", "y", "z"] {
            y.push_str(&stage(name, &[], tag));
        }
        y
    };
    p.write("p.yaml", &yaml("1"));
    p.run(&["run", "p.yaml", "--json", "--jobs", "1"]).ok();
    assert_eq!(order(&p), ["x", "y", "z"]);
    // The record says `z` took 50 s (its real time is milliseconds).
    let runs: Vec<_> = std::fs::read_dir(p.cache().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    for st in record["stages"].as_array_mut().unwrap() {
        if st["stage"] == "z" {
            st["wall_s"] = serde_json::json!(50.0);
        }
    }
    std::fs::write(&runs[0], serde_json::to_vec(&record).unwrap()).unwrap();
    // Every stage's command changes: all three run again.
    std::fs::remove_file(p.path().join("order")).unwrap();
    p.write("p.yaml", &yaml("2"));
    let run = p.run(&["run", "p.yaml", "--json", "--jobs", "1"]).ok();
    assert_eq!(run.ran().len(), 3, "{}", run.stdout);
    assert_eq!(order(&p), ["z", "x", "y"]);
}
