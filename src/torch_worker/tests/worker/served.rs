//! `--serve`: jobs sharing one worker process give the bytes they give in
//! a worker process of their own, whatever else runs beside them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hcpipe::exec::torch_server::{Request, Response};
use hcpipe::ops::JobSpec;
use serde_json::json;

use crate::support::*;

/// A `hcpipe-torch --serve` worker, killed when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let socket = dir.join("socket");
        let child = Command::new(env!("CARGO_BIN_EXE_hcpipe-torch"))
            .arg("--serve")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Server { child, socket }
    }

    /// Sends `job` and waits for its answer, which must be `ok`.
    fn run(&self, job: &Path) {
        let started = Instant::now();
        let conn = loop {
            match UnixStream::connect(&self.socket) {
                Ok(conn) => break conn,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "the worker never listened: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let request = Request {
            job: job.to_path_buf(),
            progress: None,
        };
        let line = serde_json::to_string(&request).unwrap();
        (&conn).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(&conn).read_line(&mut answer).unwrap();
        let response: Response = serde_json::from_str(&answer).unwrap();
        assert!(response.ok, "{job:?} failed: {:?}", response.error);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job file as `job` writes it, with `threads` intra-op threads.
fn job_with_threads(
    work: &Path,
    op: &str,
    params: serde_json::Value,
    crop: &Path,
    out: &Path,
    threads: usize,
) -> PathBuf {
    let path = job(
        work,
        op,
        params,
        vec![input("crop_left", "crop", crop)],
        out,
    );
    let mut spec: JobSpec = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    spec.threads = threads;
    std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
    path
}

/// What a training wrote: its weights and its per-epoch history.
fn trained(out: &Path) -> (Vec<u8>, String) {
    (
        std::fs::read(out.join("weights.safetensors")).unwrap(),
        std::fs::read_to_string(out.join("history.tsv")).unwrap(),
    )
}

/// A seeded `train_cnn` (dropout draws every step) gives the same weights,
/// byte for byte, in a worker process of its own, alone in a `--serve`
/// worker, and in one while another CNN (another seed, another thread
/// count: its own seeding and dropout draws) and the autoencoder train
/// beside it. With one generator per process, the other jobs' seeding and
/// draws would change its dropout masks.
#[test]
fn a_seeded_training_gives_the_same_bytes_alone_or_beside_others() {
    let work = tempfile::tempdir().unwrap();
    let crop = work.path().join("crop");
    Crop {
        signal: 0.2,
        seed: 11,
        ..Crop::lab(16, 2)
    }
    .write(&crop);
    let cnn = |name: &str, seed: u64, threads: usize| {
        let out = work.path().join(name);
        let params = json!({"epochs": 3, "batch_size": 2, "seed": seed});
        let job = job_with_threads(work.path(), "train_cnn", params, &crop, &out, threads);
        (job, out)
    };

    let (own_job, own_out) = cnn("own-process", 5, 1);
    run_ok(&own_job);
    let own = trained(&own_out);

    let server = Server::start(work.path());
    let (alone_job, alone_out) = cnn("served-alone", 5, 1);
    server.run(&alone_job);
    assert!(
        trained(&alone_out) == own,
        "alone in the served worker, the CNN's weights differ from its own process's"
    );

    let (beside_job, beside_out) = cnn("served-beside", 5, 1);
    let (other_job, other_out) = cnn("other-cnn", 6, 2);
    let ae_out = work.path().join("ae");
    let ae_job = job_with_threads(
        work.path(),
        "train_ae",
        json!({"epochs": 2, "batch_size": 2, "seed": 5}),
        &crop,
        &ae_out,
        1,
    );
    std::thread::scope(|s| {
        for job in [&other_job, &ae_job, &beside_job] {
            let server = &server;
            s.spawn(move || server.run(job));
        }
    });
    assert!(
        trained(&beside_out) == own,
        "beside other trainings in the served worker, the CNN's weights differ from its own \
         process's"
    );
    // The other CNN is its own seed's, as in a process of its own.
    let (other_own_job, other_own_out) = cnn("other-own-process", 6, 2);
    run_ok(&other_own_job);
    assert!(trained(&other_out) == trained(&other_own_out));
    assert!(trained(&other_out) != own, "another seed, other weights");
}
