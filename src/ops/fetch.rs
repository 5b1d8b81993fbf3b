//! `fetch`: bring a dataset into the cache — a download (`url`: http, https,
//! file) or a local folder (`path`).
//!
//! A download streams to a `.part` file with a progress bar (stderr, only on
//! a terminal: bytes, rate, ETA), resumes a broken transfer with an HTTP
//! `Range` request, and retries transient failures with exponential backoff.
//! In a run the `.part` file lives in the cache's `downloads/` folder under a
//! name derived from the URL and pins, beside the server's validators (ETag,
//! Last-Modified, size): a run that was killed, interrupted or lost its
//! connection leaves it there and the next run resumes from its last byte
//! (`If-Range`, so a server whose file changed sends it whole and the
//! download starts over; a different size also starts over). A pinned
//! `sha256` / `blake3` is checked on the whole file before use; a mismatch
//! deletes the partial file. A `.tar.gz` / `.tgz` is then extracted in place and
//! the archive dropped; anything else is kept under its file name.
//!
//! Extraction is defensive, because an archive from the network decides the
//! paths it writes: an entry that is absolute, holds `..`, passes through a
//! symlink, or is a symlink / hard link pointing outside the target is refused
//! with an error naming the entry; devices and FIFOs are refused; the sum of
//! the entries' sizes is capped by `max_bytes` (a gzip bomb stops before it is
//! written), and the gzip stream is read to its end so a truncated download
//! fails instead of yielding a silently short dataset.
//!
//! Any failure leaves the output folder empty (the executor then discards it).
//! A local folder is hard-linked file by file when on the same file system
//! (else copied): the artifact then shares inodes with the source, so the
//! source must not be edited in place afterwards.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{parse_params, Metrics, OpCtx, OpError, Params};

fn d_max_bytes() -> u64 {
    64 << 30
}
fn d_retries() -> u32 {
    5
}
fn d_backoff_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchParams {
    /// `http://`, `https://` or `file:///absolute/path`.
    #[serde(default)]
    pub url: Option<String>,
    /// A local folder (copied into the artifact) or a local archive/file.
    #[serde(default)]
    pub path: Option<String>,
    /// Expected SHA-256 of the downloaded file (hex).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Expected BLAKE3 of the downloaded file (hex).
    #[serde(default)]
    pub blake3: Option<String>,
    /// Cap on the extracted size (sum of the archive's file sizes).
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
    /// Attempts after the first one for transient failures.
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// First retry delay; doubles each retry (at most 60 s).
    #[serde(default = "d_backoff_ms")]
    pub backoff_ms: u64,
    /// Extract the file as a `.tar.gz`; by default when its name ends `.tar.gz` / `.tgz`.
    #[serde(default)]
    pub extract: Option<bool>,
}

/// The local file or folder a fetch reads when nothing pins its content (a
/// `path`, or a `file://` url without `sha256`/`blake3`), as written: the
/// planner hashes it like a dep (relative to the pipeline's folder), so
/// editing or adding a file there re-runs the fetch and what it feeds.
pub fn local_source(params: &Params) -> Option<String> {
    let p: FetchParams = parse_params(params).ok()?;
    match (&p.url, &p.path) {
        (None, Some(path)) => Some(path.clone()),
        (Some(url), None) if p.sha256.is_none() && p.blake3.is_none() => {
            url.strip_prefix("file://").map(str::to_string)
        }
        _ => None,
    }
}

/// A relative `path` is relative to the pipeline's folder (as deps are),
/// not to wherever `hcpipe` was started: make it absolute for the run.
pub fn resolve_local_path(params: &mut Params, pipeline_dir: &Path) {
    if let Some(serde_json::Value::String(path)) = params.get_mut("path") {
        let abs = pipeline_dir.join(&*path);
        *path = abs.to_string_lossy().into_owned();
    }
}

/// Load-time check: the struct, one source, well-formed pins and URL scheme.
pub fn check_params(p: &Params) -> Result<(), String> {
    let p: FetchParams = parse_params(p)?;
    validate(&p)
}

fn validate(p: &FetchParams) -> Result<(), String> {
    match (&p.url, &p.path) {
        (Some(_), Some(_)) => return Err("fetch: give either `url` or `path`, not both".into()),
        (None, None) => {
            return Err("fetch: give `url` (http, https, file) or `path` (a local folder)".into())
        }
        (Some(u), None) => {
            if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:///"))
            {
                return Err(format!("fetch: url `{u}` must start with http://, https:// or file:/// (absolute path)"));
            }
        }
        (None, Some(path)) => {
            if Path::new(path).is_dir() && (p.sha256.is_some() || p.blake3.is_some()) {
                return Err(format!(
                    "fetch: `sha256`/`blake3` pin a downloaded file; `path` {path} is a folder and cannot be pinned"
                ));
            }
        }
    }
    for (name, pin) in [("sha256", &p.sha256), ("blake3", &p.blake3)] {
        if let Some(h) = pin {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("fetch: `{name}` must be 64 hex digits, got `{h}`"));
            }
        }
    }
    if p.max_bytes == 0 {
        return Err("fetch: `max_bytes` must be positive".into());
    }
    Ok(())
}

pub fn run(ctx: &OpCtx) -> Result<Metrics, OpError> {
    let p: FetchParams = ctx.params()?;
    validate(&p).map_err(OpError::Params)?;
    let result = fetch(&p, ctx.out, ctx.scratch);
    if result.is_err() {
        // Nothing half-done may become an artifact.
        clear_dir(ctx.out);
    }
    result
}

/// The source's digests, computed while reading it.
struct Digests {
    sha256: Sha256,
    blake3: blake3::Hasher,
}

impl Digests {
    fn new() -> Self {
        Digests {
            sha256: Sha256::new(),
            blake3: blake3::Hasher::new(),
        }
    }
    fn update(&mut self, b: &[u8]) {
        self.sha256.update(b);
        self.blake3.update(b);
    }
    fn finish(self) -> (String, String) {
        let sha: String = self
            .sha256
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (sha, self.blake3.finalize().to_hex().to_string())
    }
}

fn fetch(p: &FetchParams, out: &Path, scratch: Option<&Path>) -> Result<Metrics, OpError> {
    let mut m = Metrics::new();
    // A resumable download's `.part` (kept in `scratch` across attempts);
    // dropped once used, or when its bytes turn out wrong.
    let mut resumable: Option<Resumable> = None;
    let (file, name, owned) = match (&p.url, &p.path) {
        (Some(url), _) if url.starts_with("file://") => {
            let src = PathBuf::from(url.trim_start_matches("file://"));
            m.insert("source".into(), url.as_str().into());
            (src.clone(), file_name(&src), false)
        }
        (Some(url), _) => {
            resumable = scratch.and_then(|dir| Resumable::claim(dir, url, p));
            let part = resumable
                .as_ref()
                .map_or_else(|| out.join(".fetch.part"), |r| r.part.clone());
            let meta = resumable.as_ref().map(|r| r.meta.as_path());
            let stats = download(url, &part, p, meta)?;
            m.insert("source".into(), url.as_str().into());
            m.insert("downloaded_bytes".into(), stats.bytes.into());
            m.insert("resumed".into(), stats.resumes.into());
            m.insert("attempts".into(), stats.attempts.into());
            let name = url
                .rsplit('/')
                .next()
                .unwrap_or("download")
                .split(['?', '#'])
                .next()
                .unwrap_or("download");
            (part, name.to_string(), true)
        }
        (None, Some(path)) => {
            let src = PathBuf::from(path);
            m.insert("source".into(), path.as_str().into());
            if src.is_dir() {
                let (files, bytes) = copy_tree(&src, out)?;
                m.insert("files".into(), files.into());
                m.insert("bytes".into(), bytes.into());
                return Ok(m);
            }
            (src.clone(), file_name(&src), false)
        }
        (None, None) => return Err(OpError::Params("fetch: give `url` or `path`".into())),
    };
    if !file.is_file() {
        return Err(OpError::Msg(format!(
            "fetch: {} does not exist or is not a file",
            file.display()
        )));
    }
    let (sha, b3) = hash_file(&file)?;
    for (algo, want, got) in [("sha256", &p.sha256, &sha), ("blake3", &p.blake3, &b3)] {
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(got) {
                if let Some(r) = &resumable {
                    r.discard();
                }
                return Err(OpError::Msg(format!(
                    "fetch: {algo} mismatch for {}: expected {want}, got {got}. The file is corrupt or was replaced \
                     upstream; nothing was kept. Check the source, then update the pin if the new file is right.",
                    p.url.as_deref().or(p.path.as_deref()).unwrap_or("?")
                )));
            }
        }
    }
    m.insert("sha256".into(), sha.into());
    m.insert("blake3".into(), b3.into());
    let is_archive = p
        .extract
        .unwrap_or(name.ends_with(".tar.gz") || name.ends_with(".tgz"));
    if is_archive {
        let (files, bytes) = extract_tar_gz(&file, out, p.max_bytes)?;
        m.insert("files".into(), files.into());
        m.insert("bytes".into(), bytes.into());
        if owned {
            fs::remove_file(&file).map_err(|e| OpError::io(&file, e))?;
        }
        if let Some(r) = &resumable {
            r.discard();
        }
    } else {
        let dst = out.join(&name);
        if owned {
            fs::rename(&file, &dst).map_err(|e| OpError::io(&dst, e))?;
        } else {
            fs::copy(&file, &dst).map_err(|e| OpError::io(&dst, e))?;
        }
        if let Some(r) = &resumable {
            r.discard();
        }
        m.insert("files".into(), 1.into());
    }
    Ok(m)
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || "download".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn hash_file(path: &Path) -> Result<(String, String), OpError> {
    let mut f = File::open(path).map_err(|e| OpError::io(path, e))?;
    let mut d = Digests::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| OpError::io(path, e))?;
        if n == 0 {
            return Ok(d.finish());
        }
        d.update(buf.get(..n).unwrap_or_default());
    }
}

fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

/// A download's partial file in the cache's `downloads/` folder, held
/// (an exclusive lock on `<id>.lock`) for this attempt: two runs fetching the
/// same URL at once must not write one file; the second downloads into its
/// own staging folder instead.
struct Resumable {
    part: PathBuf,
    meta: PathBuf,
    lock: PathBuf,
    _held: File,
}

impl Resumable {
    /// `None` (download without resuming) when the folder cannot be used or
    /// another run holds this download.
    fn claim(dir: &Path, url: &str, p: &FetchParams) -> Option<Resumable> {
        fs::create_dir_all(dir).ok()?;
        // The pins are in the name: a pin fixed after a bad download must not
        // resume the bad bytes.
        let id = blake3::hash(
            format!(
                "{url}\0{}\0{}",
                p.sha256.as_deref().unwrap_or(""),
                p.blake3.as_deref().unwrap_or("")
            )
            .as_bytes(),
        )
        .to_hex();
        let id = &id.as_str()[..32];
        let lock = dir.join(format!("{id}.lock"));
        let held = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .ok()?;
        held.try_lock().ok()?;
        Some(Resumable {
            part: dir.join(format!("{id}.part")),
            meta: dir.join(format!("{id}.json")),
            lock,
            _held: held,
        })
    }

    /// Forget the partial download (used, or found wrong).
    fn discard(&self) {
        let _ = fs::remove_file(&self.part);
        let _ = fs::remove_file(&self.meta);
        let _ = fs::remove_file(&self.lock);
    }
}

/// What the server said about the file a `.part` holds the start of: a
/// resumed request must get the same file, or start over.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: Option<u64>,
}

impl PartMeta {
    fn read(path: &Path) -> Option<PartMeta> {
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// Written before the body's bytes, so a `.part` never outlives the
    /// validators of the file it came from.
    fn write(&self, path: &Path) -> Result<(), OpError> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|e| OpError::Msg(e.to_string()))?;
        fs::write(&tmp, bytes).map_err(|e| OpError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| OpError::io(path, e))
    }

    /// `If-Range`'s value: the ETag when the server gave a strong one, else
    /// Last-Modified (RFC 9110 §13.1.5: weak ETags cannot validate a range).
    fn validator(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

struct DownloadStats {
    bytes: u64,
    resumes: u32,
    attempts: u32,
}

/// Why one attempt stopped.
enum Attempt {
    Done,
    /// The bytes kept so far belong to another version of the file.
    Restart(String),
    /// Worth retrying (network error, 5xx, connection cut); keeps the bytes so far.
    Transient(String),
}

/// Stream `url` into `dest`, resuming with `Range` after a cut. With
/// `meta` (a resumable download), bytes already in `dest` from an earlier
/// run are kept when `meta` says they came from this URL, and `meta` is kept
/// up to date with the server's validators.
fn download(
    url: &str,
    dest: &Path,
    p: &FetchParams,
    meta: Option<&Path>,
) -> Result<DownloadStats, OpError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        // A stalled server must not hang the pipeline: 60 s without a byte is a cut.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("hcpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let earlier = meta
        .and_then(PartMeta::read)
        .filter(|m| m.url == url && dest.is_file());
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dest)
        .map_err(|e| OpError::io(dest, e))?;
    let mut have: u64 = match &earlier {
        Some(_) => file.metadata().map_err(|e| OpError::io(dest, e))?.len(),
        None => 0,
    };
    file.set_len(have).map_err(|e| OpError::io(dest, e))?;
    io::Seek::seek(&mut file, io::SeekFrom::Start(have)).map_err(|e| OpError::io(dest, e))?;
    let mut state = Transfer {
        url: url.to_string(),
        meta_path: meta.map(Path::to_path_buf),
        meta: earlier.unwrap_or_else(|| PartMeta {
            url: url.to_string(),
            ..PartMeta::default()
        }),
        restarts: 0,
    };
    let mut total: Option<u64> = state.meta.total;
    let mut stats = DownloadStats {
        bytes: 0,
        resumes: 0,
        attempts: 0,
    };
    let mut failures: u32 = 0;
    let bar = if io::stderr().is_terminal() {
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    loop {
        stats.attempts += 1;
        let before = have;
        let outcome = attempt(
            &agent, &mut state, &mut file, dest, &mut have, &mut total, &bar,
        )?;
        if have > before && before > 0 {
            stats.resumes += 1;
        }
        match outcome {
            Attempt::Done => break,
            Attempt::Restart(why) => {
                // The server's file is not the one the `.part` began: start over.
                state.restarts += 1;
                if state.restarts > 3 {
                    bar.abandon();
                    return Err(OpError::Msg(format!(
                        "fetch: {url} changed on the server during the download, again and again ({why}); try later"
                    )));
                }
                tracing::warn!("fetch {url}: {why}; downloading it again from the start");
                file.set_len(0).map_err(|e| OpError::io(dest, e))?;
                io::Seek::rewind(&mut file).map_err(|e| OpError::io(dest, e))?;
                have = 0;
                total = None;
            }
            Attempt::Transient(why) => {
                // Progress resets the budget: a long download over a flaky link still finishes.
                failures = if have > before { 1 } else { failures + 1 };
                if failures > p.retries {
                    bar.abandon();
                    return Err(OpError::Msg(format!(
                        "fetch: giving up on {url} after {} attempts ({have} of {} bytes received): {why}. \
                         Check the network or the URL, or raise `retries`.",
                        stats.attempts,
                        total.map_or("?".to_string(), |t| t.to_string())
                    )));
                }
                let delay = p
                    .backoff_ms
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(60_000);
                tracing::warn!(
                    "fetch {url}: {why}; retry {failures}/{} in {delay} ms",
                    p.retries
                );
                std::thread::sleep(Duration::from_millis(delay));
            }
        }
    }
    bar.finish_and_clear();
    file.sync_all().map_err(|e| OpError::io(dest, e))?;
    stats.bytes = have;
    Ok(stats)
}

/// A download in progress: its URL and what the server said about the file.
struct Transfer {
    url: String,
    /// Where [`PartMeta`] is kept for a resumable download.
    meta_path: Option<PathBuf>,
    meta: PartMeta,
    restarts: u32,
}

impl Transfer {
    /// Record the validators of the response about to be written.
    fn note(
        &mut self,
        resp: &ureq::http::Response<ureq::Body>,
        total: Option<u64>,
    ) -> Result<(), OpError> {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let now = PartMeta {
            url: self.url.clone(),
            etag: header("etag"),
            last_modified: header("last-modified"),
            total,
        };
        if now != self.meta {
            self.meta = now;
            if let Some(path) = &self.meta_path {
                self.meta.write(path)?;
            }
        }
        Ok(())
    }
}

/// One GET (ranged when resuming). Hard errors (4xx, a server that cannot
/// deliver what it announced) return `Err`; cuts return `Transient`; a
/// server whose file is not the one the bytes so far came from, `Restart`.
fn attempt(
    agent: &ureq::Agent,
    state: &mut Transfer,
    file: &mut File,
    dest: &Path,
    have: &mut u64,
    total: &mut Option<u64>,
    bar: &indicatif::ProgressBar,
) -> Result<Attempt, OpError> {
    let url = state.url.clone();
    let url = url.as_str();
    let mut req = agent.get(url).header("Accept-Encoding", "identity");
    if *have > 0 {
        req = req.header("Range", &format!("bytes={have}-"));
        if let Some(v) = state.meta.validator() {
            req = req.header("If-Range", v);
        }
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Transient(format!("request failed: {e}"))),
    };
    let status = resp.status().as_u16();
    match status {
        200 => {
            if *have > 0 {
                // The server ignored Range, or (If-Range) its file changed: start over.
                file.set_len(0).map_err(|e| OpError::io(dest, e))?;
                io::Seek::rewind(file).map_err(|e| OpError::io(dest, e))?;
                *have = 0;
            }
            *total = resp.body().content_length();
            state.note(&resp, *total)?;
        }
        206 => {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // `bytes START-END/TOTAL`
            let start = range
                .trim_start_matches("bytes ")
                .split('-')
                .next()
                .and_then(|s| s.parse::<u64>().ok());
            if start != Some(*have) {
                return Err(OpError::Msg(format!(
                    "fetch: {url}: asked for bytes from {have}, the server sent `Content-Range: {range}`; \
                     resume impossible, retry the stage"
                )));
            }
            let announced = range.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
            // Without If-Range (a server that gave no validator), the size
            // is all that can tell another version of the file.
            if let (Some(before), Some(now)) = (state.meta.total, announced) {
                if before != now {
                    return Ok(Attempt::Restart(format!(
                        "its size changed from {before} to {now} bytes"
                    )));
                }
            }
            let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok());
            if let (Some(before), Some(now)) = (state.meta.etag.as_deref(), etag) {
                if before != now {
                    return Ok(Attempt::Restart(format!(
                        "its ETag changed from {before} to {now}"
                    )));
                }
            }
            if let Some(t) = announced {
                *total = Some(t);
            }
            if state.meta.etag.is_none() && state.meta.last_modified.is_none() {
                state.note(&resp, *total)?;
            }
        }
        416 => {
            if *total == Some(*have) {
                return Ok(Attempt::Done);
            }
            return Err(OpError::Msg(format!(
                "fetch: {url}: the server announced {} bytes but cannot serve past byte {have} (HTTP 416): \
                 its Content-Length is wrong or the file changed while downloading; try again later",
                total.map_or("?".to_string(), |t| t.to_string())
            )));
        }
        408 | 425 | 429 | 500..=599 => return Ok(Attempt::Transient(format!("HTTP {status}"))),
        _ => {
            return Err(OpError::Msg(format!(
                "fetch: {url}: HTTP {status} {}; check the URL",
                resp.status().canonical_reason().unwrap_or("")
            )))
        }
    }
    if let Some(t) = *total {
        bar.set_length(t);
    }
    bar.set_position(*have);
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                file.write_all(chunk).map_err(|e| OpError::io(dest, e))?;
                *have += n as u64;
                bar.set_position(*have);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Ok(Attempt::Transient(format!(
                    "connection cut after {have} bytes: {e}"
                )))
            }
        }
    }
    match *total {
        Some(t) if *have < t => Ok(Attempt::Transient(format!("connection closed at {have} of {t} bytes"))),
        Some(t) if *have > t => Err(OpError::Msg(format!(
            "fetch: {url}: received {have} bytes, more than the {t} announced; the server is misbehaving"
        ))),
        _ => Ok(Attempt::Done),
    }
}

/// `path` as plain components, or `None` if absolute or holding `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Where a symlink at `link` (relative) pointing to `target` lands, lexically;
/// `None` if absolute or above the root.
fn resolve_link(link: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<_> = link
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(_) => parts.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

fn through_symlink<'a>(path: &Path, links: &'a HashSet<PathBuf>) -> Option<&'a PathBuf> {
    path.ancestors().skip(1).find_map(|a| links.get(a))
}

/// Extract a `.tar.gz` into `dest` safely; returns (files, bytes).
pub fn extract_tar_gz(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(u64, u64), OpError> {
    let f = File::open(archive).map_err(|e| OpError::io(archive, e))?;
    let gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 20, f));
    let mut ar = tar::Archive::new(gz);
    ar.set_preserve_permissions(false);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    let name = archive.display().to_string();
    let bad = |entry: &Path, why: &str| {
        OpError::Msg(format!(
            "fetch: {name}: refused entry `{}`: {why}; the archive is unsafe, nothing was kept",
            entry.display()
        ))
    };
    let corrupt = |after: &str, e: io::Error| {
        OpError::Msg(format!(
            "fetch: {name}: the archive is truncated or corrupt ({after}): {e}. Re-download it (run the stage again)"
        ))
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut last = String::from("at the start");
    let entries = ar.entries().map_err(|e| corrupt(&last, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&last, e))?;
        let raw = entry.path().map_err(|e| corrupt(&last, e))?.into_owned();
        last = format!("after entry `{}`", raw.display());
        let Some(rel) = safe_relative(&raw) else {
            return Err(bad(&raw, "its path is absolute or contains `..`"));
        };
        if rel.as_os_str().is_empty() {
            continue; // `./` itself
        }
        if let Some(l) = through_symlink(&rel, &links) {
            return Err(bad(
                &raw,
                &format!("its path goes through the symlink `{}`", l.display()),
            ));
        }
        if links.contains(&rel) {
            return Err(bad(
                &raw,
                "it would overwrite a symlink the archive created",
            ));
        }
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Continuous => {
                files += 1;
                bytes = bytes.saturating_add(entry.size());
                if bytes > max_bytes {
                    return Err(OpError::Msg(format!(
                        "fetch: {name}: extracting would exceed `max_bytes` = {max_bytes} at entry `{}` \
                         (a gzip bomb, or raise `max_bytes`); nothing was kept",
                        raw.display()
                    )));
                }
            }
            T::Directory => {}
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(&last, e))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let Some(landing) = resolve_link(&rel, &target) else {
                    return Err(bad(
                        &raw,
                        &format!(
                            "it is a symlink to `{}`, outside the target",
                            target.display()
                        ),
                    ));
                };
                if let Some(l) = through_symlink(&landing.join("x"), &links) {
                    return Err(bad(
                        &raw,
                        &format!("its target goes through the symlink `{}`", l.display()),
                    ));
                }
                links.insert(rel.clone());
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(&last, e))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                match safe_relative(&target) {
                    Some(t)
                        if !t.as_os_str().is_empty()
                            && through_symlink(&t.join("x"), &links).is_none() => {}
                    _ => {
                        return Err(bad(
                            &raw,
                            &format!(
                                "it is a hard link to `{}`, outside the target",
                                target.display()
                            ),
                        ))
                    }
                }
            }
            other => {
                return Err(bad(
                    &raw,
                    &format!("entry type {other:?} is not extracted (only files, folders, links)"),
                ))
            }
        }
        match entry.unpack_in(dest) {
            Ok(true) => {}
            Ok(false) => return Err(bad(&raw, "the tar library judged it outside the target")),
            Err(e) => return Err(corrupt(&format!("while writing `{}`", raw.display()), e)),
        }
    }
    // Read the gzip stream to its end: checks the CRC and length trailer, so a
    // cut after the last tar block is caught too. Trailing data is bounded.
    let mut rest = ar.into_inner();
    let trailing =
        io::copy(&mut (&mut rest).take(1 << 20), &mut io::sink()).map_err(|e| corrupt(&last, e))?;
    if trailing >= 1 << 20 {
        return Err(OpError::Msg(format!(
            "fetch: {name}: more than 1 MiB of data after the tar archive's end; refused"
        )));
    }
    // Physical check of every symlink: lexical rules above, verified on disk.
    let root = dest.canonicalize().map_err(|e| OpError::io(dest, e))?;
    for l in &links {
        if let Ok(real) = dest.join(l).canonicalize() {
            if !real.starts_with(&root) {
                return Err(bad(l, "it is a symlink that resolves outside the target"));
            }
        }
    }
    Ok((files, bytes))
}

/// Copy a local folder's files into `dest`. Never hard links: the cache
/// makes its objects read-only, and a link would alias the user's file with
/// a cache object (an in-place edit would silently change the cache).
/// `fs::copy` uses copy_file_range, which reflinks where the file system can.
fn copy_tree(src: &Path, dest: &Path) -> Result<(u64, u64), OpError> {
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in walkdir::WalkDir::new(src).follow_links(true) {
        let e =
            e.map_err(|e| OpError::Msg(format!("fetch: cannot walk {}: {e}", src.display())))?;
        let rel = e.path().strip_prefix(src).unwrap_or(Path::new(""));
        let to = dest.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&to).map_err(|err| OpError::io(&to, err))?;
        } else if e.file_type().is_file() {
            fs::copy(e.path(), &to).map_err(|err| OpError::io(&to, err))?;
            files += 1;
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// How the test server misbehaves.
    #[derive(Clone, Copy)]
    enum Mode {
        Honest,
        /// The first response announces everything but stops after N bytes.
        CutOnceAt(usize),
        /// Announces 100 bytes more than it has, every time.
        LyingLength,
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1 that serves `body` at any path,
    /// honours `Range: bytes=N-`, and counts requests.
    fn serve(body: Vec<u8>, mode: Mode) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let mut req = Vec::new();
                let mut byte = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n")
                    && stream.read(&mut byte).map(|k| k == 1).unwrap_or(false)
                {
                    req.push(byte[0]);
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                let start = req
                    .lines()
                    .find_map(|l| l.strip_prefix("range: bytes="))
                    .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok());
                let announced = match mode {
                    Mode::LyingLength => body.len() + 100,
                    _ => body.len(),
                };
                let from = start.unwrap_or(0);
                let head = if from >= announced || (start.is_some() && from >= body.len()) {
                    let _ = stream.write_all(format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{announced}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
                    continue;
                } else if start.is_some() {
                    format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{announced}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", announced - 1, announced - from)
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n")
                };
                let end = match mode {
                    Mode::CutOnceAt(k) if n == 0 => k,
                    _ => body.len(),
                };
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body[from..end.max(from)]);
            }
        });
        (format!("http://{addr}/OASIS-1-dataset_pt_new.tar.gz"), hits)
    }

    fn tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_path(name).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    /// A tarball with one raw header: name and link written as bytes, so
    /// hostile paths the `tar` builder would refuse can be made.
    fn hostile_tarball(name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    fn sha(b: &[u8]) -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    fn params(json: serde_json::Value) -> FetchParams {
        let mut p: FetchParams = serde_json::from_value(json).unwrap();
        p.backoff_ms = 1;
        p
    }

    fn empty(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    const TSV: &[u8] = b"participant_id\tsession_id\tdiagnosis\n";

    #[test]
    fn downloads_verifies_and_extracts() {
        let tgz = tarball(&[
            ("OASIS-1_dataset/tsv_files/lab_1/train.tsv", TSV),
            ("OASIS-1_dataset/README", b"hi"),
        ]);
        let (url, _) = serve(tgz.clone(), Mode::Honest);
        let out = tempfile::tempdir().unwrap();
        let m = fetch(
            &params(serde_json::json!({"url": url, "sha256": sha(&tgz)})),
            out.path(),
            None,
        )
        .unwrap();
        assert_eq!(
            fs::read(out.path().join("OASIS-1_dataset/tsv_files/lab_1/train.tsv")).unwrap(),
            TSV
        );
        assert!(
            !out.path().join(".fetch.part").exists(),
            "the archive is dropped after extraction"
        );
        assert_eq!(m["files"], 2);
        assert_eq!(m["resumed"], 0);
    }

    #[test]
    fn resumes_after_a_cut() {
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let tgz = tarball(&[("d/big.bin", &big)]);
        let (url, hits) = serve(tgz.clone(), Mode::CutOnceAt(tgz.len() / 2));
        let out = tempfile::tempdir().unwrap();
        let m = fetch(
            &params(serde_json::json!({"url": url, "sha256": sha(&tgz)})),
            out.path(),
            None,
        )
        .unwrap();
        assert_eq!(fs::read(out.path().join("d/big.bin")).unwrap(), big);
        assert_eq!(m["resumed"], 1, "{m:?}");
        assert_eq!(m["downloaded_bytes"], tgz.len() as u64);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one cut request, one ranged request"
        );
    }

    #[test]
    fn wrong_checksum_is_refused_and_nothing_is_left() {
        let tgz = tarball(&[("a.txt", b"a")]);
        let (url, _) = serve(tgz, Mode::Honest);
        let out = tempfile::tempdir().unwrap();
        let p: Params = serde_json::from_value(
            serde_json::json!({"url": url, "sha256": "0".repeat(64), "backoff_ms": 1}),
        )
        .unwrap();
        let ctx = OpCtx {
            stage: "dataset",
            params: &p,
            inputs: &[],
            out: out.path(),
            threads: 1,
            scratch: None,
        };
        let e = run(&ctx).unwrap_err().to_string();
        assert!(e.contains("sha256 mismatch") && e.contains(&url), "{e}");
        assert!(empty(out.path()));
        let p: Params = serde_json::from_value(
            serde_json::json!({"url": url, "blake3": "ab".repeat(32), "backoff_ms": 1}),
        )
        .unwrap();
        let e = run(&OpCtx { params: &p, ..ctx }).unwrap_err().to_string();
        assert!(e.contains("blake3 mismatch"), "{e}");
        assert!(empty(out.path()));
    }

    #[test]
    fn lying_content_length_is_a_clear_error() {
        let tgz = tarball(&[("a.txt", b"a")]);
        let (url, _) = serve(tgz, Mode::LyingLength);
        let out = tempfile::tempdir().unwrap();
        let p: Params =
            serde_json::from_value(serde_json::json!({"url": url, "backoff_ms": 1})).unwrap();
        let e = run(&OpCtx {
            stage: "d",
            params: &p,
            inputs: &[],
            out: out.path(),
            threads: 1,
            scratch: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("announced") && e.contains("416"), "{e}");
        assert!(empty(out.path()));
    }

    #[test]
    fn http_404_is_not_retried() {
        let out = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        let e = fetch(
            &params(serde_json::json!({"url": format!("http://{addr}/x.tar.gz")})),
            out.path(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("HTTP 404"), "{e}");
    }

    #[test]
    fn path_traversal_is_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["../evil.txt", "/tmp/evil-abs.txt", "ok/../../evil.txt"]
            .iter()
            .enumerate()
        {
            let tgz = dir.path().join(format!("t{i}.tar.gz"));
            fs::write(
                &tgz,
                hostile_tarball(name, tar::EntryType::Regular, "", b"x"),
            )
            .unwrap();
            let out = dir.path().join(format!("out{i}"));
            fs::create_dir_all(&out).unwrap();
            let e = extract_tar_gz(&tgz, &out, 1 << 20).unwrap_err().to_string();
            assert!(e.contains(&format!("refused entry `{name}`")), "{e}");
            assert!(!dir.path().join("evil.txt").exists());
        }
    }

    #[test]
    fn symlink_and_hardlink_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("link", tar::EntryType::Symlink, "../../etc"),
            ("a/link", tar::EntryType::Symlink, "/etc/passwd"),
            ("hard", tar::EntryType::Link, "../outside.txt"),
        ];
        for (i, (name, kind, target)) in cases.iter().enumerate() {
            let tgz = dir.path().join(format!("s{i}.tar.gz"));
            fs::write(&tgz, hostile_tarball(name, *kind, target, b"")).unwrap();
            let out = dir.path().join(format!("out{i}"));
            fs::create_dir_all(&out).unwrap();
            let e = extract_tar_gz(&tgz, &out, 1 << 20).unwrap_err().to_string();
            assert!(
                e.contains(&format!("refused entry `{name}`")) && e.contains(target),
                "{e}"
            );
        }
        // A symlink inside the target is fine, but writing through it is not.
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "d/l", "..").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        b.append_data(&mut h, "d/l/x.txt", &b"x"[..]).unwrap();
        let tgz = dir.path().join("through.tar.gz");
        fs::write(&tgz, b.into_inner().unwrap().finish().unwrap()).unwrap();
        let out = dir.path().join("through");
        fs::create_dir_all(&out).unwrap();
        let e = extract_tar_gz(&tgz, &out, 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("refused entry `d/l/x.txt`") && e.contains("symlink `d/l`"),
            "{e}"
        );
    }

    #[test]
    fn truncated_gzip_and_bombs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i * 7919).to_le_bytes())
            .collect();
        let tgz = tarball(&[("a.bin", &big), ("b.txt", b"b")]);
        for cut in [tgz.len() / 2, tgz.len() - 4] {
            let p = dir.path().join(format!("cut{cut}.tar.gz"));
            fs::write(&p, &tgz[..cut]).unwrap();
            let out = dir.path().join(format!("o{cut}"));
            fs::create_dir_all(&out).unwrap();
            let e = extract_tar_gz(&p, &out, 1 << 30).unwrap_err().to_string();
            assert!(e.contains("truncated or corrupt"), "{e}");
        }
        let p = dir.path().join("ok.tar.gz");
        fs::write(&p, &tgz).unwrap();
        let out = dir.path().join("bomb");
        fs::create_dir_all(&out).unwrap();
        let e = extract_tar_gz(&p, &out, 1000).unwrap_err().to_string();
        assert!(e.contains("max_bytes") && e.contains("`a.bin`"), "{e}");
        let out = dir.path().join("fine");
        fs::create_dir_all(&out).unwrap();
        assert_eq!(
            extract_tar_gz(&p, &out, 1 << 30).unwrap(),
            (2, big.len() as u64 + 1)
        );
    }

    #[test]
    fn local_folder_file_url_and_param_checks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src/OASIS-1_dataset/tsv_files/lab_1");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("train.tsv"), TSV).unwrap();
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let m = fetch(
            &params(serde_json::json!({"path": dir.path().join("src")})),
            &out,
            None,
        )
        .unwrap();
        assert_eq!(m["files"], 1);
        assert_eq!(
            fs::read(out.join("OASIS-1_dataset/tsv_files/lab_1/train.tsv")).unwrap(),
            TSV
        );
        let tgz = dir.path().join("x.tgz");
        fs::write(&tgz, tarball(&[("f.txt", b"f")])).unwrap();
        let out2 = dir.path().join("out2");
        fs::create_dir_all(&out2).unwrap();
        fetch(
            &params(serde_json::json!({"url": format!("file://{}", tgz.display())})),
            &out2,
            None,
        )
        .unwrap();
        assert_eq!(fs::read(out2.join("f.txt")).unwrap(), b"f");
        let check =
            |j: serde_json::Value| check_params(&serde_json::from_value(j).unwrap()).unwrap_err();
        assert!(check(serde_json::json!({})).contains("give `url`"));
        assert!(check(serde_json::json!({"url": "ftp://x"})).contains("http://"));
        assert!(check(serde_json::json!({"url": "http://x", "sha256": "zz"})).contains("64 hex"));
        assert!(check(serde_json::json!({"url": "http://x", "urll": 1})).contains("unknown field"));
        assert!(
            check(serde_json::json!({"path": dir.path(), "sha256": "0".repeat(64)}))
                .contains("folder")
        );
    }
}
