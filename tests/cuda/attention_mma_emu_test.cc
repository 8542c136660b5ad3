// The tensor-core prefill attention kernel (src/backend/cuda/attention_mma.cuh) run on the host
// under tests/cuda/cuda_emu.h (fibers for CUDA threads; mma.sync, shuffles and __syncthreads
// emulated with the PTX fragment layouts), against the CPU backend's paged attention on the same
// inputs. This checks the kernel's indexing, masking, online softmax and fragment bookkeeping on
// every CI run; the GPU itself is checked by cuda_attention_test.cc when a device is present.
//
// Inputs from attention_case.h (as the GPU test): sequences mixing prefill chunks from position 0,
// chunks after a prior context and decode tokens, GQA groups 1 / 4 / 7 / 16, head_dim 64 / 128,
// with and without a sliding window. Outputs start as NaN.
// Bound |emu - cpu| <= 1e-2 |cpu| + 4e-3: the output is a convex combination of V values in
// [-1, 1]; the kernel rounds the probabilities to BF16 before P V (relative error <= 2^-8 each, so
// <= 2^-8 absolute on the output) and rounds the output to BF16 (<= 2^-8 relative); FP32
// summation order is orders of magnitude below.
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/attention_mma.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "attention_case.h"

namespace pagoda::testing {
namespace {

namespace mma = cuda::mma_attention;

void run_case(int D, int Hq, int Hk, int bs, int window, const std::vector<AttnSeq>& seqs, uint32_t seed,
              const std::string& name) {
  const AttentionCase a(D, Hq, Hk, bs, window, seqs, seed);
  // The kernel, with the parameters cuda_attention.cu passes it.
  std::vector<uint16_t> out(a.ref.size(), 0x7fc0);
  mma::Params p{};
  p.q = a.q.data();
  p.out = out.data();
  p.k_cache = a.k.data();
  p.v_cache = a.v.data();
  p.query_start_loc = a.qsl.data();
  p.seq_lens = a.seq_lens.data();
  p.block_tables = a.tables.data();
  p.num_seqs = a.S;
  p.num_tokens = a.T;
  p.Hq = Hq;
  p.Hk = Hk;
  p.G = Hq / Hk;
  p.block_size = bs;
  p.num_blocks = a.num_blocks;
  p.max_blocks_per_seq = a.max_blocks;
  p.tok_per_tile = std::max(1, mma::kRows / p.G);
  p.window = window;
  p.scale_log2 = a.scale * 1.4426950408889634f;
  const cuda_emu::Dim3 grid{static_cast<unsigned>(a.T / p.tok_per_tile + a.S), static_cast<unsigned>(Hk), 1};
  if (D == 64) {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<64>(p); });
  } else {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<128>(p); });
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
  for (int D : {64, 128})
    for (auto [Hq, Hk] : {std::pair{4, 4}, std::pair{8, 2}, std::pair{14, 2}, std::pair{16, 1}})
      for (int window : {-1, 48})
        run_case(D, Hq, Hk, 16, window, {{37, 37}, {150, 70}, {300, 1}, {16, 1}, {1, 1}, {65, 33}}, seed++,
                 case_name(D, Hq, Hk, window));
}

// One long chunk after a prior context (many tiles of one sequence), block size 32.
TEST(AttentionMmaEmulated, LongChunkAfterAPriorContextMatchesCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (swapcontext) confuse AddressSanitizer's stack tracking";
#endif
  run_case(128, 8, 2, 32, -1, {{400, 260}}, 77, "D128_Hq8_Hk2_bs32_long");
  run_case(64, 14, 2, 32, 100, {{400, 260}}, 78, "D64_Hq14_Hk2_bs32_w100_long");
}

}  // namespace
}  // namespace pagoda::testing
