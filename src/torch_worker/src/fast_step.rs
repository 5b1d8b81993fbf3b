//! Fast training steps: fused Adam and CUDA graphs, over `csrc/fast_step.cpp`.
//!
//! tch 0.24 binds neither `at::_fused_adam_` nor `at::cuda::CUDAGraph`, so a
//! small C++ file (compiled by build.rs against the same libtorch) exposes
//! them with a C ABI. The lab's networks are tiny: on a GPU a training step is
//! bound by kernel launches (a few hundred per step with libtorch's
//! per-parameter Adam), not arithmetic. [`FusedAdam`] updates every
//! parameter in one kernel; [`CudaGraph`] records a whole step (forward,
//! backward, Adam) once and replays it with one launch.
//!
//! Graphs only run on CUDA, on a [`SideStream`] (capture is refused on the
//! default stream). `HCPIPE_CUDA_GRAPHS=0` turns them off (eager steps), to
//! measure what they bring or to rule them out when debugging. (cuDNN's
//! benchmark mode was tried too and measured no faster: BENCHMARKS.md.)

use std::ffi::c_char;
use std::ptr;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use tch::nn::VarStore;
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::{shim_result as check, Result};

#[repr(C)]
struct RawStream {
    _private: [u8; 0],
}

#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

extern "C" {
    fn hc_cuda_compiled() -> i32;
    #[allow(clippy::too_many_arguments)]
    fn hc_fused_adam(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        step: *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn hc_stream_enter(out: *mut *mut RawStream) -> *mut c_char;
    fn hc_stream_exit(saved: *mut RawStream) -> *mut c_char;
    fn hc_graph_new(out: *mut *mut RawGraph) -> *mut c_char;
    fn hc_graph_free(graph: *mut RawGraph);
    fn hc_graph_capture_begin(graph: *mut RawGraph) -> *mut c_char;
    fn hc_graph_capture_end(graph: *mut RawGraph) -> *mut c_char;
    fn hc_graph_replay(graph: *mut RawGraph) -> *mut c_char;
}

/// Whether training on CUDA should capture graphs: the shim was built with
/// CUDA and `HCPIPE_CUDA_GRAPHS` is not `0`.
pub fn graphs_enabled() -> bool {
    // SAFETY: no arguments, no state.
    let compiled = unsafe { hc_cuda_compiled() } == 1;
    compiled && std::env::var("HCPIPE_CUDA_GRAPHS").map_or(true, |v| v.trim() != "0")
}

/// Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay: PyTorch's defaults, the
/// lab's) with every parameter updated by one fused kernel, as
/// `torch.optim.Adam(fused=True)`. Same update rule as `tch::nn::Adam`.
pub struct FusedAdam {
    params: Vec<Tensor>,
    exp_avgs: Vec<Tensor>,
    exp_avg_sqs: Vec<Tensor>,
    /// Steps taken, float32 on the parameters' device (so a captured graph
    /// increments it on the device).
    step: Tensor,
    lr: f64,
}

impl FusedAdam {
    pub fn new(vs: &VarStore, lr: f64) -> FusedAdam {
        let params = vs.trainable_variables();
        let zeros = |p: &Tensor| p.zeros_like();
        FusedAdam {
            exp_avgs: params.iter().map(zeros).collect(),
            exp_avg_sqs: params.iter().map(zeros).collect(),
            step: Tensor::zeros([], (Kind::Float, vs.device())),
            params,
            lr,
        }
    }

    /// Zeroes the gradients in place (their buffers stay put: a captured
    /// graph keeps writing into the same memory).
    pub fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// One update of every parameter that has a gradient (as PyTorch, a
    /// parameter the loss did not reach is left alone).
    pub fn step(&mut self) -> Result<()> {
        let mut picked: [Vec<*mut C_tensor>; 4] = Default::default();
        let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).collect();
        for (i, g) in grads.iter().enumerate() {
            if g.defined() {
                picked[0].push(self.params[i].as_ptr() as *mut C_tensor);
                picked[1].push(g.as_ptr() as *mut C_tensor);
                picked[2].push(self.exp_avgs[i].as_ptr() as *mut C_tensor);
                picked[3].push(self.exp_avg_sqs[i].as_ptr() as *mut C_tensor);
            }
        }
        if picked[0].is_empty() {
            return Ok(());
        }
        let step = self.step.as_mut_ptr();
        let [p, g, m, v] = &picked;
        tch::no_grad(|| {
            // SAFETY: every pointer is a live tch tensor (held by `self` or
            // `grads` for the whole call); the shim only reads the pointers.
            let error = unsafe {
                hc_fused_adam(
                    p.as_ptr(),
                    g.as_ptr(),
                    m.as_ptr(),
                    v.as_ptr(),
                    step,
                    p.len(),
                    self.lr,
                    0.9,
                    0.999,
                    0.0,
                    1e-8,
                )
            };
            check(error, "fused Adam step")
        })
    }

    /// Steps taken so far (reads the device counter: a host sync on CUDA).
    pub fn steps(&self) -> i64 {
        self.step.double_value(&[]) as i64
    }
}

/// A libtorch pool stream made the current CUDA stream of this thread, until
/// [`SideStream::exit`] (or drop) waits for it and restores the previous one.
pub struct SideStream(*mut RawStream);

impl SideStream {
    /// Switches, the side stream first waiting for what the current stream
    /// has queued (weights, data).
    pub fn enter() -> Result<SideStream> {
        let mut saved = ptr::null_mut();
        // SAFETY: `saved` is written by the shim on success.
        check(
            unsafe { hc_stream_enter(&mut saved) },
            "entering a CUDA side stream",
        )?;
        Ok(SideStream(saved))
    }

    /// Waits for the side stream's work and restores the previous stream.
    pub fn exit(mut self) -> Result<()> {
        let saved = std::mem::replace(&mut self.0, ptr::null_mut());
        // SAFETY: `saved` came from hc_stream_enter and is consumed once.
        check(
            unsafe { hc_stream_exit(saved) },
            "leaving the CUDA side stream",
        )
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: as in `exit`; an error here has nowhere to go.
            let error = unsafe { hc_stream_exit(self.0) };
            let _ = check(error, "leaving the CUDA side stream");
        }
    }
}

/// Held for writing while a thread captures a CUDA graph; for reading by
/// work that advances libtorch's CUDA generator eagerly (dropout in training
/// mode, re-seeding). The generator is process-wide and, while any capture is
/// under way, refuses eager offset increments ("Offset increment outside
/// graph capture encountered unexpectedly"): in a `--serve` worker, one CNN
/// capturing its step while the other took an eager warm-up step failed that
/// way once in four runs on an H100. A capture takes milliseconds.
static CAPTURE: RwLock<()> = RwLock::new(());

/// Keeps graph captures out until dropped: take it around eager work that
/// draws from the CUDA generator.
pub fn outside_capture() -> RwLockReadGuard<'static, ()> {
    CAPTURE.read().unwrap_or_else(PoisonError::into_inner)
}

/// A recorded sequence of CUDA work, replayed with one launch.
pub struct CudaGraph(*mut RawGraph);

impl CudaGraph {
    /// Records the CUDA work that `body` queues on the current stream (it
    /// does not run). `body` must not synchronise with the host (no reading
    /// values back, no host-to-device copies) and must have run eagerly at
    /// least once, so that every buffer it touches exists. Captures run one
    /// at a time in the process, never beside [`outside_capture`] work.
    pub fn capture(body: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is written by the shim on success.
        check(unsafe { hc_graph_new(&mut raw) }, "creating a CUDA graph")?;
        let graph = CudaGraph(raw);
        let _alone = CAPTURE.write().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `graph.0` is a live graph for every call below.
        check(
            unsafe { hc_graph_capture_begin(graph.0) },
            "starting a CUDA graph capture",
        )?;
        let recorded = body();
        let ended = check(
            unsafe { hc_graph_capture_end(graph.0) },
            "ending a CUDA graph capture",
        );
        recorded?;
        ended?;
        Ok(graph)
    }

    /// Queues the recorded work on the current stream.
    pub fn replay(&self) -> Result<()> {
        // SAFETY: `self.0` is a live, captured graph.
        check(unsafe { hc_graph_replay(self.0) }, "replaying a CUDA graph")
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: created by hc_graph_new, freed once.
        unsafe { hc_graph_free(self.0) }
    }
}

#[cfg(test)]
mod tests {
    use tch::nn::{self, OptimizerConfig};
    use tch::{Device, Kind, Tensor};

    use super::*;

    /// Fused Adam takes the same steps as libtorch's Adam (tch's `nn::Adam`)
    /// from the same start on the same gradients, including a parameter the
    /// loss does not reach (left alone by both).
    #[test]
    fn fused_adam_matches_libtorch_adam() {
        // Draws from libtorch's default generator, which other tests check.
        let _default = crate::rng::default_generator();
        tch::manual_seed(4);
        let make = || {
            let vs = VarStore::new(Device::Cpu);
            let root = vs.root();
            let w = root.randn("w", &[5, 3], 0.0, 1.0);
            let b = root.randn("b", &[3], 0.0, 1.0);
            let unused = root.randn("unused", &[2], 0.0, 1.0);
            (vs, w, b, unused)
        };
        let (vs_a, wa, ba, ua) = make();
        let (mut vs_b, wb, bb, ub) = make();
        vs_b.copy(&vs_a).unwrap();
        let x = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let loss = |w: &Tensor, b: &Tensor| (x.matmul(w) + b).tanh().square().sum(Kind::Float);
        let mut fused = FusedAdam::new(&vs_a, 0.05);
        let mut reference = nn::Adam::default().build(&vs_b, 0.05).unwrap();
        for _ in 0..6 {
            fused.zero_grad();
            loss(&wa, &ba).backward();
            fused.step().unwrap();
            reference.backward_step(&loss(&wb, &bb));
        }
        assert_eq!(fused.steps(), 6);
        for (a, b) in [(&wa, &wb), (&ba, &bb), (&ua, &ub)] {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "parameters differ by {diff}");
        }
        assert!(!ua.grad().defined(), "the unused parameter has no gradient");
    }
}
