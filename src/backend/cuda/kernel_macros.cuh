// Macros for kernel sources that also compile for the host (the emulation tests of
// tests/cuda/cuda_emu.h): loop-unrolling hints (nvcc gets the pragma, the host compiler nothing)
// and dynamic shared memory (the emulator's per-block buffer on the host).
#pragma once

#if defined(__CUDACC__)
#define PAGODA_UNROLL _Pragma("unroll")
#define PAGODA_UNROLL8 _Pragma("unroll 8")
#define PAGODA_UNROLL16 _Pragma("unroll 16")
#else
#define PAGODA_UNROLL
#define PAGODA_UNROLL8
#define PAGODA_UNROLL16
#endif

#if defined(PAGODA_CUDA_EMULATION)
#define PAGODA_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::cuda_emu::dynamic_shared())
#else
#define PAGODA_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// A kernel launch: PAGODA_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...) is
// kernel<<<grid, block, shared_bytes, stream>>>(args...) under nvcc; under the host emulation of
// the CUDA runtime (tests/cuda_emulated) it enqueues the launch on the emulated stream.
#if defined(PAGODA_CUDA_EMULATION)
#define PAGODA_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::cuda_emu::launcher(grid, block, shared_bytes, stream, __VA_ARGS__)
#else
#define PAGODA_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif
