// The CPU backend: shape checks, threading and the cheap ops live here (baseline x86-64); the
// hot loops are the per-ISA kernels of cpu_kernels.h.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_gdn.h"
#include "backend/cpu/cpu_sampling.h"
#include "base/thread_pool.h"

namespace pagoda {
namespace cpu {

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

Isa default_isa() {
  if (const char* env = std::getenv("PAGODA_CPU_ISA"); env != nullptr && *env != '\0') {
    const std::string want = env;
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (want == isa_name(isa)) {
        PAGODA_CHECK(isa_supported(isa), "PAGODA_CPU_ISA=", want, ": this CPU does not support it");
        return isa;
      }
    }
    fail("PAGODA_CPU_ISA=", want, ": expected scalar, avx2 or avx512");
  }
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

const CpuKernels& kernels_for(Isa isa) {
  PAGODA_CHECK(isa_supported(isa), "CPU ISA ", isa_name(isa), " is not supported by this CPU");
  switch (isa) {
    case Isa::kAvx512: return avx512_kernels();
    case Isa::kAvx2: return avx2_kernels();
    default: return scalar_kernels();
  }
}

}  // namespace cpu

namespace {

constexpr size_t kAlignment = 64;
// Decode-sized batches stream the weight once through the GEMV kernel (up to 8 rows per pass);
// larger ones go through the packed GEMM, whose W -> f32 packing pays off from about 8 rows on.
constexpr int64_t kGemvMaxRows = 8;
// Below this many weight bytes a GEMV runs on the calling thread (a parallel region costs a few
// microseconds of wake-up and join).
constexpr int64_t kGemvSerialBytes = 65536;
// Elementwise ops: rows per thread chunk are sized to about this many elements, so that tiny
// ops (decode) stay on one thread instead of paying for a parallel region.
constexpr int64_t kElementwiseGrain = 16384;
// Query tokens x query heads of one attention work item (prefill tiles).
constexpr int64_t kAttentionRowsPerItem = 32;
// Smallest context slice of a split decode item (below it the merge costs more than it saves).
constexpr int64_t kMinKeysPerPartition = 256;

void aligned_free(void* p) { std::free(p); }

void* aligned_malloc(size_t bytes) {
  const size_t rounded = std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  void* p = std::aligned_alloc(kAlignment, rounded);
  PAGODA_CHECK(p != nullptr, "CPU backend: out of memory allocating ", bytes, " bytes");
  return p;
}

// Per-thread scratch (packed GEMM panels, attention state), grown on demand and kept for the
// life of the thread, so steady-state forward passes do not allocate.
float* thread_scratch(int64_t floats) {
  struct Scratch {
    float* data = nullptr;
    int64_t size = 0;
    ~Scratch() { std::free(data); }
  };
  thread_local Scratch scratch;
  if (scratch.size < floats) {
    std::free(scratch.data);
    scratch.data = static_cast<float*>(aligned_malloc(static_cast<size_t>(floats) * sizeof(float)));
    scratch.size = floats;
  }
  return scratch.data;
}

bool is_float_weight(DType d) { return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16; }

void check_f32(const Tensor& t, const char* op, const char* what) {
  PAGODA_CHECK(t.dtype == DType::kF32, op, ": ", what, " must be F32, got ", dtype_name(t.dtype));
}

int64_t rows_grain(int64_t cols) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(cols, 1)); }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(cpu::Isa isa) : k_(cpu::kernels_for(isa)), pool_(ThreadPool::global()) {}

  std::string name() const override { return std::string("cpu-") + k_.name; }
  DType activation_dtype() const override { return DType::kF32; }

  DeviceBuffer allocate(size_t bytes) override { return DeviceBuffer(aligned_malloc(bytes), bytes, &aligned_free); }
  void copy_from_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  Tensor place_weight(const Tensor& host, std::vector<DeviceBuffer>*) override { return host; }

  KvCache allocate_kv_cache(int num_layers, int num_blocks, int block_size, int num_kv_heads, int head_dim,
                            DType dtype) override {
    PAGODA_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF8E4M3 || dtype == DType::kF8E5M2,
                 "CPU backend: KV cache dtype must be F32, BF16, F8_E4M3 or F8_E5M2, got ", dtype_name(dtype));
    PAGODA_CHECK(num_layers >= 0 && num_blocks > 0 && block_size > 0 && num_kv_heads > 0 && head_dim > 0,
                 "CPU backend: bad KV cache shape");
    KvCache cache;
    const size_t elems = static_cast<size_t>(num_blocks) * num_kv_heads * block_size * head_dim;
    const size_t half = (elems * dtype_size(dtype) + kAlignment - 1) / kAlignment * kAlignment;
    for (int l = 0; l < num_layers; ++l) {
      DeviceBuffer buf = allocate(2 * half);
      KvCacheLayer layer;
      layer.k = Tensor(buf.data(), dtype, {num_blocks, num_kv_heads, block_size, head_dim});
      layer.v = Tensor(static_cast<char*>(buf.data()) + half, dtype, {num_blocks, num_kv_heads, block_size, head_dim});
      layer.num_blocks = num_blocks;
      layer.block_size = block_size;
      layer.num_kv_heads = num_kv_heads;
      layer.head_dim = head_dim;
      cache.layers.push_back(layer);
      cache.storage.push_back(std::move(buf));
    }
    return cache;
  }
  void synchronize() override {}

  void embedding(const Tensor& ids, const Tensor& table, Tensor out) override {
    PAGODA_CHECK(ids.dtype == DType::kI32, "embedding: ids must be I32");
    check_f32(out, "embedding", "out");
    PAGODA_CHECK(is_float_weight(table.dtype), "embedding: unsupported table dtype ", dtype_name(table.dtype));
    const int64_t T = ids.numel(), H = table.cols(), V = table.rows();
    PAGODA_CHECK(out.rows() == T && out.cols() == H, "embedding: out ", out.shape_string(), " vs ids ",
                 ids.shape_string(), " table ", table.shape_string());
    const int32_t* id = ids.ptr<int32_t>();
    float* o = out.ptr<float>();
    for (int64_t t = 0; t < T; ++t)
      PAGODA_CHECK(id[t] >= 0 && id[t] < V, "embedding: token id ", id[t], " out of range [0, ", V, ")");
    pool_.parallel_for(T, rows_grain(H), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = static_cast<int64_t>(id[t]) * H;
        float* dst = o + t * H;
        switch (table.dtype) {
          case DType::kF32: std::memcpy(dst, table.ptr<float>() + row, H * sizeof(float)); break;
          case DType::kBF16: {
            const uint16_t* src = table.ptr<uint16_t>() + row;
            for (int64_t i = 0; i < H; ++i) dst[i] = bf16_to_f32(src[i]);
            break;
          }
          default: {
            const uint16_t* src = table.ptr<uint16_t>() + row;
            for (int64_t i = 0; i < H; ++i) dst[i] = f16_to_f32(src[i]);
            break;
          }
        }
      }
    });
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    norm_rows("rms_norm", nullptr, x, weight, eps, out);
  }

  void add_rms_norm(Tensor residual, const Tensor& x, const Tensor& weight, float eps, Tensor out) override {
    PAGODA_CHECK(residual.numel() == x.numel(), "add_rms_norm: residual ", residual.shape_string(), " vs x ",
                 x.shape_string());
    check_f32(residual, "add_rms_norm", "residual");
    norm_rows("add_rms_norm", &residual, x, weight, eps, out);
  }

  // Validates one linear and returns its bias pointer/dtype.
  static std::pair<const void*, DType> check_linear(const Tensor& x, const Tensor& weight, const Tensor* bias,
                                                    const Tensor& out) {
    check_f32(x, "linear", "x");
    check_f32(out, "linear", "out");
    PAGODA_CHECK(weight.ndim == 2 && (is_float_weight(weight.dtype) || weight.dtype == DType::kF8E4M3),
                 "linear: weight must be a 2-D F32/BF16/F16/F8_E4M3 matrix, got ", dtype_name(weight.dtype), " ",
                 weight.shape_string());
    PAGODA_CHECK(weight.scale == nullptr ||
                     (weight.dtype == DType::kF8E4M3 && weight.scale_block_n > 0 && weight.scale_block_k > 0),
                 "linear: block scales need an F8_E4M3 weight and positive block sizes, got ", dtype_name(weight.dtype),
                 " with blocks ", weight.scale_block_n, " x ", weight.scale_block_k);
    const int64_t T = x.rows(), K = x.cols(), N = weight.dim(0);
    PAGODA_CHECK(weight.dim(1) == K && K > 0, "linear: x ", x.shape_string(), " vs weight ", weight.shape_string());
    PAGODA_CHECK(out.rows() == T && out.cols() == N, "linear: out ", out.shape_string(), ", expected [", T, ", ", N, "]");
    if (bias != nullptr && bias->data != nullptr) {
      PAGODA_CHECK(bias->numel() == N && is_float_weight(bias->dtype), "linear: bias ", bias->shape_string());
      return {bias->data, bias->dtype};
    }
    return {nullptr, DType::kF32};
  }

  // The kernels' view of a weight's block scales (Tensor::scale).
  static cpu::WeightScales scales_of(const Tensor& w) {
    const int64_t bk = w.scale_block_k > 0 ? w.scale_block_k : 1;
    return cpu::WeightScales{w.scale, w.scale_block_n, bk, (w.dim(1) + bk - 1) / bk};
  }

  // One GEMV job of a (multi-)linear: a weight, its bias and its output; x / T: this job's own
  // input rows (MoE experts), else (x == nullptr) the input of the call.
  struct GemvJob {
    const Tensor* weight;
    const void* bias;
    DType bias_dtype;
    float* out;
    int64_t rows_per_slice = 0;
    int64_t slices = 0;
    const float* x = nullptr;
    int64_t T = 0;
  };

  // Decode path: every job's rows are cut into slices of ~256 KiB of weight (at least 4 per
  // thread) taken dynamically from one atomic counter, so all jobs stream in ONE parallel
  // region; a thread that is descheduled or slower does not hold up the others.
  void run_gemv_jobs(const float* xp, int64_t T, int64_t K, GemvJob* jobs, int n_jobs) {
    const int64_t threads = pool_.num_threads();
    int64_t total_slices = 0, total_bytes = 0;
    for (int j = 0; j < n_jobs; ++j) {
      GemvJob& job = jobs[j];
      const int64_t N = job.weight->dim(0);
      const int64_t row_bytes = K * static_cast<int64_t>(dtype_size(job.weight->dtype));
      int64_t rows = std::max<int64_t>(16, (262144 / row_bytes + 15) / 16 * 16);
      rows = std::max<int64_t>(16, std::min(rows, ((N + 4 * threads - 1) / (4 * threads) + 15) / 16 * 16));
      job.rows_per_slice = rows;
      job.slices = (N + rows - 1) / rows;
      total_slices += job.slices;
      total_bytes += N * row_bytes;
    }
    // Slice i -> (job, slice within it): a linear walk for the few jobs of a linear, a binary
    // search over the jobs' first slices for the many of an MoE layer.
    slice_starts_.resize(static_cast<size_t>(n_jobs) + 1);
    slice_starts_[0] = 0;
    for (int j = 0; j < n_jobs; ++j) slice_starts_[j + 1] = slice_starts_[j] + jobs[j].slices;
    auto run_slice = [&](int64_t i) {
      int j = 0;
      if (n_jobs <= 8) {
        while (i >= jobs[j].slices) i -= jobs[j++].slices;
      } else {
        j = static_cast<int>(std::upper_bound(slice_starts_.begin(), slice_starts_.end(), i) - slice_starts_.begin()) - 1;
        i -= slice_starts_[j];
      }
      const GemvJob& job = jobs[j];
      const int64_t N = job.weight->dim(0);
      const cpu::WeightScales sc = scales_of(*job.weight);
      k_.gemv(job.x != nullptr ? job.x : xp, job.x != nullptr ? job.T : T, K, job.weight->data, job.weight->dtype,
              job.weight->scale != nullptr ? &sc : nullptr, job.bias, job.bias_dtype, i * job.rows_per_slice,
              std::min(N, (i + 1) * job.rows_per_slice), job.out, N);
    };
    if (total_slices == 1 || total_bytes < kGemvSerialBytes) {
      for (int64_t i = 0; i < total_slices; ++i) run_slice(i);
      return;
    }
    std::atomic<int64_t> next{0};
    pool_.run([&](int, int) {
      for (int64_t i = next.fetch_add(1); i < total_slices; i = next.fetch_add(1)) run_slice(i);
    });
  }

  void linears(const Tensor& x, std::initializer_list<const Tensor*> weights, std::initializer_list<const Tensor*> biases,
               std::initializer_list<Tensor> outs) override {
    PAGODA_CHECK(weights.size() == biases.size() && weights.size() == outs.size() && weights.size() <= 8,
                 "linears: weights, biases and outs must match (at most 8)");
    if (x.rows() > kGemvMaxRows) {  // compute-bound: one region per GEMM costs nothing
      Backend::linears(x, weights, biases, outs);
      return;
    }
    GemvJob jobs[8];
    int n = 0;
    auto w = weights.begin();
    auto b = biases.begin();
    for (const Tensor& o : outs) {
      auto [bp, bdt] = check_linear(x, **w, *b, o);
      jobs[n++] = GemvJob{*w, bp, bdt, o.ptr<float>(), 0, 0};
      ++w;
      ++b;
    }
    if (x.rows() == 0) return;
    run_gemv_jobs(x.ptr<float>(), x.rows(), x.cols(), jobs, n);
  }

  void linear(const Tensor& x, const Tensor& weight, const Tensor* bias, Tensor out) override {
    auto [b, bdt] = check_linear(x, weight, bias, out);
    const int64_t T = x.rows(), K = x.cols(), N = weight.dim(0);
    if (T == 0 || N == 0) return;
    const float* xp = x.ptr<float>();
    float* op = out.ptr<float>();
    if (T <= kGemvMaxRows) {
      GemvJob job{&weight, b, bdt, op, 0, 0};
      run_gemv_jobs(xp, T, K, &job, 1);
      return;
    }
    // Work items: column blocks (multiples of the widest micro-tile, 32) x row blocks; the
    // rows are split only when there are too few column blocks to occupy every thread.
    const int64_t threads = pool_.num_threads();
    int64_t nc = cpu::kGemmNc;
    while (nc > 32 && (N + nc - 1) / nc < 2 * threads) nc /= 2;
    const int64_t n_items = (N + nc - 1) / nc;
    int64_t t_parts = 1;
    if (n_items < 2 * threads) t_parts = std::min<int64_t>((2 * threads + n_items - 1) / n_items, (T + 5) / 6);
    const int64_t t_step = ((T + t_parts - 1) / t_parts + 5) / 6 * 6;
    t_parts = (T + t_step - 1) / t_step;
    const int64_t items = n_items * t_parts;
    const cpu::WeightScales sc = scales_of(weight);
    const cpu::WeightScales* scales = weight.scale != nullptr ? &sc : nullptr;
    std::atomic<int64_t> next{0};
    pool_.run([&](int, int) {
      float* scratch = nullptr;
      for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) {
        if (scratch == nullptr) scratch = thread_scratch(cpu::kGemmScratchFloats);
        const int64_t n0 = (i % n_items) * nc, n1 = std::min(N, n0 + nc);
        const int64_t t0 = (i / n_items) * t_step, t1 = std::min(T, t0 + t_step);
        k_.gemm(xp, K, weight.data, weight.dtype, scales, b, bdt, t0, t1, n0, n1, op, N, scratch);
      }
    });
  }

  void rope_cos_sin(const Tensor& positions, const Tensor& inv_freq, float attention_factor, Tensor cos_sin) override {
    check_f32(cos_sin, "rope_cos_sin", "cos_sin");
    check_f32(inv_freq, "rope_cos_sin", "inv_freq");
    PAGODA_CHECK(positions.dtype == DType::kI32 || positions.dtype == DType::kI64, "rope_cos_sin: positions must be I32/I64");
    const int64_t T = positions.numel(), R = cos_sin.cols(), half = R / 2;
    PAGODA_CHECK(cos_sin.rows() == T && R % 2 == 0 && inv_freq.numel() == half, "rope_cos_sin: cos_sin ",
                 cos_sin.shape_string(), " inv_freq ", inv_freq.shape_string(), " positions ", positions.shape_string());
    const float* f = inv_freq.ptr<float>();
    float* cs = cos_sin.ptr<float>();
    pool_.parallel_for(T, rows_grain(R * 8), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float pos = positions.dtype == DType::kI32 ? static_cast<float>(positions.ptr<int32_t>()[t])
                                                         : static_cast<float>(positions.ptr<int64_t>()[t]);
        for (int64_t i = 0; i < half; ++i) {
          // As in transformers: the angle is rounded to f32 first, then cos/sin of it.
          const double angle = static_cast<double>(pos * f[i]);
          cs[t * R + i] = static_cast<float>(std::cos(angle)) * attention_factor;
          cs[t * R + half + i] = static_cast<float>(std::sin(angle)) * attention_factor;
        }
      }
    });
  }

  void rope_and_cache(Tensor q, Tensor k, const Tensor& v, const Tensor& cos_sin, int rotary_dim,
                      const Tensor& slot_mapping, KvCacheLayer& cache) override {
    check_f32(q, "rope_and_cache", "q");
    check_f32(k, "rope_and_cache", "k");
    check_f32(v, "rope_and_cache", "v");
    check_f32(cos_sin, "rope_and_cache", "cos_sin");
    const int64_t D = cache.head_dim, Hk = cache.num_kv_heads;
    const int64_t T = q.ndim == 3 ? q.dim(0) : q.rows();
    const int64_t Hq = q.numel() / std::max<int64_t>(1, T * D);
    PAGODA_CHECK(q.numel() == T * Hq * D && k.numel() == T * Hk * D && v.numel() == T * Hk * D,
                 "rope_and_cache: q ", q.shape_string(), " k ", k.shape_string(), " v ", v.shape_string(),
                 " vs cache heads ", Hk, " head_dim ", D);
    PAGODA_CHECK(rotary_dim % 2 == 0 && rotary_dim <= D && cos_sin.rows() == T && cos_sin.cols() == rotary_dim,
                 "rope_and_cache: rotary_dim ", rotary_dim, " cos_sin ", cos_sin.shape_string());
    PAGODA_CHECK(slot_mapping.dtype == DType::kI32 && slot_mapping.numel() == T, "rope_and_cache: slot_mapping ",
                 slot_mapping.shape_string());
    const int32_t* slots = slot_mapping.ptr<int32_t>();
    const int64_t num_slots = int64_t{cache.num_blocks} * cache.block_size;
    for (int64_t t = 0; t < T; ++t)
      PAGODA_CHECK(slots[t] < num_slots, "rope_and_cache: slot ", slots[t], " beyond the cache (", num_slots, " slots)");
    const int64_t half = rotary_dim / 2;
    float* qp = q.ptr<float>();
    float* kp = k.ptr<float>();
    const float* vp = v.ptr<float>();
    const float* cs = cos_sin.ptr<float>();
    const DType kv_dtype = cache.k.dtype;
    auto rotate = [&](float* x, const float* c) {
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * c[half + i];
        x[i + half] = x2 * c[i] + x1 * c[half + i];
      }
    };
    pool_.parallel_for(T, rows_grain((Hq + 2 * Hk) * D), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* c = cs + t * rotary_dim;
        for (int64_t h = 0; h < Hq; ++h) rotate(qp + (t * Hq + h) * D, c);
        for (int64_t h = 0; h < Hk; ++h) rotate(kp + (t * Hk + h) * D, c);
        if (slots[t] < 0) continue;
        const int64_t block = slots[t] / cache.block_size, offset = slots[t] % cache.block_size;
        for (int64_t h = 0; h < Hk; ++h) {
          const int64_t dst = ((block * Hk + h) * cache.block_size + offset) * D;
          const float* ks = kp + (t * Hk + h) * D;
          const float* vs = vp + (t * Hk + h) * D;
          if (kv_dtype == DType::kBF16) {
            uint16_t* kd = cache.k.ptr<uint16_t>() + dst;
            uint16_t* vd = cache.v.ptr<uint16_t>() + dst;
            for (int64_t i = 0; i < D; ++i) {
              kd[i] = f32_to_bf16(ks[i]);
              vd[i] = f32_to_bf16(vs[i]);
            }
          } else if (kv_dtype == DType::kF8E4M3 || kv_dtype == DType::kF8E5M2) {
            // Unscaled (vLLM's k_scale = v_scale = 1 when the checkpoint has none), saturating.
            uint8_t* kd = static_cast<uint8_t*>(cache.k.data) + dst;
            uint8_t* vd = static_cast<uint8_t*>(cache.v.data) + dst;
            auto encode = kv_dtype == DType::kF8E4M3 ? f32_to_fp8_e4m3 : f32_to_fp8_e5m2;
            for (int64_t i = 0; i < D; ++i) {
              kd[i] = encode(ks[i]);
              vd[i] = encode(vs[i]);
            }
          } else {
            std::memcpy(cache.k.ptr<float>() + dst, ks, D * sizeof(float));
            std::memcpy(cache.v.ptr<float>() + dst, vs, D * sizeof(float));
          }
        }
      }
    });
  }

  void paged_attention(const Tensor& q, const KvCacheLayer& cache, const AttentionMetadata& meta, float scale,
                       Tensor out) override {
    check_f32(q, "paged_attention", "q");
    check_f32(out, "paged_attention", "out");
    const int64_t D = cache.head_dim, Hk = cache.num_kv_heads;
    const int64_t T = meta.num_tokens;
    if (T == 0) return;
    PAGODA_CHECK(T * D > 0 && q.numel() % (T * D) == 0, "paged_attention: q ", q.shape_string(), " vs ", T,
                 " tokens of head_dim ", D);
    const int64_t Hq = q.numel() / (T * D);
    PAGODA_CHECK(Hq % Hk == 0 && out.numel() == q.numel(), "paged_attention: q heads ", Hq, " kv heads ", Hk,
                 " out ", out.shape_string());
    const int64_t G = Hq / Hk;
    const int32_t* qsl = meta.query_start_loc.ptr<int32_t>();
    const int32_t* seq_lens = meta.seq_lens.ptr<int32_t>();
    const int32_t* tables = meta.block_tables.ptr<int32_t>();
    const int64_t max_blocks = meta.block_tables.ndim >= 2 ? meta.block_tables.dim(1) : meta.block_tables.numel();
    const int64_t tokens_per_item = std::max<int64_t>(1, kAttentionRowsPerItem / G);

    items_.clear();
    for (int32_t s = 0; s < meta.num_seqs; ++s) {
      const int32_t q0 = qsl[s], q1 = qsl[s + 1], len = seq_lens[s];
      PAGODA_CHECK(q0 >= 0 && q0 <= q1 && q1 <= T && q1 - q0 <= len, "paged_attention: sequence ", s, " has tokens [",
                   q0, ", ", q1, ") and length ", len);
      PAGODA_CHECK((len + cache.block_size - 1) / cache.block_size <= max_blocks, "paged_attention: sequence ", s,
                   " of length ", len, " needs more blocks than the block table holds");
      for (int32_t b = q0; b < q1; b += static_cast<int32_t>(tokens_per_item)) {
        const int32_t e = static_cast<int32_t>(std::min<int64_t>(q1, b + tokens_per_item));
        for (int32_t h = 0; h < Hk; ++h) items_.push_back({s, h, b, e, len - (q1 - q0) + (b - q0), 0, INT32_MAX, -1});
      }
    }
    split_long_decodes(G, D, meta.sliding_window);
    cpu::AttentionWork base{};
    base.q = q.ptr<float>();
    base.out = out.ptr<float>();
    base.k_cache = cache.k.data;
    base.v_cache = cache.v.data;
    base.kv_dtype = cache.k.dtype;
    base.block_size = cache.block_size;
    base.num_kv_heads = static_cast<int32_t>(Hk);
    base.num_q_heads = static_cast<int32_t>(Hq);
    base.head_dim = static_cast<int32_t>(D);
    base.sliding_window = meta.sliding_window;
    base.scale = scale;
    const int64_t scratch_floats = cpu::attention_scratch_floats(tokens_per_item * G, D);
    const int64_t n = static_cast<int64_t>(items_.size());
    std::atomic<int64_t> next{0};
    auto work = [&](int, int) {
      cpu::AttentionWork w = base;
      for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
        const Item& it = items_[i];
        w.block_table = tables + it.seq * max_blocks;
        w.kv_head = it.kv_head;
        w.q_begin = it.q_begin;
        w.q_end = it.q_end;
        w.first_pos = it.first_pos;
        w.key_begin = it.key_begin;
        w.key_end = it.key_end;
        w.partial = it.partial >= 0 ? partials_.data() + it.partial : nullptr;
        w.scratch = thread_scratch(scratch_floats);
        k_.attention(w);
      }
    };
    if (n == 1) {
      work(0, 1);
    } else {
      pool_.run(work);
    }
    merge_partitions(out.ptr<float>(), Hq, G, D);
  }

  void silu_and_mul(const Tensor& gate, const Tensor& up, Tensor out) override {
    check_f32(gate, "silu_and_mul", "gate");
    check_f32(up, "silu_and_mul", "up");
    check_f32(out, "silu_and_mul", "out");
    PAGODA_CHECK(gate.numel() == up.numel() && out.numel() == gate.numel(), "silu_and_mul: gate ",
                 gate.shape_string(), " up ", up.shape_string(), " out ", out.shape_string());
    const float* g = gate.ptr<float>();
    const float* u = up.ptr<float>();
    float* o = out.ptr<float>();
    pool_.parallel_for(gate.numel(), kElementwiseGrain,
                       [&](int64_t i0, int64_t i1) { k_.silu_and_mul(g + i0, u + i0, o + i0, i1 - i0); });
  }

  void gather_rows(const Tensor& x, const Tensor& indices, Tensor out) override {
    PAGODA_CHECK(indices.dtype == DType::kI32, "gather_rows: indices must be I32");
    const int64_t n = indices.numel(), R = x.rows();
    const size_t row_bytes = static_cast<size_t>(x.cols()) * dtype_size(x.dtype);
    PAGODA_CHECK(out.dtype == x.dtype && out.rows() == n && out.cols() == x.cols(), "gather_rows: x ",
                 x.shape_string(), " out ", out.shape_string());
    const int32_t* idx = indices.ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      PAGODA_CHECK(idx[i] >= 0 && idx[i] < R, "gather_rows: index ", idx[i], " out of range [0, ", R, ")");
      std::memcpy(static_cast<char*>(out.data) + i * row_bytes, static_cast<const char*>(x.data) + idx[i] * row_bytes,
                  row_bytes);
    }
  }

  void feed_tokens(Tensor ids, const Tensor& feed, const Tensor& sampled) override {
    PAGODA_CHECK(ids.dtype == DType::kI32 && feed.dtype == DType::kI32 && sampled.dtype == DType::kI32 &&
                     feed.cols() == 2,
                 "feed_tokens: ids, feed [N, 2] and sampled must be I32 (feed ", feed.shape_string(), ")");
    const int32_t* f = feed.ptr<int32_t>();
    const int32_t* src = sampled.ptr<int32_t>();
    int32_t* dst = ids.ptr<int32_t>();
    for (int64_t i = 0; i < feed.rows(); ++i) {
      const int32_t to = f[2 * i], from = f[2 * i + 1];
      PAGODA_CHECK(to >= 0 && to < ids.numel() && from >= 0 && from < sampled.numel(), "feed_tokens: entry ", i,
                   " (", to, ", ", from, ") out of range");
      dst[to] = src[from];
    }
  }

  void add(Tensor a, const Tensor& b) override {
    check_f32(a, "add", "a");
    check_f32(b, "add", "b");
    PAGODA_CHECK(a.numel() == b.numel(), "add: a ", a.shape_string(), " b ", b.shape_string());
    float* ap = a.ptr<float>();
    const float* bp = b.ptr<float>();
    pool_.parallel_for(a.numel(), kElementwiseGrain, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) ap[i] += bp[i];
    });
  }

  void sample_tokens(const Tensor& logits, const Tensor& rows, Tensor tokens) override {
    check_f32(logits, "sample_tokens", "logits");
    PAGODA_CHECK(logits.ndim == 2 && tokens.dtype == DType::kI32 && tokens.numel() == logits.dim(0) &&
                     rows.nbytes() >= static_cast<size_t>(logits.dim(0)) * sizeof(SamplingRow),
                 "sample_tokens: logits ", logits.shape_string(), " rows ", rows.shape_string(), " tokens ",
                 tokens.shape_string());
    const int64_t R = logits.dim(0), V = logits.dim(1);
    const float* l = logits.ptr<float>();
    const auto* r = static_cast<const SamplingRow*>(rows.data);
    int32_t* out = tokens.ptr<int32_t>();
    pool_.parallel_for(R, 1, [&](int64_t r0, int64_t r1) {
      thread_local cpu::SampleScratch scratch;
      for (int64_t i = r0; i < r1; ++i) out[i] = cpu::sample_row(l + i * V, V, r[i], scratch);
    });
  }

  void compute_logprobs(const Tensor& logits, const Tensor& tokens, Tensor token_logprobs, Tensor top_ids,
                        Tensor top_logprobs) override {
    check_f32(logits, "compute_logprobs", "logits");
    const int64_t N = logits.dim(0), V = logits.dim(1), K = top_ids.cols();
    PAGODA_CHECK(logits.ndim == 2 && tokens.dtype == DType::kI32 && tokens.numel() == N &&
                     token_logprobs.dtype == DType::kF32 && token_logprobs.numel() == N && top_ids.dtype == DType::kI32 &&
                     top_ids.rows() == N && top_logprobs.dtype == DType::kF32 && top_logprobs.rows() == N &&
                     top_logprobs.cols() == K && K >= 1 && K <= V,
                 "compute_logprobs: logits ", logits.shape_string(), " tokens ", tokens.shape_string(), " top_ids ",
                 top_ids.shape_string(), " top_logprobs ", top_logprobs.shape_string());
    const float* l = logits.ptr<float>();
    const int32_t* t = tokens.ptr<int32_t>();
    for (int64_t i = 0; i < N; ++i)
      PAGODA_CHECK(t[i] >= 0 && t[i] < V, "compute_logprobs: token ", t[i], " outside [0, ", V, ")");
    pool_.parallel_for(N, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i)
        cpu::logprobs_row(l + i * V, V, t[i], static_cast<int>(K), token_logprobs.ptr<float>() + i,
                          top_ids.ptr<int32_t>() + i * K, top_logprobs.ptr<float>() + i * K);
    });
  }

  void apply_logit_edits(Tensor logits, const Tensor& rows, const Tensor& edits, const Tensor& offsets) override {
    check_f32(logits, "apply_logit_edits", "logits");
    const int64_t R = logits.dim(0), V = logits.dim(1);
    PAGODA_CHECK(logits.ndim == 2 && offsets.dtype == DType::kI32 && offsets.numel() == R + 1 &&
                     rows.nbytes() >= static_cast<size_t>(R) * sizeof(SamplingRow),
                 "apply_logit_edits: logits ", logits.shape_string(), " rows ", rows.shape_string(), " offsets ",
                 offsets.shape_string());
    float* l = logits.ptr<float>();
    const auto* r = static_cast<const SamplingRow*>(rows.data);
    const auto* e = static_cast<const LogitEdit*>(edits.data);
    const int32_t* off = offsets.ptr<int32_t>();
    PAGODA_CHECK(off[0] >= 0 && edits.nbytes() >= static_cast<size_t>(off[R]) * sizeof(LogitEdit),
                 "apply_logit_edits: ", off[R], " edits, edits ", edits.shape_string());
    for (int64_t i = 0; i < R; ++i)
      for (int32_t j = off[i]; j < off[i + 1]; ++j) {
        PAGODA_CHECK(e[j].token >= 0 && e[j].token < V, "apply_logit_edits: token ", e[j].token, " outside [0, ", V,
                     ")");
        float& x = l[i * V + e[j].token];
        x = apply_logit_edit(x, e[j], r[i]);
      }
  }

  void sigmoid_mul(Tensor x, const Tensor& gate) override { cpu::sigmoid_mul(pool_, x, gate); }
  void rms_norm_gated(const Tensor& x, const Tensor& z, const Tensor& weight, float eps, Tensor out) override {
    cpu::rms_norm_gated(pool_, x, z, weight, eps, out);
  }
  void causal_conv1d(const Tensor& x, const Tensor& weight, const AttentionMetadata& meta, LinearAttnState& state,
                     Tensor out) override {
    cpu::causal_conv1d(pool_, x, weight, meta, state, out);
  }
  void gated_delta_rule(const Tensor& qkv, const Tensor& a, const Tensor& b, const Tensor& A_log, const Tensor& dt_bias,
                        const GdnShape& shape, const AttentionMetadata& meta, int chunk_size, LinearAttnState& state,
                        Tensor out) override {
    cpu::gated_delta_rule(pool_, qkv, a, b, A_log, dt_bias, shape, meta, chunk_size, state, out);
  }

  void moe_route(const Tensor& router_logits, bool renormalize, Tensor ids, Tensor weights) override {
    check_f32(router_logits, "moe_route", "router_logits");
    check_f32(weights, "moe_route", "weights");
    PAGODA_CHECK(ids.dtype == DType::kI32, "moe_route: ids must be I32");
    const int64_t T = router_logits.rows(), E = router_logits.cols(), k = ids.cols();
    PAGODA_CHECK(ids.rows() == T && weights.rows() == T && weights.cols() == k && k > 0 && k <= E,
                 "moe_route: router_logits ", router_logits.shape_string(), " ids ", ids.shape_string(), " weights ",
                 weights.shape_string());
    const float* lp = router_logits.ptr<float>();
    int32_t* ip = ids.ptr<int32_t>();
    float* wp = weights.ptr<float>();
    pool_.parallel_for(T, rows_grain(E * 8), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* l = lp + t * E;
        int32_t* id = ip + t * k;
        float* w = wp + t * k;
        float mx = l[0];
        for (int64_t e = 1; e < E; ++e) mx = std::max(mx, l[e]);
        float sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += std::exp(l[e] - mx);
        // Insertion into the sorted top-k list; strict > keeps the lower id first on ties.
        int64_t n = 0;
        for (int64_t e = 0; e < E; ++e) {
          const float p = std::exp(l[e] - mx) / sum;
          if (n == k && !(p > w[k - 1])) continue;
          int64_t pos = n < k ? n++ : k - 1;
          while (pos > 0 && p > w[pos - 1]) {
            w[pos] = w[pos - 1];
            id[pos] = id[pos - 1];
            --pos;
          }
          w[pos] = p;
          id[pos] = static_cast<int32_t>(e);
        }
        if (renormalize) {
          float s = 0;
          for (int64_t j = 0; j < k; ++j) s += w[j];
          for (int64_t j = 0; j < k; ++j) w[j] /= s;
        }
      }
    });
  }

  void moe_experts(const Tensor& x, const Tensor& ids, const Tensor& weights, const MoeExpertWeights& experts,
                   const MoeScratch& scratch, Tensor out) override {
    check_f32(x, "moe_experts", "x");
    check_f32(out, "moe_experts", "out");
    check_f32(weights, "moe_experts", "weights");
    PAGODA_CHECK(ids.dtype == DType::kI32, "moe_experts: ids must be I32");
    const int64_t T = x.rows(), H = x.cols(), k = ids.cols(), R = T * k;
    const int64_t E = static_cast<int64_t>(experts.gate.size());
    PAGODA_CHECK(E > 0 && experts.up.size() == experts.gate.size() && experts.down.size() == experts.gate.size(),
                 "moe_experts: gate, up and down must list the same number of experts");
    const int64_t I = experts.gate[0].dim(0);
    PAGODA_CHECK(out.rows() == T && out.cols() == H && ids.rows() == T && weights.rows() == T && weights.cols() == k,
                 "moe_experts: x ", x.shape_string(), " ids ", ids.shape_string(), " weights ", weights.shape_string(),
                 " out ", out.shape_string());
    PAGODA_CHECK(scratch.x.rows() >= R && scratch.x.cols() == H && scratch.y.rows() >= R && scratch.y.cols() == H &&
                     scratch.gate.rows() >= R && scratch.gate.cols() == I && scratch.up.rows() >= R &&
                     scratch.up.cols() == I && scratch.row_of_pair.numel() >= R && scratch.pair_of_row.numel() >= R &&
                     scratch.expert_offsets.numel() >= E + 1 && scratch.row_of_pair.dtype == DType::kI32 &&
                     scratch.pair_of_row.dtype == DType::kI32 && scratch.expert_offsets.dtype == DType::kI32,
                 "moe_experts: scratch too small for ", T, " tokens x top-", k, " (H ", H, ", I ", I, ", ", E,
                 " experts)");
    if (T == 0) return;
    const int32_t* id = ids.ptr<int32_t>();
    int32_t* row_of_pair = scratch.row_of_pair.ptr<int32_t>();
    int32_t* pair_of_row = scratch.pair_of_row.ptr<int32_t>();
    int32_t* off = scratch.expert_offsets.ptr<int32_t>();

    // Counting sort of the pairs by expert (stable: token order within an expert).
    std::fill(off, off + E + 1, 0);
    for (int64_t p = 0; p < R; ++p) {
      PAGODA_CHECK(id[p] >= 0 && id[p] < E, "moe_experts: expert id ", id[p], " out of range [0, ", E, ")");
      ++off[id[p] + 1];
    }
    for (int64_t e = 0; e < E; ++e) off[e + 1] += off[e];
    for (int64_t p = 0; p < R; ++p) {
      const int32_t row = off[id[p]]++;
      row_of_pair[p] = row;
      pair_of_row[row] = static_cast<int32_t>(p);
    }
    for (int64_t e = E; e > 0; --e) off[e] = off[e - 1];
    off[0] = 0;

    // Gather the rows of x grouped by expert.
    const float* xp = x.ptr<float>();
    float* xs = scratch.x.ptr<float>();
    pool_.parallel_for(R, rows_grain(H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(xs + r * H, xp + (pair_of_row[r] / k) * H, static_cast<size_t>(H) * sizeof(float));
    });

    // Experts with at most kGemvMaxRows rows (all of them at decode) are GEMVs: their gate / up
    // stream in ONE parallel region, then their downs in another (not two regions per expert).
    // Experts with more rows (prefill, or a popular expert in a big decode batch) run one grouped
    // GEMM each. y may alias x: an expert's down writes only its own rows, after its gate / up
    // read them, whichever path it takes.
    moe_jobs_.clear();
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], r1 = off[e + 1];
      if (r0 == r1) continue;
      PAGODA_CHECK(experts.gate[e].dim(0) == I && experts.up[e].dim(0) == I && experts.gate[e].dim(1) == H &&
                       experts.up[e].dim(1) == H && experts.down[e].dim(0) == H && experts.down[e].dim(1) == I,
                   "moe_experts: expert ", e, " shapes differ from expert 0's (H ", H, ", I ", I, ")");
      if (r1 - r0 > kGemvMaxRows) continue;
      const float* xe = xs + r0 * H;
      moe_jobs_.push_back(GemvJob{&experts.gate[e], nullptr, DType::kF32, scratch.gate.ptr<float>() + r0 * I, 0, 0, xe,
                                  r1 - r0});
      moe_jobs_.push_back(GemvJob{&experts.up[e], nullptr, DType::kF32, scratch.up.ptr<float>() + r0 * I, 0, 0, xe,
                                  r1 - r0});
    }
    if (!moe_jobs_.empty()) {
      run_gemv_jobs(nullptr, 0, H, moe_jobs_.data(), static_cast<int>(moe_jobs_.size()));
      // The SiLU of the GEMV experts' rows: runs of consecutive small experts at once.
      for (int64_t e = 0; e < E;) {
        if (off[e + 1] - off[e] > kGemvMaxRows || off[e + 1] == off[e]) {
          ++e;
          continue;
        }
        const int64_t r0 = off[e];
        while (e < E && off[e + 1] - off[e] <= kGemvMaxRows) ++e;
        const int64_t r1 = off[e];
        silu_and_mul(scratch.gate.slice_rows(r0, r1), scratch.up.slice_rows(r0, r1), scratch.gate.slice_rows(r0, r1));
      }
      moe_jobs_.clear();
      for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = off[e], r1 = off[e + 1];
        if (r0 == r1 || r1 - r0 > kGemvMaxRows) continue;
        moe_jobs_.push_back(GemvJob{&experts.down[e], nullptr, DType::kF32, scratch.y.ptr<float>() + r0 * H, 0, 0,
                                    scratch.gate.ptr<float>() + r0 * I, r1 - r0});
      }
      run_gemv_jobs(nullptr, 0, I, moe_jobs_.data(), static_cast<int>(moe_jobs_.size()));
    }
    for (int64_t e = 0; e < E; ++e) {
      const int64_t r0 = off[e], r1 = off[e + 1];
      if (r1 - r0 <= kGemvMaxRows) continue;
      const Tensor xe = scratch.x.slice_rows(r0, r1);
      Tensor ge = scratch.gate.slice_rows(r0, r1), ue = scratch.up.slice_rows(r0, r1);
      linears(xe, {&experts.gate[e], &experts.up[e]}, {nullptr, nullptr}, {ge, ue});
      silu_and_mul(ge, ue, ge);
      linear(ge, experts.down[e], nullptr, scratch.y.slice_rows(r0, r1));
    }

    // Weighted scatter: out[t] = sum_j w[t, j] * y[row_of_pair(t, j)], in j order.
    const float* ys = scratch.y.ptr<float>();
    const float* wp = weights.ptr<float>();
    float* op = out.ptr<float>();
    pool_.parallel_for(T, rows_grain(H * k), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* o = op + t * H;
        for (int64_t j = 0; j < k; ++j) {
          const float w = wp[t * k + j];
          const float* y = ys + static_cast<int64_t>(row_of_pair[t * k + j]) * H;
          if (j == 0) {
            for (int64_t h = 0; h < H; ++h) o[h] = w * y[h];
          } else {
            for (int64_t h = 0; h < H; ++h) o[h] += w * y[h];
          }
        }
      }
    });
  }

 private:
  struct Item {
    int32_t seq, kv_head, q_begin, q_end, first_pos;
    int32_t key_begin, key_end;  // context positions visited
    int64_t partial;             // offset in partials_ of a split item's state, or -1
  };
  // A decode token of one KV head whose context was split over `parts` items.
  struct Split {
    int32_t token, kv_head, parts;
    int64_t partial;  // parts consecutive blocks of G * (D + 2) floats
  };

  // Flash-decoding: when a batch has too few (sequence, KV head) items to occupy every thread
  // (few sequences, few KV heads, long contexts), decode items are split over the context into
  // partitions of at least kMinKeysPerPartition keys; merge_partitions() combines their
  // softmax states afterwards.
  void split_long_decodes(int64_t G, int64_t D, int32_t window) {
    splits_.clear();
    const int64_t threads = pool_.num_threads();
    const int64_t base = static_cast<int64_t>(items_.size());
    if (base == 0 || base >= 2 * threads) return;
    const int64_t want = (2 * threads + base - 1) / base;
    const int64_t stride = G * (D + 2);
    int64_t floats = 0;
    for (int64_t i = 0; i < base; ++i) {
      const Item it = items_[i];
      if (it.q_end - it.q_begin != 1) continue;
      const int64_t first = window > 0 ? std::max<int64_t>(0, it.first_pos - window + 1) : 0;
      const int64_t keys = it.first_pos + 1 - first;
      const int64_t parts = std::min<int64_t>(want, keys / kMinKeysPerPartition);
      if (parts < 2) continue;
      splits_.push_back({it.q_begin, it.kv_head, static_cast<int32_t>(parts), floats});
      for (int64_t p = 0; p < parts; ++p) {
        // Partition bounds on chunk multiples, so that chunks line up as in the unsplit case.
        auto bound = [&](int64_t j) {
          return j == parts ? it.first_pos + 1
                            : first + (keys * j / parts) / cpu::kAttentionChunk * cpu::kAttentionChunk;
        };
        Item part = it;
        part.key_begin = static_cast<int32_t>(bound(p));
        part.key_end = static_cast<int32_t>(bound(p + 1));
        part.partial = floats;
        floats += stride;
        if (p == 0) {
          items_[i] = part;
        } else {
          items_.push_back(part);
        }
      }
    }
    if (static_cast<int64_t>(partials_.size()) < floats) partials_.resize(floats);
  }

  void merge_partitions(float* out, int64_t Hq, int64_t G, int64_t D) {
    for (const Split& sp : splits_) {
      for (int64_t g = 0; g < G; ++g) {
        float m = -INFINITY;
        for (int32_t p = 0; p < sp.parts; ++p) m = std::max(m, partials_[sp.partial + (p * G + g) * (D + 2) + D]);
        float* dst = out + (int64_t{sp.token} * Hq + sp.kv_head * G + g) * D;
        std::fill(dst, dst + D, 0.0f);
        float l = 0.0f;
        for (int32_t p = 0; p < sp.parts; ++p) {
          const float* part = partials_.data() + sp.partial + (p * G + g) * (D + 2);
          if (part[D + 1] == 0.0f) continue;  // saw no key
          const float weight = std::exp(part[D] - m);
          l += weight * part[D + 1];
          for (int64_t i = 0; i < D; ++i) dst[i] += weight * part[i];
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int64_t i = 0; i < D; ++i) dst[i] *= inv;
      }
    }
  }

  void norm_rows(const char* op, Tensor* residual, const Tensor& x, const Tensor& weight, float eps, Tensor out) {
    check_f32(x, op, "x");
    check_f32(out, op, "out");
    const int64_t H = x.cols(), R = x.rows();
    PAGODA_CHECK(weight.numel() == H && is_float_weight(weight.dtype), op, ": weight ", weight.shape_string(),
                 " vs x ", x.shape_string());
    PAGODA_CHECK(out.numel() == x.numel(), op, ": out ", out.shape_string(), " vs x ", x.shape_string());
    const float* xp = x.ptr<float>();
    float* op_ = out.ptr<float>();
    float* res = residual != nullptr ? residual->ptr<float>() : nullptr;
    pool_.parallel_for(R, rows_grain(H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        if (res != nullptr) {
          k_.rms_norm_row(res + r * H, xp + r * H, weight.data, weight.dtype, eps, H, op_ + r * H);
        } else {
          k_.rms_norm_row(const_cast<float*>(xp + r * H), nullptr, weight.data, weight.dtype, eps, H, op_ + r * H);
        }
      }
    });
  }

  const cpu::CpuKernels& k_;
  ThreadPool& pool_;
  std::vector<Item> items_;
  std::vector<Split> splits_;
  std::vector<float> partials_;
  std::vector<int64_t> slice_starts_;  // run_gemv_jobs: first slice of each job
  std::vector<GemvJob> moe_jobs_;      // moe_experts: the GEMV jobs of all experts of a layer
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(cpu::Isa isa) { return std::make_unique<CpuBackend>(isa); }
std::unique_ptr<Backend> make_cpu_backend() { return make_cpu_backend(cpu::default_isa()); }

}  // namespace pagoda
