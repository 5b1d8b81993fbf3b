//! The git revision of a pipeline file, when it lives in a git work tree.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Why git could not answer.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git is not installed (or cannot be started).
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    NotInWorkTree(String),
    /// git ran and refused, e.g. a revision that does not exist.
    #[error("git {args}: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("{0} is not UTF-8")]
    NotUtf8(String),
}

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
pub fn show_at(file: &Path, rev: &str) -> Result<String, GitError> {
    let (top, rel) = repo_path(file)?;
    let spec = format!("{rev}:{}", rel.display());
    let out = Command::new("git")
        .arg("-C")
        .arg(&top)
        .args(["show", &spec])
        .output()
        .map_err(GitError::Spawn)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            args: format!("show {spec}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| GitError::NotUtf8(spec))
}

/// A dep's content hash as it was at a git revision, in the format the stat
/// cache gives the working tree (`cache::statcache`), so a revision whose
/// deps equal the working tree's finds the same cached results.
pub enum DepAtRevision {
    /// Hashed from the revision's blobs (or, where git says the working
    /// tree holds exactly them, from the working tree).
    Hash(String),
    /// Git cannot give this dep's content at the revision; why.
    NotInGit(String),
}

/// Hash `dep` (a file or folder) as of revision `rev`.
pub fn dep_at(dep: &Path, rev: &str) -> Result<DepAtRevision, GitError> {
    let (top, rel) = match repo_path(dep) {
        Ok(x) => x,
        Err(_) => {
            return Ok(DepAtRevision::NotInGit(
                "it is outside the git work tree".into(),
            ))
        }
    };
    let rel = rel.to_string_lossy().into_owned();
    let git = |args: &[&str]| -> Result<Vec<u8>, GitError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&top)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(GitError::Spawn)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(GitError::Failed {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    };
    let spec = format!("{rev}^{{tree}}");
    let listing = git(&[
        "ls-tree",
        "-r",
        "-t",
        "-z",
        "--full-tree",
        &spec,
        "--",
        &rel,
    ])?;
    let mut entries: Vec<(String, String, String)> = Vec::new(); // (mode, object, path)
    for item in listing.split(|b| *b == 0).filter(|i| !i.is_empty()) {
        let text = String::from_utf8_lossy(item);
        let Some((meta, path)) = text.split_once('\t') else {
            continue;
        };
        let mut parts = meta.split(' ');
        let (Some(mode), Some(_kind), Some(object)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        entries.push((mode.to_string(), object.to_string(), path.to_string()));
    }
    if entries.is_empty() {
        return Ok(DepAtRevision::NotInGit(format!(
            "git does not track it at {rev}"
        )));
    }
    if entries
        .iter()
        .any(|(mode, ..)| mode == "120000" || mode == "160000")
    {
        return Ok(DepAtRevision::NotInGit(format!(
            "at {rev} it holds symlinks or submodules, whose targets git does not store"
        )));
    }
    // Files git does not track (ignored data, say) are part of the working
    // tree's hash but of no revision: the revision cannot be told apart.
    let untracked = git(&[
        "status",
        "--porcelain=v1",
        "-z",
        "--ignored=matching",
        "--untracked-files=all",
        "--",
        &rel,
    ])?;
    let has_untracked = untracked
        .split(|b| *b == 0)
        .any(|i| i.starts_with(b"??") || i.starts_with(b"!!"));
    if has_untracked {
        return Ok(DepAtRevision::NotInGit(
            "it holds files git does not track in the working tree".into(),
        ));
    }
    let single_file = entries.len() == 1 && entries[0].2 == rel && entries[0].0 != "040000";
    if single_file {
        let (mode, object, _) = &entries[0];
        let bytes = git(&["cat-file", "blob", object])?;
        let mut hash = blake3::hash(&bytes).to_hex().to_string();
        if mode == "100755" {
            hash.push_str("+x");
        }
        return Ok(DepAtRevision::Hash(hash));
    }
    // A folder: the same records, in the same order, as the stat cache's walk
    // (depth first, siblings by name bytes).
    let prefix = format!("{rel}/");
    let mut tree: std::collections::BTreeMap<Vec<Vec<u8>>, (char, String)> =
        std::collections::BTreeMap::new();
    for (mode, object, path) in &entries {
        let Some(inner) = path.strip_prefix(&prefix) else {
            continue;
        };
        let parts: Vec<Vec<u8>> = inner.split('/').map(|p| p.as_bytes().to_vec()).collect();
        if mode == "040000" {
            tree.insert(parts, ('D', String::new()));
        } else {
            let bytes = git(&["cat-file", "blob", object])?;
            let mut hash = blake3::hash(&bytes).to_hex().to_string();
            if mode == "100755" {
                hash.push_str("+x");
            }
            tree.insert(parts, ('F', hash));
        }
    }
    // Ordering component lists lexicographically is exactly a depth-first walk
    // with siblings sorted by name.
    let records: Vec<(char, Vec<u8>, String)> = tree
        .into_iter()
        .map(|(parts, (kind, content))| (kind, parts.join(&b'/'), content))
        .collect();
    Ok(DepAtRevision::Hash(crate::cache::statcache::tree_hash_of(
        records
            .iter()
            .map(|(k, p, c)| (*k, p.as_slice(), c.as_str())),
    )))
}

/// The repository's top folder and `file`'s path inside it.
fn repo_path(file: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), GitError> {
    let not_in = |what: &str| GitError::NotInWorkTree(format!("{} {what}", file.display()));
    let abs =
        std::path::absolute(file).map_err(|e| not_in(&format!("has no absolute path ({e})")))?;
    let dir = if abs.is_dir() {
        abs.clone()
    } else {
        abs.parent()
            .ok_or_else(|| not_in("has no folder"))?
            .to_path_buf()
    };
    let top = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(GitError::Spawn)?;
    if !top.status.success() {
        return Err(not_in("is not inside a git work tree"));
    }
    let top = std::path::PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let canon_top = top.canonicalize().unwrap_or(top);
    // The folder is resolved (symlinks, `..`), the last name kept as written.
    let canon = if abs.is_dir() {
        abs.canonicalize().unwrap_or(abs.clone())
    } else {
        abs.parent()
            .and_then(|p| p.canonicalize().ok())
            .map(|p| p.join(abs.file_name().unwrap_or_default()))
            .unwrap_or(abs.clone())
    };
    let rel = canon
        .strip_prefix(&canon_top)
        .map_err(|_| not_in("is outside the git work tree"))?
        .to_path_buf();
    Ok((canon_top, rel))
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
