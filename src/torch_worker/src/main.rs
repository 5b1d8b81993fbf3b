//! `hcpipe-torch`: runs one torch stage for the hcpipe runner.
//!
//! `hcpipe-torch --job JOB.json` runs the job and exits 0, or prints one
//! error paragraph on stderr and exits 1; `--serve SOCKET` runs the jobs the
//! runner sends over a Unix socket (see `server`); `--version` says which
//! libtorch it links and whether CUDA is usable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hcpipe-torch",
    about = "hcpipe's torch worker (started by the runner, one stage per run)"
)]
struct Args {
    /// The job file the runner wrote (op, params, inputs, out folder, threads).
    #[arg(long, value_name = "JOB.json")]
    job: Option<PathBuf>,
    /// Serve jobs sent over this Unix socket, each on its own thread, until
    /// killed (the runner starts one such worker per local run).
    #[arg(long, value_name = "SOCKET", conflicts_with = "job")]
    serve: Option<PathBuf>,
    /// Print the worker and libtorch versions and whether CUDA is available.
    #[arg(long)]
    version: bool,
}

/// libtorch on the CPU allocates and frees the same activations (megabytes)
/// at every step. With glibc's defaults freed memory goes back to the kernel
/// (large blocks are mmap-ed, the heap's top is trimmed), and each step
/// faults it in again, zeroed: about half the system time of a lab stage on
/// the CPU. Kept instead: blocks up to 32 MB (glibc's maximum) come from the
/// heap, which is trimmed only beyond 512 MB free and grows 64 MB at a time.
/// Results do not depend on where memory comes from.
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let args = Args::parse();
    if args.version {
        println!("{}", hcpipe_torch::job::version_line());
        return ExitCode::SUCCESS;
    }
    // tch surfaces some libtorch errors as panics; we validate inputs first,
    // so one reaching here is a bug, reported as such instead of a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(socket) = args.serve {
        return match hcpipe_torch::server::serve(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hcpipe-torch: {e}");
                ExitCode::from(1)
            }
        };
    }
    let Some(path) = args.job else {
        eprintln!("hcpipe-torch: nothing to do; pass `--job JOB.json` (the runner does this for torch stages) or `--version`");
        return ExitCode::from(2);
    };
    // Where the runner reads this stage's epochs (see `progress`).
    let progress = std::env::var_os(hcpipe::outcome::PROGRESS_ENV).map(PathBuf::from);
    match hcpipe_torch::job::run_file(&path, None, progress.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hcpipe-torch: {}", e.message);
            ExitCode::from(1)
        }
    }
}
