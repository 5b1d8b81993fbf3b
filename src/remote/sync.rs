//! Push, pull, verify and gc between the local cache and a remote.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use super::{entry_path, object_path, Remote, RemoteError};
use crate::cache::store::{Entry, FileKind};
use crate::cache::{Cache, StageKey};

/// Objects transferred at once.
const PARALLEL: usize = 8;
/// Attempts at an object whose bytes came back wrong (the client itself
/// retries failed requests: 500s, resets, stalls).
const CORRUPT_ATTEMPTS: u32 = 3;
/// An entry larger than this is not an entry.
const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// What a push or pull moved.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Transfer {
    /// Entries written (push: to the remote; pull: to the local cache).
    pub entries: usize,
    /// Entries the destination held already.
    pub entries_present: usize,
    pub objects: usize,
    pub objects_present: usize,
    pub bytes: u64,
}

impl Transfer {
    fn add(&mut self, o: &Transfer) {
        self.entries += o.entries;
        self.entries_present += o.entries_present;
        self.objects += o.objects;
        self.objects_present += o.objects_present;
        self.bytes += o.bytes;
    }
}

/// Each distinct object of an entry: (hash, executable, size).
fn objects_of(entry: &Entry) -> Vec<(String, bool, u64)> {
    let mut seen = BTreeSet::new();
    entry
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::File { hash, size, exec } => Some((hash.clone(), *exec, *size)),
            _ => None,
        })
        .filter(|(h, x, _)| seen.insert((h.clone(), *x)))
        .collect()
}

/// Run `work` over `items` on up to [`PARALLEL`] threads; the first error wins.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, RemoteError> + Sync,
) -> Result<Vec<R>, RemoteError> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<R>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<RemoteError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(items.len()) {
            s.spawn(|| loop {
                if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                let i = {
                    let Ok(mut n) = next.lock() else { return };
                    *n += 1;
                    *n - 1
                };
                let Some(item) = items.get(i) else { return };
                match work(item) {
                    Ok(r) => {
                        if let Ok(mut v) = results.lock() {
                            v.push(r)
                        }
                    }
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_default())
}

/// Upload one stage: the objects the remote lacks, then the entry
/// (create-only). Each object is re-hashed first: a corrupt local object is
/// never published under its name.
pub fn push_entry(remote: &Remote, cache: &Cache, entry: &Entry) -> Result<Transfer, RemoteError> {
    let store = &remote.store;
    let mut t = Transfer::default();
    let epath = entry_path(&entry.key);
    if store.head(&epath)?.is_some() {
        t.entries_present = 1;
        return Ok(t);
    }
    let moved = parallel(&objects_of(entry), |(hash, exec, size)| {
        let rpath = object_path(hash, *exec);
        if store.head(&rpath)? == Some(*size) {
            return Ok((0, 0));
        }
        let local = cache.object_path(hash, *exec);
        let actual = crate::cache::hash::hash_file(&local)
            .map_err(|e| RemoteError::Cache(crate::cache::CacheError::io(&local, e)))?;
        if actual.to_hex().as_str() != hash {
            return Err(RemoteError::Corrupt(format!(
                "local object {} of stage `{}` no longer matches its hash: not pushed; run `hcpipe verify`, then `hcpipe run --force {}`",
                local.display(),
                entry.stage,
                entry.stage
            )));
        }
        store.put_file(&rpath, &local)?;
        Ok((1, *size))
    })?;
    for (n, bytes) in moved {
        if n == 0 {
            t.objects_present += 1;
        } else {
            t.objects += 1;
            t.bytes += bytes;
        }
    }
    // The local entry's own bytes: a pull writes them back unchanged.
    let local = cache.entry_path(&entry.key);
    let bytes = std::fs::read(&local)
        .map_err(|e| RemoteError::Cache(crate::cache::CacheError::io(&local, e)))?;
    if store.put_new(&epath, bytes)? {
        t.entries = 1;
    } else {
        // Another runner pushed this key first; its entry stands.
        t.entries_present = 1;
    }
    Ok(t)
}

/// Push entries one after the other (each one's objects in parallel).
pub fn push_entries(
    remote: &Remote,
    cache: &Cache,
    entries: &[Entry],
) -> Result<Transfer, RemoteError> {
    let mut total = Transfer::default();
    for e in entries {
        total.add(&push_entry(remote, cache, e)?);
    }
    Ok(total)
}

/// Fetch and check a remote entry; `None` when the remote has no such key.
pub fn fetch_entry(
    remote: &Remote,
    key: &StageKey,
) -> Result<Option<(Entry, Vec<u8>)>, RemoteError> {
    let path = entry_path(key);
    let Some(reader) = remote.store.get(&path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_ENTRY_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| RemoteError::Service(format!("reading {}/{path}: {e}", remote.url())))?;
    let bad = |why: String| {
        RemoteError::Corrupt(format!(
            "the remote entry {}/{path} {why}; it was not used (delete it from the remote, or push the stage again from a good cache)",
            remote.url()
        ))
    };
    let entry: Entry =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("is not a valid entry ({e})")))?;
    if &entry.key != key {
        return Err(bad(format!("names another key ({})", entry.key)));
    }
    let inputs = entry
        .inputs
        .get()
        .map_err(|e| bad(format!("records unreadable inputs ({e})")))?;
    if &inputs.key() != key {
        return Err(bad(
            "records inputs that do not hash to its key (it is not this stage's result)".into(),
        ));
    }
    check_manifest(&entry).map_err(bad)?;
    Ok(Some((entry, bytes)))
}

/// A manifest's paths must stay inside the artifact and its hashes be
/// hashes: what comes from a remote becomes file names here.
pub fn check_manifest(entry: &Entry) -> Result<(), String> {
    for f in &entry.files {
        let parts: Vec<&str> = f.path.split('/').collect();
        if f.path.is_empty()
            || f.path.contains('\0')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(format!("has the unsafe path `{}`", f.path));
        }
        match &f.kind {
            FileKind::File { hash, .. } => {
                if hash.len() != 64
                    || !hash
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(format!("gives `{}` the malformed hash `{hash}`", f.path));
                }
            }
            FileKind::Link { target } => {
                // Only leading `..`, no deeper than the link's folder: then
                // every link resolves inside the artifact.
                let depth = parts.len() - 1;
                let t: Vec<&str> = target
                    .split('/')
                    .filter(|p| !p.is_empty() && *p != ".")
                    .collect();
                let ups = t.iter().take_while(|p| **p == "..").count();
                if target.starts_with('/')
                    || target.contains('\0')
                    || ups > depth
                    || t[ups..].contains(&"..")
                {
                    return Err(format!(
                        "has a symlink `{}` → `{target}` that may lead outside the artifact",
                        f.path
                    ));
                }
            }
            FileKind::Dir => {}
        }
    }
    Ok(())
}

/// Download one object into the local store, hashing as it arrives; kept
/// only when its hash and size are the manifest's. Returns bytes moved.
fn pull_object(
    remote: &Remote,
    cache: &Cache,
    scratch: &Path,
    (hash, exec, size): &(String, bool, u64),
    stage: &str,
) -> Result<u64, RemoteError> {
    if cache.has_object(hash, *exec) {
        return Ok(0);
    }
    let rpath = object_path(hash, *exec);
    let mut last = String::new();
    for attempt in 0..CORRUPT_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
        }
        let Some(mut reader) = remote.store.get(&rpath)? else {
            return Err(RemoteError::Corrupt(format!(
                "the remote entry of stage `{stage}` names the object {}/{rpath}, which the remote does not have (a push cut short, or a remote gc); push the stage again",
                remote.url()
            )));
        };
        let tmp = scratch.join(format!(
            "{}.{attempt}",
            object_path(hash, *exec).replace('/', "_")
        ));
        let got = (|| -> std::io::Result<(String, u64)> {
            let mut file = std::fs::File::create(&tmp)?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n: u64 = 0;
            loop {
                let k = reader.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if n > *size {
                    // Longer than recorded: wrong, whatever follows.
                    break;
                }
                hasher.update(&buf[..k]);
                file.write_all(&buf[..k])?;
            }
            file.sync_all()?;
            Ok((hasher.finalize().to_hex().to_string(), n))
        })();
        match got {
            Ok((h, n)) if &h == hash && n == *size => {
                cache.adopt_object(&tmp, hash, *exec)?;
                return Ok(n);
            }
            Ok((_, n)) if n != *size => {
                last = format!("{n} bytes arrived, {size} expected (truncated or padded)");
            }
            Ok((h, _)) => last = format!("its bytes hash to {h}, not {hash}"),
            Err(e) => last = e.to_string(),
        }
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("remote object {rpath}: {last}; retrying");
    }
    Err(RemoteError::Corrupt(format!(
        "object {}/{rpath} of stage `{stage}` came back wrong {CORRUPT_ATTEMPTS} times ({last}); nothing of it was kept. Check the remote (`hcpipe verify --remote`) or the network",
        remote.url()
    )))
}

/// Pull one stage's result into the local cache: `None` when the remote
/// has no such key. Every object is verified before the entry is written.
pub fn pull_entry(
    remote: &Remote,
    cache: &Cache,
    key: &StageKey,
) -> Result<Option<(Entry, Transfer)>, RemoteError> {
    let Some((entry, bytes)) = fetch_entry(remote, key)? else {
        return Ok(None);
    };
    let mut t = Transfer::default();
    // One puller per key; another process may have committed it meanwhile.
    let _lock = cache.lock_stage(key)?;
    if let Ok(Some(local)) = cache.entry(key) {
        t.entries_present = 1;
        return Ok(Some((local, t)));
    }
    let scratch = cache.scratch_dir("pull")?;
    let objects = objects_of(&entry);
    let result = parallel(&objects, |o| {
        pull_object(remote, cache, &scratch, o, &entry.stage)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    for n in result? {
        if n == 0 {
            t.objects_present += 1;
        } else {
            t.objects += 1;
            t.bytes += n;
        }
    }
    cache.import_entry(&entry, &bytes)?;
    t.entries = 1;
    Ok(Some((entry, t)))
}

/// What `verify --remote` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct RemoteVerify {
    pub entries: usize,
    pub objects: usize,
    pub bytes: u64,
    /// (remote path, what is wrong, stages affected)
    pub problems: Vec<(String, String, Vec<String>)>,
}

/// Check every entry the remote holds, and re-hash every object they use
/// (downloaded, never stored).
pub fn verify(remote: &Remote) -> Result<RemoteVerify, RemoteError> {
    let mut report = RemoteVerify::default();
    let mut users: BTreeMap<(String, bool, u64), Vec<String>> = BTreeMap::new();
    for item in remote.store.list("entries")? {
        let name = item.path.rsplit('/').next().unwrap_or("");
        let Some(key) = name.strip_suffix(".json").and_then(StageKey::parse) else {
            continue;
        };
        report.entries += 1;
        match fetch_entry(remote, &key) {
            Ok(Some((entry, _))) => {
                let label = format!("{} ({})", entry.stage, key.short());
                for o in objects_of(&entry) {
                    users.entry(o).or_default().push(label.clone());
                }
            }
            Ok(None) => {}
            Err(e) => report
                .problems
                .push((item.path.clone(), e.to_string(), vec![])),
        }
    }
    let objects: Vec<_> = users.into_iter().collect();
    report.objects = objects.len();
    let found = parallel(&objects, |((hash, exec, size), stages)| {
        let rpath = object_path(hash, *exec);
        let what = match remote.store.get(&rpath)? {
            None => Some("object missing".to_string()),
            Some(mut r) => {
                let mut hasher = blake3::Hasher::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                let mut err = None;
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            n += k as u64;
                            hasher.update(&buf[..k]);
                        }
                        Err(e) => {
                            err = Some(format!("unreadable: {e}"));
                            break;
                        }
                    }
                }
                let h = hasher.finalize().to_hex().to_string();
                if err.is_some() {
                    err
                } else if n != *size {
                    Some(format!("{n} bytes, expected {size}"))
                } else if &h != hash {
                    Some(format!("content hash is {h}, expected {hash}"))
                } else {
                    None
                }
            }
        };
        Ok((rpath, *size, what, stages.clone()))
    })?;
    for (rpath, size, what, stages) in found {
        match what {
            Some(w) => report.problems.push((rpath, w, stages)),
            None => report.bytes += size,
        }
    }
    report.problems.sort();
    Ok(report)
}

/// What `gc --remote` would delete (or did).
#[derive(Debug, Default, serde::Serialize)]
pub struct RemoteGc {
    /// Remote paths of entries to drop, with their stage.
    pub entries: Vec<(String, String)>,
    pub objects: Vec<String>,
    pub bytes: u64,
    pub entries_kept: usize,
    /// Unreferenced objects younger than [`GC_GRACE_S`]: maybe a push in flight.
    pub objects_young: usize,
}

/// Unreferenced objects younger than this stay: their entry may be on its way.
pub const GC_GRACE_S: i64 = 3600;

/// Keep, per pipeline and stage, the `keep_last` newest entries (by when
/// they were made) and the objects they use; list the rest, and delete it
/// when `apply`.
pub fn gc(remote: &Remote, keep_last: usize, apply: bool) -> Result<RemoteGc, RemoteError> {
    let mut report = RemoteGc::default();
    let mut by_stage: HashMap<(String, String), Vec<(String, Entry)>> = HashMap::new();
    for item in remote.store.list("entries")? {
        let name = item.path.rsplit('/').next().unwrap_or("");
        let Some(key) = name.strip_suffix(".json").and_then(StageKey::parse) else {
            continue;
        };
        // An entry that cannot be read keeps nothing alive and stays (verify reports it).
        if let Ok(Some((e, _))) = fetch_entry(remote, &key) {
            by_stage
                .entry((e.pipeline.clone(), e.stage.clone()))
                .or_default()
                .push((item.path.clone(), e));
        }
    }
    let mut kept_objects = HashSet::new();
    for ((_, stage), mut list) in by_stage {
        list.sort_by(|a, b| b.1.created.cmp(&a.1.created));
        for (i, (path, e)) in list.into_iter().enumerate() {
            if i < keep_last {
                report.entries_kept += 1;
                kept_objects.extend(
                    objects_of(&e)
                        .into_iter()
                        .map(|(h, x, _)| object_path(&h, x)),
                );
            } else {
                report.entries.push((path, stage.clone()));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for o in remote.store.list("objects")? {
        if kept_objects.contains(&o.path) {
            continue;
        }
        if now - o.modified < GC_GRACE_S {
            report.objects_young += 1;
            continue;
        }
        report.bytes += o.size;
        report.objects.push(o.path);
    }
    report.entries.sort();
    report.objects.sort();
    if apply {
        // Entries first: an entry never outlives its objects.
        for (path, _) in &report.entries {
            remote.store.delete(path)?;
        }
        parallel(&report.objects, |p| remote.store.delete(p))?;
    }
    Ok(report)
}

/// One stage of `pull`/`push PIPELINE`: what happened to it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageSync {
    pub stage: String,
    /// `None` while an upstream's result is missing (its key chains that result).
    pub key: Option<StageKey>,
    /// `pulled`, `pushed`, `present` (the destination had it), `missing`
    /// (the source lacks it), `unknown` (its key waits on a missing upstream).
    pub status: &'static str,
}

/// `hcpipe pull PIPELINE`: every stage of `dag` the local cache lacks and
/// the remote holds, in rounds (a stage's key is known once its needs'
/// results are here). Nothing runs.
pub fn pull_pipeline(
    remote: &Remote,
    dag: &crate::dag::Dag,
    cache: &Cache,
    stat: &mut crate::cache::statcache::StatCache,
) -> Result<(Vec<StageSync>, Transfer), RemoteError> {
    let mut total = Transfer::default();
    let mut status: Vec<&'static str> = vec!["unknown"; dag.len()];
    let mut tried: HashSet<StageKey> = HashSet::new();
    loop {
        let plan = crate::plan::plan(dag, cache, stat, &|_| false)?;
        let mut wanted = Vec::new();
        for &id in dag.topo_order() {
            match (plan.key(id), plan.cached(id)) {
                (Some(_), Some(_)) if status[id.0] == "unknown" => status[id.0] = "present",
                (Some(key), None) if tried.insert(key.clone()) => wanted.push((id, key.clone())),
                _ => {}
            }
        }
        if wanted.is_empty() {
            let keys: Vec<Option<StageKey>> = dag.ids().map(|id| plan.key(id).cloned()).collect();
            let out = dag
                .ids()
                .map(|id| StageSync {
                    stage: dag.stage(id).name.clone(),
                    key: keys[id.0].clone(),
                    status: status[id.0],
                })
                .collect();
            return Ok((out, total));
        }
        let done = parallel(&wanted, |(id, key)| {
            Ok((*id, pull_entry(remote, cache, key)?))
        })?;
        for (id, found) in done {
            match found {
                Some((_, t)) => {
                    status[id.0] = if t.entries == 1 { "pulled" } else { "present" };
                    total.add(&t);
                }
                None => status[id.0] = "missing",
            }
        }
    }
}

/// `hcpipe push PIPELINE`: every stage of `dag` whose current result is in
/// the local cache.
pub fn push_pipeline(
    remote: &Remote,
    dag: &crate::dag::Dag,
    cache: &Cache,
    stat: &mut crate::cache::statcache::StatCache,
) -> Result<(Vec<StageSync>, Transfer), RemoteError> {
    let plan = crate::plan::plan(dag, cache, stat, &|_| false)?;
    let mut total = Transfer::default();
    let mut out = Vec::new();
    for &id in dag.topo_order() {
        let stage = dag.stage(id).name.clone();
        let key = plan.key(id).cloned();
        let status = match plan.entry(cache, dag, id)? {
            Some(entry) => {
                let t = push_entry(remote, cache, &entry)?;
                total.add(&t);
                if t.entries == 1 {
                    "pushed"
                } else {
                    "present"
                }
            }
            None if key.is_some() => "missing",
            None => "unknown",
        };
        out.push(StageSync { stage, key, status });
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::store::{EntryMeta, FileRec};
    use crate::cache::KeyInputs;

    fn inputs(cmd: &str) -> KeyInputs {
        KeyInputs {
            cache_version: 1,
            op: None,
            op_version: None,
            cmd: Some(cmd.into()),
            params: serde_json::json!({}),
            upstream: vec![],
            deps: Default::default(),
            outs: vec![],
            env: Default::default(),
        }
    }

    /// A cache holding one committed stage with `files` (name, bytes).
    fn cache_with(dir: &Path, files: &[(&str, &[u8])]) -> (Cache, Entry) {
        let cache = Cache::open(dir).unwrap();
        let inputs = inputs("make");
        let key = inputs.key();
        let staging = cache.staging(&key).unwrap();
        for (name, bytes) in files {
            let p = staging.out().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        std::os::unix::fs::symlink("sub/x.txt", staging.out().join("link")).unwrap();
        let meta = EntryMeta {
            stage: "s".into(),
            pipeline: "p".into(),
            inputs,
            metrics: Default::default(),
            wall_s: 0.5,
        };
        let entry = cache.commit(&staging, &key, meta).unwrap();
        (cache, entry)
    }

    fn folder_remote(dir: &Path) -> Remote {
        Remote {
            store: std::sync::Arc::new(super::super::dir::DirRemote::open(dir).unwrap()),
        }
    }

    #[test]
    fn a_pushed_stage_pulls_into_an_empty_cache_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let big = vec![7u8; 3 << 20];
        let (a, entry) = cache_with(
            &tmp.path().join("a"),
            &[("sub/x.txt", b"x"), ("big.bin", &big), ("same.txt", b"x")],
        );
        let remote = folder_remote(&tmp.path().join("remote"));
        let t = push_entry(&remote, &a, &entry).unwrap();
        // Two distinct objects (x.txt and same.txt share one), then the entry.
        assert_eq!((t.entries, t.objects, t.bytes), (1, 2, 1 + (3 << 20)));
        assert_eq!(push_entry(&remote, &a, &entry).unwrap().entries_present, 1);

        let b = Cache::open(&tmp.path().join("b")).unwrap();
        let (pulled, t) = pull_entry(&remote, &b, &entry.key).unwrap().unwrap();
        assert_eq!((t.entries, t.objects), (1, 2));
        assert_eq!(
            std::fs::read(b.entry_path(&entry.key)).unwrap(),
            std::fs::read(a.entry_path(&entry.key)).unwrap()
        );
        let dir = b.ensure_artifact(&pulled, true).unwrap();
        assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), big);
        assert_eq!(std::fs::read_to_string(dir.join("link")).unwrap(), "x");
        assert!(crate::cache::verify::verify(&b)
            .unwrap()
            .problems
            .is_empty());
        // An unknown key is a miss, not an error.
        assert!(pull_entry(&remote, &b, &inputs("other").key())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_missing_object_fails_the_pull_and_leaves_no_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, entry) = cache_with(&tmp.path().join("a"), &[("sub/x.txt", b"x"), ("y", b"y")]);
        let remote = folder_remote(&tmp.path().join("remote"));
        push_entry(&remote, &a, &entry).unwrap();
        let (hash, exec, _) = objects_of(&entry)[1].clone();
        remote.store.delete(&object_path(&hash, exec)).unwrap();
        let b = Cache::open(&tmp.path().join("b")).unwrap();
        let err = pull_entry(&remote, &b, &entry.key).unwrap_err();
        assert!(err.to_string().contains("does not have"), "{err}");
        assert!(b.entry(&entry.key).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_local_object_is_never_pushed() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, entry) = cache_with(&tmp.path().join("a"), &[("sub/x.txt", b"x")]);
        let (hash, exec, _) = objects_of(&entry)[0].clone();
        let obj = a.object_path(&hash, exec);
        std::fs::set_permissions(&obj, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&obj, b"z").unwrap();
        let remote = folder_remote(&tmp.path().join("remote"));
        let err = push_entry(&remote, &a, &entry).unwrap_err();
        assert!(
            err.to_string().contains("no longer matches its hash"),
            "{err}"
        );
        assert!(remote
            .store
            .head(&entry_path(&entry.key))
            .unwrap()
            .is_none());
    }

    fn entry_with(files: Vec<FileRec>) -> Entry {
        let inputs = inputs("x");
        Entry {
            key: inputs.key(),
            stage: "s".into(),
            pipeline: "p".into(),
            inputs: crate::cache::store::StoredInputs::new(&inputs),
            files,
            metrics: Default::default(),
            wall_s: 0.0,
            created: String::new(),
            hcpipe_version: String::new(),
        }
    }

    #[test]
    fn manifests_that_would_write_outside_the_artifact_are_refused() {
        let file = |path: &str, hash: &str| FileRec {
            path: path.into(),
            kind: FileKind::File {
                hash: hash.into(),
                size: 1,
                exec: false,
            },
        };
        let link = |path: &str, target: &str| FileRec {
            path: path.into(),
            kind: FileKind::Link {
                target: target.into(),
            },
        };
        let h = "a".repeat(64);
        assert!(check_manifest(&entry_with(vec![
            file("d/f", &h),
            link("d/l", "../f"),
            link("l", "d/f")
        ]))
        .is_ok());
        for bad in [
            vec![file("../f", &h)],
            vec![file("/etc/f", &h)],
            vec![file("d//f", &h)],
            vec![file("f", "../../etc/passwd")],
            vec![file("f", &"A".repeat(64))],
            vec![link("l", "/etc/passwd")],
            vec![link("l", "..")],
            vec![link("d/l", "../..")],
            vec![link("d/l", "x/../../..")],
        ] {
            assert!(check_manifest(&entry_with(bad.clone())).is_err(), "{bad:?}");
        }
    }
}
