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
// cuda_common.h's kernel_launch: <<<>>>, or a programmatic dependent launch (PAGODA_CUDA_PDL).
#define PAGODA_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::pagoda::cuda::kernel_launch(grid, block, shared_bytes, stream, __VA_ARGS__)
#endif

// The first statement of every kernel. A kernel may be launched as a programmatic dependent
// launch (Hopper and newer, PAGODA_CUDA_PDL=on): its blocks may then be scheduled before the
// previous kernel on the stream has finished, and griddepcontrol.wait blocks until that kernel's
// memory operations are complete and visible. Without such a launch it returns at once; older
// targets (and the host emulation) have nothing to wait for.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PAGODA_GRID_DEPENDENCY_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define PAGODA_GRID_DEPENDENCY_WAIT() \
  do {                                \
  } while (0)
#endif
