//! A user's own `cmd` stages as first-class citizens (issue 20): the
//! environment they get, no silent empty results, and runs that say their id.

use crate::common::Project;

#[test]
fn a_cmd_that_writes_nothing_fails_unless_it_declares_outs_empty() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: p\nstages:\n  typo:\n    cmd: \"echo hi > result.txt\"\n  nothing:\n    cmd: \"true\"\n    outs: []\n",
    );
    let r = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("wrote nothing to {out}"), "{}", r.stderr);
    assert!(r.stderr.contains("outs: []"), "{}", r.stderr);
    let st = r.statuses();
    assert!(st.contains(&("typo".into(), "failed".into())), "{st:?}");
    assert!(st.contains(&("nothing".into(), "ran".into())), "{st:?}");
    // Nothing was stored for the failed stage: it runs (and fails) again.
    let again = p.run(&["run", "p.yaml", "--json"]);
    assert_eq!(again.code, 1);
    assert!(again
        .statuses()
        .contains(&("nothing".into(), "cached".into())));
}

#[test]
fn cmd_stages_get_matrix_values_and_thread_counts_in_their_environment() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: p
stages:
  s:
    matrix: {learning-rate: [0.1, "a b"], seed: [1]}
    resources: {cpu: 2}
    cmd: 'echo "$HCPIPE_MATRIX_LEARNING_RATE|$HCPIPE_MATRIX_SEED|$OMP_NUM_THREADS|$MKL_NUM_THREADS|$HCPIPE_THREADS" > {out}/env.txt'
"#,
    );
    let out = p
        .cmd(&["run", "p.yaml", "--json"])
        .env_remove("OMP_NUM_THREADS")
        .env_remove("MKL_NUM_THREADS")
        .output()
        .unwrap();
    let run = crate::common::Run::from(out).ok();
    let mut members: Vec<String> = run.statuses().into_iter().map(|(s, _)| s).collect();
    members.sort();
    assert_eq!(members.len(), 2, "{members:?}");
    let env_of = |member: &str| {
        let show = p.run(&["show", "p.yaml", member, "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        let dir = v["path"].as_str().unwrap().to_string();
        std::fs::read_to_string(std::path::Path::new(&dir).join("env.txt")).unwrap()
    };
    let number = members.iter().find(|m| m.contains("0.1")).unwrap();
    let text = members.iter().find(|m| m.contains("a b")).unwrap();
    assert_eq!(env_of(number), "0.1|1|2|2|2\n");
    assert_eq!(env_of(text), "a b|1|2|2|2\n");

    // A user's own OMP_NUM_THREADS wins over hcpipe's default.
    let out = p
        .cmd(&["run", "p.yaml", "--force", "s"])
        .env("OMP_NUM_THREADS", "7")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(env_of(number), "0.1|1|7|2|2\n");
}

#[test]
fn a_run_says_its_id_and_a_failure_tail_is_printed_once() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: p\nstages:\n  a:\n    cmd: \"echo x > {out}/x\"\n",
    );
    let r = p.run(&["run", "p.yaml"]).ok();
    let last = r.stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("run ") && last.ends_with(": 1 ran, 0 cached"),
        "{}",
        r.stderr
    );
    let id = last["run ".len()..last.find(':').unwrap()].to_string();
    // The id is one `show` takes.
    p.run(&["show", &id]).ok();

    let json = p.run(&["run", "p.yaml", "--json"]).ok();
    let event: serde_json::Value =
        serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(event["event"], "run");
    assert_eq!(event["status"], "ok");
    assert_eq!(event["cached"], 1);
    assert!(event["run"].as_str().is_some_and(|r| !r.is_empty()));

    p.write(
        "p.yaml",
        "name: p\nstages:\n  a:\n    cmd: \"echo the-tail-line >&2; exit 3\"\n",
    );
    let failed = p.run(&["run", "p.yaml"]);
    assert_eq!(failed.code, 1);
    assert_eq!(
        failed.stderr.matches("the-tail-line").count(),
        1,
        "{}",
        failed.stderr
    );
}

#[test]
fn a_gather_says_who_is_who_and_show_takes_a_matrix_base_name() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: p
stages:
  sw:
    matrix: {k: [b, a], n: [2, 10]}
    cmd: 'echo "${matrix.k}${matrix.n}" > {out}/v'
  table:
    needs: [sw]
    gather: true
    cmd: 'cp {in.sw:members} {out}/members.tsv; tail -n +2 {in.sw:members} | while IFS="$(printf "\t")" read -r m k n dir; do printf "%s %s\n" "$k$n" "$(cat "$dir/v")"; done > {out}/check.txt'
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    let show = p.run(&["show", "p.yaml", "table", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
    let members = std::fs::read_to_string(dir.join("members.tsv")).unwrap();
    let lines: Vec<&str> = members.lines().collect();
    assert_eq!(lines[0], "member\tk\tn\tfolder", "{members}");
    assert_eq!(lines.len(), 5, "{members}");
    assert!(lines[1].starts_with("sw[k=b,n=2]\tb\t2\t"), "{members}");
    // Every row's folder holds that member's own output.
    let check = std::fs::read_to_string(dir.join("check.txt")).unwrap();
    for line in check.lines() {
        let (want, got) = line.split_once(' ').unwrap();
        assert_eq!(want, got, "{check}");
    }
    assert_eq!(check.lines().count(), 4);

    // `show` takes the base name: every member.
    let show = p.run(&["show", "p.yaml", "sw"]).ok();
    assert_eq!(show.stdout.matches("sw[").count(), 4, "{}", show.stdout);
}

#[test]
fn collect_sorts_naturally_formats_columns_alike_and_refuses_a_typo_column() {
    let p = Project::new();
    let pipeline = |column: &str| {
        format!(
            r#"name: p
stages:
  sw:
    matrix: {{n: [16, 2, 1]}}
    cmd: 'echo "{{\"auc\": $(( ${{matrix.n}} % 2 )).${{matrix.n}}, \"n\": ${{matrix.n}}, \"one\": 1}}" > {{out}}/metrics.json'
  table:
    op: collect
    needs: [sw]
    gather: true
    params: {{columns: [{column}, sw.n]}}
"#
        )
    };
    p.write("p.yaml", &pipeline("sw.auc"));
    p.run(&["run", "p.yaml"]).ok();
    let show = p.run(&["show", "p.yaml", "table", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
    let table = std::fs::read_to_string(dir.join("table.tsv")).unwrap();
    // Rows 1, 2, 16 (not 1, 16, 2); auc has fractions, so every cell has four
    // decimals, 0.16 included; n is whole, so none.
    assert_eq!(
        table, "n\tsw.auc\tsw.n\n1\t1.1000\t1\n2\t0.2000\t2\n16\t0.1600\t16\n",
        "{table}"
    );

    p.write("p.yaml", &pipeline("sw.acu"));
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no member of `sw` has the metric `sw.acu`")
            && r.stderr.contains("did you mean `sw.auc`?"),
        "{}",
        r.stderr
    );
    p.write("p.yaml", &pipeline("sv.auc"));
    let r = p.run(&["run", "p.yaml"]);
    assert!(
        r.stderr
            .contains("names stage `sv`, which it does not gather (did you mean `sw`?)"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_cmd_uses_its_own_params_and_misspelt_inputs_get_the_nearest_need() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: p
params: {n: 1}
stages:
  prep:
    params: {greeting: hello, times: "${params.n}"}
    cmd: 'echo "${stage.params.greeting} x${stage.params.times}" > {out}/g'
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    let show = p.run(&["show", "p.yaml", "prep", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = std::path::PathBuf::from(v["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("g")).unwrap(),
        "hello x1\n"
    );

    p.write(
        "p.yaml",
        r#"name: p
stages:
  prep:
    params: {greeting: hello}
    cmd: 'echo ${stage.params.greting} > {out}/g'
  eval_left: {cmd: 'cat {in.prep}/g > {out}/y', needs: [prep]}
  use: {cmd: 'cat {in.eval_lft}/y {in.nowhere}/z > {out}/z', needs: [eval_left]}
"#,
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for want in [
        "this stage has no param `greting` (did you mean `greeting`?)",
        "cmd uses `{in.eval_lft}`, but `eval_lft` is not in its `needs`; did you mean `{in.eval_left}`?",
        "cmd uses `{in.nowhere}`, but the pipeline has no stage `nowhere`",
    ] {
        assert!(r.stderr.contains(want), "missing {want:?} in:\n{}", r.stderr);
    }
}

#[test]
fn built_in_upstreams_that_cannot_write_what_an_op_reads_are_refused_at_load_time() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: v
stages:
  dataset: {op: synth, params: {n_train_ad: 4, n_train_cn: 4, n_val_ad: 2, n_val_cn: 2}}
  crop_left: {op: crop, needs: [dataset], params: {region: left_hc}}
  cnn_left: {op: train_cnn, needs: [crop_left], params: {epochs: 1}}
  mine: {cmd: 'echo > {out}/predictions.tsv'}
  vote: {op: soft_vote, needs: [cnn_left, mine]}
  clusters: {op: gmm, needs: [dataset]}
"#,
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("stage `vote`: `cnn_left` (train_cnn) cannot write `predictions.tsv`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("stage `clusters`: `gmm` needs a stage whose codes it clusters"),
        "{}",
        r.stderr
    );
    // Nothing ran.
    assert!(!p.cache().join("artifacts").exists());
}
