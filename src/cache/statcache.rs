//! Remembers the blake3 of dep files by (device, inode, size, mtime_ns, ctime_ns),
//! so an unchanged 1 GiB dep is not re-hashed on every run. A touched file
//! (new mtime, same bytes) is re-hashed once, keeps its hash, and so its
//! stage key: nothing re-runs.
//!
//! Concurrent runs may each save their copy; the last one wins, which only
//! costs the loser's entries a re-hash later.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// How long a stamp on a file system with whole-second times stays racy.
/// FAT keeps 2 s, most others 1 s.
const COARSE_CLOCK_WINDOW_NS: i64 = 2_000_000_000;

impl Stamp {
    /// Whether this stamp tells the file's next edit apart. On a file system
    /// with whole-second times (FAT, some NFS servers: both nanosecond parts
    /// are 0), an edit of the same size later in the same second leaves the
    /// stamp as it was, and a remembered hash would then be stale: such a
    /// stamp is trusted only once its second is well past (as git treats a
    /// "racily clean" index entry). Nanosecond stamps are trusted at once.
    fn settled(&self, now: std::time::SystemTime) -> bool {
        let coarse = self.mtime_ns % 1_000_000_000 == 0 && self.ctime_ns % 1_000_000_000 == 0;
        if !coarse {
            return true;
        }
        let now_ns = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.mtime_ns.max(self.ctime_ns) < now_ns.saturating_sub(COARSE_CLOCK_WINDOW_NS)
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

    /// The content hash of a dep: a file's bytes and executable bit, or a
    /// folder tree (see [`StatCache::hash_tree`]).
    ///
    /// Symlinks are followed (a dep given as a link is its target's content).
    pub fn hash_path(&mut self, path: &Path) -> Result<String, CacheError> {
        let meta = std::fs::metadata(path).map_err(|e| CacheError::io(path, e))?;
        if meta.is_dir() {
            self.hash_tree(path)
        } else {
            self.hash_file(path)
        }
    }

    /// A folder's hash: every entry by relative path (sorted), each with its
    /// kind and content. Symlinks inside are followed, so editing a link's
    /// target or re-pointing the link changes the hash, and the link's own
    /// name and target text are hashed too (a link loop is hashed as its
    /// text, never walked forever). The cache folder is skipped when it lies
    /// inside (`deps: [.]`): its contents change with every run.
    /// Unreadable entries are errors, never silently skipped: a skipped file
    /// would be outside the key.
    fn hash_tree(&mut self, root: &Path) -> Result<String, CacheError> {
        let cache_root = self.path.parent().and_then(|p| p.canonicalize().ok());
        let mut records: Vec<(char, Vec<u8>, String)> = Vec::new();
        let mut walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = walker.next() {
            let item = match item {
                Ok(item) => item,
                Err(e) if e.loop_ancestor().is_some() => {
                    let at = e.path().unwrap_or(root);
                    let target = std::fs::read_link(at).unwrap_or_default();
                    records.push(('O', relative(at, root), target.to_string_lossy().into()));
                    continue;
                }
                Err(e) if is_dangling_link(&e) => {
                    // A link to nothing: what the stage sees is the link alone.
                    let at = e.path().unwrap_or(root);
                    let target = std::fs::read_link(at).unwrap_or_default();
                    records.push(('L', relative(at, root), target.to_string_lossy().into()));
                    continue;
                }
                Err(e) => {
                    let at = e.path().unwrap_or(root).to_path_buf();
                    return Err(CacheError::Msg(format!(
                        "cannot read {} inside the dep folder {}: {e}; fix its permissions or remove it from the folder",
                        at.display(),
                        root.display()
                    )));
                }
            };
            let rel = relative(item.path(), root);
            if item.path_is_symlink() {
                let target =
                    std::fs::read_link(item.path()).map_err(|e| CacheError::io(item.path(), e))?;
                records.push(('L', rel.clone(), target.to_string_lossy().into()));
            }
            if item.file_type().is_dir() {
                let is_cache =
                    cache_root.is_some() && item.path().canonicalize().ok() == cache_root;
                if is_cache {
                    walker.skip_current_dir();
                    continue;
                }
                records.push(('D', rel, String::new()));
            } else {
                let h = self.hash_file(item.path())?;
                records.push(('F', rel, h));
            }
        }
        Ok(tree_hash_of(
            records
                .iter()
                .map(|(k, p, c)| (*k, p.as_slice(), c.as_str())),
        ))
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
        let mut hash = hash_file(path)
            .map_err(|e| CacheError::io(path, e))?
            .to_hex()
            .to_string();
        // The executable bit is part of what a stage sees (`./tool.sh` runs or not).
        if meta.permissions().mode() & 0o111 != 0 {
            hash.push_str("+x");
        }
        self.hashed += 1;
        // A file modified while we hashed it gets no stamp: next time it is hashed again.
        let after = std::fs::metadata(path).map(|m| Stamp::of(&m)).ok();
        if after.as_ref() == Some(&stamp) && stamp.settled(std::time::SystemTime::now()) {
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

/// `path` relative to `root`, `/`-separated, raw bytes kept (lossless for
/// hashing: two non-UTF-8 names never collide).
fn relative(path: &Path, root: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    path.strip_prefix(root)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes()
        .to_vec()
}

/// A folder's hash from its entries in walk order: (kind, relative path,
/// content) where kind is `F` file (content: its hash), `D` folder, `L` a
/// symlink (content: its target text; what it points at follows as its own
/// entries) or `O` a link that loops. Each part is length-prefixed so no two
/// different trees feed the same bytes. Shared with `git`, which
/// hashes a revision's folder the same way.
pub fn tree_hash_of<'a>(records: impl Iterator<Item = (char, &'a [u8], &'a str)>) -> String {
    let mut hasher = blake3::Hasher::new();
    for (kind, rel, content) in records {
        hasher.update(&[kind as u8]);
        hasher.update(&(rel.len() as u64).to_le_bytes());
        hasher.update(rel);
        hasher.update(&(content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    format!("tree:{}", hasher.finalize().to_hex())
}

fn is_dangling_link(e: &walkdir::Error) -> bool {
    let not_found = e
        .io_error()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
    not_found
        && e.path()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_whole_second_stamp_is_trusted_only_once_its_second_is_past() {
        let at = |secs: i64, nanos: i64| Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: secs * 1_000_000_000 + nanos,
            ctime_ns: secs * 1_000_000_000 + nanos,
        };
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_millis(100_500);
        // Whole seconds: the same second (or the one before) is still racy.
        assert!(!at(100, 0).settled(now));
        assert!(!at(99, 0).settled(now));
        assert!(at(98, 0).settled(now));
        // A stamp from the future (a clock ahead) is not trusted either.
        assert!(!at(200, 0).settled(now));
        // Nanosecond stamps tell the next edit apart at once.
        assert!(at(100, 123).settled(now));
        // One part fine-grained is enough (ctime cannot be set by a user).
        let mut mixed = at(100, 0);
        mixed.ctime_ns += 7;
        assert!(mixed.settled(now));
    }

    fn tree_hash(stat: &mut StatCache, dir: &Path) -> String {
        stat.hash_path(dir).unwrap()
    }

    #[test]
    fn links_inside_a_folder_are_followed_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let stat_path = tmp.path().join("cache/stat-cache.json");
        let mut stat = StatCache::load(stat_path);
        let data = tmp.path().join("data");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::create_dir_all(elsewhere.join("d")).unwrap();
        std::fs::write(elsewhere.join("a.txt"), "a").unwrap();
        std::fs::write(elsewhere.join("b.txt"), "b").unwrap();
        std::fs::write(elsewhere.join("d/x"), "x").unwrap();
        symlink(elsewhere.join("a.txt"), data.join("link")).unwrap();
        symlink(elsewhere.join("d"), data.join("dirlink")).unwrap();
        let h0 = tree_hash(&mut stat, &data);
        // Edit the target of a file link.
        std::fs::write(elsewhere.join("a.txt"), "A").unwrap();
        let h1 = tree_hash(&mut stat, &data);
        assert_ne!(h0, h1, "editing a link's target must change the hash");
        // Edit a file inside a linked folder.
        std::fs::write(elsewhere.join("d/x"), "X").unwrap();
        let h2 = tree_hash(&mut stat, &data);
        assert_ne!(
            h1, h2,
            "editing a file in a linked folder must change the hash"
        );
        // Re-point the link to a file with the same bytes: the link text changed.
        std::fs::write(elsewhere.join("b.txt"), "A").unwrap();
        std::fs::remove_file(data.join("link")).unwrap();
        symlink(elsewhere.join("b.txt"), data.join("link")).unwrap();
        let h3 = tree_hash(&mut stat, &data);
        assert_ne!(h2, h3, "re-pointing a link must change the hash");
    }

    #[test]
    fn a_link_loop_and_a_dangling_link_are_hashed_not_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let mut stat = StatCache::load(tmp.path().join("cache/stat-cache.json"));
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        symlink("..", data.join("sub/up")).unwrap();
        symlink("nowhere", data.join("dangling")).unwrap();
        let h0 = tree_hash(&mut stat, &data);
        std::fs::remove_file(data.join("dangling")).unwrap();
        symlink("elsewhere", data.join("dangling")).unwrap();
        assert_ne!(h0, tree_hash(&mut stat, &data));
    }

    #[test]
    fn the_cache_inside_a_dep_folder_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let mut stat = StatCache::load(tmp.path().join("cache/stat-cache.json"));
        std::fs::create_dir_all(tmp.path().join("cache/objects")).unwrap();
        std::fs::write(tmp.path().join("d.txt"), "d").unwrap();
        let h0 = tree_hash(&mut stat, tmp.path());
        std::fs::write(tmp.path().join("cache/objects/new"), "n").unwrap();
        assert_eq!(h0, tree_hash(&mut stat, tmp.path()));
        std::fs::write(tmp.path().join("d.txt"), "D").unwrap();
        assert_ne!(h0, tree_hash(&mut stat, tmp.path()));
    }

    #[test]
    fn the_executable_bit_is_part_of_a_file_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let mut stat = StatCache::load(tmp.path().join("cache/stat-cache.json"));
        let f = tmp.path().join("tool.sh");
        std::fs::write(&f, "echo hi").unwrap();
        let h0 = stat.hash_path(&f).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(h0, stat.hash_path(&f).unwrap());
    }
}
