// The host emulation of the CUDA runtime and cuBLASLt (include/cuda_runtime.h, include/cublasLt.h
// say what is modelled and checked).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "include/cublasLt.h"
#include "include/cuda_runtime.h"

using Work = std::function<void()>;

struct CUgraph_st {
  std::vector<Work> nodes;
};
struct CUgraphExec_st {
  std::vector<Work> nodes;
};
struct CUstream_st {
  std::deque<Work> queue;
  CUgraph_st* capture = nullptr;  // the graph being captured, if any
  bool capture_invalidated = false;
};
struct CUevent_st {
  cudaStream_t stream = nullptr;  // where it was last recorded
  bool pending = false;           // recorded, not reached yet
  bool timing = true;             // not created with cudaEventDisableTiming
  bool recorded = false;          // a record has completed: `at` holds its time
  std::chrono::steady_clock::time_point at;
};

namespace cuda_emu {
namespace {

constexpr size_t kAlign = 256;  // cudaMalloc's alignment
constexpr int kSmCount = 132;
constexpr size_t kSharedPerBlock = 48 * 1024, kSharedPerBlockOptin = 227 * 1024;

struct Allocation {
  size_t bytes = 0;     // as requested: copies and matmul operands must stay inside
  size_t rounded = 0;   // what it takes of the device's memory
  bool pinned = false;  // cudaHostAlloc (host memory) vs cudaMalloc (device memory)
};

struct Runtime {
  std::recursive_mutex mu;
  std::map<uintptr_t, Allocation> allocations;  // by start address
  size_t device_bytes = 0;
  size_t total_bytes = 0;
  cudaError_t last_error = cudaSuccess;
  std::set<cudaStream_t> streams;
  int capturing = 0;  // streams capturing (all captures are thread-local here: one thread at a time)

  Runtime() {
    const char* mib = std::getenv("PAGODA_EMULATED_GPU_MIB");
    total_bytes = (mib != nullptr && std::atoll(mib) > 0 ? static_cast<size_t>(std::atoll(mib)) : size_t{2048}) << 20;
  }
};

Runtime& rt() {
  static Runtime* r = new Runtime();  // never destroyed: buffers may be freed during static destruction
  return *r;
}

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) rt().last_error = e;
  return e;
}

// The allocation holding [p, p + bytes), or nullptr.
const Allocation* find(const void* p, size_t bytes) {
  Runtime& r = rt();
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = r.allocations.upper_bound(a);
  if (it == r.allocations.begin()) return nullptr;
  --it;
  if (a < it->first || a + bytes > it->first + it->second.bytes || a + bytes < a) return nullptr;
  return &it->second;
}
bool is_device(const void* p, size_t bytes) {
  const Allocation* al = find(p, bytes);
  return al != nullptr && !al->pinned;
}
bool is_pinned(const void* p, size_t bytes) {
  const Allocation* al = find(p, bytes);
  return al != nullptr && al->pinned;
}

// A call the programming guide calls unsafe during stream capture: it fails and invalidates
// every capture in progress.
bool capture_forbids() {
  Runtime& r = rt();
  if (r.capturing == 0) return false;
  for (cudaStream_t s : r.streams)
    if (s->capture != nullptr) s->capture_invalidated = true;
  set_error(cudaErrorStreamCaptureUnsupported);
  return true;
}

// Runs the stream's queued work in order (until `until` returns true, if given).
void drain(cudaStream_t s, const std::function<bool()>& until = nullptr) {
  while (!s->queue.empty()) {
    if (until && until()) return;
    Work w = std::move(s->queue.front());
    s->queue.pop_front();
    w();
  }
}

bool valid_stream(cudaStream_t s) { return s == nullptr || rt().streams.contains(s); }

cudaError_t enqueue_locked(cudaStream_t stream, Work work) {
  if (!valid_stream(stream)) return set_error(cudaErrorInvalidResourceHandle);
  if (stream == nullptr) {  // the legacy default stream: waits for all others, runs at once
    if (capture_forbids()) return cudaErrorStreamCaptureUnsupported;
    for (cudaStream_t s : rt().streams) drain(s);
    work();
    return cudaSuccess;
  }
  if (stream->capture != nullptr) {
    stream->capture->nodes.push_back(std::move(work));
  } else {
    stream->queue.push_back(std::move(work));
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard lock(rt().mu);
  return enqueue_locked(stream, std::move(work));
}

bool check_launch(dim3 grid, dim3 block, size_t shared_bytes) {
  std::lock_guard lock(rt().mu);
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  const bool ok = threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 && block.z <= 64 &&
                  grid.x >= 1 && grid.y >= 1 && grid.z >= 1 && grid.x <= 0x7fffffffu && grid.y <= 65535 &&
                  grid.z <= 65535 && shared_bytes <= kSharedPerBlock;
  if (!ok) {
    std::fprintf(stderr, "cuda_emu: invalid launch: grid (%u, %u, %u), block (%u, %u, %u), %zu bytes shared\n", grid.x,
                 grid.y, grid.z, block.x, block.y, block.z, shared_bytes);
    set_error(cudaErrorInvalidConfiguration);
  }
  return ok;
}

bool is_device_range(const void* p, size_t bytes) {
  std::lock_guard lock(rt().mu);
  return is_device(p, bytes);
}

}  // namespace cuda_emu

using cuda_emu::rt;
using Lock = std::lock_guard<std::recursive_mutex>;

// ---- device ------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cuda_emu::set_error(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cuda_emu::set_error(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "Emulated H100");
  prop->totalGlobalMem = rt().total_bytes;
  prop->sharedMemPerBlock = cuda_emu::kSharedPerBlock;
  prop->sharedMemPerBlockOptin = cuda_emu::kSharedPerBlockOptin;
  prop->maxThreadsPerBlock = 1024;
  prop->multiProcessorCount = cuda_emu::kSmCount;
  prop->major = 9;
  prop->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cuda_emu::set_error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = cuda_emu::kSmCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(cuda_emu::kSharedPerBlockOptin);
      return cudaSuccess;
  }
  return cuda_emu::set_error(cudaErrorInvalidValue);
}
cudaError_t cudaDeviceSynchronize() {
  Lock lock(rt().mu);
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  for (cudaStream_t s : rt().streams) cuda_emu::drain(s);
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  Lock lock(rt().mu);
  const cudaError_t e = rt().last_error;
  rt().last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  Lock lock(rt().mu);
  return rt().last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
  }
  return "unknown error";
}

// ---- memory ------------------------------------------------------------------------------------

namespace {

cudaError_t allocate(void** ptr, size_t bytes, bool pinned) {
  Lock lock(rt().mu);
  *ptr = nullptr;
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  const size_t rounded = (std::max<size_t>(bytes, 1) + cuda_emu::kAlign - 1) / cuda_emu::kAlign * cuda_emu::kAlign;
  if (!pinned && rt().device_bytes + rounded > rt().total_bytes) return cuda_emu::set_error(cudaErrorMemoryAllocation);
  void* p = std::aligned_alloc(cuda_emu::kAlign, rounded);
  if (p == nullptr) return cuda_emu::set_error(cudaErrorMemoryAllocation);
  // Fresh device memory is not zero on a GPU either: all-ones bytes are NaN as BF16 and F32.
  std::memset(p, 0xff, rounded);
  rt().allocations[reinterpret_cast<uintptr_t>(p)] = cuda_emu::Allocation{std::max<size_t>(bytes, 1), rounded, pinned};
  if (!pinned) rt().device_bytes += rounded;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(void* ptr, bool pinned) {
  Lock lock(rt().mu);
  if (ptr == nullptr) return cudaSuccess;
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  auto it = rt().allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == rt().allocations.end() || it->second.pinned != pinned)
    return cuda_emu::set_error(pinned ? cudaErrorInvalidValue : cudaErrorInvalidDevicePointer);
  // cudaFree waits for the device: work still queued may use the buffer.
  for (cudaStream_t s : rt().streams) cuda_emu::drain(s);
  if (!pinned) rt().device_bytes -= it->second.rounded;
  rt().allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

// Checks a copy's pointers against its kind; returns the kind resolved (Default inferred).
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind* kind) {
  const bool dst_dev = cuda_emu::is_device(dst, bytes), src_dev = cuda_emu::is_device(src, bytes);
  if (*kind == cudaMemcpyDefault)
    *kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                    : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  bool ok = false;
  switch (*kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && !src_dev; break;
    case cudaMemcpyDeviceToHost: ok = src_dev && !dst_dev; break;
    case cudaMemcpyDeviceToDevice: ok = src_dev && dst_dev; break;
    case cudaMemcpyHostToHost: ok = !src_dev && !dst_dev; break;
    default: return cuda_emu::set_error(cudaErrorInvalidMemcpyDirection);
  }
  if (!ok) {
    std::fprintf(stderr, "cuda_emu: memcpy kind %d does not match its pointers (dst %s, src %s, %zu bytes)\n",
                 static_cast<int>(*kind), dst_dev ? "device" : "host/outside an allocation",
                 src_dev ? "device" : "host/outside an allocation", bytes);
    return cuda_emu::set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, false); }
cudaError_t cudaFree(void* ptr) { return release(ptr, false); }
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned) { return allocate(ptr, bytes, true); }
cudaError_t cudaFreeHost(void* ptr) { return release(ptr, true); }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Lock lock(rt().mu);
  *total_bytes = rt().total_bytes;
  *free_bytes = rt().total_bytes - rt().device_bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  Lock lock(rt().mu);
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  if (bytes == 0) return cudaSuccess;
  if (const cudaError_t e = check_copy(dst, src, bytes, &kind); e != cudaSuccess) return e;
  for (cudaStream_t s : rt().streams) cuda_emu::drain(s);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  Lock lock(rt().mu);
  if (bytes == 0) return cudaSuccess;
  if (!cuda_emu::valid_stream(stream)) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = check_copy(dst, src, bytes, &kind); e != cudaSuccess) return e;
  const bool capturing = stream != nullptr && stream->capture != nullptr;
  if (kind == cudaMemcpyHostToDevice && !cuda_emu::is_pinned(src, bytes)) {
    // Pageable source: staged now (the caller may reuse it at once); not capturable.
    if (capturing) {
      cuda_emu::capture_forbids();
      return cudaErrorStreamCaptureUnsupported;
    }
    auto staged =
        std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
    return cuda_emu::enqueue_locked(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); });
  }
  if (kind == cudaMemcpyDeviceToHost && !cuda_emu::is_pinned(dst, bytes)) {
    // Pageable destination: the call returns once the copy is done.
    if (capturing) {
      cuda_emu::capture_forbids();
      return cudaErrorStreamCaptureUnsupported;
    }
    if (stream != nullptr) cuda_emu::drain(stream);
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  return cuda_emu::enqueue_locked(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  Lock lock(rt().mu);
  if (bytes == 0) return cudaSuccess;
  if (!cuda_emu::is_device(dst, bytes)) return cuda_emu::set_error(cudaErrorInvalidValue);
  return cuda_emu::enqueue_locked(stream, [dst, value, bytes] { std::memset(dst, value, bytes); });
}

// ---- streams, events, graphs -------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  Lock lock(rt().mu);
  *stream = new CUstream_st();
  rt().streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Lock lock(rt().mu);
  if (stream == nullptr || !rt().streams.contains(stream)) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  cuda_emu::drain(stream);  // queued work still completes
  if (stream->capture != nullptr) {
    --rt().capturing;
    delete stream->capture;
  }
  rt().streams.erase(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Lock lock(rt().mu);
  if (!cuda_emu::valid_stream(stream)) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  if (stream == nullptr) {
    for (cudaStream_t s : rt().streams) cuda_emu::drain(s);
  } else {
    cuda_emu::drain(stream);
  }
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  *event = new CUevent_st();
  (*event)->timing = (flags & cudaEventDisableTiming) == 0;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }
// Host time between the two records' completion (the emulated device runs work when the host
// waits, so this measures the emulation, not a GPU). As the runtime: both events must have been
// created with timing and have completed a record.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Lock lock(rt().mu);
  if (ms == nullptr || start == nullptr || end == nullptr) return cuda_emu::set_error(cudaErrorInvalidValue);
  if (!start->timing || !end->timing) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  if (start->pending || end->pending) return cuda_emu::set_error(cudaErrorNotReady);
  if (!start->recorded || !end->recorded) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Lock lock(rt().mu);
  if (event == nullptr) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  // The record still queued (if any) must not touch the freed event: let it complete first.
  if (event->pending && event->stream != nullptr && rt().streams.contains(event->stream))
    cuda_emu::drain(event->stream, [event] { return !event->pending; });
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Lock lock(rt().mu);
  if (event == nullptr) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  if (stream != nullptr && stream->capture != nullptr) {
    // A record node inside a graph: nothing to wait for on the host side of the emulation.
    return cudaSuccess;
  }
  event->stream = stream;
  event->pending = true;
  return cuda_emu::enqueue_locked(stream, [event] {
    event->pending = false;
    event->recorded = true;
    event->at = std::chrono::steady_clock::now();
  });
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Lock lock(rt().mu);
  if (event == nullptr) return cuda_emu::set_error(cudaErrorInvalidResourceHandle);
  if (cuda_emu::capture_forbids()) return cudaErrorStreamCaptureUnsupported;
  if (event->pending && event->stream != nullptr) cuda_emu::drain(event->stream, [event] { return !event->pending; });
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  Lock lock(rt().mu);
  if (stream == nullptr || !rt().streams.contains(stream) || stream->capture != nullptr)
    return cuda_emu::set_error(stream == nullptr ? cudaErrorStreamCaptureUnsupported : cudaErrorInvalidValue);
  stream->capture = new CUgraph_st();
  stream->capture_invalidated = false;
  ++rt().capturing;
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  Lock lock(rt().mu);
  if (status == nullptr || !cuda_emu::valid_stream(stream)) return cuda_emu::set_error(cudaErrorInvalidValue);
  *status = stream != nullptr && stream->capture != nullptr
                ? (stream->capture_invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive)
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  Lock lock(rt().mu);
  *graph = nullptr;
  if (stream == nullptr || !rt().streams.contains(stream) || stream->capture == nullptr)
    return cuda_emu::set_error(cudaErrorStreamCaptureUnmatched);
  CUgraph_st* g = stream->capture;
  stream->capture = nullptr;
  --rt().capturing;
  if (stream->capture_invalidated) {
    delete g;
    return cuda_emu::set_error(cudaErrorStreamCaptureInvalidated);
  }
  *graph = g;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (graph == nullptr) return cuda_emu::set_error(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, cudaGraphNode_t* nodes, size_t* num_nodes) {
  if (graph == nullptr || nodes != nullptr || num_nodes == nullptr) return cuda_emu::set_error(cudaErrorInvalidValue);
  *num_nodes = graph->nodes.size();
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  Lock lock(rt().mu);
  if (exec == nullptr) return cuda_emu::set_error(cudaErrorInvalidValue);
  for (const Work& w : exec->nodes)
    if (const cudaError_t e = cuda_emu::enqueue_locked(stream, w); e != cudaSuccess) return e;
  return cudaSuccess;
}

// ---- cuBLASLt ----------------------------------------------------------------------------------

struct cublasLtContext {};
struct cublasLtMatmulDescOpaque_t {
  cublasOperation_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {
  size_t max_workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D: cuBLASLt's default assumption
};

namespace {

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

float load(const void* p, cudaDataType_t t, size_t i) {
  switch (t) {
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
void store(void* p, cudaDataType_t t, size_t i, float v) {
  switch (t) {
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}
// Bytes a column-major rows x cols matrix with leading dimension ld spans.
size_t span_bytes(const cublasLtMatrixLayoutOpaque_t& l) {
  if (l.rows == 0 || l.cols == 0) return 0;
  return ((l.cols - 1) * static_cast<uint64_t>(l.ld) + l.rows) * type_bytes(l.type);
}
uint32_t alignment_of(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  *handle = new cublasLtContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasLtGetStatusString(cublasStatus_t status) { return cublasLtGetStatusName(status); }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = new cublasLtMatmulDescOpaque_t();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  if (desc == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) {
    if (bytes != sizeof(cublasOperation_t)) return CUBLAS_STATUS_INVALID_VALUE;
    cublasOperation_t op;
    std::memcpy(&op, buf, sizeof(op));
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
    (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->trans_a : desc->trans_b) = op;
    return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;  // not modelled
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!known_type(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < 1 || static_cast<uint64_t>(ld) < rows) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = new cublasLtMatmulPreferenceOpaque_t();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t bytes) {
  if (pref == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      if (bytes != sizeof(uint64_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&pref->max_workspace, buf, sizeof(uint64_t));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      if (bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, sizeof(uint32_t));
      return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

namespace {

// op(A) m x k, op(B) k x n, C and D m x n; false when the layouts disagree.
bool shapes(const cublasLtMatmulDescOpaque_t& desc, const cublasLtMatrixLayoutOpaque_t& a,
            const cublasLtMatrixLayoutOpaque_t& b, const cublasLtMatrixLayoutOpaque_t& c,
            const cublasLtMatrixLayoutOpaque_t& d, uint64_t* m, uint64_t* n, uint64_t* k) {
  *m = desc.trans_a == CUBLAS_OP_N ? a.rows : a.cols;
  *k = desc.trans_a == CUBLAS_OP_N ? a.cols : a.rows;
  const uint64_t kb = desc.trans_b == CUBLAS_OP_N ? b.rows : b.cols;
  *n = desc.trans_b == CUBLAS_OP_N ? b.cols : b.rows;
  return kb == *k && c.rows == *m && c.cols == *n && d.rows == *m && d.cols == *n && c.type == d.type;
}

}  // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* returned) {
  *returned = 0;
  if (handle == nullptr || desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr ||
      pref == nullptr)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  uint64_t m, n, k;
  if (!shapes(*desc, *a, *b, *c, *d, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  // Every operand must at least be element-aligned.
  const cublasLtMatrixLayoutOpaque_t* ls[4] = {a, b, c, d};
  for (int i = 0; i < 4; ++i)
    if (pref->align[i] < type_bytes(ls[i]->type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  for (int i = 0; i < 4; ++i) results[0].algo.data[i] = pref->align[i];  // what the algorithm assumes
  results[0].workspaceSize = std::min<size_t>(pref->max_workspace, size_t{1} << 20);
  results[0].algo.data[4] = results[0].workspaceSize;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  if (handle == nullptr || desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr)
    return CUBLAS_STATUS_NOT_INITIALIZED;
  uint64_t m, n, k;
  if (!shapes(*desc, *a, *b, *c, *d, &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  // In place (C == D) needs identical layouts.
  if (C == D && (c->ld != d->ld || c->type != d->type)) return CUBLAS_STATUS_INVALID_VALUE;
  Lock lock(rt().mu);
  const void* ptrs[4] = {A, B, C, D};
  const cublasLtMatrixLayoutOpaque_t* ls[4] = {a, b, c, d};
  for (int i = 0; i < 4; ++i) {
    if (!cuda_emu::is_device(ptrs[i], span_bytes(*ls[i]))) {
      std::fprintf(stderr, "cuda_emu: cublasLtMatmul operand %c is not inside a device allocation\n", "ABCD"[i]);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (algo != nullptr && alignment_of(ptrs[i]) < algo->data[i]) {
      std::fprintf(stderr, "cuda_emu: cublasLtMatmul operand %c is %u-byte aligned, the algorithm assumes %llu\n",
                   "ABCD"[i], alignment_of(ptrs[i]), static_cast<unsigned long long>(algo->data[i]));
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  }
  if (algo != nullptr && workspace_bytes < algo->data[4]) return CUBLAS_STATUS_INVALID_VALUE;
  if (workspace_bytes > 0 && !cuda_emu::is_device(workspace, workspace_bytes)) return CUBLAS_STATUS_INVALID_VALUE;
  float al, be;  // host pointer mode: read now
  std::memcpy(&al, alpha, sizeof(float));
  std::memcpy(&be, beta, sizeof(float));
  const cublasLtMatmulDescOpaque_t dd = *desc;
  const cublasLtMatrixLayoutOpaque_t la = *a, lb = *b, lc = *c, ld = *d;
  auto run = [=] {
    // op(A) as m rows of k, op(B)^T as n rows of k (FP32), then one dot product per output.
    std::vector<float> ak(m * k), bk(n * k);
    for (uint64_t i = 0; i < m; ++i)
      for (uint64_t p = 0; p < k; ++p)
        ak[i * k + p] = load(A, la.type, dd.trans_a == CUBLAS_OP_N ? i + p * la.ld : p + i * la.ld);
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t p = 0; p < k; ++p)
        bk[j * k + p] = load(B, lb.type, dd.trans_b == CUBLAS_OP_N ? p + j * lb.ld : j + p * lb.ld);
    for (uint64_t j = 0; j < n; ++j)
      for (uint64_t i = 0; i < m; ++i) {
        const float* x = &ak[i * k];
        const float* y = &bk[j * k];
        float acc[8] = {};
        uint64_t p = 0;
        for (; p + 8 <= k; p += 8)
          for (int u = 0; u < 8; ++u) acc[u] = std::fma(x[p + u], y[p + u], acc[u]);
        for (; p < k; ++p) acc[0] = std::fma(x[p], y[p], acc[0]);
        const float dot = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        const float cv = be != 0.0f ? be * load(C, lc.type, i + j * lc.ld) : 0.0f;
        store(D, ld.type, i + j * ld.ld, al * dot + cv);
      }
  };
  return cuda_emu::enqueue_locked(stream, run) == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
