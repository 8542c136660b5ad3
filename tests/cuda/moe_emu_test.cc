// The CUDA mixture-of-experts kernels (src/backend/cuda/moe_kernels.cuh: routing, the counting
// sort of (token, expert) pairs, the grouped gate/up and down GEMMs, the weighted scatter) run on
// the host under tests/cuda/cuda_emu.h with F32 and BF16 activations and the grids cuda_moe.cu launches,
// against the CPU backend's moe_route / moe_experts on the same inputs (the GPU itself:
// cuda_hybrid_test.cc). Expert weights BF16, F16 and F32.
// Bounds: routing ids exact (logits distinct with a margin), weights rel 1e-5 + abs 1e-7; expert
// outputs rel 1e-4 + abs 1e-5 of scale with F32 activations (only summation order differs), rel
// 1e-2 + abs 1e-2 of scale with BF16 ones (two BF16 roundings, as cuda_hybrid_test.cc);
// expert offsets exact.
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/moe_kernels.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "cuda_test_util.h"

namespace pagoda::testing {
namespace {

namespace mk = cuda::moe_kernels;



class MoeKernelsEmulated : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_ADDRESS__)
    GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
    cpu_ = make_cpu_backend();
  }
  std::unique_ptr<Backend> cpu_;
};

TEST_F(MoeKernelsEmulated, RouteMatchesCpu) {
  std::mt19937 rng(201);
  for (int64_t E : {8, 64, 512})
    for (int64_t k : {1, 4, 8})
      for (bool renorm : {false, true}) {
        const int64_t T = 7;
        const std::string what = label({{"E", E}, {"k", k}, {"renorm", renorm}});
        std::vector<float> logits = distinct_logits(T, E, rng);
        if (E == 8) logits[3] = logits[5];  // a tie in row 0: the lower id first
        std::vector<int32_t> ref_ids(T * k), ids(T * k, -1);
        std::vector<float> ref_w(T * k), w(T * k, NAN);
        cpu_->moe_route(Tensor(logits.data(), DType::kF32, {T, E}), renorm, Tensor(ref_ids.data(), DType::kI32, {T, k}),
                        Tensor(ref_w.data(), DType::kF32, {T, k}));
        cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(T), 1, 1}, mk::kRouteThreads,
                         [&] { mk::moe_route_kernel(logits.data(), E, static_cast<int>(k), renorm, ids.data(), w.data()); },
                         static_cast<size_t>(E) * sizeof(float));
        EXPECT_EQ(ids, ref_ids) << what;
        EXPECT_TRUE(close(w, ref_w, 1e-5, 1e-7)) << what;
      }
}

struct MoeConfig {
  int64_t E, k, T, H, I;
  DType dtype;
};

template <class TW>
void run_experts(Backend& cpu, const MoeConfig& c, std::mt19937& rng, bool skewed) {
  const int64_t E = c.E, k = c.k, T = c.T, H = c.H, I = c.I, R = T * k;
  std::string what = label({{"E", E}, {"k", k}, {"T", T}, {"H", H}, {"I", I}});
  what += ' ';
  what += dtype_name(c.dtype);
  if (skewed) what += " skewed";
  RandomTensor gate(c.dtype, {E, I, H}, rng, -std::sqrt(3.0f / H), std::sqrt(3.0f / H));
  RandomTensor up(c.dtype, {E, I, H}, rng, -std::sqrt(3.0f / H), std::sqrt(3.0f / H));
  RandomTensor down(c.dtype, {E, H, I}, rng, -std::sqrt(3.0f / I), std::sqrt(3.0f / I));
  MoeExpertWeights ex;
  std::vector<const void*> ptrs(3 * E);
  const size_t es = dtype_size(c.dtype);
  for (int64_t e = 0; e < E; ++e) {
    const size_t off = static_cast<size_t>(e * I * H) * es;
    auto view = [&](RandomTensor& t, int64_t r, int64_t cols) {
      return Tensor(static_cast<char*>(t.tensor().data) + off, c.dtype, {r, cols});
    };
    ex.gate.push_back(view(gate, I, H));
    ex.up.push_back(view(up, I, H));
    ex.down.push_back(view(down, H, I));
    ptrs[e] = ex.gate.back().data;
    ptrs[E + e] = ex.up.back().data;
    ptrs[2 * E + e] = ex.down.back().data;
  }
  std::vector<int32_t> ids(R);
  std::vector<int32_t> perm(E);
  for (int64_t t = 0; t < T; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::copy(perm.begin(), perm.begin() + k, ids.begin() + t * k);
    if (skewed)
      for (int64_t j = 0; j < k; ++j) ids[t * k + j] = static_cast<int32_t>(j % 2 == 0 ? 0 : E - 1);
  }
  const std::vector<float> w = rand_f32(R, rng, 0.05f, 1.0f);
  const std::vector<float> x = rand_bf16(T * H, rng);

  // CPU.
  std::vector<float> ref(T * H);
  CpuMoeScratch cs(R, H, I, E);
  const std::vector<int32_t>& off = cs.offsets;
  std::vector<float> xc = x, wc = w;
  std::vector<int32_t> idc = ids;
  cpu.moe_experts(Tensor(xc.data(), DType::kF32, {T, H}), Tensor(idc.data(), DType::kI32, {T, k}),
                  Tensor(wc.data(), DType::kF32, {T, k}), ex, cs.scratch, Tensor(ref.data(), DType::kF32, {T, H}));

  // The kernels, as cuda_moe.cu launches them: F32 activations, then BF16 ones (what the GPU runs;
  // y aliases x as in the models' scratch).
  auto run = [&](auto tag, double rel, double abs_of_scale) {
    using TA = decltype(tag);
    std::vector<TA> xa(T * H), h_scratch(R * I), xy(R * H), out(T * H);
    for (size_t i = 0; i < xa.size(); ++i) {
      if constexpr (std::is_same_v<TA, float>) {
        xa[i] = x[i];
      } else {
        xa[i] = __float2bfloat16_rn(x[i]);
      }
    }
    std::vector<int32_t> e_rop(R, -7), e_por(R, -7), e_off(E + 1, -7);
    const int64_t tiles = (R + mk::kBM - 1) / mk::kBM + std::min<int64_t>(E, R);
    const unsigned col_tiles_i = static_cast<unsigned>((I + mk::kBN - 1) / mk::kBN);
    const unsigned col_tiles_h = static_cast<unsigned>((H + mk::kBN - 1) / mk::kBN);
    const unsigned sblocks = static_cast<unsigned>((H + mk::kScatterThreads - 1) / mk::kScatterThreads);
    const int Ei = static_cast<int>(E), ki = static_cast<int>(k);
    cuda_emu::launch(cuda_emu::Dim3{1, 1, 1}, mk::kSortThreads,
                     [&] { mk::moe_sort_kernel(ids.data(), R, Ei, e_rop.data(), e_por.data(), e_off.data()); },
                     2 * static_cast<size_t>(E) * sizeof(int));
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(tiles), col_tiles_i, 1}, mk::kGemmThreads, [&] {
      mk::moe_gemm_kernel<TA, TW, true>(xa.data(), e_por.data(), ki, e_off.data(), Ei, ptrs.data(), I, H, h_scratch.data());
    });
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(tiles), col_tiles_h, 1}, mk::kGemmThreads, [&] {
      mk::moe_gemm_kernel<TA, TW, false>(h_scratch.data(), nullptr, ki, e_off.data(), Ei, ptrs.data() + 2 * E, H, I,
                                         xy.data());
    });
    cuda_emu::launch(cuda_emu::Dim3{static_cast<unsigned>(T), sblocks, 1}, mk::kScatterThreads,
                     [&] { mk::moe_scatter_kernel<TA>(xy.data(), w.data(), e_rop.data(), ki, H, out.data()); });
    std::vector<float> got(out.size());
    for (size_t i = 0; i < got.size(); ++i) {
      if constexpr (std::is_same_v<TA, float>) {
        got[i] = out[i];
      } else {
        got[i] = __bfloat162float(out[i]);
      }
    }
    EXPECT_TRUE(close_scaled(got, ref, rel, abs_of_scale)) << what << (std::is_same_v<TA, float> ? " F32" : " BF16");
    EXPECT_EQ(e_off, off) << what << ": expert_offsets";
  };
  run(float{}, 1e-4, 1e-5);
  // BF16 activations: silu(gate) * up and the down projection rounded to BF16 (cuda_hybrid_test.cc's bound).
  run(__nv_bfloat16{}, 1e-2, 1e-2);
}

TEST_F(MoeKernelsEmulated, ExpertsMatchCpu) {
  std::mt19937 rng(202);
  const MoeConfig configs[] = {
      {8, 2, 1, 64, 32, DType::kBF16},    {8, 2, 40, 96, 40, DType::kBF16}, {64, 8, 5, 128, 64, DType::kBF16},
      {32, 2, 33, 37, 29, DType::kBF16},  {16, 4, 9, 64, 48, DType::kF32},  {16, 4, 9, 64, 48, DType::kF16},
  };
  for (const MoeConfig& c : configs)
    for (bool skewed : {false, true}) {
      switch (c.dtype) {
        case DType::kBF16: run_experts<__nv_bfloat16>(*cpu_, c, rng, skewed); break;
        case DType::kF16: run_experts<__half>(*cpu_, c, rng, skewed); break;
        default: run_experts<float>(*cpu_, c, rng, skewed); break;
      }
    }
}

}  // namespace
}  // namespace pagoda::testing
