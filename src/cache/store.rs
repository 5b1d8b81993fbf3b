//! The content-addressed store: objects, entries and artifact folders.
//!
//! Committing a finished stage (see [`Cache::commit`]):
//! 1. every file of the staging folder is hashed and moved to
//!    `objects/ab/<hash>` (read-only; an object that exists is kept);
//! 2. a folder of hard links to those objects is built in `tmp/` and renamed
//!    to `artifacts/<key>`;
//! 3. `entries/<key>.json` is written atomically — only now is the stage done.
//!
//! A crash before step 3 leaves unreferenced objects (collected by `gc`) and
//! maybe an artifact folder without an entry, which the next commit replaces.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{sync_dir, unique_suffix, write_atomic};
use super::hash::hash_file;
use super::key::{KeyInputs, StageKey};
use super::lock::{StageLock, UseLock};
use super::CacheError;
use crate::ops::Metrics;

/// One path inside an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRec {
    /// Relative path, `/`-separated.
    pub path: String,
    #[serde(flatten)]
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FileKind {
    File { hash: String, size: u64, exec: bool },
    Dir,
    Link { target: String },
}

/// A finished stage, as stored in `entries/<key>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub key: StageKey,
    pub stage: String,
    pub pipeline: String,
    pub inputs: KeyInputs,
    pub files: Vec<FileRec>,
    pub metrics: Metrics,
    pub wall_s: f64,
    /// RFC 3339, UTC.
    pub created: String,
    pub hcpipe_version: String,
}

impl Entry {
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| match f.kind {
                FileKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Facts about a stage run that the cache records beside its files.
pub struct EntryMeta {
    pub stage: String,
    pub pipeline: String,
    pub inputs: KeyInputs,
    pub metrics: Metrics,
    pub wall_s: f64,
}

/// A staging folder for one attempt at a stage; removed on drop.
pub struct Staging {
    pub root: PathBuf,
}

impl Staging {
    /// The folder the stage writes its artifact into (`{out}`).
    pub fn out(&self) -> PathBuf {
        self.root.join("out")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = make_writable(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Cached artifacts up to this size are re-hashed before a stage reads them.
pub const REHASH_LIMIT: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    /// Open (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        let root = std::path::absolute(root).map_err(|e| CacheError::io(root, e))?;
        for sub in [
            "objects",
            "entries",
            "artifacts",
            "runs",
            "logs",
            "locks",
            "tmp",
        ] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| {
                CacheError::Msg(format!(
                    "cannot create cache folder {}: {e}; pass a writable folder with `--cache DIR`",
                    p.display()
                ))
            })?;
        }
        Ok(Cache { root })
    }

    pub fn entry_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("entries").join(format!("{key}.json"))
    }

    pub fn artifact_dir(&self, key: &StageKey) -> PathBuf {
        self.root.join("artifacts").join(&key.0)
    }

    pub fn object_path(&self, hash: &str) -> PathBuf {
        let prefix = hash.get(..2).unwrap_or("xx");
        self.root.join("objects").join(prefix).join(hash)
    }

    pub fn log_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("logs").join(format!("{key}.log"))
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn stat_cache_path(&self) -> PathBuf {
        self.root.join("stat-cache.json")
    }

    /// Read a stage's entry, if the stage has finished before.
    pub fn entry(&self, key: &StageKey) -> Result<Option<Entry>, CacheError> {
        let path = self.entry_path(key);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CacheError::BadEntry {
                        path,
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io(path, e)),
        }
    }

    /// Every entry in the cache (unreadable ones are returned as errors).
    pub fn entries(&self) -> Result<Vec<Result<Entry, CacheError>>, CacheError> {
        let dir = self.root.join("entries");
        let mut out = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| CacheError::io(&dir, e))? {
            let item = item.map_err(|e| CacheError::io(&dir, e))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json").and_then(StageKey::parse) {
                out.push(self.entry(&key).and_then(|e| {
                    e.ok_or_else(|| CacheError::Msg(format!("entry {key} vanished")))
                }));
            }
        }
        Ok(out)
    }

    /// A cached stage's artifact folder, checked cheaply (every file present
    /// with its recorded size) and rebuilt from objects when it was removed.
    /// A size mismatch means corruption: refuse, and say what to do.
    ///
    /// With `rehash`, an artifact of at most [`REHASH_LIMIT`] bytes is also
    /// re-hashed, so a flipped byte is caught before a stage consumes it.
    pub fn ensure_artifact(&self, entry: &Entry, rehash: bool) -> Result<PathBuf, CacheError> {
        let dir = self.artifact_dir(&entry.key);
        if !dir.is_dir() {
            return self.rebuild_view(entry);
        }
        let rehash = rehash && entry.bytes() <= REHASH_LIMIT;
        for f in &entry.files {
            if let FileKind::File { size, hash, .. } = &f.kind {
                let p = dir.join(&f.path);
                let corrupt = |what: String| {
                    CacheError::Msg(format!(
                        "cached file {} of stage `{}` {what}: the cache is corrupt; run `hcpipe verify`, then re-run with `--force {}`",
                        p.display(),
                        entry.stage,
                        entry.stage
                    ))
                };
                match std::fs::metadata(&p) {
                    Ok(m) if m.len() != *size => {
                        return Err(corrupt(format!("is {} bytes, expected {size}", m.len())))
                    }
                    Ok(_) if rehash => {
                        let actual = hash_file(&p).map_err(|e| CacheError::io(&p, e))?;
                        if actual.to_hex().as_str() != hash {
                            return Err(corrupt("no longer matches its hash".to_string()));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return self.rebuild_view(entry),
                }
            }
        }
        Ok(dir)
    }

    fn rebuild_view(&self, entry: &Entry) -> Result<PathBuf, CacheError> {
        for f in &entry.files {
            if let FileKind::File { hash, .. } = &f.kind {
                if !self.object_path(hash).is_file() {
                    return Err(CacheError::Msg(format!(
                        "object {hash} of `{}` in stage `{}` is missing from the cache; re-run with `--force {}`",
                        f.path, entry.stage, entry.stage
                    )));
                }
            }
        }
        let view = self.tmp_dir("view")?;
        self.link_view(&view, &entry.files)?;
        self.install_view(&view, &entry.key)
    }

    /// A fresh staging folder for an attempt at `key`.
    pub fn staging(&self, key: &StageKey) -> Result<Staging, CacheError> {
        let root = self.tmp_dir(key.short())?;
        std::fs::create_dir_all(root.join("out")).map_err(|e| CacheError::io(&root, e))?;
        Ok(Staging { root })
    }

    fn tmp_dir(&self, tag: &str) -> Result<PathBuf, CacheError> {
        let dir =
            self.root
                .join("tmp")
                .join(format!("{tag}.{}.{}", std::process::id(), unique_suffix()));
        std::fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;
        Ok(dir)
    }

    /// Lock file for one stage key.
    pub fn lock_path(&self, key: &StageKey) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    pub fn lock_stage(&self, key: &StageKey) -> Result<StageLock, CacheError> {
        StageLock::acquire(&self.lock_path(key))
    }

    pub fn try_lock_stage(&self, key: &StageKey) -> Result<Option<StageLock>, CacheError> {
        StageLock::try_acquire(&self.lock_path(key))
    }

    /// Held by every run; see [`UseLock`].
    pub fn use_lock(&self) -> Result<UseLock, CacheError> {
        UseLock::shared(&self.root.join("use.lock"))
    }

    /// Store a finished stage's files and write its entry (the commit point).
    /// The caller holds the stage lock for `key`.
    pub fn commit(
        &self,
        staging: &Staging,
        key: &StageKey,
        meta: EntryMeta,
    ) -> Result<Entry, CacheError> {
        let out = staging.out();
        let mut files = Vec::new();
        let walker = walkdir::WalkDir::new(&out)
            .min_depth(1)
            .sort_by_file_name()
            .follow_links(false);
        for item in walker {
            let item = item.map_err(|e| {
                CacheError::Msg(format!("reading stage output {}: {e}", out.display()))
            })?;
            let rel = relative(item.path(), &out)?;
            let ft = item.file_type();
            if ft.is_dir() {
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::Dir,
                });
            } else if ft.is_symlink() {
                let target =
                    std::fs::read_link(item.path()).map_err(|e| CacheError::io(item.path(), e))?;
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::Link {
                        target: target.to_string_lossy().into_owned(),
                    },
                });
            } else if ft.is_file() {
                let (hash, size, exec) = self.store_object(item.path())?;
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::File { hash, size, exec },
                });
            } else {
                return Err(CacheError::Msg(format!(
                    "stage `{}` wrote {}, which is neither a file, a folder nor a symlink; artifacts hold only those",
                    meta.stage, rel
                )));
            }
        }
        let objects = self.root.join("objects");
        sync_dir(&objects).map_err(|e| CacheError::io(&objects, e))?;
        let view = self.tmp_dir("view")?;
        self.link_view(&view, &files)?;
        self.install_view(&view, key)?;
        let entry = Entry {
            key: key.clone(),
            stage: meta.stage,
            pipeline: meta.pipeline,
            inputs: meta.inputs,
            files,
            metrics: meta.metrics,
            wall_s: meta.wall_s,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            hcpipe_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let bytes =
            serde_json::to_vec_pretty(&entry).map_err(|e| CacheError::Msg(e.to_string()))?;
        write_atomic(&self.entry_path(key), &bytes)?;
        Ok(entry)
    }

    /// Move one file into the object store; returns (hash, size, executable).
    fn store_object(&self, file: &Path) -> Result<(String, u64, bool), CacheError> {
        let meta = std::fs::metadata(file).map_err(|e| CacheError::io(file, e))?;
        let exec = meta.permissions().mode() & 0o111 != 0;
        let hash = hash_file(file)
            .map_err(|e| CacheError::io(file, e))?
            .to_hex()
            .to_string();
        let dest = self.object_path(&hash);
        // An existing object is trusted only if it still holds its bytes: a
        // forced re-run is how a corrupt object gets replaced.
        let intact = dest.exists() && hash_file(&dest).is_ok_and(|h| h.to_hex().as_str() == hash);
        if !intact {
            let dir = dest.parent().unwrap_or(&self.root);
            std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
            let mode = if exec { 0o555 } else { 0o444 };
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
                .map_err(|e| CacheError::io(file, e))?;
            std::fs::File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(|e| CacheError::io(file, e))?;
            // Same bytes from a concurrent run may land first: rename over it is harmless.
            std::fs::rename(file, &dest).map_err(|e| CacheError::io(&dest, e))?;
            sync_dir(dir).map_err(|e| CacheError::io(dir, e))?;
        }
        Ok((hash, meta.len(), exec))
    }

    fn link_view(&self, view: &Path, files: &[FileRec]) -> Result<(), CacheError> {
        for f in files {
            let dest = view.join(&f.path);
            match &f.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&dest).map_err(|e| CacheError::io(&dest, e))?
                }
                FileKind::File { hash, .. } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
                    }
                    std::fs::hard_link(self.object_path(hash), &dest)
                        .map_err(|e| CacheError::io(&dest, e))?;
                }
                FileKind::Link { target } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
                    }
                    std::os::unix::fs::symlink(target, &dest)
                        .map_err(|e| CacheError::io(&dest, e))?;
                }
            }
        }
        Ok(())
    }

    fn install_view(&self, view: &Path, key: &StageKey) -> Result<PathBuf, CacheError> {
        let dest = self.artifact_dir(key);
        if dest.exists() {
            // Left by an attempt that died before writing its entry, or being rebuilt.
            let trash = self.tmp_dir("trash")?;
            std::fs::rename(&dest, trash.join("old")).map_err(|e| CacheError::io(&dest, e))?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        std::fs::rename(view, &dest).map_err(|e| CacheError::io(&dest, e))?;
        let parent = self.root.join("artifacts");
        sync_dir(&parent).map_err(|e| CacheError::io(&parent, e))?;
        Ok(dest)
    }

    /// Remove staging folders whose owner process is gone (crashed runs).
    pub fn clean_tmp(&self) -> u64 {
        let dir = self.root.join("tmp");
        let mut freed = 0;
        let Ok(items) = std::fs::read_dir(&dir) else {
            return 0;
        };
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let pid = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                freed += super::fsutil::tree_size(&item.path());
                let _ = make_writable(&item.path());
                let _ = std::fs::remove_dir_all(item.path());
            }
        }
        freed
    }
}

fn relative(path: &Path, base: &Path) -> Result<String, CacheError> {
    let rel = path
        .strip_prefix(base)
        .map_err(|_| CacheError::Msg(format!("{} escapes {}", path.display(), base.display())))?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Ok(parts.join("/"))
}

/// Staging trees may hold read-only folders a stage made; unlock before removal.
fn make_writable(root: &Path) -> std::io::Result<()> {
    for item in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if item.file_type().is_dir() {
            let _ = std::fs::set_permissions(item.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
    Ok(())
}
