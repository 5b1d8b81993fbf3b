//! Picks the device a job runs on and sizes libtorch's CPU thread pool.

use hcpipe::ops::torch_params::DeviceChoice;
use tch::Device;

use crate::error::{msg, Result};

/// CUDA when asked for or available (`auto`), else the CPU with `threads`
/// intra-op threads. `cuda` without a visible GPU is an error, not a silent
/// CPU run: a pipeline that asks for a GPU should not take 50× longer.
pub fn pick(choice: DeviceChoice, threads: usize) -> Result<Device> {
    // libtorch's default is one thread per core; a stage gets `resources.cpu`
    // (for this job's thread only: a `--serve` worker runs several jobs).
    crate::rng::set_threads(threads)?;
    let cuda = tch::Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(msg(
            "params ask for `device: cuda` but libtorch sees no CUDA device; run the stage on a \
             GPU node (e.g. `resources.gpu: 1`), or set `device: auto` or `cpu`",
        )),
    }
}

/// How metrics name a device.
pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
