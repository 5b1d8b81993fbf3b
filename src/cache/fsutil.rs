//! Durable file-system steps shared by the cache and run records.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::CacheError;

/// Write `bytes` to `path` so that readers see either the old file or the
/// whole new one: temp file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes (buffered), for a file too big
/// to hold in memory twice (a 100,000-stage run record is 22 MB).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), CacheError> {
    let dir = path
        .parent()
        .ok_or_else(|| CacheError::Msg(format!("{} has no parent folder", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        unique_suffix()
    ));
    let result = (|| {
        let mut f = std::io::BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        write(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| CacheError::io(path, e))
}

/// fsync a folder so a rename inside it survives a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A per-process-unique suffix for temp names.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Bytes used by a folder tree (files only), for `gc` reports.
pub fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}
