//! Caching and selective re-run; the stat cache.

use crate::common::*;

#[test]
fn second_run_is_all_cached_and_outputs_are_right() {
    let p = diamond();
    let first = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(first.ran(), ["a", "b", "c", "d"]);
    let second = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(second.ran().is_empty(), "{}", second.stdout);
    assert_eq!(second.statuses().len(), 4);
    let show = p.run(&["show", "p.yaml", "d", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let d =
        std::fs::read_to_string(std::path::Path::new(v["path"].as_str().unwrap()).join("d.txt"))
            .unwrap();
    assert_eq!(d, "data\nhello\ndata\nhello\n11\n");
    let c = p.run(&["show", "p.yaml", "c", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(c.stdout.trim()).unwrap();
    assert_eq!(v["metrics"]["n"], 1);
}

#[test]
fn a_param_change_reruns_only_what_depends_on_it() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    // `n` only feeds stage c: c and its dependant d re-run, a and b stay cached.
    let r = p.run(&["run", "p.yaml", "--json", "--set", "n=2"]).ok();
    assert_eq!(r.ran(), ["c", "d"]);
    assert_eq!(r.status_of("a"), "cached");
    let status = p.run(&["status", "p.yaml", "--set", "n=3"]).ok();
    assert!(
        status.stdout.contains("c      stale   cmd changed"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("b      fresh"), "{}", status.stdout);
    // Back to n=1: every key was cached before.
    let back = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(back.ran().is_empty());
}

#[test]
fn a_changed_dep_reruns_its_stage_and_status_says_why() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    p.write("input.txt", "other\n");
    let st = p.run(&["status", "p.yaml"]).ok();
    assert!(
        st.stdout.contains("dep `input.txt` changed"),
        "{}",
        st.stdout
    );
    let dry = p.run(&["run", "p.yaml", "--dry-run"]).ok();
    assert!(dry.stdout.contains("would run  a"), "{}", dry.stdout);
    assert_eq!(
        p.run(&["run", "p.yaml", "--json"]).ok().ran(),
        ["a", "b", "c", "d"]
    );
}

#[test]
fn force_reruns_a_cached_stage() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    let r = p.run(&["run", "p.yaml", "--json", "--force", "b"]).ok();
    assert_eq!(r.ran(), ["b"]);
}

#[test]
fn touched_but_unchanged_dep_is_rehashed_once_and_reruns_nothing() {
    let p = diamond();
    let hashed = |r: &Run| {
        r.stderr
            .lines()
            .find_map(|l| {
                l.split("hashed ")
                    .nth(1)
                    .and_then(|x| x.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .unwrap_or(usize::MAX)
    };
    let first = p.run(&["run", "p.yaml", "-v", "--json"]).ok();
    assert_eq!(hashed(&first), 1, "{}", first.stderr);
    let again = p.run(&["run", "p.yaml", "-v", "--json"]).ok();
    assert_eq!(
        hashed(&again),
        0,
        "stat cache should skip the unchanged dep:\n{}",
        again.stderr
    );
    // Touch: new mtime, same bytes.
    let f = std::fs::File::options()
        .write(true)
        .open(p.path().join("input.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let touched = p.run(&["run", "p.yaml", "-v", "--json"]).ok();
    assert_eq!(hashed(&touched), 1, "{}", touched.stderr);
    assert!(touched.ran().is_empty());
    let after = p.run(&["run", "p.yaml", "-v", "--json"]).ok();
    assert_eq!(hashed(&after), 0);
}

#[test]
fn dag_renders_in_three_formats() {
    let p = diamond();
    let dot = p.run(&["dag", "p.yaml", "--format", "dot"]).ok().stdout;
    assert!(
        dot.starts_with("digraph") && dot.contains("n0 -> n1"),
        "{dot}"
    );
    let mermaid = p.run(&["dag", "p.yaml", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("n1 --> n3"), "{mermaid}");
    let text = p.run(&["dag", "p.yaml"]).ok().stdout;
    assert_eq!(text.lines().next(), Some("a (cmd)"));
    assert!(text.contains("d (cmd)  ← b, c"), "{text}");
}

#[test]
fn show_lists_runs_and_one_run() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    let list = p.run(&["show"]).ok().stdout;
    let id = list
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let one = p.run(&["show", &id]).ok().stdout;
    assert!(one.contains("ran") && one.contains("diamond"), "{one}");
}

/// `show` lists runs from a summary of each record, and `show ID` reads the
/// one record named by the id: a record cut short (a full disk) is left out
/// of the list, and asked for by id it gets a clear error, not "no run".
#[test]
fn show_reads_the_records_it_needs_and_names_an_unreadable_one() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml"]).ok();
    let list = p.run(&["show"]).ok().stdout;
    let ids: Vec<String> = list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(list.contains("4 ran, 0 cached, 0 failed"), "{list}");
    assert!(list.contains("0 ran, 4 cached, 0 failed"), "{list}");
    let runs = p.cache().join("runs");
    let cut = runs.join(format!("{}.json", ids[0]));
    let text = std::fs::read_to_string(&cut).unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let list = p.run(&["show"]).ok().stdout;
    assert!(!list.contains(&ids[0]) && list.contains(&ids[1]), "{list}");
    let cut_run = p.run(&["show", &ids[0]]);
    assert_ne!(cut_run.code, 0);
    assert!(
        cut_run.stderr.contains("cannot be read"),
        "{}",
        cut_run.stderr
    );
    let one = p.run(&["show", &ids[1][..20]]).ok().stdout;
    assert!(one.contains("cached") && one.contains("diamond"), "{one}");
}

/// Regression (found by the lab benchmark): forcing a stage whose output
/// differs each time must not make its dependants in the same run see the
/// old entry and call the cache corrupt.
#[test]
fn forcing_a_nondeterministic_stage_feeds_its_new_output_downstream() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: f\nparams: {n: 1}\nstages:\n  a: {cmd: 'date +%s%N > {out}/t'}\n  b: {cmd: 'cat {in.a}/t > {out}/t; echo ${params.n} >> {out}/t', needs: [a]}\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    let r = p
        .run(&["run", "p.yaml", "--json", "--force", "a", "--set", "n=2"])
        .ok();
    assert_eq!(r.ran(), ["a", "b"]);
    p.run(&["verify"]).ok();
}

#[test]
fn show_with_set_gives_the_result_made_with_those_params() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml", "--set", "n=2"]).ok();
    let v = |args: &[&str]| -> serde_json::Value {
        let r = p.run(args).ok();
        serde_json::from_str(r.stdout.trim()).unwrap()
    };
    let two = v(&["show", "p.yaml", "c", "--set", "n=2", "--json"]);
    assert_eq!(two["metrics"]["n"], 2);
    assert_eq!(two["current"], true);
    let one = v(&["show", "p.yaml", "c", "--json"]);
    assert_eq!(one["metrics"]["n"], 1);
    assert_eq!(one["current"], true);
    let r = p.run(&["show", "--set", "n=2"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--set applies to `show PIPELINE"),
        "{}",
        r.stderr
    );
}
