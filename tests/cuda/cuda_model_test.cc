// The CUDA backend under a whole model: how many kernels a decode step launches. At batch 1 a
// decode step's time on a GPU is the weights' streaming time plus a gap per kernel, so the kernel
// count per layer is what the fusions of the backend buy; this pins it.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../model/batch_builder.h"
#include "backend/backend.h"
#include "base/log.h"
#include "cuda_test_util.h"
#include "model/model.h"

namespace pagoda::testing {
namespace {

// A Qwen3 decode step of one sequence on the small-batch GEMM (PAGODA_CUDA_GEMV=on), captured as
// a CUDA graph, is 6 kernels per layer: input norm + q/k/v (one launch), q/k norm + RoPE + cache
// write, attention, o + residual add, post-attention norm + gate/up + SiLU-and-mul (one launch),
// down + residual add; plus the embedding and the RoPE table before the layers and the final
// norm, the logits row gather and lm_head after them: 6 L + 5 nodes. Running the norms, the
// residual adds, q/k norm or SiLU-and-mul as kernels of their own again would add 2 L, L or 2 L.
// The graph's replay gives the eager step's logits, bit for bit.
TEST(CudaModelTest, Qwen3DecodeStepIsSixKernelsPerLayer) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  ScopedGemvMode gemv("on");
  std::unique_ptr<Backend> gpu = make_cuda_backend(0);
  const std::string dir = std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3";
  ModelLoadOptions lo;
  lo.max_num_tokens = 16;
  lo.max_num_logits = 16;
  std::unique_ptr<CausalLM> model = load_model(dir, *gpu, lo);
  const int64_t L = model->num_kv_layers(), V = model->config().vocab_size;
  test_util::BatchBuilder builder(*gpu, 16, 1, 4);
  KvCache kv = gpu->allocate_kv_cache(static_cast<int>(L), builder.num_blocks(), 16, model->num_kv_heads(),
                                      model->head_dim(), DType::kBF16);
  DeviceBuffer logits_buf = gpu->allocate(static_cast<size_t>(lo.max_num_logits * V) * sizeof(float));
  const Tensor logits = logits_buf.as(DType::kF32, {lo.max_num_logits, V});

  test_util::SeqChunk prefill{0, 0, {1, 17, 29, 301, 5, 77}};
  ForwardBatch batch = builder.build({prefill}, /*all_logits=*/false);
  model->forward(batch, kv, logits);
  test_util::SeqChunk decode{0, 6, {42}};
  batch = builder.build({decode}, /*all_logits=*/false);
  poison(*gpu, logits.slice_rows(0, 1));
  model->forward(batch, kv, logits);
  const std::vector<float> eager = download(*gpu, logits.slice_rows(0, 1));

  const LogLevel old_level = log_level();
  set_log_level(LogLevel::kDebug);
  ::testing::internal::CaptureStderr();
  const int graph = gpu->capture_graph([&] { model->forward(batch, kv, logits); });
  const std::string log = ::testing::internal::GetCapturedStderr();
  set_log_level(old_level);
  // "CUDA graph <id> captured: <nodes> nodes" (no std::regex: GCC 12 warns falsely in it under ASan).
  const size_t at = log.find(" captured: ");
  ASSERT_TRUE(log.find("CUDA graph ") != std::string::npos && at != std::string::npos) << log;
  EXPECT_EQ(std::stoll(log.substr(at + 11)), 6 * L + 5) << L << " layers; " << log;

  poison(*gpu, logits.slice_rows(0, 1));
  gpu->replay_graph(graph);
  const std::vector<float> replayed = download(*gpu, logits.slice_rows(0, 1));
  EXPECT_TRUE(close(replayed, eager, 0, 0));
}

}  // namespace
}  // namespace pagoda::testing
