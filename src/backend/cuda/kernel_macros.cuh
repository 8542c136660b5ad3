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
