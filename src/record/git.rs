//! The git revision of a pipeline file, when it lives in a git work tree.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitState {
    pub commit: String,
    /// The pipeline file differs from the commit.
    pub dirty: bool,
}

/// The git state of `file`'s work tree, or `None` outside one (or without git).
pub fn state_of(file: &Path) -> Option<GitState> {
    start(file)?.finish()
}

/// A `git status` started by [`start`]: `hcpipe run` plans while git works.
pub struct Pending(std::process::Child);

/// Start reading the git state of `file`'s work tree; [`Pending::finish`] collects it.
///
/// One `git status --porcelain=v2 --branch` gives both the commit (its
/// `# branch.oid` header) and whether the file is dirty (any other line), so
/// a run spawns git once instead of twice (`rev-parse HEAD` + `status`):
/// the spawns were most of a no-op re-run's time. `--no-optional-locks`
/// keeps git from rewriting the index, which could collide with the user's
/// own git commands.
pub fn start(file: &Path) -> Option<Pending> {
    let dir = file.parent()?;
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain=v2",
            "--branch",
            "--",
        ])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
        .map(Pending)
}

impl Pending {
    pub fn finish(self) -> Option<GitState> {
        let out = self.0.wait_with_output().ok()?;
        if !out.status.success() {
            return None;
        }
        parse_status(&String::from_utf8_lossy(&out.stdout))
    }
}

/// `# branch.oid (initial)` (no commit yet) gives `None`, as `rev-parse HEAD` failing did.
fn parse_status(text: &str) -> Option<GitState> {
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))?
        .trim();
    if commit == "(initial)" || commit.is_empty() {
        return None;
    }
    Some(GitState {
        commit: commit.to_string(),
        dirty: text.lines().any(|l| !l.starts_with('#') && !l.is_empty()),
    })
}

/// The pipeline file's text at a git revision (`git show REV:path`).
pub fn show_at(file: &Path, rev: &str) -> Result<String, String> {
    let dir = file.parent().ok_or("pipeline path has no folder")?;
    let top = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !top.status.success() {
        return Err(format!("{} is not inside a git work tree", file.display()));
    }
    let top = std::path::PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let abs = std::path::absolute(file).map_err(|e| e.to_string())?;
    let canon_top = top.canonicalize().unwrap_or(top);
    let canon_file = abs
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.join(abs.file_name().unwrap_or_default()))
        .unwrap_or(abs);
    let rel = canon_file
        .strip_prefix(&canon_top)
        .map_err(|_| format!("{} is outside the git work tree", file.display()))?;
    let spec = format!("{rev}:{}", rel.display());
    let out = Command::new("git")
        .arg("-C")
        .arg(&canon_top)
        .args(["show", &spec])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git show {spec}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{spec} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_v2_gives_the_commit_and_dirtiness() {
        let clean = "# branch.oid ba9b2bef92876f8480b036217e540d5d8bffe357\n# branch.head master\n";
        let s = parse_status(clean).unwrap();
        assert_eq!(s.commit, "ba9b2bef92876f8480b036217e540d5d8bffe357");
        assert!(!s.dirty);
        let modified = format!("{clean}1 .M N... 100644 100644 100644 bcea bcea toy.yaml\n");
        assert!(parse_status(&modified).unwrap().dirty);
        let untracked = format!("{clean}? toy.yaml\n");
        assert!(parse_status(&untracked).unwrap().dirty);
        let detached = "# branch.oid 0123abcd\n# branch.head (detached)\n";
        assert_eq!(parse_status(detached).unwrap().commit, "0123abcd");
        assert!(parse_status("# branch.oid (initial)\n# branch.head main\n").is_none());
        assert!(parse_status("").is_none());
    }

    #[test]
    fn state_of_a_real_repo_matches_rev_parse() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
        };
        let Ok(init) = git(&["init", "-q", "."]) else {
            eprintln!("skipped: git is not installed");
            return;
        };
        assert!(init.status.success());
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, "name: p\n").unwrap();
        // Untracked, and no commit yet: no state, as before.
        assert!(state_of(&file).is_none());
        assert!(git(&["add", "p.yaml"]).unwrap().status.success());
        assert!(git(&["commit", "-q", "-m", "x"]).unwrap().status.success());
        let head = git(&["rev-parse", "HEAD"]).unwrap();
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        let s = state_of(&file).unwrap();
        assert_eq!(s.commit, head);
        assert!(!s.dirty);
        std::fs::write(&file, "name: q\n").unwrap();
        assert!(state_of(&file).unwrap().dirty);
        // Another file's change does not make the pipeline dirty.
        std::fs::write(&file, "name: p\n").unwrap();
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert!(!state_of(&file).unwrap().dirty);
    }
}
