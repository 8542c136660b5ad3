// The CUDA backend's Gated DeltaNet ops (causal_conv1d, gated_delta_rule) and MoE ops (moe_route,
// moe_experts) against the CPU backend on the same inputs. Every test skips when no CUDA device is
// visible (and on builds without CUDA, where cuda_device_count() is 0).
//
// Inputs are random and rounded to BF16 first, so both backends see exactly the same values
// (the CPU backend gets them as F32 activations, the CUDA backend as BF16); F32 tensors (states,
// A_log, dt_bias, conv weights, router logits, routing weights) are passed as the same F32 values.
// Outputs on the GPU are poisoned with NaN before every run, and every comparison fails on NaN /
// Inf. Bounds (|gpu - cpu| <= rel * |cpu| + abs, where "of scale" means times max |cpu| of the
// compared tensor):
//  - causal_conv1d: out rel 1e-2 (BF16 rounding of the output is 2^-9 relative) + abs 1e-5; the
//    conv state holds raw inputs: exact;
//  - gated_delta_rule (the GPU runs token by token, the CPU reference too, chunk_size 0): out
//    rel 1e-2 + abs 2e-3 of scale; recurrent state (F32 on both) rel 1e-3 + abs 1e-4 of scale
//    (only the FP32 summation order differs; the delta-rule update is non-expansive, so it does
//    not grow over the tokens). a, b, A_log and dt_bias are small so gates are sane: decay in
//    ~(0.03, 0.95), beta in ~(0.12, 0.88);
//  - moe_route: ids exact (logits are distinct and at least 8 / E apart, so no near-ties; exact
//    ties are tested separately), weights rel 1e-5 + abs 1e-7 (F32 exp / sum order);
//  - moe_experts: rel 1e-2 + abs 1e-2 of scale (the GPU rounds silu(gate) * up and the down
//    projection to BF16, ~2^-9 relative each, summed over top_k weighted rows).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../backend/test_util.h"
#include "cuda_test_util.h"
#include "backend/backend.h"
#include "base/dtype.h"
#include "base/error.h"

namespace pagoda::testing {
namespace {

class CudaHybridTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend();
  }
  std::unique_ptr<Backend> gpu_, cpu_;
  std::vector<DeviceBuffer> weights_;  // place_weight storage
};

// ================================ Gated DeltaNet ================================================

using Seq = GdnSeq;  // cuda_test_util.h

// One linear-attention layer on both backends: the same weights, each backend with its own copy
// of the conv + recurrent state of num_slots slots (both start from the same random values, so
// sequences that continue start from non-zero states and fresh ones must ignore their slot).
class GdnLayer {
 public:
  GdnLayer(Backend& gpu, Backend& cpu, const GdnShape& sh, int K, int64_t slots, std::mt19937& rng)
      : gpu_(gpu), cpu_(cpu), sh_(sh), K_(K), S_(slots) {
    C_ = 2 * int64_t{sh.num_k_heads} * sh.k_head_dim + int64_t{sh.num_v_heads} * sh.v_head_dim;
    const int64_t nv = sh.num_v_heads, dk = sh.k_head_dim, dv = sh.v_head_dim;
    conv_w_ = rand_f32(C_ * K, rng, -0.6f, 0.6f);
    A_log_ = rand_f32(nv, rng, -1.0f, 0.5f);
    dt_bias_ = rand_f32(nv, rng, -1.0f, 1.0f);
    conv_ = rand_bf16(S_ * C_ * (K - 1), rng, -1.0f, 1.0f);
    rec_ = rand_f32(S_ * nv * dk * dv, rng, -0.5f, 0.5f);
    g_conv_w_ = upload(gpu_, conv_w_, DType::kF32, {C_, K});
    g_A_log_ = upload(gpu_, A_log_, DType::kF32, {nv});
    g_dt_bias_ = upload(gpu_, dt_bias_, DType::kF32, {nv});
    g_conv_ = upload(gpu_, conv_, DType::kF32, {S_, C_, K - 1});
    g_rec_ = upload(gpu_, rec_, DType::kF32, {S_, nv, dk, dv});
  }

  // Runs causal_conv1d and gated_delta_rule on fresh random inputs for the batch on both
  // backends and compares outputs and states. The same x is the conv input and the qkv input
  // (each op is compared on its own).
  void step(const std::vector<Seq>& seqs, std::mt19937& rng, const std::string& what) {
    const GdnBatch batch(seqs);
    const int64_t n = static_cast<int64_t>(seqs.size());
    const int64_t nv = sh_.num_v_heads, dk = sh_.k_head_dim, dv = sh_.v_head_dim;
    const int64_t T = batch.T;
    const std::vector<float> x = rand_bf16(T * C_, rng, -1.0f, 1.0f);
    const std::vector<float> a = rand_bf16(T * nv, rng, -1.0f, 1.0f);
    const std::vector<float> b = rand_bf16(T * nv, rng, -2.0f, 2.0f);

    // CPU reference (token by token: chunk_size 0).
    const AttentionMetadata& cm = batch.meta;
    LinearAttnState cst;
    cst.conv = Tensor(conv_.data(), DType::kF32, {S_, C_, K_ - 1});
    cst.recurrent = Tensor(rec_.data(), DType::kF32, {S_, nv, dk, dv});
    std::vector<float> ref_conv(T * C_), ref_out(T * nv * dv);
    std::vector<float> xc = x, ac = a, bc = b;
    cpu_.causal_conv1d(Tensor(xc.data(), DType::kF32, {T, C_}), Tensor(conv_w_.data(), DType::kF32, {C_, K_}), cm,
                       cst, Tensor(ref_conv.data(), DType::kF32, {T, C_}));
    cpu_.gated_delta_rule(Tensor(xc.data(), DType::kF32, {T, C_}), Tensor(ac.data(), DType::kF32, {T, nv}),
                          Tensor(bc.data(), DType::kF32, {T, nv}), Tensor(A_log_.data(), DType::kF32, {nv}),
                          Tensor(dt_bias_.data(), DType::kF32, {nv}), sh_, cm, 0, cst,
                          Tensor(ref_out.data(), DType::kF32, {T, nv * dv}));

    // GPU.
    Dev gq = upload_i32(gpu_, batch.qsl, {n + 1}), gl = upload_i32(gpu_, batch.lens, {n}),
        gs = upload_i32(gpu_, batch.slots, {n});
    AttentionMetadata gm = cm;
    gm.query_start_loc = gq.t;
    gm.seq_lens = gl.t;
    gm.state_slots = gs.t;
    LinearAttnState gst;
    gst.conv = g_conv_.t;
    gst.recurrent = g_rec_.t;
    Dev gx = upload(gpu_, x, DType::kBF16, {T, C_});
    Dev ga = upload(gpu_, a, DType::kBF16, {T, nv});
    Dev gb = upload(gpu_, b, DType::kBF16, {T, nv});
    Dev gconv_out = dev_alloc(gpu_, DType::kBF16, {T, C_});
    Dev gout = dev_alloc(gpu_, DType::kBF16, {T, nv * dv});
    poison(gpu_, gconv_out.t);
    poison(gpu_, gout.t);
    gpu_.causal_conv1d(gx.t, g_conv_w_.t, gm, gst, gconv_out.t);
    gpu_.gated_delta_rule(gx.t, ga.t, gb.t, g_A_log_.t, g_dt_bias_.t, sh_, gm, 64, gst, gout.t);

    EXPECT_TRUE(close(download(gpu_, gconv_out.t), ref_conv, 1e-2, 1e-5)) << what << ": causal_conv1d out";
    EXPECT_TRUE(close(download(gpu_, g_conv_.t), conv_, 0, 0)) << what << ": conv state";
    EXPECT_TRUE(close_scaled(download(gpu_, gout.t), ref_out, 1e-2, 2e-3)) << what << ": gated_delta_rule out";
    EXPECT_TRUE(close_scaled(download(gpu_, g_rec_.t), rec_, 1e-3, 1e-4)) << what << ": recurrent state";
  }

  int64_t slots() const { return S_; }

 private:
  Backend& gpu_;
  Backend& cpu_;
  GdnShape sh_;
  int K_;
  int64_t S_, C_;
  std::vector<float> conv_w_, A_log_, dt_bias_, conv_, rec_;  // CPU weights + CPU-side states
  Dev g_conv_w_, g_A_log_, g_dt_bias_, g_conv_, g_rec_;
};


std::string config_name(const GdnConfig& c) { return std::string(c.name) + " K=" + std::to_string(c.K); }

TEST_F(CudaHybridTest, GdnMixedBatchesMatchCpu) {
  std::mt19937 rng(101);
  for (const GdnConfig& c : kGdnConfigs) {
    GdnLayer layer(*gpu_, *cpu_, c.shape, c.K, 8, rng);
    // Mixed prefill / decode batch: fresh and continuing sequences, slots out of order, an empty
    // sequence (its slot 2 must stay untouched), slots 6 and 7 unused.
    layer.step({{1, 40, 3}, {7, 7, 0}, {1, 2, 5}, {33, 50, 1}, {3, 3, 4}, {0, 12, 2}, {5, 9, 6}}, rng,
               config_name(c) + " mixed");
    // Pure decode batches, continuing from the states just written.
    for (int i = 0; i < 3; ++i)
      layer.step({{1, 42 + i, 3}, {1, 8 + i, 0}, {1, 3 + i, 5}, {1, 51 + i, 1}}, rng,
                 config_name(c) + " decode " + std::to_string(i));
    // One long fresh prefill chunk.
    layer.step({{64, 64, 7}}, rng, config_name(c) + " prefill 64");
  }
}

TEST_F(CudaHybridTest, GdnChunkedPrefillThenDecodeMatchesCpu) {
  std::mt19937 rng(102);
  for (const GdnConfig& c : {kGdnConfigs[0], kGdnConfigs[3]}) {
    GdnLayer layer(*gpu_, *cpu_, c.shape, c.K, 4, rng);
    // Sequence A (slot 2) prefilled in chunks of 20 and 13 tokens, sequence B (slot 0) in one
    // chunk of 5 tokens, then both decode; a short chunk (2 < K - 1 for K = 6) exercises history
    // that mixes old state and new inputs.
    layer.step({{20, 20, 2}, {5, 5, 0}}, rng, config_name(c) + " step 0");
    layer.step({{13, 33, 2}, {1, 6, 0}}, rng, config_name(c) + " step 1");
    layer.step({{2, 35, 2}, {1, 7, 0}}, rng, config_name(c) + " step 2");
    for (int i = 0; i < 4; ++i)
      layer.step({{1, 8 + i, 0}, {1, 36 + i, 2}}, rng, config_name(c) + " decode " + std::to_string(i));
  }
}

// A sequence whose slot is out of range cannot be rejected on the host (slots are device data):
// its outputs become NaN and no state changes.
// A slot outside [0, S) gives NaN; AttentionMetadata::kPaddingSlot (a padding sequence of the
// padded decode layout) gives zeros, as on the CPU backend. Neither touches any state.
TEST_F(CudaHybridTest, GdnBadSlotGivesNaNPaddingZerosAndLeavesStates) {
  for (const int32_t slot : {int32_t{2}, AttentionMetadata::kPaddingSlot}) {
    SCOPED_TRACE(slot);
    std::mt19937 rng(103);
    const GdnShape sh{2, 2, 32, 32};
    const int64_t S = 2, K = 4, C = 2 * 2 * 32 + 2 * 32;
    const int32_t T = 3;
    std::vector<float> conv = rand_bf16(S * C * (K - 1), rng), rec = rand_f32(S * 2 * 32 * 32, rng, -0.5f, 0.5f);
    Dev gconv = upload(*gpu_, conv, DType::kF32, {S, C, K - 1});
    Dev grec = upload(*gpu_, rec, DType::kF32, {S, 2, 32, 32});
    Dev w = upload(*gpu_, rand_f32(C * K, rng, -0.5f, 0.5f), DType::kF32, {C, K});
    Dev A_log = upload(*gpu_, rand_f32(2, rng, -1, 0), DType::kF32, {2});
    Dev dt_bias = upload(*gpu_, rand_f32(2, rng, -1, 1), DType::kF32, {2});
    Dev x = upload(*gpu_, rand_bf16(T * C, rng), DType::kBF16, {T, C});
    Dev ab = upload(*gpu_, rand_bf16(T * 2, rng), DType::kBF16, {T, 2});
    Dev q = upload_i32(*gpu_, {0, T}, {2}), l = upload_i32(*gpu_, {T + 4}, {1});
    Dev s = upload_i32(*gpu_, {slot}, {1});  // slots are [0, S)
    AttentionMetadata meta;
    meta.query_start_loc = q.t;
    meta.seq_lens = l.t;
    meta.state_slots = s.t;
    meta.num_seqs = 1;
    meta.num_tokens = T;
    LinearAttnState st{gconv.t, grec.t};
    Dev conv_out = dev_alloc(*gpu_, DType::kBF16, {T, C});
    Dev out = dev_alloc(*gpu_, DType::kBF16, {T, 2 * 32});
    poison(*gpu_, conv_out.t);
    poison(*gpu_, out.t);
    gpu_->causal_conv1d(x.t, w.t, meta, st, conv_out.t);
    gpu_->gated_delta_rule(x.t, ab.t, ab.t, A_log.t, dt_bias.t, sh, meta, 0, st, out.t);
    for (const std::vector<float>& o : {download(*gpu_, conv_out.t), download(*gpu_, out.t)})
      for (float v : o) {
        if (slot == AttentionMetadata::kPaddingSlot) {
          ASSERT_EQ(v, 0.0f);
        } else {
          ASSERT_TRUE(std::isnan(v));
        }
      }
    EXPECT_TRUE(close(download(*gpu_, gconv.t), conv, 0, 0));
    EXPECT_TRUE(close(download(*gpu_, grec.t), rec, 0, 0));
  }
}

// ================================ Mixture of experts =============================================


struct RouteResult {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

RouteResult route_cpu(Backend& cpu, std::vector<float> logits, int64_t T, int64_t E, int64_t k, bool renorm) {
  RouteResult r{std::vector<int32_t>(T * k), std::vector<float>(T * k)};
  cpu.moe_route(Tensor(logits.data(), DType::kF32, {T, E}), renorm, Tensor(r.ids.data(), DType::kI32, {T, k}),
                Tensor(r.weights.data(), DType::kF32, {T, k}));
  return r;
}

RouteResult route_gpu(Backend& gpu, const std::vector<float>& logits, int64_t T, int64_t E, int64_t k, bool renorm) {
  Dev gl = upload(gpu, logits, DType::kF32, {T, E});
  Dev ids = dev_alloc(gpu, DType::kI32, {T, k});
  Dev w = dev_alloc(gpu, DType::kF32, {T, k});
  poison(gpu, ids.t);
  poison(gpu, w.t);
  gpu.moe_route(gl.t, renorm, ids.t, w.t);
  return RouteResult{download_i32(gpu, ids.t), download(gpu, w.t)};
}

TEST_F(CudaHybridTest, MoeRouteMatchesCpu) {
  std::mt19937 rng(201);
  for (int64_t E : {8, 64, 128, 512})
    for (int64_t k : {1, 2, 4, 8})
      for (int64_t T : {1, 7, 64})
        for (bool renorm : {false, true}) {
          const std::string what = "E=" + std::to_string(E) + " k=" + std::to_string(k) + " T=" + std::to_string(T) +
                                   " renorm=" + std::to_string(renorm);
          const std::vector<float> logits = distinct_logits(T, E, rng);
          const RouteResult ref = route_cpu(*cpu_, logits, T, E, k, renorm);
          const RouteResult got = route_gpu(*gpu_, logits, T, E, k, renorm);
          EXPECT_EQ(got.ids, ref.ids) << what;
          EXPECT_TRUE(close(got.weights, ref.weights, 1e-5, 1e-7)) << what;
        }
}

TEST_F(CudaHybridTest, MoeRouteTiesPickLowerIdFirst) {
  const int64_t E = 16, k = 4;
  std::vector<float> logits(3 * E, 0.0f);  // row 0: all equal
  for (int64_t e = 0; e < E; ++e) logits[E + e] = -1.0f;
  logits[E + 9] = 2.0f;  // row 1: 9, then 5 and 12 tied, then 3
  logits[E + 12] = 1.0f;
  logits[E + 5] = 1.0f;
  logits[E + 3] = 0.5f;
  for (int64_t e = 0; e < E; ++e) logits[2 * E + e] = (e % 3 == 0) ? 1.0f : 0.0f;  // row 2: 0, 3, 6, 9
  for (bool renorm : {false, true}) {
    const RouteResult ref = route_cpu(*cpu_, logits, 3, E, k, renorm);
    const RouteResult got = route_gpu(*gpu_, logits, 3, E, k, renorm);
    const std::vector<int32_t> want = {0, 1, 2, 3, 9, 5, 12, 3, 0, 3, 6, 9};
    EXPECT_EQ(ref.ids, want);
    EXPECT_EQ(got.ids, want);
    EXPECT_TRUE(close(got.weights, ref.weights, 1e-5, 1e-7)) << "renorm=" << renorm;
  }
}

// The experts of one MoE block on both backends: fused [E, ...] host tensors (the CPU backend
// uses views of them, zero-copy) and their device copies.
struct Experts {
  Experts(Backend& gpu, std::vector<DeviceBuffer>* storage, DType dtype, int64_t E, int64_t H, int64_t I,
          std::mt19937& rng)
      : gate(dtype, {E, I, H}, rng, -std::sqrt(3.0f / H), std::sqrt(3.0f / H)),
        up(dtype, {E, I, H}, rng, -std::sqrt(3.0f / H), std::sqrt(3.0f / H)),
        down(dtype, {E, H, I}, rng, -std::sqrt(3.0f / I), std::sqrt(3.0f / I)) {
    const Tensor g = gpu.place_weight(gate.tensor(), storage), u = gpu.place_weight(up.tensor(), storage),
                 d = gpu.place_weight(down.tensor(), storage);
    const Tensor hg = gate.tensor(), hu = up.tensor(), hd = down.tensor();
    const size_t es = dtype_size(dtype);
    for (int64_t e = 0; e < E; ++e) {
      const size_t off = static_cast<size_t>(e * I * H) * es;
      auto view = [&](const Tensor& t, int64_t r, int64_t c) {
        return Tensor(static_cast<char*>(t.data) + off, dtype, {r, c});
      };
      host.gate.push_back(view(hg, I, H));
      host.up.push_back(view(hu, I, H));
      host.down.push_back(view(hd, H, I));
      dev.gate.push_back(view(g, I, H));
      dev.up.push_back(view(u, I, H));
      dev.down.push_back(view(d, H, I));
    }
  }
  RandomTensor gate, up, down;
  MoeExpertWeights host, dev;
};

// moe_experts on both backends for the given routing; compares out.
void check_experts(Backend& gpu, Backend& cpu, const Experts& ex, const std::vector<float>& x,
                   const std::vector<int32_t>& ids, const std::vector<float>& w, int64_t T, int64_t H, int64_t I,
                   int64_t E, int64_t k, const std::string& what) {
  const int64_t R = T * k;
  // CPU (F32 activations).
  std::vector<float> ref(T * H);
  CpuMoeScratch cs(R, H, I, E);
  const std::vector<int32_t>& off = cs.offsets;
  std::vector<float> xc = x, wc = w;
  std::vector<int32_t> idc = ids;
  cpu.moe_experts(Tensor(xc.data(), DType::kF32, {T, H}), Tensor(idc.data(), DType::kI32, {T, k}),
                  Tensor(wc.data(), DType::kF32, {T, k}), ex.host, cs.scratch, Tensor(ref.data(), DType::kF32, {T, H}));
  // GPU (BF16 activations; y aliases x like the models' scratch).
  Dev gx = upload(gpu, x, DType::kBF16, {T, H});
  Dev gids = upload_i32(gpu, ids, {T, k});
  Dev gw = upload(gpu, w, DType::kF32, {T, k});
  Dev xy = dev_alloc(gpu, DType::kBF16, {R, H}), g = dev_alloc(gpu, DType::kBF16, {R, I}),
      u = dev_alloc(gpu, DType::kBF16, {R, I});
  Dev i1 = dev_alloc(gpu, DType::kI32, {R}), i2 = dev_alloc(gpu, DType::kI32, {R}), i3 = dev_alloc(gpu, DType::kI32, {E + 1});
  for (const Dev* d : {&xy, &g, &u, &i1, &i2, &i3}) poison(gpu, d->t);
  MoeScratch gs;
  gs.x = xy.t;
  gs.y = xy.t;
  gs.gate = g.t;
  gs.up = u.t;
  gs.row_of_pair = i1.t;
  gs.pair_of_row = i2.t;
  gs.expert_offsets = i3.t;
  Dev out = dev_alloc(gpu, DType::kBF16, {T, H});
  poison(gpu, out.t);
  gpu.moe_experts(gx.t, gids.t, gw.t, ex.dev, gs, out.t);
  EXPECT_TRUE(close_scaled(download(gpu, out.t), ref, 1e-2, 1e-2)) << what;
  // The expert offsets are the same whatever the order of rows inside an expert.
  EXPECT_EQ(download_i32(gpu, i3.t), off) << what << ": expert_offsets";
}

struct MoeConfig {
  int64_t E, k, T, H, I;
  DType dtype;
};

const MoeConfig kMoeConfigs[] = {
    {8, 2, 1, 64, 32, DType::kBF16},      {8, 2, 64, 96, 40, DType::kBF16},   {64, 8, 5, 128, 64, DType::kBF16},
    {128, 8, 64, 64, 96, DType::kBF16},   {128, 4, 17, 256, 128, DType::kBF16}, {32, 2, 33, 37, 29, DType::kBF16},
    {16, 4, 9, 64, 48, DType::kF32},      {16, 4, 9, 64, 48, DType::kF16},    {8, 8, 40, 64, 32, DType::kBF16},
};

std::string moe_name(const MoeConfig& c) {
  return "E=" + std::to_string(c.E) + " k=" + std::to_string(c.k) + " T=" + std::to_string(c.T) +
         " H=" + std::to_string(c.H) + " I=" + std::to_string(c.I) + " " + std::string(dtype_name(c.dtype));
}

TEST_F(CudaHybridTest, MoeExpertsMatchCpu) {
  std::mt19937 rng(202);
  for (const MoeConfig& c : kMoeConfigs) {
    Experts ex(*gpu_, &weights_, c.dtype, c.E, c.H, c.I, rng);
    // Random distinct experts per token, random positive weights.
    std::vector<int32_t> ids(c.T * c.k);
    std::vector<int32_t> perm(c.E);
    for (int64_t t = 0; t < c.T; ++t) {
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      std::copy(perm.begin(), perm.begin() + c.k, ids.begin() + t * c.k);
    }
    const std::vector<float> w = rand_f32(c.T * c.k, rng, 0.05f, 1.0f);
    const std::vector<float> x = rand_bf16(c.T * c.H, rng);
    check_experts(*gpu_, *cpu_, ex, x, ids, w, c.T, c.H, c.I, c.E, c.k, moe_name(c));
    // Twice (the cached device table of expert pointers is reused) with every token on expert 0.
    std::fill(ids.begin(), ids.end(), 0);
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t j = 0; j < c.k; ++j) ids[t * c.k + j] = static_cast<int32_t>(j % 2 == 0 ? 0 : c.E - 1);
    check_experts(*gpu_, *cpu_, ex, x, ids, w, c.T, c.H, c.I, c.E, c.k, moe_name(c) + " skewed");
  }
}

// Routing on each backend, then the experts with each backend's own ids / weights.
TEST_F(CudaHybridTest, MoeRouteThenExpertsMatchesCpu) {
  std::mt19937 rng(203);
  for (bool renorm : {false, true}) {
    for (const MoeConfig& c : {kMoeConfigs[2], kMoeConfigs[3]}) {
      Experts ex(*gpu_, &weights_, c.dtype, c.E, c.H, c.I, rng);
      const std::vector<float> logits = distinct_logits(c.T, c.E, rng);
      const RouteResult r = route_cpu(*cpu_, logits, c.T, c.E, c.k, renorm);
      const RouteResult gr = route_gpu(*gpu_, logits, c.T, c.E, c.k, renorm);
      ASSERT_EQ(gr.ids, r.ids);
      const std::vector<float> x = rand_bf16(c.T * c.H, rng);
      // The GPU weights differ from the CPU's by F32 rounding only; use the CPU's for both.
      check_experts(*gpu_, *cpu_, ex, x, r.ids, r.weights, c.T, c.H, c.I, c.E, c.k,
                    moe_name(c) + " renorm=" + std::to_string(renorm));
    }
  }
}

// ================================ errors ===========================================================

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << parts[0];
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST_F(CudaHybridTest, BadShapesAndDtypesThrowClearErrors) {
  // Shape-only tensors: every check happens before any device access.
  auto t = [](DType d, std::initializer_list<int64_t> dims) { return Tensor(nullptr, d, dims); };
  int32_t dummy = 0;
  AttentionMetadata meta;
  meta.num_seqs = 1;
  meta.query_start_loc = Tensor(&dummy, DType::kI32, {2});
  meta.seq_lens = Tensor(&dummy, DType::kI32, {1});
  meta.state_slots = Tensor(&dummy, DType::kI32, {1});
  const GdnShape sh{2, 4, 32, 16};
  const int64_t C = 2 * 2 * 32 + 4 * 16;

  LinearAttnState st{t(DType::kF32, {3, C, 3}), t(DType::kF32, {3, 4, 32, 8})};  // recurrent: d_v 8 != 16
  expect_error([&] {
    gpu_->gated_delta_rule(t(DType::kBF16, {5, C}), t(DType::kBF16, {5, 4}), t(DType::kBF16, {5, 4}),
                           t(DType::kF32, {4}), t(DType::kF32, {4}), sh, meta, 0, st, t(DType::kBF16, {5, 64}));
  }, {"gated_delta_rule", "state.recurrent"});
  st.recurrent = t(DType::kF32, {3, 4, 32, 16});
  expect_error([&] {
    gpu_->gated_delta_rule(t(DType::kBF16, {5, C}), t(DType::kBF16, {5, 4}), t(DType::kBF16, {5, 4}),
                           t(DType::kBF16, {4}), t(DType::kF32, {4}), sh, meta, 0, st, t(DType::kBF16, {5, 64}));
  }, {"gated_delta_rule", "A_log", "F32"});
  expect_error([&] {
    gpu_->gated_delta_rule(t(DType::kBF16, {5, C + 1}), t(DType::kBF16, {5, 4}), t(DType::kBF16, {5, 4}),
                           t(DType::kF32, {4}), t(DType::kF32, {4}), sh, meta, 0, st, t(DType::kBF16, {5, 64}));
  }, {"gated_delta_rule", "qkv"});
  AttentionMetadata no_slots = meta;
  no_slots.state_slots = Tensor();
  expect_error([&] {
    gpu_->gated_delta_rule(t(DType::kBF16, {5, C}), t(DType::kBF16, {5, 4}), t(DType::kBF16, {5, 4}),
                           t(DType::kF32, {4}), t(DType::kF32, {4}), sh, no_slots, 0, st, t(DType::kBF16, {5, 64}));
  }, {"gated_delta_rule", "state_slots"});

  LinearAttnState st2{t(DType::kF32, {3, C, 3}), st.recurrent};
  expect_error([&] { gpu_->causal_conv1d(t(DType::kBF16, {5, C}), t(DType::kF32, {C, 5}), meta, st2, t(DType::kBF16, {5, C})); },
               {"causal_conv1d", "weight"});
  expect_error([&] { gpu_->causal_conv1d(t(DType::kBF16, {5, C}), t(DType::kF32, {C, 4}), no_slots, st2, t(DType::kBF16, {5, C})); },
               {"causal_conv1d", "state_slots"});
  expect_error([&] { gpu_->causal_conv1d(t(DType::kI32, {5, C}), t(DType::kF32, {C, 4}), meta, st2, t(DType::kBF16, {5, C})); },
               {"causal_conv1d", "x"});

  expect_error([&] { gpu_->moe_route(t(DType::kBF16, {3, 8}), true, t(DType::kI32, {3, 2}), t(DType::kF32, {3, 2})); },
               {"moe_route", "router_logits"});
  expect_error([&] { gpu_->moe_route(t(DType::kF32, {3, 8}), true, t(DType::kI32, {3, 9}), t(DType::kF32, {3, 9})); },
               {"moe_route", "ids"});

  MoeExpertWeights ew;
  for (int e = 0; e < 4; ++e) {
    ew.gate.push_back(t(DType::kBF16, {32, 16}));
    ew.up.push_back(t(DType::kBF16, {32, 16}));
    ew.down.push_back(t(DType::kBF16, {16, 32}));
  }
  MoeScratch ms;
  ms.x = ms.y = t(DType::kBF16, {6, 16});
  ms.gate = ms.up = t(DType::kBF16, {6, 32});
  ms.row_of_pair = ms.pair_of_row = t(DType::kI32, {6});
  ms.expert_offsets = t(DType::kI32, {5});
  expect_error([&] {
    gpu_->moe_experts(t(DType::kBF16, {3, 16}), t(DType::kI32, {3, 2}), t(DType::kF32, {3, 2}), ew, ms,
                      t(DType::kBF16, {3, 16}));
  }, {"moe_experts", "null"});  // shapes fine; the shape-only weights have no data
  ew.down[2] = t(DType::kBF16, {16, 31});
  expect_error([&] {
    gpu_->moe_experts(t(DType::kBF16, {3, 16}), t(DType::kI32, {3, 2}), t(DType::kF32, {3, 2}), ew, ms,
                      t(DType::kBF16, {3, 16}));
  }, {"moe_experts", "expert 2"});
  expect_error([&] {
    gpu_->moe_experts(t(DType::kBF16, {4, 16}), t(DType::kI32, {4, 2}), t(DType::kF32, {4, 2}), ew, ms,
                      t(DType::kBF16, {4, 16}));
  }, {"moe_experts", "scratch"});
  ew.up.pop_back();
  expect_error([&] {
    gpu_->moe_experts(t(DType::kBF16, {3, 16}), t(DType::kI32, {3, 2}), t(DType::kF32, {3, 2}), ew, ms,
                      t(DType::kBF16, {3, 16}));
  }, {"moe_experts", "same number of experts"});
}

}  // namespace
}  // namespace pagoda::testing
