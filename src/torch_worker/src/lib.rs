//! hcpipe-torch: the tensor ops of hcpipe, linked to libtorch through tch.
//!
//! The runner never links libtorch; for a stage whose op is
//! [`hcpipe::ops::OpKind::Torch`] it writes a [`hcpipe::ops::JobSpec`] and
//! starts this worker with `--job FILE` ([`job`]). The worker reproduces the
//! lab's learning code:
//! - [`models`]: the lab's CustomNetwork and AutoEncoder, their custom
//!   pooling layers and PyTorch's default initialisation;
//! - [`data`]: `crop` artifacts (patches stored with a margin for shifts);
//! - [`train`]: the lab's training loop (shuffled mini-batches, random
//!   shifts, per-epoch evaluation, best epoch by training loss);
//! - [`fast_step`]: fused Adam and CUDA graphs (a C++ shim over libtorch);
//! - [`rng`]: a CPU generator and a thread count per job, so that jobs
//!   sharing a `--serve` process do not change each other's results;
//! - [`weights`]: safetensors checkpoints with the lab's module names, so
//!   Python's `load_state_dict` reads them;
//! - [`progress`]: a line per epoch to the runner (`$HCPIPE_PROGRESS`);
//! - [`server`]: `--serve`, every torch stage of a run in one process;
//! - [`ops`]: one file per op (`train_cnn`, `evaluate`, `train_ae`,
//!   `extract_codes`).

pub mod cancel;
pub mod data;
pub mod device;
pub mod error;
pub mod fast_step;
pub mod job;
pub mod models;
pub mod ops;
pub mod progress;
pub mod rng;
pub mod server;
pub mod train;
pub mod weights;

/// The libtorch this worker was built against (from the wheel's `version.py`).
pub const LIBTORCH_VERSION: &str = env!("HCPIPE_LIBTORCH_VERSION");
