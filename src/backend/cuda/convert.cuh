// Device helpers shared by the CUDA kernels: BF16 / F16 / F32 element conversions (FP32 math,
// round-to-nearest-even stores), loads of run-time-typed weights, and the activation functions.
//
// Under tests/cuda/cuda_emu.h (a host build of a kernel, PAGODA_CUDA_EMULATION) the BF16 / F16
// types and conversions come from the emulator instead of the CUDA headers.
#pragma once

#if !defined(PAGODA_CUDA_EMULATION)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

#include <cmath>
#include <cstdint>

#include "backend/cuda/kernel_macros.cuh"
#include "base/dtype.h"

namespace pagoda::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }  // round to nearest even

// Element i of a weight / bias / gate whose dtype is only known at run time (BF16, F16 or F32;
// anything else was rejected on the host). The switch is uniform across a warp.
__device__ __forceinline__ float load_any(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kBF16: return __bfloat162float(static_cast<const bf16*>(p)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ float nan_f() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

}  // namespace pagoda::cuda
