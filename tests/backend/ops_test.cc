// The cheaper ops on every ISA against double-precision references: embedding, (add_)rms_norm,
// rope_cos_sin, rope_and_cache, silu_and_mul, gather_rows, add, plus memory helpers.
// Bounds: copies are exact; norms and SiLU within 1e-5 relative per element (plus 1e-6 of the
// row scale); RoPE within 1e-6 absolute (values in [-1, 1]).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstdlib>
#include <cstring>

#include "test_util.h"

namespace pagoda::testing {
namespace {

class OpsTest : public ::testing::TestWithParam<cpu::Isa> {
 protected:
  void SetUp() override { backend_ = make_cpu_backend(GetParam()); }
  std::unique_ptr<Backend> backend_;
};

void expect_close(const std::vector<float>& out, const std::vector<double>& ref, double rel, double abs,
                  const std::string& what) {
  ASSERT_EQ(out.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_LE(std::abs(out[i] - ref[i]), abs + rel * std::abs(ref[i])) << what << " at " << i << ": " << out[i]
                                                                         << " vs " << ref[i];
  }
}

TEST_P(OpsTest, EmbeddingCopiesRowsOfEveryDtype) {
  std::mt19937 rng(1);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    const int64_t V = 50, H = 37;
    RandomTensor table(d, {V, H}, rng);
    std::vector<int32_t> ids = {3, 0, 49, 3, 17, 25, 8};
    const int64_t T = static_cast<int64_t>(ids.size());
    std::vector<float> out = nan_filled(T * H);
    backend_->embedding(Tensor(ids.data(), DType::kI32, {T}), table.tensor(), Tensor(out.data(), DType::kF32, {T, H}));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) ASSERT_EQ(out[t * H + h], table[ids[t] * H + h]) << dtype_str(d);
  }
  std::vector<int32_t> bad = {50};
  RandomTensor table(DType::kF32, {50, 4}, rng);
  std::vector<float> out(4);
  EXPECT_THROW(backend_->embedding(Tensor(bad.data(), DType::kI32, {1}), table.tensor(),
                                   Tensor(out.data(), DType::kF32, {1, 4})),
               Error);
}

std::vector<double> rms_reference(const std::vector<double>& x, const RandomTensor& w, int64_t R, int64_t H,
                                  double eps) {
  std::vector<double> ref(R * H);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0.0;
    for (int64_t h = 0; h < H; ++h) ss += x[r * H + h] * x[r * H + h];
    const double inv = 1.0 / std::sqrt(ss / H + eps);
    for (int64_t h = 0; h < H; ++h) ref[r * H + h] = x[r * H + h] * inv * w[h];
  }
  return ref;
}

TEST_P(OpsTest, RmsNormMatchesReference) {
  std::mt19937 rng(2);
  for (DType d : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t H : {1, 7, 64, 129, 1024}) {
      for (int64_t R : {1, 3, 40}) {
        RandomTensor x(DType::kF32, {R, H}, rng, -3.0f, 3.0f);
        RandomTensor w(d, {H}, rng, 0.5f, 1.5f);
        std::vector<float> out = nan_filled(R * H);
        backend_->rms_norm(x.tensor(), w.tensor(), 1e-6f, Tensor(out.data(), DType::kF32, {R, H}));
        expect_close(out, rms_reference(x.values(), w, R, H, 1e-6), 1e-5, 1e-6,
                     "rms_norm H=" + std::to_string(H) + " " + dtype_str(d));
        // In place (per-head q/k norm writes over its input).
        backend_->rms_norm(x.tensor(), w.tensor(), 1e-6f, x.tensor());
        expect_close(x.f32(), rms_reference(x.values(), w, R, H, 1e-6), 1e-5, 1e-6, "rms_norm in place");
      }
    }
  }
}

TEST_P(OpsTest, AddRmsNormUpdatesResidualAndNormalises) {
  std::mt19937 rng(3);
  for (DType d : {DType::kF32, DType::kBF16}) {
    for (int64_t H : {5, 64, 896}) {
      for (int64_t R : {1, 33}) {
        for (bool alias : {false, true}) {
          RandomTensor residual(DType::kF32, {R, H}, rng);
          RandomTensor x(DType::kF32, {R, H}, rng);
          RandomTensor w(d, {H}, rng);
          std::vector<double> sum(R * H);
          for (int64_t i = 0; i < R * H; ++i)
            sum[i] = static_cast<float>(residual.f32()[i]) + static_cast<float>(x.f32()[i]);  // f32 add, exact ref
          std::vector<float> out_buf = nan_filled(R * H);
          Tensor out = alias ? x.tensor() : Tensor(out_buf.data(), DType::kF32, {R, H});
          backend_->add_rms_norm(residual.tensor(), x.tensor(), w.tensor(), 1e-5f, out);
          for (int64_t i = 0; i < R * H; ++i) ASSERT_EQ(residual.f32()[i], sum[i]);
          expect_close(alias ? x.f32() : out_buf, rms_reference(sum, w, R, H, 1e-5), 1e-5, 1e-6, "add_rms_norm");
        }
      }
    }
  }
}

TEST_P(OpsTest, RopeCosSinFollowsTransformers) {
  std::mt19937 rng(4);
  const int64_t R = 24, T = 9;
  std::vector<int32_t> pos = {0, 1, 2, 7, 100, 4095, 32767, 5, 131071};
  std::vector<float> inv(R / 2);
  for (int64_t i = 0; i < R / 2; ++i) inv[i] = static_cast<float>(std::pow(1e6, -2.0 * i / R));
  std::vector<float> cs = nan_filled(T * R);
  backend_->rope_cos_sin(Tensor(pos.data(), DType::kI32, {T}), Tensor(inv.data(), DType::kF32, {R / 2}), 1.5f,
                         Tensor(cs.data(), DType::kF32, {T, R}));
  std::vector<double> ref(T * R);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < R / 2; ++i) {
      const double angle = static_cast<float>(static_cast<float>(pos[t]) * inv[i]);
      ref[t * R + i] = std::cos(angle) * 1.5;
      ref[t * R + R / 2 + i] = std::sin(angle) * 1.5;
    }
  }
  expect_close(cs, ref, 0.0, 1e-6, "rope_cos_sin");
}

TEST_P(OpsTest, RopeAndCacheRotatesAndWritesSlots) {
  std::mt19937 rng(5);
  for (DType cache_dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2}) {
    for (int64_t D : {64, 128}) {
      for (int64_t rotary : {D, D / 2}) {
        for (int64_t bs : {1, 16}) {
          const int64_t T = 11, Hq = 4, Hk = 2, num_blocks = 40 / bs + 2;
          KvCache kv = backend_->allocate_kv_cache(1, static_cast<int>(num_blocks), static_cast<int>(bs), static_cast<int>(Hk),
                                                   static_cast<int>(D), cache_dtype);
          KvCacheLayer& layer = kv.layers[0];
          const int64_t slots_total = num_blocks * bs;
          RandomTensor q(DType::kF32, {T, Hq, D}, rng), k(DType::kF32, {T, Hk, D}, rng), v(DType::kF32, {T, Hk, D}, rng);
          RandomTensor cs(DType::kF32, {T, rotary}, rng);
          std::vector<int32_t> slots(T);
          for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>((t * 3 + 1) % slots_total);  // distinct: T * 3 < slots_total
          slots[4] = -1;  // padding token: rotated, not cached
          const std::vector<double> q0 = q.values(), k0 = k.values();
          backend_->rope_and_cache(q.tensor(), k.tensor(), v.tensor(), cs.tensor(), static_cast<int>(rotary),
                                   Tensor(slots.data(), DType::kI32, {T}), layer);
          auto rotated = [&](const std::vector<double>& x, int64_t t, int64_t H, int64_t h, int64_t i) {
            const double* row = x.data() + (t * H + h) * D;
            const int64_t half = rotary / 2;
            if (i >= rotary) return row[i];
            const double c = cs[t * rotary + i % half], s = cs[t * rotary + half + i % half];
            return i < half ? row[i] * c - row[i + half] * s : row[i] * c + row[i - half] * s;
          };
          std::vector<double> qref(T * Hq * D), kref(T * Hk * D);
          for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < D; ++i) {
              for (int64_t h = 0; h < Hq; ++h) qref[(t * Hq + h) * D + i] = rotated(q0, t, Hq, h, i);
              for (int64_t h = 0; h < Hk; ++h) kref[(t * Hk + h) * D + i] = rotated(k0, t, Hk, h, i);
            }
          expect_close(q.f32(), qref, 0.0, 1e-6, "rope q");
          expect_close(k.f32(), kref, 0.0, 1e-6, "rope k");
          // Relative: half an ulp of the stored mantissa (bf16 8 bits, E4M3 4, E5M2 3); absolute:
          // half the FP8 subnormal step.
          const double tol = cache_dtype == DType::kBF16 ? 1.0 / 256
                             : cache_dtype == DType::kF8E4M3 ? 1.0 / 16
                             : cache_dtype == DType::kF8E5M2 ? 1.0 / 8
                                                             : 1e-6;
          const double abs_tol = cache_dtype == DType::kF8E4M3 ? 0x1p-10 : cache_dtype == DType::kF8E5M2 ? 0x1p-17 : 1e-6;
          auto stored = [&](const Tensor& cache, int64_t c) -> double {
            switch (cache_dtype) {
              case DType::kBF16: return bf16_to_f32(cache.ptr<uint16_t>()[c]);
              case DType::kF8E4M3: return fp8_e4m3_to_f32(static_cast<const uint8_t*>(cache.data)[c]);
              case DType::kF8E5M2: return fp8_e5m2_to_f32(static_cast<const uint8_t*>(cache.data)[c]);
              default: return cache.ptr<float>()[c];
            }
          };
          for (int64_t t = 0; t < T; ++t) {
            if (slots[t] < 0) continue;
            const int64_t blk = slots[t] / bs, off = slots[t] % bs;
            for (int64_t h = 0; h < Hk; ++h) {
              for (int64_t i = 0; i < D; ++i) {
                const int64_t c = ((blk * Hk + h) * bs + off) * D + i;
                const double kc = stored(layer.k, c), vc = stored(layer.v, c);
                const double kr = kref[(t * Hk + h) * D + i], vr = v[(t * Hk + h) * D + i];
                ASSERT_LE(std::abs(kc - kr), tol * std::abs(kr) + abs_tol)
                    << dtype_name(cache_dtype) << " k cache t=" << t << " h=" << h << " i=" << i;
                ASSERT_LE(std::abs(vc - vr), tol * std::abs(vr) + abs_tol)
                    << dtype_name(cache_dtype) << " v cache t=" << t << " h=" << h << " i=" << i;
              }
            }
          }
        }
      }
    }
  }
}

TEST_P(OpsTest, SiluAndMulIncludingInPlace) {
  std::mt19937 rng(6);
  for (int64_t n : {1, 7, 8, 17, 1000, 40000}) {
    RandomTensor gate(DType::kF32, {n}, rng, -20.0f, 20.0f), up(DType::kF32, {n}, rng);
    std::vector<double> ref(n);
    for (int64_t i = 0; i < n; ++i) ref[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    std::vector<float> out = nan_filled(n);
    backend_->silu_and_mul(gate.tensor(), up.tensor(), Tensor(out.data(), DType::kF32, {n}));
    expect_close(out, ref, 1e-5, 1e-7, "silu_and_mul");
    backend_->silu_and_mul(gate.tensor(), up.tensor(), gate.tensor());
    expect_close(gate.f32(), ref, 1e-5, 1e-7, "silu_and_mul in place");
  }
}

TEST_P(OpsTest, GatherRowsAndAdd) {
  std::mt19937 rng(7);
  RandomTensor x(DType::kF32, {10, 13}, rng);
  std::vector<int32_t> idx = {9, 0, 4, 4};
  std::vector<float> out = nan_filled(4 * 13);
  backend_->gather_rows(x.tensor(), Tensor(idx.data(), DType::kI32, {4}), Tensor(out.data(), DType::kF32, {4, 13}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 13; ++j) ASSERT_EQ(out[i * 13 + j], x[idx[i] * 13 + j]);

  for (int64_t n : {3, 100000}) {
    RandomTensor a(DType::kF32, {n}, rng), b(DType::kF32, {n}, rng);
    std::vector<float> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = a.f32()[i] + b.f32()[i];
    backend_->add(a.tensor(), b.tensor());
    ASSERT_EQ(a.f32(), want);
  }
}

// MoE routing (softmax top-k, optional renormalisation, ties to the lower id) and the grouped
// expert SwiGLU against a per-token double reference. T = 13 tokens x top-3 of 5 experts: some
// experts get > 8 rows (the per-expert GEMM path) and others <= 8 (the GEMVs, in one region) in
// the same call; then the first 2 tokens alone (every expert <= 8 rows).
TEST_P(OpsTest, MoeRouteAndExperts) {
  std::mt19937 rng(11);
  const int64_t T = 13, E = 5, K = 3, H = 24, I = 16;
  RandomTensor logits(DType::kF32, {T, E}, rng, -3.0f, 3.0f);
  logits.f32()[0 * E + 1] = logits.f32()[0 * E + 3] = 10.0f;  // a tie: expert 1 before 3
  for (bool renorm : {false, true}) {
    std::vector<int32_t> ids(T * K, -1);
    std::vector<float> w = nan_filled(T * K);
    backend_->moe_route(logits.tensor(), renorm, Tensor(ids.data(), DType::kI32, {T, K}),
                        Tensor(w.data(), DType::kF32, {T, K}));
    for (int64_t t = 0; t < T; ++t) {
      const float* l = logits.f32().data() + t * E;
      std::vector<double> p(E);
      double mx = l[0], sum = 0, top_sum = 0;
      for (int64_t e = 1; e < E; ++e) mx = std::max<double>(mx, l[e]);
      for (int64_t e = 0; e < E; ++e) sum += (p[e] = std::exp(l[e] - mx));
      std::vector<int32_t> order(E);
      for (int32_t e = 0; e < E; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
      for (int64_t j = 0; j < K; ++j) top_sum += p[order[j]] / sum;
      for (int64_t j = 0; j < K; ++j) {
        ASSERT_EQ(ids[t * K + j], order[j]) << "token " << t << " rank " << j;
        const double want = p[order[j]] / sum / (renorm ? top_sum : 1.0);
        ASSERT_NEAR(w[t * K + j], want, 1e-6) << "token " << t << " rank " << j;
      }
    }
  }

  // Experts: x random, ids/weights from the router above (renormalised).
  std::vector<int32_t> ids(T * K);
  std::vector<float> w(T * K);
  backend_->moe_route(logits.tensor(), true, Tensor(ids.data(), DType::kI32, {T, K}), Tensor(w.data(), DType::kF32, {T, K}));
  {
    std::vector<int> rows_of(E, 0);
    for (int32_t id : ids) ++rows_of[id];
    const auto [fewest, most] = std::minmax_element(rows_of.begin(), rows_of.end());
    ASSERT_TRUE(*fewest > 0 && *fewest <= 8 && *most > 8) << "the routing must mix both paths";
  }
  RandomTensor x(DType::kF32, {T, H}, rng);
  std::vector<RandomTensor> gate, up, down;
  MoeExpertWeights experts;
  for (int64_t e = 0; e < E; ++e) {
    gate.emplace_back(DType::kBF16, std::initializer_list<int64_t>{I, H}, rng);
    up.emplace_back(DType::kBF16, std::initializer_list<int64_t>{I, H}, rng);
    down.emplace_back(DType::kF32, std::initializer_list<int64_t>{H, I}, rng);
  }
  for (int64_t e = 0; e < E; ++e) {
    experts.gate.push_back(gate[e].tensor());
    experts.up.push_back(up[e].tensor());
    experts.down.push_back(down[e].tensor());
  }
  for (const int64_t Tn : {T, int64_t{2}}) {
  SCOPED_TRACE("tokens " + std::to_string(Tn));
  const int64_t R = Tn * K;
  std::vector<float> xs(R * H), g(R * I), u(R * I);
  std::vector<int32_t> idx(2 * R + E + 1);
  MoeScratch scratch;
  scratch.x = Tensor(xs.data(), DType::kF32, {R, H});
  scratch.y = scratch.x;
  scratch.gate = Tensor(g.data(), DType::kF32, {R, I});
  scratch.up = Tensor(u.data(), DType::kF32, {R, I});
  scratch.row_of_pair = Tensor(idx.data(), DType::kI32, {R});
  scratch.pair_of_row = Tensor(idx.data() + R, DType::kI32, {R});
  scratch.expert_offsets = Tensor(idx.data() + 2 * R, DType::kI32, {E + 1});
  std::vector<float> out = nan_filled(Tn * H);
  backend_->moe_experts(Tensor(x.tensor().data, DType::kF32, {Tn, H}), Tensor(ids.data(), DType::kI32, {Tn, K}),
                        Tensor(w.data(), DType::kF32, {Tn, K}), experts, scratch,
                        Tensor(out.data(), DType::kF32, {Tn, H}));
  std::vector<double> ref(Tn * H, 0.0);
  for (int64_t t = 0; t < Tn; ++t) {
    for (int64_t j = 0; j < K; ++j) {
      const int32_t e = ids[t * K + j];
      std::vector<double> act(I);
      for (int64_t i = 0; i < I; ++i) {
        double a = 0, b = 0;
        for (int64_t h = 0; h < H; ++h) {
          a += gate[e][i * H + h] * x[t * H + h];
          b += up[e][i * H + h] * x[t * H + h];
        }
        act[i] = a / (1.0 + std::exp(-a)) * b;
      }
      for (int64_t h = 0; h < H; ++h) {
        double d = 0;
        for (int64_t i = 0; i < I; ++i) d += down[e][h * I + i] * act[i];
        ref[t * H + h] += w[t * K + j] * d;
      }
    }
  }
  EXPECT_LT(scaled_error(out, ref), 1e-5) << "moe_experts";
  }
}

TEST_P(OpsTest, AllocateIsAlignedAndPlaceWeightIsZeroCopy) {
  for (size_t bytes : {1u, 100u, 4096u}) {
    DeviceBuffer buf = backend_->allocate(bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.data()) % 64, 0u);
    EXPECT_EQ(buf.size(), bytes);
  }
  std::vector<float> host(12);
  Tensor t(host.data(), DType::kF32, {3, 4});
  std::vector<DeviceBuffer> storage;
  Tensor placed = backend_->place_weight(t, &storage);
  EXPECT_EQ(placed.data, t.data);
  EXPECT_TRUE(storage.empty());
  EXPECT_EQ(backend_->activation_dtype(), DType::kF32);
}

INSTANTIATE_TEST_SUITE_P(Isa, OpsTest, ::testing::ValuesIn(supported_isas()),
                         [](const auto& info) { return cpu::isa_name(info.param); });

TEST(CpuIsa, EnvironmentSelectsTheKernels) {
  setenv("PAGODA_CPU_ISA", "scalar", 1);
  EXPECT_EQ(cpu::default_isa(), cpu::Isa::kScalar);
  EXPECT_EQ(make_cpu_backend()->name(), "cpu-scalar");
  setenv("PAGODA_CPU_ISA", "sse9", 1);
  EXPECT_THROW(cpu::default_isa(), Error);
  unsetenv("PAGODA_CPU_ISA");
  EXPECT_TRUE(cpu::isa_supported(cpu::default_isa()));
}

// ---- Gated DeltaNet (hybrid models) ------------------------------------------------------------

namespace gdn_test {

struct Host {
  Backend& be;
  std::vector<DeviceBuffer> bufs;
  Tensor f32(const std::vector<float>& v, std::initializer_list<int64_t> dims) {
    bufs.push_back(be.allocate(std::max<size_t>(v.size(), 1) * sizeof(float)));
    std::memcpy(bufs.back().data(), v.data(), v.size() * sizeof(float));
    return Tensor(bufs.back().data(), DType::kF32, dims);
  }
  Tensor i32(const std::vector<int32_t>& v) {
    bufs.push_back(be.allocate(std::max<size_t>(v.size(), 1) * sizeof(int32_t)));
    std::memcpy(bufs.back().data(), v.data(), v.size() * sizeof(int32_t));
    return Tensor(bufs.back().data(), DType::kI32, {static_cast<int64_t>(v.size())});
  }
  // Sequences given as (start position, query length, slot); tokens laid out in order.
  AttentionMetadata meta(const std::vector<std::array<int32_t, 3>>& seqs) {
    std::vector<int32_t> qsl{0}, lens, slots;
    for (const auto& s : seqs) {
      qsl.push_back(qsl.back() + s[1]);
      lens.push_back(s[0] + s[1]);
      slots.push_back(s[2]);
    }
    AttentionMetadata m;
    m.query_start_loc = i32(qsl);
    m.seq_lens = i32(lens);
    m.state_slots = i32(slots);
    m.num_seqs = static_cast<int32_t>(seqs.size());
    m.num_tokens = qsl.back();
    return m;
  }
};

std::vector<float> randn(size_t n, unsigned seed, float scale) {
  std::srand(seed);
  std::vector<float> v(n);
  for (float& x : v) x = scale * (static_cast<float>(std::rand()) / RAND_MAX * 2.0f - 1.0f);
  return v;
}

}  // namespace gdn_test

// The chunked (WY) form of the gated delta rule equals the token-by-token recurrence, for several
// sequences in one call each with its own state slot, chunks of 64 with a partial last chunk, and a
// prefill split across calls (the second call continues from the slot).
TEST(GatedDeltaNet, ChunkedEqualsRecurrentPerSlot) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  gdn_test::Host h{*be, {}};
  GdnShape shape{2, 4, 16, 8};
  const int64_t nk = 2, nv = 4, dk = 16, dv = 8, conv_dim = 2 * nk * dk + nv * dv, S = 6;
  const std::vector<int32_t> lens = {130, 1, 70};
  const std::vector<int32_t> slot_of = {2, 0, 5};
  const int64_t T = 201;
  const std::vector<float> qkv = gdn_test::randn(T * conv_dim, 1, 1.0f);
  const std::vector<float> a = gdn_test::randn(T * nv, 2, 2.0f), b = gdn_test::randn(T * nv, 3, 2.0f);
  const std::vector<float> alog = gdn_test::randn(nv, 4, 1.0f), dtb = gdn_test::randn(nv, 5, 1.0f);
  Tensor tq = h.f32(qkv, {T, conv_dim}), ta = h.f32(a, {T, nv}), tb = h.f32(b, {T, nv});
  Tensor tal = h.f32(alog, {nv}), tdt = h.f32(dtb, {nv});

  auto run = [&](int chunk, bool split, std::vector<float>& out, std::vector<float>& state) {
    LinearAttnState st;
    st.conv = h.f32(std::vector<float>(S * conv_dim * 3, 0.0f), {S, conv_dim, 3});
    // Garbage in every slot: a sequence at position 0 must ignore it.
    st.recurrent = h.f32(gdn_test::randn(S * nv * dk * dv, 9, 5.0f), {S, nv, dk, dv});
    Tensor o = h.f32(std::vector<float>(T * nv * dv, 0.0f), {T, nv * dv});
    if (!split) {
      AttentionMetadata m = h.meta({{0, lens[0], slot_of[0]}, {0, lens[1], slot_of[1]}, {0, lens[2], slot_of[2]}});
      be->gated_delta_rule(tq, ta, tb, tal, tdt, shape, m, chunk, st, o);
    } else {
      // Sequence 0 in two calls (50 + 80 tokens), the others in the first call.
      AttentionMetadata m1 = h.meta({{0, 50, slot_of[0]}});
      be->gated_delta_rule(tq.slice_rows(0, 50), ta.slice_rows(0, 50), tb.slice_rows(0, 50), tal, tdt, shape, m1,
                           chunk, st, o.slice_rows(0, 50));
      AttentionMetadata m2 = h.meta({{50, 80, slot_of[0]}, {0, lens[1], slot_of[1]}, {0, lens[2], slot_of[2]}});
      be->gated_delta_rule(tq.slice_rows(50, T), ta.slice_rows(50, T), tb.slice_rows(50, T), tal, tdt, shape, m2,
                           chunk, st, o.slice_rows(50, T));
    }
    out.assign(o.ptr<float>(), o.ptr<float>() + o.numel());
    state.assign(st.recurrent.ptr<float>(), st.recurrent.ptr<float>() + st.recurrent.numel());
  };
  std::vector<float> rec_out, rec_state, chunk_out, chunk_state, split_out, split_state;
  run(0, false, rec_out, rec_state);
  run(64, false, chunk_out, chunk_state);
  run(64, true, split_out, split_state);
  auto expect_near = [](const std::vector<float>& x, const std::vector<float>& y, const char* what) {
    ASSERT_EQ(x.size(), y.size());
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(double(x[i]) - y[i]) / (1.0 + std::fabs(y[i])));
    EXPECT_LT(worst, 2e-4) << what;
  };
  expect_near(chunk_out, rec_out, "chunked vs recurrent output");
  expect_near(split_out, rec_out, "split chunked vs recurrent output");
  for (int s = 0; s < 3; ++s) {
    const size_t n = nv * dk * dv, off = slot_of[s] * n;
    expect_near(std::vector<float>(chunk_state.begin() + off, chunk_state.begin() + off + n),
                std::vector<float>(rec_state.begin() + off, rec_state.begin() + off + n), "final state");
    expect_near(std::vector<float>(split_state.begin() + off, split_state.begin() + off + n),
                std::vector<float>(rec_state.begin() + off, rec_state.begin() + off + n), "final state (split)");
  }
  // Slots no sequence used keep their contents.
  EXPECT_EQ(rec_state[1 * nv * dk * dv], chunk_state[1 * nv * dk * dv]);
}

// The causal conv in two calls (state carried in the slot) equals one call; position 0 ignores the slot.
TEST(GatedDeltaNet, CausalConvContinuesFromSlot) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  gdn_test::Host h{*be, {}};
  const int64_t C = 5, K = 4, T = 11, S = 3;
  const std::vector<float> x = gdn_test::randn(T * C, 11, 1.0f), w = gdn_test::randn(C * K, 12, 1.0f);
  Tensor tx = h.f32(x, {T, C}), tw = h.f32(w, {C, K});
  auto fresh_state = [&] {
    LinearAttnState st;
    st.conv = h.f32(gdn_test::randn(S * C * (K - 1), 13, 3.0f), {S, C, K - 1});
    return st;
  };
  LinearAttnState st1 = fresh_state(), st2 = fresh_state();
  Tensor o1 = h.f32(std::vector<float>(T * C, 0.0f), {T, C}), o2 = h.f32(std::vector<float>(T * C, 0.0f), {T, C});
  be->causal_conv1d(tx, tw, h.meta({{0, T, 1}}), st1, o1);
  be->causal_conv1d(tx.slice_rows(0, 4), tw, h.meta({{0, 4, 2}}), st2, o2.slice_rows(0, 4));
  be->causal_conv1d(tx.slice_rows(4, 5), tw, h.meta({{4, 1, 2}}), st2, o2.slice_rows(4, 5));
  be->causal_conv1d(tx.slice_rows(5, T), tw, h.meta({{5, T - 5, 2}}), st2, o2.slice_rows(5, T));
  for (int64_t i = 0; i < T * C; ++i) EXPECT_NEAR(o1.ptr<float>()[i], o2.ptr<float>()[i], 1e-5f) << i;
  // Reference for token 0, channel c: silu(w[c, K-1] * x[0, c]).
  for (int64_t c = 0; c < C; ++c) {
    const float z = w[c * K + K - 1] * x[c];
    EXPECT_NEAR(o1.ptr<float>()[c], z / (1.0f + std::exp(-z)), 1e-5f);
  }
}

// Padding sequences (AttentionMetadata::kPaddingSlot, the padded decode batches replayed as CUDA
// graphs), even two of them: zero outputs, no state read or written; the real sequences beside
// them get exactly what they get alone.
TEST(GatedDeltaNet, PaddingSequencesGiveZerosAndTouchNoState) {
  std::unique_ptr<Backend> be = make_cpu_backend();
  gdn_test::Host h{*be, {}};
  GdnShape shape{1, 2, 8, 4};
  const int64_t nk = 1, nv = 2, dk = 8, dv = 4, conv_dim = 2 * nk * dk + nv * dv, S = 3, K = 4, T = 4;
  const int32_t pad = AttentionMetadata::kPaddingSlot;
  const std::vector<float> qkv = gdn_test::randn(T * conv_dim, 21, 1.0f), w = gdn_test::randn(conv_dim * K, 22, 1.0f);
  const std::vector<float> a = gdn_test::randn(T * nv, 23, 2.0f), b = gdn_test::randn(T * nv, 24, 2.0f);
  Tensor tq = h.f32(qkv, {T, conv_dim}), tw = h.f32(w, {conv_dim, K}), ta = h.f32(a, {T, nv}), tb = h.f32(b, {T, nv});
  Tensor tal = h.f32(gdn_test::randn(nv, 25, 1.0f), {nv}), tdt = h.f32(gdn_test::randn(nv, 26, 1.0f), {nv});
  const std::vector<float> conv0 = gdn_test::randn(S * conv_dim * (K - 1), 27, 1.0f);
  const std::vector<float> rec0 = gdn_test::randn(S * nv * dk * dv, 28, 1.0f);
  // Tokens 0, 3: decode steps of sequences in slots 2 and 0; tokens 1, 2: padding.
  auto run = [&](const std::vector<std::array<int32_t, 3>>& seqs, int64_t rows, Tensor x, Tensor ax, Tensor bx,
                 std::vector<float>& conv_out, std::vector<float>& out, std::vector<float>& conv_st,
                 std::vector<float>& rec_st) {
    LinearAttnState st;
    st.conv = h.f32(conv0, {S, conv_dim, K - 1});
    st.recurrent = h.f32(rec0, {S, nv, dk, dv});
    Tensor co = h.f32(std::vector<float>(rows * conv_dim, 7.0f), {rows, conv_dim});
    Tensor o = h.f32(std::vector<float>(rows * nv * dv, 7.0f), {rows, nv * dv});
    const AttentionMetadata m = h.meta(seqs);
    be->causal_conv1d(x, tw, m, st, co);
    be->gated_delta_rule(co, ax, bx, tal, tdt, shape, m, 0, st, o);
    conv_out.assign(co.ptr<float>(), co.ptr<float>() + co.numel());
    out.assign(o.ptr<float>(), o.ptr<float>() + o.numel());
    conv_st.assign(st.conv.ptr<float>(), st.conv.ptr<float>() + st.conv.numel());
    rec_st.assign(st.recurrent.ptr<float>(), st.recurrent.ptr<float>() + st.recurrent.numel());
  };
  std::vector<float> pc, po, pcs, prs;
  run({{5, 1, 2}, {0, 1, pad}, {0, 1, pad}, {9, 1, 0}}, T, tq, ta, tb, pc, po, pcs, prs);
  // The same two real sequences without the padding.
  std::vector<float> x2, a2, b2;
  for (int64_t t : {0, 3}) {
    x2.insert(x2.end(), qkv.begin() + t * conv_dim, qkv.begin() + (t + 1) * conv_dim);
    a2.insert(a2.end(), a.begin() + t * nv, a.begin() + (t + 1) * nv);
    b2.insert(b2.end(), b.begin() + t * nv, b.begin() + (t + 1) * nv);
  }
  std::vector<float> rc, ro, rcs, rrs;
  run({{5, 1, 2}, {9, 1, 0}}, 2, h.f32(x2, {2, conv_dim}), h.f32(a2, {2, nv}), h.f32(b2, {2, nv}), rc, ro, rcs, rrs);
  for (int64_t t : {1, 2}) {
    for (int64_t c = 0; c < conv_dim; ++c) EXPECT_EQ(pc[t * conv_dim + c], 0.0f) << "conv out, token " << t;
    for (int64_t c = 0; c < nv * dv; ++c) EXPECT_EQ(po[t * nv * dv + c], 0.0f) << "out, token " << t;
  }
  for (int r = 0; r < 2; ++r) {
    const int64_t t = r == 0 ? 0 : 3;
    for (int64_t c = 0; c < conv_dim; ++c) EXPECT_EQ(pc[t * conv_dim + c], rc[r * conv_dim + c]);
    for (int64_t c = 0; c < nv * dv; ++c) EXPECT_EQ(po[t * nv * dv + c], ro[r * nv * dv + c]);
  }
  EXPECT_EQ(pcs, rcs);  // slot 1 untouched in both, slots 0 and 2 updated alike
  EXPECT_EQ(prs, rrs);
  EXPECT_TRUE(std::equal(pcs.begin() + conv_dim * (K - 1), pcs.begin() + 2 * conv_dim * (K - 1),
                         conv0.begin() + conv_dim * (K - 1)));
}

}  // namespace
}  // namespace pagoda::testing
