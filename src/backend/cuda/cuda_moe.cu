// Mixture-of-experts kernels of the CUDA backend (launchers: cuda_moe.h). All math in FP32;
// activations and weights are converted on load and results rounded once on store.
//
// moe_route: one block (256 threads) per token. The block computes the softmax of the token's
// logits into shared memory (block max, block sum, p = exp(l - max) / sum), then picks the top k
// in k rounds of a block-wide argmax (ties: lower id), removing each winner from the candidates.
// Thread 0 writes ids / weights (renormalised in j order when asked).
//
// moe_experts, four kernels, no host loop over experts and no host-side counts:
//  1. sort (one block of 1024 threads): counting sort of the R = T * top_k (token, expert) pairs
//     by expert: per-expert counts (shared-memory atomics), exclusive scan -> expert_offsets,
//     then every pair takes the next row of its expert (row_of_pair / pair_of_row). Rows of one
//     expert are in arbitrary order (atomics), which changes nothing in the result: each row's
//     outputs are computed on their own, always with the same summation order.
//  2. gate/up grouped GEMM: grid (row tiles, I / 64 column tiles). The row tiles of all experts
//     are numbered expert by expert; a block finds its expert and tile from expert_offsets on
//     the device (a block scan of per-expert tile counts) and exits when the tile number is past
//     the last tile (the grid is sized for the worst case, ceil(R / 32) + min(E, R) tiles). The
//     A tile is gathered directly from x through pair_of_row (no separate gather pass; scratch.x
//     is not used). Both gate and up accumulate in the same block (FP32) and the epilogue stores
//     silu(gate) * up into MoeScratch::gate.
//  3. down grouped GEMM, same tiling over MoeScratch::gate -> MoeScratch::y.
//  4. weighted scatter: one thread per (token, column), out[t] = sum_j w[t, j] * y[row(t, j)]
//     summed in j order (deterministic).
// The GEMM tile is 32 rows x 64 columns x 32 k (256 threads, 2 x 4 outputs each; both operands
// staged in shared memory as FP32). Plain FMA, no tensor cores: correct and reasonably parallel;
// for decode (a few rows per expert) it streams each selected expert's weights once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/convert.cuh"
#include "backend/cuda/cuda_moe.h"
#include "backend/cuda/moe_kernels.cuh"

namespace pagoda::cuda {

// ---- host launchers ----------------------------------------------------------------------------
namespace {

using namespace moe_kernels;  // NOLINT: the kernels and their constants

template <class TA, class TW>
void launch_experts_typed(const MoeExpertsArgs& g, cudaStream_t stream) {
  const int64_t R = g.T * g.top_k;
  const int E = static_cast<int>(g.E), k = static_cast<int>(g.top_k);
  // Upper bound on the row tiles: sum_e ceil(c_e / BM) <= R / BM + (number of non-empty experts).
  const int64_t tiles = (R + kBM - 1) / kBM + std::min<int64_t>(g.E, R);
  const int64_t col_tiles_i = (g.I + kBN - 1) / kBN, col_tiles_h = (g.H + kBN - 1) / kBN;
  const int64_t sblocks = (g.H + kScatterThreads - 1) / kScatterThreads;
  PAGODA_CHECK(tiles <= 0x7fffffff && col_tiles_i <= 65535 && col_tiles_h <= 65535 && g.T <= 0x7fffffff &&
                   sblocks <= 65535,
               "moe_experts: problem too large for one launch (R ", R, ", H ", g.H, ", I ", g.I, ")");
  PAGODA_LAUNCH(1, kSortThreads, 2 * static_cast<size_t>(E) * sizeof(int), stream, moe_sort_kernel)
  (g.ids, R, E, g.row_of_pair, g.pair_of_row, g.expert_offsets);
  PAGODA_CUDA_CHECK_LAUNCH();
  const auto* const* wp = g.expert_ptrs;
  PAGODA_LAUNCH(dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(col_tiles_i)), kGemmThreads, 0, stream,
                moe_gemm_kernel<TA, TW, true>)
  (static_cast<const TA*>(g.x), g.pair_of_row, k, g.expert_offsets, E, wp, g.I, g.H, static_cast<TA*>(g.h_scratch));
  PAGODA_CUDA_CHECK_LAUNCH();
  PAGODA_LAUNCH(dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(col_tiles_h)), kGemmThreads, 0, stream,
                moe_gemm_kernel<TA, TW, false>)
  (static_cast<const TA*>(g.h_scratch), nullptr, k, g.expert_offsets, E, wp + 2 * g.E, g.H, g.I,
   static_cast<TA*>(g.y_scratch));
  PAGODA_CUDA_CHECK_LAUNCH();
  PAGODA_LAUNCH(dim3(static_cast<unsigned>(g.T), static_cast<unsigned>(sblocks)), kScatterThreads, 0, stream,
                moe_scatter_kernel<TA>)
  (static_cast<const TA*>(g.y_scratch), g.weights, g.row_of_pair, k, g.H, static_cast<TA*>(g.out));
  PAGODA_CUDA_CHECK_LAUNCH();
}

template <class TA>
void dispatch_weight(const MoeExpertsArgs& g, cudaStream_t stream) {
  switch (g.weight_dtype) {
    case DType::kBF16: launch_experts_typed<TA, bf16>(g, stream); break;
    case DType::kF16: launch_experts_typed<TA, __half>(g, stream); break;
    case DType::kF32: launch_experts_typed<TA, float>(g, stream); break;
    default: fail("moe_experts: expert weights must be BF16, F16 or F32, got ", dtype_name(g.weight_dtype));
  }
}

}  // namespace

void launch_moe_route(const float* logits, int64_t T, int64_t E, int64_t top_k, bool renormalize, int32_t* ids,
                      float* weights, cudaStream_t stream) {
  if (T == 0) return;
  PAGODA_CHECK(E > 0 && E <= kMoeRouteMaxExperts && top_k > 0 && top_k <= kMoeMaxTopK && top_k <= E,
               "moe_route: ", E, " experts / top-", top_k, " not supported (at most ", kMoeRouteMaxExperts,
               " experts, top-", kMoeMaxTopK, ")");
  PAGODA_CHECK(T <= 0x7fffffff, "moe_route: too many tokens");
  PAGODA_LAUNCH(static_cast<unsigned>(T), kRouteThreads, static_cast<size_t>(E) * sizeof(float), stream,
                moe_route_kernel)
  (logits, E, static_cast<int>(top_k), renormalize, ids, weights);
  PAGODA_CUDA_CHECK_LAUNCH();
}

void launch_moe_experts(const MoeExpertsArgs& args, cudaStream_t stream) {
  if (args.T == 0 || args.H == 0) return;
  PAGODA_CHECK(args.E > 0 && args.E <= kMoeMaxExperts && args.top_k > 0 && args.top_k <= kMoeMaxTopK &&
                   args.I > 0,
               "moe_experts: ", args.E, " experts / top-", args.top_k, " / I ", args.I, " not supported (at most ",
               kMoeMaxExperts, " experts, top-", kMoeMaxTopK, ")");
  PAGODA_CHECK(args.T * args.top_k <= INT_MAX, "moe_experts: too many (token, expert) pairs");
  switch (args.act) {
    case DType::kBF16: dispatch_weight<bf16>(args, stream); break;
    case DType::kF32: dispatch_weight<float>(args, stream); break;
    default: fail("moe_experts: activation dtype must be BF16 or F32, got ", dtype_name(args.act));
  }
}

}  // namespace pagoda::cuda
