// The CUDA backend's elementwise and row-wise kernels (src/backend/cuda/elementwise_kernels.cuh)
// run on the host under tests/cuda/cuda_emu.h with F32 activations, against the CPU backend on the
// same inputs, with the grids and vector widths cuda_kernels.cu launches them with (16-byte
// vectors where rows allow, one element otherwise): embedding, rms_norm (with and without the
// fused residual add), rms_norm_gated, rope_cos_sin, rope_and_cache (rotated q / k, and K / V in
// the CUDA cache layout, BF16, against the CPU backend's BF16 cache), silu_and_mul, add,
// sigmoid_mul, gather_rows, feed_tokens and the fallback GEMM; then the BF16 activations the GPU
// runs, with their 8-wide vector paths. The GPU itself is checked by cuda_ops_test.cc.
// Bounds: FP32 on both sides, only the order of sums differs: rel 1e-5 + abs 1e-6 (GEMM: abs
// 1e-5 * sqrt(K)); the BF16 cache: one BF16 rounding of values that may differ in the last FP32
// bit, so rel 2^-8; V copied: exact.
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/elementwise_kernels.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "cuda_test_util.h"

namespace pagoda::testing {
namespace {

namespace ek = cuda::elementwise_kernels;


// cuda_kernels.cu's launch shapes.
constexpr int kThreads = 256;
unsigned row_threads(int64_t items) { return static_cast<unsigned>(std::clamp<int64_t>((items + 31) / 32 * 32, 32, 1024)); }
unsigned grid_for(int64_t items) {
  return static_cast<unsigned>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 65536));
}
cuda_emu::Dim3 grid1(int64_t n) { return cuda_emu::Dim3{static_cast<unsigned>(n), 1, 1}; }

class ElementwiseEmulated : public ::testing::Test {
 protected:
  void SetUp() override {
#if defined(__SANITIZE_ADDRESS__)
    GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
    cpu_ = make_cpu_backend();
  }
  std::unique_ptr<Backend> cpu_;
  std::mt19937 rng_{51};
};

TEST_F(ElementwiseEmulated, EmbeddingRmsNormAndGatedNorm) {
  for (int64_t H : {64, 37, 1024}) {
    const int64_t R = 5;
    const std::string what = label({{"H", H}});
    // embedding (F32 and BF16 tables)
    const int64_t V = 11;
    const std::vector<float> table = rand_bf16(V * H, rng_);
    std::vector<uint16_t> table16;
    for (float x : table) table16.push_back(f32_to_bf16(x));
    std::vector<int32_t> ids = {3, 0, 10, 3, 7};
    std::vector<float> ref(R * H), got(R * H, NAN), got16(R * H, NAN);
    cpu_->embedding(Tensor(ids.data(), DType::kI32, {R}), Tensor(const_cast<float*>(table.data()), DType::kF32, {V, H}),
                    Tensor(ref.data(), DType::kF32, {R, H}));
    cuda_emu::launch(grid1(R), row_threads(H), [&] { ek::embedding_kernel<float>(ids.data(), table.data(), DType::kF32, V, H, got.data()); });
    cuda_emu::launch(grid1(R), row_threads(H),
                     [&] { ek::embedding_kernel<float>(ids.data(), table16.data(), DType::kBF16, V, H, got16.data()); });
    EXPECT_TRUE(close(got, ref, 0, 0)) << what << " embedding";
    EXPECT_TRUE(close(got16, ref, 0, 0)) << what << " embedding (BF16 table)";

    // rms_norm and add_rms_norm
    const std::vector<float> x = rand_bf16(R * H, rng_, -2.0f, 2.0f), res0 = rand_bf16(R * H, rng_, -2.0f, 2.0f);
    const std::vector<float> w = rand_bf16(H, rng_, 0.5f, 1.5f);
    std::vector<float> ref_out(R * H), ref_res = res0;
    cpu_->rms_norm(Tensor(const_cast<float*>(x.data()), DType::kF32, {R, H}), Tensor(const_cast<float*>(w.data()), DType::kF32, {H}),
                   1e-6f, Tensor(ref_out.data(), DType::kF32, {R, H}));
    std::vector<float> out(R * H, NAN), res = res0, out2(R * H, NAN), ref_out2(R * H);
    const bool vec = H % 4 == 0;
    auto norm = [&](float* residual, float* o) {
      if (vec) {
        cuda_emu::launch(grid1(R), row_threads(H / 4), [&] { ek::rms_norm_kernel<float, 4>(residual, x.data(), w.data(), DType::kF32, 1e-6f, H, o); });
      } else {
        cuda_emu::launch(grid1(R), row_threads(H), [&] { ek::rms_norm_kernel<float, 1>(residual, x.data(), w.data(), DType::kF32, 1e-6f, H, o); });
      }
    };
    norm(nullptr, out.data());
    EXPECT_TRUE(close(out, ref_out, 1e-5, 1e-6)) << what << " rms_norm";
    cpu_->add_rms_norm(Tensor(ref_res.data(), DType::kF32, {R, H}), Tensor(const_cast<float*>(x.data()), DType::kF32, {R, H}),
                       Tensor(const_cast<float*>(w.data()), DType::kF32, {H}), 1e-6f, Tensor(ref_out2.data(), DType::kF32, {R, H}));
    norm(res.data(), out2.data());
    EXPECT_TRUE(close(res, ref_res, 0, 0)) << what << " add_rms_norm residual";
    EXPECT_TRUE(close(out2, ref_out2, 1e-5, 1e-6)) << what << " add_rms_norm out";

    // rms_norm_gated
    const std::vector<float> z = rand_bf16(R * H, rng_, -2.0f, 2.0f);
    std::vector<float> ref_g(R * H), got_g(R * H, NAN);
    cpu_->rms_norm_gated(Tensor(const_cast<float*>(x.data()), DType::kF32, {R, H}), Tensor(const_cast<float*>(z.data()), DType::kF32, {R, H}),
                         Tensor(const_cast<float*>(w.data()), DType::kF32, {H}), 1e-6f, Tensor(ref_g.data(), DType::kF32, {R, H}));
    if (vec) {
      cuda_emu::launch(grid1(R), row_threads(H / 4), [&] { ek::rms_norm_gated_kernel<float, 4>(x.data(), z.data(), w.data(), DType::kF32, 1e-6f, H, got_g.data()); });
    } else {
      cuda_emu::launch(grid1(R), row_threads(H), [&] { ek::rms_norm_gated_kernel<float, 1>(x.data(), z.data(), w.data(), DType::kF32, 1e-6f, H, got_g.data()); });
    }
    EXPECT_TRUE(close(got_g, ref_g, 1e-5, 1e-6)) << what << " rms_norm_gated";
  }
}

TEST_F(ElementwiseEmulated, RopeAndCache) {
  const int64_t Hq = 8, Hk = 2, num_blocks = 8, block_size = 16;
  for (int64_t D : {64, 128, 80})
    for (int64_t rotary : {D, D / 2})
      for (bool norm : {false, true}) {
        const int64_t T = 37;
        const std::string what = label({{"D", D}, {"rotary", rotary}, {"qk_norm", norm}});
        std::vector<int32_t> pos(T);
        for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>((t * 7919 + 5) % 40000);
        std::vector<float> inv(rotary / 2);
        for (int64_t i = 0; i < rotary / 2; ++i) inv[i] = static_cast<float>(std::pow(1e6, -2.0 * i / rotary));
        std::vector<float> cs(T * rotary), got_cs(T * rotary, NAN);
        cpu_->rope_cos_sin(Tensor(pos.data(), DType::kI32, {T}), Tensor(inv.data(), DType::kF32, {rotary / 2}), 1.0f,
                           Tensor(cs.data(), DType::kF32, {T, rotary}));
        cuda_emu::launch(grid1(grid_for(T * rotary / 2)), kThreads, [&] {
          ek::rope_cos_sin_kernel(pos.data(), false, T, inv.data(), rotary / 2, 1.0f, got_cs.data());
        });
        EXPECT_TRUE(close(got_cs, cs, 0, 1e-6)) << what << " cos_sin";

        const std::vector<float> q = rand_bf16(T * Hq * D, rng_), k = rand_bf16(T * Hk * D, rng_), v = rand_bf16(T * Hk * D, rng_);
        std::vector<int32_t> slots(T);
        for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>((t * 37 + 5) % (num_blocks * block_size));
        slots[T / 2] = -1;
        KvCache ckv = cpu_->allocate_kv_cache(1, num_blocks, block_size, Hk, D, DType::kBF16);
        // With q / k norm (Qwen3), the reference is the CPU backend's three ops: rms_norm of every
        // head in place, then rope_and_cache.
        const std::vector<float> qn = rand_bf16(D, rng_, 0.5f, 1.5f), kn = rand_bf16(D, rng_, 0.5f, 1.5f);
        std::vector<float> cq = q, ck = k;
        if (norm) {
          cpu_->rms_norm(Tensor(cq.data(), DType::kF32, {T * Hq, D}), Tensor(const_cast<float*>(qn.data()), DType::kF32, {D}),
                         1e-6f, Tensor(cq.data(), DType::kF32, {T * Hq, D}));
          cpu_->rms_norm(Tensor(ck.data(), DType::kF32, {T * Hk, D}), Tensor(const_cast<float*>(kn.data()), DType::kF32, {D}),
                         1e-6f, Tensor(ck.data(), DType::kF32, {T * Hk, D}));
        }
        cpu_->rope_and_cache(Tensor(cq.data(), DType::kF32, {T, Hq, D}), Tensor(ck.data(), DType::kF32, {T, Hk, D}),
                             Tensor(const_cast<float*>(v.data()), DType::kF32, {T, Hk, D}), Tensor(cs.data(), DType::kF32, {T, rotary}),
                             static_cast<int>(rotary), Tensor(slots.data(), DType::kI32, {T}), ckv.layers[0]);
        std::vector<float> eq = q, ekk = k;
        const size_t cache_elems = static_cast<size_t>(num_blocks * block_size * Hk * D);
        std::vector<__nv_bfloat16> kc(cache_elems, __nv_bfloat16{0}), vc(cache_elems, __nv_bfloat16{0});
        const cuda_emu::Dim3 grid{static_cast<unsigned>(T), static_cast<unsigned>((Hq + Hk + ek::kHeadsPerBlock - 1) / ek::kHeadsPerBlock), 1};
        cuda_emu::launch(grid, 32 * ek::kHeadsPerBlock, [&] {
          ek::rope_and_cache_kernel<float>(eq.data(), ekk.data(), v.data(), norm ? qn.data() : nullptr,
                                           norm ? kn.data() : nullptr, DType::kF32, 1e-6f, cs.data(), static_cast<int>(rotary),
                                           slots.data(), Hq, Hk, D, kc.data(), vc.data(), num_blocks * block_size);
        });
        EXPECT_TRUE(close(eq, cq, 1e-5, 1e-6)) << what << " q";
        EXPECT_TRUE(close(ekk, ck, 1e-5, 1e-6)) << what << " k";
        const uint16_t* ckc = ckv.layers[0].k.ptr<uint16_t>();
        const uint16_t* cvc = ckv.layers[0].v.ptr<uint16_t>();
        for (int64_t s = 0; s < num_blocks * block_size; ++s) {
          const bool used = std::find(slots.begin(), slots.end(), static_cast<int32_t>(s)) != slots.end();
          const int64_t blk = s / block_size, off = s % block_size;
          for (int64_t h = 0; h < Hk; ++h)
            for (int64_t d = 0; d < D; ++d) {
              const int64_t g = ((blk * block_size + off) * Hk + h) * D + d;
              const int64_t c = ((blk * Hk + h) * block_size + off) * D + d;
              const float gk = bf16_to_f32(kc[static_cast<size_t>(g)].x), gv = bf16_to_f32(vc[static_cast<size_t>(g)].x);
              if (!used) {
                ASSERT_EQ(gk, 0.0f) << what << " slot " << s;
                ASSERT_EQ(gv, 0.0f) << what << " slot " << s;
                continue;
              }
              const float rk = bf16_to_f32(ckc[c]);
              ASSERT_LE(std::abs(gk - rk), std::ldexp(std::abs(rk), -8)) << what << " k cache slot " << s << " dim " << d;
              ASSERT_EQ(gv, bf16_to_f32(cvc[c])) << what << " v cache slot " << s << " dim " << d;
            }
        }
      }
}

TEST_F(ElementwiseEmulated, SiluAndMulAddSigmoidMul) {
  for (int64_t n : {1024, 37}) {
    const std::string what = label({{"n", n}});
    const std::vector<float> g = rand_bf16(n, rng_, -4.0f, 4.0f), u = rand_bf16(n, rng_, -2.0f, 2.0f);
    std::vector<float> ref(n), got(n, NAN);
    cpu_->silu_and_mul(Tensor(const_cast<float*>(g.data()), DType::kF32, {1, n}), Tensor(const_cast<float*>(u.data()), DType::kF32, {1, n}),
                       Tensor(ref.data(), DType::kF32, {1, n}));
    std::vector<float> a = g, ref_a = g;
    cpu_->add(Tensor(ref_a.data(), DType::kF32, {1, n}), Tensor(const_cast<float*>(u.data()), DType::kF32, {1, n}));
    if (n % 4 == 0) {
      cuda_emu::launch(grid1(grid_for(n / 4)), kThreads, [&] { ek::silu_and_mul_kernel<float, 4>(g.data(), u.data(), got.data(), n / 4); });
      cuda_emu::launch(grid1(grid_for(n / 4)), kThreads, [&] { ek::add_kernel<float, 4>(a.data(), u.data(), n / 4); });
    } else {
      cuda_emu::launch(grid1(grid_for(n)), kThreads, [&] { ek::silu_and_mul_kernel<float, 1>(g.data(), u.data(), got.data(), n); });
      cuda_emu::launch(grid1(grid_for(n)), kThreads, [&] { ek::add_kernel<float, 1>(a.data(), u.data(), n); });
    }
    EXPECT_TRUE(close(got, ref, 1e-5, 1e-6)) << what << " silu_and_mul";
    EXPECT_TRUE(close(a, ref_a, 0, 0)) << what << " add";
    // sigmoid_mul: elementwise gate and a gate broadcast over rows of 8.
    for (bool broadcast : {false, true}) {
      const int64_t R = n % 8 == 0 ? n / 8 : n, N = n % 8 == 0 ? 8 : 1;
      const std::vector<float> gate = rand_bf16(broadcast ? R : R * N, rng_, -3.0f, 3.0f);
      std::vector<float> xs = u, ref_x = u;
      cpu_->sigmoid_mul(Tensor(ref_x.data(), DType::kF32, {R, N}),
                        Tensor(const_cast<float*>(gate.data()), DType::kF32, {R, broadcast ? 1 : N}));
      cuda_emu::launch(grid1(grid_for(R * N)), kThreads, [&] {
        ek::sigmoid_mul_kernel<float>(xs.data(), gate.data(), DType::kF32, broadcast, R, N);
      });
      EXPECT_TRUE(close(xs, ref_x, 1e-5, 1e-6)) << what << " sigmoid_mul broadcast " << broadcast;
    }
  }
}

TEST_F(ElementwiseEmulated, GatherRowsAndFeedTokens) {
  // gather_rows moves bytes: 16-byte units when rows allow, single bytes otherwise.
  for (int64_t cols : {8, 7}) {
    const int64_t R = 9;
    const std::vector<float> x = rand_bf16(R * cols, rng_);
    std::vector<int32_t> idx = {8, 0, 3, 3, 5};
    const int64_t n = static_cast<int64_t>(idx.size());
    std::vector<float> ref(n * cols), got(n * cols, NAN);
    cpu_->gather_rows(Tensor(const_cast<float*>(x.data()), DType::kF32, {R, cols}), Tensor(idx.data(), DType::kI32, {n}),
                      Tensor(ref.data(), DType::kF32, {n, cols}));
    const size_t row_bytes = static_cast<size_t>(cols) * 4;
    if (row_bytes % 16 == 0) {
      const int64_t units = static_cast<int64_t>(row_bytes / 16);
      cuda_emu::launch(grid1(n), row_threads(units), [&] {
        ek::gather_rows_kernel<uint4>(reinterpret_cast<const uint4*>(x.data()), R, units, idx.data(),
                                      reinterpret_cast<uint4*>(got.data()));
      });
    } else {
      const int64_t units = static_cast<int64_t>(row_bytes);
      cuda_emu::launch(grid1(n), row_threads(units), [&] {
        ek::gather_rows_kernel<unsigned char>(reinterpret_cast<const unsigned char*>(x.data()), R, units, idx.data(),
                                              reinterpret_cast<unsigned char*>(got.data()));
      });
    }
    EXPECT_TRUE(close(got, ref, 0, 0)) << "cols " << cols;
  }
  std::vector<int32_t> ids(300), sampled(64), feed = {0, 5, 299, 63, 17, 0, 200, 5, 1, 1};
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(1000 + i);
  for (size_t i = 0; i < sampled.size(); ++i) sampled[i] = static_cast<int32_t>(50000 + 3 * i);
  std::vector<int32_t> want = ids;
  cpu_->feed_tokens(Tensor(want.data(), DType::kI32, {300}), Tensor(feed.data(), DType::kI32, {5, 2}),
                    Tensor(sampled.data(), DType::kI32, {64}));
  cuda_emu::launch(grid1(grid_for(5)), kThreads, [&] { ek::feed_tokens_kernel(ids.data(), feed.data(), 5, sampled.data()); });
  EXPECT_EQ(ids, want);
}

// BF16 activations (what the GPU runs): the 8-wide vector paths and the BF16 stores, against the
// CPU backend in F32 on the same (BF16-rounded) inputs. Bounds as cuda_ops_test.cc's for BF16
// outputs: rel 1e-2 + abs 1e-3 (one or two BF16 roundings, 2^-8 relative each).
TEST_F(ElementwiseEmulated, Bf16ActivationsAndVectorPaths) {
  using bf16 = __nv_bfloat16;
  auto to16 = [](const std::vector<float>& v) {
    std::vector<bf16> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = __float2bfloat16_rn(v[i]);
    return h;
  };
  auto to32 = [](const std::vector<bf16>& h) {
    std::vector<float> v(h.size());
    for (size_t i = 0; i < h.size(); ++i) v[i] = __bfloat162float(h[i]);
    return v;
  };
  for (int64_t H : {64, 37}) {
    const int64_t R = 5;
    const std::string what = label({{"H", H}});
    const std::vector<float> x = rand_bf16(R * H, rng_, -2.0f, 2.0f), res0 = rand_bf16(R * H, rng_, -2.0f, 2.0f);
    const std::vector<float> w = rand_bf16(H, rng_, 0.5f, 1.5f);
    std::vector<float> ref_res = res0, ref_out(R * H);
    cpu_->add_rms_norm(Tensor(ref_res.data(), DType::kF32, {R, H}), Tensor(const_cast<float*>(x.data()), DType::kF32, {R, H}),
                       Tensor(const_cast<float*>(w.data()), DType::kF32, {H}), 1e-6f, Tensor(ref_out.data(), DType::kF32, {R, H}));
    const std::vector<bf16> x16 = to16(x), w16 = to16(w);
    std::vector<bf16> res16 = to16(res0), out16(R * H, __float2bfloat16_rn(NAN));
    if (H % 8 == 0) {
      cuda_emu::launch(grid1(R), row_threads(H / 8), [&] {
        ek::rms_norm_kernel<bf16, 8>(res16.data(), x16.data(), w16.data(), DType::kBF16, 1e-6f, H, out16.data());
      });
    } else {
      cuda_emu::launch(grid1(R), row_threads(H), [&] {
        ek::rms_norm_kernel<bf16, 1>(res16.data(), x16.data(), w16.data(), DType::kBF16, 1e-6f, H, out16.data());
      });
    }
    EXPECT_TRUE(close(to32(res16), ref_res, 1e-2, 1e-3)) << what << " add_rms_norm residual";
    EXPECT_TRUE(close(to32(out16), ref_out, 1e-2, 1e-3)) << what << " add_rms_norm out";
  }
  for (int64_t n : {1024, 37}) {
    const std::string what = label({{"n", n}});
    const std::vector<float> g = rand_bf16(n, rng_, -4.0f, 4.0f), u = rand_bf16(n, rng_, -2.0f, 2.0f);
    std::vector<float> ref(n), ref_a = g;
    cpu_->silu_and_mul(Tensor(const_cast<float*>(g.data()), DType::kF32, {1, n}), Tensor(const_cast<float*>(u.data()), DType::kF32, {1, n}),
                       Tensor(ref.data(), DType::kF32, {1, n}));
    cpu_->add(Tensor(ref_a.data(), DType::kF32, {1, n}), Tensor(const_cast<float*>(u.data()), DType::kF32, {1, n}));
    const std::vector<bf16> g16 = to16(g), u16 = to16(u);
    std::vector<bf16> out16(n), a16 = g16;
    if (n % 8 == 0) {
      cuda_emu::launch(grid1(grid_for(n / 8)), kThreads, [&] { ek::silu_and_mul_kernel<bf16, 8>(g16.data(), u16.data(), out16.data(), n / 8); });
      cuda_emu::launch(grid1(grid_for(n / 8)), kThreads, [&] { ek::add_kernel<bf16, 8>(a16.data(), u16.data(), n / 8); });
    } else {
      cuda_emu::launch(grid1(grid_for(n)), kThreads, [&] { ek::silu_and_mul_kernel<bf16, 1>(g16.data(), u16.data(), out16.data(), n); });
      cuda_emu::launch(grid1(grid_for(n)), kThreads, [&] { ek::add_kernel<bf16, 1>(a16.data(), u16.data(), n); });
    }
    EXPECT_TRUE(close(to32(out16), ref, 1e-2, 1e-5)) << what << " silu_and_mul";
    EXPECT_TRUE(close(to32(a16), ref_a, 1e-2, 1e-5)) << what << " add";
  }
  // rope_and_cache with BF16 q / k / v.
  const int64_t Hq = 8, Hk = 2, D = 128, rotary = 64, T = 9, num_blocks = 4, block_size = 16;
  std::vector<float> cs(T * rotary);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < rotary / 2; ++i) {
      const double a = (t + 3) * std::pow(1e4, -2.0 * i / rotary);
      cs[t * rotary + i] = static_cast<float>(std::cos(a));
      cs[t * rotary + rotary / 2 + i] = static_cast<float>(std::sin(a));
    }
  const std::vector<float> q = rand_bf16(T * Hq * D, rng_), k = rand_bf16(T * Hk * D, rng_), v = rand_bf16(T * Hk * D, rng_);
  std::vector<int32_t> slots(T);
  for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>((t * 37 + 5) % (num_blocks * block_size));
  KvCache ckv = cpu_->allocate_kv_cache(1, num_blocks, block_size, Hk, D, DType::kBF16);
  std::vector<float> cq = q, ck = k;
  cpu_->rope_and_cache(Tensor(cq.data(), DType::kF32, {T, Hq, D}), Tensor(ck.data(), DType::kF32, {T, Hk, D}),
                       Tensor(const_cast<float*>(v.data()), DType::kF32, {T, Hk, D}), Tensor(cs.data(), DType::kF32, {T, rotary}),
                       static_cast<int>(rotary), Tensor(slots.data(), DType::kI32, {T}), ckv.layers[0]);
  std::vector<bf16> q16 = to16(q), k16 = to16(k);
  const std::vector<bf16> v16 = to16(v);
  const size_t cache_elems = static_cast<size_t>(num_blocks * block_size * Hk * D);
  std::vector<bf16> kc(cache_elems, bf16{0}), vc(cache_elems, bf16{0});
  const cuda_emu::Dim3 grid{static_cast<unsigned>(T), static_cast<unsigned>((Hq + Hk + ek::kHeadsPerBlock - 1) / ek::kHeadsPerBlock), 1};
  cuda_emu::launch(grid, 32 * ek::kHeadsPerBlock, [&] {
    ek::rope_and_cache_kernel<bf16>(q16.data(), k16.data(), v16.data(), nullptr, nullptr, DType::kF32, 0.0f, cs.data(),
                                    static_cast<int>(rotary), slots.data(), Hq, Hk, D, kc.data(), vc.data(),
                                    num_blocks * block_size);
  });
  EXPECT_TRUE(close(to32(q16), cq, 1e-2, 1e-3)) << "rope q";
  EXPECT_TRUE(close(to32(k16), ck, 1e-2, 1e-3)) << "rope k";
  std::vector<float> got_k, ref_k, got_v, ref_v;
  const uint16_t* ckc = ckv.layers[0].k.ptr<uint16_t>();
  const uint16_t* cvc = ckv.layers[0].v.ptr<uint16_t>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t blk = slots[t] / block_size, off = slots[t] % block_size;
    for (int64_t h = 0; h < Hk; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = ((blk * Hk + h) * block_size + off) * D + d, g = ((blk * block_size + off) * Hk + h) * D + d;
        got_k.push_back(__bfloat162float(kc[static_cast<size_t>(g)]));
        ref_k.push_back(bf16_to_f32(ckc[c]));
        got_v.push_back(__bfloat162float(vc[static_cast<size_t>(g)]));
        ref_v.push_back(bf16_to_f32(cvc[c]));
      }
  }
  EXPECT_TRUE(close(got_k, ref_k, 1e-2, 1e-3)) << "k cache";
  EXPECT_TRUE(close(got_v, ref_v, 0, 0)) << "v cache";
}

TEST_F(ElementwiseEmulated, FallbackGemm) {
  for (auto [T, N, K] : {std::array<int64_t, 3>{5, 37, 70}, std::array<int64_t, 3>{33, 16, 16}}) {
    const std::vector<float> x = rand_bf16(T * K, rng_), w = rand_bf16(N * K, rng_), bias = rand_bf16(N, rng_);
    std::vector<float> ref(T * N), got(T * N, NAN);
    Tensor wt(const_cast<float*>(w.data()), DType::kF32, {N, K}), bt(const_cast<float*>(bias.data()), DType::kF32, {N});
    cpu_->linear(Tensor(const_cast<float*>(x.data()), DType::kF32, {T, K}), wt, &bt, Tensor(ref.data(), DType::kF32, {T, N}));
    const cuda_emu::Dim3 grid{static_cast<unsigned>((N + ek::kTile - 1) / ek::kTile),
                              static_cast<unsigned>((T + ek::kTile - 1) / ek::kTile), 1};
    cuda_emu::launch(grid, cuda_emu::Dim3{ek::kTile, ek::kTile, 1}, [&] {
      ek::gemm_fallback_kernel<float, float>(x.data(), w.data(), DType::kF32, bias.data(), DType::kF32, got.data(), T, N, K);
    });
    EXPECT_TRUE(close(got, ref, 1e-5, 1e-5 * std::sqrt(static_cast<double>(K)))) << "T=" << T << " N=" << N << " K=" << K;
  }
}

}  // namespace
}  // namespace pagoda::testing
