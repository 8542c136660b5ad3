// Launchers of the CUDA backend's elementwise and row-wise kernels (elementwise_kernels.cuh). Conventions:
//  - all math in FP32; values are converted on load and rounded once on store;
//  - row-wise ops run one thread block per row (blockDim a multiple of 32, at most 1024) and
//    reduce with warp shuffles;
//  - where a row / array is 16-byte aligned and its length a multiple of 16 / sizeof(T), each
//    thread moves 16 bytes at a time (V elements); otherwise one element at a time (V = 1).
//    Both take the same code path, templated on V;
//  - a thread always writes only the elements it read itself, so in-place use (out aliasing an
//    input) is safe.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/elementwise_kernels.cuh"

namespace pagoda::cuda {
namespace {

using namespace elementwise_kernels;  // NOLINT: the kernels

// ---- launch helpers ---------------------------------------------------------------------------
constexpr int kThreads = 256;
// Grid-stride kernels never need more blocks than this to fill a GPU.
constexpr int64_t kMaxBlocks = 65536;

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Threads per row-block: enough for `items` vector items, a multiple of 32, within [32, 1024].
int row_threads(int64_t items) {
  const int64_t t = (items + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(t, 32, 1024));
}

int grid_for(int64_t items) {
  return static_cast<int>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// Calls f.template operator()<T>() for act in {BF16, F32}.
template <class F>
void dispatch_act(DType act, const char* op, F&& f) {
  switch (act) {
    case DType::kBF16: f(bf16{}); break;
    case DType::kF32: f(float{}); break;
    default: fail(op, ": activation dtype must be BF16 or F32, got ", dtype_name(act));
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------------

void launch_embedding(const int32_t* ids, int64_t T, const void* table, DType table_dtype, int64_t V, int64_t H,
                      void* out, DType out_dtype, cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  dispatch_act(out_dtype, "embedding", [&](auto tag) {
    using TO = decltype(tag);
    PAGODA_LAUNCH(static_cast<unsigned>(T), row_threads(H), 0, stream, embedding_kernel<TO>)
    (ids, table, table_dtype, V, H, static_cast<TO*>(out));
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rms_norm(void* residual, const void* x, const void* weight, DType weight_dtype, float eps, int64_t rows,
                     int64_t H, void* out, DType act, cudaStream_t stream) {
  if (rows == 0 || H == 0) return;
  dispatch_act(act, "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const bool vec = H % VV == 0 && aligned16(residual) && aligned16(x) && aligned16(out);  // rows stay aligned
    T* r = static_cast<T*>(residual);
    const T* xp = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    const unsigned grid = static_cast<unsigned>(rows);
    if (vec) {
      PAGODA_LAUNCH(grid, row_threads(H / VV), 0, stream, rms_norm_kernel<T, VV>)
      (r, xp, weight, weight_dtype, eps, H, o);
    } else {
      PAGODA_LAUNCH(grid, row_threads(H), 0, stream, rms_norm_kernel<T, 1>)(r, xp, weight, weight_dtype, eps, H, o);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rms_norm_gated(const void* x, const void* z, const void* weight, DType weight_dtype, float eps,
                           int64_t rows, int64_t d, void* out, DType act, cudaStream_t stream) {
  if (rows == 0 || d == 0) return;
  dispatch_act(act, "rms_norm_gated", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const bool vec = d % VV == 0 && aligned16(x) && aligned16(z) && aligned16(out);
    const T* xp = static_cast<const T*>(x);
    const T* zp = static_cast<const T*>(z);
    T* o = static_cast<T*>(out);
    const unsigned grid = static_cast<unsigned>(rows);
    if (vec) {
      PAGODA_LAUNCH(grid, row_threads(d / VV), 0, stream, rms_norm_gated_kernel<T, VV>)
      (xp, zp, weight, weight_dtype, eps, d, o);
    } else {
      PAGODA_LAUNCH(grid, row_threads(d), 0, stream, rms_norm_gated_kernel<T, 1>)
      (xp, zp, weight, weight_dtype, eps, d, o);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rope_cos_sin(const void* positions, bool positions_i64, int64_t T, const float* inv_freq, int64_t half,
                         float attention_factor, float* cos_sin, cudaStream_t stream) {
  if (T == 0 || half == 0) return;
  PAGODA_LAUNCH(grid_for(T * half), kThreads, 0, stream, rope_cos_sin_kernel)
  (positions, positions_i64, T, inv_freq, half, attention_factor, cos_sin);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_rope_and_cache(void* q, void* k, const void* v, DType act, const void* q_norm, const void* k_norm,
                           DType norm_dtype, float eps, const float* cos_sin, int rotary_dim,
                           const int32_t* slot_mapping, int64_t T, int64_t Hq, int64_t Hk, int64_t D,
                           void* k_cache, void* v_cache, int64_t num_blocks, int64_t block_size,
                           cudaStream_t stream) {
  if (T == 0 || Hq + Hk == 0) return;
  PAGODA_CHECK((q_norm == nullptr) == (k_norm == nullptr), "rope_and_cache: q and k norm weights go together");
  PAGODA_CHECK(T <= 0x7fffffff && (Hq + Hk + kHeadsPerBlock - 1) / kHeadsPerBlock <= 65535,
               "rope_and_cache: ", T, " tokens of ", Hq + Hk, " heads is beyond the launch limits");
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>((Hq + Hk + kHeadsPerBlock - 1) / kHeadsPerBlock));
  dispatch_act(act, "rope_and_cache", [&](auto tag) {
    using T_ = decltype(tag);
    PAGODA_LAUNCH(grid, 32 * kHeadsPerBlock, 0, stream, rope_and_cache_kernel<T_>)
    (static_cast<T_*>(q), static_cast<T_*>(k), static_cast<const T_*>(v), q_norm, k_norm, norm_dtype, eps, cos_sin,
     rotary_dim, slot_mapping, Hq, Hk, D, static_cast<bf16*>(k_cache), static_cast<bf16*>(v_cache),
     num_blocks * block_size);
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_silu_and_mul(const void* gate, const void* up, void* out, int64_t n, DType act, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, "silu_and_mul", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    const T* g = static_cast<const T*>(gate);
    const T* u = static_cast<const T*>(up);
    T* o = static_cast<T*>(out);
    if (n % VV == 0 && aligned16(gate) && aligned16(up) && aligned16(out)) {
      PAGODA_LAUNCH(grid_for(n / VV), kThreads, 0, stream, silu_and_mul_kernel<T, VV>)(g, u, o, n / VV);
    } else {
      PAGODA_LAUNCH(grid_for(n), kThreads, 0, stream, silu_and_mul_kernel<T, 1>)(g, u, o, n);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_add(void* a, const void* b, int64_t n, DType act, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_act(act, "add", [&](auto tag) {
    using T = decltype(tag);
    constexpr int VV = 16 / sizeof(T);
    T* ap = static_cast<T*>(a);
    const T* bp = static_cast<const T*>(b);
    if (n % VV == 0 && aligned16(a) && aligned16(b)) {
      PAGODA_LAUNCH(grid_for(n / VV), kThreads, 0, stream, add_kernel<T, VV>)(ap, bp, n / VV);
    } else {
      PAGODA_LAUNCH(grid_for(n), kThreads, 0, stream, add_kernel<T, 1>)(ap, bp, n);
    }
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_sigmoid_mul(void* x, const void* gate, DType gate_dtype, bool gate_broadcast, int64_t R, int64_t N,
                        DType act, cudaStream_t stream) {
  if (R == 0 || N == 0) return;
  dispatch_act(act, "sigmoid_mul", [&](auto tag) {
    using T = decltype(tag);
    PAGODA_LAUNCH(grid_for(R * N), kThreads, 0, stream, sigmoid_mul_kernel<T>)
    (static_cast<T*>(x), gate, gate_dtype, gate_broadcast, R, N);
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_gather_rows(const void* x, int64_t R, size_t row_bytes, const int32_t* indices, int64_t n, void* out,
                        cudaStream_t stream) {
  if (n == 0 || row_bytes == 0) return;
  const unsigned grid = static_cast<unsigned>(n);
  if (row_bytes % 16 == 0 && aligned16(x) && aligned16(out)) {
    const int64_t units = static_cast<int64_t>(row_bytes / 16);
    PAGODA_LAUNCH(grid, row_threads(units), 0, stream, gather_rows_kernel<uint4>)
    (static_cast<const uint4*>(x), R, units, indices, static_cast<uint4*>(out));
  } else {
    const int64_t units = static_cast<int64_t>(row_bytes);
    PAGODA_LAUNCH(grid, row_threads(units), 0, stream, gather_rows_kernel<unsigned char>)
    (static_cast<const unsigned char*>(x), R, units, indices, static_cast<unsigned char*>(out));
  }
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_feed_tokens(int32_t* ids, const int32_t* feed, int64_t n, const int32_t* sampled, cudaStream_t stream) {
  if (n == 0) return;
  PAGODA_LAUNCH(grid_for(n), kThreads, 0, stream, feed_tokens_kernel)(ids, feed, n, sampled);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_fill_bias_rows(const void* bias, DType bias_dtype, int64_t T, int64_t N, void* out, DType out_dtype,
                           cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  dispatch_act(out_dtype, "linear", [&](auto tag) {
    using TO = decltype(tag);
    PAGODA_LAUNCH(grid_for(T * N), kThreads, 0, stream, fill_bias_rows_kernel<TO>)
    (bias, bias_dtype, T, N, static_cast<TO*>(out));
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_gemm_fallback(const void* x, DType x_dtype, const void* w, DType w_dtype, const void* bias,
                          DType bias_dtype, void* out, DType out_dtype, int64_t T, int64_t N, int64_t K,
                          cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  PAGODA_CHECK((T + kTile - 1) / kTile <= 65535, "linear: ", T, " rows are too many for the fallback GEMM");
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile), static_cast<unsigned>((T + kTile - 1) / kTile));
  dispatch_act(x_dtype, "linear", [&](auto xtag) {
    using TX = decltype(xtag);
    dispatch_act(out_dtype, "linear", [&](auto otag) {
      using TO = decltype(otag);
      PAGODA_LAUNCH(grid, block, 0, stream, gemm_fallback_kernel<TX, TO>)
      (static_cast<const TX*>(x), w, w_dtype, bias, bias_dtype, static_cast<TO*>(out), T, N, K);
    });
  });
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace pagoda::cuda
