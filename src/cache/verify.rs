//! `hcpipe verify`: re-hash every object and check every artifact folder.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::hash::hash_file;
use super::store::{Cache, FileKind};
use super::CacheError;

/// One thing found wrong, with every stage it affects.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub path: String,
    pub what: String,
    pub stages: Vec<String>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub entries: usize,
    pub objects: usize,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

pub fn verify(cache: &Cache) -> Result<VerifyReport, CacheError> {
    let mut report = VerifyReport::default();
    // (object hash, executable) → stages using it; an object's mode is part
    // of its identity (`<hash>` and `<hash>.x` are two objects).
    let mut users: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
    let mut views: Vec<(std::path::PathBuf, (String, bool), String)> = Vec::new();
    for entry in cache.entries()? {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.problems.push(Problem {
                    path: String::new(),
                    what: e.to_string(),
                    stages: vec![],
                });
                continue;
            }
        };
        report.entries += 1;
        let label = format!("{} ({})", entry.stage, entry.key.short());
        for f in &entry.files {
            if let FileKind::File { hash, exec, .. } = &f.kind {
                let id = (hash.clone(), *exec);
                users.entry(id.clone()).or_default().push(label.clone());
                views.push((
                    cache.artifact_dir(&entry.key).join(&f.path),
                    id,
                    label.clone(),
                ));
            }
        }
    }
    let mut bad_objects: HashMap<(String, bool), String> = HashMap::new();
    for ((hash, exec), stages) in &users {
        let path = cache.object_path(hash, *exec);
        report.objects += 1;
        let what = match std::fs::metadata(&path) {
            Err(_) => Some("object missing".to_string()),
            Ok(m) if (m.permissions().mode() & 0o111 != 0) != *exec => {
                report.bytes += m.len();
                Some(format!(
                    "mode is {:o}, expected {} (mode changed)",
                    m.permissions().mode() & 0o777,
                    if *exec {
                        "executable"
                    } else {
                        "not executable"
                    }
                ))
            }
            Ok(m) => {
                report.bytes += m.len();
                match hash_file(&path) {
                    Ok(h) if h.to_hex().as_str() == hash => None,
                    Ok(h) => Some(format!(
                        "content hash is {}, expected {hash} (bytes changed)",
                        h.to_hex()
                    )),
                    Err(e) => Some(format!("unreadable: {e}")),
                }
            }
        };
        if let Some(what) = what {
            bad_objects.insert((hash.clone(), *exec), what.clone());
            let mut stages = stages.clone();
            stages.dedup();
            report.problems.push(Problem {
                path: path.display().to_string(),
                what,
                stages,
            });
        }
    }
    for (view, id, label) in views {
        if bad_objects.contains_key(&id) {
            continue;
        }
        let (hash, exec) = id;
        let object = cache.object_path(&hash, exec);
        let same_inode = match (std::fs::metadata(&view), std::fs::metadata(&object)) {
            (Ok(v), Ok(o)) => v.ino() == o.ino() && v.dev() == o.dev(),
            (Err(_), _) => {
                // A missing view is rebuilt from objects on the next use: not corruption.
                continue;
            }
            _ => false,
        };
        if !same_inode {
            let ok = std::fs::metadata(&view)
                .is_ok_and(|m| (m.permissions().mode() & 0o111 != 0) == exec)
                && hash_file(&view)
                    .map(|h| h.to_hex().as_str() == hash)
                    .unwrap_or(false);
            if !ok {
                report.problems.push(Problem {
                    path: view.display().to_string(),
                    what: "artifact file differs from its object".to_string(),
                    stages: vec![label],
                });
            }
        }
    }
    Ok(report)
}
