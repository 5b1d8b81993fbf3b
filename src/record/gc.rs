//! `hcpipe gc`: drop what no kept run references.
//!
//! Kept: every entry referenced by the newest `keep_last` run records (all
//! records when `None`), and every object those entries use. Runs take the
//! cache's use lock shared; gc takes it exclusively, so it never deletes
//! what a running `hcpipe` uses.

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
    pub bytes_freed: u64,
}

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
    Ok(report)
}
