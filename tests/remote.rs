//! The remote cache (issue 17) against a real S3 server. By default
//! (`make test`) that is `moto` in server mode on 127.0.0.1, one per test
//! (started here; `make test-services` installs it into `.venv-moto`); a
//! test is skipped, with a printed reason, only when no `moto_server` is
//! found. With `HCPIPE_TEST_S3_ENDPOINT` set (`make test-s3` sets it, see
//! `scripts/s3-garage`) every test instead uses that server: the bucket
//! `HCPIPE_TEST_S3_BUCKET`, the credentials and region from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`, and a
//! prefix of its own in the bucket, so tests never see each other's
//! objects. Faults (corrupt bytes, truncated bodies, 500s, stalls) come
//! from a small HTTP proxy in front of either server. The `file://` tests
//! need no server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;

/// The bucket each moto server is given.
const MOTO_BUCKET: &str = "hcpipe-test";

/// `moto_server`: `$HCPIPE_MOTO_SERVER`, else the one `make test-services` installs.
fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HCPIPE_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server");
    p.is_file().then_some(p)
}

/// An S3 server the tests did not start (`HCPIPE_TEST_S3_ENDPOINT`).
struct External {
    /// Where the fault proxy connects (the endpoint's host and port).
    host: String,
    port: u16,
    bucket: String,
    key_id: String,
    secret: String,
    region: String,
}

/// The external server, when `HCPIPE_TEST_S3_ENDPOINT` names one; a
/// setting missing or malformed fails the test that asks (never a skip).
fn external() -> Option<&'static External> {
    static EXT: OnceLock<Option<External>> = OnceLock::new();
    EXT.get_or_init(|| {
        let endpoint = std::env::var("HCPIPE_TEST_S3_ENDPOINT")
            .ok()
            .filter(|v| !v.is_empty())?;
        let var =
            |k: &str| {
                std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                panic!("HCPIPE_TEST_S3_ENDPOINT is set: set {k} too (`make test-s3` sets both)")
            })
            };
        // The fault proxy speaks plain HTTP to the server.
        let authority = endpoint
            .strip_prefix("http://")
            .unwrap_or_else(|| {
                panic!("HCPIPE_TEST_S3_ENDPOINT={endpoint}: give an http://HOST:PORT endpoint")
            })
            .trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
            .unwrap_or_else(|| {
                panic!("HCPIPE_TEST_S3_ENDPOINT={endpoint}: give an http://HOST:PORT endpoint")
            });
        Some(External {
            host,
            port,
            bucket: var("HCPIPE_TEST_S3_BUCKET"),
            key_id: var("AWS_ACCESS_KEY_ID"),
            secret: var("AWS_SECRET_ACCESS_KEY"),
            region: var("AWS_REGION"),
        })
    })
    .as_ref()
}

/// Where an `hcpipe` command sends its S3 requests (the server, or a proxy
/// in front of it) and the remote URL it uses there.
#[derive(Clone)]
struct Target {
    endpoint: String,
    url: String,
}

/// The S3 server one test uses: its own moto (killed on drop), or a prefix
/// of its own on the external server.
struct S3 {
    moto: Option<Child>,
    host: String,
    port: u16,
    /// `s3://bucket/prefix`.
    url: String,
}

impl S3 {
    /// `auth`: make moto check credentials (only its own key is valid); an
    /// external server always does.
    fn start(auth: bool) -> Option<S3> {
        if let Some(ext) = external() {
            // Unique per test and per run: the bucket outlives both.
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let prefix = format!(
                "t{}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed),
                nanos
            );
            return Some(S3 {
                moto: None,
                host: ext.host.clone(),
                port: ext.port,
                url: format!("s3://{}/{prefix}/lab", ext.bucket),
            });
        }
        let Some(bin) = moto_binary() else {
            eprintln!("SKIPPED (no moto_server: `make test-services` installs it into .venv-moto)");
            return None;
        };
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            // The bucket is made without credentials; every later request needs valid ones.
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "1");
        }
        let child = cmd.spawn().expect("start moto_server");
        let s3 = S3 {
            moto: Some(child),
            host: "127.0.0.1".into(),
            port,
            url: format!("s3://{MOTO_BUCKET}/lab"),
        };
        let start = Instant::now();
        loop {
            if let Ok(code) = http(port, "PUT", &format!("/{MOTO_BUCKET}")) {
                assert!(code < 300, "creating the bucket: HTTP {code}");
                return Some(s3);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server itself.
    fn target(&self) -> Target {
        Target {
            endpoint: format!("http://{}:{}", self.host, self.port),
            url: self.url.clone(),
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(child) = &mut self.moto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bodiless request; the response's status code.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))
}

/// `hcpipe` for a project, pointed at the remote of `t`.
fn remote_cmd(p: &Project, t: &Target, args: &[&str]) -> Command {
    let (key_id, secret, region) = match external() {
        Some(e) => (e.key_id.as_str(), e.secret.as_str(), e.region.as_str()),
        None => ("testing", "testing", "us-east-1"),
    };
    let mut c = p.cmd(args);
    c.env("HCPIPE_REMOTE", &t.url)
        .env("AWS_ENDPOINT_URL", &t.endpoint)
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", region)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("HCPIPE_REMOTE_RETRIES", "2")
        .env("HCPIPE_REMOTE_TIMEOUT", "2")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT_URL_S3");
    c
}

fn remote_run(p: &Project, t: &Target, args: &[&str]) -> Run {
    Run::from(remote_cmd(p, t, args).output().unwrap())
}

/// Files under a cache folder (`objects`, `entries`).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    walkdir_files(dir)
}

fn walkdir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(items) = std::fs::read_dir(dir) else {
        return out;
    };
    for item in items.flatten() {
        let p = item.path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `pull`/`push` lines (`{"stage", "status"}`) as (stage, status).
fn sync_statuses(r: &Run) -> Vec<(String, String)> {
    r.statuses()
}

fn d_text(p: &Project) -> String {
    let show = p.run(&["show", "p.yaml", "d", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::fs::read_to_string(Path::new(v["path"].as_str().unwrap()).join("d.txt")).unwrap()
}

/// A pushed diamond: the pushing project.
fn pushed_diamond(s3: &S3) -> Project {
    let a = diamond();
    a.run(&["run", "p.yaml"]).ok();
    let push = remote_run(&a, &s3.target(), &["push", "p.yaml", "--json"]).ok();
    assert_eq!(
        sync_statuses(&push),
        [
            ("a".to_string(), "pushed".to_string()),
            ("b".into(), "pushed".into()),
            ("c".into(), "pushed".into()),
            ("d".into(), "pushed".into())
        ]
    );
    a
}

#[test]
fn push_then_pull_round_trip_and_run_pulls_instead_of_running() {
    let Some(s3) = S3::start(false) else {
        return;
    };
    let ep = s3.target();
    let a = pushed_diamond(&s3);
    // Pushing again moves nothing: the remote has every entry.
    let again = remote_run(&a, &ep, &["push", "p.yaml", "--json"]).ok();
    assert!(sync_statuses(&again).iter().all(|(_, s)| s == "present"));

    // An empty cache elsewhere: `pull` fetches all four, `run` then runs nothing.
    let b = diamond();
    let pull = remote_run(&b, &ep, &["pull", "p.yaml", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
    let run = b.run(&["run", "p.yaml", "--json"]).ok();
    assert!(run.ran().is_empty(), "{}", run.stdout);
    assert_eq!(d_text(&b), "data\nhello\ndata\nhello\n11\n");
    b.run(&["verify"]).ok();

    // `run` with a remote and an empty cache: every stage `pulled`, none ran.
    // Stages whose keys are known together are looked up together: `a`,
    // then `b` and `c` at once, then `d`.
    let c = diamond();
    let run = remote_run(&c, &ep, &["-v", "run", "p.yaml", "--json"]).ok();
    for s in ["a", "b", "c", "d"] {
        assert_eq!(run.status_of(s), "pulled", "{}", run.stdout);
    }
    assert!(
        run.stderr.contains("remote: 4 lookups in 3 batches"),
        "{}",
        run.stderr
    );
    // The run's last line counts them apart from local cache hits.
    let last = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(r#""event":"run""#));
    let last: serde_json::Value = serde_json::from_str(last.expect("a run line")).unwrap();
    assert_eq!(
        (last["pulled"].as_u64(), last["ran"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(d_text(&c), "data\nhello\ndata\nhello\n11\n");

    // A changed input: `a`'s key changed, so it runs, and so does what its
    // new output feeds; nothing stale is pulled.
    let e = diamond();
    e.write("input.txt", "other\n");
    let run = remote_run(&e, &ep, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(run.ran(), ["a", "b", "c", "d"]);

    // `run --push` publishes what it ran; `verify --remote` checks it all.
    let run = remote_run(
        &e,
        &ep,
        &["run", "p.yaml", "--set", "n=5", "--push", "--json"],
    )
    .ok();
    assert_eq!(run.ran(), ["c", "d"]);
    let f = diamond();
    f.write("input.txt", "other\n");
    let pull = remote_run(&f, &ep, &["pull", "p.yaml", "--set", "n=5", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
    let verify = remote_run(&a, &ep, &["verify", "--remote"]).ok();
    assert!(verify.stdout.contains("8 entries"), "{}", verify.stdout);
    assert!(verify.stdout.contains("0 problem(s)"), "{}", verify.stdout);
}

#[test]
fn a_folder_remote_round_trips_and_refuses_a_corrupt_object() {
    let remote_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote_dir.path().display());
    let a = diamond();
    a.run(&["run", "p.yaml"]).ok();
    a.run(&["push", "p.yaml", "--remote", &url]).ok();
    // Flip a byte of every object on the remote.
    for f in files_in(&remote_dir.path().join("objects")) {
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&f, bytes).unwrap();
    }
    let b = diamond();
    let pull = b.run(&["pull", "p.yaml", "--remote", &url]);
    assert_eq!(pull.code, 4, "{}", pull.stderr);
    assert!(pull.stderr.contains("came back wrong"), "{}", pull.stderr);
    assert!(files_in(&b.cache().join("entries")).is_empty());
    assert!(files_in(&b.cache().join("objects")).is_empty());
    // `run` with that remote warns and runs the stages itself.
    let run = b.run(&["run", "p.yaml", "--json", "--remote", &url]).ok();
    assert_eq!(run.ran(), ["a", "b", "c", "d"]);
    assert!(
        run.stderr.contains("running it here instead"),
        "{}",
        run.stderr
    );
    let verify = a.run(&["verify", "--remote", &url]);
    assert_eq!(verify.code, 1);
    assert!(
        verify.stdout.contains("content hash is"),
        "{}",
        verify.stdout
    );
}

#[test]
fn an_entry_that_is_not_its_keys_result_is_refused() {
    let remote_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote_dir.path().display());
    let a = diamond();
    a.run(&["run", "p.yaml"]).ok();
    a.run(&["push", "p.yaml", "--remote", &url]).ok();
    // Rewrite d's entry to claim other inputs (a forged result).
    for f in files_in(&remote_dir.path().join("entries")) {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["stage"] == "d" {
            v["inputs"]["cmd"] = "echo forged".into();
            std::fs::write(&f, serde_json::to_vec(&v).unwrap()).unwrap();
        }
    }
    let b = diamond();
    let pull = b.run(&["pull", "p.yaml", "--remote", &url]);
    assert_eq!(pull.code, 4, "{}\n{}", pull.stdout, pull.stderr);
    assert!(
        pull.stderr.contains("do not hash to its key"),
        "{}",
        pull.stderr
    );
}

/// Whether the server under test honours create-only puts (`If-None-Match:
/// *`): moto does; an external server as `HCPIPE_TEST_S3_CREATE_ONLY` says
/// (`0`: it ignores them, as Garage does), default yes.
fn server_honours_create_only() -> bool {
    external().is_none() || std::env::var("HCPIPE_TEST_S3_CREATE_ONLY").as_deref() != Ok("0")
}

const IGNORES_CREATE_ONLY: &str = "ignores create-only writes";

/// `a` and `b` push the same four results at once, three times over; how
/// often each stage was reported `pushed`, in all.
fn push_at_once(a: &Project, b: &Project, t: &Target, warned: bool) -> Vec<usize> {
    let mut pushed = vec![0; 4];
    for _ in 0..3 {
        let spawn = |p: &Project| {
            remote_cmd(p, t, &["push", "p.yaml", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (spawn(a), spawn(b));
        let (ra, rb) = (
            Run::from(pa.wait_with_output().unwrap()),
            Run::from(pb.wait_with_output().unwrap()),
        );
        for r in [ra.ok(), rb.ok()] {
            // A push that writes an entry finds out the server's kind (and
            // tells it once); one that finds every entry there writes none.
            let warnings = r.stderr.matches(IGNORES_CREATE_ONLY).count();
            let wrote = ["a", "b", "c", "d"].map(|s| r.status_of(s) == "pushed");
            assert!(warnings <= usize::from(warned), "{}", r.stderr);
            if warned && wrote.contains(&true) {
                assert_eq!(warnings, 1, "{}", r.stderr);
            }
            for (i, w) in wrote.iter().enumerate() {
                pushed[i] += usize::from(*w);
            }
        }
    }
    pushed
}

#[test]
fn two_runners_pushing_the_same_key_at_once_leave_one_whole_entry() {
    let Some(s3) = S3::start(false) else {
        return;
    };
    let ep = s3.target();
    // The same results made twice (entries differ in time stamps).
    let (a, b) = (diamond(), diamond());
    a.run(&["run", "p.yaml"]).ok();
    b.run(&["run", "p.yaml"]).ok();
    let honours = server_honours_create_only();
    let pushed = push_at_once(&a, &b, &ep, !honours);
    if honours {
        // Each key was written by exactly one of them, once.
        assert_eq!(pushed, [1, 1, 1, 1]);
    } else {
        // Both may have written a key before either read it back; never a
        // third time (later rounds find it there).
        assert!(pushed.iter().all(|n| (1..=2).contains(n)), "{pushed:?}");
    }
    let c = diamond();
    remote_run(&c, &ep, &["pull", "p.yaml"]).ok();
    assert_eq!(d_text(&c), "data\nhello\ndata\nhello\n11\n");
    remote_run(&c, &ep, &["verify", "--remote"]).ok();
}

/// Moto behind a proxy that drops `If-None-Match` acts like Garage: the
/// push finds that out, warns, and still never writes over an entry, and a
/// runner whose entry was replaced right after its write reports the key
/// `present` (the other's entry stands, whole).
#[test]
fn a_server_that_ignores_create_only_puts_is_found_out_and_entries_stay_whole() {
    if external().is_some() {
        eprintln!("SKIPPED (moto only: the proxy drops a signed header, which a server checking signatures refuses; `two_runners_pushing_the_same_key_at_once_leave_one_whole_entry` covers a real server)");
        return;
    }
    let Some(s3) = S3::start(false) else {
        return;
    };
    let proxy = Proxy::start(&s3);
    proxy.quirks.lock().unwrap().ignore_create_only = true;
    let ep = proxy.target();
    let (a, b) = (diamond(), diamond());
    a.run(&["run", "p.yaml"]).ok();
    b.run(&["run", "p.yaml"]).ok();
    // b's entries, written over a's right after each of a's entry PUTs.
    proxy.quirks.lock().unwrap().overwrite_entries = files_in(&b.cache().join("entries"))
        .into_iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&f).unwrap())
        })
        .collect();
    let push = remote_run(&a, &ep, &["push", "p.yaml", "--json"]).ok();
    assert_eq!(
        push.stderr.matches(IGNORES_CREATE_ONLY).count(),
        1,
        "{}",
        push.stderr
    );
    assert!(
        sync_statuses(&push).iter().all(|(_, s)| s == "present"),
        "{}",
        push.stdout
    );
    proxy.quirks.lock().unwrap().overwrite_entries.clear();
    // The remote holds b's entries, each whole and with its objects.
    let c = diamond();
    let pull = remote_run(&c, &ep, &["pull", "p.yaml", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
    for f in files_in(&b.cache().join("entries")) {
        let name = f.file_name().unwrap();
        assert_eq!(
            std::fs::read(c.cache().join("entries").join(name)).unwrap(),
            std::fs::read(&f).unwrap()
        );
    }
    remote_run(&c, &ep, &["verify", "--remote"]).ok();
    // A second push (or b's) finds every entry there and writes none.
    for p in [&a, &b] {
        let again = remote_run(p, &ep, &["push", "p.yaml", "--json"]).ok();
        assert!(
            sync_statuses(&again).iter().all(|(_, s)| s == "present"),
            "{}",
            again.stdout
        );
    }
    // Two runners pushing at once to a fresh such server: whole entries.
    let Some(fresh) = S3::start(false) else {
        return;
    };
    let proxy = Proxy::start(&fresh);
    proxy.quirks.lock().unwrap().ignore_create_only = true;
    let pushed = push_at_once(&a, &b, &proxy.target(), true);
    assert!(pushed.iter().all(|n| (1..=2).contains(n)), "{pushed:?}");
    let d = diamond();
    remote_run(&d, &proxy.target(), &["pull", "p.yaml"]).ok();
    assert_eq!(d_text(&d), "data\nhello\ndata\nhello\n11\n");
    remote_run(&d, &proxy.target(), &["verify", "--remote"]).ok();
}

/// What the fault proxy does to matching requests.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Flip one byte of the body.
    Corrupt,
    /// Send half the body, then close.
    Truncate,
    /// Answer 500 without asking the server.
    Status500,
    /// Say nothing for 30 s.
    Stall,
}

#[derive(Default)]
struct Faults {
    /// (method, fault, times left; `usize::MAX`: always).
    rule: Option<(&'static str, Fault, usize)>,
    /// Matching requests let through before the fault starts.
    skip: usize,
    /// Matching requests seen.
    seen: usize,
}

/// How the proxy makes moto act like a server that ignores create-only
/// puts (moto only: a server that checks signatures refuses a request
/// whose signed `If-None-Match` was taken out).
#[derive(Default)]
struct Quirks {
    /// Drop `If-None-Match` from requests.
    ignore_create_only: bool,
    /// Entry file name (`<key>.json`) → bytes another runner writes over it
    /// right after a PUT of that entry gets through.
    overwrite_entries: std::collections::HashMap<String, Vec<u8>>,
}

/// A one-request-per-connection HTTP proxy in front of an S3 server that
/// applies `faults` to requests for objects (`/objects/` in the path).
struct Proxy {
    port: u16,
    url: String,
    faults: Arc<Mutex<Faults>>,
    quirks: Arc<Mutex<Quirks>>,
}

impl Proxy {
    fn start(s3: &S3) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let quirks = Arc::new(Mutex::new(Quirks::default()));
        let (shared, shared_quirks) = (Arc::clone(&faults), Arc::clone(&quirks));
        let upstream = (s3.host.clone(), s3.port);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let faults = Arc::clone(&shared);
                let quirks = Arc::clone(&shared_quirks);
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, (&upstream.0, upstream.1), &faults, &quirks);
                });
            }
        });
        Proxy {
            port,
            url: s3.url.clone(),
            faults,
            quirks,
        }
    }

    fn target(&self) -> Target {
        Target {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            url: self.url.clone(),
        }
    }

    fn set(&self, method: &'static str, fault: Fault, times: usize, skip: usize) {
        *self.faults.lock().unwrap() = Faults {
            rule: Some((method, fault, times)),
            skip,
            seen: 0,
        };
    }

    fn clear(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read one HTTP message head (up to the blank line) and what came after it.
fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            return Ok((head, buf[i + 4..].to_vec()));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The head with `Connection: close` in place of any Connection header.
fn closing(head: &str) -> String {
    let mut out: Vec<&str> = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    out.push("Connection: close");
    format!("{}\r\n\r\n", out.join("\r\n"))
}

/// Send one request upstream; the whole response.
fn forward(upstream: (&str, u16), head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(closing(head).as_bytes())?;
    up.write_all(body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(response)
}

fn serve(
    mut client: TcpStream,
    upstream: (&str, u16),
    faults: &Mutex<Faults>,
    quirks: &Mutex<Quirks>,
) -> std::io::Result<()> {
    let (mut head, mut body) = read_head(&mut client)?;
    let want = content_length(&head);
    while body.len() < want {
        let mut chunk = vec![0u8; want - body.len()];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut parts = head.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let fault = {
        let mut f = faults.lock().unwrap();
        match f.rule {
            Some((m, fault, left)) if m == method && path.contains("/objects/") && left > 0 => {
                f.seen += 1;
                if f.seen > f.skip {
                    if left != usize::MAX {
                        f.rule = Some((m, fault, left - 1));
                    }
                    Some(fault)
                } else {
                    None
                }
            }
            _ => None,
        }
    };
    match fault {
        Some(Fault::Status500) => {
            client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Some(Fault::Stall) => {
            std::thread::sleep(Duration::from_secs(30));
            return Ok(());
        }
        _ => {}
    }
    let overwrite = {
        let q = quirks.lock().unwrap();
        if q.ignore_create_only {
            head = head
                .split_inclusive("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("if-none-match:"))
                .collect();
        }
        let name = path.rsplit('/').next().unwrap_or("");
        (method == "PUT" && path.contains("/entries/"))
            .then(|| q.overwrite_entries.get(name).cloned())
            .flatten()
    };
    let response = forward(upstream, &head, &body)?;
    if let Some(other) = overwrite {
        // Another runner's entry lands right after this one: the same
        // request with the other body (moto does not check signatures).
        let other_head: String = head
            .split_inclusive("\r\n")
            .map(|l| match l.split_once(':') {
                Some((k, _)) if k.eq_ignore_ascii_case("content-length") => {
                    format!("Content-Length: {}\r\n", other.len())
                }
                Some((k, _)) if k.eq_ignore_ascii_case("x-amz-content-sha256") => {
                    "x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n".to_string()
                }
                Some((k, _)) if k.eq_ignore_ascii_case("if-none-match") => String::new(),
                _ => l.to_string(),
            })
            .collect();
        forward(upstream, &other_head, &other)?;
    }
    let split = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
    let rhead = closing(&String::from_utf8_lossy(&response[..split]));
    let mut rbody = response[split..].to_vec();
    match fault {
        Some(Fault::Corrupt) if !rbody.is_empty() => {
            let mid = rbody.len() / 2;
            rbody[mid] ^= 0x20;
        }
        Some(Fault::Truncate) => rbody.truncate(rbody.len() / 2),
        _ => {}
    }
    client.write_all(rhead.as_bytes())?;
    client.write_all(&rbody)?;
    client.flush()
}

/// A pushed diamond behind a fault proxy, and an empty project to pull into.
fn faulty() -> Option<(S3, Proxy, Project)> {
    let s3 = S3::start(false)?;
    pushed_diamond(&s3);
    let proxy = Proxy::start(&s3);
    Some((s3, proxy, diamond()))
}

/// A failed pull kept nothing: no entry, no object, no artifact.
fn nothing_kept(p: &Project) {
    for sub in ["entries", "objects", "artifacts"] {
        let left = files_in(&p.cache().join(sub));
        assert!(left.is_empty(), "{sub} holds {left:?}");
    }
}

#[test]
fn corrupt_bytes_are_retried_and_never_kept() {
    let Some((_s3, proxy, b)) = faulty() else {
        return;
    };
    let ep = proxy.target();
    proxy.set("GET", Fault::Corrupt, usize::MAX, 0);
    let pull = remote_run(&b, &ep, &["pull", "p.yaml"]);
    assert_eq!(pull.code, 4, "{}\n{}", pull.stdout, pull.stderr);
    assert!(
        pull.stderr.contains("came back wrong 3 times"),
        "{}",
        pull.stderr
    );
    assert!(pull.stderr.contains("hash to"), "{}", pull.stderr);
    nothing_kept(&b);
    // One bad answer is retried away.
    proxy.set("GET", Fault::Corrupt, 1, 0);
    let pull = remote_run(&b, &ep, &["pull", "p.yaml", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
    b.run(&["verify"]).ok();
    assert_eq!(d_text(&b), "data\nhello\ndata\nhello\n11\n");
}

#[test]
fn truncated_bodies_are_refused_and_never_kept() {
    let Some((_s3, proxy, b)) = faulty() else {
        return;
    };
    let ep = proxy.target();
    proxy.set("GET", Fault::Truncate, usize::MAX, 0);
    let pull = remote_run(&b, &ep, &["pull", "p.yaml"]);
    assert_eq!(pull.code, 4, "{}\n{}", pull.stdout, pull.stderr);
    nothing_kept(&b);
    proxy.set("GET", Fault::Truncate, 2, 0);
    remote_run(&b, &ep, &["pull", "p.yaml"]).ok();
    b.run(&["verify"]).ok();
}

#[test]
fn server_errors_are_retried_with_backoff_then_reported() {
    let Some((_s3, proxy, b)) = faulty() else {
        return;
    };
    let ep = proxy.target();
    proxy.set("GET", Fault::Status500, usize::MAX, 0);
    let pull = remote_run(&b, &ep, &["pull", "p.yaml"]);
    assert_eq!(pull.code, 4, "{}\n{}", pull.stdout, pull.stderr);
    assert!(pull.stderr.contains("after retries"), "{}", pull.stderr);
    assert!(pull.stderr.contains("500"), "{}", pull.stderr);
    nothing_kept(&b);
    // Two 500s in a row are absorbed by the retries.
    proxy.set("GET", Fault::Status500, 2, 0);
    remote_run(&b, &ep, &["pull", "p.yaml"]).ok();
    b.run(&["verify"]).ok();
    // `run` with a failing remote warns once and runs the stages itself.
    let c = diamond();
    proxy.set("GET", Fault::Status500, usize::MAX, 0);
    let run = remote_run(&c, &ep, &["run", "p.yaml", "--json"]).ok();
    assert_eq!(run.ran(), ["a", "b", "c", "d"]);
    assert_eq!(
        run.stderr
            .matches("not used for the rest of this run")
            .count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn a_stalled_server_times_out_with_a_clear_error() {
    let Some((_s3, proxy, b)) = faulty() else {
        return;
    };
    let ep = proxy.target();
    proxy.set("GET", Fault::Stall, usize::MAX, 0);
    let start = Instant::now();
    let pull = remote_run(&b, &ep, &["pull", "p.yaml"]);
    assert_eq!(pull.code, 4, "{}\n{}", pull.stdout, pull.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "retries must end: {:?}",
        start.elapsed()
    );
    assert!(pull.stderr.contains("after retries"), "{}", pull.stderr);
    nothing_kept(&b);
    proxy.clear();
}

#[test]
fn a_push_killed_midway_leaves_no_entry_without_its_objects() {
    let Some(s3) = S3::start(false) else {
        return;
    };
    let proxy = Proxy::start(&s3);
    let ep = proxy.target();
    let a = diamond();
    a.run(&["run", "p.yaml"]).ok();
    // Stages a and b go up whole; of c's two objects (pushed in parallel)
    // one goes up and the other hangs; the push is killed there.
    proxy.set("PUT", Fault::Stall, usize::MAX, 3);
    let mut push = remote_cmd(&a, &ep, &["push", "p.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while proxy.faults.lock().unwrap().seen < 4 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "push never reached c's objects"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    proxy.clear();
    // a and b are whole on the remote; c has no entry (one object, maybe).
    let verify = remote_run(&a, &s3.target(), &["verify", "--remote"]).ok();
    assert!(verify.stdout.contains(" 2 entries"), "{}", verify.stdout);
    assert!(verify.stdout.contains("0 problem(s)"), "{}", verify.stdout);
    let b = diamond();
    let pull = remote_run(&b, &s3.target(), &["pull", "p.yaml", "--json"]).ok();
    assert_eq!(
        sync_statuses(&pull),
        [
            ("a".to_string(), "pulled".to_string()),
            ("b".into(), "pulled".into()),
            ("c".into(), "missing".into()),
            ("d".into(), "unknown".into())
        ]
    );
    // A second push completes it.
    remote_run(&a, &s3.target(), &["push", "p.yaml"]).ok();
    remote_run(&b, &s3.target(), &["pull", "p.yaml"]).ok();
    assert_eq!(d_text(&b), "data\nhello\ndata\nhello\n11\n");
}

#[test]
fn wrong_credentials_give_a_clear_error_without_the_secret() {
    let Some(s3) = S3::start(true) else {
        return;
    };
    let a = diamond();
    a.run(&["run", "p.yaml"]).ok();
    let secret = "hUNTER2sEcReTkEy0123456789abcdefSECRET";
    let out = remote_cmd(&a, &s3.target(), &["push", "p.yaml"])
        .env("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY0000")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("credentials were not accepted"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("AWS_ACCESS_KEY_ID"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(secret) && !r.stdout.contains(secret),
        "{}",
        r.stderr
    );
}

#[test]
fn gc_remote_lists_first_and_keeps_the_newest_results() {
    let Some(s3) = S3::start(false) else {
        return;
    };
    let ep = s3.target();
    let a = pushed_diamond(&s3);
    // A second result of c and d (n=2), pushed a second later.
    std::thread::sleep(Duration::from_millis(1100));
    remote_run(&a, &ep, &["run", "p.yaml", "--set", "n=2", "--push"]).ok();
    let list = remote_run(&a, &ep, &["gc", "--remote", "--keep-last", "1"]).ok();
    assert!(
        list.stdout.contains("would delete 2 entries"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("--yes"), "{}", list.stdout);
    // Nothing was deleted by the listing.
    let verify = remote_run(&a, &ep, &["verify", "--remote"]).ok();
    assert!(verify.stdout.contains("6 entries"), "{}", verify.stdout);
    let gc = remote_run(&a, &ep, &["gc", "--remote", "--keep-last", "1", "--yes"]).ok();
    assert!(gc.stdout.contains("deleted 2 entries"), "{}", gc.stdout);
    let verify = remote_run(&a, &ep, &["verify", "--remote"]).ok();
    assert!(verify.stdout.contains("4 entries"), "{}", verify.stdout);
    // The newest results still pull; the old ones are gone.
    let b = diamond();
    let pull = remote_run(&b, &ep, &["pull", "p.yaml", "--set", "n=2", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
    // (`a` and `b` are here already; `d`'s key waits on the missing `c`.)
    let old = remote_run(&b, &ep, &["pull", "p.yaml", "--json"]).ok();
    assert_eq!(
        sync_statuses(&old),
        [
            ("a".to_string(), "present".to_string()),
            ("b".into(), "present".into()),
            ("c".into(), "missing".into()),
            ("d".into(), "unknown".into())
        ]
    );
    // Without a bound, gc --remote refuses.
    let r = remote_run(&a, &ep, &["gc", "--remote"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn slurm_jobs_work_in_scratch_caches_through_the_remote() {
    let Some(s3) = S3::start(false) else {
        return;
    };
    if !slurm_up() {
        return;
    }
    let ep = s3.target();
    let p = Project::new();
    p.write("input.txt", "data\n");
    p.write(
        "p.yaml",
        r#"
name: scratch
stages:
  a:
    cmd: "cat input.txt > {out}/a.txt"
    deps: [input.txt]
  b:
    cmd: "cat {in.a}/a.txt {in.a}/a.txt > {out}/b.txt; echo {in.a} > {out}/from.txt"
    needs: [a]
"#,
    );
    let scratch = p.path().join("node-scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = remote_cmd(&p, &ep, &["run", "p.yaml", "--json", "--executor", "slurm"])
        .env("HCPIPE_SLURM_POLL", "0.3")
        .env("HCPIPE_SCRATCH", &scratch)
        .output()
        .unwrap();
    let run = Run::from(out).ok();
    assert_eq!(run.ran(), ["a", "b"]);
    // b read a's artifact from its own scratch cache, which is gone now.
    let show = p.run(&["show", "p.yaml", "b", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    let dir = Path::new(v["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("b.txt")).unwrap(),
        "data\ndata\n"
    );
    let from = std::fs::read_to_string(dir.join("from.txt")).unwrap();
    assert!(from.starts_with(&scratch.display().to_string()), "{from}");
    assert!(files_in(&scratch).is_empty(), "scratch caches left behind");
    // The stages' logs stayed on the nodes: the jobs never used this cache.
    assert!(files_in(&p.cache().join("logs")).is_empty());
    // Their results are on the remote: an empty cache elsewhere pulls both.
    let q = Project::new();
    q.write("input.txt", "data\n");
    q.write("p.yaml", &p.read("p.yaml"));
    let pull = remote_run(&q, &ep, &["pull", "p.yaml", "--json"]).ok();
    assert!(
        sync_statuses(&pull).iter().all(|(_, s)| s == "pulled"),
        "{}",
        pull.stdout
    );
}
