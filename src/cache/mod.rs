//! The cache: what goes into a stage key, and where bytes live.
//!
//! Layout under the cache root (default `cache/`, or `--cache DIR`):
//!
//! | path | holds |
//! |---|---|
//! | `objects/ab/abcdef…` | every artifact file once, named by its blake3, read-only (`<hash>.x` for an executable one: the mode is part of an object's identity) |
//! | `entries/<key>.json` | a finished stage: key inputs, file manifest, metrics — the commit point |
//! | `artifacts/<key>/` | the artifact as a folder of hard links to objects (what `{in.X}` points at) |
//! | `runs/<id>.json` | one run record per `hcpipe run` |
//! | `logs/<key>.log` | the last attempt's stdout+stderr |
//! | `locks/<key>.lock` | held while a runner executes that stage |
//! | `tmp/` | staging folders of stages in flight |
//! | `stat-cache.json` | (device, inode, size, mtime_ns, ctime_ns) → blake3 of deps |
//! | `use.lock` | shared by every run, exclusive for `gc` |
//!
//! An entry is written only after every object and the artifact folder are
//! durable (temp + fsync + rename), so a `kill -9` at any moment leaves
//! either a complete entry or none, and the next run continues from the
//! finished stages.

pub mod fsutil;
pub mod hash;
pub mod key;
pub mod lock;
pub mod stale;
pub mod statcache;
pub mod store;
pub mod verify;

pub use key::{KeyInputs, StageKey, UpstreamInput};
pub use stale::StaleReason;
pub use store::{Cache, Entry, EntrySummary};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cache entry {path} is unreadable ({reason}); run `hcpipe verify`, then `hcpipe run --force STAGE`")]
    BadEntry {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A declared (or implied) dep is not there: the pipeline's mistake.
    #[error("dep `{dep}` of stage `{stage}` does not exist ({})", .path.display())]
    MissingDep {
        dep: String,
        stage: String,
        path: std::path::PathBuf,
    },
    /// `gc` needs the cache to itself.
    #[error("another `hcpipe` is using the cache {}; gc runs only when no run is in progress: try again when it ends", .root.display())]
    Busy { root: std::path::PathBuf },
    #[error("{0}")]
    Msg(String),
}

impl CacheError {
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.into(),
            source,
        }
    }
}
