//! File locks (flock via `std::fs::File::lock`): released by the kernel when
//! the process dies, so a `kill -9` never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::CacheError;

/// Held while this process executes one stage key.
pub struct StageLock {
    _file: File,
}

fn open(path: &Path) -> Result<File, CacheError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| CacheError::io(path, e))
}

impl StageLock {
    /// Take the lock, or return `None` when another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<StageLock>, CacheError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StageLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CacheError::io(path, e)),
        }
    }

    /// Wait until the lock is ours.
    pub fn acquire(path: &Path) -> Result<StageLock, CacheError> {
        let file = open(path)?;
        file.lock().map_err(|e| CacheError::io(path, e))?;
        Ok(StageLock { _file: file })
    }
}

/// Shared by every run for its whole duration; `gc` needs it exclusively,
/// so it never deletes what a running `hcpipe` uses.
pub struct UseLock {
    _file: File,
}

impl UseLock {
    pub fn shared(path: &Path) -> Result<UseLock, CacheError> {
        let file = open(path)?;
        file.lock_shared().map_err(|e| CacheError::io(path, e))?;
        Ok(UseLock { _file: file })
    }

    pub fn try_exclusive(path: &Path) -> Result<Option<UseLock>, CacheError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(UseLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(CacheError::io(path, e)),
        }
    }
}
