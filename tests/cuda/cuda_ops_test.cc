// The CUDA backend's ops (all but paged attention, MoE and Gated DeltaNet) against the CPU
// backend on the same inputs. Every test skips when no CUDA device is visible (and on builds
// without CUDA, where cuda_device_count() is 0).
//
// Inputs are random and rounded to BF16 first, so both backends see exactly the same values
// (the CPU backend gets them as F32 activations, the CUDA backend as BF16). Outputs on the GPU
// are poisoned with NaN before every run, and every comparison fails on NaN / Inf.
// Bounds (|gpu - cpu| <= rel * |cpu| + abs):
//  - copies (embedding, gather_rows, round trips): exact;
//  - BF16 outputs of elementwise / row-wise ops: rel 1e-2 (BF16 rounding is 2^-9 relative) plus
//    abs 1e-5 .. 1e-3 of the row scale (FP32 summation order, rounded residual of add_rms_norm);
//  - GEMM: rel 1e-2 plus abs 2e-3 * sqrt(K) (inputs in [-1, 1]: a dot product has standard
//    deviation ~ sqrt(K) / 3, so this is ~0.6 % of its typical size; FP32 summation order alone
//    is orders of magnitude below); abs 4e-3 * sqrt(K) where the GPU may round a normalised
//    row to BF16 before the GEMM and the CPU does not (rms_norm_linears, see its case);
//  - rope_cos_sin (F32): abs 1e-6 (same F32 angle, cos / sin in double on both).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../backend/test_util.h"
#include "cuda_test_util.h"
#include "backend/backend.h"
#include "base/dtype.h"
#include "base/error.h"
#include "base/log.h"

namespace pagoda::testing {
namespace {

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
    cpu_ = make_cpu_backend();
  }
  std::unique_ptr<Backend> gpu_, cpu_;
  std::vector<DeviceBuffer> weights_;  // place_weight storage
};

// Runs everywhere: a CUDA build must link the real backend, not a stub (a stub would make every
// other test skip, even on a GPU machine).
TEST(CudaBuildTest, CudaBuildLinksTheCudaBackend) {
#ifdef PAGODA_HAVE_CUDA
  if (cuda_device_count() > 0) return;  // the fixture tests below exercise it
  try {
    make_cuda_backend(0);
    FAIL() << "make_cuda_backend succeeded without a device";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("built without CUDA"), std::string::npos)
        << "PAGODA_HAVE_CUDA is defined but make_cuda_backend is a stub: " << e.what();
  }
#else
  EXPECT_EQ(cuda_device_count(), 0);
  EXPECT_THROW(make_cuda_backend(0), Error);
#endif
}

const int64_t kRows[] = {1, 37};
const int64_t kHidden[] = {64, 1024, 4096, 37};

TEST_F(CudaOpsTest, NameAndDtype) {
  EXPECT_EQ(gpu_->activation_dtype(), DType::kBF16);
  EXPECT_NE(gpu_->name().find("cuda:0"), std::string::npos) << gpu_->name();
}

TEST_F(CudaOpsTest, CopiesRoundTripExactly) {
  std::vector<uint8_t> h(1000);
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint8_t>(i * 7 + 3);
  DeviceBuffer buf = gpu_->allocate(h.size());
  gpu_->copy_from_host(buf.data(), h.data(), h.size());
  std::vector<uint8_t> back(h.size(), 0);
  gpu_->copy_to_host(back.data(), buf.data(), back.size());
  EXPECT_EQ(back, h);
  gpu_->synchronize();

  std::mt19937 rng(11);
  RandomTensor w(DType::kF16, {5, 7}, rng);
  Tensor placed = gpu_->place_weight(w.tensor(), &weights_);
  EXPECT_EQ(placed.dtype, DType::kF16);
  EXPECT_EQ(placed.shape_string(), "[5, 7]");
  std::vector<uint16_t> hw(35);
  gpu_->copy_to_host(hw.data(), placed.data, 70);
  EXPECT_EQ(std::memcmp(hw.data(), w.tensor().data, 70), 0);
}

// place_weight stages weights through two page-locked buffers of 64 MiB, filled by host threads
// while the other one's copy runs: pieces of a large weight alternate between them, and small
// weights in between take turns too. The host view may change or go away as soon as place_weight
// returns, before anything has synchronised; every byte must arrive.
TEST_F(CudaOpsTest, PlaceWeightCopiesEveryByteThroughTheStaging) {
  std::mt19937_64 rng(5);
  auto random_bytes = [&](size_t n) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t r = rng();
      std::memcpy(v.data() + i, &r, std::min<size_t>(8, n - i));
    }
    return v;
  };
  // Sizes: small (one thread), one piece above the parallel threshold, and a weight of three
  // pieces (64 + 64 + 17 MiB + 3 bytes) with odd weights between.
  const size_t sizes[] = {3, 70001, (size_t{5} << 20) + 1, (size_t{145} << 20) + 3, 999, (size_t{9} << 20) + 7};
  std::vector<std::vector<uint8_t>> want;
  std::vector<Tensor> placed;
  for (size_t n : sizes) {
    std::vector<uint8_t> host = random_bytes(n);
    want.push_back(host);
    Tensor t(host.data(), DType::kU8, {static_cast<int64_t>(n)});
    placed.push_back(gpu_->place_weight(t, &weights_));
    std::fill(host.begin(), host.end(), uint8_t{0xab});  // the caller's memory changes at once
  }
  gpu_->weights_loaded();
  for (size_t i = 0; i < placed.size(); ++i) {
    std::vector<uint8_t> back(want[i].size());
    gpu_->copy_to_host(back.data(), placed[i].data, back.size());
    EXPECT_TRUE(back == want[i]) << "weight " << i << " (" << want[i].size() << " bytes) differs";
  }
  // After weights_loaded, placing still works (the staging is made again).
  std::vector<uint8_t> late = random_bytes(12345);
  Tensor t = gpu_->place_weight(Tensor(late.data(), DType::kU8, {12345}), &weights_);
  std::vector<uint8_t> back(late.size());
  gpu_->copy_to_host(back.data(), t.data, back.size());
  EXPECT_TRUE(back == late);
}

TEST_F(CudaOpsTest, KvCacheLayoutAndDtypeCheck) {
  KvCache kv = gpu_->allocate_kv_cache(2, 3, 16, 4, 128, DType::kBF16);
  ASSERT_EQ(kv.layers.size(), 2u);
  EXPECT_EQ(kv.layers[0].k.shape_string(), "[3, 16, 4, 128]");
  EXPECT_EQ(kv.layers[1].v.dtype, DType::kBF16);
  try {
    gpu_->allocate_kv_cache(1, 3, 16, 4, 128, DType::kF32);
    FAIL() << "F32 KV cache accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("F32"), std::string::npos) << e.what();
  }
}

TEST_F(CudaOpsTest, EmbeddingMatchesCpu) {
  std::mt19937 rng(1);
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int64_t H : kHidden) {
      for (int64_t T : kRows) {
        const int64_t V = 301;
        RandomTensor table(d, {V, H}, rng);
        Tensor gtable = gpu_->place_weight(table.tensor(), &weights_);
        std::vector<int32_t> ids(T);
        for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 97 + 13) % V);
        std::vector<float> ref(T * H);
        cpu_->embedding(Tensor(ids.data(), DType::kI32, {T}), table.tensor(), Tensor(ref.data(), DType::kF32, {T, H}));
        for (float& x : ref) x = bf16_to_f32(f32_to_bf16(x));  // the GPU stores BF16
        Dev gids = upload_i32(*gpu_, ids);
        Dev out = dev_alloc(*gpu_, DType::kBF16, {T, H});
        poison(*gpu_, out.t);
        gpu_->embedding(gids.t, gtable, out.t);
        EXPECT_TRUE(close(download(*gpu_, out.t), ref, 0, 0)) << dtype_str(d) << " T=" << T << " H=" << H;
      }
    }
  }
}

TEST_F(CudaOpsTest, RmsNormMatchesCpu) {
  std::mt19937 rng(2);
  for (DType wd : {DType::kBF16, DType::kF32}) {
    for (int64_t H : kHidden) {
      for (int64_t T : kRows) {
        const std::string what = dtype_str(wd) + " T=" + std::to_string(T) + " H=" + std::to_string(H);
        std::vector<float> x = rand_bf16(T * H, rng, -3, 3);
        RandomTensor w(wd, {H}, rng, 0.5f, 1.5f);
        Tensor gw = gpu_->place_weight(w.tensor(), &weights_);
        std::vector<float> ref(T * H);
        cpu_->rms_norm(Tensor(x.data(), DType::kF32, {T, H}), w.tensor(), 1e-6f, Tensor(ref.data(), DType::kF32, {T, H}));
        Dev gx = upload(*gpu_, x, DType::kBF16, {T, H});
        Dev out = dev_alloc(*gpu_, DType::kBF16, {T, H});
        poison(*gpu_, out.t);
        gpu_->rms_norm(gx.t, gw, 1e-6f, out.t);
        EXPECT_TRUE(close(download(*gpu_, out.t), ref, 1e-2, 1e-5)) << what;
        // In place (per-head q/k norm).
        gpu_->rms_norm(gx.t, gw, 1e-6f, gx.t);
        EXPECT_TRUE(close(download(*gpu_, gx.t), ref, 1e-2, 1e-5)) << what << " in place";
      }
    }
  }
}

TEST_F(CudaOpsTest, AddRmsNormMatchesCpu) {
  std::mt19937 rng(3);
  for (DType wd : {DType::kBF16, DType::kF32}) {
    for (int64_t H : kHidden) {
      for (int64_t T : kRows) {
        const std::string what = dtype_str(wd) + " T=" + std::to_string(T) + " H=" + std::to_string(H);
        std::vector<float> x = rand_bf16(T * H, rng, -2, 2), res = rand_bf16(T * H, rng, -2, 2);
        RandomTensor w(wd, {H}, rng, 0.5f, 1.5f);
        Tensor gw = gpu_->place_weight(w.tensor(), &weights_);
        Dev gx = upload(*gpu_, x, DType::kBF16, {T, H});
        Dev gres = upload(*gpu_, res, DType::kBF16, {T, H});
        std::vector<float> ref(T * H);
        cpu_->add_rms_norm(Tensor(res.data(), DType::kF32, {T, H}), Tensor(x.data(), DType::kF32, {T, H}), w.tensor(),
                           1e-6f, Tensor(ref.data(), DType::kF32, {T, H}));
        Dev out = dev_alloc(*gpu_, DType::kBF16, {T, H});
        poison(*gpu_, out.t);
        gpu_->add_rms_norm(gres.t, gx.t, gw, 1e-6f, out.t);
        // residual: one BF16 rounding of the F32 sum (abs: sums that cancel to ~0).
        EXPECT_TRUE(close(download(*gpu_, gres.t), res, 1e-2, 1e-2)) << what << " residual";
        // out: normalised from the rounded residual (as vLLM): the 1e-2 absolute slack covers the
        // rounding of a cancelled sum (~2^-9 of |x| + |residual| <= 4, times ~1 after the norm).
        EXPECT_TRUE(close(download(*gpu_, out.t), ref, 1e-2, 1e-2)) << what << " out";
      }
    }
  }
}

void linear_case(Backend& gpu, Backend& cpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng, int64_t T,
                 int64_t N, int64_t K, DType wd, DType bias_dtype, DType out_dtype) {
  const std::string what = "T=" + std::to_string(T) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + " w " +
                           dtype_str(wd) + (bias_dtype == DType::kU8 ? "" : " bias " + dtype_str(bias_dtype)) +
                           " out " + dtype_str(out_dtype);
  std::vector<float> x = rand_bf16(T * K, rng);
  RandomTensor w(wd, {N, K}, rng);
  const bool has_bias = bias_dtype != DType::kU8;
  RandomTensor b(has_bias ? bias_dtype : DType::kF32, {N}, rng);
  Tensor gw = gpu.place_weight(w.tensor(), &storage);
  Tensor gb = has_bias ? gpu.place_weight(b.tensor(), &storage) : Tensor();
  Tensor cb = has_bias ? b.tensor() : Tensor();
  std::vector<float> ref(T * N);
  cpu.linear(Tensor(x.data(), DType::kF32, {T, K}), w.tensor(), has_bias ? &cb : nullptr,
             Tensor(ref.data(), DType::kF32, {T, N}));
  Dev gx = upload(gpu, x, DType::kBF16, {T, K});
  Dev out = dev_alloc(gpu, out_dtype, {T, N});
  // Twice: the second run uses the cached plan.
  for (int run = 0; run < 2; ++run) {
    poison(gpu, out.t);
    gpu.linear(gx.t, gw, has_bias ? &gb : nullptr, out.t);
    EXPECT_TRUE(close(download(gpu, out.t), ref, 1e-2, 2e-3 * std::sqrt(static_cast<double>(K))))
        << what << " run " << run;
  }
}

TEST_F(CudaOpsTest, LinearBf16MatchesCpu) {
  std::mt19937 rng(4);
  for (int64_t T : kRows)
    for (int64_t N : {64, 1024, 4096})
      for (int64_t K : {64, 1024, 4096}) linear_case(*gpu_, *cpu_, weights_, rng, T, N, K, DType::kBF16, DType::kU8, DType::kBF16);
}

TEST_F(CudaOpsTest, LinearOddShapesBiasAndF32Out) {
  std::mt19937 rng(5);
  const std::pair<int64_t, int64_t> kOddShapes[] = {{37, 64}, {64, 37}, {37, 37}, {1000, 136}};  // (N, K)
  // N, K not multiples of 8 (cuBLASLt or the fallback kernel, whichever the heuristic allows).
  for (int64_t T : {1, 37, 300})
    for (const auto& [N, K] : kOddShapes)
      linear_case(*gpu_, *cpu_, weights_, rng, T, N, K, DType::kBF16, DType::kU8, DType::kBF16);
  for (int64_t T : kRows) {
    linear_case(*gpu_, *cpu_, weights_, rng, T, 1024, 256, DType::kBF16, DType::kBF16, DType::kBF16);
    linear_case(*gpu_, *cpu_, weights_, rng, T, 1000, 256, DType::kBF16, DType::kF32, DType::kBF16);
    linear_case(*gpu_, *cpu_, weights_, rng, T, 1000, 512, DType::kBF16, DType::kU8, DType::kF32);  // logits
    linear_case(*gpu_, *cpu_, weights_, rng, T, 64, 512, DType::kBF16, DType::kF32, DType::kF32);
  }
}

TEST_F(CudaOpsTest, LinearF16AndF32WeightsUseFallback) {
  std::mt19937 rng(6);
  for (DType wd : {DType::kF16, DType::kF32})
    for (int64_t T : kRows) {
      linear_case(*gpu_, *cpu_, weights_, rng, T, 256, 1024, wd, DType::kU8, DType::kBF16);
      linear_case(*gpu_, *cpu_, weights_, rng, T, 37, 64, wd, DType::kF16, DType::kF32);
    }
}

// linears over several weights (each [n, K], with or without a bias) against the CPU backend's
// linear per weight; outputs poisoned, run twice (the second with the shape's decision cached).
void linears_case(Backend& gpu, Backend& cpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng, int64_t T,
                  int64_t K, const std::vector<int64_t>& ns, DType bias_dtype, DType out_dtype,
                  const std::string& mode) {
  std::string what = mode + " T=" + std::to_string(T) + " K=" + std::to_string(K) + " N=";
  for (int64_t n : ns) what += std::to_string(n) + ",";
  what += bias_dtype == DType::kU8 ? "" : " bias " + dtype_str(bias_dtype);
  what += " out " + dtype_str(out_dtype);
  const std::vector<float> x = rand_bf16(T * K, rng);
  const Dev gx = upload(gpu, x, DType::kBF16, {T, K});
  std::vector<RandomTensor> ws, bs;
  std::vector<Tensor> gw, gb;
  std::vector<Dev> outs;
  std::vector<std::vector<float>> refs;
  for (int64_t n : ns) {
    ws.emplace_back(DType::kBF16, std::initializer_list<int64_t>{n, K}, rng);
    bs.emplace_back(bias_dtype == DType::kU8 ? DType::kF32 : bias_dtype, std::initializer_list<int64_t>{n}, rng);
  }
  for (size_t i = 0; i < ns.size(); ++i) {
    gw.push_back(gpu.place_weight(ws[i].tensor(), &storage));
    gb.push_back(bias_dtype == DType::kU8 ? Tensor() : gpu.place_weight(bs[i].tensor(), &storage));
    refs.emplace_back(static_cast<size_t>(T * ns[i]));
    const Tensor cb = bs[i].tensor();
    cpu.linear(Tensor(const_cast<float*>(x.data()), DType::kF32, {T, K}), ws[i].tensor(),
               bias_dtype == DType::kU8 ? nullptr : &cb, Tensor(refs[i].data(), DType::kF32, {T, ns[i]}));
    outs.push_back(dev_alloc(gpu, out_dtype, {T, ns[i]}));
  }
  const auto bias = [&](size_t i) { return bias_dtype == DType::kU8 ? nullptr : &gb[i]; };
  for (int run = 0; run < 2; ++run) {
    for (const Dev& o : outs) poison(gpu, o.t);
    if (ns.size() == 1) gpu.linear(gx.t, gw[0], bias(0), outs[0].t);
    if (ns.size() == 2) gpu.linears(gx.t, {&gw[0], &gw[1]}, {bias(0), bias(1)}, {outs[0].t, outs[1].t});
    if (ns.size() == 3)
      gpu.linears(gx.t, {&gw[0], &gw[1], &gw[2]}, {bias(0), bias(1), bias(2)}, {outs[0].t, outs[1].t, outs[2].t});
    if (ns.size() == 4)
      gpu.linears(gx.t, {&gw[0], &gw[1], &gw[2], &gw[3]}, {bias(0), bias(1), bias(2), bias(3)},
                  {outs[0].t, outs[1].t, outs[2].t, outs[3].t});
    for (size_t i = 0; i < ns.size(); ++i)
      EXPECT_TRUE(close(download(gpu, outs[i].t), refs[i], 1e-2, 2e-3 * std::sqrt(static_cast<double>(K))))
          << what << " weight " << i << " run " << run;
  }
}

// gate_up_silu (gate and up [I, K]) against the CPU backend: its F32 linears, each product rounded
// to BF16 as the op's contract says, then silu(gate) * up. Outputs and scratch poisoned; run twice
// (the second with the shape's decision cached), once with out aliasing the gate scratch (as the
// models call it) and once into a buffer of its own.
void gate_up_silu_case(Backend& gpu, Backend& cpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng, int64_t T,
                       int64_t K, int64_t I, const std::string& mode) {
  const std::string what = mode + " T=" + std::to_string(T) + " K=" + std::to_string(K) + " I=" + std::to_string(I);
  const std::vector<float> x = rand_bf16(T * K, rng);
  RandomTensor wg(DType::kBF16, {I, K}, rng), wu(DType::kBF16, {I, K}, rng);
  std::vector<float> g(T * I), u(T * I), ref(T * I);
  Tensor cx(const_cast<float*>(x.data()), DType::kF32, {T, K});
  cpu.linear(cx, wg.tensor(), nullptr, Tensor(g.data(), DType::kF32, {T, I}));
  cpu.linear(cx, wu.tensor(), nullptr, Tensor(u.data(), DType::kF32, {T, I}));
  for (int64_t i = 0; i < T * I; ++i) {
    const float gb = bf16_to_f32(f32_to_bf16(g[i])), ub = bf16_to_f32(f32_to_bf16(u[i]));
    ref[i] = gb / (1.0f + std::exp(-gb)) * ub;
  }
  const Tensor gwg = gpu.place_weight(wg.tensor(), &storage), gwu = gpu.place_weight(wu.tensor(), &storage);
  const Dev gx = upload(gpu, x, DType::kBF16, {T, K});
  const Dev gate = dev_alloc(gpu, DType::kBF16, {T, I}), up = dev_alloc(gpu, DType::kBF16, {T, I});
  const Dev out = dev_alloc(gpu, DType::kBF16, {T, I});
  for (int run = 0; run < 2; ++run)
    for (bool alias : {true, false}) {
      poison(gpu, gate.t);
      poison(gpu, up.t);
      poison(gpu, out.t);
      const Tensor& o = alias ? gate.t : out.t;
      gpu.gate_up_silu(gx.t, gwg, gwu, gate.t, up.t, o);
      EXPECT_TRUE(close_scaled(download(gpu, o), ref, 2e-2, 2e-3))
          << what << " run " << run << (alias ? " (out = gate)" : "");
    }
}

// Runs body(gpu, storage, rng, mode) once per PAGODA_CUDA_GEMV mode ("on", "off", "auto"), each
// on a backend of its own (the mode is read when the backend is made) and a generator seeded
// with `seed`.
template <class Body>
void in_every_gemv_mode(unsigned seed, const Body& body) {
  for (const char* mode : {"on", "off", "auto"}) {
    ScopedGemvMode scoped(mode);
    std::unique_ptr<Backend> gpu = make_cuda_backend(0);
    std::vector<DeviceBuffer> storage;
    std::mt19937 rng(seed);
    body(*gpu, storage, rng, std::string(mode));
  }
}

// Decode-sized linears (1..8 tokens) in every PAGODA_CUDA_GEMV mode: "on" runs the small-batch
// GEMM wherever it applies, "off" cuBLASLt, "auto" whichever its timing picked. The shapes give
// the small-batch GEMM every split of K (1 to 8 warps per row: few rows, long K), several groups
// with their own row counts (q / k / v, gate / up, Qwen3-Next's four), odd row counts, biases of
// every dtype, F32 output (logits) and K not a multiple of 8 (cuBLASLt / fallback then).
TEST_F(CudaOpsTest, DecodeLinearsMatchCpuInEveryGemvMode) {
  in_every_gemv_mode(11, [&](Backend& gpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng,
                             const std::string& mode) {
    for (int64_t T = 1; T <= 8; ++T) {
      linears_case(gpu, *cpu_, storage, rng, T, 1024, {64}, DType::kU8, DType::kBF16, mode);  // split 8
      linears_case(gpu, *cpu_, storage, rng, T, 520, {37, 8, 13}, DType::kBF16, DType::kBF16, mode);
      linears_case(gpu, *cpu_, storage, rng, T, 64, {96, 32, 32}, DType::kF32, DType::kBF16, mode);
    }
    for (int64_t T : {1, 3, 8}) {
      linears_case(gpu, *cpu_, storage, rng, T, 4096, {512, 128, 128}, DType::kU8, DType::kBF16, mode);
      linears_case(gpu, *cpu_, storage, rng, T, 2048, {256, 256}, DType::kU8, DType::kBF16, mode);
      linears_case(gpu, *cpu_, storage, rng, T, 256, {192, 64, 16, 16}, DType::kF16, DType::kBF16, mode);
      linears_case(gpu, *cpu_, storage, rng, T, 256, {1000}, DType::kU8, DType::kF32, mode);  // logits
      linears_case(gpu, *cpu_, storage, rng, T, 36, {40, 24}, DType::kU8, DType::kBF16, mode);  // K % 8 != 0
    }
    // The gated (SwiGLU) launch: every T, every split of K, odd I, K % 8 != 0 and a prefill-sized
    // T (both unfused then).
    for (int64_t T = 1; T <= 8; ++T) {
      gate_up_silu_case(gpu, *cpu_, storage, rng, T, 1024, 64, mode);  // split 8
      gate_up_silu_case(gpu, *cpu_, storage, rng, T, 520, 37, mode);
    }
    for (int64_t T : {1, 4, 16}) gate_up_silu_case(gpu, *cpu_, storage, rng, T, 2048, 384, mode);
    gate_up_silu_case(gpu, *cpu_, storage, rng, 2, 36, 40, mode);  // K % 8 != 0
  });
}

bool all_nan(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isnan(f); });
}

// linear_add against the CPU backend's (linear, then add in F32): residual in [-2, 2], the
// product rounded to BF16 before the add on the GPU (bounds of a GEMM; abs: also the rounding of
// the residual, <= 2^-9 of |residual| + |product|). Residual poisoned nowhere (it is an input):
// it is uploaded afresh before each run.
void linear_add_case(Backend& gpu, Backend& cpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng, int64_t T,
                     int64_t N, int64_t K, DType bias_dtype, const std::string& mode) {
  const std::string what = mode + " linear_add T=" + std::to_string(T) + " N=" + std::to_string(N) +
                           " K=" + std::to_string(K) + (bias_dtype == DType::kU8 ? "" : " bias " + dtype_str(bias_dtype));
  const std::vector<float> x = rand_bf16(T * K, rng), res = rand_bf16(T * N, rng, -2, 2);
  RandomTensor w(DType::kBF16, {N, K}, rng);
  const bool has_bias = bias_dtype != DType::kU8;
  RandomTensor b(has_bias ? bias_dtype : DType::kF32, {N}, rng);
  const Tensor gw = gpu.place_weight(w.tensor(), &storage);
  const Tensor gb = has_bias ? gpu.place_weight(b.tensor(), &storage) : Tensor();
  const Tensor cb = b.tensor();
  std::vector<float> ref = res, scratch(T * N);
  cpu.linear_add(Tensor(const_cast<float*>(x.data()), DType::kF32, {T, K}), w.tensor(), has_bias ? &cb : nullptr,
                 Tensor(scratch.data(), DType::kF32, {T, N}), Tensor(ref.data(), DType::kF32, {T, N}));
  const Dev gx = upload(gpu, x, DType::kBF16, {T, K});
  const Dev gscratch = dev_alloc(gpu, DType::kBF16, {T, N});
  for (int run = 0; run < 2; ++run) {
    const Dev gres = upload(gpu, res, DType::kBF16, {T, N});
    poison(gpu, gscratch.t);
    gpu.linear_add(gx.t, gw, has_bias ? &gb : nullptr, gscratch.t, gres.t);
    EXPECT_TRUE(close(download(gpu, gres.t), ref, 1e-2, 2e-3 * std::sqrt(static_cast<double>(K)) + 1e-2))
        << what << " run " << run;
    // "on" folds the add wherever the small-batch GEMM applies: the scratch is then never written.
    if (mode == "on" && T <= 8 && K % 8 == 0) {
      EXPECT_TRUE(all_nan(download(gpu, gscratch.t))) << what << " folded";
    }
  }
}

// rms_norm_linears and rms_norm_gate_up_silu against the CPU backend's (rms_norm then linears /
// gate_up_silu, all F32): x in [-2, 2], norm weight in [0.5, 1.5]. The GPU's unfused form rounds
// the normalised row to BF16 (relative 2^-9 per element: for these inputs a dot product's error
// has standard deviation ~6.5e-4 sqrt(K)), so the GEMM bound's abs is doubled to 4e-3 sqrt(K)
// (> 6 standard deviations); the folded form does not round it. `normed` is scratch.
void rms_norm_linears_case(Backend& gpu, Backend& cpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng, int64_t T,
                           int64_t K, const std::vector<int64_t>& ns, DType bias_dtype, const std::string& mode) {
  std::string what = mode + " rms_norm_linears T=" + std::to_string(T) + " K=" + std::to_string(K) + " N=";
  for (int64_t n : ns) what += std::to_string(n) + ",";
  what += bias_dtype == DType::kU8 ? "" : " bias " + dtype_str(bias_dtype);
  PAGODA_ASSERT(ns.size() <= 3);
  const std::vector<float> x = rand_bf16(T * K, rng, -2, 2);
  RandomTensor nw(DType::kBF16, {K}, rng, 0.5f, 1.5f);
  const Tensor gnw = gpu.place_weight(nw.tensor(), &storage);
  std::vector<RandomTensor> ws, bs;
  for (int64_t n : ns) {
    ws.emplace_back(DType::kBF16, std::initializer_list<int64_t>{n, K}, rng);
    bs.emplace_back(bias_dtype == DType::kU8 ? DType::kF32 : bias_dtype, std::initializer_list<int64_t>{n}, rng);
  }
  std::vector<Tensor> gw, gb, cw, cb;
  std::vector<std::vector<float>> refs;
  std::vector<Dev> outs;
  for (size_t i = 0; i < ns.size(); ++i) {
    gw.push_back(gpu.place_weight(ws[i].tensor(), &storage));
    gb.push_back(bias_dtype == DType::kU8 ? Tensor() : gpu.place_weight(bs[i].tensor(), &storage));
    cw.push_back(ws[i].tensor());
    cb.push_back(bias_dtype == DType::kU8 ? Tensor() : bs[i].tensor());
    refs.emplace_back(static_cast<size_t>(T * ns[i]));
    outs.push_back(dev_alloc(gpu, DType::kBF16, {T, ns[i]}));
  }
  // Unused entries repeat weight 0 (the call takes exactly ns.size() of them).
  const auto pick = [&](std::vector<Tensor>& v, size_t i) { return &v[std::min(i, v.size() - 1)]; };
  const auto bias = [&](std::vector<Tensor>& v, size_t i) { return bias_dtype == DType::kU8 ? nullptr : pick(v, i); };
  std::vector<float> normed(T * K);
  const Tensor cx(const_cast<float*>(x.data()), DType::kF32, {T, K}), cn(normed.data(), DType::kF32, {T, K});
  std::vector<Tensor> crefs;
  for (size_t i = 0; i < ns.size(); ++i) crefs.emplace_back(refs[i].data(), DType::kF32, std::initializer_list<int64_t>{T, ns[i]});
  if (ns.size() == 1) cpu.rms_norm_linears(cx, nw.tensor(), 1e-6f, cn, {pick(cw, 0)}, {bias(cb, 0)}, {crefs[0]});
  if (ns.size() == 3)
    cpu.rms_norm_linears(cx, nw.tensor(), 1e-6f, cn, {pick(cw, 0), pick(cw, 1), pick(cw, 2)},
                         {bias(cb, 0), bias(cb, 1), bias(cb, 2)}, {crefs[0], crefs[1], crefs[2]});
  const Dev gx = upload(gpu, x, DType::kBF16, {T, K});
  const Dev gnormed = dev_alloc(gpu, DType::kBF16, {T, K});
  for (int run = 0; run < 2; ++run) {
    for (const Dev& o : outs) poison(gpu, o.t);
    poison(gpu, gnormed.t);
    if (ns.size() == 1) gpu.rms_norm_linears(gx.t, gnw, 1e-6f, gnormed.t, {pick(gw, 0)}, {bias(gb, 0)}, {outs[0].t});
    if (ns.size() == 3)
      gpu.rms_norm_linears(gx.t, gnw, 1e-6f, gnormed.t, {pick(gw, 0), pick(gw, 1), pick(gw, 2)},
                           {bias(gb, 0), bias(gb, 1), bias(gb, 2)}, {outs[0].t, outs[1].t, outs[2].t});
    for (size_t i = 0; i < ns.size(); ++i)
      EXPECT_TRUE(close(download(gpu, outs[i].t), refs[i], 1e-2, 4e-3 * std::sqrt(static_cast<double>(K))))
          << what << " weight " << i << " run " << run;
    // "on" folds the norm wherever the small-batch GEMM applies: `normed` is then never written.
    if (mode == "on" && T <= 8 && K % 8 == 0) {
      EXPECT_TRUE(all_nan(download(gpu, gnormed.t))) << what << " folded";
    }
  }
  // The SwiGLU form over the first two weights' rows (gate = weight 0, up = weight 0 or 1 when it
  // has as many rows).
  const size_t up_i = ns.size() > 1 && ns[1] == ns[0] ? 1 : 0;
  const int64_t I = ns[0];
  std::vector<float> g(T * I), u(T * I), ref(T * I);
  cpu.rms_norm_gate_up_silu(cx, nw.tensor(), 1e-6f, cn, cw[0], cw[up_i], Tensor(g.data(), DType::kF32, {T, I}),
                            Tensor(u.data(), DType::kF32, {T, I}), Tensor(ref.data(), DType::kF32, {T, I}));
  const Dev gate = dev_alloc(gpu, DType::kBF16, {T, I}), up = dev_alloc(gpu, DType::kBF16, {T, I});
  for (int run = 0; run < 2; ++run) {
    poison(gpu, gate.t);
    poison(gpu, up.t);
    poison(gpu, gnormed.t);
    gpu.rms_norm_gate_up_silu(gx.t, gnw, 1e-6f, gnormed.t, gw[0], gw[up_i], gate.t, up.t, gate.t);
    // As gate_up_silu_case (the products rounded to BF16 before silu * up on the GPU).
    EXPECT_TRUE(close_scaled(download(gpu, gate.t), ref, 2e-2, 2e-3)) << what << " gate_up_silu run " << run;
    if (mode == "on" && T <= 8 && K % 8 == 0) {
      EXPECT_TRUE(all_nan(download(gpu, gnormed.t))) << what << " gate_up_silu folded";
    }
  }
}

// The dense layer's folded ops (Backend::linear_add, rms_norm_linears, rms_norm_gate_up_silu) in
// every PAGODA_CUDA_GEMV mode: "on" folds the residual add / the norm into the small-batch GEMM
// wherever it applies, "off" runs cuBLASLt (accumulating into the residual) and the separate norm,
// "auto" whichever its timing picked. Shapes: every T from 1 to 8 and prefill-sized ones, every
// split of K, odd row counts, biases (linear_add with a bias runs linear + add), K % 8 != 0.
TEST_F(CudaOpsTest, FoldedNormAndResidualAddMatchCpuInEveryGemvMode) {
  in_every_gemv_mode(13, [&](Backend& gpu, std::vector<DeviceBuffer>& storage, std::mt19937& rng,
                             const std::string& mode) {
    for (int64_t T = 1; T <= 8; ++T) {
      linear_add_case(gpu, *cpu_, storage, rng, T, 64, 1024, DType::kU8, mode);  // split 8
      linear_add_case(gpu, *cpu_, storage, rng, T, 37, 520, DType::kU8, mode);
      rms_norm_linears_case(gpu, *cpu_, storage, rng, T, 1024, {64}, DType::kU8, mode);  // split 8
      rms_norm_linears_case(gpu, *cpu_, storage, rng, T, 520, {37, 8, 13}, DType::kBF16, mode);
    }
    for (int64_t T : {1, 3, 8, 19}) {
      linear_add_case(gpu, *cpu_, storage, rng, T, 256, 2048, DType::kU8, mode);
      linear_add_case(gpu, *cpu_, storage, rng, T, 96, 256, DType::kBF16, mode);  // o_proj bias
      linear_add_case(gpu, *cpu_, storage, rng, T, 40, 36, DType::kU8, mode);     // K % 8 != 0
      rms_norm_linears_case(gpu, *cpu_, storage, rng, T, 2048, {256, 64, 64}, DType::kF32, mode);
      rms_norm_linears_case(gpu, *cpu_, storage, rng, T, 256, {384, 384, 128}, DType::kU8, mode);
      rms_norm_linears_case(gpu, *cpu_, storage, rng, T, 36, {40}, DType::kU8, mode);  // K % 8 != 0
    }
  });
}

// PAGODA_CUDA_GEMV=auto decides once per shape, outside stream captures: an unseen shape inside
// a capture runs cuBLASLt (correctly, and replayed correctly) without deciding; the next eager
// call decides (one debug line) and later calls reuse the decision (no new line).
TEST_F(CudaOpsTest, GemvAutoDecidesOncePerShapeOutsideCaptures) {
  ScopedGemvMode scoped("auto");
  std::unique_ptr<Backend> gpu = make_cuda_backend(0);
  std::vector<DeviceBuffer> storage;
  std::mt19937 rng(12);
  const int64_t T = 2, K = 512, N = 96;
  const std::vector<float> x = rand_bf16(T * K, rng);
  RandomTensor w(DType::kBF16, {N, K}, rng);
  const Tensor gw = gpu->place_weight(w.tensor(), &storage);
  std::vector<float> ref(T * N);
  cpu_->linear(Tensor(const_cast<float*>(x.data()), DType::kF32, {T, K}), w.tensor(), nullptr,
               Tensor(ref.data(), DType::kF32, {T, N}));
  const Dev gx = upload(*gpu, x, DType::kBF16, {T, K});
  const Dev out = dev_alloc(*gpu, DType::kBF16, {T, N});
  const double abs = 2e-3 * std::sqrt(static_cast<double>(K));
  const LogLevel old_level = log_level();
  set_log_level(LogLevel::kDebug);
  const auto decisions = [](const std::string& log) {
    int n = 0;
    for (size_t p = log.find("CUDA linear T=2 K=512 N=[96]"); p != std::string::npos;
         p = log.find("CUDA linear T=2 K=512 N=[96]", p + 1))
      ++n;
    return n;
  };
  ::testing::internal::CaptureStderr();
  poison(*gpu, out.t);
  gpu->synchronize();
  const int graph = gpu->capture_graph([&] { gpu->linear(gx.t, gw, nullptr, out.t); });
  gpu->replay_graph(graph);
  const std::vector<float> captured = download(*gpu, out.t);
  const std::string log_capture = ::testing::internal::GetCapturedStderr();
  ::testing::internal::CaptureStderr();
  poison(*gpu, out.t);
  gpu->linear(gx.t, gw, nullptr, out.t);
  const std::vector<float> first = download(*gpu, out.t);
  const std::string log_first = ::testing::internal::GetCapturedStderr();
  ::testing::internal::CaptureStderr();
  poison(*gpu, out.t);
  gpu->linear(gx.t, gw, nullptr, out.t);
  const std::vector<float> second = download(*gpu, out.t);
  const std::string log_second = ::testing::internal::GetCapturedStderr();
  set_log_level(old_level);
  EXPECT_TRUE(close(captured, ref, 1e-2, abs)) << "captured";
  EXPECT_TRUE(close(first, ref, 1e-2, abs)) << "first eager call";
  EXPECT_TRUE(close(second, ref, 1e-2, abs)) << "second eager call";
  EXPECT_EQ(decisions(log_capture), 0) << log_capture;
  EXPECT_EQ(decisions(log_first), 1) << log_first;
  EXPECT_EQ(decisions(log_second), 0) << log_second;
}

TEST(CudaGemvModeTest, BadPdlValueIsAnErrorNamingTheVariable) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const char* old = std::getenv("PAGODA_CUDA_PDL");
  const std::string saved = old == nullptr ? "" : old;
  setenv("PAGODA_CUDA_PDL", "yes", 1);
  try {
    make_cuda_backend(0);
    ADD_FAILURE() << "PAGODA_CUDA_PDL=yes accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PAGODA_CUDA_PDL must be on or off, got 'yes'"), std::string::npos) << e.what();
  }
  if (old != nullptr)
    setenv("PAGODA_CUDA_PDL", saved.c_str(), 1);
  else
    unsetenv("PAGODA_CUDA_PDL");
}

TEST(CudaGemvModeTest, BadModeIsAnErrorNamingTheVariable) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  ScopedGemvMode scoped("fast");
  try {
    make_cuda_backend(0);
    FAIL() << "PAGODA_CUDA_GEMV=fast accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PAGODA_CUDA_GEMV must be auto, on or off, got 'fast'"), std::string::npos)
        << e.what();
  }
}

TEST_F(CudaOpsTest, LinearsOnRowSlicesMatchCpu) {
  std::mt19937 rng(7);
  // K, N1, N2 multiples of 8 but rows 3.. start 16-byte (not 256-byte) aligned.
  const int64_t T = 37, K = 520, N1 = 392, N2 = 136;
  std::vector<float> x = rand_bf16(T * K, rng);
  RandomTensor w1(DType::kBF16, {N1, K}, rng), w2(DType::kBF16, {N2, K}, rng);
  Tensor g1 = gpu_->place_weight(w1.tensor(), &weights_), g2 = gpu_->place_weight(w2.tensor(), &weights_);
  Dev gx = upload(*gpu_, x, DType::kBF16, {T, K});
  Dev o1 = dev_alloc(*gpu_, DType::kBF16, {T, N1}), o2 = dev_alloc(*gpu_, DType::kBF16, {T, N2});
  // Rows [3, 20): operands that start off a 256-byte boundary (MoE expert slices do that).
  const int64_t r0 = 3, r1 = 20, R = r1 - r0;
  std::vector<float> ref1(R * N1), ref2(R * N2);
  const Tensor c1 = w1.tensor(), c2 = w2.tensor();
  cpu_->linears(Tensor(x.data() + r0 * K, DType::kF32, {R, K}), {&c1, &c2}, {nullptr, nullptr},
                {Tensor(ref1.data(), DType::kF32, {R, N1}), Tensor(ref2.data(), DType::kF32, {R, N2})});
  Tensor s1 = o1.t.slice_rows(r0, r1), s2 = o2.t.slice_rows(r0, r1);
  poison(*gpu_, s1);
  poison(*gpu_, s2);
  gpu_->linears(gx.t.slice_rows(r0, r1), {&g1, &g2}, {nullptr, nullptr}, {s1, s2});
  const double abs = 2e-3 * std::sqrt(static_cast<double>(K));
  EXPECT_TRUE(close(download(*gpu_, s1), ref1, 1e-2, abs));
  EXPECT_TRUE(close(download(*gpu_, s2), ref2, 1e-2, abs));
}

TEST_F(CudaOpsTest, RopeCosSinMatchesCpu) {
  std::mt19937 rng(8);
  for (int64_t T : {1, 37, 300}) {
    for (int64_t R : {64, 128, 32}) {
      std::vector<int32_t> pos(T);
      for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>((t * 7919 + 5) % 40000);
      std::vector<float> inv(R / 2);
      for (int64_t i = 0; i < R / 2; ++i) inv[i] = static_cast<float>(std::pow(1e6, -2.0 * i / R));
      std::vector<float> ref(T * R);
      cpu_->rope_cos_sin(Tensor(pos.data(), DType::kI32, {T}), Tensor(inv.data(), DType::kF32, {R / 2}), 1.0f,
                         Tensor(ref.data(), DType::kF32, {T, R}));
      Dev gpos = upload_i32(*gpu_, pos);
      Dev ginv = upload(*gpu_, inv, DType::kF32, {R / 2});
      Dev out = dev_alloc(*gpu_, DType::kF32, {T, R});
      poison(*gpu_, out.t);
      gpu_->rope_cos_sin(gpos.t, ginv.t, 1.0f, out.t);
      EXPECT_TRUE(close(download(*gpu_, out.t), ref, 0, 1e-6)) << "T=" << T << " R=" << R;
    }
  }
}

TEST_F(CudaOpsTest, RopeAndCacheMatchesCpu) {
  std::mt19937 rng(9);
  const int64_t Hq = 8, Hk = 2, num_blocks = 8, block_size = 16;
  for (int64_t D : {64, 128, 256}) {
    for (int64_t rotary : {D, D / 2}) {
      for (int64_t T : kRows) {
        // With q / k norm every other time (Qwen3): the CPU backend's default, rms_norm of each
        // head in place then rope_and_cache, is the reference of the GPU's fused kernel.
        const bool norm = (D / 64 + (rotary == D ? 1 : 0) + (T == 1 ? 1 : 0)) % 2 == 1;
        const std::string what = "D=" + std::to_string(D) + " rotary=" + std::to_string(rotary) + " T=" +
                                 std::to_string(T) + (norm ? " qk_norm" : "");
        std::vector<float> q = rand_bf16(T * Hq * D, rng), k = rand_bf16(T * Hk * D, rng), v = rand_bf16(T * Hk * D, rng);
        std::vector<float> cs(T * rotary);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < rotary / 2; ++i) {
            const double a = (t + 3) * std::pow(1e4, -2.0 * i / rotary);
            cs[t * rotary + i] = static_cast<float>(std::cos(a));
            cs[t * rotary + rotary / 2 + i] = static_cast<float>(std::sin(a));
          }
        // Distinct slots, a skipped token (-1) when T > 1.
        std::vector<int32_t> slots(T);
        for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>((t * 37 + 5) % (num_blocks * block_size));
        if (T > 1) slots[T / 2] = -1;

        // CPU (BF16 cache: K/V rounded once, as on the GPU).
        KvCache ckv = cpu_->allocate_kv_cache(1, num_blocks, block_size, Hk, D, DType::kBF16);
        std::vector<float> cq = q, ck = k;
        RandomTensor qn(DType::kBF16, {D}, rng, 0.5f, 1.5f), kn(DType::kBF16, {D}, rng, 0.5f, 1.5f);
        if (norm) {
          // The normalised heads are stored in the activation dtype (BF16 here) before the
          // rotation, as the op's contract says: the reference rounds them too.
          cpu_->rms_norm(Tensor(cq.data(), DType::kF32, {T * Hq, D}), qn.tensor(), 1e-6f,
                         Tensor(cq.data(), DType::kF32, {T * Hq, D}));
          cpu_->rms_norm(Tensor(ck.data(), DType::kF32, {T * Hk, D}), kn.tensor(), 1e-6f,
                         Tensor(ck.data(), DType::kF32, {T * Hk, D}));
          for (float& f : cq) f = bf16_to_f32(f32_to_bf16(f));
          for (float& f : ck) f = bf16_to_f32(f32_to_bf16(f));
        }
        cpu_->rope_and_cache(Tensor(cq.data(), DType::kF32, {T, Hq, D}), Tensor(ck.data(), DType::kF32, {T, Hk, D}),
                             Tensor(v.data(), DType::kF32, {T, Hk, D}), Tensor(cs.data(), DType::kF32, {T, rotary}),
                             static_cast<int>(rotary), Tensor(slots.data(), DType::kI32, {T}), ckv.layers[0]);
        // GPU.
        KvCache gkv = gpu_->allocate_kv_cache(1, num_blocks, block_size, Hk, D, DType::kBF16);
        Dev gq = upload(*gpu_, q, DType::kBF16, {T, Hq, D}), gk = upload(*gpu_, k, DType::kBF16, {T, Hk, D});
        Dev gv = upload(*gpu_, v, DType::kBF16, {T, Hk, D});
        Dev gcs = upload(*gpu_, cs, DType::kF32, {T, rotary});
        Dev gslots = upload_i32(*gpu_, slots);
        if (norm) {
          std::vector<DeviceBuffer> storage;
          const Tensor gqn = gpu_->place_weight(qn.tensor(), &storage), gkn = gpu_->place_weight(kn.tensor(), &storage);
          gpu_->qk_norm_rope_and_cache(gq.t, gk.t, gv.t, gqn, gkn, 1e-6f, gcs.t, static_cast<int>(rotary), gslots.t,
                                       gkv.layers[0]);
          gpu_->synchronize();
        } else {
          gpu_->rope_and_cache(gq.t, gk.t, gv.t, gcs.t, static_cast<int>(rotary), gslots.t, gkv.layers[0]);
        }
        EXPECT_TRUE(close(download(*gpu_, gq.t), cq, 1e-2, 1e-3)) << what << " q";
        EXPECT_TRUE(close(download(*gpu_, gk.t), ck, 1e-2, 1e-3)) << what << " k";
        // Cache: CPU [blocks, Hk, bs, D] vs GPU [blocks, bs, Hk, D], written slots only.
        std::vector<float> gkc = download(*gpu_, gkv.layers[0].k), gvc = download(*gpu_, gkv.layers[0].v);
        const uint16_t* ckc = ckv.layers[0].k.ptr<uint16_t>();
        const uint16_t* cvc = ckv.layers[0].v.ptr<uint16_t>();
        std::vector<float> got_k, ref_k, got_v, ref_v;
        for (int64_t t = 0; t < T; ++t) {
          if (slots[t] < 0) continue;
          const int64_t blk = slots[t] / block_size, off = slots[t] % block_size;
          for (int64_t h = 0; h < Hk; ++h)
            for (int64_t d = 0; d < D; ++d) {
              const int64_t c = ((blk * Hk + h) * block_size + off) * D + d;
              const int64_t g = ((blk * block_size + off) * Hk + h) * D + d;
              got_k.push_back(gkc[g]);
              ref_k.push_back(bf16_to_f32(ckc[c]));
              got_v.push_back(gvc[g]);
              ref_v.push_back(bf16_to_f32(cvc[c]));
            }
        }
        EXPECT_TRUE(close(got_k, ref_k, 1e-2, 1e-3)) << what << " k cache";
        EXPECT_TRUE(close(got_v, ref_v, 0, 0)) << what << " v cache";
        // Slots nobody wrote (the skipped token's included) stay as allocated: zero.
        std::vector<bool> used(num_blocks * block_size, false);
        for (int32_t s : slots)
          if (s >= 0) used[s] = true;
        for (int64_t s = 0; s < num_blocks * block_size; ++s)
          if (!used[s])
            for (int64_t i = 0; i < Hk * D; ++i) {
              ASSERT_EQ(gkc[s * Hk * D + i], 0.0f) << what << " slot " << s;
              ASSERT_EQ(gvc[s * Hk * D + i], 0.0f) << what << " slot " << s;
            }
      }
    }
  }
}

TEST_F(CudaOpsTest, SiluAndMulMatchesCpu) {
  std::mt19937 rng(10);
  for (int64_t I : {37, 1024, 4096})
    for (int64_t T : kRows) {
      std::vector<float> g = rand_bf16(T * I, rng, -6, 6), u = rand_bf16(T * I, rng, -2, 2);
      std::vector<float> ref(T * I);
      cpu_->silu_and_mul(Tensor(g.data(), DType::kF32, {T, I}), Tensor(u.data(), DType::kF32, {T, I}),
                         Tensor(ref.data(), DType::kF32, {T, I}));
      Dev gg = upload(*gpu_, g, DType::kBF16, {T, I}), gu = upload(*gpu_, u, DType::kBF16, {T, I});
      Dev out = dev_alloc(*gpu_, DType::kBF16, {T, I});
      poison(*gpu_, out.t);
      gpu_->silu_and_mul(gg.t, gu.t, out.t);
      EXPECT_TRUE(close(download(*gpu_, out.t), ref, 1e-2, 1e-5)) << "I=" << I << " T=" << T;
      gpu_->silu_and_mul(gg.t, gu.t, gg.t);  // out aliases gate
      EXPECT_TRUE(close(download(*gpu_, gg.t), ref, 1e-2, 1e-5)) << "in place I=" << I << " T=" << T;
    }
}

TEST_F(CudaOpsTest, GatherRowsCopiesExactly) {
  std::mt19937 rng(11);
  for (DType d : {DType::kBF16, DType::kF32}) {
    for (int64_t H : kHidden) {
      const int64_t R = 37;
      std::vector<float> x = rand_bf16(R * H, rng);
      std::vector<int32_t> idx = {36, 0, 5, 5, 17};
      const int64_t n = static_cast<int64_t>(idx.size());
      std::vector<float> ref;
      for (int32_t i : idx) ref.insert(ref.end(), x.begin() + i * H, x.begin() + (i + 1) * H);
      Dev gx = upload(*gpu_, x, d, {R, H});
      Dev gi = upload_i32(*gpu_, idx);
      Dev out = dev_alloc(*gpu_, d, {n, H});
      poison(*gpu_, out.t);
      gpu_->gather_rows(gx.t, gi.t, out.t);
      EXPECT_TRUE(close(download(*gpu_, out.t), ref, 0, 0)) << dtype_str(d) << " H=" << H;
    }
  }
}

// Async scheduling: the next step's token ids fed from the sampled ids on the device, and a
// copy to page-locked host memory that is complete once its event has been waited for.
TEST_F(CudaOpsTest, FeedTokensAndAsyncCopyToHost) {
  std::vector<int32_t> ids(300), sampled(64);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(1000 + i);
  for (size_t i = 0; i < sampled.size(); ++i) sampled[i] = static_cast<int32_t>(50000 + 3 * i);
  const std::vector<int32_t> feed = {0, 5, 299, 63, 17, 0, 200, 5, 1, 1};  // (token row, sampled row) pairs
  for (Backend* b : {gpu_.get(), cpu_.get()}) {
    Dev gi = upload_i32(*b, ids);
    Dev gs = upload_i32(*b, sampled);
    Dev gf = upload_i32(*b, feed, {5, 2});
    b->feed_tokens(gi.t, gf.t, gs.t);
    DeviceBuffer host = b->allocate_host(ids.size() * sizeof(int32_t));
    std::fill_n(static_cast<int32_t*>(host.data()), ids.size(), -7);
    b->copy_to_host_async(host.data(), gi.t.data, ids.size() * sizeof(int32_t));
    b->record_event(1);
    b->wait_event(1);
    std::vector<int32_t> want = ids;
    for (size_t i = 0; i < feed.size(); i += 2) want[static_cast<size_t>(feed[i])] = sampled[static_cast<size_t>(feed[i + 1])];
    const int32_t* got = static_cast<const int32_t*>(host.data());
    EXPECT_EQ(std::vector<int32_t>(got, got + ids.size()), want) << b->name();
  }
}

TEST_F(CudaOpsTest, AddMatchesCpu) {
  std::mt19937 rng(12);
  for (int64_t H : kHidden)
    for (int64_t T : kRows) {
      std::vector<float> a = rand_bf16(T * H, rng), b = rand_bf16(T * H, rng);
      std::vector<float> ref = a;
      cpu_->add(Tensor(ref.data(), DType::kF32, {T, H}), Tensor(b.data(), DType::kF32, {T, H}));
      Dev ga = upload(*gpu_, a, DType::kBF16, {T, H}), gb = upload(*gpu_, b, DType::kBF16, {T, H});
      gpu_->add(ga.t, gb.t);
      EXPECT_TRUE(close(download(*gpu_, ga.t), ref, 1e-2, 1e-6)) << "H=" << H << " T=" << T;
    }
}

TEST_F(CudaOpsTest, SigmoidMulMatchesCpu) {
  std::mt19937 rng(13);
  for (int64_t N : {37, 1024, 4096})
    for (int64_t T : kRows) {
      for (bool broadcast : {false, true}) {
        const int64_t G = broadcast ? 1 : N;
        std::vector<float> x = rand_bf16(T * N, rng, -3, 3), g = rand_bf16(T * G, rng, -5, 5);
        std::vector<float> ref = x;
        cpu_->sigmoid_mul(Tensor(ref.data(), DType::kF32, {T, N}), Tensor(g.data(), DType::kF32, {T, G}));
        Dev gx = upload(*gpu_, x, DType::kBF16, {T, N});
        // The shared-expert gate logit is F32 [T, 1]; elementwise gates are activations (BF16).
        Dev gg = upload(*gpu_, g, broadcast ? DType::kF32 : DType::kBF16, {T, G});
        gpu_->sigmoid_mul(gx.t, gg.t);
        EXPECT_TRUE(close(download(*gpu_, gx.t), ref, 1e-2, 1e-5)) << "N=" << N << " T=" << T << " bc=" << broadcast;
      }
    }
}

TEST_F(CudaOpsTest, RmsNormGatedMatchesCpu) {
  std::mt19937 rng(14);
  for (int64_t d : {64, 128, 37})
    for (int64_t R : {1, 37, 37 * 32}) {
      std::vector<float> x = rand_bf16(R * d, rng, -2, 2), z = rand_bf16(R * d, rng, -4, 4);
      RandomTensor w(DType::kF32, {d}, rng, 0.5f, 1.5f);
      std::vector<float> ref(R * d);
      cpu_->rms_norm_gated(Tensor(x.data(), DType::kF32, {R, d}), Tensor(z.data(), DType::kF32, {R, d}), w.tensor(),
                           1e-6f, Tensor(ref.data(), DType::kF32, {R, d}));
      Tensor gw = gpu_->place_weight(w.tensor(), &weights_);
      Dev gx = upload(*gpu_, x, DType::kBF16, {R, d}), gz = upload(*gpu_, z, DType::kBF16, {R, d});
      Dev out = dev_alloc(*gpu_, DType::kBF16, {R, d});
      poison(*gpu_, out.t);
      gpu_->rms_norm_gated(gx.t, gz.t, gw, 1e-6f, out.t);
      EXPECT_TRUE(close(download(*gpu_, out.t), ref, 1e-2, 1e-4)) << "d=" << d << " R=" << R;
    }
}

}  // namespace
}  // namespace pagoda::testing

namespace pagoda::testing {
namespace {

// sample_tokens: the CUDA kernel draws what the CPU backend draws (the CPU backend is checked
// against the exact truncated softmax in tests/backend/sampling_test.cc). Greedy rows exactly;
// sampled rows may differ only where exp / log ulps or the summation order move a Gumbel key or a
// top-p crossing across a tie: at most 0.5% of rows.
TEST_F(CudaOpsTest, SampleTokensMatchesCpu) {
  std::mt19937 rng(31);
  struct Shape {
    int64_t R, V;
  };
  for (const Shape sh : {Shape{64, 151936}, Shape{20000, 64}}) {
    const int64_t R = sh.R, V = sh.V;
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<float> logits(static_cast<size_t>(R * V));
    for (float& x : logits) x = nd(rng);
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
    std::vector<int32_t> want(static_cast<size_t>(R));
    cpu_->sample_tokens(Tensor(logits.data(), DType::kF32, {R, V}), Tensor(rows.data(), DType::kI32, {R, kSamplingRowWords}),
                        Tensor(want.data(), DType::kI32, {R}));
    Dev l = upload(*gpu_, logits, DType::kF32, {R, V});
    Dev rw = dev_alloc(*gpu_, DType::kI32, {R, kSamplingRowWords});
    gpu_->copy_from_host(rw.t.data, rows.data(), rows.size() * sizeof(SamplingRow));
    Dev out = upload_i32(*gpu_, std::vector<int32_t>(static_cast<size_t>(R), -1));
    gpu_->sample_tokens(l.t, rw.t, out.t);
    std::vector<int32_t> got(static_cast<size_t>(R));
    gpu_->copy_to_host(got.data(), out.t.data, got.size() * 4);
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
    // Twice: the same rows draw the same tokens.
    gpu_->sample_tokens(l.t, rw.t, out.t);
    std::vector<int32_t> again(static_cast<size_t>(R));
    gpu_->copy_to_host(again.data(), out.t.data, again.size() * 4);
    EXPECT_EQ(again, got);
  }
}

// apply_logit_edits: the same float operations on both backends, so the rows match exactly.
TEST_F(CudaOpsTest, ComputeLogprobsMatchesCpu) {
  std::mt19937 rng(35);
  struct Shape {
    int64_t N, V, K;
  };
  for (const Shape sh : {Shape{37, 151936, 20}, Shape{300, 64, 64}}) {
    const int64_t N = sh.N, V = sh.V, K = sh.K;
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::vector<float> logits(static_cast<size_t>(N * V));
    for (float& x : logits) x = nd(rng);
    for (int64_t r = 0; r < N; r += 3)  // ties and -inf: ordered by the lower id
      for (int64_t i = 0; i < V; i += 7) logits[static_cast<size_t>(r * V + i)] = i % 2 ? 4.0f : -INFINITY;
    std::vector<int32_t> tokens(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r) tokens[static_cast<size_t>(r)] = static_cast<int32_t>((r * 7919 + 1) % V);
    std::vector<float> want_lp(static_cast<size_t>(N)), want_top(static_cast<size_t>(N * K));
    std::vector<int32_t> want_ids(static_cast<size_t>(N * K));
    cpu_->compute_logprobs(Tensor(logits.data(), DType::kF32, {N, V}), Tensor(tokens.data(), DType::kI32, {N}),
                           Tensor(want_lp.data(), DType::kF32, {N}), Tensor(want_ids.data(), DType::kI32, {N, K}),
                           Tensor(want_top.data(), DType::kF32, {N, K}));
    Dev l = upload(*gpu_, logits, DType::kF32, {N, V});
    Dev t = upload_i32(*gpu_, tokens);
    Dev lp = dev_alloc(*gpu_, DType::kF32, {N});
    Dev ids = upload_i32(*gpu_, std::vector<int32_t>(static_cast<size_t>(N * K), -1), {N, K});
    Dev top = dev_alloc(*gpu_, DType::kF32, {N, K});
    poison(*gpu_, lp.t);
    poison(*gpu_, top.t);
    gpu_->compute_logprobs(l.t, t.t, lp.t, ids.t, top.t);
    std::vector<int32_t> got_ids(static_cast<size_t>(N * K));
    gpu_->copy_to_host(got_ids.data(), ids.t.data, got_ids.size() * 4);
    EXPECT_EQ(got_ids, want_ids) << "V " << V;
    const std::vector<float> got_lp = download(*gpu_, lp.t), got_top = download(*gpu_, top.t);
    for (size_t i = 0; i < got_lp.size(); ++i)
      ASSERT_TRUE(got_lp[i] == want_lp[i] || std::abs(got_lp[i] - want_lp[i]) <= 1e-4) << "row " << i << ": "
                                                                                      << got_lp[i] << " vs " << want_lp[i];
    for (size_t i = 0; i < got_top.size(); ++i)
      ASSERT_TRUE(got_top[i] == want_top[i] || std::abs(got_top[i] - want_top[i]) <= 1e-4)
          << "entry " << i << ": " << got_top[i] << " vs " << want_top[i];
  }
}

TEST_F(CudaOpsTest, ApplyLogitEditsMatchesCpu) {
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
  cpu_->apply_logit_edits(Tensor(want.data(), DType::kF32, {R, V}),
                          Tensor(rows.data(), DType::kI32, {R, kSamplingRowWords}),
                          Tensor(edits.data(), DType::kI32, {N, 4}), Tensor(offsets.data(), DType::kI32, {R + 1}));
  Dev l = upload(*gpu_, logits, DType::kF32, {R, V});
  Dev rw = dev_alloc(*gpu_, DType::kI32, {R, kSamplingRowWords});
  gpu_->copy_from_host(rw.t.data, rows.data(), rows.size() * sizeof(SamplingRow));
  Dev ed = dev_alloc(*gpu_, DType::kI32, {N, 4});
  gpu_->copy_from_host(ed.t.data, edits.data(), edits.size() * sizeof(LogitEdit));
  Dev off = upload_i32(*gpu_, offsets);
  gpu_->apply_logit_edits(l.t, rw.t, ed.t, off.t);
  const std::vector<float> got = download(*gpu_, l.t);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_TRUE(got[i] == want[i] || (std::isinf(got[i]) && std::isinf(want[i]) && got[i] == want[i]))
        << "at " << i << ": " << got[i] << " vs " << want[i];
}

}  // namespace
}  // namespace pagoda::testing
