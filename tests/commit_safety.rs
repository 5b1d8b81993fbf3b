//! Committing a stage's `{out}` never touches what lies outside it, and the
//! cached artifact is what a clean re-run would produce (issue 13).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;

/// The cached artifact folder of `stage` (as `show --json` reports it).
fn artifact(p: &Project, stage: &str) -> PathBuf {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    PathBuf::from(v["path"].as_str().unwrap())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// The entry of `stage` (entries/<key>.json), parsed.
fn entry(p: &Project, stage: &str) -> serde_json::Value {
    for e in std::fs::read_dir(p.cache().join("entries"))
        .unwrap()
        .flatten()
    {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        if v["stage"] == stage {
            return v;
        }
    }
    panic!("no entry for `{stage}`");
}

fn failed(p: &Project) -> String {
    let r = p.run(&["run", "p.yaml"]);
    assert_eq!(r.code, 1, "stdout:{}\nstderr:{}", r.stdout, r.stderr);
    r.stderr
}

#[test]
fn out_replaced_by_a_symlink_is_refused_and_the_target_untouched() {
    let p = Project::new();
    let keep = p.write("userdata/keep.txt", "precious\n");
    std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(
        p.path().join("userdata"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    p.write(
        "p.yaml",
        "name: l\nstages:\n  s: {cmd: 'rm -r {out}; ln -s \"$PWD/userdata\" {out}'}\n",
    );
    let err = failed(&p);
    assert!(
        err.contains("stage `s`") && err.contains("{out}") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(p.read("userdata/keep.txt"), "precious\n");
    assert_eq!(mode(&keep), 0o640);
    assert_eq!(mode(&p.path().join("userdata")), 0o750);
    assert!(p.path().join("userdata").is_dir());
}

#[test]
fn out_removed_is_refused() {
    let p = Project::new();
    p.write("p.yaml", "name: l\nstages:\n  s: {cmd: 'rm -r {out}'}\n");
    let err = failed(&p);
    assert!(err.contains("stage `s`") && err.contains("{out}"), "{err}");
}

#[test]
fn internal_absolute_links_are_stored_relative() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: l
stages:
  s:
    cmd: "echo hi > {out}/a.txt && mkdir {out}/sub && ln -s {out}/a.txt {out}/b.txt && ln -s {out}/a.txt {out}/sub/c.txt && ln -s {out}/sub {out}/d && ln -s ../a.txt {out}/sub/e.txt"
  t:
    cmd: "cat {in.s}/b.txt {in.s}/sub/c.txt {in.s}/d/c.txt {in.s}/sub/e.txt > {out}/all.txt"
    needs: [s]
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    let s = artifact(&p, "s");
    assert_eq!(
        std::fs::read_link(s.join("b.txt")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(
        std::fs::read_link(s.join("sub/c.txt")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(std::fs::read_link(s.join("d")).unwrap(), Path::new("sub"));
    assert_eq!(
        std::fs::read_to_string(artifact(&p, "t").join("all.txt")).unwrap(),
        "hi\nhi\nhi\nhi\n"
    );
    assert_eq!(p.run(&["verify"]).code, 0);
}

#[test]
fn external_absolute_link_is_refused() {
    let p = Project::new();
    p.write("user.txt", "mine\n");
    p.write(
        "p.yaml",
        "name: l\nstages:\n  s: {cmd: 'ln -s \"$PWD/user.txt\" {out}/u.txt'}\n",
    );
    let err = failed(&p);
    assert!(
        err.contains("`u.txt`") && err.contains("user.txt") && err.contains("cp -L"),
        "{err}"
    );
    assert_eq!(p.read("user.txt"), "mine\n");
}

#[test]
fn escaping_relative_link_is_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: l\nstages:\n  s: {cmd: 'mkdir {out}/x && ln -s ../../../../../../../etc/hostname {out}/x/h'}\n",
    );
    let err = failed(&p);
    assert!(
        err.contains("`x/h`") && err.contains("../etc/hostname") && err.contains("cp -L"),
        "{err}"
    );
}

#[test]
fn escaping_through_another_link_is_refused() {
    // `x/y/up` → `..` resolves to `{out}`; `x/y/esc` → `up/..` is lexically
    // inside `{out}` (x/y/up/.. = x/y) but physically its parent.
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: l\nstages:\n  s: {cmd: 'mkdir -p {out}/x/y && ln -s ../.. {out}/x/y/up && ln -s up/.. {out}/x/y/esc'}\n",
    );
    let err = failed(&p);
    assert!(err.contains("`x/y/esc`") && err.contains("cp -L"), "{err}");
}

#[test]
fn dangling_link_is_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: l\nstages:\n  s: {cmd: 'ln -s nothing-here {out}/gone'}\n",
    );
    let err = failed(&p);
    assert!(
        err.contains("`gone`") && err.contains("nothing-here") && err.contains("dangling"),
        "{err}"
    );
}

#[test]
fn same_bytes_different_mode_keep_their_modes() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: m
stages:
  plain: {cmd: "printf 'echo hi\n' > {out}/run.sh"}
  script: {cmd: "printf 'echo hi\n' > {out}/run.sh && chmod +x {out}/run.sh"}
  use: {cmd: "{in.script}/run.sh > {out}/said", needs: [script]}
"#,
    );
    p.run(&["run", "p.yaml"]).ok();
    let plain = artifact(&p, "plain").join("run.sh");
    let script = artifact(&p, "script").join("run.sh");
    assert_eq!(mode(&plain) & 0o111, 0, "{:o}", mode(&plain));
    assert_eq!(mode(&script) & 0o111, 0o111, "{:o}", mode(&script));
    assert_eq!(entry(&p, "script")["files"][0]["exec"], true);
    assert_eq!(entry(&p, "plain")["files"][0]["exec"], false);
    assert_eq!(p.run(&["verify"]).code, 0);
    // Rebuilt views (removed artifact folders) show the recorded modes too.
    std::fs::remove_dir_all(artifact(&p, "plain")).unwrap();
    std::fs::remove_dir_all(artifact(&p, "script")).unwrap();
    p.run(&["gc"]).ok();
    assert_eq!(p.run(&["verify"]).code, 0);
    p.run(&["run", "p.yaml", "--force", "use"]).ok();
    assert_eq!(mode(&artifact(&p, "plain").join("run.sh")) & 0o111, 0);
    assert_eq!(mode(&artifact(&p, "script").join("run.sh")) & 0o111, 0o111);
    assert_eq!(
        std::fs::read_to_string(artifact(&p, "use").join("said")).unwrap(),
        "hi\n"
    );
}

#[test]
fn hard_link_to_a_user_file_is_copied_not_taken() {
    let p = Project::new();
    let user = p.write("user.txt", "original\n");
    std::fs::set_permissions(&user, std::fs::Permissions::from_mode(0o644)).unwrap();
    p.write(
        "p.yaml",
        "name: h\nstages:\n  s: {cmd: 'cp -l user.txt {out}/'}\n",
    );
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(mode(&user), 0o644);
    assert_eq!(p.read("user.txt"), "original\n");
    // An in-place edit of the user's file leaves the cached artifact alone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&user)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"EDITED!!\n"))
        .unwrap();
    let cached = artifact(&p, "s").join("user.txt");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), "original\n");
    assert_eq!(p.run(&["verify"]).code, 0);
}

#[test]
fn non_finite_metrics_are_stored_as_null_with_a_warning() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"
name: n
stages:
  s:
    cmd: "echo out > {out}/x && printf '%s' '{\"loss\": NaN, \"hi\": Infinity, \"lo\": -Infinity, \"ok\": 1.5, \"note\": \"NaN, Infinity \\\" -Infinity\", \"deep\": [NaN]}' > {out}/metrics.json"
"#,
    );
    let r = p.run(&["run", "p.yaml"]).ok();
    assert!(
        r.stderr.contains("warning: stage `s`")
            && r.stderr.contains("`loss`")
            && r.stderr.contains("`hi`")
            && r.stderr.contains("`lo`")
            && r.stderr.contains("`deep[0]`"),
        "{}",
        r.stderr
    );
    let m = &entry(&p, "s")["metrics"];
    assert!(
        m["loss"].is_null() && m["hi"].is_null() && m["lo"].is_null(),
        "{m}"
    );
    assert_eq!(m["ok"], 1.5);
    assert_eq!(m["note"], "NaN, Infinity \" -Infinity");
    assert_eq!(
        std::fs::read_to_string(artifact(&p, "s").join("x")).unwrap(),
        "out\n"
    );
}

#[test]
fn non_utf8_file_name_is_refused() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: u\nstages:\n  s: {cmd: 'touch {out}/\"$(printf \"caf\\351\")\" {out}/\"$(printf \"caf\\352\")\"'}\n",
    );
    let err = failed(&p);
    assert!(err.contains("caf\\xE9") && err.contains("UTF-8"), "{err}");
}
