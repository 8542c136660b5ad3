// Error checks shared by the CUDA backend's host code (.cc) and kernel launchers (.cu). Every
// CUDA runtime / cuBLASLt call is checked; a failure throws pagoda::Error naming the call.
#pragma once

#include <cuda_runtime.h>

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
