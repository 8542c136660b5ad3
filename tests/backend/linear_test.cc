// linear on every ISA against a double-precision reference: decode (GEMV) and prefill (GEMM)
// row counts, odd K/N (vector tails, partial micro-tiles, several K and N blocks), weights and
// bias in F32/BF16/F16. Bound: max|out - ref| <= 1e-5 * sqrt(K) * max(1, max|ref|) (f32
// accumulation of K products of values in [-1, 1]).
#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace pagoda::testing {
namespace {

class LinearTest : public ::testing::TestWithParam<cpu::Isa> {
 protected:
  void SetUp() override { backend_ = make_cpu_backend(GetParam()); }
  std::unique_ptr<Backend> backend_;
};

void check_linear(Backend& backend, int64_t T, int64_t K, int64_t N, DType w_dtype, bool with_bias, DType b_dtype,
                  std::mt19937& rng) {
  RandomTensor x(DType::kF32, {T, K}, rng);
  RandomTensor w(w_dtype, {N, K}, rng);
  RandomTensor b(b_dtype, {N}, rng);
  std::vector<float> out = nan_filled(T * N);
  Tensor bias = b.tensor();
  backend.linear(x.tensor(), w.tensor(), with_bias ? &bias : nullptr, Tensor(out.data(), DType::kF32, {T, N}));
  std::vector<double> ref(T * N);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double s = with_bias ? b[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) s += x[t * K + k] * w[n * K + k];
      ref[t * N + n] = s;
    }
  }
  EXPECT_LE(scaled_error(out, ref), 1e-5 * std::sqrt(static_cast<double>(K)))
      << "T=" << T << " K=" << K << " N=" << N << " w=" << dtype_str(w_dtype) << " bias=" << with_bias << "/"
      << dtype_str(b_dtype);
}

TEST_P(LinearTest, MatchesReferenceOverShapesAndDtypes) {
  std::mt19937 rng(1234);
  const int64_t rows[] = {1, 2, 3, 4, 5, 6, 7, 8, 13, 33, 70};
  const int64_t shapes[][2] = {{1, 1}, {7, 5}, {33, 17}, {64, 48}, {129, 77}, {300, 520}, {513, 35}};
  for (DType wd : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (auto& kn : shapes) {
      for (int64_t T : rows) {
        check_linear(*backend_, T, kn[0], kn[1], wd, false, DType::kF32, rng);
      }
    }
  }
}

TEST_P(LinearTest, BiasInEveryDtype) {
  std::mt19937 rng(99);
  for (DType bd : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t T : {1, 3, 9, 40}) {
      check_linear(*backend_, T, 65, 131, DType::kBF16, true, bd, rng);
      check_linear(*backend_, T, 40, 24, DType::kF32, true, bd, rng);
    }
  }
}

TEST_P(LinearTest, DecodeShapeOfARealModel) {
  // Qwen3-0.6B-like q/k/v projection (many threads' slices, K a multiple of every vector width).
  std::mt19937 rng(7);
  for (int64_t T : {1, 4, 19}) check_linear(*backend_, T, 1024, 1040, DType::kBF16, false, DType::kF32, rng);
}

TEST_P(LinearTest, RejectsMismatchedShapes) {
  std::vector<float> x(6), w(6), out(4);
  EXPECT_THROW(backend_->linear(Tensor(x.data(), DType::kF32, {2, 3}), Tensor(w.data(), DType::kF32, {3, 2}), nullptr,
                                Tensor(out.data(), DType::kF32, {2, 2})),
               Error);
}

TEST_P(LinearTest, LinearsEqualsSeparateLinears) {
  // q/k/v-like and gate/up-like groups over one input, with and without biases; decode and
  // prefill row counts. Must equal separate linear calls exactly (same kernels, same order).
  std::mt19937 rng(7);
  for (int64_t T : {1, 2, 5, 12}) {
    const int64_t K = 96;
    RandomTensor x(DType::kF32, {T, K}, rng);
    RandomTensor wq(DType::kBF16, {128, K}, rng), wk(DType::kBF16, {32, K}, rng), wv(DType::kBF16, {32, K}, rng);
    RandomTensor bq(DType::kBF16, {128}, rng);
    Tensor bias_q = bq.tensor(), tq = wq.tensor(), tk = wk.tensor(), tv = wv.tensor();
    std::vector<float> q = nan_filled(T * 128), k = nan_filled(T * 32), v = nan_filled(T * 32);
    backend_->linears(x.tensor(), {&tq, &tk, &tv}, {&bias_q, nullptr, nullptr},
                      {Tensor(q.data(), DType::kF32, {T, 128}), Tensor(k.data(), DType::kF32, {T, 32}),
                       Tensor(v.data(), DType::kF32, {T, 32})});
    std::vector<float> q2(T * 128), k2(T * 32), v2(T * 32);
    backend_->linear(x.tensor(), wq.tensor(), &bias_q, Tensor(q2.data(), DType::kF32, {T, 128}));
    backend_->linear(x.tensor(), wk.tensor(), nullptr, Tensor(k2.data(), DType::kF32, {T, 32}));
    backend_->linear(x.tensor(), wv.tensor(), nullptr, Tensor(v2.data(), DType::kF32, {T, 32}));
    EXPECT_EQ(q, q2) << "T=" << T;
    EXPECT_EQ(k, k2) << "T=" << T;
    EXPECT_EQ(v, v2) << "T=" << T;
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, LinearTest, ::testing::ValuesIn(supported_isas()),
                         [](const auto& info) { return cpu::isa_name(info.param); });

}  // namespace
}  // namespace pagoda::testing
