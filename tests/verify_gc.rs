//! `verify` catches corruption; `run` refuses corrupt inputs; `gc` frees what no run keeps.

use crate::common::*;

fn object_of(p: &Project, stage: &str, file: &str) -> std::path::PathBuf {
    let show = p.run(&["show", "p.yaml", stage, "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::path::Path::new(v["path"].as_str().unwrap()).join(file)
}

#[test]
fn verify_catches_a_flipped_byte_and_run_refuses_to_use_it() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(p.run(&["verify"]).code, 0);
    let file = object_of(&p, "a", "a.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let v = p.run(&["verify"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(
        v.stdout.contains("CORRUPT") && v.stdout.contains("affects: a ("),
        "{}",
        v.stdout
    );
    // b needs a: with b's result gone, running b must not read the corrupt a.
    p.run(&["run", "p.yaml", "--set", "greeting=hello", "--force", "b"]);
    let r = p.run(&["run", "p.yaml", "--json", "--force", "b"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("corrupt") && r.stderr.contains("--force a"),
        "{}",
        r.stderr
    );
    // The fix the message gives works.
    p.run(&["run", "p.yaml", "--force", "a"]).ok();
    assert_eq!(p.run(&["verify"]).code, 0);
}

#[test]
fn verify_reports_a_deleted_object() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    let file = object_of(&p, "d", "d.txt");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    let objects = p.cache().join("objects");
    for e in walkdir_files(&objects) {
        if std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&e).unwrap()) == ino {
            std::fs::remove_file(&e).unwrap();
        }
    }
    let v = p.run(&["verify"]);
    assert_eq!(v.code, 1);
    assert!(
        v.stdout.contains("object missing") && v.stdout.contains("affects: d ("),
        "{}",
        v.stdout
    );
}

fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn gc_keeps_what_the_newest_runs_use() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    p.run(&["run", "p.yaml", "--set", "greeting=bye"]).ok();
    let gc = p.run(&["gc", "--keep-last", "1"]).ok();
    assert!(
        gc.stdout.contains("dropped 1 run record(s), 4 entries"),
        "{}",
        gc.stdout
    );
    // The kept run is still fully cached; the dropped one must run again.
    let kept = p
        .run(&["run", "p.yaml", "--json", "--set", "greeting=bye"])
        .ok();
    assert!(kept.ran().is_empty(), "{}", kept.stdout);
    let dropped = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(dropped.ran(), ["a", "b", "c", "d"]);
    assert_eq!(p.run(&["verify"]).code, 0);
}

#[test]
fn gc_refuses_while_a_run_uses_the_cache() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: g\nstages:\n  slow: {cmd: 'sleep 2; echo x > {out}/x'}\n",
    );
    let mut child = p
        .cmd(&["run", "p.yaml"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = p.cache().join("use.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !lock.exists() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let gc = p.run(&["gc"]);
    assert_eq!(gc.code, 2, "{}", gc.stdout);
    assert!(
        gc.stderr.contains("another `hcpipe` is using the cache"),
        "{}",
        gc.stderr
    );
    assert!(child.wait().unwrap().success());
    p.run(&["gc"]).ok();
    // The finished run's result survived both gcs.
    let again = p.run(&["run", "p.yaml", "--json"]).ok();
    assert!(again.ran().is_empty());
}

#[test]
fn verify_reports_a_truncated_object_and_run_refuses_it() {
    let p = diamond();
    p.run(&["run", "p.yaml"]).ok();
    let file = object_of(&p, "b", "b.txt");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let v = p.run(&["verify"]);
    assert_eq!(v.code, 1);
    assert!(
        v.stdout.contains("CORRUPT") && v.stdout.contains("affects: b ("),
        "{}",
        v.stdout
    );
    let r = p.run(&["run", "p.yaml", "--force", "d"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!("expected {len}")) && r.stderr.contains("--force b"),
        "{}",
        r.stderr
    );
}
