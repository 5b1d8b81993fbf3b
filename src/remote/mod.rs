//! The shared remote cache: a store of finished stages that many machines
//! push to and pull from (an S3 bucket, or any S3-compatible server).
//!
//! The remote mirrors the local layout under its prefix:
//!
//! | path | holds |
//! |---|---|
//! | `objects/ab/<blake3>` (`.x`: executable) | an artifact file, named by its content |
//! | `entries/<key>.json` | a finished stage (the local entry, byte for byte) — written last |
//!
//! A push uploads every object the remote lacks, then the entry with a
//! create-only put: a push killed midway leaves objects without an entry
//! (harmless, `gc --remote` drops them), never an entry without its objects,
//! and of two runners pushing one key the first entry wins.
//!
//! A pull trusts nothing it downloads: the entry must be the one its key
//! names (its recorded inputs hash to the key), its paths must stay inside
//! the artifact, and every object is hashed as it streams in and is kept
//! only when hash and size match the manifest; the local entry is written
//! last, as a run's commit does.
//!
//! - [`RemoteStore`]: the few operations a remote needs (one trait, so the
//!   cache logic does not know about S3); [`s3`] implements it with
//!   `object_store`, [`dir`] with a local folder (`file://`).
//! - [`sync`]: push, pull, verify and gc on top of it.
//! - [`Remote`]: an opened remote, shared by the scheduler's lookups.
//!
//! The tokio runtime `object_store` needs is created only when a remote is
//! opened: a run without one starts as fast as before.

pub mod dir;
pub mod s3;
pub mod sync;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// What went wrong talking to the remote; the message says what and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL or settings are wrong (the user's mistake).
    #[error("{0}")]
    Config(String),
    /// The remote could not be reached or refused (after retries).
    #[error("{0}")]
    Service(String),
    /// The remote holds something it should not (a corrupt or truncated
    /// object, an entry that is not its key's); nothing of it was kept.
    #[error("{0}")]
    Corrupt(String),
    /// The local cache failed while storing what was pulled.
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// One listed remote object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Relative to the remote's prefix, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub modified: i64,
}

/// The operations the remote cache needs from a store. Paths are relative
/// to the remote's prefix (`entries/<key>.json`, `objects/ab/<hash>`).
pub trait RemoteStore: Send + Sync {
    /// Where it is, for messages (`s3://bucket/prefix`).
    fn url(&self) -> &str;
    /// A reader of the object's bytes as they arrive, or `None` when there is none.
    fn get(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>, RemoteError>;
    /// The object's size, or `None` when there is none.
    fn head(&self, path: &str) -> Result<Option<u64>, RemoteError>;
    /// Upload a file, replacing what is there (objects are named by their
    /// bytes: a replaced one held the same bytes).
    fn put_file(&self, path: &str, file: &Path) -> Result<(), RemoteError>;
    /// Write `bytes` only if nothing is at `path`: `false` when something was.
    fn put_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool, RemoteError>;
    /// Every object under `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, RemoteError>;
    fn delete(&self, path: &str) -> Result<(), RemoteError>;
}

/// How to reach the remote: `--remote`/`$HCPIPE_REMOTE`, and
/// `--remote-endpoint`/`$AWS_ENDPOINT_URL` for a self-hosted server.
#[derive(Debug, Clone, Default)]
pub struct RemoteConfig {
    pub url: String,
    pub endpoint: Option<String>,
}

/// An opened remote.
#[derive(Clone)]
pub struct Remote {
    pub store: Arc<dyn RemoteStore>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.store.url())
    }
}

impl Remote {
    /// Open the remote a URL names: `s3://bucket[/prefix]` or `file:///path`.
    pub fn open(config: &RemoteConfig) -> Result<Remote, RemoteError> {
        let url = config.url.trim();
        let store: Arc<dyn RemoteStore> = if let Some(rest) = url.strip_prefix("s3://") {
            Arc::new(s3::S3Remote::open(rest, config.endpoint.as_deref())?)
        } else if let Some(path) = url.strip_prefix("file://") {
            Arc::new(dir::DirRemote::open(Path::new(path))?)
        } else {
            return Err(RemoteError::Config(format!(
                "--remote `{url}`: give an S3 URL (`s3://bucket/prefix`; for a self-hosted server add `--remote-endpoint http://host:port`) or a folder (`file:///path`)"
            )));
        };
        Ok(Remote { store })
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }
}

/// Remote path of a stage's entry.
pub fn entry_path(key: &crate::cache::StageKey) -> String {
    format!("entries/{key}.json")
}

/// Remote path of an object (as in the local store).
pub fn object_path(hash: &str, exec: bool) -> String {
    let prefix = hash.get(..2).unwrap_or("xx");
    format!(
        "objects/{prefix}/{}",
        crate::cache::store::object_name(hash, exec)
    )
}

/// The scheduler's remote lookups during a run: a stage missing locally is
/// pulled when the remote has it. A remote that fails is reported once and
/// not asked again in this run (the stages then run here: a cache is never
/// a reason for a run to fail); a corrupt remote result is reported and the
/// stage runs.
pub struct Lookup {
    pub remote: Remote,
    off: std::sync::atomic::AtomicBool,
}

impl Lookup {
    pub fn new(remote: Remote) -> Lookup {
        Lookup {
            remote,
            off: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Pull `key` into `cache`; `None` when the remote lacks it (or failed).
    pub fn pull(
        &self,
        cache: &crate::cache::Cache,
        key: &crate::cache::StageKey,
        stage: &str,
    ) -> Option<crate::cache::Entry> {
        use std::sync::atomic::Ordering;
        if self.off.load(Ordering::Relaxed) {
            return None;
        }
        match sync::pull_entry(&self.remote, cache, key) {
            Ok(found) => found.map(|(entry, _)| entry),
            Err(e @ RemoteError::Corrupt(_)) => {
                eprintln!("warning: stage `{stage}`: {e}; running it here instead");
                None
            }
            Err(e) => {
                // Several lookups may fail at once: the first says so.
                if !self.off.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "warning: remote cache {} not used for the rest of this run: {e}",
                        self.remote.url()
                    );
                }
                None
            }
        }
    }

    /// [`Lookup::pull`] of each (key, stage), [`LOOKUPS_AT_ONCE`] at a
    /// time; the results in the same order. A run's stages whose keys
    /// become known together (a matrix below a pulled stage) are looked up
    /// together: one after the other, each lookup's round trips add up.
    pub fn pull_all(
        &self,
        cache: &crate::cache::Cache,
        wanted: &[(crate::cache::StageKey, String)],
    ) -> Vec<Option<crate::cache::Entry>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let next = AtomicUsize::new(0);
        let mut found: Vec<Option<crate::cache::Entry>> = vec![None; wanted.len()];
        let parts: Vec<Vec<(usize, crate::cache::Entry)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..LOOKUPS_AT_ONCE.min(wanted.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((key, stage)) = wanted.get(i) else {
                                return mine;
                            };
                            if let Some(entry) = self.pull(cache, key, stage) {
                                mine.push((i, entry));
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        for (i, entry) in parts.into_iter().flatten() {
            found[i] = Some(entry);
        }
        found
    }
}

/// Stages a run looks up in the remote cache at once.
pub const LOOKUPS_AT_ONCE: usize = 8;

/// What a Slurm job needs to work without the shared cache folder: the
/// remote, and its inputs' keys (in `needs` order). The job pulls those into
/// a node-local scratch cache, runs there, and pushes its result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemoteJob {
    pub url: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    pub inputs: Vec<crate::cache::StageKey>,
}

impl RemoteJob {
    pub fn config(&self) -> RemoteConfig {
        RemoteConfig {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

/// A job's node-local cache: under `$HCPIPE_SCRATCH`, else `$SLURM_TMPDIR`,
/// `$TMPDIR` or `/tmp`; removed on drop.
pub struct ScratchCache {
    pub cache: crate::cache::Cache,
}

impl ScratchCache {
    pub fn create() -> Result<ScratchCache, RemoteError> {
        let base = ["HCPIPE_SCRATCH", "SLURM_TMPDIR", "TMPDIR"]
            .iter()
            .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()))
            .map_or_else(
                || std::path::PathBuf::from("/tmp"),
                std::path::PathBuf::from,
            );
        let dir = base.join(format!(
            "hcpipe-job-{}-{}",
            std::process::id(),
            crate::cache::fsutil::unique_suffix()
        ));
        Ok(ScratchCache {
            cache: crate::cache::Cache::open(&dir)?,
        })
    }
}

impl Drop for ScratchCache {
    fn drop(&mut self) {
        // Objects and artifacts are read-only: make folders writable first.
        for item in walkdir::WalkDir::new(&self.cache.root)
            .into_iter()
            .flatten()
        {
            if item.file_type().is_dir() {
                use std::os::unix::fs::PermissionsExt;
                let _ =
                    std::fs::set_permissions(item.path(), std::fs::Permissions::from_mode(0o755));
            }
        }
        let _ = std::fs::remove_dir_all(&self.cache.root);
    }
}
