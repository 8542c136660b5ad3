// Block-scaled FP8 (E4M3) weights in linear, linears and moe_experts, on every ISA. The value of
// weight element (n, k) is decode(code) * scale of its block (Tensor::scale); the reference is
// that product summed in double. Granularities: per tensor, per output channel, 128 x 128 blocks
// (Qwen / DeepSeek FP8 checkpoints), small blocks (many per row), block widths that are not a
// multiple of the vector width, and blocks that do not divide the weight (partial edge blocks).
// Codes are drawn from all 254 finite E4M3 codes (subnormals included), scales over 2^-12 .. 2^2.
//
// Bounds:
//  - against the double reference: max|out - ref| <= 1e-5 * sqrt(K) * max(1, max|ref|), as for
//    the other weight dtypes (linear_test.cc);
//  - prefill (GEMM, more than 8 rows) packs each weight as the f32 product decode(code) * scale,
//    so it must equal linear() on an F32 weight holding those products exactly, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "test_util.h"

namespace pagoda::testing {
namespace {

// An FP8 weight [N, K] with F32 block scales, and its exact values (decode * scale in f32, which
// is what transformers' dequantization computes) as an F32 weight.
struct Fp8Weight {
  int64_t N, K, bn, bk;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<float> dequant;  // f32(decode(code) * scale)

  Fp8Weight(int64_t n, int64_t k, int64_t block_n, int64_t block_k, std::mt19937& rng)
      : N(n), K(k), bn(block_n), bk(block_k) {
    std::uniform_int_distribution<int> code(0, 253);
    std::uniform_real_distribution<float> exponent(-12.0f, 2.0f);
    const int64_t gn = (N + bn - 1) / bn, gk = (K + bk - 1) / bk;
    scales.resize(gn * gk);
    for (float& s : scales) s = std::exp2(exponent(rng)) * (1.0f + 0.37f * (exponent(rng) + 12.0f) / 14.0f);
    codes.resize(N * K);
    dequant.resize(N * K);
    for (int64_t i = 0; i < N * K; ++i) {
      int c = code(rng);
      if (c >= 0x7f) c += 1;  // skip +NaN (0x7f); 0xff (-NaN) is never drawn
      codes[i] = static_cast<uint8_t>(c);
      dequant[i] = fp8_e4m3_to_f32(codes[i]) * scale(i / K, i % K);
    }
  }
  float scale(int64_t n, int64_t k) const { return scales[(n / bn) * ((K + bk - 1) / bk) + k / bk]; }
  Tensor tensor() {
    Tensor t(codes.data(), DType::kF8E4M3, {N, K});
    t.scale = scales.data();
    t.scale_block_n = static_cast<int32_t>(bn);
    t.scale_block_k = static_cast<int32_t>(bk);
    return t;
  }
  Tensor f32_tensor() { return Tensor(dequant.data(), DType::kF32, {N, K}); }
};

class Fp8LinearTest : public ::testing::TestWithParam<cpu::Isa> {
 protected:
  void SetUp() override { backend_ = make_cpu_backend(GetParam()); }
  std::unique_ptr<Backend> backend_;
};

void check_fp8_linear(Backend& backend, int64_t T, int64_t K, int64_t N, int64_t bn, int64_t bk, std::mt19937& rng) {
  RandomTensor x(DType::kF32, {T, K}, rng);
  Fp8Weight w(N, K, bn, bk, rng);
  std::vector<float> out = nan_filled(T * N);
  backend.linear(x.tensor(), w.tensor(), nullptr, Tensor(out.data(), DType::kF32, {T, N}));
  std::vector<double> ref(T * N);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k)
        s += x[t * K + k] * static_cast<double>(fp8_e4m3_to_f32(w.codes[n * K + k])) * w.scale(n, k);
      ref[t * N + n] = s;
    }
  }
  const std::string what = "T=" + std::to_string(T) + " K=" + std::to_string(K) + " N=" + std::to_string(N) +
                           " blocks " + std::to_string(bn) + "x" + std::to_string(bk);
  EXPECT_LE(scaled_error(out, ref), 1e-5 * std::sqrt(static_cast<double>(K))) << what;
  if (T > 8) {
    std::vector<float> f32_out = nan_filled(T * N);
    backend.linear(x.tensor(), w.f32_tensor(), nullptr, Tensor(f32_out.data(), DType::kF32, {T, N}));
    EXPECT_EQ(0, std::memcmp(out.data(), f32_out.data(), out.size() * sizeof(float)))
        << what << ": the GEMM must equal the F32 GEMM on the dequantized weight";
  }
}

TEST_P(Fp8LinearTest, MatchesReferenceOverShapesAndGranularities) {
  std::mt19937 rng(4321);
  struct Case {
    int64_t K, N, bn, bk;
  };
  const Case cases[] = {
      {256, 130, 256, 256},  // per tensor (one block)
      {300, 77, 1, 300},     // per output channel
      {256, 256, 128, 128},  // Qwen3-FP8 blocks
      {300, 200, 128, 128},  // partial edge blocks in both dimensions
      {96, 64, 32, 32},      // many blocks per row
      {100, 45, 16, 48},     // block width a multiple of 16 but not of the K tail
      {77, 50, 7, 13},       // block width not a multiple of any vector width
      {1, 3, 1, 1},
  };
  for (const Case& c : cases) {
    for (int64_t T : {1, 2, 3, 4, 5, 7, 8, 9, 13, 40}) check_fp8_linear(*backend_, T, c.K, c.N, c.bn, c.bk, rng);
  }
}

TEST_P(Fp8LinearTest, RealModelShapes) {
  std::mt19937 rng(77);
  // Qwen3-0.6B's q_proj [2048, 1024] and down_proj [1024, 3072] with 128 x 128 blocks: many GEMV
  // slices per thread, several GEMM weight panels.
  for (int64_t T : {1, 4, 19}) {
    check_fp8_linear(*backend_, T, 1024, 2048, 128, 128, rng);
    check_fp8_linear(*backend_, T, 3072, 1024, 128, 128, rng);
  }
}

TEST_P(Fp8LinearTest, UnscaledFp8IsItsCodes) {
  // An F8E4M3 weight without scales: every block scale is 1.
  std::mt19937 rng(5);
  for (int64_t T : {1, 6, 20}) {
    RandomTensor x(DType::kF32, {T, 40}, rng);
    Fp8Weight w(24, 40, 24, 40, rng);
    Tensor plain = w.tensor();
    plain.scale = nullptr;
    std::vector<float> out = nan_filled(T * 24);
    backend_->linear(x.tensor(), plain, nullptr, Tensor(out.data(), DType::kF32, {T, 24}));
    std::vector<double> ref(T * 24);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < 24; ++n) {
        double s = 0.0;
        for (int64_t k = 0; k < 40; ++k) s += x[t * 40 + k] * static_cast<double>(fp8_e4m3_to_f32(w.codes[n * 40 + k]));
        ref[t * 24 + n] = s;
      }
    EXPECT_LE(scaled_error(out, ref), 1e-5 * std::sqrt(40.0)) << "T=" << T;
  }
}

TEST_P(Fp8LinearTest, LinearsEqualsSeparateLinears) {
  std::mt19937 rng(11);
  Fp8Weight wq(128, 96, 32, 32, rng), wk(32, 96, 32, 32, rng);
  RandomTensor bq(DType::kF32, {128}, rng);
  for (int64_t T : {1, 3, 8, 12}) {
    RandomTensor x(DType::kF32, {T, 96}, rng);
    std::vector<float> q = nan_filled(T * 128), k = nan_filled(T * 32), q2 = nan_filled(T * 128),
                       k2 = nan_filled(T * 32);
    const Tensor tq = wq.tensor(), tk = wk.tensor(), bias_q = bq.tensor();
    backend_->linears(x.tensor(), {&tq, &tk}, {&bias_q, nullptr},
                      {Tensor(q.data(), DType::kF32, {T, 128}), Tensor(k.data(), DType::kF32, {T, 32})});
    backend_->linear(x.tensor(), tq, &bias_q, Tensor(q2.data(), DType::kF32, {T, 128}));
    backend_->linear(x.tensor(), tk, nullptr, Tensor(k2.data(), DType::kF32, {T, 32}));
    EXPECT_EQ(q, q2) << "T=" << T;
    EXPECT_EQ(k, k2) << "T=" << T;
  }
}

TEST_P(Fp8LinearTest, SlicedRowsKeepTheirScales) {
  // slice_rows of a block-scaled weight (a multiple of the block rows) is the same as a weight
  // made of those rows with their scales.
  std::mt19937 rng(21);
  Fp8Weight w(96, 64, 32, 16, rng);
  RandomTensor x(DType::kF32, {2, 64}, rng);
  std::vector<float> all = nan_filled(2 * 96), part = nan_filled(2 * 32);
  backend_->linear(x.tensor(), w.tensor(), nullptr, Tensor(all.data(), DType::kF32, {2, 96}));
  backend_->linear(x.tensor(), w.tensor().slice_rows(64, 96), nullptr, Tensor(part.data(), DType::kF32, {2, 32}));
  for (int64_t t = 0; t < 2; ++t)
    for (int64_t n = 0; n < 32; ++n) EXPECT_EQ(part[t * 32 + n], all[t * 96 + 64 + n]) << t << " " << n;
}

TEST_P(Fp8LinearTest, MoeExpertsWithFp8Weights) {
  // The same experts as FP8 and as F32 dequantized weights: decode-sized groups (GEMV) within the
  // usual bound, a popular expert with more than 8 rows (GEMM) identical.
  std::mt19937 rng(31);
  const int64_t E = 4, H = 64, I = 48, T = 12, k = 2;
  std::vector<Fp8Weight> gate, up, down;
  for (int64_t e = 0; e < E; ++e) {
    gate.emplace_back(I, H, 16, 32, rng);
    up.emplace_back(I, H, 16, 32, rng);
    down.emplace_back(H, I, 32, 16, rng);
  }
  MoeExpertWeights fp8, f32;
  for (int64_t e = 0; e < E; ++e) {
    fp8.gate.push_back(gate[e].tensor());
    fp8.up.push_back(up[e].tensor());
    fp8.down.push_back(down[e].tensor());
    f32.gate.push_back(gate[e].f32_tensor());
    f32.up.push_back(up[e].f32_tensor());
    f32.down.push_back(down[e].f32_tensor());
  }
  RandomTensor x(DType::kF32, {T, H}, rng);
  // Token t picks expert 0 (then a GEMM of 12 rows) and expert 1 + t % 3 (4 rows each: GEMVs).
  std::vector<int32_t> ids(T * k);
  std::vector<float> weights(T * k);
  for (int64_t t = 0; t < T; ++t) {
    ids[t * k] = 0;
    ids[t * k + 1] = static_cast<int32_t>(1 + t % 3);
    weights[t * k] = 0.6f;
    weights[t * k + 1] = 0.4f;
  }
  const int64_t R = T * k;
  std::vector<float> sx(R * H), sy(R * H), sg(R * I), su(R * I);
  std::vector<int32_t> rop(R), por(R), off(E + 1);
  MoeScratch s{Tensor(sx.data(), DType::kF32, {R, H}),    Tensor(sy.data(), DType::kF32, {R, H}),
               Tensor(sg.data(), DType::kF32, {R, I}),    Tensor(su.data(), DType::kF32, {R, I}),
               Tensor(rop.data(), DType::kI32, {R}),      Tensor(por.data(), DType::kI32, {R}),
               Tensor(off.data(), DType::kI32, {E + 1})};
  std::vector<float> out_fp8 = nan_filled(T * H), out_f32 = nan_filled(T * H);
  const Tensor tid(ids.data(), DType::kI32, {T, k}), tw(weights.data(), DType::kF32, {T, k});
  backend_->moe_experts(x.tensor(), tid, tw, fp8, s, Tensor(out_fp8.data(), DType::kF32, {T, H}));
  backend_->moe_experts(x.tensor(), tid, tw, f32, s, Tensor(out_f32.data(), DType::kF32, {T, H}));
  std::vector<double> ref(out_f32.begin(), out_f32.end());
  EXPECT_LE(scaled_error(out_fp8, ref), 1e-5 * std::sqrt(static_cast<double>(H + I)));
}

TEST_P(Fp8LinearTest, RejectsScalesOnOtherDtypes) {
  std::vector<float> x(4), w(4), out(4), scale(1, 1.0f);
  Tensor tw(w.data(), DType::kF32, {2, 2});
  tw.scale = scale.data();
  tw.scale_block_n = tw.scale_block_k = 2;
  EXPECT_THROW(backend_->linear(Tensor(x.data(), DType::kF32, {2, 2}), tw, nullptr, Tensor(out.data(), DType::kF32, {2, 2})),
               Error);
}

INSTANTIATE_TEST_SUITE_P(Isa, Fp8LinearTest, ::testing::ValuesIn(supported_isas()),
                         [](const auto& info) { return cpu::isa_name(info.param); });

}  // namespace
}  // namespace pagoda::testing
