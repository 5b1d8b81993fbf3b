//! Remembers the blake3 of dep files by (device, inode, size, mtime_ns, ctime_ns),
//! so an unchanged 1 GiB dep is not re-hashed on every run. A touched file
//! (new mtime, same bytes) is re-hashed once, keeps its hash, and so its
//! stage key: nothing re-runs.
//!
//! Concurrent runs may each save their copy; the last one wins, which only
//! costs the loser's entries a re-hash later.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsutil::write_atomic;
use super::hash::hash_file;
use super::CacheError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    stamp: Stamp,
    hash: String,
}

pub struct StatCache {
    path: PathBuf,
    map: HashMap<String, Remembered>,
    dirty: bool,
    /// How many files were actually read and hashed (for tests and `-v`).
    pub hashed: usize,
}

impl StatCache {
    /// Load the stat cache; a missing or unreadable file starts empty.
    pub fn load(path: PathBuf) -> StatCache {
        let map = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        StatCache {
            path,
            map,
            dirty: false,
            hashed: 0,
        }
    }

    /// The content hash of a file, or of a folder tree (relative paths and
    /// file hashes, sorted).
    pub fn hash_path(&mut self, path: &Path) -> Result<String, CacheError> {
        let meta = std::fs::metadata(path).map_err(|e| CacheError::io(path, e))?;
        if meta.is_dir() {
            let mut hasher = blake3::Hasher::new();
            let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(path)
                .sort_by_file_name()
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.into_path())
                .collect();
            entries.sort();
            for file in entries {
                let rel = file
                    .strip_prefix(path)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .into_owned();
                let h = self.hash_file(&file)?;
                hasher.update(rel.as_bytes());
                hasher.update(&[0]);
                hasher.update(h.as_bytes());
                hasher.update(&[0]);
            }
            Ok(format!("tree:{}", hasher.finalize().to_hex()))
        } else {
            self.hash_file(path)
        }
    }

    fn hash_file(&mut self, path: &Path) -> Result<String, CacheError> {
        let meta = std::fs::metadata(path).map_err(|e| CacheError::io(path, e))?;
        let stamp = Stamp::of(&meta);
        let id = std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .to_string_lossy()
            .into_owned();
        if let Some(r) = self.map.get(&id) {
            if r.stamp == stamp {
                return Ok(r.hash.clone());
            }
        }
        let hash = hash_file(path)
            .map_err(|e| CacheError::io(path, e))?
            .to_hex()
            .to_string();
        self.hashed += 1;
        // A file modified while we hashed it gets no stamp: next time it is hashed again.
        let after = std::fs::metadata(path).map(|m| Stamp::of(&m)).ok();
        if after.as_ref() == Some(&stamp) {
            self.map.insert(
                id,
                Remembered {
                    stamp,
                    hash: hash.clone(),
                },
            );
            self.dirty = true;
        }
        Ok(hash)
    }

    pub fn save(&mut self) -> Result<(), CacheError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&self.map).map_err(|e| CacheError::Msg(e.to_string()))?;
        write_atomic(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}
