//! One torch worker for every torch stage of a local run.
//!
//! A worker process per stage pays, per stage, for starting the process and
//! loading libtorch (about 0.5 s of CPU on the CPU, a few seconds with a
//! CUDA context), and on a GPU it costs more: each worker process has its
//! own CUDA context, and a GPU runs the kernels of different contexts by
//! time-slicing, never side by side. The lab's networks are small: one
//! training step is a few hundred tiny kernels that leave most of the GPU
//! idle, so three trainers in three processes each ran about 2.7× slower
//! than alone (BENCHMARKS.md, table 3: the CNN's epoch took 73 ms alone,
//! 200 ms beside the other CNN and the AE). In one process, on one CUDA
//! stream per stage, their kernels overlap. On the CPU (BENCHMARKS.md,
//! table 2) the lab's six torch stages spent about 3 s of the 2 cores
//! starting workers.
//!
//! So the local executor starts one `hcpipe-torch --serve SOCKET` per run
//! (only when the run has torch stages to run) and hands it each torch
//! stage's job file over a Unix socket; the worker runs each job on its own
//! thread, with its own CPU generator and intra-op thread count, so that a
//! seed gives the same bytes as in a worker process of its own, whatever
//! else runs beside it (the worker's `rng` module). One job per connection:
//! the runner sends one JSON [`Request`] line, the worker answers one JSON
//! [`Response`] line. The runner hanging up (Ctrl-C:
//! [`TorchServer::cancel_all`]) cancels the job. A job answered with an
//! internal error (a libtorch panic) is retried in a worker process of its
//! own (`job::execute`).
//!
//! The local executor owns the server ([`super::local::LocalExecutor`]) and hands it to each
//! job; dropping it stops the worker.
//!
//! `HCPIPE_TORCH_SERVER=0` turns this off (a worker process per stage, as
//! under Slurm, where each stage is a job of its own); `=1` (or unset) keeps
//! it on.
//! The socket lives in a fresh mode-0700 folder under the system's temp
//! folder: only this user can reach it, and its path stays short (Unix
//! socket paths are limited to 107 bytes, cache paths are not).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::outcome::{tail, Failure};

/// What the runner asks: run this job file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub job: PathBuf,
    /// Where the job appends a progress line per epoch (`$HCPIPE_PROGRESS`
    /// of a worker process of its own; see `exec::progress`).
    #[serde(default)]
    pub progress: Option<PathBuf>,
}

/// What the worker answers: `ok`, or the error paragraph a `--job` worker
/// would have printed, and whether it was an internal error (a panic).
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub internal: bool,
}

/// How a served job failed.
pub enum JobError {
    /// The stage's own failure (bad input, a failed check): as final as it
    /// would be in a worker process of its own.
    Stage(Failure),
    /// An internal error (a panic) in the shared worker: worth a retry in a
    /// worker process of its own.
    Internal(Failure),
}

/// How long a job waits for the worker to start listening (loading
/// libtorch and creating a CUDA context take a few seconds at most).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether a local run should use a torch server: yes unless
/// `HCPIPE_TORCH_SERVER=0`, with or without GPUs (the GPUs found no longer
/// matter: on the CPU too the server saves a libtorch start per stage).
pub fn wanted() -> bool {
    wanted_by(std::env::var("HCPIPE_TORCH_SERVER").ok().as_deref())
}

/// [`wanted`], given `HCPIPE_TORCH_SERVER`'s value.
fn wanted_by(setting: Option<&str>) -> bool {
    setting.map(str::trim) != Some("0")
}

/// A running `hcpipe-torch --serve`; dropping it stops the worker.
pub struct TorchServer {
    child: Mutex<Child>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Connections of jobs in flight, shut down by [`TorchServer::cancel_all`].
    connections: Mutex<Vec<(u64, UnixStream)>>,
    next_connection: AtomicU64,
}

impl TorchServer {
    /// Starts the server (without waiting for it to listen), its output going
    /// to `log`. Must be called from the thread that lives for the whole run:
    /// the worker dies with the thread that started it (PDEATHSIG).
    pub fn start(worker: &Path, log: &Path) -> Result<TorchServer, String> {
        remove_stale_socket_folders();
        let dir = std::env::temp_dir().join(format!(
            "{SOCKET_FOLDER_PREFIX}{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let socket = dir.join("socket");
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(worker);
        command
            .arg("--serve")
            .arg(&socket)
            // Its jobs' progress files come with each request, never from here.
            .env_remove(crate::outcome::PROGRESS_ENV)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl and setpgid are async-signal-safe; they only set flags.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start the torch worker {}: {e}", worker.display()))?;
        Ok(TorchServer {
            child: Mutex::new(child),
            dir,
            socket,
            log: log.to_path_buf(),
            connections: Mutex::new(Vec::new()),
            next_connection: AtomicU64::new(0),
        })
    }

    /// Stops the server (end of the run): kills it and removes its socket. A
    /// job still holding the server then fails to connect.
    pub fn stop(&self) {
        if let Ok(mut child) = self.child.lock() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on the worker's own process group.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Hangs up on every job in flight (Ctrl-C): the worker cancels them.
    pub fn cancel_all(&self) {
        if let Ok(conns) = self.connections.lock() {
            for (_, c) in conns.iter() {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `<temp>/hcpipe-torch-<runner pid>-<nanos>`: the socket's folder.
const SOCKET_FOLDER_PREFIX: &str = "hcpipe-torch-";

/// Removes socket folders of runners that are gone (a runner killed with
/// SIGKILL cannot remove its own; its worker died with it, by PDEATHSIG).
fn remove_stale_socket_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(SOCKET_FOLDER_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                // Another user's folder is not ours to remove; this fails then.
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A job in flight, registered for [`TorchServer::cancel_all`] while it lives.
struct Registered<'a> {
    server: &'a TorchServer,
    id: u64,
}

impl<'a> Registered<'a> {
    fn new(server: &'a TorchServer, conn: &UnixStream) -> Option<Registered<'a>> {
        let clone = conn.try_clone().ok()?;
        let id = server.next_connection.fetch_add(1, Ordering::Relaxed);
        server.connections.lock().ok()?.push((id, clone));
        Some(Registered { server, id })
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut conns) = self.server.connections.lock() {
            conns.retain(|(id, _)| *id != self.id);
        }
    }
}

impl TorchServer {
    /// Runs `job_file` in the server, its progress going to `progress`;
    /// `what` names the stage in errors.
    pub fn run_job(
        &self,
        job_file: &Path,
        progress: Option<&Path>,
        what: &str,
    ) -> Result<(), JobError> {
        self.exchange(job_file, progress, what)
            .and_then(|response| {
                if response.ok {
                    return Ok(());
                }
                let failure = Failure::msg(format!(
                    "the {what} failed: {}",
                    response.error.unwrap_or_else(|| "no reason given".into())
                ));
                Err(if response.internal {
                    JobError::Internal(failure)
                } else {
                    JobError::Stage(failure)
                })
            })
    }

    /// Sends the job and reads the answer; a worker that cannot be reached
    /// or hangs up fails the stage (as Ctrl-C does, by design).
    fn exchange(
        &self,
        job_file: &Path,
        progress: Option<&Path>,
        what: &str,
    ) -> Result<Response, JobError> {
        let conn = self.connect(what).map_err(JobError::Stage)?;
        let _registered = Registered::new(self, &conn);
        let request = serde_json::to_string(&Request {
            job: job_file.to_path_buf(),
            progress: progress.map(Path::to_path_buf),
        })
        .map_err(|e| JobError::Stage(Failure::msg(e.to_string())))?;
        let died = |how: String| JobError::Stage(self.died(what, &how));
        (&conn)
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| died(format!("sending the job: {e}")))?;
        let mut line = String::new();
        BufReader::new(&conn)
            .read_line(&mut line)
            .map_err(|e| died(format!("waiting for the job: {e}")))?;
        if line.trim().is_empty() {
            return Err(died("it hung up before answering".into()));
        }
        serde_json::from_str(&line)
            .map_err(|e| died(format!("unreadable answer `{}`: {e}", line.trim())))
    }

    /// Connects, waiting while the worker starts (it listens once CUDA is up).
    fn connect(&self, what: &str) -> Result<UnixStream, Failure> {
        let started = Instant::now();
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    let exited = self
                        .child
                        .lock()
                        .ok()
                        .and_then(|mut c| c.try_wait().ok().flatten());
                    if let Some(status) = exited {
                        return Err(self.died(what, &format!("it exited ({status})")));
                    }
                    if started.elapsed() > START_TIMEOUT {
                        return Err(self.died(
                            what,
                            &format!("it did not listen within {START_TIMEOUT:?} ({e})"),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn died(&self, what: &str, how: &str) -> Failure {
        Failure {
            message: format!(
                "the torch worker serving this run could not run the {what}: {how} (its log: {}; \
                 HCPIPE_TORCH_SERVER=0 runs one worker process per stage instead)",
                self.log.display()
            ),
            log_tail: tail(&self.log, 20),
            log: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wanted_by;

    #[test]
    fn every_local_run_is_served_unless_turned_off() {
        assert!(wanted_by(None), "the default, GPU or not");
        assert!(wanted_by(Some("1")));
        assert!(!wanted_by(Some("0")));
        assert!(!wanted_by(Some(" 0\n")));
    }
}
