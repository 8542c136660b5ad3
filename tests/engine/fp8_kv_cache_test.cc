// The FP8 KV cache (--kv-cache-dtype fp8 / fp8_e5m2) in the engine: the same --kv-cache-memory
// holds twice the BF16 blocks, and a request's greedy tokens do not depend on the batch around
// it, on chunked prefill or on preemptions (each row reads the same stored codes however it is
// scheduled). The codecs are checked against torch in base/fp8_test.cc, the attention over FP8
// pages against a double reference in backend/attention_test.cc.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/device.h"
#include "engine/llm_engine.h"
#include "engine_test_util.h"
#include "model/model.h"

namespace pagoda {
namespace {

using test_support::numbered;
using test_support::test_prompt;

class Fp8KvCache : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    backend_ = make_backend("cpu");
    ModelLoadOptions lo;
    lo.max_num_tokens = 64;
    lo.max_num_logits = 16;
    model_ = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend_, lo);
  }
  EngineConfig config(int budget, int blocks) const {
    EngineConfig c;
    c.max_num_seqs = 16;
    c.max_num_batched_tokens = budget;
    c.max_model_len = 128;
    c.num_kv_blocks = blocks;
    c.kv_cache_dtype = GetParam();
    c.eos_token_ids = {2};
    return c;
  }
  std::map<std::string, std::vector<int32_t>> run(const EngineConfig& c, int n) {
    LLMEngine engine(*model_, *backend_, c);
    SamplingParams p;
    p.temperature = 0;
    p.ignore_eos = true;
    p.max_tokens = 24;
    for (int i = 0; i < n; ++i) engine.add_request(numbered("r", i), test_prompt(20 + 7 * i, i), p);
    std::map<std::string, std::vector<int32_t>> tokens;
    for (int steps = 0; engine.has_unfinished() && steps < 10000; ++steps)
      for (const RequestOutput& o : engine.step())
        tokens[o.request_id].insert(tokens[o.request_id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
    EXPECT_EQ(engine.stats().num_free_blocks, engine.stats().num_blocks);
    preemptions_ = engine.stats().num_preemptions;
    return tokens;
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CausalLM> model_;
  int64_t preemptions_ = 0;
};

TEST_P(Fp8KvCache, HoldsTwiceTheBf16BlocksInTheSameMemory) {
  EngineConfig fp8 = config(64, 0);
  fp8.kv_cache_memory_bytes = size_t{8} << 20;
  EngineConfig bf16 = fp8;
  bf16.kv_cache_dtype = DType::kBF16;
  LLMEngine a(*model_, *backend_, fp8), b(*model_, *backend_, bf16);
  // Half the bytes per block (the count is floored: twice, or one more).
  EXPECT_GE(a.config().num_kv_blocks, 2 * b.config().num_kv_blocks);
  EXPECT_LE(a.config().num_kv_blocks, 2 * b.config().num_kv_blocks + 1);
  EXPECT_GT(b.config().num_kv_blocks, 0);
}

TEST_P(Fp8KvCache, GreedyTokensIndependentOfBatchChunksAndPreemption) {
  constexpr int kRequests = 8;
  std::map<std::string, std::vector<int32_t>> alone;
  for (int i = 0; i < kRequests; ++i) {
    LLMEngine engine(*model_, *backend_, config(64, 64));
    SamplingParams p;
    p.temperature = 0;
    p.ignore_eos = true;
    p.max_tokens = 24;
    const std::string id = numbered("r", i);
    engine.add_request(id, test_prompt(20 + 7 * i, i), p);
    while (engine.has_unfinished())
      for (const RequestOutput& o : engine.step())
        alone[id].insert(alone[id].end(), o.new_token_ids.begin(), o.new_token_ids.end());
    ASSERT_EQ(alone[id].size(), 24u);
  }
  EXPECT_EQ(run(config(64, 64), kRequests), alone) << "batched";
  EXPECT_EQ(run(config(7, 64), kRequests), alone) << "7-token chunks";
  EXPECT_EQ(run(config(64, 12), kRequests), alone) << "12 blocks: preemptions";
  EXPECT_GT(preemptions_, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8KvCache, ::testing::Values(DType::kF8E4M3, DType::kF8E5M2),
                         [](const auto& info) { return info.param == DType::kF8E4M3 ? "e4m3" : "e5m2"; });

}  // namespace
}  // namespace pagoda
