// Launches of the small-batch GEMM kernel (gemv_kernels.cuh); see cuda_gemv.h.
#include "backend/cuda/cuda_gemv.h"

#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv_kernels.cuh"

namespace pagoda::cuda {
namespace {

using gemv_kernels::gemv_kernel;
using gemv_kernels::kGemvThreads;
using gemv_kernels::kGemvWarps;

// The kernel's rows (plain) or pair rows (gated) per warp, gemv_kernels::kUnitsPerWarp, for a
// run-time T.
int units_per_warp(int64_t T, bool gated) {
  const int rows = T == 1 ? 1 : (T == 2 ? 2 : 4);
  return gated ? (rows + 1) / 2 : rows;
}
static_assert(gemv_kernels::kUnitsPerWarp<1, false> == 1 && gemv_kernels::kUnitsPerWarp<2, false> == 2 &&
                  gemv_kernels::kUnitsPerWarp<3, false> == 4 && gemv_kernels::kUnitsPerWarp<8, false> == 4 &&
                  gemv_kernels::kUnitsPerWarp<1, true> == 1 && gemv_kernels::kUnitsPerWarp<2, true> == 1 &&
                  gemv_kernels::kUnitsPerWarp<3, true> == 2 && gemv_kernels::kUnitsPerWarp<8, true> == 2,
              "units_per_warp must agree with the kernel");

int64_t blocks_for(int64_t T, int64_t units, bool gated, int split) {
  const int64_t warp_units = (units + units_per_warp(T, gated) - 1) / units_per_warp(T, gated);
  const int64_t per_block = kGemvWarps / split;
  return (warp_units + per_block - 1) / per_block;
}

template <int T, int kMode>
void launch_t(const void* x, int64_t K, const GemvGroups& g, DType out_dtype, int split, unsigned blocks,
              cudaStream_t stream) {
  const auto* xb = static_cast<const bf16*>(x);
  // F32 outputs (logits, router logits) only from plain and gated launches.
  if constexpr ((kMode & (kGemvNorm | kGemvAdd)) == 0) {
    if (out_dtype == DType::kF32) {
      PAGODA_LAUNCH(blocks, kGemvThreads, 0, stream, gemv_kernel<T, float, kMode>)(xb, K, g, split);
      return;
    }
  }
  PAGODA_LAUNCH(blocks, kGemvThreads, 0, stream, gemv_kernel<T, bf16, kMode>)(xb, K, g, split);
}

template <int kMode>
void launch_mode(const void* x, int64_t T, int64_t K, const GemvGroups& g, DType out_dtype, int split, unsigned b,
                 cudaStream_t stream) {
  switch (T) {
    case 1: launch_t<1, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 2: launch_t<2, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 3: launch_t<3, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 4: launch_t<4, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 5: launch_t<5, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 6: launch_t<6, kMode>(x, K, g, out_dtype, split, b, stream); break;
    case 7: launch_t<7, kMode>(x, K, g, out_dtype, split, b, stream); break;
    default: launch_t<8, kMode>(x, K, g, out_dtype, split, b, stream); break;
  }
}

}  // namespace

int gemv_split(int64_t T, int64_t units, int64_t K, int num_sms, bool gated) {
  // Split K while the grid has fewer than two blocks per SM and every part keeps at least 64
  // vectors (two per lane) of each row.
  int split = 1;
  const int64_t kv = K / 8;
  while (split < kGemvWarps && blocks_for(T, units, gated, split) < 2 * int64_t{num_sms} && kv / (2 * split) >= 64)
    split *= 2;
  return split;
}

void launch_gemv(const void* x, int64_t T, int64_t K, const GemvGroups& g, DType out_dtype, int num_sms,
                 cudaStream_t stream, int mode) {
  const bool gated = (mode & kGemvGated) != 0;
  PAGODA_CHECK(T >= 1 && T <= kMaxGemvTokens, "gemv: ", T, " tokens (1 to ", kMaxGemvTokens, ")");
  PAGODA_CHECK(K > 0 && K % 8 == 0, "gemv: K ", K, " is not a positive multiple of 8");
  PAGODA_CHECK(g.count >= 1 && g.count <= kMaxGemvGroups, "gemv: ", g.count, " weights (1 to ", kMaxGemvGroups, ")");
  PAGODA_CHECK(!gated || (g.count == 2 && g.n[0] == g.n[1] && g.bias[0] == nullptr && g.bias[1] == nullptr),
               "gemv: a gated launch takes gate and up weights of the same shape, without biases");
  PAGODA_CHECK(out_dtype == DType::kBF16 || out_dtype == DType::kF32, "gemv: output dtype ", dtype_name(out_dtype));
  PAGODA_CHECK(mode == 0 || mode == kGemvGated || mode == kGemvNorm || mode == (kGemvNorm | kGemvGated) ||
                   mode == kGemvAdd,
               "gemv: mode ", mode);
  PAGODA_CHECK((mode & (kGemvNorm | kGemvAdd)) == 0 || out_dtype == DType::kBF16, "gemv: mode ", mode,
               " writes BF16 only, not ", dtype_name(out_dtype));
  PAGODA_CHECK((mode & kGemvNorm) == 0 || (g.norm_w != nullptr && reinterpret_cast<uintptr_t>(g.norm_w) % 16 == 0),
               "gemv: the norm weight is missing or not 16-byte aligned");
  PAGODA_CHECK(mode != kGemvAdd || g.count == 1, "gemv: a residual add takes one weight, got ", g.count);
  PAGODA_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0, "gemv: x is not 16-byte aligned");
  for (int i = 0; i < g.count; ++i)
    PAGODA_CHECK(reinterpret_cast<uintptr_t>(g.w[i]) % 16 == 0 && g.n[i] > 0, "gemv: weight ", i,
                 " is not 16-byte aligned or has no rows");
  const int64_t units = gated ? g.n[0] : g.row_end[g.count - 1];
  const int split = gemv_split(T, units, K, num_sms, gated);
  const int64_t blocks = blocks_for(T, units, gated, split);
  PAGODA_CHECK(blocks <= 0x7fffffff, "gemv: ", units, " rows are too many");
  const auto b = static_cast<unsigned>(blocks);
  switch (mode) {
    case 0: launch_mode<0>(x, T, K, g, out_dtype, split, b, stream); break;
    case kGemvGated: launch_mode<kGemvGated>(x, T, K, g, out_dtype, split, b, stream); break;
    case kGemvNorm: launch_mode<kGemvNorm>(x, T, K, g, out_dtype, split, b, stream); break;
    case kGemvNorm | kGemvGated: launch_mode<kGemvNorm | kGemvGated>(x, T, K, g, out_dtype, split, b, stream); break;
    default: launch_mode<kGemvAdd>(x, T, K, g, out_dtype, split, b, stream); break;
  }
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace pagoda::cuda
