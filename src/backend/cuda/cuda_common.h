// Error checks shared by the CUDA backend's host code (.cc) and kernel launchers (.cu). Every
// CUDA runtime / cuBLASLt call is checked; a failure throws pagoda::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <utility>

#include "backend/cuda/kernel_macros.cuh"
#include "base/error.h"

#define PAGODA_CUDA_CHECK(expr)                                                                         \
  do {                                                                                                  \
    const cudaError_t pagoda_cuda_err_ = (expr);                                                        \
    if (pagoda_cuda_err_ != cudaSuccess)                                                                \
      ::pagoda::fail("CUDA error ", cudaGetErrorName(pagoda_cuda_err_), " (", cudaGetErrorString(pagoda_cuda_err_), \
                     ") in ", #expr, " at ", __FILE__, ":", __LINE__);                                 \
  } while (0)

// After a kernel launch: reports launch-configuration errors (does not synchronise).
#define PAGODA_CUDA_CHECK_LAUNCH() PAGODA_CUDA_CHECK(cudaGetLastError())

namespace pagoda::cuda {

// Whether PAGODA_LAUNCH makes programmatic dependent launches (set by the backend from
// PAGODA_CUDA_PDL, on devices of compute capability 9.0 and newer). Every kernel starts with
// PAGODA_GRID_DEPENDENCY_WAIT(), so a kernel launched this way still reads what the previous one
// wrote; what it gains is that its launch overlaps the previous kernel's end (the gap between
// two small kernels of a decode step).
inline std::atomic<bool>& programmatic_launch() {
  static std::atomic<bool> on{false};
  return on;
}

#if defined(__CUDACC__) && !defined(PAGODA_CUDA_EMULATION)  // nvcc: <<<>>> and the launch API
template <class... P>
struct KernelLaunch {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  void (*kernel)(P...);

  template <class... A>
  void operator()(A&&... args) const {
    if (!programmatic_launch().load(std::memory_order_relaxed)) {
      kernel<<<grid, block, shared_bytes, stream>>>(std::forward<A>(args)...);
      return;
    }
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    // An error is reported by the PAGODA_CUDA_CHECK_LAUNCH() after the launch as well.
    PAGODA_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<P>(std::forward<A>(args))...));
  }
};

template <class... P>
KernelLaunch<P...> kernel_launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                                 void (*kernel)(P...)) {
  return KernelLaunch<P...>{grid, block, shared_bytes, stream, kernel};
}
#endif

}  // namespace pagoda::cuda
