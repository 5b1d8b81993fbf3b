// The libtorch calls that tch 0.24 does not bind, for the training loop
// (src/train.rs, through src/fast_step.rs and src/rng.rs):
//
// - `at::_fused_adam_`: the whole Adam update of every parameter in one
//   multi-tensor kernel (torch.optim.Adam(fused=True)); tch's `nn::Adam` runs
//   libtorch's per-parameter optimiser, a dozen kernels per parameter;
// - `at::cuda::CUDAGraph`: capture one training step (forward, backward,
//   Adam) once and replay it, so each step costs one graph launch instead of
//   a few hundred kernel launches (the lab's networks are so small that
//   launches, not arithmetic, bound a step on a GPU);
// - a CPU generator of a job's own (`at::Generator`, and `bernoulli_` with
//   it): in a `--serve` worker several jobs train at once, and libtorch's
//   default CPU generator is one per process, so a job drawing its dropout
//   masks from it would get numbers that depend on the other jobs.
//
// tch passes tensors to C as `torch::Tensor *` (torch-sys's torch_api.h:
// `typedef torch::Tensor *tensor`), so the pointers are used as they are.
// Every function returns NULL or a malloc'd error text for hc_free_error: no
// C++ exception may cross into Rust.
//
// Built by build.rs with the cc crate, as torch-sys builds its own glue;
// HCPIPE_WITH_CUDA is defined when the libtorch in use ships CUDA (then the
// CUDA runtime headers of the wheel's nvidia packages are on the include path).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

#ifdef HCPIPE_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace {

char *error_text(const char *what) {
  char *copy = strdup(what);
  return copy != nullptr ? copy : strdup("out of memory");
}

template <typename F> char *guarded(F body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception &e) {
    return error_text(e.what());
  } catch (...) {
    return error_text("unknown C++ exception");
  }
}

std::vector<at::Tensor> gather(at::Tensor *const *tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

}  // namespace

extern "C" {

void hc_free_error(char *error) { free(error); }

int hc_cuda_compiled(void) {
#ifdef HCPIPE_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

// One Adam step over n parameters, as torch.optim.Adam(fused=True) takes it:
// `step` (a float32 scalar tensor on the parameters' device, shared by all of
// them) is incremented first, then every parameter is updated in one kernel.
// amsgrad and maximize are off, as in the lab.
char *hc_fused_adam(at::Tensor *const *params, at::Tensor *const *grads,
                    at::Tensor *const *exp_avgs,
                    at::Tensor *const *exp_avg_sqs, at::Tensor *step,
                    size_t n, double lr, double beta1, double beta2,
                    double weight_decay, double eps) {
  return guarded([&] {
    std::vector<at::Tensor> p = gather(params, n), g = gather(grads, n),
                            m = gather(exp_avgs, n),
                            v = gather(exp_avg_sqs, n);
    std::vector<at::Tensor> steps(n, *step);
    step->add_(1);
    at::_fused_adam_(p, g, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, beta1,
                     beta2, weight_decay, eps, /*amsgrad=*/false,
                     /*maximize=*/false);
  });
}

// ---- A CPU generator of one job's own (src/rng.rs).

struct hc_generator;

// A copy of libtorch's default CPU generator as it stands now: it draws the
// numbers the default one would draw next, without touching it. (Under the
// generator's own lock: another thread may be drawing from it.)
char *hc_generator_copy_default(hc_generator **out) {
  return guarded([&] {
    at::Generator def = at::detail::getDefaultCPUGenerator();  // a handle
    std::lock_guard<std::mutex> lock(def.mutex());
    *out = reinterpret_cast<hc_generator *>(new at::Generator(def.clone()));
  });
}

void hc_generator_free(hc_generator *gen) {
  delete reinterpret_cast<at::Generator *>(gen);
}

// `at::dropout(input, p, /*train=*/true)` on the CPU, its mask drawn from
// `gen`: the same steps as ATen's CPU path (native/Dropout.cpp,
// `_dropout_impl`: a Bernoulli(1 - p) mask, divided by 1 - p, times the
// input), so with a generator in the same state the bytes are the same;
// autograd sees a product with a constant mask, as it does there. 0 < p < 1.
char *hc_dropout(hc_generator *gen, at::Tensor *input, double p,
                 at::Tensor **out) {
  return guarded([&] {
    const at::Generator &g = *reinterpret_cast<at::Generator *>(gen);
    at::Tensor noise = at::empty_like(*input, LEGACY_CONTIGUOUS_MEMORY_FORMAT);
    noise.bernoulli_(1 - p, g);
    noise.div_(1 - p);
    *out = new at::Tensor(input->mul(noise));
  });
}

// libtorch's intra-op threads for the calling thread. With the OpenMP
// backend the count is per thread (OpenMP's nthreads ICV, MKL's local
// count), but a thread's first parallel call resets it to the last count
// any thread set (`at::internal::lazy_init_num_threads`): so that first
// call is made here, before the count is set. Jobs on other threads keep
// theirs.
char *hc_set_threads(int threads) {
  return guarded([&] {
    (void)at::get_num_threads();
    at::set_num_threads(threads);
  });
}

// ---- A side stream: CUDA graphs cannot be captured on the default stream.

struct hc_stream;

// Makes a stream from libtorch's pool the calling thread's current stream;
// the new stream first waits for the work already queued on the previous one
// (weights, loaded data), through an event: other threads' work is not waited
// for (a `--serve` worker runs several jobs at once).
char *hc_stream_enter(hc_stream **out) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    auto *previous = new c10::cuda::CUDAStream(c10::cuda::getCurrentCUDAStream());
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    // c10's device-generic event (ATen's CUDAEvent.h pulls in cuda_fp16.h,
    // whose CCCL headers the torch wheel does not ship).
    c10::Event ready(c10::DeviceType::CUDA);
    ready.record(previous->unwrap());
    ready.block(side.unwrap());
    c10::cuda::setCurrentCUDAStream(side);
    *out = reinterpret_cast<hc_stream *>(previous);
#else
    (void)out;
    throw std::runtime_error("this hcpipe-torch was built without CUDA");
#endif
  });
}

// Waits for the side stream's work and restores the previous stream.
char *hc_stream_exit(hc_stream *saved) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    auto *previous = reinterpret_cast<c10::cuda::CUDAStream *>(saved);
    c10::cuda::getCurrentCUDAStream().synchronize();
    c10::cuda::setCurrentCUDAStream(*previous);
    delete previous;
#else
    (void)saved;
#endif
  });
}

// ---- CUDA graphs.

struct hc_graph;

char *hc_graph_new(hc_graph **out) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    *out = reinterpret_cast<hc_graph *>(new at::cuda::CUDAGraph());
#else
    (void)out;
    throw std::runtime_error("this hcpipe-torch was built without CUDA");
#endif
  });
}

void hc_graph_free(hc_graph *graph) {
#ifdef HCPIPE_WITH_CUDA
  delete reinterpret_cast<at::cuda::CUDAGraph *>(graph);
#else
  (void)graph;
#endif
}

// Starts recording the calling thread's current (side) stream: kernels
// queued until hc_graph_capture_end are recorded, not run. Thread-local
// capture mode: only this thread is barred from calls that would break the
// capture, so other jobs' threads in a `--serve` worker may allocate, copy
// and synchronise meanwhile (the default, global mode would make them fail).
char *hc_graph_capture_begin(hc_graph *graph) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    reinterpret_cast<at::cuda::CUDAGraph *>(graph)->capture_begin(
        /*pool=*/{0, 0}, cudaStreamCaptureModeThreadLocal);
#else
    (void)graph;
#endif
  });
}

char *hc_graph_capture_end(hc_graph *graph) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    reinterpret_cast<at::cuda::CUDAGraph *>(graph)->capture_end();
#else
    (void)graph;
#endif
  });
}

// Queues the recorded work on the current stream.
char *hc_graph_replay(hc_graph *graph) {
  return guarded([&] {
#ifdef HCPIPE_WITH_CUDA
    reinterpret_cast<at::cuda::CUDAGraph *>(graph)->replay();
#else
    (void)graph;
#endif
  });
}

}  // extern "C"
