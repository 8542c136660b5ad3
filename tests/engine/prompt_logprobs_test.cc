// Prompt logprobs through the whole engine, against transformers: the golden fixtures
// (tests/model/data, tools/make_golden_fixtures.py) hold transformers' float32 logits at every
// prompt position, so the reference logprob of prompt token p + 1 is log_softmax(row p) at that
// token, and the reference top-k are that row's k largest entries. Checked when the prompt is
// computed in one chunk, in 5-token chunks beside other requests, after another request put the
// same prompt into the prefix cache (a prompt-logprob request must not read it), under
// preemption (every position still delivered exactly once), and with n = 2 (only the first
// completion carries them).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "engine/llm_engine.h"
#include "model/model.h"

namespace pagoda {
namespace {

constexpr int kTopK = 3;
// Logits agree with transformers within 1e-4 + 1e-4|ref| (golden_test.cc); a logprob is
// logit - logsumexp, so twice that bound (plus float rounding of the sum) covers it.
constexpr double kTol = 4e-4;

struct Reference {
  std::vector<int32_t> prompt;
  std::vector<double> logprob;                                // [P - 1]: of prompt token p + 1
  std::vector<std::vector<std::pair<int32_t, double>>> top;   // [P - 1]: best kTopK
};

Reference load_reference(const std::string& name, size_t prompt_index) {
  const std::string dir = std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + name;
  std::ifstream in(dir + "/expected.json");
  const nlohmann::json e = nlohmann::json::parse(in);
  const int64_t vocab = e.at("vocab_size").get<int64_t>();
  const int64_t rows = e.at("num_logits_rows").get<int64_t>();
  std::vector<float> logits(static_cast<size_t>(rows * vocab));
  std::ifstream bin(dir + "/" + e.at("logits_file").get<std::string>(), std::ios::binary);
  bin.read(reinterpret_cast<char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  EXPECT_EQ(bin.gcount(), static_cast<std::streamsize>(logits.size() * sizeof(float)));

  const nlohmann::json& p = e.at("prompts").at(prompt_index);
  Reference ref;
  ref.prompt = p.at("tokens").get<std::vector<int32_t>>();
  const int64_t first_row = p.at("prefill_logits_row").get<int64_t>();
  for (size_t i = 0; i + 1 < ref.prompt.size(); ++i) {
    const float* row = logits.data() + (first_row + static_cast<int64_t>(i)) * vocab;
    double mx = row[0];
    for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, row[v]);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
    const double lse = mx + std::log(sum);
    ref.logprob.push_back(static_cast<double>(row[ref.prompt[i + 1]]) - lse);
    std::vector<std::pair<int32_t, double>> all;
    for (int64_t v = 0; v < vocab; ++v) all.emplace_back(static_cast<int32_t>(v), static_cast<double>(row[v]) - lse);
    std::partial_sort(all.begin(), all.begin() + kTopK, all.end(),
                      [](const auto& a, const auto& b) { return a.second > b.second; });
    all.resize(kTopK);
    ref.top.push_back(std::move(all));
  }
  return ref;
}

struct Collected {
  std::map<std::string, std::vector<SampledToken>> prompt_logprobs;  // "<id>/<index>"
  std::map<std::string, std::vector<int32_t>> tokens;
  EngineStats stats;
};

class PromptLogprobs : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = make_cpu_backend();
    ModelLoadOptions lo;
    lo.max_num_tokens = 256;
    lo.max_num_logits = 64;
    model_ = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend_, lo);
  }

  static EngineConfig config() {
    EngineConfig c;
    c.max_num_seqs = 64;
    c.max_num_batched_tokens = 256;
    c.max_model_len = 160;
    c.num_kv_blocks = 256;
    c.kv_cache_dtype = DType::kF32;
    c.eos_token_ids = {2};
    return c;
  }

  static SamplingParams params(std::optional<int> prompt_logprobs, int max_tokens = 4) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.prompt_logprobs = prompt_logprobs;
    return p;
  }

  // Adds the requests in order (before_step[k]: added just before step k) and runs to the end.
  Collected run(const EngineConfig& c,
                const std::map<int, std::vector<std::tuple<std::string, std::vector<int32_t>, SamplingParams>>>& adds) {
    LLMEngine engine(*model_, *backend_, c);
    Collected out;
    for (int step = 0; step < 100000; ++step) {
      auto it = adds.find(step);
      if (it != adds.end())
        for (const auto& [id, prompt, p] : it->second) engine.add_request(id, prompt, p);
      if (!engine.has_unfinished() && adds.upper_bound(step) == adds.end()) break;
      for (RequestOutput& o : engine.step()) {
        const std::string k = o.request_id + "/" + std::to_string(o.index);
        auto& lp = out.prompt_logprobs[k];
        lp.insert(lp.end(), o.new_prompt_logprobs.begin(), o.new_prompt_logprobs.end());
        auto& t = out.tokens[k];
        t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      }
    }
    out.stats = engine.stats();
    const KvCacheManager& kv = engine.core().kv_cache_manager();
    EXPECT_EQ(kv.num_free_blocks(), kv.num_blocks()) << "KV blocks leaked";
    EXPECT_NO_THROW(kv.check_invariants());
    return out;
  }

  static void expect_matches(const Reference& ref, const std::vector<SampledToken>& got, const std::string& what) {
    ASSERT_EQ(got.size(), ref.prompt.size() - 1) << what << ": one entry per prompt token after the first";
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].token, ref.prompt[i + 1]) << what << " position " << i;
      EXPECT_NEAR(got[i].logprob, ref.logprob[i], kTol) << what << " position " << i;
      ASSERT_EQ(got[i].top_logprobs.size(), static_cast<size_t>(kTopK)) << what;
      for (int k = 0; k < kTopK; ++k) {
        EXPECT_EQ(got[i].top_logprobs[static_cast<size_t>(k)].first, ref.top[i][static_cast<size_t>(k)].first)
            << what << " position " << i << " rank " << k;
        EXPECT_NEAR(got[i].top_logprobs[static_cast<size_t>(k)].second, ref.top[i][static_cast<size_t>(k)].second, kTol)
            << what << " position " << i << " rank " << k;
      }
    }
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CausalLM> model_;
};

TEST_F(PromptLogprobs, MatchTransformersInOneChunk) {
  const Reference ref = load_reference("qwen3", 2);  // a 40-token prompt
  Collected c = run(config(), {{0, {{"a", ref.prompt, params(kTopK)}}}});
  expect_matches(ref, c.prompt_logprobs["a/0"], "one chunk");
  EXPECT_EQ(c.tokens["a/0"].size(), 4u);
}

TEST_F(PromptLogprobs, MatchTransformersInSmallChunksBesideOtherRequests) {
  const Reference ref = load_reference("qwen3", 2);
  const Reference other = load_reference("qwen3", 1);
  EngineConfig cfg = config();
  cfg.max_num_batched_tokens = 5;
  cfg.max_num_seqs = 4;
  Collected c = run(cfg, {{0, {{"x", other.prompt, params(std::nullopt, 8)}, {"a", ref.prompt, params(kTopK)},
                               {"y", other.prompt, params(kTopK, 3)}}}});
  expect_matches(ref, c.prompt_logprobs["a/0"], "5-token chunks");
  expect_matches(other, c.prompt_logprobs["y/0"], "second request");
  EXPECT_TRUE(c.prompt_logprobs["x/0"].empty());
  // The tokens do not depend on the prompt logprobs.
  Collected alone = run(config(), {{0, {{"a", ref.prompt, params(std::nullopt)}}}});
  EXPECT_EQ(c.tokens["a/0"], alone.tokens["a/0"]);
}

TEST_F(PromptLogprobs, AreComputedEvenWhenThePromptIsCached) {
  const Reference ref = load_reference("qwen3", 2);
  // "w" caches the prompt's blocks; "a" arrives after it finished and must recompute them all.
  Collected c = run(config(), {{0, {{"w", ref.prompt, params(std::nullopt, 1)}}}, {3, {{"a", ref.prompt, params(kTopK)}}}});
  expect_matches(ref, c.prompt_logprobs["a/0"], "after a cached run");
  // "a" itself did not count as a prefix-cache lookup; only "w" did.
  EXPECT_EQ(c.stats.prefix_cache.requests, 1);
}

TEST_F(PromptLogprobs, AreDeliveredOnceUnderPreemption) {
  const Reference ref = load_reference("qwen3", 2);
  EngineConfig cfg = config();
  cfg.max_num_batched_tokens = 8;
  cfg.num_kv_blocks = 10;  // 160 tokens: max_model_len fits, the four requests below do not
  std::vector<std::tuple<std::string, std::vector<int32_t>, SamplingParams>> reqs;
  for (int i = 0; i < 4; ++i) reqs.emplace_back("r" + std::to_string(i), ref.prompt, params(kTopK, 40));
  Collected c = run(cfg, {{0, reqs}});
  EXPECT_GT(c.stats.num_preemptions, 0) << "the test meant to force preemptions";
  for (int i = 0; i < 4; ++i) expect_matches(ref, c.prompt_logprobs["r" + std::to_string(i) + "/0"], "preempted");
}

TEST_F(PromptLogprobs, OnlyTheFirstOfNCompletionsCarriesThem) {
  const Reference ref = load_reference("qwen3", 1);
  SamplingParams p = params(1);
  p.n = 2;
  p.temperature = 1.0f;
  p.seed = 7;
  Collected c = run(config(), {{0, {{"a", ref.prompt, p}}}});
  ASSERT_EQ(c.prompt_logprobs["a/0"].size(), ref.prompt.size() - 1);
  EXPECT_TRUE(c.prompt_logprobs["a/1"].empty());
  EXPECT_EQ(c.tokens["a/1"].size(), 4u);
}

}  // namespace
}  // namespace pagoda
