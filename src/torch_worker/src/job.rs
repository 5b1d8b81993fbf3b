//! The worker's side of the runner contract: read a [`JobSpec`], run its op,
//! write `metrics.json` into `out`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hcpipe::ops::{JobSpec, Metrics, OpCtx, OpError};

use crate::error::{msg, Result};

/// Why a job failed: the one paragraph the runner shows, and whether it was
/// an internal error (a panic: inputs are validated first, so a bug, often a
/// libtorch error tch surfaces as a panic) rather than the stage's own.
#[derive(Debug)]
pub struct JobFailure {
    pub message: String,
    pub internal: bool,
}

/// Runs the job in `path` (read, execute, metrics) on this thread, with
/// `cancel` as its cancellation flag, reporting its epochs to `progress`.
pub fn run_file(
    path: &Path,
    cancel: Option<Arc<AtomicBool>>,
    progress: Option<&Path>,
) -> std::result::Result<(), JobFailure> {
    let watching = crate::cancel::watch(cancel);
    let _reporting = crate::progress::report_to(progress);
    let outcome = std::panic::catch_unwind(|| {
        let job = read(path)?;
        execute(&job).map_err(|e| {
            // Say which stage failed, unless the message already does.
            let text = e.to_string();
            let stage = format!("stage `{}`", job.stage);
            if text.contains(&stage) {
                OpError::Msg(format!("{text} (op `{}`)", job.op))
            } else {
                OpError::Msg(format!("{stage} (op `{}`): {text}", job.op))
            }
        })
    });
    drop(watching);
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(JobFailure {
            message: e.to_string(),
            internal: false,
        }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(JobFailure {
                message: format!(
                    "internal error while running {} (bug, please report with the job file): \
                     {what}",
                    path.display()
                ),
                internal: true,
            })
        }
    }
}

/// Reads and parses a job file.
pub fn read(path: &Path) -> Result<JobSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| OpError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        msg(format!(
            "{}: not an hcpipe job file ({e}); the runner writes these, so run the stage through \
             `hcpipe run`, or check the file was not truncated",
            path.display()
        ))
    })
}

/// Runs the job's op and writes its metrics to `out/metrics.json`.
pub fn execute(job: &JobSpec) -> Result<Metrics> {
    std::fs::create_dir_all(&job.out).map_err(|e| OpError::io(&job.out, e))?;
    let ctx = OpCtx {
        stage: &job.stage,
        params: &job.params,
        inputs: &job.inputs,
        out: &job.out,
        threads: job.threads.max(1),
        scratch: None,
    };
    let mut metrics = crate::ops::run(&job.op, &ctx)?;
    // Times stay out of the artifact (see hcpipe::ops::VOLATILE_METRICS).
    let mut timings = Metrics::new();
    for name in hcpipe::ops::VOLATILE_METRICS {
        if let Some(v) = metrics.remove(*name) {
            timings.insert(name.to_string(), v);
        }
    }
    let path = job.out.join(hcpipe::artifact::metrics::FILE);
    hcpipe::artifact::metrics::write(&path, &metrics)?;
    if let Some(beside) = job.out.parent() {
        let text = serde_json::to_string(&timings).unwrap_or_default();
        let _ = std::fs::write(beside.join(hcpipe::ops::TIMINGS_FILE), text);
    }
    metrics.extend(timings);
    Ok(metrics)
}

/// `--version`: the worker, its libtorch, and what CUDA it sees.
pub fn version_line() -> String {
    let cuda = if tch::Cuda::is_available() {
        format!(
            "available ({} device(s), cuDNN {})",
            tch::Cuda::device_count(),
            tch::Cuda::cudnn_is_available()
        )
    } else {
        "not available".to_string()
    };
    format!(
        "hcpipe-torch {} (libtorch {}; CUDA {cuda})",
        env!("CARGO_PKG_VERSION"),
        crate::LIBTORCH_VERSION
    )
}
