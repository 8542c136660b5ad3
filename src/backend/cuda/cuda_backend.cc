// The CUDA backend: BF16 activations, one non-default stream, cuBLASLt GEMMs and the kernels of
// cuda_kernels.cu. Everything an op needs (cuBLASLt workspace, attention workspace) is allocated
// at construction, so ops only enqueue work: they never allocate device memory and never
// synchronise (a decode step can be captured as a CUDA graph). What is built on first use and
// cached: a GEMM plan the first time a (T, N, K, ...) shape is seen, and a device table of the
// per-expert weight pointers of each MoE layer (its first moe_experts call): run one step of
// every shape before capturing a graph.
//
// Checks that need device data on the host (token ids in range, slots inside the cache) cannot
// be done without synchronising; the kernels instead never read or write out of bounds (see
// cuda_kernels.h for what a bad id / index / slot does).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/cuda_gdn.h"
#include "backend/cuda/cuda_gemv.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_moe.h"
#include "backend/cuda/cuda_sampling.h"
#include "base/error.h"
#include "base/log.h"
#include "base/thread_pool.h"

#define PAGODA_CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                                \
    const cublasStatus_t pagoda_cublas_st_ = (expr);                                                  \
    if (pagoda_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                   \
      ::pagoda::fail("cuBLASLt error ", cublasLtGetStatusName(pagoda_cublas_st_), " (",               \
                     cublasLtGetStatusString(pagoda_cublas_st_), ") in ", #expr, " at ", __FILE__, ":", \
                     __LINE__);                                                                       \
  } while (0)

namespace pagoda {
namespace {

constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
// The attention workspace is sized for this many tokens x query heads x head_dim.
constexpr int kAttentionMaxTokens = 8192, kAttentionMaxHeads = 64, kAttentionMaxHeadDim = 256;

void cuda_free(void* p) { (void)cudaFree(p); }  // a deleter cannot throw; errors surface on the next call
void cuda_free_host(void* p) { (void)cudaFreeHost(p); }

bool is_float_weight(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }
bool is_act(DType d) { return d == DType::kBF16 || d == DType::kF32; }

void check_act(const Tensor& t, const char* op, const char* what) {
  PAGODA_CHECK(is_act(t.dtype), op, ": ", what, " must be BF16 (or F32) on the CUDA backend, got ", dtype_name(t.dtype));
}
void check_dtype(const Tensor& t, DType want, const char* op, const char* what) {
  PAGODA_CHECK(t.dtype == want, op, ": ", what, " must be ", dtype_name(want), ", got ", dtype_name(t.dtype));
}

// Largest power of two (at most 256) that divides the address: what cuBLASLt may assume.
uint32_t pointer_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

// A cuBLASLt matmul set up for one GEMM shape: descriptors + the heuristic's algorithm. ok is
// false when cuBLASLt offers no algorithm (then the fallback kernel runs).
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

// PAGODA_CUDA_GEMV: whether decode-sized linears may run the small-batch GEMM (cuda_gemv.h).
enum class GemvMode { kAuto, kOn, kOff };

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    try {
      PAGODA_CUDA_CHECK(cudaSetDevice(device_));
      cudaDeviceProp prop{};
      PAGODA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
      name_ = "cuda:" + std::to_string(device_) + " (" + prop.name + ", sm_" + std::to_string(prop.major) +
              std::to_string(prop.minor) + ")";
      PAGODA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      PAGODA_CUBLAS_CHECK(cublasLtCreate(&lt_));
      PAGODA_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
      for (cudaEvent_t& e : tune_events_) PAGODA_CUDA_CHECK(cudaEventCreate(&e));
      gemv_mode_ = gemv_mode_from_env();
      // Programmatic dependent launches (cuda_common.h): off unless PAGODA_CUDA_PDL=on, and
      // only from compute capability 9.0 (Hopper) on.
      const bool pdl = pdl_from_env();
      if (pdl && prop.major < 9)
        log_info("PAGODA_CUDA_PDL=on has no effect on ", name_, ": programmatic dependent launch needs sm_90 or newer");
      cuda::programmatic_launch().store(pdl && prop.major >= 9);
      gemm_ws_ = allocate(kGemmWorkspaceBytes);
      const size_t attn_bytes =
          cuda::paged_attention_workspace_bytes(kAttentionMaxTokens, kAttentionMaxHeads, kAttentionMaxHeadDim);
      if (attn_bytes > 0) attn_ws_ = allocate(attn_bytes);
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaBackend() override {
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    release();
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }
  DType activation_dtype() const override { return DType::kBF16; }

  // ---- memory ------------------------------------------------------------------------------
  DeviceBuffer allocate(size_t bytes) override {
    use_device();
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes == 0 ? 1 : bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      fail("CUDA backend: cannot allocate ", bytes, " bytes on ", name_, " (", cudaGetErrorString(err), "; ",
           free_bytes >> 20, " MiB free of ", total_bytes >> 20, " MiB)");
    }
    return DeviceBuffer(p, bytes, &cuda_free);
  }

  DeviceBuffer allocate_host(size_t bytes) override {
    use_device();
    void* p = nullptr;
    const cudaError_t err = cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      fail("CUDA backend: cannot allocate ", bytes, " bytes of page-locked host memory (", cudaGetErrorString(err),
           ")");
    }
    return DeviceBuffer(p, bytes, &cuda_free_host);
  }

  // Enqueued on the stream. From pageable host memory (what callers use) the source is copied
  // out before this returns; a caller passing pinned memory must keep it unchanged until the
  // stream has reached the copy.
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    use_device();
    if (bytes == 0) return;
    PAGODA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  // Waits for everything enqueued before it (the result is needed on the host).
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    use_device();
    if (bytes == 0) return;
    PAGODA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    PAGODA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void copy_to_host_async(void* dst, const void* src, size_t bytes) override {
    use_device();
    if (bytes == 0) return;
    PAGODA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  }
  void record_event(int slot) override {
    PAGODA_CHECK(slot >= 0 && slot < kNumEvents, "record_event: no slot ", slot);
    use_device();
    cudaEvent_t& e = events_[static_cast<size_t>(slot)];
    if (e == nullptr) PAGODA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    PAGODA_CUDA_CHECK(cudaEventRecord(e, stream_));
  }
  void wait_event(int slot) override {
    PAGODA_CHECK(slot >= 0 && slot < kNumEvents, "wait_event: no slot ", slot);
    use_device();
    const cudaEvent_t e = events_[static_cast<size_t>(slot)];
    if (e != nullptr) PAGODA_CUDA_CHECK(cudaEventSynchronize(e));
  }

  // Copies the host weight into a new device buffer, dtype unchanged (BF16 / F16 / F32 / any):
  // F32 weights such as A_log or norm weights must stay F32, and linear handles non-BF16 weights
  // itself (fallback kernel, see linear()). The bytes go through page-locked staging buffers
  // (upload_weight); the host view may go away once this returns.
  Tensor place_weight(const Tensor& host, std::vector<DeviceBuffer>* storage) override {
    PAGODA_CHECK(storage != nullptr, "CUDA backend: place_weight needs a storage vector");
    PAGODA_CHECK(host.dtype != DType::kF8E4M3 && host.dtype != DType::kF8E5M2 && host.scale == nullptr,
                 "CUDA backend: FP8 weights (an FP8 checkpoint or --quantization fp8) are not supported yet; "
                 "run them with --device cpu");
    DeviceBuffer buf = allocate(host.nbytes());
    upload_weight(static_cast<char*>(buf.data()), static_cast<const char*>(host.data), host.nbytes());
    Tensor t = host;
    t.data = buf.data();
    storage->push_back(std::move(buf));
    return t;
  }
  void weights_loaded() override {
    use_device();
    PAGODA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    stager_.reset();
  }

  // Layout: k and v [num_blocks, block_size, num_kv_heads, head_dim] BF16 (cuda_attention.h),
  // zero-filled.
  KvCache allocate_kv_cache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim,
                            DType dtype) override {
    PAGODA_CHECK(dtype == DType::kBF16, "CUDA backend: KV cache dtype must be BF16, got ", dtype_name(dtype));
    PAGODA_CHECK(num_layers >= 0 && num_blocks > 0 && block_size > 0 && num_kv_heads > 0 && head_dim > 0,
                 "CUDA backend: bad KV cache shape");
    use_device();
    KvCache cache;
    const size_t elems = static_cast<size_t>(num_blocks) * block_size * num_kv_heads * head_dim;
    const size_t half = (elems * dtype_size(dtype) + 255) / 256 * 256;
    for (int l = 0; l < num_layers; ++l) {
      DeviceBuffer buf = allocate(2 * half);
      PAGODA_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0, 2 * half, stream_));
      KvCacheLayer layer;
      layer.k = Tensor(buf.data(), dtype, {num_blocks, block_size, num_kv_heads, head_dim});
      layer.v = Tensor(static_cast<char*>(buf.data()) + half, dtype, {num_blocks, block_size, num_kv_heads, head_dim});
      layer.num_blocks = num_blocks;
      layer.block_size = block_size;
      layer.num_kv_heads = num_kv_heads;
      layer.head_dim = head_dim;
      cache.layers.push_back(layer);
      cache.storage.push_back(std::move(buf));
    }
    PAGODA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return cache;
  }

  void synchronize() override {
    use_device();
    PAGODA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  bool memory_info(size_t* free_bytes, size_t* total_bytes) override {
    use_device();
    PAGODA_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return true;
  }

  // ---- graphs ------------------------------------------------------------------------------
  // Stream capture of everything `enqueue` launches on stream_ (ops never synchronise or
  // allocate; cuBLASLt plans and MoE pointer tables must exist already: run the same step once
  // eagerly first).
  int capture_graph(const std::function<void()>& enqueue) override {
    use_device();
    size_t nodes = 0;
    graphs_.push_back(record_graph(enqueue, &nodes));
    const int id = static_cast<int>(graphs_.size()) - 1;
    log_debug("CUDA graph ", id, " captured: ", nodes, " nodes");
    return id;
  }
  bool has_graphs() const override { return true; }
  void replay_graph(int id) override {
    use_device();
    PAGODA_CHECK(id >= 0 && id < static_cast<int>(graphs_.size()), "replay_graph: no graph ", id);
    PAGODA_CUDA_CHECK(cudaGraphLaunch(graphs_[static_cast<size_t>(id)], stream_));
  }

  // ---- ops ---------------------------------------------------------------------------------
  void embedding(const Tensor& ids, const Tensor& table, Tensor out) override {
    use_device();
    check_dtype(ids, DType::kI32, "embedding", "ids");
    check_act(out, "embedding", "out");
    PAGODA_CHECK(is_float_weight(table.dtype), "embedding: unsupported table dtype ", dtype_name(table.dtype));
    const int64_t T = ids.numel(), H = table.cols(), V = table.rows();
    PAGODA_CHECK(out.rows() == T && out.cols() == H, "embedding: out ", out.shape_string(), " vs ids ",
                 ids.shape_string(), " table ", table.shape_string());
    cuda::launch_embedding(ids.ptr<int32_t>(), T, table.data, table.dtype, V, H, out.data, out.dtype, stream_);
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    use_device();
    check_norm("rms_norm", x, weight, out);
    cuda::launch_rms_norm(nullptr, x.data, weight.data, weight.dtype, eps, x.rows(), x.cols(), out.data, x.dtype,
                          stream_);
  }

  void add_rms_norm(Tensor residual, const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    use_device();
    check_norm("add_rms_norm", x, weight, out);
    PAGODA_CHECK(residual.numel() == x.numel() && residual.dtype == x.dtype, "add_rms_norm: residual ",
                 dtype_name(residual.dtype), " ", residual.shape_string(), " vs x ", dtype_name(x.dtype), " ",
                 x.shape_string());
    cuda::launch_rms_norm(residual.data, x.data, weight.data, weight.dtype, eps, x.rows(), x.cols(), out.data,
                          x.dtype, stream_);
  }

  // BF16 x BF16 weights: cuBLASLt, FP32 compute (CUBLAS_COMPUTE_32F), out BF16 or F32 (logits,
  // router logits). Other weight dtypes (F16 / F32 checkpoints; rare) are NOT converted at
  // place_weight time (F32 tensors must stay F32 for other ops): they run the simple tiled
  // fallback kernel, FP32 accumulation, correct but slow. The fallback also covers shapes /
  // alignments (e.g. N not a multiple of 8 with odd pointers) cuBLASLt has no algorithm for.
  // A bias is written into out first and the GEMM runs with beta = 1 (one final rounding).
  // Decode-sized inputs (at most 8 tokens) may run the small-batch GEMM instead: see linears().
  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor out) override {
    linears(x, {&weight}, {bias}, {out});
  }

  // Several weights over one input. With at most cuda::kMaxGemvTokens BF16 tokens and BF16
  // weights, all of them can run as ONE launch of the small-batch GEMM (cuda_gemv.h) instead of
  // one cuBLASLt call each. PAGODA_CUDA_GEMV picks: "auto" (default) times both ways once per
  // shape, as CUDA graphs of back-to-back runs (what decode replays), and keeps the faster;
  // "on" always takes the small-batch GEMM where it applies, "off" never does.
  void linears(const Tensor& x, std::initializer_list<const Tensor*> weights,
               std::initializer_list<const Tensor*> biases, std::initializer_list<Tensor> outs) override {
    PAGODA_ASSERT(weights.size() == biases.size() && weights.size() == outs.size());
    use_device();
    auto b = biases.begin();
    auto o = outs.begin();
    for (const Tensor* w : weights) check_linear(x, *w, *b++, *o++);
    if (x.rows() == 0) return;
    const auto run_blas = [&] {
      auto bb = biases.begin();
      auto oo = outs.begin();
      for (const Tensor* w : weights) linear_blas(x, *w, *bb++, *oo++);
    };
    cuda::GemvGroups g{};
    if (gemv_applies(x, weights, biases, outs, g)) {
      const auto run_gemv = [&] {
        cuda::launch_gemv(x.data, x.rows(), x.cols(), g, outs.begin()->dtype, num_sms_, stream_);
      };
      if (choose_gemv(x, g, outs.begin()->dtype, 0, run_gemv, run_blas)) {
        run_gemv();
        return;
      }
    }
    run_blas();
  }

  // Decode steps (where the small-batch GEMM applies to gate and up): ONE gated launch that
  // stores silu(gate) * up (cuda_gemv.h), chosen against cuBLASLt + silu_and_mul like linears()
  // (PAGODA_CUDA_GEMV). Otherwise the two ops.
  void gate_up_silu(const Tensor& x, const Tensor& gate_w, const Tensor& up_w, Tensor gate, Tensor up,
                    Tensor out) override {
    gate_up_silu_on(x, nullptr, 0.0f, gate_w, up_w, gate, up, out,
                    [&] { Backend::gate_up_silu(x, gate_w, up_w, gate, up, out); });
  }

  // residual += linear(x). Decode steps may fold the add into the small-batch GEMM's store
  // (kGemvAdd), chosen against cuBLASLt like linears(). cuBLASLt accumulates into the residual
  // (beta = 1: one rounding of product + residual) when there is no bias; otherwise linear into
  // `scratch`, then add.
  void linear_add(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor scratch,
                  Tensor residual) override {
    use_device();
    check_linear(x, weight, bias, scratch);
    PAGODA_CHECK(residual.dtype == scratch.dtype && residual.rows() == scratch.rows() &&
                     residual.cols() == scratch.cols(),
                 "linear_add: residual ", dtype_name(residual.dtype), " ", residual.shape_string(), " vs scratch ",
                 dtype_name(scratch.dtype), " ", scratch.shape_string());
    if (x.rows() == 0) return;
    const bool has_bias = bias != nullptr && bias->data != nullptr;
    const auto run_unfused = [&] {
      if (!has_bias && linear_blas(x, weight, nullptr, residual, /*accumulate=*/true)) return;
      linear(x, weight, bias, scratch);
      add(residual, scratch);
    };
    cuda::GemvGroups g{};
    if (residual.dtype == DType::kBF16 && gemv_applies(x, {&weight}, {bias}, {residual}, g)) {
      const auto run_fused = [&] {
        cuda::launch_gemv(x.data, x.rows(), x.cols(), g, residual.dtype, num_sms_, stream_, cuda::kGemvAdd);
      };
      if (choose_gemv(x, g, residual.dtype, cuda::kGemvAdd, run_fused, run_unfused, &residual)) {
        run_fused();
        return;
      }
    }
    run_unfused();
  }

  // linears over rms_norm(x): decode steps may fold the norm into the small-batch GEMM (kGemvNorm),
  // chosen against rms_norm + linears (whichever way those run) like linears().
  void rms_norm_linears(const Tensor& x, const Tensor& norm_weight, float eps, Tensor normed,
                        std::initializer_list<const Tensor*> weights, std::initializer_list<const Tensor*> biases,
                        std::initializer_list<Tensor> outs) override {
    PAGODA_ASSERT(weights.size() == biases.size() && weights.size() == outs.size());
    use_device();
    check_norm("rms_norm_linears", x, norm_weight, normed);
    auto b = biases.begin();
    auto o = outs.begin();
    for (const Tensor* w : weights) check_linear(x, *w, *b++, *o++);
    if (x.rows() == 0) return;
    const auto run_unfused = [&] { Backend::rms_norm_linears(x, norm_weight, eps, normed, weights, biases, outs); };
    cuda::GemvGroups g{};
    if (norm_foldable(x, norm_weight) && outs.begin()->dtype == DType::kBF16 &&
        gemv_applies(x, weights, biases, outs, g)) {
      g.norm_w = norm_weight.data;
      g.eps = eps;
      const auto run_fused = [&] {
        cuda::launch_gemv(x.data, x.rows(), x.cols(), g, DType::kBF16, num_sms_, stream_, cuda::kGemvNorm);
      };
      if (choose_gemv(x, g, DType::kBF16, cuda::kGemvNorm, run_fused, run_unfused)) {
        run_fused();
        return;
      }
    }
    run_unfused();
  }

  // gate_up_silu over rms_norm(x): decode steps may run ONE launch for the norm, both products
  // and the SwiGLU (kGemvNorm | kGemvGated), chosen against rms_norm + gate_up_silu.
  void rms_norm_gate_up_silu(const Tensor& x, const Tensor& norm_weight, float eps, Tensor normed,
                             const Tensor& gate_w, const Tensor& up_w, Tensor gate, Tensor up, Tensor out) override {
    check_norm("rms_norm_gate_up_silu", x, norm_weight, normed);
    gate_up_silu_on(x, &norm_weight, eps, gate_w, up_w, gate, up, out, [&] {
      Backend::rms_norm_gate_up_silu(x, norm_weight, eps, normed, gate_w, up_w, gate, up, out);
    });
  }

  // gate_up_silu's checks and decode path (with rms_norm(x) * *norm_weight folded in when
  // norm_weight is given), chosen against `run_unfused`.
  template <class Unfused>
  void gate_up_silu_on(const Tensor& x, const Tensor* norm_weight, float eps, const Tensor& gate_w,
                       const Tensor& up_w, Tensor gate, Tensor up, Tensor out, const Unfused& run_unfused) {
    use_device();
    check_linear(x, gate_w, nullptr, gate);
    check_linear(x, up_w, nullptr, up);
    PAGODA_CHECK(out.dtype == gate.dtype && out.rows() == gate.rows() && out.cols() == gate.cols(),
                 "gate_up_silu: out ", dtype_name(out.dtype), " ", out.shape_string(), " vs gate ",
                 dtype_name(gate.dtype), " ", gate.shape_string());
    if (x.rows() == 0) return;
    cuda::GemvGroups g{};
    const bool norm = norm_weight != nullptr;
    if ((!norm || (norm_foldable(x, *norm_weight) && out.dtype == DType::kBF16)) && gate_w.dim(0) == up_w.dim(0) &&
        gemv_applies(x, {&gate_w, &up_w}, {nullptr, nullptr}, {gate, up}, g)) {
      g.out[0] = out.data;
      if (norm) {
        g.norm_w = norm_weight->data;
        g.eps = eps;
      }
      const int mode = norm ? cuda::kGemvNorm | cuda::kGemvGated : cuda::kGemvGated;
      const auto run_fused = [&] {
        cuda::launch_gemv(x.data, x.rows(), x.cols(), g, out.dtype, num_sms_, stream_, mode);
      };
      if (choose_gemv(x, g, out.dtype, mode, run_fused, run_unfused)) {
        run_fused();
        return;
      }
    }
    run_unfused();
  }

  void rope_cos_sin(const Tensor& positions, const Tensor& inv_freq, float attention_factor, Tensor cos_sin) override {
    use_device();
    check_dtype(cos_sin, DType::kF32, "rope_cos_sin", "cos_sin");
    check_dtype(inv_freq, DType::kF32, "rope_cos_sin", "inv_freq");
    PAGODA_CHECK(positions.dtype == DType::kI32 || positions.dtype == DType::kI64,
                 "rope_cos_sin: positions must be I32/I64");
    const int64_t T = positions.numel(), R = cos_sin.cols(), half = R / 2;
    PAGODA_CHECK(cos_sin.rows() == T && R % 2 == 0 && inv_freq.numel() == half, "rope_cos_sin: cos_sin ",
                 cos_sin.shape_string(), " inv_freq ", inv_freq.shape_string(), " positions ", positions.shape_string());
    cuda::launch_rope_cos_sin(positions.data, positions.dtype == DType::kI64, T, inv_freq.ptr<float>(), half,
                              attention_factor, cos_sin.ptr<float>(), stream_);
  }

  void rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& cos_sin, int rotary_dim,
                      const Tensor& slot_mapping, KvCacheLayer& cache) override {
    rope_cache("rope_and_cache", q, k, v, nullptr, nullptr, 0.0f, cos_sin, rotary_dim, slot_mapping, cache);
  }

  // One kernel: the per-head norms, the rotation and the cache write (launch_rope_and_cache).
  void qk_norm_rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& q_norm, const Tensor& k_norm,
                              float eps, const Tensor& cos_sin, int rotary_dim, const Tensor& slot_mapping,
                              KvCacheLayer& cache) override {
    rope_cache("qk_norm_rope_and_cache", q, k, v, &q_norm, &k_norm, eps, cos_sin, rotary_dim, slot_mapping, cache);
  }

  void rope_cache(const char* op, Tensor q, Tensor k, const Tensor& v, const Tensor* q_norm, const Tensor* k_norm,
                  float eps, const Tensor& cos_sin, int rotary_dim, const Tensor& slot_mapping, KvCacheLayer& cache) {
    use_device();
    check_act(q, op, "q");
    PAGODA_CHECK(k.dtype == q.dtype && v.dtype == q.dtype, op, ": q, k and v must share a dtype");
    check_dtype(cos_sin, DType::kF32, op, "cos_sin");
    check_dtype(cache.k, DType::kBF16, op, "cache.k");
    check_dtype(cache.v, DType::kBF16, op, "cache.v");
    const int64_t D = cache.head_dim, Hk = cache.num_kv_heads;
    const int64_t T = q.ndim == 3 ? q.dim(0) : q.rows();
    PAGODA_CHECK(T * D > 0 || q.numel() == 0, op, ": bad q ", q.shape_string());
    const int64_t Hq = T * D > 0 ? q.numel() / (T * D) : 0;
    PAGODA_CHECK(q.numel() == T * Hq * D && k.numel() == T * Hk * D && v.numel() == T * Hk * D, op, ": q ",
                 q.shape_string(), " k ", k.shape_string(), " v ", v.shape_string(), " vs cache heads ", Hk,
                 " head_dim ", D);
    PAGODA_CHECK(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= D && cos_sin.rows() == T &&
                     cos_sin.cols() == rotary_dim,
                 op, ": rotary_dim ", rotary_dim, " cos_sin ", cos_sin.shape_string());
    PAGODA_CHECK(slot_mapping.dtype == DType::kI32 && slot_mapping.numel() == T, op, ": slot_mapping ",
                 slot_mapping.shape_string());
    DType norm_dtype = DType::kF32;
    if (q_norm != nullptr) {
      PAGODA_CHECK(is_float_weight(q_norm->dtype) && q_norm->dtype == k_norm->dtype && q_norm->numel() == D &&
                       k_norm->numel() == D,
                   op, ": q_norm ", dtype_name(q_norm->dtype), " ", q_norm->shape_string(), " and k_norm ",
                   dtype_name(k_norm->dtype), " ", k_norm->shape_string(), " must be [", D, "] of one float dtype");
      norm_dtype = q_norm->dtype;
    }
    cuda::launch_rope_and_cache(q.data, k.data, v.data, q.dtype, q_norm != nullptr ? q_norm->data : nullptr,
                                k_norm != nullptr ? k_norm->data : nullptr, norm_dtype, eps, cos_sin.ptr<float>(),
                                rotary_dim, slot_mapping.ptr<int32_t>(), T, Hq, Hk, D, cache.k.data, cache.v.data,
                                cache.num_blocks, cache.block_size, stream_);
  }

  void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta, float scale,
                       Tensor out) override {
    use_device();
    check_dtype(q, DType::kBF16, "paged_attention", "q");
    check_dtype(out, DType::kBF16, "paged_attention", "out");
    check_dtype(cache.k, DType::kBF16, "paged_attention", "cache.k");
    cuda::paged_attention(q, cache, meta, scale, out, attn_ws_.data(), attn_ws_.size(), stream_);
  }

  void silu_and_mul(const Tensor& gate, const Tensor& up, Tensor out) override {
    use_device();
    check_act(gate, "silu_and_mul", "gate");
    PAGODA_CHECK(up.dtype == gate.dtype && out.dtype == gate.dtype, "silu_and_mul: gate, up and out must share a dtype");
    PAGODA_CHECK(gate.numel() == up.numel() && out.numel() == gate.numel(), "silu_and_mul: gate ",
                 gate.shape_string(), " up ", up.shape_string(), " out ", out.shape_string());
    cuda::launch_silu_and_mul(gate.data, up.data, out.data, gate.numel(), gate.dtype, stream_);
  }

  void gather_rows(const Tensor& x, const Tensor& indices, Tensor out) override {
    use_device();
    check_dtype(indices, DType::kI32, "gather_rows", "indices");
    const int64_t n = indices.numel(), R = x.rows();
    const size_t row_bytes = static_cast<size_t>(x.cols()) * dtype_size(x.dtype);
    PAGODA_CHECK(out.dtype == x.dtype && out.rows() == n && out.cols() == x.cols(), "gather_rows: x ",
                 x.shape_string(), " out ", out.shape_string());
    cuda::launch_gather_rows(x.data, R, row_bytes, indices.ptr<int32_t>(), n, out.data, stream_);
  }

  void feed_tokens(Tensor ids, const Tensor& feed, const Tensor& sampled) override {
    use_device();
    check_dtype(ids, DType::kI32, "feed_tokens", "ids");
    check_dtype(feed, DType::kI32, "feed_tokens", "feed");
    check_dtype(sampled, DType::kI32, "feed_tokens", "sampled");
    PAGODA_CHECK(feed.cols() == 2, "feed_tokens: feed must be [N, 2], got ", feed.shape_string());
    cuda::launch_feed_tokens(ids.ptr<int32_t>(), feed.ptr<int32_t>(), feed.rows(), sampled.ptr<int32_t>(), stream_);
  }

  void add(Tensor a, const Tensor& b) override {
    use_device();
    check_act(a, "add", "a");
    PAGODA_CHECK(b.dtype == a.dtype && a.numel() == b.numel(), "add: a ", dtype_name(a.dtype), " ", a.shape_string(),
                 " b ", dtype_name(b.dtype), " ", b.shape_string());
    cuda::launch_add(a.data, b.data, a.numel(), a.dtype, stream_);
  }

  // One block per row (cuda_sampling.cu); the engine then copies back only the token ids.
  void sample_tokens(const Tensor& logits, const Tensor& rows, Tensor tokens) override {
    use_device();
    PAGODA_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && tokens.dtype == DType::kI32 &&
                     tokens.numel() == logits.dim(0) &&
                     rows.nbytes() >= static_cast<size_t>(logits.dim(0)) * sizeof(SamplingRow),
                 "sample_tokens: logits ", dtype_name(logits.dtype), " ", logits.shape_string(), " rows ",
                 rows.shape_string(), " tokens ", tokens.shape_string());
    cuda::launch_sample_tokens(logits.ptr<float>(), logits.dim(0), logits.dim(1),
                               static_cast<const SamplingRow*>(rows.data), tokens.ptr<int32_t>(), stream_);
  }
  bool samples_on_device() const override { return true; }
  void compute_logprobs(const Tensor& logits, const Tensor& tokens, Tensor token_logprobs, Tensor top_ids,
                        Tensor top_logprobs) override {
    use_device();
    const int64_t N = logits.dim(0), V = logits.dim(1), K = top_ids.cols();
    PAGODA_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && tokens.dtype == DType::kI32 && tokens.numel() == N &&
                     token_logprobs.dtype == DType::kF32 && token_logprobs.numel() == N &&
                     top_ids.dtype == DType::kI32 && top_ids.rows() == N && top_logprobs.dtype == DType::kF32 &&
                     top_logprobs.rows() == N && top_logprobs.cols() == K && K >= 1 && K <= V,
                 "compute_logprobs: logits ", logits.shape_string(), " tokens ", tokens.shape_string(), " top_ids ",
                 top_ids.shape_string(), " top_logprobs ", top_logprobs.shape_string());
    cuda::launch_compute_logprobs(logits.ptr<float>(), N, V, tokens.ptr<int32_t>(), static_cast<int>(K),
                                  token_logprobs.ptr<float>(), top_ids.ptr<int32_t>(), top_logprobs.ptr<float>(),
                                  stream_);
  }
  void apply_logit_edits(Tensor logits, const Tensor& rows, const Tensor& edits, const Tensor& offsets) override {
    use_device();
    const int64_t R = logits.dim(0);
    PAGODA_CHECK(logits.dtype == DType::kF32 && logits.ndim == 2 && offsets.dtype == DType::kI32 &&
                     offsets.numel() == R + 1 && rows.nbytes() >= static_cast<size_t>(R) * sizeof(SamplingRow),
                 "apply_logit_edits: logits ", dtype_name(logits.dtype), " ", logits.shape_string(), " rows ",
                 rows.shape_string(), " offsets ", offsets.shape_string());
    cuda::launch_apply_logit_edits(logits.ptr<float>(), R, logits.dim(1), static_cast<const SamplingRow*>(rows.data),
                                   static_cast<const LogitEdit*>(edits.data), offsets.ptr<int32_t>(), stream_);
  }

  // Top-k routing on the device, one block per token (cuda_moe.cu). router_logits F32 [T, E].
  void moe_route(const Tensor& router_logits, bool renormalize, Tensor ids, Tensor weights) override {
    use_device();
    check_dtype(router_logits, DType::kF32, "moe_route", "router_logits");
    check_dtype(ids, DType::kI32, "moe_route", "ids");
    check_dtype(weights, DType::kF32, "moe_route", "weights");
    const int64_t T = router_logits.rows(), E = router_logits.cols(), k = ids.cols();
    PAGODA_CHECK(ids.rows() == T && weights.rows() == T && weights.cols() == k && k > 0 && k <= E,
                 "moe_route: router_logits ", router_logits.shape_string(), " ids ", ids.shape_string(), " weights ",
                 weights.shape_string());
    PAGODA_CHECK(E <= cuda::kMoeRouteMaxExperts && k <= cuda::kMoeMaxTopK, "moe_route: ", E, " experts / top-", k,
                 " not supported on the CUDA backend (at most ", cuda::kMoeRouteMaxExperts, " experts, top-",
                 cuda::kMoeMaxTopK, ")");
    cuda::launch_moe_route(router_logits.ptr<float>(), T, E, k, renormalize, ids.ptr<int32_t>(),
                           weights.ptr<float>(), stream_);
  }

  // Sort by expert + grouped GEMMs + weighted scatter, all on the device (cuda_moe.cu). Expert ids
  // cannot be range-checked on the host; an id outside [0, E) makes its token's row NaN.
  // MoeScratch::x and ::up are not used (the gather is fused into the gate/up GEMM, which also
  // applies silu_and_mul and writes MoeScratch::gate).
  void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const MoeExpertWeights& experts,
                   const MoeScratch& scratch, Tensor out) override {
    use_device();
    const char* op = "moe_experts";
    check_act(x, op, "x");
    PAGODA_CHECK(out.dtype == x.dtype, "moe_experts: out dtype ", dtype_name(out.dtype), " vs x ",
                 dtype_name(x.dtype));
    check_dtype(ids, DType::kI32, op, "ids");
    check_dtype(weights, DType::kF32, op, "weights");
    const int64_t T = x.rows(), H = x.cols(), k = ids.cols(), R = T * k;
    const int64_t E = static_cast<int64_t>(experts.gate.size());
    PAGODA_CHECK(E > 0 && experts.up.size() == experts.gate.size() && experts.down.size() == experts.gate.size(),
                 "moe_experts: gate, up and down must list the same number of experts");
    PAGODA_CHECK(E <= cuda::kMoeMaxExperts && k > 0 && k <= cuda::kMoeMaxTopK, "moe_experts: ", E,
                 " experts / top-", k, " not supported on the CUDA backend (at most ", cuda::kMoeMaxExperts,
                 " experts, top-", cuda::kMoeMaxTopK, ")");
    const int64_t I = experts.gate[0].dim(0);
    PAGODA_CHECK(out.rows() == T && out.cols() == H && ids.rows() == T && weights.rows() == T && weights.cols() == k,
                 "moe_experts: x ", x.shape_string(), " ids ", ids.shape_string(), " weights ", weights.shape_string(),
                 " out ", out.shape_string());
    PAGODA_CHECK(scratch.y.rows() >= R && scratch.y.cols() == H && scratch.y.dtype == x.dtype &&
                     scratch.gate.rows() >= R && scratch.gate.cols() == I && scratch.gate.dtype == x.dtype &&
                     scratch.row_of_pair.numel() >= R && scratch.pair_of_row.numel() >= R &&
                     scratch.expert_offsets.numel() >= E + 1 && scratch.row_of_pair.dtype == DType::kI32 &&
                     scratch.pair_of_row.dtype == DType::kI32 && scratch.expert_offsets.dtype == DType::kI32,
                 "moe_experts: scratch too small or of the wrong dtype for ", T, " tokens x top-", k, " (H ", H,
                 ", I ", I, ", ", E, " experts, activations ", dtype_name(x.dtype), ")");
    const void* const* table = expert_table(experts, H, I);
    if (T == 0) return;
    cuda::MoeExpertsArgs args;
    args.x = x.data;
    args.ids = ids.ptr<int32_t>();
    args.weights = weights.ptr<float>();
    args.expert_ptrs = table;
    args.weight_dtype = experts.gate[0].dtype;
    args.T = T;
    args.H = H;
    args.I = I;
    args.E = E;
    args.top_k = k;
    args.h_scratch = scratch.gate.data;
    args.y_scratch = scratch.y.data;
    args.row_of_pair = scratch.row_of_pair.ptr<int32_t>();
    args.pair_of_row = scratch.pair_of_row.ptr<int32_t>();
    args.expert_offsets = scratch.expert_offsets.ptr<int32_t>();
    args.out = out.data;
    args.act = x.dtype;
    cuda::launch_moe_experts(args, stream_);
  }

  void sigmoid_mul(Tensor x, const Tensor& gate) override {
    use_device();
    check_act(x, "sigmoid_mul", "x");
    PAGODA_CHECK(is_float_weight(gate.dtype), "sigmoid_mul: gate dtype ", dtype_name(gate.dtype));
    const int64_t R = x.rows(), N = x.cols();
    const bool broadcast = gate.cols() == 1 && N != 1;
    PAGODA_CHECK(gate.rows() == R && (broadcast || gate.cols() == N), "sigmoid_mul: x ", x.shape_string(), " gate ",
                 gate.shape_string());
    cuda::launch_sigmoid_mul(x.data, gate.data, gate.dtype, broadcast, R, N, x.dtype, stream_);
  }

  void rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out) override {
    use_device();
    check_act(x, "rms_norm_gated", "x");
    PAGODA_CHECK(z.dtype == x.dtype && out.dtype == x.dtype, "rms_norm_gated: x, z and out must share a dtype");
    PAGODA_CHECK(is_float_weight(weight.dtype), "rms_norm_gated: weight dtype ", dtype_name(weight.dtype));
    const int64_t R = x.rows(), d = x.cols();
    PAGODA_CHECK(z.rows() == R && z.cols() == d && out.rows() == R && out.cols() == d && weight.numel() == d,
                 "rms_norm_gated: x ", x.shape_string(), " z ", z.shape_string(), " weight ", weight.shape_string(),
                 " out ", out.shape_string());
    cuda::launch_rms_norm_gated(x.data, z.data, weight.data, weight.dtype, eps, R, d, out.data, x.dtype, stream_);
  }

  // Causal depthwise conv1d + SiLU per sequence (cuda_gdn.cu): x, out [T, C] activations,
  // weight [C, K] (F32, or BF16 / F16), state.conv F32 [slots, C, K - 1].
  void causal_conv1d(const Tensor& x, const Tensor& weight, const AttentionMetadata& meta, LinearAttnState& state,
                     Tensor out) override {
    use_device();
    const char* op = "causal_conv1d";
    check_act(x, op, "x");
    PAGODA_CHECK(out.dtype == x.dtype, "causal_conv1d: out dtype ", dtype_name(out.dtype), " vs x ",
                 dtype_name(x.dtype));
    PAGODA_CHECK(is_float_weight(weight.dtype), "causal_conv1d: weight dtype ", dtype_name(weight.dtype));
    check_dtype(state.conv, DType::kF32, op, "state.conv");
    const int64_t T = x.rows(), C = x.cols(), K = weight.cols();
    PAGODA_CHECK(weight.rows() == C && out.rows() == T && out.cols() == C && state.conv.ndim == 3 &&
                     state.conv.dim(1) == C && state.conv.dim(2) == K - 1 && K >= 1,
                 "causal_conv1d: x ", x.shape_string(), " weight ", weight.shape_string(), " state ",
                 state.conv.shape_string(), " out ", out.shape_string());
    PAGODA_CHECK(K <= cuda::kMaxConvWidth, "causal_conv1d: kernel width ", K,
                 " not supported on the CUDA backend (at most ", cuda::kMaxConvWidth, ")");
    check_state_meta(meta, T, op);
    cuda::launch_causal_conv1d(x.data, weight.data, weight.dtype, meta.query_start_loc.ptr<int32_t>(),
                               meta.seq_lens.ptr<int32_t>(), meta.state_slots.ptr<int32_t>(), meta.num_seqs, T, C,
                               static_cast<int>(K), state.conv.ptr<float>(), state.conv.dim(0), out.data, x.dtype,
                               stream_);
  }

  // Gated delta rule (cuda_gdn.cu), token by token in every case: chunk_size only selects the
  // chunked (WY) form on the CPU, which gives the same result up to rounding; this first CUDA
  // version ignores it (the recurrent state stays in registers across a chunk's tokens).
  void gated_delta_rule(const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
                        const GdnShape& shape, const AttentionMetadata& meta, int chunk_size, LinearAttnState& state,
                        Tensor out) override {
    use_device();
    const char* op = "gated_delta_rule";
    check_act(qkv, op, "qkv");
    PAGODA_CHECK(a.dtype == qkv.dtype && b.dtype == qkv.dtype && out.dtype == qkv.dtype,
                 "gated_delta_rule: qkv, a, b and out must share the activation dtype (qkv ", dtype_name(qkv.dtype),
                 ", a ", dtype_name(a.dtype), ", b ", dtype_name(b.dtype), ", out ", dtype_name(out.dtype), ")");
    check_dtype(A_log, DType::kF32, op, "A_log");
    check_dtype(dt_bias, DType::kF32, op, "dt_bias");
    check_dtype(state.recurrent, DType::kF32, op, "state.recurrent");
    const int64_t nk = shape.num_k_heads, nv = shape.num_v_heads, dk = shape.k_head_dim, dv = shape.v_head_dim;
    PAGODA_CHECK(nk > 0 && nv > 0 && dk > 0 && dv > 0 && nv % nk == 0, "gated_delta_rule: bad head shape (", nk,
                 " key heads, ", nv, " value heads, dims ", dk, " / ", dv, ")");
    PAGODA_CHECK(dk <= cuda::kMaxGdnKeyHeadDim, "gated_delta_rule: key head dim ", dk,
                 " not supported on the CUDA backend (at most ", cuda::kMaxGdnKeyHeadDim, ")");
    const int64_t T = qkv.rows(), conv_dim = 2 * nk * dk + nv * dv;
    PAGODA_CHECK(qkv.cols() == conv_dim && a.rows() == T && a.cols() == nv && b.rows() == T && b.cols() == nv &&
                     A_log.numel() == nv && dt_bias.numel() == nv && out.rows() == T && out.cols() == nv * dv,
                 "gated_delta_rule: qkv ", qkv.shape_string(), " a ", a.shape_string(), " b ", b.shape_string(),
                 " A_log ", A_log.shape_string(), " dt_bias ", dt_bias.shape_string(), " out ", out.shape_string());
    const Tensor& rs = state.recurrent;
    PAGODA_CHECK(rs.ndim == 4 && rs.dim(1) == nv && rs.dim(2) == dk && rs.dim(3) == dv,
                 "gated_delta_rule: state.recurrent ", rs.shape_string(), " does not match [slots, ", nv, ", ", dk,
                 ", ", dv, "]");
    PAGODA_CHECK(chunk_size >= 0, "gated_delta_rule: negative chunk_size");
    check_state_meta(meta, T, op);
    cuda::launch_gated_delta_rule(qkv.data, a.data, b.data, A_log.ptr<float>(), dt_bias.ptr<float>(),
                                  meta.query_start_loc.ptr<int32_t>(), meta.seq_lens.ptr<int32_t>(),
                                  meta.state_slots.ptr<int32_t>(), meta.num_seqs, T, static_cast<int>(nk),
                                  static_cast<int>(nv), static_cast<int>(dk), static_cast<int>(dv), rs.ptr<float>(),
                                  rs.dim(0), out.data, qkv.dtype, stream_);
  }

 private:
  // Ops may be called from a thread other than the constructing one: make our device current
  // (cudaGetDevice / cudaSetDevice are allowed during stream capture).
  void use_device() {
    int cur = -1;
    PAGODA_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != device_) PAGODA_CUDA_CHECK(cudaSetDevice(device_));
  }

  void check_norm(const char* op, const Tensor& x, const Tensor& weight, const Tensor& out) {
    check_act(x, op, "x");
    PAGODA_CHECK(out.dtype == x.dtype, op, ": out dtype ", dtype_name(out.dtype), " vs x ", dtype_name(x.dtype));
    PAGODA_CHECK(weight.numel() == x.cols() && is_float_weight(weight.dtype), op, ": weight ",
                 dtype_name(weight.dtype), " ", weight.shape_string(), " vs x ", x.shape_string());
    PAGODA_CHECK(out.numel() == x.numel(), op, ": out ", out.shape_string(), " vs x ", x.shape_string());
  }

  // Stream capture of everything `enqueue` launches on stream_, instantiated; *num_nodes (if
  // given): the captured graph's nodes (kernels and copies).
  cudaGraphExec_t record_graph(const std::function<void()>& enqueue, size_t* num_nodes = nullptr) {
    PAGODA_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      enqueue();
    } catch (...) {
      (void)cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();  // the failed capture's error is reported by the exception
      throw;
    }
    PAGODA_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    if (num_nodes != nullptr) {
      const cudaError_t count = cudaGraphGetNodes(graph, nullptr, num_nodes);
      if (count != cudaSuccess) (void)cudaGraphDestroy(graph);
      PAGODA_CUDA_CHECK(count);
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    PAGODA_CUDA_CHECK(err);
    return exec;
  }

  void check_linear(const Tensor& x, const Tensor& weight, const Tensor* bias, const Tensor& out) {
    check_act(x, "linear", "x");
    check_act(out, "linear", "out");
    PAGODA_CHECK(weight.ndim == 2 && is_float_weight(weight.dtype),
                 "linear: weight must be a 2-D F32/BF16/F16 matrix, got ", dtype_name(weight.dtype), " ",
                 weight.shape_string());
    const int64_t T = x.rows(), K = x.cols(), N = weight.dim(0);
    PAGODA_CHECK(weight.dim(1) == K && K > 0, "linear: x ", x.shape_string(), " vs weight ", weight.shape_string());
    PAGODA_CHECK(out.rows() == T && out.cols() == N, "linear: out ", out.shape_string(), ", expected [", T, ", ", N,
                 "]");
    if (bias != nullptr && bias->data != nullptr)
      PAGODA_CHECK(bias->numel() == N && is_float_weight(bias->dtype), "linear: bias ", dtype_name(bias->dtype), " ",
                   bias->shape_string(), " vs N = ", N);
  }

  // One linear through cuBLASLt (or the fallback kernel); arguments checked by check_linear.
  // accumulate (no bias): out += x W^T through cuBLASLt's beta = 1, if cuBLASLt takes the shape;
  // returns false (nothing run) if it does not.
  bool linear_blas(const Tensor& x, const Tensor& weight, const Tensor* bias, const Tensor& out,
                   bool accumulate = false) {
    const int64_t T = x.rows(), K = x.cols(), N = weight.dim(0);
    const bool has_bias = bias != nullptr && bias->data != nullptr;
    PAGODA_ASSERT(!(accumulate && has_bias));
    if (T == 0 || N == 0) return true;
    if (x.dtype == DType::kBF16 && weight.dtype == DType::kBF16) {
      const GemmPlan& plan = gemm_plan(T, N, K, out.dtype, has_bias || accumulate, pointer_alignment(weight.data),
                                       pointer_alignment(x.data), pointer_alignment(out.data));
      if (plan.ok) {
        if (has_bias) cuda::launch_fill_bias_rows(bias->data, bias->dtype, T, N, out.data, out.dtype, stream_);
        const float alpha = 1.0f, beta = has_bias || accumulate ? 1.0f : 0.0f;
        // Column-major view: out^T [N, T] = W[N, K] (stored as K x N, transposed) * x^T [K, T].
        PAGODA_CUBLAS_CHECK(cublasLtMatmul(lt_, plan.desc, &alpha, weight.data, plan.a, x.data, plan.b, &beta, out.data,
                                           plan.c, out.data, plan.c, &plan.algo, gemm_ws_.data(), gemm_ws_.size(),
                                           stream_));
        return true;
      }
    }
    if (accumulate) return false;
    cuda::launch_gemm_fallback(x.data, x.dtype, weight.data, weight.dtype, has_bias ? bias->data : nullptr,
                               has_bias ? bias->dtype : DType::kF32, out.data, out.dtype, T, N, K, stream_);
    return true;
  }

  // Whether the small-batch GEMM can fold rms_norm(x) * norm_weight into its loads: a BF16 norm
  // weight of x's width, 16-byte aligned.
  static bool norm_foldable(const Tensor& x, const Tensor& norm_weight) {
    return norm_weight.dtype == DType::kBF16 && norm_weight.numel() == x.cols() &&
           pointer_alignment(norm_weight.data) >= 16;
  }

  // Whether linears(x, weights, ...) can run as one small-batch GEMM launch; fills g if so.
  bool gemv_applies(const Tensor& x, std::initializer_list<const Tensor*> weights,
                    std::initializer_list<const Tensor*> biases, std::initializer_list<Tensor> outs,
                    cuda::GemvGroups& g) const {
    const int64_t T = x.rows(), K = x.cols();
    if (gemv_mode_ == GemvMode::kOff || x.dtype != DType::kBF16 || T < 1 || T > cuda::kMaxGemvTokens ||
        K % 8 != 0 || pointer_alignment(x.data) < 16 || weights.size() > static_cast<size_t>(cuda::kMaxGemvGroups))
      return false;
    const DType out_dtype = outs.begin()->dtype;
    auto b = biases.begin();
    auto o = outs.begin();
    int64_t rows = 0;
    for (const Tensor* w : weights) {
      const Tensor* bias = *b++;
      const Tensor& out = *o++;
      if (w->dtype != DType::kBF16 || pointer_alignment(w->data) < 16 || out.dtype != out_dtype || w->dim(0) == 0)
        return false;
      const int i = g.count++;
      g.w[i] = w->data;
      g.bias[i] = bias != nullptr ? bias->data : nullptr;
      g.bias_dtype[i] = bias != nullptr ? bias->dtype : DType::kF32;
      g.out[i] = out.data;
      g.n[i] = w->dim(0);
      rows += w->dim(0);
      g.row_end[i] = rows;
    }
    return g.count > 0;
  }

  // PAGODA_CUDA_GEMV=auto: the first time a shape is seen outside a stream capture, both ways are
  // recorded as CUDA graphs of kTuneRuns back-to-back runs and replayed (best of kTuneRounds,
  // alternating); the faster is kept for the shape. During a capture an unseen shape takes
  // cuBLASLt without deciding (ModelRunner runs every shape eagerly before capturing it).
  template <class Gemv, class Blas>
  bool choose_gemv(const Tensor& x, const cuda::GemvGroups& g, DType out_dtype, int mode, const Gemv& run_gemv,
                   const Blas& run_blas, const Tensor* preserve = nullptr) {
    if (gemv_mode_ == GemvMode::kOn) return true;
    // A fixed-size key: this lookup runs on every eager decode linear, so it does not allocate.
    GemvKey key{};
    key[0] = x.rows();
    key[1] = x.cols();
    key[2] = static_cast<int64_t>(out_dtype);
    key[3] = g.count + 8 * mode;
    for (int i = 0; i < g.count; ++i) {
      key[static_cast<size_t>(4 + 2 * i)] = g.n[i];
      key[static_cast<size_t>(5 + 2 * i)] = g.bias[i] == nullptr ? -1 : static_cast<int64_t>(g.bias_dtype[i]);
    }
    auto it = gemv_choices_.find(key);
    if (it != gemv_choices_.end()) return it->second;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    PAGODA_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone) return false;
    constexpr int kTuneRuns = 10, kTuneRounds = 3;
    // preserve: a tensor both ways update in place (linear_add's residual), saved here and put
    // back once timed, so that the call still adds exactly once.
    DeviceBuffer saved;
    if (preserve != nullptr) {
      saved = allocate(preserve->nbytes());
      PAGODA_CUDA_CHECK(
          cudaMemcpyAsync(saved.data(), preserve->data, preserve->nbytes(), cudaMemcpyDeviceToDevice, stream_));
    }
    const auto record = [&](const auto& run) {
      return record_graph([&] {
        for (int i = 0; i < kTuneRuns; ++i) run();
      });
    };
    run_gemv();  // eager first: builds the cuBLASLt plans outside the capture
    run_blas();
    std::array<cudaGraphExec_t, 2> exec{};
    std::array<float, 2> best = {1e30f, 1e30f};
    try {
      exec[0] = record(run_gemv);
      exec[1] = record(run_blas);
      for (int r = 0; r < kTuneRounds; ++r)
        for (int w = 0; w < 2; ++w) {
          PAGODA_CUDA_CHECK(cudaEventRecord(tune_events_[0], stream_));
          PAGODA_CUDA_CHECK(cudaGraphLaunch(exec[static_cast<size_t>(w)], stream_));
          PAGODA_CUDA_CHECK(cudaEventRecord(tune_events_[1], stream_));
          PAGODA_CUDA_CHECK(cudaEventSynchronize(tune_events_[1]));
          float ms = 0.0f;
          PAGODA_CUDA_CHECK(cudaEventElapsedTime(&ms, tune_events_[0], tune_events_[1]));
          best[static_cast<size_t>(w)] = std::min(best[static_cast<size_t>(w)], ms);
        }
    } catch (...) {
      for (cudaGraphExec_t e : exec)
        if (e != nullptr) (void)cudaGraphExecDestroy(e);
      throw;
    }
    for (cudaGraphExec_t e : exec) (void)cudaGraphExecDestroy(e);
    if (preserve != nullptr) {
      PAGODA_CUDA_CHECK(
          cudaMemcpyAsync(preserve->data, saved.data(), preserve->nbytes(), cudaMemcpyDeviceToDevice, stream_));
      PAGODA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `saved` is freed
    }
    const bool gemv = best[0] < best[1];
    gemv_choices_.emplace(key, gemv);
    std::string shape;
    for (int i = 0; i < g.count; ++i) {
      if (i > 0) shape += ",";
      shape += std::to_string(g.n[i]);
    }
    // Weight bytes per microsecond are MB/s; / 1e3 gives GB/s.
    const double weight_bytes = 2.0 * static_cast<double>(g.row_end[g.count - 1]) * static_cast<double>(x.cols());
    const double us_gemv = 1e3 * best[0] / kTuneRuns, us_blas = 1e3 * best[1] / kTuneRuns;
    // What the small-batch GEMM folds in, and what it is timed against.
    const char* folded = mode == cuda::kGemvGated                      ? " gated (SwiGLU)"
                         : mode == cuda::kGemvNorm                     ? " with RMSNorm"
                         : mode == (cuda::kGemvNorm | cuda::kGemvGated) ? " with RMSNorm, gated (SwiGLU)"
                         : mode == cuda::kGemvAdd                      ? " with residual add"
                                                                       : "";
    const char* other = mode == cuda::kGemvGated                      ? "cuBLASLt + silu_and_mul"
                        : mode == cuda::kGemvNorm                     ? "rms_norm + linears"
                        : mode == (cuda::kGemvNorm | cuda::kGemvGated) ? "rms_norm + gate_up_silu"
                        : mode == cuda::kGemvAdd                      ? "cuBLASLt accumulating"
                                                                      : "cuBLASLt";
    log_debug("CUDA linear T=", x.rows(), " K=", x.cols(), " N=[", shape, "]", folded, ": small-batch GEMM ", us_gemv,
              " us (", weight_bytes / us_gemv / 1e3, " GB/s of weights), ", other, " ", us_blas, " us (",
              weight_bytes / us_blas / 1e3, " GB/s): ", gemv ? "small-batch GEMM" : other);
    return gemv;
  }

  // The cuBLASLt plan for out[T, N] (out_dtype) = x[T, K] (BF16) * W[N, K]^T (BF16), built on first
  // use and cached. Pointer alignments are part of the key: cuBLASLt's default assumes 256-byte
  // aligned operands, row slices of a workspace may be less aligned.
  const GemmPlan& gemm_plan(int64_t T, int64_t N, int64_t K, DType out_dtype, bool has_bias, uint32_t align_w,
                            uint32_t align_x, uint32_t align_out) {
    const std::array<int64_t, 8> key = {T, N, K, static_cast<int64_t>(out_dtype), has_bias ? 1 : 0, align_w, align_x,
                                        align_out};
    auto it = plans_.find(key);
    if (it != plans_.end()) return it->second;
    GemmPlan& plan = plans_[key];
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    PAGODA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    PAGODA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    PAGODA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    // Column-major: A = W as K x N (ld K), op(A) = N x K; B = x as K x T (ld K); C = D = out as N x T (ld N).
    const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
    PAGODA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_16BF, u(K), u(N), K));
    PAGODA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_16BF, u(K), u(T), K));
    PAGODA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, cuda_type(out_dtype), u(N), u(T), N));

    cublasLtMatmulPreference_t pref = nullptr;
    PAGODA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = gemm_ws_.size();
    bool ok = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)) ==
              CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_w,
                                                    sizeof(align_w)) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_x,
                                                    sizeof(align_x)) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_out,
                                                    sizeof(align_out)) == CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_out,
                                                    sizeof(align_out)) == CUBLAS_STATUS_SUCCESS;
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    if (ok) {
      const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1,
                                                               &result, &returned);
      ok = st == CUBLAS_STATUS_SUCCESS && returned > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    }
    (void)cublasLtMatmulPreferenceDestroy(pref);
    if (ok) plan.algo = result.algo;
    plan.ok = ok;  // false: linear() runs the fallback kernel for this shape
    return plan;
  }

  // The per-sequence metadata the GDN ops read on the device (sizes only: values cannot be
  // checked without synchronising; see cuda_gdn.h for what bad values do).
  static void check_state_meta(const AttentionMetadata& meta, int64_t T, const char* op) {
    PAGODA_CHECK(meta.num_seqs >= 0 && meta.state_slots.data != nullptr && meta.state_slots.dtype == DType::kI32 &&
                     meta.state_slots.numel() >= meta.num_seqs,
                 op, ": attention metadata carries no state slot per sequence (AttentionMetadata::state_slots)");
    PAGODA_CHECK(meta.query_start_loc.dtype == DType::kI32 && meta.query_start_loc.numel() >= meta.num_seqs + 1 &&
                     (meta.num_seqs == 0 || meta.query_start_loc.data != nullptr),
                 op, ": attention metadata query_start_loc ", meta.query_start_loc.shape_string(), " for ",
                 meta.num_seqs, " sequences");
    PAGODA_CHECK(meta.seq_lens.dtype == DType::kI32 && meta.seq_lens.numel() >= meta.num_seqs &&
                     (meta.num_seqs == 0 || meta.seq_lens.data != nullptr),
                 op, ": attention metadata seq_lens ", meta.seq_lens.shape_string(), " for ", meta.num_seqs,
                 " sequences");
    PAGODA_CHECK(T < (int64_t{1} << 31), op, ": too many tokens (", T, ")");
  }

  // Device table of the experts' weight pointers [gate 0..E | up 0..E | down 0..E], built on the
  // first call for a set of experts and cached, keyed by the first gate pointer. This one-time
  // allocation + upload (at warm-up, before any CUDA graph capture) is the only allocation of
  // moe_experts; later calls compare the cached host copy with the current pointers (host-only
  // work) and rebuild only if the experts changed (e.g. a freed and reused address).
  const void* const* expert_table(const MoeExpertWeights& experts, int64_t H, int64_t I) {
    const size_t E = experts.gate.size();
    std::vector<const void*> ptrs(3 * E);
    const DType wd = experts.gate[0].dtype;
    PAGODA_CHECK(is_float_weight(wd), "moe_experts: expert weights must be BF16, F16 or F32, got ", dtype_name(wd));
    for (size_t e = 0; e < E; ++e) {
      const Tensor& g = experts.gate[e];
      const Tensor& u = experts.up[e];
      const Tensor& d = experts.down[e];
      PAGODA_CHECK(g.dtype == wd && u.dtype == wd && d.dtype == wd, "moe_experts: expert ", e,
                   " weights must all have dtype ", dtype_name(wd), " (gate ", dtype_name(g.dtype), ", up ",
                   dtype_name(u.dtype), ", down ", dtype_name(d.dtype), ")");
      PAGODA_CHECK(g.ndim == 2 && u.ndim == 2 && d.ndim == 2 && g.dim(0) == I && g.dim(1) == H && u.dim(0) == I &&
                       u.dim(1) == H && d.dim(0) == H && d.dim(1) == I,
                   "moe_experts: expert ", e, " gate ", g.shape_string(), " up ", u.shape_string(), " down ",
                   d.shape_string(), ", expected [", I, ", ", H, "] / [", H, ", ", I, "]");
      ptrs[e] = g.data;
      ptrs[E + e] = u.data;
      ptrs[2 * E + e] = d.data;
    }
    for (size_t i = 0; i < ptrs.size(); ++i)
      PAGODA_CHECK(ptrs[i] != nullptr, "moe_experts: expert ", i % E, " has a null ",
                   i < E ? "gate" : (i < 2 * E ? "up" : "down"), " weight");
    const void* key = experts.gate[0].data;
    auto it = expert_tables_.find(key);
    if (it != expert_tables_.end() && it->second.host == ptrs) return static_cast<const void* const*>(it->second.dev.data());
    ExpertTable& tab = expert_tables_[key];
    tab.host = std::move(ptrs);
    tab.dev = allocate(tab.host.size() * sizeof(void*));
    // Pageable source: the copy is staged before cudaMemcpyAsync returns; tab.host stays alive anyway.
    PAGODA_CUDA_CHECK(cudaMemcpyAsync(tab.dev.data(), tab.host.data(), tab.host.size() * sizeof(void*),
                                      cudaMemcpyHostToDevice, stream_));
    return static_cast<const void* const*>(tab.dev.data());
  }

  static GemvMode gemv_mode_from_env() {
    const char* v = std::getenv("PAGODA_CUDA_GEMV");
    const std::string s = v == nullptr ? "auto" : v;
    if (s == "auto" || s.empty()) return GemvMode::kAuto;
    if (s == "on" || s == "1") return GemvMode::kOn;
    if (s == "off" || s == "0") return GemvMode::kOff;
    fail("PAGODA_CUDA_GEMV must be auto, on or off, got '", s, "'");
  }

  // Weight uploads (place_weight) go through kStages page-locked buffers of kStageBytes in turn:
  // host threads copy a piece of the (memory-mapped) checkpoint into one while the GPU copies
  // the piece before it out of another. A copy from pageable memory instead goes through the
  // driver's own staging, filled by one CPU thread. Made at the first weight (each buffer grown
  // up to kStageBytes as pieces need), released by weights_loaded().
  static constexpr int kStages = 2;
  static constexpr size_t kStageBytes = size_t{64} << 20;
  static constexpr size_t kParallelCopyBytes = size_t{4} << 20;  // smaller pieces: one thread
  struct WeightStager {
    struct Slot {
      DeviceBuffer buf;
      cudaEvent_t done = nullptr;  // recorded after the slot's last copy to the device
      bool in_use = false;
    };
    std::array<Slot, kStages> slots;
    int next = 0;
    ThreadPool pool;
    explicit WeightStager(int threads) : pool(threads) {}
    ~WeightStager() {
      for (Slot& s : slots)
        if (s.done != nullptr) (void)cudaEventDestroy(s.done);
    }
    WeightStager(const WeightStager&) = delete;
    WeightStager& operator=(const WeightStager&) = delete;
  };

  void upload_weight(char* dst, const char* src, size_t bytes) {
    use_device();
    if (bytes == 0) return;
    if (stager_ == nullptr) {
      const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
      auto st = std::make_unique<WeightStager>(threads);
      for (WeightStager::Slot& slot : st->slots)
        PAGODA_CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
      stager_ = std::move(st);
    }
    for (size_t off = 0; off < bytes; off += kStageBytes) {
      const size_t n = std::min(kStageBytes, bytes - off);
      WeightStager::Slot& slot = stager_->slots[static_cast<size_t>(stager_->next)];
      stager_->next = (stager_->next + 1) % kStages;
      if (slot.in_use) PAGODA_CUDA_CHECK(cudaEventSynchronize(slot.done));  // its last piece has gone out
      if (slot.buf.size() < n)  // grown on demand (small models never take the whole kStageBytes)
        slot.buf = allocate_host(std::min(kStageBytes, std::max(n, 2 * slot.buf.size())));
      char* stage = static_cast<char*>(slot.buf.data());
      const char* from = src + off;
      if (n < kParallelCopyBytes) {
        std::memcpy(stage, from, n);
      } else {
        stager_->pool.parallel_for(static_cast<int64_t>(n), int64_t{1} << 20, [&](int64_t b, int64_t e) {
          std::memcpy(stage + b, from + b, static_cast<size_t>(e - b));
        });
      }
      PAGODA_CUDA_CHECK(cudaMemcpyAsync(dst + off, stage, n, cudaMemcpyHostToDevice, stream_));
      PAGODA_CUDA_CHECK(cudaEventRecord(slot.done, stream_));
      slot.in_use = true;
    }
  }

  static bool pdl_from_env() {
    const char* v = std::getenv("PAGODA_CUDA_PDL");
    const std::string s = v == nullptr ? "" : v;
    if (s.empty() || s == "off" || s == "0") return false;
    if (s == "on" || s == "1") return true;
    fail("PAGODA_CUDA_PDL must be on or off, got '", s, "'");
  }

  void release() {
    for (cudaEvent_t& e : tune_events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
      e = nullptr;
    }
    for (cudaEvent_t& e : events_) {
      if (e != nullptr) (void)cudaEventDestroy(e);
      e = nullptr;
    }
    for (cudaGraphExec_t g : graphs_) (void)cudaGraphExecDestroy(g);
    graphs_.clear();
    for (auto& [key, plan] : plans_) {
      if (plan.a != nullptr) (void)cublasLtMatrixLayoutDestroy(plan.a);
      if (plan.b != nullptr) (void)cublasLtMatrixLayoutDestroy(plan.b);
      if (plan.c != nullptr) (void)cublasLtMatrixLayoutDestroy(plan.c);
      if (plan.desc != nullptr) (void)cublasLtMatmulDescDestroy(plan.desc);
    }
    plans_.clear();
    expert_tables_.clear();
    stager_.reset();
    gemm_ws_ = DeviceBuffer();
    attn_ws_ = DeviceBuffer();
    if (lt_ != nullptr) (void)cublasLtDestroy(lt_);
    lt_ = nullptr;
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::array<cudaEvent_t, kNumEvents> events_{};
  cublasLtHandle_t lt_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;  // capture_graph's recordings, by id
  DeviceBuffer gemm_ws_;
  DeviceBuffer attn_ws_;
  std::map<std::array<int64_t, 8>, GemmPlan> plans_;
  GemvMode gemv_mode_ = GemvMode::kAuto;      // PAGODA_CUDA_GEMV
  int num_sms_ = 1;
  std::array<cudaEvent_t, 2> tune_events_{};  // choose_gemv's timing
  std::unique_ptr<WeightStager> stager_;      // upload_weight's, until weights_loaded()
  // (T, K, out dtype, weights, then per weight: rows, bias dtype or -1) -> small-batch GEMM or cuBLASLt.
  using GemvKey = std::array<int64_t, 4 + 2 * cuda::kMaxGemvGroups>;
  std::map<GemvKey, bool> gemv_choices_;
  struct ExpertTable {
    std::vector<const void*> host;  // what dev holds
    DeviceBuffer dev;
  };
  std::map<const void*, ExpertTable> expert_tables_;  // see expert_table()
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) {
  const int n = cuda_device_count();
  PAGODA_CHECK(n > 0, "CUDA backend: no CUDA device is visible (or the driver is missing)");
  PAGODA_CHECK(device >= 0 && device < n, "CUDA backend: device ", device, " does not exist (", n, " visible)");
  return std::make_unique<CudaBackend>(device);
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error; no driver / no device means "0 devices"
    return 0;
  }
  return n;
}

}  // namespace pagoda
