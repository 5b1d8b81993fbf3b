//! Hostile pipeline files: each a clear error (exit 2), never a panic or a hang.

use std::time::{Duration, Instant};

use crate::common::*;

fn refused(p: &Project) -> String {
    let t = Instant::now();
    let r = p.run(&["run", "p.yaml"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.code, 2, "stdout:{}\nstderr:{}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    r.stderr
}

#[test]
fn billion_laughs_alias_bomb() {
    // Eleven levels of ten aliases: 10^12 nodes if expanded.
    let p = Project::new();
    let mut y = String::from("name: bomb\nparams:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        y.push_str(&format!(
            "  a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    y.push_str("stages:\n  s: {cmd: 'true'}\n");
    p.write("p.yaml", &y);
    let err = refused(&p);
    assert!(err.contains("p.yaml:") && err.contains("budget"), "{err}");
}

#[test]
fn deeply_nested_yaml() {
    let p = Project::new();
    let depth = 100_000;
    let y = format!(
        "name: deep\nstages:\n  s: {{cmd: 'true', params: {{x: {}{}}}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    p.write("p.yaml", &y);
    refused(&p);
}

#[test]
fn huge_file_is_refused_before_parsing() {
    let p = Project::new();
    let mut y = String::from("name: huge\nstages:\n  s: {cmd: 'true'}\n");
    y.push_str(
        &"# padding padding padding padding padding padding padding padding\n".repeat(80_000),
    );
    p.write("p.yaml", &y);
    let err = refused(&p);
    assert!(err.contains("refuses pipeline files over"), "{err}");
}

#[test]
fn wrong_types_name_the_place() {
    let p = Project::new();
    p.write("p.yaml", "name: t\nstages:\n  s: {cmd: 'true', needs: 5}\n");
    let err = refused(&p);
    assert!(err.contains("p.yaml:3:"), "{err}");
    p.write("p.yaml", "name: t\nstages: [1, 2]\n");
    let err = refused(&p);
    assert!(err.contains("p.yaml:2:"), "{err}");
    p.write("p.yaml", "stages:\n  s: {cmd: 'true'}\n");
    let err = refused(&p);
    assert!(err.contains("name"), "{err}");
    p.write(
        "p.yaml",
        "name: t\nstages:\n  s: {cmd: 'true', resources: {cpu: -1}}\n",
    );
    refused(&p);
}

#[test]
fn binary_and_empty_files() {
    let p = Project::new();
    std::fs::write(p.path().join("p.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let err = refused(&p);
    assert!(err.contains("not UTF-8"), "{err}");
    p.write("p.yaml", "");
    refused(&p);
    p.write("p.yaml", "name: e\nstages: {}\n");
    let err = refused(&p);
    assert!(err.contains("no stages"), "{err}");
}

#[test]
fn stage_names_that_would_escape_paths_are_refused() {
    let p = Project::new();
    p.write("p.yaml", "name: t\nstages:\n  '../x': {cmd: 'true'}\n");
    let err = refused(&p);
    assert!(err.contains("stage names may hold"), "{err}");
}
