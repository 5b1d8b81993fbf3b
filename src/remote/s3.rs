//! S3 and S3-compatible servers, through `object_store` (its S3 client:
//! SigV4 signing, retries with backoff, create-only puts with
//! `If-None-Match: *`, multipart uploads).
//!
//! Settings, in the order they win: `--remote-endpoint`, then the standard
//! AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`, web identity, container credentials), then the
//! shared files `~/.aws/credentials` and `~/.aws/config` for the profile
//! `$AWS_PROFILE` (default `default`). `HCPIPE_REMOTE_TIMEOUT` (seconds a
//! read may stall, default 30) and `HCPIPE_REMOTE_RETRIES` (default 5) tune
//! how long a failing server is retried.
//!
//! The async client runs on a tokio runtime owned by [`S3Remote`]; the
//! [`RemoteStore`] methods block on it, from any thread.
//!
//! Not every S3-compatible server honours create-only puts: Garage (2.5)
//! ignores `If-None-Match: *` on PUT and overwrites. Before its first
//! create-only put an [`S3Remote`] finds out (two create-only puts of
//! [`PROBE`]: a server that honours them refuses one); on a server that
//! does not, it warns once and writes entries with a look (HEAD) first and
//! a read-back after, which keeps every entry whole but cannot make the
//! first of two simultaneous pushes win (see [`S3Remote::put_new`]).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::{Listed, RemoteError, RemoteStore};

/// Files up to this size go up in one request; larger ones in parts of this size.
const PART: usize = 16 * 1024 * 1024;

/// The object that tells whether the server honours create-only puts (a
/// few bytes, under the prefix, outside `entries/` and `objects/`, so
/// `verify`/`gc --remote` never see it).
pub const PROBE: &str = "probes/create-only";

pub struct S3Remote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    runtime: tokio::runtime::Runtime,
    /// Removed from every message (a server may echo what it was sent).
    secrets: Vec<String>,
    /// Whether the server refuses a create-only put over an object: `None`
    /// until the first [`RemoteStore::put_new`] finds out (the lock also
    /// keeps two threads from probing at once).
    create_only: std::sync::Mutex<Option<bool>>,
}

impl S3Remote {
    /// `rest`: `bucket[/prefix]` (what follows `s3://`).
    pub fn open(rest: &str, endpoint: Option<&str>) -> Result<S3Remote, RemoteError> {
        let rest = rest.trim_matches('/');
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(RemoteError::Config(
                "--remote s3://: name a bucket, e.g. s3://my-lab-cache/hcpipe".into(),
            ));
        }
        let url = format!("s3://{rest}");
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let profile = shared_profile(&env("AWS_PROFILE").unwrap_or_else(|| "default".into()));
        let mut secrets = Vec::new();
        if env("AWS_ACCESS_KEY_ID").is_none() {
            if let (Some(id), Some(secret)) = (
                profile.get("aws_access_key_id"),
                profile.get("aws_secret_access_key"),
            ) {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = profile.get("aws_session_token") {
                    builder = builder.with_token(token);
                }
            }
        }
        for k in ["aws_secret_access_key", "aws_session_token"] {
            secrets.extend(profile.get(k).cloned());
        }
        secrets.extend(env("AWS_SECRET_ACCESS_KEY"));
        secrets.extend(env("AWS_SESSION_TOKEN"));
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| profile.get("region").cloned())
            .unwrap_or_else(|| "us-east-1".into());
        builder = builder.with_region(region);
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| profile.get("endpoint_url").cloned());
        if let Some(ep) = &endpoint {
            builder = builder
                .with_endpoint(ep.trim_end_matches('/'))
                .with_allow_http(ep.starts_with("http://"));
        }
        let timeout = env("HCPIPE_REMOTE_TIMEOUT")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(30.0);
        let retries = env("HCPIPE_REMOTE_RETRIES")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(5);
        let options = ClientOptions::new()
            // A 1 GiB object may take minutes: no limit on a whole request,
            // only on a read that stalls.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs_f64(timeout))
            .with_connect_timeout(Duration::from_secs_f64(timeout.min(10.0)))
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        let retry = RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: retries,
            retry_timeout: Duration::from_secs(120),
        };
        builder = builder.with_client_options(options).with_retry(retry);
        // rustls picks its crypto at run time (ring: already linked for ureq).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = builder.build().map_err(|e| {
            RemoteError::Config(format!(
                "--remote {url}: {}",
                redact(&e.to_string(), &secrets)
            ))
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("hcpipe-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Service(format!("cannot start the remote client: {e}")))?;
        Ok(S3Remote {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            url,
            runtime,
            secrets,
            create_only: std::sync::Mutex::new(None),
        })
    }

    /// A create-only put: `false` when the server refused it (something is there).
    fn put_create(&self, path: &str, bytes: Vec<u8>) -> Result<bool, RemoteError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.runtime.block_on(self.store.put_opts(
            &self.path(path),
            PutPayload::from(bytes),
            opts,
        )) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error("write", path, e)),
        }
    }

    /// Does the server refuse a create-only put where an object is? Two
    /// create-only puts of [`PROBE`]: one of them must be refused (the
    /// first, when an earlier probe left the object). Asked once per remote.
    fn honours_create_only(&self) -> Result<bool, RemoteError> {
        let mut known = self
            .create_only
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = *known {
            return Ok(v);
        }
        let honoured = !self.put_create(PROBE, b"hcpipe\n".to_vec())?
            || !self.put_create(PROBE, b"hcpipe\n".to_vec())?;
        if !honoured {
            eprintln!(
                "warning: the remote {} ignores create-only writes (`If-None-Match: *`): hcpipe looks before it writes an entry and reads it back after, so every entry stays whole, but of two runners pushing the same stage at the same moment the last one's entry stays and both may report it pushed; push a stage from one runner at a time, or use a server that honours `If-None-Match` (AWS S3, MinIO, moto)",
                self.url
            );
        }
        *known = Some(honoured);
        Ok(honoured)
    }

    fn path(&self, path: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(path)
        } else {
            ObjPath::from(format!("{}/{path}", self.prefix))
        }
    }

    /// A failed request as a message: what, where, and what to check.
    fn error(&self, what: &str, path: &str, e: object_store::Error) -> RemoteError {
        let text = redact(&e.to_string(), &self.secrets);
        let credentials = matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
            "credential",
        ]
        .iter()
        .any(|w| text.contains(w));
        if credentials {
            RemoteError::Service(format!(
                "the remote {} refused to {what} {path}: the credentials were not accepted; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a key with access to the bucket ({})",
                self.url,
                short(&text)
            ))
        } else {
            RemoteError::Service(format!(
                "cannot {what} {}/{path} (after retries): {}; check that the server is up and --remote/--remote-endpoint are right",
                self.url,
                short(&text)
            ))
        }
    }
}

impl RemoteStore for S3Remote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>, RemoteError> {
        let location = self.path(path);
        match self.runtime.block_on(self.store.get(&location)) {
            Ok(result) => Ok(Some(Box::new(StreamRead {
                handle: self.runtime.handle().clone(),
                stream: result.into_stream(),
                chunk: bytes::Bytes::new(),
                secrets: self.secrets.clone(),
            }))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("read", path, e)),
        }
    }

    fn head(&self, path: &str) -> Result<Option<u64>, RemoteError> {
        match self.runtime.block_on(self.store.head(&self.path(path))) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("look up", path, e)),
        }
    }

    fn put_file(&self, path: &str, file: &Path) -> Result<(), RemoteError> {
        let location = self.path(path);
        let local = |e: std::io::Error| {
            RemoteError::Service(format!("reading {} to push it: {e}", file.display()))
        };
        let mut f = std::fs::File::open(file).map_err(local)?;
        let size = f.metadata().map_err(local)?.len();
        if size <= PART as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).map_err(local)?;
            return self
                .runtime
                .block_on(self.store.put(&location, PutPayload::from(buf)))
                .map(|_| ())
                .map_err(|e| self.error("write", path, e));
        }
        // Streamed in parts, a few in flight: memory stays at a few parts.
        self.runtime.block_on(async {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| self.error("start an upload of", path, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; PART];
            loop {
                let n = read_full(&mut f, &mut buf).map_err(local)?;
                if n == 0 {
                    break;
                }
                writer
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| self.error("write", path, e))?;
                writer.write(&buf[..n]);
            }
            writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| self.error("finish the upload of", path, e))
        })
    }

    /// Create-only where the server honours it. Elsewhere: nothing is
    /// written over an entry that is there (HEAD first), and the entry is
    /// read back after the write: `false` when another runner's entry
    /// replaced it meanwhile (theirs stands, as with a refused create). Two
    /// writes that both land before either reads back both return `true`;
    /// each entry is whole either way (its objects went up before it).
    fn put_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool, RemoteError> {
        if self.honours_create_only()? {
            return self.put_create(path, bytes);
        }
        if self.head(path)?.is_some() {
            return Ok(false);
        }
        let location = self.path(path);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes.clone())))
            .map_err(|e| self.error("write", path, e))?;
        let back = self
            .runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })
            .map_err(|e| self.error("read back", path, e))?;
        Ok(back.as_ref() == bytes.as_slice())
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, RemoteError> {
        let base = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&base)).try_collect())
            .map_err(|e| self.error("list", prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                Listed {
                    path: full.strip_prefix(&strip).unwrap_or(&full).to_string(),
                    size: m.size,
                    modified: m.last_modified.timestamp(),
                }
            })
            .collect())
    }

    fn delete(&self, path: &str) -> Result<(), RemoteError> {
        match self.runtime.block_on(self.store.delete(&self.path(path))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", path, e)),
        }
    }
}

/// An object's bytes as a blocking reader: each read waits for the next chunk.
struct StreamRead {
    handle: tokio::runtime::Handle,
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    secrets: Vec<String>,
}

impl Read for StreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(redact(&e.to_string(), &self.secrets)))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

/// Fill `buf` as far as the file allows (a short read is not the end).
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A message without any secret in it.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// A server's error text, cut to a readable length.
fn short(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// `~/.aws/credentials` then `~/.aws/config` for `profile` (`[name]` in the
/// first, `[profile name]` or `[default]` in the second), as key → value.
fn shared_profile(profile: &str) -> std::collections::HashMap<String, String> {
    let home = std::env::var("HOME").unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("{home}/.aws/{default}"))
    };
    let mut out = std::collections::HashMap::new();
    let creds = std::fs::read_to_string(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    for (k, v) in ini_section(&creds.unwrap_or_default(), profile) {
        out.entry(k).or_insert(v);
    }
    let config_name = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let config = std::fs::read_to_string(file("AWS_CONFIG_FILE", "config"));
    for (k, v) in ini_section(&config.unwrap_or_default(), &config_name) {
        out.entry(k).or_insert(v);
    }
    out
}

/// The `key = value` lines of one `[section]` of an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_read_from_its_section_only() {
        let text = "[default]\naws_access_key_id = A\n\n[lab]\n# note\naws_access_key_id=B\nregion = eu-west-1\n";
        assert_eq!(
            ini_section(text, "default"),
            [("aws_access_key_id".into(), "A".into())]
        );
        assert_eq!(
            ini_section(text, "lab"),
            [
                ("aws_access_key_id".to_string(), "B".to_string()),
                ("region".to_string(), "eu-west-1".to_string())
            ]
        );
        assert!(ini_section(text, "other").is_empty());
    }

    #[test]
    fn secrets_never_reach_a_message() {
        let secrets = vec!["wJalrXUtnFEMI".to_string()];
        assert_eq!(
            redact("signed with wJalrXUtnFEMI here", &secrets),
            "signed with <redacted> here"
        );
    }
}
