//! `hcpipe-torch`: runs one torch stage for the hcpipe runner.
//!
//! `hcpipe-torch --job JOB.json` runs the job and exits 0, or prints one
//! error paragraph on stderr and exits 1; `--version` says which libtorch it
//! links and whether CUDA is usable.

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
    /// Print the worker and libtorch versions and whether CUDA is available.
    #[arg(long)]
    version: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.version {
        println!("{}", hcpipe_torch::job::version_line());
        return ExitCode::SUCCESS;
    }
    let Some(path) = args.job else {
        eprintln!("hcpipe-torch: nothing to do; pass `--job JOB.json` (the runner does this for torch stages) or `--version`");
        return ExitCode::from(2);
    };
    // tch surfaces some libtorch errors as panics; we validate inputs first,
    // so one reaching here is a bug, reported as such instead of a backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        let job = hcpipe_torch::job::read(&path)?;
        hcpipe_torch::job::execute(&job).map_err(|e| {
            // Say which stage failed, unless the message already does.
            let text = e.to_string();
            let stage = format!("stage `{}`", job.stage);
            if text.contains(&stage) {
                hcpipe::ops::OpError::Msg(format!("{text} (op `{}`)", job.op))
            } else {
                hcpipe::ops::OpError::Msg(format!("{stage} (op `{}`): {text}", job.op))
            }
        })
    });
    match outcome {
        Ok(Ok(_)) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("hcpipe-torch: {e}");
            ExitCode::from(1)
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            eprintln!(
                "hcpipe-torch: internal error while running {} (bug, please report with the job file): {what}",
                path.display()
            );
            ExitCode::from(1)
        }
    }
}
