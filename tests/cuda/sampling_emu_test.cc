// The CUDA sampling kernels (src/backend/cuda/sampling_kernels.cuh) run on the host under
// tests/cuda/cuda_emu.h, against the CPU backend's sample_tokens / apply_logit_edits on the same
// rows: the kernels' histograms, warp walks, block reductions and the draw are checked on every CI
// run (the GPU itself by CudaOpsTest.SampleTokensMatchesCpu / ApplyLogitEditsMatchesCpu when a
// device is present, with the same criteria: greedy rows exact, at most 0.5% of sampled rows may
// differ — float atomics and exp / log ulps can move a token across a bucket edge — and edits
// exact).
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/sampling_kernels.cuh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "backend/backend.h"
#include "cuda_test_util.h"

namespace pagoda::testing {
namespace {

namespace sk = cuda::sampling_kernels;

// Rows with the eight settings the GPU test uses (greedy, plain temperature, top-k, top-p, min-p
// and their mixes), row r with setting r % 8.
std::vector<SamplingRow> rows_for(int64_t R) {
  std::vector<SamplingRow> rows(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    SamplingRow& s = rows[static_cast<size_t>(r)];
    s.seed = 1000 + static_cast<uint64_t>(r % 7);
    s.offset = static_cast<uint64_t>(r);
    switch (r % 8) {
      case 0: s.temperature = 0.0f; break;
      case 1: s.temperature = 1.0f; break;
      case 2: s = sampling_row(0.7f, 20, 0.8f, 0.0f, s.seed, s.offset); break;
      case 3: s = sampling_row(1.0f, 0, 0.95f, 0.0f, s.seed, s.offset); break;
      case 4: s = sampling_row(1.0f, 0, 1.0f, 0.05f, s.seed, s.offset); break;
      case 5: s = sampling_row(1.2f, 1000, 0.9f, 0.01f, s.seed, s.offset); break;
      case 6: s = sampling_row(0.3f, 5, 1.0f, 0.0f, s.seed, s.offset); break;
      default: s = sampling_row(2.0f, 0, 0.5f, 0.0f, s.seed, s.offset); break;
    }
  }
  return rows;
}

TEST(SamplingKernelsEmulated, SampleTokensMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  auto cpu = make_cpu_backend();
  std::mt19937 rng(31);
  struct Shape {
    int64_t R, V;
  };
  for (const Shape sh : {Shape{24, 151936}, Shape{400, 64}, Shape{48, 3000}}) {
    const int64_t R = sh.R, V = sh.V;
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> logits(static_cast<size_t>(R * V));
    for (float& x : logits) x = nd(rng);
    const std::vector<SamplingRow> rows = rows_for(R);
    std::vector<int32_t> want(static_cast<size_t>(R));
    cpu->sample_tokens(Tensor(logits.data(), DType::kF32, {R, V}),
                       Tensor(const_cast<SamplingRow*>(rows.data()), DType::kI32, {R, kSamplingRowWords}),
                       Tensor(want.data(), DType::kI32, {R}));
    std::vector<int32_t> got(static_cast<size_t>(R), -1);
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(R), 1, 1}, sk::kThreads,
                     [&] { sk::sample_kernel(logits.data(), V, rows.data(), got.data()); });
    int64_t differ = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int32_t g = got[static_cast<size_t>(r)], w = want[static_cast<size_t>(r)];
      ASSERT_TRUE(g >= 0 && g < V) << "row " << r << ": token " << g;
      if (r % 8 == 0) {
        ASSERT_EQ(g, w) << "greedy row " << r;
      }
      differ += g != w;
    }
    EXPECT_LE(differ * 200, R) << differ << " of " << R << " rows differ (V " << V << ")";
    ::testing::Test::RecordProperty(V == 64 ? "differ_v64" : "differ", static_cast<int>(differ));
  }
}

// Many draws from the same few rows (offsets 0..255) at a high temperature, so that tokens near
// each cut are drawn often: a kept set that differs from the CPU backend's by one bucket shows.
TEST(SamplingKernelsEmulated, ManyDrawsNearTheCutsMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  auto cpu = make_cpu_backend();
  std::mt19937 rng(33);
  const int64_t V = 64, kDraws = 256;
  const SamplingRow settings[] = {sampling_row(1.5f, 5, 1.0f, 0.0f, 0, 0), sampling_row(1.5f, 0, 0.5f, 0.0f, 0, 0),
                                  sampling_row(1.5f, 0, 1.0f, 0.2f, 0, 0), sampling_row(1.5f, 10, 0.7f, 0.0f, 0, 0)};
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (const SamplingRow& setting : settings) {
    std::vector<float> row(static_cast<size_t>(V));
    for (float& x : row) x = nd(rng);
    std::vector<float> logits;
    std::vector<SamplingRow> rows;
    for (int64_t d = 0; d < kDraws; ++d) {
      logits.insert(logits.end(), row.begin(), row.end());
      SamplingRow r = setting;
      r.seed = 77;
      r.offset = static_cast<uint64_t>(d);
      rows.push_back(r);
    }
    std::vector<int32_t> want(static_cast<size_t>(kDraws)), got(static_cast<size_t>(kDraws), -1);
    cpu->sample_tokens(Tensor(logits.data(), DType::kF32, {kDraws, V}),
                       Tensor(rows.data(), DType::kI32, {kDraws, kSamplingRowWords}),
                       Tensor(want.data(), DType::kI32, {kDraws}));
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(kDraws), 1, 1}, sk::kThreads,
                     [&] { sk::sample_kernel(logits.data(), V, rows.data(), got.data()); });
    EXPECT_EQ(got, want) << "top_k " << setting.top_k << " top_p " << setting.top_p << " min_p " << setting.min_p;
    EXPECT_GT(std::set<int32_t>(got.begin(), got.end()).size(), 2u);  // really sampled
  }
}

// Raw logprobs: the sampled token's and the top K (ids exact, ties by the lower id; values within
// 1e-5 — FP32 exp in a different summation order).
TEST(SamplingKernelsEmulated, LogprobsMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  auto cpu = make_cpu_backend();
  std::mt19937 rng(34);
  struct Shape {
    int64_t N, V, K;
  };
  for (const Shape sh : {Shape{6, 151936, 20}, Shape{40, 64, 64}, Shape{40, 300, 5}}) {
    const int64_t N = sh.N, V = sh.V, K = sh.K;
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::vector<float> logits(static_cast<size_t>(N * V));
    for (float& x : logits) x = nd(rng);
    // Ties and -inf entries in some rows: order by the lower id.
    for (int64_t r = 0; r < N; r += 3)
      for (int64_t i = 0; i < V; i += 7) logits[static_cast<size_t>(r * V + i)] = i % 2 ? 4.0f : -INFINITY;
    std::vector<int32_t> tokens(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r) tokens[static_cast<size_t>(r)] = static_cast<int32_t>((r * 7919) % V);
    std::vector<float> want_lp(static_cast<size_t>(N)), want_top(static_cast<size_t>(N * K));
    std::vector<int32_t> want_ids(static_cast<size_t>(N * K));
    cpu->compute_logprobs(Tensor(logits.data(), DType::kF32, {N, V}), Tensor(tokens.data(), DType::kI32, {N}),
                          Tensor(want_lp.data(), DType::kF32, {N}), Tensor(want_ids.data(), DType::kI32, {N, K}),
                          Tensor(want_top.data(), DType::kF32, {N, K}));
    std::vector<float> lp(static_cast<size_t>(N), NAN), top(static_cast<size_t>(N * K), NAN);
    std::vector<int32_t> ids(static_cast<size_t>(N * K), -1);
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(N), 1, 1}, sk::kLogprobThreads, [&] {
      sk::logprobs_kernel(logits.data(), V, tokens.data(), static_cast<int>(K), lp.data(), ids.data(), top.data());
    });
    EXPECT_EQ(ids, want_ids) << "V " << V;
    for (size_t i = 0; i < lp.size(); ++i)
      ASSERT_TRUE(lp[i] == want_lp[i] || std::abs(lp[i] - want_lp[i]) <= 1e-5) << "row " << i << ": " << lp[i]
                                                                               << " vs " << want_lp[i];
    for (size_t i = 0; i < top.size(); ++i)
      ASSERT_TRUE(top[i] == want_top[i] || std::abs(top[i] - want_top[i]) <= 1e-5) << "entry " << i << ": " << top[i]
                                                                                   << " vs " << want_top[i];
  }
}

TEST(SamplingKernelsEmulated, ApplyLogitEditsMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  auto cpu = make_cpu_backend();
  std::mt19937 rng(32);
  const int64_t R = 5, V = 151936;
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(R * V));
  for (float& x : logits) x = nd(rng);
  RandomEdits re(R, V, rng);
  std::vector<SamplingRow>& rows = re.rows;
  std::vector<LogitEdit>& edits = re.edits;
  std::vector<int32_t>& offsets = re.offsets;
  const int64_t N = static_cast<int64_t>(edits.size());
  std::vector<float> want = logits;
  cpu->apply_logit_edits(Tensor(want.data(), DType::kF32, {R, V}), Tensor(rows.data(), DType::kI32, {R, kSamplingRowWords}),
                         Tensor(edits.data(), DType::kI32, {N, 4}), Tensor(offsets.data(), DType::kI32, {R + 1}));
  std::vector<float> got = logits;
  cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(R), 1, 1}, 256,
                   [&] { sk::apply_edits_kernel(got.data(), V, rows.data(), edits.data(), offsets.data()); });
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "at " << i;
}

}  // namespace
}  // namespace pagoda::testing
