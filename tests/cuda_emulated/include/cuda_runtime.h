// The host emulation of the CUDA runtime API that the CUDA backend uses (tests/cuda_emulated):
// with this folder first on the include path, src/backend/cuda/*.cu and cuda_backend.cc compile
// as host C++ and run in CI, kernels included (tests/cuda/cuda_emu.h runs them, one fiber per
// CUDA thread). What it models, and checks, of the real runtime:
//  - device memory is host memory, tracked: cudaMalloc fills new memory with 0xFF bytes (NaN as
//    BF16 / F32: nothing may rely on fresh memory being zero), copies and memsets must stay
//    inside one allocation of the right kind, frees must name a live allocation;
//  - streams are queues: kernel launches, async copies, memsets, event records and cuBLASLt
//    matmuls run only when the host waits (cudaStreamSynchronize, cudaEventSynchronize, a copy
//    to pageable host memory, cudaStreamDestroy), as late as a GPU may run them. A copy from
//    pageable host memory takes its bytes at the call (the runtime stages them); from pinned
//    memory (cudaHostAlloc) when it runs, so a caller that reuses a pinned buffer too early sees
//    the bytes change, as it would on a GPU;
//  - stream capture (cudaStreamBeginCapture .. EndCapture) records the enqueued work into a
//    graph that cudaGraphLaunch enqueues again, with the arguments of the capture. During a
//    capture the calls that the CUDA programming guide lists as unsafe (allocation, freeing,
//    synchronisation, copies involving pageable memory) fail with
//    cudaErrorStreamCaptureUnsupported and invalidate the capture;
//  - launch configurations are checked as the runtime does (block size, grid limits, dynamic
//    shared memory) and fail with cudaErrorInvalidConfiguration, reported by cudaGetLastError.
// One emulated device ("Emulated H100", sm_90, 132 SMs, memory PAGODA_EMULATED_GPU_MIB, default
// 2048 MiB). Every call takes one process-wide lock: the emulated device runs one thing at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <tuple>
#include <utility>

#include "../../cuda/cuda_emu.h"

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureUnmatched = 903,
};
using cudaError = cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};
enum cudaDataType_t {
  CUDA_R_32F = 0,
  CUDA_R_16F = 2,
  CUDA_R_16BF = 14,
};

constexpr unsigned cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned cudaEventDefault = 0, cudaEventDisableTiming = 2;
constexpr unsigned cudaHostAllocDefault = 0;

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraphExec_st*;
struct CUgraphNode_st;
using cudaGraphNode_t = CUgraphNode_st*;

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int maxThreadsPerBlock;
  int multiProcessorCount;
  int major;
  int minor;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
// Only the count: nodes must be null (*num_nodes = the captured launches and copies).
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* num_nodes);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);

namespace cuda_emu {

// Enqueues work on a stream (or into the graph it is capturing); runs at once on the legacy
// default stream (nullptr). Used by the launcher below and by the cuBLASLt emulation.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);
// Checks a launch configuration as the runtime does; on failure records the error that
// cudaGetLastError returns and returns false.
bool check_launch(dim3 grid, dim3 block, size_t shared_bytes);
// Whether [p, p + bytes) lies inside one live device allocation.
bool is_device_range(const void* p, size_t bytes);

// kernel<<<grid, block, shared_bytes, stream>>>(args...): the arguments are converted to the
// kernel's parameter types and copied at the launch, as the runtime copies them.
template <class... P>
struct Launcher {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  void (*kernel)(P...);

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launch: wrong number of arguments");
    if (!check_launch(grid, block, shared_bytes)) return;
    std::tuple<P...> params(static_cast<P>(std::forward<A>(args))...);
    const Dim3 g{grid.x, grid.y, grid.z}, b{block.x, block.y, block.z};
    const size_t shared = shared_bytes;
    void (*fn)(P...) = kernel;
    enqueue(stream, [=] {
      launch(
          g, b, [&] { std::apply(fn, params); }, shared);
    });
  }
};

template <class... P>
Launcher<P...> launcher(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, void (*kernel)(P...)) {
  return Launcher<P...>{grid, block, shared_bytes, stream, kernel};
}

}  // namespace cuda_emu
