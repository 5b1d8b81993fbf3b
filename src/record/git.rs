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

pub fn state_of(file: &Path) -> Option<GitState> {
    let dir = file.parent()?;
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--"])
        .arg(file)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(GitState {
        commit,
        dirty: !status.stdout.is_empty(),
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
