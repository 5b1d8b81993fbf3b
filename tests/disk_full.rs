//! Disk full: the cache on a small tmpfs that fills mid-stage. A clear error,
//! nothing half-written in the cache, and the next run works.
//! Needs root (mount); skipped with a message elsewhere.

use std::process::Command;

use crate::common::*;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_stage_cleanly_and_the_next_run_works() {
    let p = Project::new();
    let cache = p.cache();
    std::fs::create_dir_all(&cache).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&cache)
        .output();
    if !mounted.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED disk_full: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _guard = Mount(cache.clone());
    p.write(
        "p.yaml",
        "name: full\nparams: {mb: 6}\nstages:\n  small: {cmd: \"echo ok > {out}/ok\"}\n  big: {cmd: \"head -c ${params.mb}000000 /dev/zero > {out}/big\"}\n",
    );
    // One stage at a time (file order): run at once, `big` could fill the
    // disk while `small` commits, and `small` would fail too (seen once).
    let r = p.run(&["run", "p.yaml", "--json", "--jobs", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(r.status_of("big"), "failed");
    assert_eq!(r.status_of("small"), "ran");
    assert!(
        r.stderr.contains("stage `big` failed") && r.stderr.contains("No space left"),
        "{}",
        r.stderr
    );
    // Nothing of `big` is in the cache, and its staging space was given back.
    let entries = std::fs::read_dir(cache.join("entries")).unwrap().count();
    assert_eq!(entries, 1, "only `small` may have an entry");
    let tmp_left = std::fs::read_dir(cache.join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "staging folders left behind");
    p.run(&["verify"]).ok();
    // With a size that fits, the next run works.
    let again = p.run(&["run", "p.yaml", "--json", "--set", "mb=1"]).ok();
    assert_eq!(again.status_of("big"), "ran");
    assert_eq!(again.status_of("small"), "cached");
}
