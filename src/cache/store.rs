//! The content-addressed store: objects, entries and artifact folders.
//!
//! Committing a finished stage (see [`Cache::commit`]):
//! 1. every file of the staging folder is hashed and moved to
//!    `objects/ab/<hash>`, or `objects/ab/<hash>.x` when executable
//!    (read-only; an object that exists is kept). The mode is part of an
//!    object's identity because the artifact's files are hard links to it:
//!    one inode cannot be both executable and not. A file that has other
//!    hard links (reachable from outside `{out}`) is copied, never moved;
//! 2. a folder of hard links to those objects is built in `tmp/` and renamed
//!    to `artifacts/<key>`;
//! 3. `entries/<key>.json` is written atomically — only now is the stage done.
//!
//! Only what physically lies inside `{out}` is stored: `{out}` itself must be
//! a folder (not a link to one), symlinks must resolve inside `{out}` (they
//! are stored relative, so they resolve in the artifact folder too), and
//! names must be UTF-8 (the manifest is JSON).
//!
//! A crash before step 3 leaves unreferenced objects (collected by `gc`) and
//! maybe an artifact folder without an entry, which the next commit replaces.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::{sync_dir, unique_suffix, write_atomic};
use super::hash::hash_file;
use super::key::{write_json, KeyInputs, StageKey};
use super::lock::{StageLock, UseLock};
use super::CacheError;
use crate::ops::Metrics;

/// One path inside an artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FileRecFields")]
pub struct FileRec {
    /// Relative path, `/`-separated.
    pub path: String,
    #[serde(flatten)]
    pub kind: FileKind,
}

/// A [`FileRec`] as its JSON object spells it. Read through this plain
/// struct rather than serde's `flatten` + tagged enum, which buffers every
/// record before reading it again: a 100,000-stage no-op run reads every
/// stage's entry.
#[derive(Deserialize)]
struct FileRecFields {
    path: String,
    kind: String,
    hash: Option<String>,
    size: Option<u64>,
    exec: Option<bool>,
    target: Option<String>,
}

impl TryFrom<FileRecFields> for FileRec {
    type Error = String;

    fn try_from(f: FileRecFields) -> Result<FileRec, String> {
        let kind = match (f.kind.as_str(), f.hash, f.size, f.exec, f.target) {
            ("file", Some(hash), Some(size), Some(exec), None) => {
                FileKind::File { hash, size, exec }
            }
            ("dir", None, None, None, None) => FileKind::Dir,
            ("link", None, None, None, Some(target)) => FileKind::Link { target },
            (kind, ..) => {
                return Err(format!(
                    "`{}`: a `{kind}` record with the wrong fields (a file has hash, size and \
                     exec; a link, target; a dir, none)",
                    f.path
                ))
            }
        };
        Ok(FileRec { path: f.path, kind })
    }
}

/// The identity of an artifact's content: blake3 over the canonical JSON
/// (`key::canonical`, compact) of its manifest (every path with its kind,
/// object hash, size, mode or link target), written directly: each
/// dependant's key chains it, so planning a cached pipeline computes it for
/// every stage.
pub fn manifest_hash(files: &[FileRec]) -> String {
    let mut out = Vec::with_capacity(64 + 160 * files.len());
    out.push(b'[');
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Fields in sorted order, as the canonical JSON sorts them.
        match &f.kind {
            FileKind::File { hash, size, exec } => {
                out.extend_from_slice(b"{\"exec\":");
                write_json(exec, &mut out);
                out.extend_from_slice(b",\"hash\":");
                write_json(hash, &mut out);
                out.extend_from_slice(b",\"kind\":\"file\",\"path\":");
                write_json(&f.path, &mut out);
                out.extend_from_slice(b",\"size\":");
                write_json(size, &mut out);
            }
            FileKind::Dir => {
                out.extend_from_slice(b"{\"kind\":\"dir\",\"path\":");
                write_json(&f.path, &mut out);
            }
            FileKind::Link { target } => {
                out.extend_from_slice(b"{\"kind\":\"link\",\"path\":");
                write_json(&f.path, &mut out);
                out.extend_from_slice(b",\"target\":");
                write_json(target, &mut out);
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    blake3::hash(&out).to_hex().to_string()
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
    pub inputs: StoredInputs,
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

/// An entry's key inputs as its file holds them, parsed only when asked
/// for: planning reads every cached stage's entry but needs only its files
/// and metrics, and parsing the inputs too was a tenth of a 100,000-stage
/// no-op run. Written compact inside the pretty entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredInputs(Box<serde_json::value::RawValue>);

impl StoredInputs {
    pub fn new(inputs: &KeyInputs) -> StoredInputs {
        StoredInputs(
            serde_json::value::to_raw_value(inputs).expect("key inputs are plain JSON values"),
        )
    }

    /// The inputs; an error names what is wrong with them.
    pub fn get(&self) -> Result<KeyInputs, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The op that made the entry (None for a cmd stage or unreadable inputs).
    pub fn op(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Op {
            op: Option<String>,
        }
        serde_json::from_str::<Op>(self.0.get()).ok()?.op
    }
}

/// What planning keeps of a cached stage's entry: the content hash its
/// dependants' keys chain, and what the run record and the launch order
/// read. A no-op run reads every stage's entry but needs no more; holding
/// whole entries was most of its memory (about 1.2 KB per stage). The
/// entry itself is read again when a dependant needs its files
/// ([`Cache::entry`]).
#[derive(Debug, Clone)]
pub struct EntrySummary {
    /// [`manifest_hash`] of its files.
    pub content: String,
    pub metrics: Metrics,
    pub wall_s: f64,
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
        self.root.join("artifacts").join(&*key.0)
    }

    /// Where the object with these bytes and this mode lives.
    pub fn object_path(&self, hash: &str, exec: bool) -> PathBuf {
        let prefix = hash.get(..2).unwrap_or("xx");
        self.root
            .join("objects")
            .join(prefix)
            .join(object_name(hash, exec))
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
        self.read_entry(key)
    }

    /// [`Cache::entry`], summarized: the entry's other fields are skipped
    /// unread.
    pub fn entry_summary(&self, key: &StageKey) -> Result<Option<EntrySummary>, CacheError> {
        #[derive(Deserialize)]
        struct Fields {
            files: Vec<FileRec>,
            metrics: Metrics,
            wall_s: f64,
        }
        Ok(self.read_entry::<Fields>(key)?.map(|f| EntrySummary {
            content: manifest_hash(&f.files),
            metrics: f.metrics,
            wall_s: f.wall_s,
        }))
    }

    /// A stage's entry file read as `T`: `None` when there is none.
    fn read_entry<T: serde::de::DeserializeOwned>(
        &self,
        key: &StageKey,
    ) -> Result<Option<T>, CacheError> {
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
            if let FileKind::File { size, hash, exec } = &f.kind {
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
                    Ok(m) if is_exec(&m) != *exec => {
                        return Err(corrupt(format!(
                            "has mode {:o}, but was recorded as {}",
                            m.permissions().mode() & 0o777,
                            if *exec {
                                "executable"
                            } else {
                                "not executable"
                            }
                        )))
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
            if let FileKind::File { hash, exec, .. } = &f.kind {
                if !self.object_path(hash, *exec).is_file() {
                    return Err(CacheError::Msg(format!(
                        "object {hash} of `{}` in stage `{}` is missing from the cache; re-run with `--force {}`",
                        f.path, entry.stage, entry.stage
                    )));
                }
            }
        }
        self.place_view(&entry.files, &entry.key)
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
        check_out_is_folder(&out, &meta.stage)?;
        // `{out}` as the kernel resolves it, should the stage have spelled it
        // through a symlinked cache path (`realpath {out}`).
        let out_real = std::fs::canonicalize(&out).map_err(|e| CacheError::io(&out, e))?;
        // Links are checked against `{out}` as the stage left it, so every
        // path is looked at before any file is moved into the object store.
        let mut files = Vec::new();
        let mut to_store = Vec::new();
        // `{out}` was just checked to be a real folder; not following even the
        // root keeps a link swapped in meanwhile from leading the walk outside.
        let walker = walkdir::WalkDir::new(&out)
            .min_depth(1)
            .sort_by_file_name()
            .follow_links(false)
            .follow_root_links(false);
        for item in walker {
            let item = item.map_err(|e| {
                CacheError::Msg(format!("reading stage output {}: {e}", out.display()))
            })?;
            let rel = relative(item.path(), &out, &meta.stage)?;
            let ft = item.file_type();
            if ft.is_dir() {
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::Dir,
                });
            } else if ft.is_symlink() {
                let target = link_target(item.path(), &rel, &out, &out_real, &meta.stage)?;
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::Link { target },
                });
            } else if ft.is_file() {
                // A placeholder, filled in below once the file is stored.
                to_store.push((files.len(), item.into_path()));
                files.push(FileRec {
                    path: rel,
                    kind: FileKind::Dir,
                });
            } else {
                return Err(CacheError::Msg(format!(
                    "stage `{}` wrote {}, which is neither a file, a folder nor a symlink; artifacts hold only those",
                    meta.stage, rel
                )));
            }
        }
        for (i, path) in to_store {
            let (hash, size, exec) = self.store_object(&path, &staging.root)?;
            files[i].kind = FileKind::File { hash, size, exec };
        }
        let objects = self.root.join("objects");
        sync_dir(&objects).map_err(|e| CacheError::io(&objects, e))?;
        self.place_view(&files, key)?;
        let entry = Entry {
            key: key.clone(),
            stage: meta.stage,
            pipeline: meta.pipeline,
            inputs: StoredInputs::new(&meta.inputs),
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

    /// Put one file of `{out}` into the object store; returns (hash, size,
    /// executable). `scratch` is a folder of ours on the cache's file system.
    fn store_object(&self, file: &Path, scratch: &Path) -> Result<(String, u64, bool), CacheError> {
        let meta = std::fs::symlink_metadata(file).map_err(|e| CacheError::io(file, e))?;
        let exec = is_exec(&meta);
        // A file with other hard links is also someone else's (`cp -l
        // USERFILE {out}/`): moving or chmod-ing it would make the user's file
        // read-only and alias it with the object, so a later edit of it would
        // change the cache. Such a file is copied; the copy is hashed, so the
        // object holds exactly the bytes it is named by.
        let copy;
        let src = if meta.nlink() > 1 {
            // Unless it already is the object (a stage linking `{in.X}/file`).
            let hash = hash_file(file).map_err(|e| CacheError::io(file, e))?;
            let hash = hash.to_hex().to_string();
            if same_file(file, &self.object_path(&hash, exec)) {
                return Ok((hash, meta.len(), exec));
            }
            copy = scratch.join(format!(".copy.{}", unique_suffix()));
            std::fs::copy(file, &copy).map_err(|e| CacheError::io(file, e))?;
            copy.as_path()
        } else {
            file
        };
        let size = std::fs::metadata(src)
            .map_err(|e| CacheError::io(src, e))?
            .len();
        let hash = hash_file(src)
            .map_err(|e| CacheError::io(src, e))?
            .to_hex()
            .to_string();
        // An existing object is trusted only if it still holds its bytes and
        // mode: a forced re-run is how a corrupt object gets replaced.
        if self.has_object(&hash, exec) {
            // `src` is ours (a file of the stage's `{out}` or our copy of a
            // user's file), its name no longer needed.
            let _ = std::fs::remove_file(src);
        } else {
            self.adopt_object(src, &hash, exec)?;
        }
        Ok((hash, size, exec))
    }

    /// Make `artifacts/<key>`: a folder of links to `files`' objects, built
    /// aside and then put in place.
    fn place_view(&self, files: &[FileRec], key: &StageKey) -> Result<PathBuf, CacheError> {
        let view = self.tmp_dir("view")?;
        self.link_view(&view, files)?;
        self.install_view(&view, key)
    }

    fn link_view(&self, view: &Path, files: &[FileRec]) -> Result<(), CacheError> {
        for f in files {
            let dest = view.join(&f.path);
            match &f.kind {
                FileKind::Dir => {
                    std::fs::create_dir_all(&dest).map_err(|e| CacheError::io(&dest, e))?
                }
                FileKind::File { hash, exec, .. } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
                    }
                    link_object(&self.object_path(hash, *exec), &dest)?;
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
            // Left by an attempt that died before writing its entry, being
            // rebuilt, or replaced by a forced re-run while another run's
            // dependant may be reading it: the two folders swap places in one
            // step, so `dest` is never missing; the old one is then deleted
            // from where the view was.
            match exchange(view, &dest) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(view);
                }
                // A file system without RENAME_EXCHANGE (or `dest` gone
                // meanwhile): out of the way, then in.
                Err(_) => {
                    let trash = self.tmp_dir("trash")?;
                    match std::fs::rename(&dest, trash.join("old")) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(CacheError::io(&dest, e))
                        }
                        _ => {}
                    }
                    let _ = std::fs::remove_dir_all(&trash);
                    std::fs::rename(view, &dest).map_err(|e| CacheError::io(&dest, e))?;
                }
            }
        } else {
            std::fs::rename(view, &dest).map_err(|e| CacheError::io(&dest, e))?;
        }
        let parent = self.root.join("artifacts");
        sync_dir(&parent).map_err(|e| CacheError::io(&parent, e))?;
        Ok(dest)
    }

    /// Whether the store holds this object with its bytes and mode
    /// (re-hashed: an object that rotted is not trusted).
    pub fn has_object(&self, hash: &str, exec: bool) -> bool {
        let dest = self.object_path(hash, exec);
        let mode = if exec { 0o555 } else { 0o444 };
        std::fs::metadata(&dest).is_ok_and(|m| m.permissions().mode() & 0o777 == mode)
            && hash_file(&dest).is_ok_and(|h| h.to_hex().as_str() == hash)
    }

    /// A scratch folder under `tmp/` (removed by `gc` once this process is gone).
    pub fn scratch_dir(&self, tag: &str) -> Result<PathBuf, CacheError> {
        self.tmp_dir(tag)
    }

    /// Move `file`, whose bytes the caller checked hash to `hash`, into the
    /// store as that object (read-only, durable), replacing a rotted one.
    /// `file` must be on the cache's file system (a [`Cache::scratch_dir`]).
    pub fn adopt_object(&self, file: &Path, hash: &str, exec: bool) -> Result<(), CacheError> {
        let dest = self.object_path(hash, exec);
        let dir = dest.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let mode = if exec { 0o555 } else { 0o444 };
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
            .map_err(|e| CacheError::io(file, e))?;
        std::fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(|e| CacheError::io(file, e))?;
        // Linked in, not renamed over: the same bytes from a concurrent stage
        // or pull may have landed meanwhile, and a rename over them would
        // take the name from an inode another stage is linking into its view
        // (its `link` then fails with "No such file or directory"). Only an
        // object that is still not intact is replaced.
        match std::fs::hard_link(file, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !self.has_object(hash, exec) {
                    std::fs::rename(file, &dest).map_err(|e| CacheError::io(&dest, e))?;
                }
            }
            Err(e) => return Err(CacheError::io(&dest, e)),
        }
        let _ = std::fs::remove_file(file);
        sync_dir(dir).map_err(|e| CacheError::io(dir, e))
    }

    /// Record a finished stage made elsewhere (pulled from a remote) whose
    /// objects are all in the store: the artifact folder, then `bytes` (the
    /// entry as its maker wrote it) as `entries/<key>.json`, the commit
    /// point, as [`Cache::commit`] does. The caller holds the stage lock.
    pub fn import_entry(&self, entry: &Entry, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let dir = self.place_view(&entry.files, &entry.key)?;
        write_atomic(&self.entry_path(&entry.key), bytes)?;
        Ok(dir)
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

/// An object's file name: its hash, with `.x` when executable.
pub fn object_name(hash: &str, exec: bool) -> String {
    if exec {
        format!("{hash}.x")
    } else {
        hash.to_string()
    }
}

/// Whether any execute bit is set: what a file of an artifact records.
fn is_exec(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Swap two paths in one step (Linux's `renameat2(RENAME_EXCHANGE)`; std
/// has no such call and no well-kept crate is needed for one libc call).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (a, b) = (
        std::ffi::CString::new(a.as_os_str().as_bytes())?,
        std::ffi::CString::new(b.as_os_str().as_bytes())?,
    );
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Hard-link an object into a view. A rotted object being replaced by a
/// forced run (renamed over) can make `link` find an inode whose last name
/// just went; the new object is there a moment later, so that is retried.
fn link_object(object: &Path, dest: &Path) -> Result<(), CacheError> {
    let mut tries = 0;
    loop {
        match std::fs::hard_link(object, dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 && object.is_file() => {
                tries += 1;
            }
            other => return other.map_err(|e| CacheError::io(dest, e)),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A stage may replace `{out}` (`rm -r {out}; ln -s DIR {out}`): then only
/// the link is ours, and storing what it points at would move a user's
/// folder into the cache.
fn check_out_is_folder(out: &Path, stage: &str) -> Result<(), CacheError> {
    let problem = match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(out).unwrap_or_default();
            format!(
                "replaced its {{out}} folder with a symlink to `{}`; hcpipe stores only what is inside {{out}} and never takes files from elsewhere: copy them in instead (`cp -rL DIR/. {{out}}/`)",
                target.display()
            )
        }
        Ok(_) => "replaced its {out} folder with a file; write files into the folder instead (`... > {out}/NAME`)".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "removed its {out} folder; leave it in place and write files into it (to empty it: `rm -rf {out}/*`)".to_string()
        }
        Err(e) => return Err(CacheError::io(out, e)),
    };
    Err(CacheError::Msg(format!("stage `{stage}` {problem}")))
}

/// `path` relative to `{out}`, `/`-separated. Names must be UTF-8: a lossy
/// conversion would rename the file (and two such names could collide).
fn relative(path: &Path, base: &Path, stage: &str) -> Result<String, CacheError> {
    let rel = path
        .strip_prefix(base)
        .map_err(|_| CacheError::Msg(format!("{} escapes {}", path.display(), base.display())))?;
    let mut parts = Vec::new();
    for c in rel.components() {
        let Some(part) = c.as_os_str().to_str() else {
            // Debug escapes the bytes that are not UTF-8 (`caf\xE9`).
            let escaped = format!("{rel:?}");
            return Err(CacheError::Msg(format!(
                "stage `{stage}` wrote `{{out}}/{}`, whose name is not valid UTF-8; artifact file names must be UTF-8 (the manifest is JSON): rename it",
                escaped.trim_matches('"')
            )));
        };
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// How a symlink in `{out}` is stored: its target, made relative when it is
/// an absolute path into `{out}` (which would dangle once the staging folder
/// is gone). A link must resolve inside `{out}`: what it points at outside
/// is not part of the artifact, so a later run could find it changed.
fn link_target(
    link: &Path,
    rel: &str,
    out: &Path,
    out_real: &Path,
    stage: &str,
) -> Result<String, CacheError> {
    let raw = std::fs::read_link(link).map_err(|e| CacheError::io(link, e))?;
    let refuse = |why: &str| {
        let fix = if why.starts_with("points outside") {
            format!("an artifact holds only what is inside {{out}}: copy the file in instead (`cp -L SOURCE {{out}}/{rel}`)")
        } else {
            format!("point it at a file inside {{out}}, or remove it (`rm {{out}}/{rel}`)")
        };
        CacheError::Msg(format!(
            "stage `{stage}` wrote the symlink `{rel}` → `{}`, which {why}; {fix}",
            raw.display()
        ))
    };
    let Some(text) = raw.to_str() else {
        return Err(refuse("is not valid UTF-8"));
    };
    let depth = rel.matches('/').count();
    let target = if raw.is_absolute() {
        let inner = raw
            .strip_prefix(out)
            .or_else(|_| raw.strip_prefix(out_real))
            .map_err(|_| refuse("points outside {out}"))?;
        let mut t: Vec<&str> = vec![".."; depth];
        // Strings were checked above; an inner part is UTF-8 too.
        t.extend(inner.components().filter_map(|c| c.as_os_str().to_str()));
        if t.is_empty() {
            ".".to_string()
        } else {
            t.join("/")
        }
    } else {
        text.to_string()
    };
    let parent: Vec<OsString> = Path::new(rel)
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let mut budget = 40; // the kernel's limit on links followed in one lookup
    match resolve_inside(out, out_real, parent, Path::new(&target), &mut budget) {
        // The kernel's own lookup as well, for what the walk above glosses
        // over (`file.txt/..`).
        Ok(_) if std::fs::metadata(link).is_err() => {
            Err(refuse("is dangling (nothing is at its target)"))
        }
        Ok(_) => Ok(target),
        Err(Unresolved::Outside) => Err(refuse("points outside {out}")),
        Err(Unresolved::Dangling) => Err(refuse("is dangling (nothing is at its target)")),
        Err(Unresolved::Loop) => Err(refuse("is part of a loop of symlinks")),
    }
}

enum Unresolved {
    Outside,
    Dangling,
    Loop,
}

/// Resolve `target` from the folder `from` (components below `out`) step by
/// step as the kernel would, failing as soon as a step leaves `out`: the
/// artifact folder is a copy of `out` alone, so a link that resolves
/// there now, even one leaving `out` and coming back, would differ there.
fn resolve_inside(
    out: &Path,
    out_real: &Path,
    from: Vec<OsString>,
    target: &Path,
    budget: &mut u32,
) -> Result<Vec<OsString>, Unresolved> {
    let mut at = from;
    let mut parts = target.components().peekable();
    if target.is_absolute() {
        // Another link's absolute target: only one into `{out}` stays inside.
        let inner = target
            .strip_prefix(out)
            .or_else(|_| target.strip_prefix(out_real))
            .map_err(|_| Unresolved::Outside)?;
        return resolve_inside(out, out_real, Vec::new(), inner, budget);
    }
    while let Some(part) = parts.next() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop().ok_or(Unresolved::Outside)?;
            }
            Component::Normal(name) => {
                at.push(name.to_os_string());
                let here: PathBuf = out.join(at.iter().collect::<PathBuf>());
                let meta = std::fs::symlink_metadata(&here).map_err(|_| Unresolved::Dangling)?;
                if meta.file_type().is_symlink() {
                    *budget = budget.checked_sub(1).ok_or(Unresolved::Loop)?;
                    let next = std::fs::read_link(&here).map_err(|_| Unresolved::Dangling)?;
                    at.pop();
                    at = resolve_inside(out, out_real, at, &next, budget)?;
                } else if !meta.is_dir() && parts.peek().is_some() {
                    // `file/...`: the kernel refuses to look inside a file.
                    return Err(Unresolved::Dangling);
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(Unresolved::Outside),
        }
    }
    Ok(at)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::canonical;

    /// What content hashes were before they were written directly: every
    /// key in a cache chains them.
    fn reference(files: &[FileRec]) -> String {
        let text = canonical(&serde_json::to_value(files).unwrap()).to_string();
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }

    fn files() -> Vec<FileRec> {
        vec![
            FileRec {
                path: "b/ü \"x\"".into(),
                kind: FileKind::File {
                    hash: "ab".repeat(32),
                    size: 18_446_744_073_709_551_615,
                    exec: true,
                },
            },
            FileRec {
                path: "a".into(),
                kind: FileKind::Dir,
            },
            FileRec {
                path: "l".into(),
                kind: FileKind::Link {
                    target: "../t\n".into(),
                },
            },
            FileRec {
                path: "z".into(),
                kind: FileKind::File {
                    hash: "00".repeat(32),
                    size: 0,
                    exec: false,
                },
            },
        ]
    }

    /// Two stages of one run (or two runs) storing the same bytes at once:
    /// each must be able to link the shared object into its view. A rename
    /// over the object while another stage links it made `link` see an inode
    /// with no name left (ENOENT: the CAPS test failed in CI that way).
    #[test]
    fn stages_storing_the_same_bytes_at_once_all_link_their_views() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let scratch = cache.scratch_dir("t").unwrap();
                        let file = scratch.join("f.tsv");
                        // The same bytes in every thread, new bytes each round.
                        std::fs::write(&file, format!("round {i}\n")).unwrap();
                        let (hash, size, exec) = cache.store_object(&file, &scratch).unwrap();
                        let view = cache.tmp_dir("view").unwrap();
                        let rec = FileRec {
                            path: format!("x/{t}.tsv"),
                            kind: FileKind::File { hash, size, exec },
                        };
                        cache.link_view(&view, &[rec]).unwrap();
                        std::fs::remove_dir_all(&scratch).unwrap();
                        std::fs::remove_dir_all(&view).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    /// A forced re-run replaces a stage's artifact folder while another
    /// run's dependant may be reading it: the folder's path must never be
    /// missing, even for a moment (it used to be renamed away, then the new
    /// one renamed in).
    #[test]
    fn replacing_an_artifact_folder_never_leaves_its_path_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let scratch = cache.scratch_dir("t").unwrap();
        let file = scratch.join("f");
        std::fs::write(&file, "bytes\n").unwrap();
        let (hash, size, exec) = cache.store_object(&file, &scratch).unwrap();
        let files = [FileRec {
            path: "f".into(),
            kind: FileKind::File { hash, size, exec },
        }];
        let key = StageKey("ab".repeat(32).into());
        let install = |cache: &Cache| {
            cache.place_view(&files, &key).unwrap();
        };
        install(&cache);
        let target = cache.artifact_dir(&key).join("f");
        let done = std::sync::atomic::AtomicBool::new(false);
        let missing = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let mut missing = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if std::fs::metadata(&target).is_err() {
                        missing += 1;
                    }
                }
                missing
            });
            for _ in 0..2000 {
                install(&cache);
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap()
        });
        assert_eq!(
            missing, 0,
            "the artifact folder was missing {missing} time(s)"
        );
        let left = std::fs::read_dir(cache.root.join("tmp")).unwrap().count();
        assert_eq!(left, 1, "only the test's scratch folder is left in tmp/");
    }

    #[test]
    fn manifest_hash_is_the_canonical_content_hash() {
        assert_eq!(manifest_hash(&files()), reference(&files()));
        assert_eq!(manifest_hash(&[]), reference(&[]));
    }

    #[test]
    fn file_records_read_back_as_written_and_wrong_fields_are_refused() {
        let text = serde_json::to_string(&files()).unwrap();
        let back: Vec<FileRec> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, files());
        for bad in [
            r#"{"path":"x","kind":"file","hash":"ab","size":1}"#,
            r#"{"path":"x","kind":"dir","target":"y"}"#,
            r#"{"path":"x","kind":"socket"}"#,
        ] {
            let err = serde_json::from_str::<FileRec>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("`x`"), "{bad}: {err}");
        }
    }
}
