// The tensor-core prefill attention kernel (src/backend/cuda/attention_mma.cuh) run on the host
// under tests/cuda/cuda_emu.h (fibers for CUDA threads; mma.sync, shuffles and __syncthreads
// emulated with the PTX fragment layouts), against the CPU backend's paged attention on the same
// inputs. This checks the kernel's indexing, masking, online softmax and fragment bookkeeping on
// every CI run; the GPU itself is checked by cuda_attention_test.cc when a device is present.
//
// Inputs as in cuda_attention_test.cc: q, K, V random in [-1, 1] rounded to BF16, identical values
// in both layouts, block tables a random permutation of the pool, sequences mixing prefill chunks
// from position 0, chunks after a prior context and decode tokens, GQA groups 1 / 4 / 7 / 16,
// head_dim 64 / 128, with and without a sliding window. Outputs start as NaN.
// Bound |emu - cpu| <= 1e-2 |cpu| + 4e-3: the output is a convex combination of V values in
// [-1, 1]; the kernel rounds the probabilities to BF16 before P V (relative error <= 2^-8 each, so
// <= 2^-8 absolute on the output) and rounds the output to BF16 (<= 2^-8 relative); FP32
// summation order is orders of magnitude below.
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/attention_mma.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../backend/test_util.h"
#include "backend/backend.h"

namespace pagoda::testing {
namespace {

namespace mma = cuda::mma_attention;

struct Seq {
  int ctx;   // context length after this step
  int qlen;  // query tokens this step (the last qlen positions)
};

void run_case(int D, int Hq, int Hk, int bs, int window, const std::vector<Seq>& seqs, uint32_t seed,
              const std::string& name) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto rnd = [&](size_t n) {
    std::vector<uint16_t> v(n);
    for (uint16_t& x : v) x = f32_to_bf16(dist(rng));
    return v;
  };
  const int S = static_cast<int>(seqs.size());
  std::vector<int32_t> qsl(S + 1, 0), seq_lens(S);
  int max_blocks = 1, max_q = 0, max_ctx = 0, total_blocks = 0;
  for (int s = 0; s < S; ++s) {
    qsl[s + 1] = qsl[s] + seqs[s].qlen;
    seq_lens[s] = seqs[s].ctx;
    const int nb = (seqs[s].ctx + bs - 1) / bs;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
    max_q = std::max(max_q, seqs[s].qlen);
    max_ctx = std::max(max_ctx, seqs[s].ctx);
  }
  const int T = qsl[S];
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(S) * max_blocks);
  int next = 0;
  for (int s = 0; s < S; ++s)
    for (int b = 0; b < max_blocks; ++b)
      tables[s * max_blocks + b] = b < (seqs[s].ctx + bs - 1) / bs ? perm[next++] : perm[num_blocks - 1];

  const size_t cache_elems = static_cast<size_t>(num_blocks) * bs * Hk * D;
  const std::vector<uint16_t> gk = rnd(cache_elems), gv = rnd(cache_elems);  // [blocks, bs, Hk, D]
  auto cpu = make_cpu_backend();
  KvCache ckv = cpu->allocate_kv_cache(1, num_blocks, bs, Hk, D, DType::kBF16);  // [blocks, Hk, bs, D]
  uint16_t* ck = ckv.layers[0].k.ptr<uint16_t>();
  uint16_t* cv = ckv.layers[0].v.ptr<uint16_t>();
  for (int b = 0; b < num_blocks; ++b)
    for (int o = 0; o < bs; ++o)
      for (int h = 0; h < Hk; ++h)
        for (int d = 0; d < D; ++d) {
          const size_t g = ((static_cast<size_t>(b) * bs + o) * Hk + h) * D + d;
          const size_t c = ((static_cast<size_t>(b) * Hk + h) * bs + o) * D + d;
          ck[c] = gk[g];
          cv[c] = gv[g];
        }
  const std::vector<uint16_t> qh = rnd(static_cast<size_t>(T) * Hq * D);
  std::vector<float> q(qh.size());
  for (size_t i = 0; i < qh.size(); ++i) q[i] = bf16_to_f32(qh[i]);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  std::vector<int32_t> slots(T, -1);
  AttentionMetadata m;
  m.query_start_loc = Tensor(qsl.data(), DType::kI32, {S + 1});
  m.seq_lens = Tensor(seq_lens.data(), DType::kI32, {S});
  m.block_tables = Tensor(tables.data(), DType::kI32, {S, max_blocks});
  m.slot_mapping = Tensor(slots.data(), DType::kI32, {T});
  m.num_seqs = S;
  m.num_tokens = T;
  m.max_query_len = max_q;
  m.max_seq_len = max_ctx;
  m.sliding_window = window;
  std::vector<float> ref(static_cast<size_t>(T) * Hq * D, 0.0f);
  cpu->paged_attention(Tensor(q.data(), DType::kF32, {T, Hq, D}), ckv.layers[0], m, scale,
                       Tensor(ref.data(), DType::kF32, {T, Hq, D}));

  // The kernel, with the parameters cuda_attention.cu passes it.
  std::vector<uint16_t> out(ref.size(), 0x7fc0);
  mma::Params p{};
  p.q = qh.data();
  p.out = out.data();
  p.k_cache = gk.data();
  p.v_cache = gv.data();
  p.query_start_loc = qsl.data();
  p.seq_lens = seq_lens.data();
  p.block_tables = tables.data();
  p.num_seqs = S;
  p.num_tokens = T;
  p.Hq = Hq;
  p.Hk = Hk;
  p.G = Hq / Hk;
  p.block_size = bs;
  p.num_blocks = num_blocks;
  p.max_blocks_per_seq = max_blocks;
  p.tok_per_tile = std::max(1, mma::kRows / p.G);
  p.window = window;
  p.scale_log2 = scale * 1.4426950408889634f;
  const cuda_emu::Dim3 grid{static_cast<unsigned>(T / p.tok_per_tile + S), static_cast<unsigned>(Hk), 1};
  if (D == 64) {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<64>(p); });
  } else {
    cuda_emu::launch(grid, mma::kThreads, [&] { mma::paged_attention_mma_kernel<128>(p); });
  }

  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double g = bf16_to_f32(out[i]), r = ref[i];
    ASSERT_TRUE(std::isfinite(g) && std::abs(g - r) <= 1e-2 * std::abs(r) + 4e-3)
        << name << ": element " << i << " (token " << i / (Hq * D) << ", head " << (i / D) % Hq << ", dim " << i % D
        << "): kernel " << g << ", cpu " << r;
    worst = std::max(worst, std::abs(g - r));
  }
  ::testing::Test::RecordProperty(name, std::to_string(worst));
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
