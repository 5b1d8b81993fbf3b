//! `hcpipe gc`: drop what no kept run references.
//!
//! Kept: every entry referenced by the newest `keep_last` run records (all
//! records when `None`), and every object those entries use. Runs take the
//! cache's use lock shared; gc takes it exclusively, so it never deletes
//! what a running `hcpipe` uses. Partial downloads (`fetch`'s resumable
//! `.part` files in `downloads/`) not touched for [`PARTIAL_DOWNLOAD_TTL`] go
//! too: a resume comes with the next run, and a stale one can be gigabytes.

use std::collections::HashSet;

use super::list_runs;
use crate::cache::lock::UseLock;
use crate::cache::store::{object_name, Cache, FileKind};
use crate::cache::{CacheError, StageKey};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub runs_dropped: usize,
    pub entries_dropped: usize,
    pub objects_dropped: usize,
    /// Partial downloads (each a `.part` file with its validators) dropped.
    pub downloads_dropped: usize,
    pub bytes_freed: u64,
}

/// How long an untouched partial download is kept for a later run to resume.
pub const PARTIAL_DOWNLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub fn gc(cache: &Cache, keep_last: Option<usize>) -> Result<GcReport, CacheError> {
    let _lock =
        UseLock::try_exclusive(&cache.root.join("use.lock"))?.ok_or_else(|| CacheError::Busy {
            root: cache.root.clone(),
        })?;
    let mut report = GcReport::default();
    let runs = list_runs(cache);
    let keep_from = keep_last.map(|n| runs.len().saturating_sub(n)).unwrap_or(0);
    let mut kept_keys: HashSet<StageKey> = HashSet::new();
    for (i, run) in runs.iter().enumerate() {
        if i < keep_from {
            let _ = std::fs::remove_file(crate::record::RunRecord::path(cache, &run.id));
            report.runs_dropped += 1;
        } else {
            kept_keys.extend(run.stages.iter().map(|s| s.key.clone()));
        }
    }
    // Object file names: `<hash>`, or `<hash>.x` for an executable one.
    let mut kept_objects: HashSet<String> = HashSet::new();
    for entry in cache.entries()?.into_iter().flatten() {
        if kept_keys.contains(&entry.key) {
            kept_objects.extend(entry.files.iter().filter_map(|f| match &f.kind {
                FileKind::File { hash, exec, .. } => Some(object_name(hash, *exec)),
                _ => None,
            }));
            continue;
        }
        let _ = std::fs::remove_file(cache.entry_path(&entry.key));
        let art = cache.artifact_dir(&entry.key);
        let _ = std::fs::remove_dir_all(&art);
        let _ = std::fs::remove_file(cache.log_path(&entry.key));
        let _ = std::fs::remove_file(cache.lock_path(&entry.key));
        report.entries_dropped += 1;
    }
    // Artifact folders without an entry (a commit cut short) go too.
    if let Ok(items) = std::fs::read_dir(cache.root.join("artifacts")) {
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if StageKey::parse(&name).is_none_or(|k| !cache.entry_path(&k).exists()) {
                let _ = std::fs::remove_dir_all(item.path());
            }
        }
    }
    let objects = cache.root.join("objects");
    for item in walkdir::WalkDir::new(&objects)
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .flatten()
    {
        let name = item.file_name().to_string_lossy().into_owned();
        if item.file_type().is_file() && !kept_objects.contains(&name) {
            report.bytes_freed += item.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(item.path()).is_ok() {
                report.objects_dropped += 1;
            }
        }
    }
    report.bytes_freed += cache.clean_tmp();
    let (dropped, freed) =
        drop_stale_downloads(&cache.root.join("downloads"), PARTIAL_DOWNLOAD_TTL);
    report.downloads_dropped = dropped;
    report.bytes_freed += freed;
    Ok(report)
}

/// Removes the partial downloads in `dir` whose files were all last modified
/// more than `ttl` ago. A download's files share a stem (`<id>.part`,
/// `<id>.json`, `<id>.lock`); no run holds one, since gc holds the use lock.
/// Returns how many downloads went and the bytes freed.
fn drop_stale_downloads(dir: &std::path::Path, ttl: std::time::Duration) -> (usize, u64) {
    let Ok(items) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    // Per stem: whether any of its files is recent, and their paths and sizes.
    let mut by_stem: std::collections::BTreeMap<String, (bool, Vec<(std::path::PathBuf, u64)>)> =
        Default::default();
    for item in items.flatten() {
        let Ok(meta) = item.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        let stem = name.split('.').next().unwrap_or_default().to_string();
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < ttl);
        let slot = by_stem.entry(stem).or_default();
        slot.0 |= recent;
        slot.1.push((item.path(), meta.len()));
    }
    let (mut dropped, mut freed) = (0, 0);
    for (recent, files) in by_stem.into_values() {
        if recent {
            continue;
        }
        for (path, len) in files {
            if std::fs::remove_file(&path).is_ok() {
                freed += len;
            }
        }
        dropped += 1;
    }
    (dropped, freed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn touch(path: &std::path::Path, bytes: usize, age: Duration) {
        std::fs::write(path, vec![0u8; bytes]).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn only_downloads_untouched_for_the_ttl_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let day = Duration::from_secs(24 * 3600);
        // Old: both files two days old.
        touch(&d.join("aaaa.part"), 1000, 2 * day);
        touch(&d.join("aaaa.json"), 10, 2 * day);
        // Resumed an hour ago: its validators are old, its .part is not.
        touch(&d.join("bbbb.part"), 500, Duration::from_secs(3600));
        touch(&d.join("bbbb.json"), 10, 2 * day);
        let (dropped, freed) = drop_stale_downloads(d, day);
        assert_eq!((dropped, freed), (1, 1010));
        assert!(!d.join("aaaa.part").exists() && !d.join("aaaa.json").exists());
        assert!(d.join("bbbb.part").exists() && d.join("bbbb.json").exists());
        // No folder: nothing to do.
        assert_eq!(drop_stale_downloads(&d.join("none"), day), (0, 0));
    }
}
