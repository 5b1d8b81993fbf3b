//! A job's own CPU random generator, and libtorch's thread count per job.
//!
//! A `--serve` worker runs several jobs at once, each on its own thread,
//! in one process. Two pieces of libtorch state are per process by default
//! and would make a job's result depend on what else runs beside it:
//! - the default CPU generator: the CNN's dropout masks drawn from it would
//!   interleave with another job's draws. A job instead draws them from a
//!   [`JobGenerator`]: a copy of the default generator taken right after
//!   the job seeded it and initialised its weights (under the lock of
//!   `train::seeded_store`), so it draws exactly the numbers a worker
//!   process of its own would have drawn: same seed, same bytes, alone or
//!   beside other jobs, in its own process or in a shared one;
//! - the intra-op thread count: [`set_threads`] sets it for the calling
//!   thread only (see csrc/fast_step.cpp).
//!
//! Weight initialisation still uses the default generator, re-seeded under
//! that lock; nothing else in a job draws from libtorch's CPU generator
//! (shuffling and shifts come from the job's ChaCha8 stream, `train`).

use std::ffi::c_char;
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tch::{Device, Tensor};
use torch_sys::C_tensor;

use crate::error::{shim_result as check, Result};

#[repr(C)]
struct RawGenerator {
    _private: [u8; 0],
}

extern "C" {
    fn hc_generator_copy_default(out: *mut *mut RawGenerator) -> *mut c_char;
    fn hc_generator_free(gen: *mut RawGenerator);
    fn hc_dropout(
        gen: *mut RawGenerator,
        input: *mut C_tensor,
        p: f64,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn hc_set_threads(threads: i32) -> *mut c_char;
}

/// Held while a thread seeds or draws from libtorch's default generators
/// (weight initialisation; tests that draw), so that no other thread's
/// draws come in between.
pub fn default_generator() -> MutexGuard<'static, ()> {
    static DEFAULT: Mutex<()> = Mutex::new(());
    DEFAULT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A CPU generator of one job's own (an `at::Generator`).
pub struct JobGenerator(*mut RawGenerator);

// SAFETY: an `at::Generator` may be used from any thread; libtorch's
// samplers lock its mutex while they draw.
unsafe impl Send for JobGenerator {}
unsafe impl Sync for JobGenerator {}

impl std::fmt::Debug for JobGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobGenerator")
    }
}

impl JobGenerator {
    /// A copy of libtorch's default CPU generator in its current state: it
    /// goes on with the numbers the default one would give next.
    pub fn copy_default() -> Result<JobGenerator> {
        let mut raw = ptr::null_mut();
        // SAFETY: `raw` is written by the shim on success.
        check(
            unsafe { hc_generator_copy_default(&mut raw) },
            "copying libtorch's CPU generator",
        )?;
        Ok(JobGenerator(raw))
    }

    /// `x.dropout(p, true)` with the mask drawn from this generator; `x` on
    /// the CPU, 0 < `p` < 1. Same bytes as libtorch's own dropout drawing
    /// from a generator in the same state.
    pub fn dropout(&self, x: &Tensor, p: f64) -> Result<Tensor> {
        let mut out = ptr::null_mut();
        // SAFETY: `self.0` is live; `x` is a live tensor the shim only reads;
        // on success `out` is a new tensor we own from here on.
        check(
            unsafe { hc_dropout(self.0, x.as_ptr() as *mut C_tensor, p, &mut out) },
            "dropout",
        )?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

impl Drop for JobGenerator {
    fn drop(&mut self) {
        // SAFETY: created by hc_generator_copy_default, freed once.
        unsafe { hc_generator_free(self.0) }
    }
}

/// Training-mode dropout as the lab's `nn.Dropout(p)`: on the CPU with the
/// job's generator when it has one; else libtorch's (on a GPU, the CUDA
/// generator, which captured graphs need; GPU training is not
/// bit-reproducible anyway).
pub fn dropout(x: &Tensor, p: f64, train: bool, gen: Option<&JobGenerator>) -> Tensor {
    match gen {
        Some(gen) if train && x.device() == Device::Cpu && p > 0.0 && p < 1.0 => gen
            .dropout(x, p)
            // A forward pass has no way to return an error; the job's
            // catch_unwind reports this as an internal error.
            .unwrap_or_else(|e| panic!("{e}")),
        _ => x.dropout(p, train),
    }
}

/// libtorch's intra-op thread count for the calling thread (a job's), leaving
/// other threads' counts alone.
pub fn set_threads(threads: usize) -> Result<()> {
    let n = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
    // SAFETY: plain call.
    check(
        unsafe { hc_set_threads(n) },
        "setting libtorch's thread count",
    )
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    /// The job's dropout gives the bytes of libtorch's, from the same state,
    /// and draws from its own copy: draws from the default generator in
    /// between change nothing.
    #[test]
    fn dropout_matches_libtorchs_and_keeps_to_its_own_generator() {
        let _default = default_generator();
        let x = Tensor::arange(1000, (Kind::Float, Device::Cpu)).reshape([10, 100]) + 1.0;
        tch::manual_seed(7);
        let gen = JobGenerator::copy_default().unwrap();
        let reference = [x.dropout(0.5, true), x.dropout(0.5, true)];
        tch::manual_seed(99);
        let first = gen.dropout(&x, 0.5).unwrap();
        let _ = Tensor::rand([64], (Kind::Float, Device::Cpu));
        let second = dropout(&x, 0.5, true, Some(&gen));
        assert!(first.equal(&reference[0]), "first mask differs");
        assert!(second.equal(&reference[1]), "second mask differs");
        assert!(!first.equal(&second), "two draws, two masks");
        let kept = first.ne(0.0).sum(Kind::Int64).int64_value(&[]);
        assert!((300..700).contains(&kept), "{kept} of 1000 kept");
        assert!(dropout(&x, 0.5, false, Some(&gen)).equal(&x), "eval mode");
    }

    /// A thread's count stays its own while another thread sets a different one.
    #[test]
    fn thread_counts_are_per_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let one = std::thread::spawn(move || {
            set_threads(1).unwrap();
            tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // A parallel op, then the count again.
            let _ = Tensor::rand([1 << 16], (Kind::Float, Device::Cpu)).sum(Kind::Float);
            tch::get_num_threads()
        });
        rx.recv().unwrap();
        let three = std::thread::spawn(|| {
            set_threads(3).unwrap();
            let _ = Tensor::rand([1 << 16], (Kind::Float, Device::Cpu)).sum(Kind::Float);
            tch::get_num_threads()
        });
        assert_eq!(three.join().unwrap(), 3);
        go_tx.send(()).unwrap();
        assert_eq!(one.join().unwrap(), 1);
    }
}
