//! Issue 13: "cached must always mean the same as a clean re-run" — the spec
//! side. Matrix member names are injective, a user's own quotes around
//! `{out}` hold, a gather can pass its folders in a file, `--set` keeps a
//! param's type, matrix expansion is capped, and equivalent dep spellings
//! give one key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The artifact folder of `stage`'s newest result.
fn artifact(p: &Project, stage: &str) -> PathBuf {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

// ---- 7. matrix member names ----

#[test]
fn member_names_are_injective_and_fan_out_pairs_the_right_member() {
    let p = Project::new();
    // Before: (a="1", b="2,b=3") and (a="1,b=2", b=3) were both `s[a=1,b=2,b=3]`.
    p.write(
        "p.yaml",
        r#"
name: m
stages:
  s:
    cmd: "echo '${matrix.a}|${matrix.b}' > {out}/v"
    matrix: {a: ["1", "1,b=2"], b: ["2,b=3", 3]}
  t:
    cmd: "cat {in.s}/v > {out}/v"
    needs: [s]
    matrix: {a: ["1", "1,b=2"], b: ["2,b=3", 3]}
"#,
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    let ran = r.ran();
    assert_eq!(ran.len(), 8, "{ran:?}");
    let mut names = ran.clone();
    names.dedup();
    assert_eq!(names.len(), 8, "member names collide: {ran:?}");
    for name in ran.iter().filter(|n| n.starts_with("t[")) {
        let s_name = format!("s{}", &name[1..]);
        let own = read(&artifact(&p, &s_name), "v");
        let fanned = read(&artifact(&p, name), "v");
        assert_eq!(own, fanned, "`{name}` read another member's data");
    }
}

#[test]
fn plain_member_names_are_unchanged_and_string_numbers_are_quoted() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: m
stages:
  s:
    cmd: "echo ${matrix.hemi} > {out}/v"
    matrix: {lr: [0.001], seed: [1], hemi: [left], v: ["1.10"]}
"#,
    );
    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), [r#"s[hemi=left,lr=0.001,seed=1,v="1.10"]"#]);
}

#[test]
fn duplicate_matrix_values_are_refused() {
    for values in ["[a, a]", "[1, \"1\"]"] {
        let p = Project::new();
        p.write(
            "p.yaml",
            &format!("name: m\nstages:\n  s:\n    cmd: \"echo ${{matrix.k}} > {{out}}/v\"\n    matrix: {{k: {values}}}\n"),
        );
        let r = p.run(&["run", "p.yaml"]);
        assert_eq!(r.code, 2, "{values}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("p.yaml:5:") && r.stderr.contains("`k`"),
            "{values}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("twice"), "{values}: {}", r.stderr);
    }
}

// ---- 9. quoting {out} and {in.X} ----

/// `hcpipe ARGS --cache <project>/<cache_name>`, run in the project folder.
fn run_with_cache(p: &Project, cache_name: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_hcpipe"))
        .args(args)
        .arg("--cache")
        .arg(p.path().join(cache_name))
        .current_dir(p.path())
        .env_remove("HCPIPE_CACHE")
        .env_remove("RUST_LOG")
        .output()
        .expect("spawn hcpipe");
    Run::from(out)
}

#[test]
fn own_quotes_around_out_and_in_stay_inside_the_cache() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: q
stages:
  a:
    cmd: "echo hi > '{out}/r.txt'; echo ho > \"{out}/d.txt\"; echo plain > {out}/p.txt"
  b:
    cmd: "cat '{in.a}/r.txt' \"{in.a}/d.txt\" {in.a}/p.txt > \"{out}\"/all.txt"
    needs: [a]
"#,
    );
    let cache = "my cache's dir";
    let r = run_with_cache(&p, cache, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["a", "b"]);
    let show = run_with_cache(&p, cache, &["show", "p.yaml", "b", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = PathBuf::from(v["path"].as_str().unwrap());
    assert!(dir.starts_with(p.path().join(cache)), "{}", dir.display());
    assert_eq!(read(&dir, "all.txt"), "hi\nho\nplain\n");
    // Nothing was written beside the cache: only the pipeline and the cache are there.
    let mut entries: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, [cache, "p.yaml"]);
}

#[test]
fn a_gather_inside_quotes_is_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: q
stages:
  train:
    cmd: "echo ${matrix.lr} > {out}/v"
    matrix: {lr: [1, 2]}
  table:
    cmd: "cat '{in.train}'/v > {out}/t"
    needs: [train]
    gather: true
"#,
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("p.yaml:") && r.stderr.contains("{in.train:list}"),
        "{}",
        r.stderr
    );
}

// ---- gather argument list ----

const LIST: &str = r#"
name: l
stages:
  train:
    cmd: "echo ${matrix.lr} > {out}/v"
    matrix: {lr: [1, 2, 3]}
  table:
    cmd: "while read -r d; do cat \"$d/v\"; done < {in.train:list} > {out}/t; cat '{in.train[lr=2]}/v' > {out}/one; ls {out} > {out}/ls"
    needs: [train]
    gather: true
"#;

#[test]
fn in_list_holds_one_member_folder_per_line() {
    let p = Project::new();
    p.write("p.yaml", LIST);
    p.run(&["run", "p.yaml"]).ok();
    let dir = artifact(&p, "table");
    assert_eq!(read(&dir, "t"), "1\n2\n3\n");
    assert_eq!(
        read(&dir, "one"),
        "2\n",
        "{{in.train[lr=2]}} is that member's folder"
    );
    // The list file is not part of the artifact.
    assert_eq!(read(&dir, "ls"), "ls\none\nt\n");
}

#[test]
fn in_list_is_only_for_a_gathered_need() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: l\nstages:\n  a: {cmd: 'echo 1 > {out}/v'}\n  b: {cmd: 'cat {in.a:list} > {out}/v', needs: [a]}\n",
    );
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("p.yaml:4:") && r.stderr.contains("gather"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_gather_too_long_for_one_command_points_to_in_list() {
    let p = Project::new();
    // A deep cache makes each member folder ~3 KiB long, so 60 of them pass
    // Linux's 128 KiB limit on one argument (`sh -c TEXT`).
    let deep: String = (0..12)
        .map(|i| format!("{i}{}", "d".repeat(240)))
        .collect::<Vec<_>>()
        .join("/");
    let lrs: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    let yaml = format!(
        "name: l\nstages:\n  train:\n    cmd: \"echo ${{matrix.lr}} > {{out}}/v\"\n    matrix: {{lr: [{}]}}\n  table:\n    cmd: \"cat {{in.train}} > {{out}}/t 2>/dev/null || true\"\n    needs: [train]\n    gather: true\n",
        lrs.join(", ")
    );
    p.write("p.yaml", &yaml);
    let r = run_with_cache(&p, &deep, &["run", "p.yaml"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("{in.train:list}"),
        "the failure should point to {{in.train:list}}:\n{}",
        r.stderr
    );
    // And the list form works at that size.
    p.write(
        "p.yaml",
        &yaml.replace(
            "cat {in.train} > {out}/t 2>/dev/null || true",
            "while read -r d; do cat \\\"$d/v\\\"; done < {in.train:list} > {out}/t",
        ),
    );
    run_with_cache(&p, &deep, &["run", "p.yaml"]).ok();
}

// ---- --set keeps a param's type ----

const TYPED: &str = r#"
name: s
params: {version: "1.10", code: "007", epochs: 10, lr: 0.1, id: "0", n: 1, flag: false}
stages:
  a:
    cmd: "echo '${params.version} ${params.code} ${params.epochs} ${params.lr} ${params.id} ${params.n} ${params.flag}' > {out}/v"
"#;

#[test]
fn set_keeps_the_declared_type() {
    let p = Project::new();
    p.write("p.yaml", TYPED);
    p.run(&[
        "run",
        "p.yaml",
        "--set",
        "version=1.10",
        "--set",
        "code=007",
        "--set",
        "epochs=20",
        "--set",
        "lr=0.50",
        "--set",
        "id=123456789012345678901234567890",
        "--set",
        "n=18446744073709551615",
        "--set",
        "flag=true",
    ])
    .ok();
    assert_eq!(
        read(&artifact(&p, "a"), "v"),
        "1.10 007 20 0.5 123456789012345678901234567890 18446744073709551615 true\n"
    );
    p.run(&["run", "p.yaml", "--set", "epochs=str:007"]).ok();
    assert_eq!(
        read(&artifact(&p, "a"), "v"),
        "1.10 007 007 0.1 0 1 false\n"
    );
}

#[test]
fn set_with_a_value_of_the_wrong_type_names_the_flag() {
    let p = Project::new();
    p.write("p.yaml", TYPED);
    for (flag, what) in [
        ("epochs=two", "integer"),
        ("epochs=1.5", "integer"),
        ("n=123456789012345678901234567890", "integer"),
        ("lr=fast", "number"),
        ("flag=yes", "true"),
    ] {
        let r = p.run(&["run", "p.yaml", "--set", flag]);
        assert_eq!(r.code, 2, "{flag}: {}{}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains(&format!("--set {flag}"))
                && r.stderr.contains(what)
                && r.stderr.contains("str:")
                && !r.stderr.contains("p.yaml:"),
            "{flag}: {}",
            r.stderr
        );
    }
}

// ---- matrix expansion cap ----

#[test]
fn a_huge_matrix_is_refused_before_expanding() {
    let p = Project::new();
    let ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
    let keys: Vec<String> = (0..9).map(|i| format!("k{i}: {ten}")).collect();
    p.write(
        "p.yaml",
        &format!(
            "name: big\nstages:\n  sweep:\n    cmd: 'true'\n    matrix: {{{}}}\n",
            keys.join(", ")
        ),
    );
    let r = p.run(&["dag", "p.yaml"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("p.yaml:")
            && r.stderr.contains("`sweep`")
            && r.stderr.contains("1000000000")
            && r.stderr.contains("limit of 2000000 "),
        "{}",
        r.stderr
    );
}

// ---- equivalent dep spellings ----

#[test]
fn equivalent_dep_and_out_spellings_give_one_key() {
    let p = Project::new();
    p.write("data/d.txt", "x\n");
    let yaml = |dep: &str, out: &str| {
        format!("name: d\nstages:\n  a:\n    cmd: \"cat data/d.txt > {{out}}/r.txt\"\n    deps: [{dep}]\n    outs: [{out}]\n")
    };
    p.write("p.yaml", &yaml("data/d.txt", "r.txt"));
    assert_eq!(p.run(&["run", "p.yaml", "--json"]).ok().ran(), ["a"]);
    for (dep, out) in [
        ("./data/d.txt", "./r.txt"),
        ("data//d.txt", "r.txt"),
        ("./data/./d.txt", "r.txt"),
        ("data/../data/d.txt", "r.txt"),
    ] {
        p.write("p.yaml", &yaml(dep, out));
        let r = p.run(&["run", "p.yaml", "--json"]).ok();
        assert_eq!(r.status_of("a"), "cached", "deps: [{dep}], outs: [{out}]");
    }
    // A folder dep: `data`, `./data/` and `data//` are one key.
    p.write("p.yaml", &yaml("data", "r.txt"));
    p.run(&["run", "p.yaml"]).ok();
    for dep in ["./data/", "data//", "data/."] {
        p.write("p.yaml", &yaml(dep, "r.txt"));
        let r = p.run(&["run", "p.yaml", "--json"]).ok();
        assert_eq!(r.status_of("a"), "cached", "deps: [{dep}]");
    }
}
