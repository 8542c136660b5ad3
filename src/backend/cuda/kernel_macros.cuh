// Loop-unrolling hints for kernel sources that also compile for the host (the emulation tests of
// tests/cuda/cuda_emu.h): nvcc gets the pragma, the host compiler nothing.
#pragma once

#if defined(__CUDACC__)
#define PAGODA_UNROLL _Pragma("unroll")
#define PAGODA_UNROLL16 _Pragma("unroll 16")
#else
#define PAGODA_UNROLL
#define PAGODA_UNROLL16
#endif
