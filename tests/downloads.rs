//! A download stopped half-way (kill -9, Ctrl-C, a lost SSH session) resumes
//! on the next run from its last byte (issue 19): a local HTTP server that
//! serves slowly, records every request, and can change its file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Project;

/// The file the server serves and its ETag; swapped to change the file.
type Served = Arc<Mutex<(Vec<u8>, String)>>;

/// Serve `served` at any path, 32 KiB per 10 ms (≈3 MB/s), honouring
/// `Range: bytes=N-` and `If-Range` (a mismatch sends the whole file, as
/// RFC 9110 says); each request's lower-cased head is kept in `log`.
fn serve(served: Served, log: Arc<Mutex<Vec<String>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let served = served.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut byte = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n")
                    && stream.read(&mut byte).map(|k| k == 1).unwrap_or(false)
                {
                    req.push(byte[0]);
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                log.lock().unwrap().push(req.clone());
                let (body, etag) = served.lock().unwrap().clone();
                let header = |name: &str| {
                    req.lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                };
                let mut from = header("range: bytes=")
                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
                    .unwrap_or(0);
                if header("if-range:").is_some_and(|v| v != etag.to_lowercase()) {
                    from = 0;
                }
                let head = if from > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nETag: {etag}\r\nContent-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len() - 1,
                        body.len(),
                        body.len() - from
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                };
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in body[from..].chunks(32 << 10) {
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
    });
    format!("http://{addr}/scans.bin")
}

fn body(seed: u32) -> Vec<u8> {
    (0..1_000_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
        .collect()
}

/// The partial download hcpipe keeps in the cache, once it holds `at_least` bytes.
fn wait_for_part(cache: &Path, at_least: u64) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let size = std::fs::read_dir(cache.join("downloads"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max();
        if let Some(size) = size.filter(|&s| s >= at_least) {
            return size;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no partial download of {at_least} bytes appeared");
}

fn fetched(p: &Project) -> Vec<u8> {
    let show = p.run(&["show", "p.yaml", "data", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
    std::fs::read(PathBuf::from(v["path"].as_str().unwrap()).join("scans.bin")).unwrap()
}

fn start_and_kill(p: &Project, at_least: u64) -> u64 {
    let mut child = p.cmd(&["run", "p.yaml"]).spawn().unwrap();
    let size = wait_for_part(&p.cache(), at_least);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    size
}

#[test]
fn a_killed_download_resumes_with_a_range_request_and_the_same_bytes() {
    let served: Served = Arc::new(Mutex::new((body(1), "\"v1\"".into())));
    let log = Arc::new(Mutex::new(Vec::new()));
    let url = serve(served.clone(), log.clone());
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("name: p\nstages:\n  data: {{op: fetch, params: {{url: \"{url}\"}}}}\n"),
    );
    let before_kill = start_and_kill(&p, 1 << 20);
    log.lock().unwrap().clear();

    let r = p.run(&["run", "p.yaml", "--json"]).ok();
    assert_eq!(r.ran(), ["data"]);
    let requests = log.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let from: u64 = requests[0]
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .and_then(|r| r.trim().trim_end_matches('-').parse().ok())
        .unwrap_or_else(|| panic!("the second run did not resume: {requests:?}"));
    assert!(
        from >= before_kill,
        "resumed from {from}, had {before_kill}"
    );
    assert!(requests[0].contains("if-range: \"v1\""), "{requests:?}");
    assert_eq!(fetched(&p), body(1));
    // The partial file is gone once used.
    let left: Vec<_> = std::fs::read_dir(p.cache().join("downloads"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // A resumed download makes the same artifact (and key contents) as a whole one.
    let q = Project::new();
    q.write("p.yaml", &p.read("p.yaml"));
    q.run(&["run", "p.yaml"]).ok();
    let manifest = |p: &Project| {
        let show = p.run(&["show", "p.yaml", "data", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(show.stdout.trim()).unwrap();
        std::fs::read(PathBuf::from(v["path"].as_str().unwrap()).join("metrics.json")).unwrap()
    };
    assert_eq!(manifest(&p), manifest(&q));
}

#[test]
fn a_file_changed_on_the_server_is_downloaded_again_from_the_start() {
    let served: Served = Arc::new(Mutex::new((body(1), "\"v1\"".into())));
    let log = Arc::new(Mutex::new(Vec::new()));
    let url = serve(served.clone(), log.clone());
    let p = Project::new();
    p.write(
        "p.yaml",
        &format!("name: p\nstages:\n  data: {{op: fetch, params: {{url: \"{url}\"}}}}\n"),
    );
    start_and_kill(&p, 1 << 20);
    *served.lock().unwrap() = (body(2), "\"v2\"".into());
    p.run(&["run", "p.yaml"]).ok();
    assert_eq!(fetched(&p), body(2), "old bytes were kept");
}
