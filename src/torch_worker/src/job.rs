//! The worker's side of the runner contract: read a [`JobSpec`], run its op,
//! write `metrics.json` into `out`.

use std::path::Path;

use hcpipe::ops::{JobSpec, Metrics, OpCtx, OpError};

use crate::error::{msg, Result};

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
    };
    let metrics = crate::ops::run(&job.op, &ctx)?;
    let path = job.out.join("metrics.json");
    let text = serde_json::to_string_pretty(&metrics)
        .map_err(|e| msg(format!("encoding metrics: {e}")))?;
    crate::tsv::write(&path, &(text + "\n"))?;
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
