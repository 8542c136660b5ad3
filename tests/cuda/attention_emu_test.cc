// The CUDA paged-attention kernels run on the host under tests/cuda/cuda_emu.h (fibers for CUDA
// threads; mma.sync, shuffles and __syncthreads emulated, mma with the PTX fragment layouts),
// against the CPU backend's paged attention on the same inputs: the tensor-core prefill kernel
// (attention_mma.cuh) and the CUDA-core kernel with its split-KV partials and their merge
// (attention_kernels.cuh). This checks the kernels' indexing, masking, online softmax, fragment
// bookkeeping and split merge on every CI run; the GPU itself is checked by
// cuda_attention_test.cc when a device is present.
//
// Inputs from attention_case.h (as the GPU test): sequences mixing prefill chunks from position 0,
// chunks after a prior context and decode tokens, GQA groups 1 / 4 / 7 / 16, head_dims each kernel
// takes, with and without a sliding window; long decode contexts cut into 3 and 7 splits. Outputs
// start as NaN.
// Bound |emu - cpu| <= 1e-2 |cpu| + 4e-3: the output is a convex combination of V values in
// [-1, 1]; the kernel rounds the probabilities to BF16 before P V (relative error <= 2^-8 each, so
// <= 2^-8 absolute on the output) and rounds the output to BF16 (<= 2^-8 relative); FP32
// summation order is orders of magnitude below.
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/attention_kernels.cuh"
#include "backend/cuda/attention_mma.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_case.h"

namespace pagoda::testing {
namespace {

namespace mma = cuda::mma_attention;

// The fields both kernels' Params share, as cuda_attention.cu fills them (rows_per_tile: the
// kernel's query rows per block).
template <class P>
P kernel_params(const AttentionCase& a, uint16_t* out, int rows_per_tile) {
  P p{};
  p.q = a.q.data();
  p.out = out;
  p.k_cache = a.k.data();
  p.v_cache = a.v.data();
  p.query_start_loc = a.qsl.data();
  p.seq_lens = a.seq_lens.data();
  p.block_tables = a.tables.data();
  p.num_seqs = a.S;
  p.num_tokens = a.T;
  p.Hq = a.Hq;
  p.Hk = a.Hk;
  p.G = a.Hq / a.Hk;
  p.block_size = a.block_size;
  p.num_blocks = a.num_blocks;
  p.max_blocks_per_seq = a.max_blocks;
  p.tok_per_tile = std::max(1, rows_per_tile / p.G);
  p.window = a.window;
  p.scale_log2 = a.scale * 1.4426950408889634f;
  return p;
}

void run_mma(int D, int Hq, int Hk, int bs, int window, const std::vector<AttnSeq>& seqs, uint32_t seed,
              const std::string& name) {
  const AttentionCase a(D, Hq, Hk, bs, window, seqs, seed);
  // The kernel, with the parameters cuda_attention.cu passes it.
  std::vector<uint16_t> out(a.ref.size(), 0x7fc0);
  const mma::Params p = kernel_params<mma::Params>(a, out.data(), mma::kRows);
  const cuda_emu::Dim3 grid{static_cast<unsigned>(a.T / p.tok_per_tile + a.S), static_cast<unsigned>(Hk), 1};
  if (D == 64) {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<64>(p); });
  } else if (D == 128) {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<128>(p); });
  } else {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<256>(p); });
  }
  a.check(out, name);
}

// The CUDA-core kernel (and, with num_splits > 1, the merge), with the parameters
// cuda_attention.cu passes them.
void run_core(int D, int Hq, int Hk, int bs, int window, const std::vector<AttnSeq>& seqs, int num_splits,
              uint32_t seed, const std::string& name) {
  namespace core = cuda::core_attention;
  const AttentionCase a(D, Hq, Hk, bs, window, seqs, seed);
  std::vector<uint16_t> out(a.ref.size(), 0x7fc0);
  const int64_t rows = static_cast<int64_t>(a.T) * Hq;
  std::vector<float> ws_out(static_cast<size_t>(num_splits * rows * D), NAN), ws_lse(static_cast<size_t>(num_splits * rows), NAN);
  core::Params p = kernel_params<core::Params>(a, out.data(), core::kRows);
  p.ws_out = ws_out.data();
  p.ws_lse = ws_lse.data();
  const cuda_emu::Dim3 grid{static_cast<unsigned>(a.T / p.tok_per_tile + a.S), static_cast<unsigned>(Hk),
                            static_cast<unsigned>(num_splits)};
  const cuda_emu::Dim3 merge_grid{static_cast<unsigned>((rows + core::kWarps - 1) / core::kWarps), 1, 1};
  auto launch = [&](auto d) {
    constexpr int kD = decltype(d)::value;
    cuda_emu::launch(grid, core::kThreads, [&] { core::paged_attention_kernel<kD>(p); });
    if (num_splits > 1)
      cuda_emu::launch(merge_grid, core::kThreads,
                       [&] { core::merge_splits_kernel<kD>(p.ws_out, p.ws_lse, num_splits, rows, p.out); });
  };
  switch (D) {
    case 16: launch(std::integral_constant<int, 16>{}); break;
    case 32: launch(std::integral_constant<int, 32>{}); break;
    case 64: launch(std::integral_constant<int, 64>{}); break;
    case 128: launch(std::integral_constant<int, 128>{}); break;
    default: launch(std::integral_constant<int, 256>{}); break;
  }
  a.check(out, name);
}

std::string case_name(int D, int Hq, int Hk, int window) {
  std::string n = "D";
  n += std::to_string(D);
  n += "_Hq";
  n += std::to_string(Hq);
  n += "_Hk";
  n += std::to_string(Hk);
  n += "_w";
  n += std::to_string(window);
  return n;
}

TEST(AttentionMmaEmulated, MixedBatchesMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (swapcontext) confuse AddressSanitizer's stack tracking";
#endif
  uint32_t seed = 1;
  for (int D : {64, 128, 256})
    for (auto [Hq, Hk] : {std::pair{4, 4}, std::pair{8, 2}, std::pair{14, 2}, std::pair{16, 1}})
      for (int window : {-1, 48})
        run_mma(D, Hq, Hk, 16, window, {{37, 37}, {150, 70}, {300, 1}, {16, 1}, {1, 1}, {65, 33}}, seed++,
                 case_name(D, Hq, Hk, window));
}

// One long chunk after a prior context (many tiles of one sequence), block size 32.
TEST(AttentionMmaEmulated, LongChunkAfterAPriorContextMatchesCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (swapcontext) confuse AddressSanitizer's stack tracking";
#endif
  run_mma(128, 8, 2, 32, -1, {{400, 260}}, 77, "D128_Hq8_Hk2_bs32_long");
  run_mma(64, 14, 2, 32, 100, {{400, 260}}, 78, "D64_Hq14_Hk2_bs32_w100_long");
  run_mma(256, 16, 2, 16, -1, {{300, 200}}, 79, "D256_Hq16_Hk2_bs16_long");  // Qwen3-Next's full attention
}

TEST(AttentionCoreEmulated, MixedBatchesMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (swapcontext) confuse AddressSanitizer's stack tracking";
#endif
  uint32_t seed = 300;
  for (int D : {16, 32, 64, 128, 256})
    for (auto [Hq, Hk] : {std::pair{4, 4}, std::pair{14, 2}, std::pair{16, 1}})
      for (int window : {-1, 48})
        run_core(D, Hq, Hk, 16, window, {{37, 37}, {150, 20}, {300, 1}, {16, 1}, {1, 1}, {65, 33}}, 1, seed++,
                 case_name(D, Hq, Hk, window));
}

// Decode tokens with long contexts, their key ranges cut into splits whose partials are merged.
TEST(AttentionCoreEmulated, SplitKvDecodeMatchesCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (swapcontext) confuse AddressSanitizer's stack tracking";
#endif
  uint32_t seed = 400;
  for (int D : {64, 128, 256})
    for (int splits : {3, 7})
      for (int window : {-1, 300}) {
        std::string name = case_name(D, 8, 2, window);
        name += splits == 3 ? "_s3" : "_s7";
        run_core(D, 8, 2, 16, window, {{1537, 1}, {257, 1}, {40, 1}}, splits, seed++, name);
      }
}

}  // namespace
}  // namespace pagoda::testing
