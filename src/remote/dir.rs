//! A local folder as a remote (`--remote file:///path`): a cache shared
//! through a mounted file system, and the store the unit tests use.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Listed, RemoteError, RemoteStore};
use crate::cache::fsutil::unique_suffix;

pub struct DirRemote {
    root: PathBuf,
    url: String,
}

impl DirRemote {
    pub fn open(root: &Path) -> Result<DirRemote, RemoteError> {
        std::fs::create_dir_all(root).map_err(|e| {
            RemoteError::Config(format!(
                "remote folder {}: {e}; give a folder you can write",
                root.display()
            ))
        })?;
        Ok(DirRemote {
            root: root.to_path_buf(),
            url: format!("file://{}", root.display()),
        })
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn io(&self, path: &str, e: std::io::Error) -> RemoteError {
        RemoteError::Service(format!("{}/{path}: {e}", self.url))
    }

    /// A temp file beside `dest`, written and synced.
    fn write_temp(
        &self,
        path: &str,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<PathBuf, RemoteError> {
        let dest = self.at(path);
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| self.io(path, e))?;
        let tmp = dir.join(format!(".tmp.{}.{}", std::process::id(), unique_suffix()));
        let result = std::fs::File::create(&tmp).and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        });
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(path, e));
        }
        Ok(tmp)
    }
}

impl RemoteStore for DirRemote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, RemoteError> {
        match std::fs::File::open(self.at(path)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(path, e)),
        }
    }

    fn head(&self, path: &str) -> Result<Option<u64>, RemoteError> {
        match std::fs::metadata(self.at(path)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(path, e)),
        }
    }

    fn put_file(&self, path: &str, file: &Path) -> Result<(), RemoteError> {
        let tmp = self.write_temp(path, |f| {
            std::io::copy(&mut std::fs::File::open(file)?, f).map(|_| ())
        })?;
        std::fs::rename(&tmp, self.at(path)).map_err(|e| self.io(path, e))
    }

    fn put_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool, RemoteError> {
        let tmp = self.write_temp(path, |f| f.write_all(&bytes))?;
        // A hard link fails when the name exists: create-only, atomically.
        let result = std::fs::hard_link(&tmp, self.at(path));
        let _ = std::fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io(path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, RemoteError> {
        let base = self.at(prefix);
        let mut out = Vec::new();
        for item in walkdir::WalkDir::new(&base).into_iter().flatten() {
            let name = item.file_name().to_string_lossy();
            if !item.file_type().is_file() || name.starts_with(".tmp.") {
                continue;
            }
            let Ok(rel) = item.path().strip_prefix(&self.root) else {
                continue;
            };
            let meta = item.metadata().map_err(|e| self.io(prefix, e.into()))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            out.push(Listed {
                path: rel.to_string_lossy().into_owned(),
                size: meta.len(),
                modified,
            });
        }
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), RemoteError> {
        match std::fs::remove_file(self.at(path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(path, e)),
        }
    }
}
