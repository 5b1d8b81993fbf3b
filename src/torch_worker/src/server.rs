//! `hcpipe-torch --serve SOCKET`: every torch stage of a run in one process.
//!
//! The runner starts this for every local run with torch stages to run
//! (src/exec/torch_server.rs says why: one libtorch start per run instead of
//! one per stage; on a GPU, kernels of separate processes never overlap)
//! and sends one job per connection: a JSON `Request` line, answered by one
//! JSON `Response` line once the job is done. Each job runs on its own
//! thread, so on its own CUDA stream (`fast_step::SideStream`). A runner
//! that hangs up cancels its job: the next `cancel::check_cancelled` in the
//! training loop stops it.
//!
//! What jobs share in one process, and how it is kept harmless:
//! - libtorch's default generators: weights are initialised under a lock
//!   right after seeding (`train::seeded_store`), so a seed gives the same
//!   initial weights as a `--job` run; on the CPU, dropout then draws from a
//!   generator of the job's own that goes on where the seeded default one
//!   stood (`rng`), so a CPU job gives the same bytes as a `--job` run,
//!   whatever runs beside it. Dropout masks on the GPU draw from the shared
//!   CUDA generator, so they depend on how jobs interleave (GPU training is
//!   not bit-reproducible anyway: cuDNN's reductions are not);
//! - CUDA graph capture: thread-local capture mode, so one job capturing does
//!   not forbid another's allocations;
//! - libtorch's CPU thread count: set per job thread (`rng::set_threads`;
//!   with libtorch's OpenMP backend the count is per thread).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hcpipe::exec::torch_server::{Request, Response};

use crate::job::JobFailure;

/// Creates the CUDA context (when there is a GPU), then serves until killed.
pub fn serve(socket: &Path) -> Result<(), String> {
    if tch::Cuda::is_available() {
        // Creating the context takes a while; do it before listening, so
        // that the runner's first stage finds it ready.
        let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cuda(0)));
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    for conn in listener.incoming() {
        let conn = conn.map_err(|e| format!("accepting on {}: {e}", socket.display()))?;
        std::thread::spawn(move || serve_one(conn));
    }
    Ok(())
}

/// Runs the one job a connection asks for and answers.
fn serve_one(conn: UnixStream) {
    let Ok(reading) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let cancel = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&cancel);
            // The runner sends nothing more: a read that returns means it
            // hung up (Ctrl-C, a failed run), so the job should stop.
            std::thread::spawn(move || {
                let mut byte = [0u8; 1];
                let _ = reader.read(&mut byte);
                flag.store(true, Ordering::Relaxed);
            });
            let outcome = if std::env::var_os("HCPIPE_TORCH_FAULT_SERVED").is_some() {
                // Fault injection for the runner's tests: answer as a libtorch
                // panic would, without running the job.
                Err(JobFailure {
                    message: "internal error (injected by HCPIPE_TORCH_FAULT_SERVED)".into(),
                    internal: true,
                })
            } else {
                crate::job::run_file(&request.job, Some(cancel), request.progress.as_deref())
            };
            match outcome {
                Ok(()) => Response {
                    ok: true,
                    error: None,
                    internal: false,
                },
                Err(e) => Response {
                    ok: false,
                    error: Some(e.message),
                    internal: e.internal,
                },
            }
        }
        Err(e) => Response {
            ok: false,
            error: Some(format!("unreadable request `{}`: {e}", line.trim())),
            internal: false,
        },
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = (&conn).write_all(text.as_bytes());
    }
}
