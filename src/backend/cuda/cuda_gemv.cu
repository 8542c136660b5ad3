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

// The kernel's rows per warp (gemv_kernels::kRowsPerWarp<T>) for a run-time T.
int rows_per_warp(int64_t T) { return T == 1 ? 1 : (T == 2 ? 2 : 4); }
static_assert(gemv_kernels::kRowsPerWarp<1> == 1 && gemv_kernels::kRowsPerWarp<2> == 2 &&
                  gemv_kernels::kRowsPerWarp<3> == 4 && gemv_kernels::kRowsPerWarp<8> == 4,
              "rows_per_warp must agree with the kernel");

int64_t blocks_for(int64_t T, int64_t total_rows, int split) {
  const int64_t warp_rows = (total_rows + rows_per_warp(T) - 1) / rows_per_warp(T);
  const int64_t per_block = kGemvWarps / split;
  return (warp_rows + per_block - 1) / per_block;
}

template <int T>
void launch_t(const void* x, int64_t K, const GemvGroups& g, DType out_dtype, int split, unsigned blocks,
              cudaStream_t stream) {
  const auto* xb = static_cast<const bf16*>(x);
  if (out_dtype == DType::kBF16)
    PAGODA_LAUNCH(blocks, kGemvThreads, 0, stream, gemv_kernel<T, bf16>)(xb, K, g, split);
  else
    PAGODA_LAUNCH(blocks, kGemvThreads, 0, stream, gemv_kernel<T, float>)(xb, K, g, split);
}

}  // namespace

int gemv_split(int64_t T, int64_t total_rows, int64_t K, int num_sms) {
  // Split K while the grid has fewer than two blocks per SM and every part keeps at least 64
  // vectors (two per lane) of each row.
  int split = 1;
  const int64_t kv = K / 8;
  while (split < kGemvWarps && blocks_for(T, total_rows, split) < 2 * int64_t{num_sms} && kv / (2 * split) >= 64)
    split *= 2;
  return split;
}

void launch_gemv(const void* x, int64_t T, int64_t K, const GemvGroups& g, DType out_dtype, int num_sms,
                 cudaStream_t stream) {
  PAGODA_CHECK(T >= 1 && T <= kMaxGemvTokens, "gemv: ", T, " tokens (1 to ", kMaxGemvTokens, ")");
  PAGODA_CHECK(K > 0 && K % 8 == 0, "gemv: K ", K, " is not a positive multiple of 8");
  PAGODA_CHECK(g.count >= 1 && g.count <= kMaxGemvGroups, "gemv: ", g.count, " weights (1 to ", kMaxGemvGroups, ")");
  PAGODA_CHECK(out_dtype == DType::kBF16 || out_dtype == DType::kF32, "gemv: output dtype ", dtype_name(out_dtype));
  PAGODA_CHECK(reinterpret_cast<uintptr_t>(x) % 16 == 0, "gemv: x is not 16-byte aligned");
  for (int i = 0; i < g.count; ++i)
    PAGODA_CHECK(reinterpret_cast<uintptr_t>(g.w[i]) % 16 == 0 && g.n[i] > 0, "gemv: weight ", i,
                 " is not 16-byte aligned or has no rows");
  const int64_t total = g.row_end[g.count - 1];
  const int split = gemv_split(T, total, K, num_sms);
  const int64_t blocks = blocks_for(T, total, split);
  PAGODA_CHECK(blocks <= 0x7fffffff, "gemv: ", total, " rows are too many");
  const auto b = static_cast<unsigned>(blocks);
  switch (T) {
    case 1: launch_t<1>(x, K, g, out_dtype, split, b, stream); break;
    case 2: launch_t<2>(x, K, g, out_dtype, split, b, stream); break;
    case 3: launch_t<3>(x, K, g, out_dtype, split, b, stream); break;
    case 4: launch_t<4>(x, K, g, out_dtype, split, b, stream); break;
    case 5: launch_t<5>(x, K, g, out_dtype, split, b, stream); break;
    case 6: launch_t<6>(x, K, g, out_dtype, split, b, stream); break;
    case 7: launch_t<7>(x, K, g, out_dtype, split, b, stream); break;
    default: launch_t<8>(x, K, g, out_dtype, split, b, stream); break;
  }
  PAGODA_CUDA_CHECK_LAUNCH();
}

}  // namespace pagoda::cuda
