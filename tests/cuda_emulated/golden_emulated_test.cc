// Whole-model logits of the CUDA backend (on the emulated runtime: BF16 activations and KV cache,
// cuBLASLt GEMMs, every kernel of ours) against Hugging Face transformers, for every golden
// fixture (tests/model/data, tools/make_golden_fixtures.py): the fixture's last prompt prefilled
// in one forward (logits of every position), then decoded one token per forward, teacher-forced
// on transformers' float32 greedy tokens.
//
// Reference: transformers' float32 rows (logits.bin). Bound: BF16 arithmetic moves logits by an
// amount that depends on the model, so the yardstick is transformers itself run in bfloat16 on
// the same tokens (logits_bf16.bin): over all rows of the fixture, our worst |ours - float32|
// must be within 2x transformers-bf16's worst |bf16 - float32|, plus 1e-3. And our greedy token
// must equal the reference's wherever the reference's top-2 margin exceeds twice that bound (a
// flip there would not be rounding).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../model/batch_builder.h"
#include "backend/backend.h"
#include "backend/device.h"
#include "model/model.h"

namespace pagoda {
namespace {

using json = nlohmann::json;

std::vector<float> read_rows(const std::string& path, int64_t rows, int64_t vocab) {
  std::vector<float> v(static_cast<size_t>(rows * vocab));
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  EXPECT_EQ(in.gcount(), static_cast<std::streamsize>(v.size() * sizeof(float))) << "short file " << path;
  return v;
}

class EmulatedCudaGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(EmulatedCudaGolden, LogitsWithinTransformersBf16Deviation) {
  const std::string dir = std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + GetParam();
  std::ifstream in(dir + "/expected.json");
  ASSERT_TRUE(in) << dir;
  const json ex = json::parse(in);
  ASSERT_TRUE(ex.contains("bf16")) << "no logits_bf16.bin: run tools/make_golden_fixtures.py --bf16-only";
  const int64_t V = ex.at("vocab_size").get<int64_t>();
  const json& b = ex.at("bf16");
  const json& p = ex.at("prompts").at(b.at("prompt").get<size_t>());
  const auto tokens = p.at("tokens").get<std::vector<int32_t>>();
  const auto generated = p.at("generated").get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(tokens.size()), n_dec = p.at("num_decode_rows").get<int64_t>();
  const int64_t rows = n + n_dec;
  ASSERT_EQ(b.at("num_rows").get<int64_t>(), rows);
  // float32 reference rows of this prompt: prefill rows, then decode rows.
  const std::vector<float> all32 = read_rows(dir + "/" + ex.at("logits_file").get<std::string>(),
                                             ex.at("num_logits_rows").get<int64_t>(), V);
  const std::vector<float> bf16 = read_rows(dir + "/" + b.at("logits_file").get<std::string>(), rows, V);
  const auto ref_row = [&](int64_t i) {
    const int64_t r = i < n ? p.at("prefill_logits_row").get<int64_t>() + i
                            : p.at("decode_logits_row").get<int64_t>() + (i - n);
    return all32.data() + r * V;
  };

  std::unique_ptr<Backend> backend = make_backend("cuda");
  ModelLoadOptions lo;
  lo.max_num_tokens = 256;
  lo.max_num_logits = 256;
  std::unique_ptr<CausalLM> model = load_model(dir, *backend, lo);
  constexpr int kBlockSize = 16;
  test_util::BatchBuilder builder(*backend, kBlockSize, 1, 16);
  KvCache kv = backend->allocate_kv_cache(model->num_kv_layers(), builder.num_blocks(), kBlockSize,
                                          model->num_kv_heads(), model->head_dim(), DType::kBF16);
  DeviceBuffer logits_buf = backend->allocate(static_cast<size_t>(lo.max_num_logits * V) * sizeof(float));
  Tensor logits = logits_buf.as(DType::kF32, {lo.max_num_logits, V});
  std::vector<float> ours(static_cast<size_t>(rows * V));
  for (int64_t step = 0, done = 0; done < rows; ++step) {
    test_util::SeqChunk c;
    c.slot = 0;
    c.num_computed = static_cast<int>(done);
    if (step == 0) {
      c.tokens = tokens;
    } else {
      c.tokens = {generated[static_cast<size_t>(done - n)]};
    }
    ForwardBatch batch = builder.build({c}, /*all_logits=*/true);
    model->forward(batch, kv, logits);
    const int64_t L = static_cast<int64_t>(c.tokens.size());
    backend->copy_to_host(ours.data() + done * V, logits.data, static_cast<size_t>(L * V) * sizeof(float));
    done += L;
  }

  // Per row: max |x - float32| over the vocabulary, for ours and transformers-bf16.
  std::vector<float> row_ours(static_cast<size_t>(rows)), row_bf16(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < V; ++j) {
      const float want = ref_row(i)[j], got = ours[static_cast<size_t>(i * V + j)];
      ASSERT_TRUE(std::isfinite(got)) << "row " << i << " logit " << j << " is " << got;
      row_ours[static_cast<size_t>(i)] = std::max(row_ours[static_cast<size_t>(i)], std::fabs(got - want));
      row_bf16[static_cast<size_t>(i)] =
          std::max(row_bf16[static_cast<size_t>(i)], std::fabs(bf16[static_cast<size_t>(i * V + j)] - want));
    }
  const auto median = [](std::vector<float> v) {
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  const float worst = *std::max_element(row_ours.begin(), row_ours.end());
  const float worst_bf16 = *std::max_element(row_bf16.begin(), row_bf16.end());
  const float med = median(row_ours), med_bf16 = median(row_bf16);
  // The worst row (an MoE routing flip or a long hybrid recurrence can make one row large) and the
  // typical row (a systematic error moves every row).
  const float bound = 2.0f * worst_bf16 + 1e-3f;
  EXPECT_LE(worst, bound) << GetParam() << ": max |ours - float32| " << worst << ", transformers bfloat16 "
                          << worst_bf16;
  EXPECT_LE(med, 2.0f * med_bf16 + 1e-3f) << GetParam() << ": median row |ours - float32| " << med
                                          << ", transformers bfloat16 " << med_bf16;
  int checked = 0;
  for (int64_t i = n - 1; i < rows; ++i) {  // the rows that choose a generated token
    const float* ref = ref_row(i);
    float top = -std::numeric_limits<float>::infinity(), second = top;
    for (int64_t j = 0; j < V; ++j) {
      if (ref[j] > top) {
        second = top;
        top = ref[j];
      } else if (ref[j] > second) {
        second = ref[j];
      }
    }
    if (top - second <= 2.0f * bound) continue;
    const float* row = ours.data() + i * V;
    EXPECT_EQ(std::max_element(row, row + V) - row, std::max_element(ref, ref + V) - ref) << "row " << i;
    ++checked;
  }
  std::printf("%s: max |ours - float32| %.4g (median row %.4g), transformers bfloat16 %.4g (%.4g); %d of %lld greedy "
              "tokens checked\n",
              GetParam().c_str(), worst, med, worst_bf16, med_bf16, checked, static_cast<long long>(n_dec + 1));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EmulatedCudaGolden,
                         ::testing::Values("qwen2", "qwen3", "qwen3_yarn", "llama3", "llama_linear_f16",
                                           "qwen2_dynamic_f32", "qwen2_sliding", "qwen3_moe", "qwen3_next", "qwen3_5",
                                           "qwen3_5_moe"));

}  // namespace
}  // namespace pagoda
