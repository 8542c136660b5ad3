// The CUDA Gated DeltaNet kernels (src/backend/cuda/gdn_kernels.cuh: causal conv1d and the gated
// delta rule) run on the host under tests/cuda/cuda_emu.h with F32 activations, against the CPU
// backend's causal_conv1d / gated_delta_rule (token by token, chunk_size 0) on the same inputs and
// states (and BF16 activations, what the GPU runs, on copies of the states, with the GPU test's
// bounds), over the shapes and batches of cuda_hybrid_test.cc (which checks the GPU itself when a
// device is present): fresh and continuing sequences, slots out of order, an empty sequence, pure
// decode, long prefill, chunked prefill then decode; conv weights F32 and BF16.
// Bounds: the conv state holds raw inputs (exact); conv output rel 1e-5 + abs 1e-6 (one FP32 dot of
// K taps, another order); gated_delta_rule output and recurrent state rel 1e-4 + abs 1e-5 of
// scale (FP32 summation order over d_k; the update is non-expansive).
#include "cuda_emu.h"  // first: it defines the CUDA keywords for the kernel source

#include "backend/cuda/gdn_kernels.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/backend.h"
#include "cuda_test_util.h"

namespace pagoda::testing {
namespace {

namespace gk = cuda::gdn_kernels;

using Seq = GdnSeq;

// One linear-attention layer: the CPU backend and the emulated kernels, each with its own copy of
// the conv + recurrent state of every slot (the same random values at the start).
class EmuGdnLayer {
 public:
  EmuGdnLayer(const GdnShape& sh, int K, int64_t slots, bool bf16_weights, std::mt19937& rng)
      : cpu_(make_cpu_backend()), sh_(sh), K_(K), S_(slots), bf16_weights_(bf16_weights) {
    C_ = 2 * int64_t{sh.num_k_heads} * sh.k_head_dim + int64_t{sh.num_v_heads} * sh.v_head_dim;
    const int64_t nv = sh.num_v_heads, dk = sh.k_head_dim, dv = sh.v_head_dim;
    conv_w_ = bf16_weights ? rand_bf16(C_ * K, rng, -0.6f, 0.6f) : rand_f32(C_ * K, rng, -0.6f, 0.6f);
    for (float w : conv_w_) conv_w_bf16_.push_back(f32_to_bf16(w));
    A_log_ = rand_f32(nv, rng, -1.0f, 0.5f);
    dt_bias_ = rand_f32(nv, rng, -1.0f, 1.0f);
    conv_ = rand_bf16(S_ * C_ * (K - 1), rng, -1.0f, 1.0f);
    rec_ = rand_f32(S_ * nv * dk * dv, rng, -0.5f, 0.5f);
    e_conv_ = conv_;
    e_rec_ = rec_;
  }

  void step(const std::vector<Seq>& seqs, std::mt19937& rng, const std::string& what) {
    const GdnBatch batch(seqs);
    const int n = static_cast<int>(seqs.size());
    const int nk = sh_.num_k_heads, nv = sh_.num_v_heads, dk = sh_.k_head_dim, dv = sh_.v_head_dim;
    const int64_t T = batch.T;
    const std::vector<int32_t>& qsl = batch.qsl;
    const std::vector<int32_t>& lens = batch.lens;
    const std::vector<int32_t>& slots = batch.slots;
    const std::vector<float> x = rand_bf16(T * C_, rng, -1.0f, 1.0f);
    const std::vector<float> a = rand_bf16(T * nv, rng, -1.0f, 1.0f);
    const std::vector<float> b = rand_bf16(T * nv, rng, -2.0f, 2.0f);
    const AttentionMetadata& m = batch.meta;
    LinearAttnState st;
    st.conv = Tensor(conv_.data(), DType::kF32, {S_, C_, K_ - 1});
    st.recurrent = Tensor(rec_.data(), DType::kF32, {S_, nv, dk, dv});
    std::vector<float> ref_conv(T * C_), ref_out(T * nv * dv);
    std::vector<float> xc = x, ac = a, bc = b;
    cpu_->causal_conv1d(Tensor(xc.data(), DType::kF32, {T, C_}), Tensor(conv_w_.data(), DType::kF32, {C_, K_}), m, st,
                        Tensor(ref_conv.data(), DType::kF32, {T, C_}));
    cpu_->gated_delta_rule(Tensor(xc.data(), DType::kF32, {T, C_}), Tensor(ac.data(), DType::kF32, {T, nv}),
                           Tensor(bc.data(), DType::kF32, {T, nv}), Tensor(A_log_.data(), DType::kF32, {nv}),
                           Tensor(dt_bias_.data(), DType::kF32, {nv}), sh_, m, 0, st,
                           Tensor(ref_out.data(), DType::kF32, {T, nv * dv}));

    // The kernels, with the grids cuda_gdn.cu launches them on.
    std::vector<float> conv_out(T * C_, NAN), out(T * nv * dv, NAN);
    const void* w = bf16_weights_ ? static_cast<const void*>(conv_w_bf16_.data()) : conv_w_.data();
    const DType wd = bf16_weights_ ? DType::kBF16 : DType::kF32;
    const cuda_emu::Dim3 conv_grid{static_cast<unsigned>((C_ + gk::kConvThreads - 1) / gk::kConvThreads),
                                   static_cast<unsigned>(n), 1};
    const int64_t tiles = (dv + gk::kGdnColumns - 1) / gk::kGdnColumns;
    const cuda_emu::Dim3 gdn_grid{static_cast<unsigned>(tiles * nv), static_cast<unsigned>(n), 1};
    const int rows = (dk + gk::kGdnWarps - 1) / gk::kGdnWarps;
    // Both kernels for activations of type TA on the given states.
    auto run = [&](auto tag, const std::vector<float>& xf, const std::vector<float>& af, const std::vector<float>& bf,
                   std::vector<float>& conv_state, std::vector<float>& rec_state, std::vector<float>& conv_res,
                   std::vector<float>& out_res) {
      using TA = decltype(tag);
      auto cvt = [](const std::vector<float>& v) {
        std::vector<TA> h(v.size());
        for (size_t i = 0; i < v.size(); ++i) {
          if constexpr (std::is_same_v<TA, float>) {
            h[i] = v[i];
          } else {
            h[i] = __float2bfloat16_rn(v[i]);
          }
        }
        return h;
      };
      auto back = [](const std::vector<TA>& h) {
        std::vector<float> v(h.size());
        for (size_t i = 0; i < h.size(); ++i) {
          if constexpr (std::is_same_v<TA, float>) {
            v[i] = h[i];
          } else {
            v[i] = __bfloat162float(h[i]);
          }
        }
        return v;
      };
      const std::vector<TA> xa = cvt(xf), aa = cvt(af), ba = cvt(bf);
      std::vector<TA> co(T * C_), o(T * nv * dv);
      auto conv = [&](auto kmax) {
        constexpr int KM = decltype(kmax)::value;
        cuda_emu::launch(conv_grid, gk::kConvThreads, [&] {
          gk::causal_conv1d_kernel<TA, KM>(xa.data(), w, wd, qsl.data(), lens.data(), slots.data(), T, C_, K_,
                                           conv_state.data(), S_, co.data());
        });
      };
      if (K_ <= 4) {
        conv(std::integral_constant<int, 4>{});
      } else {
        conv(std::integral_constant<int, 8>{});
      }
      auto gdn = [&](auto maxr) {
        constexpr int R = decltype(maxr)::value;
        cuda_emu::launch(gdn_grid, gk::kGdnWarps * 32, [&] {
          gk::gated_delta_rule_kernel<TA, R>(xa.data(), aa.data(), ba.data(), A_log_.data(), dt_bias_.data(), qsl.data(),
                                             lens.data(), slots.data(), T, nk, nv, dk, dv, rec_state.data(), S_, o.data());
        });
      };
      if (rows <= 4) {
        gdn(std::integral_constant<int, 4>{});
      } else if (rows <= 8) {
        gdn(std::integral_constant<int, 8>{});
      } else if (rows <= 16) {
        gdn(std::integral_constant<int, 16>{});
      } else {
        gdn(std::integral_constant<int, 32>{});
      }
      conv_res = back(co);
      out_res = back(o);
    };
    // BF16 activations (what the GPU runs) on copies of the states, with cuda_hybrid_test.cc's bounds.
    std::vector<float> b_conv = e_conv_, b_rec = e_rec_, b_conv_out, b_out;
    run(__nv_bfloat16{}, x, a, b, b_conv, b_rec, b_conv_out, b_out);
    EXPECT_TRUE(close(b_conv_out, ref_conv, 1e-2, 1e-5)) << what << ": causal_conv1d out (BF16)";
    EXPECT_TRUE(close(b_conv, conv_, 0, 0)) << what << ": conv state (BF16)";
    EXPECT_TRUE(close_scaled(b_out, ref_out, 1e-2, 2e-3)) << what << ": gated_delta_rule out (BF16)";
    EXPECT_TRUE(close_scaled(b_rec, rec_, 1e-3, 1e-4)) << what << ": recurrent state (BF16)";
    // F32 activations on the kernels' own states (carried to the next step).
    run(float{}, x, a, b, e_conv_, e_rec_, conv_out, out);
    EXPECT_TRUE(close(conv_out, ref_conv, 1e-5, 1e-6)) << what << ": causal_conv1d out";
    EXPECT_TRUE(close(e_conv_, conv_, 0, 0)) << what << ": conv state";
    EXPECT_TRUE(close_scaled(out, ref_out, 1e-4, 1e-5)) << what << ": gated_delta_rule out";
    EXPECT_TRUE(close_scaled(e_rec_, rec_, 1e-4, 1e-5)) << what << ": recurrent state";
  }

 private:
  std::unique_ptr<Backend> cpu_;
  GdnShape sh_;
  int K_;
  int64_t S_, C_ = 0;
  bool bf16_weights_;
  std::vector<float> conv_w_, A_log_, dt_bias_, conv_, rec_;  // weights + the CPU's states
  std::vector<uint16_t> conv_w_bf16_;
  std::vector<float> e_conv_, e_rec_;  // the kernels' states
};


TEST(GdnKernelsEmulated, MixedBatchesMatchCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  std::mt19937 rng(101);
  for (const GdnConfig& c : kGdnConfigs) {
    for (bool bf16_weights : {false, true}) {
      const std::string name = std::string(c.name) + (bf16_weights ? " bf16 conv weights" : "");
      EmuGdnLayer layer(c.shape, c.K, 8, bf16_weights, rng);
      layer.step({{1, 40, 3}, {7, 7, 0}, {1, 2, 5}, {33, 50, 1}, {3, 3, 4}, {0, 12, 2}, {5, 9, 6}}, rng, name + " mixed");
      for (int i = 0; i < 2; ++i)
        layer.step({{1, 42 + i, 3}, {1, 8 + i, 0}, {1, 3 + i, 5}, {1, 51 + i, 1}}, rng, name + " decode");
      layer.step({{20, 20, 7}}, rng, name + " prefill 20");
    }
  }
}

TEST(GdnKernelsEmulated, ChunkedPrefillThenDecodeMatchesCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "fibers (setjmp / makecontext stacks) confuse AddressSanitizer's stack tracking";
#endif
  std::mt19937 rng(102);
  for (const GdnConfig& c : {kGdnConfigs[0], kGdnConfigs[3]}) {
    EmuGdnLayer layer(c.shape, c.K, 4, false, rng);
    layer.step({{20, 20, 2}, {5, 5, 0}}, rng, std::string(c.name) + " step 0");
    layer.step({{13, 33, 2}, {1, 6, 0}}, rng, std::string(c.name) + " step 1");
    layer.step({{2, 35, 2}, {1, 7, 0}}, rng, std::string(c.name) + " step 2");
    for (int i = 0; i < 3; ++i) layer.step({{1, 8 + i, 0}, {1, 36 + i, 2}}, rng, std::string(c.name) + " decode");
  }
}

}  // namespace
}  // namespace pagoda::testing
