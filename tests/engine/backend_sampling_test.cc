// The engine's backend-sampling path (EngineConfig::backend_sampling: what a GPU uses to copy back
// only token ids) exercised on the CPU backend with the tiny Qwen3 fixture: greedy tokens equal
// the host Sampler's; a seeded request draws the same tokens alone and in a mixed batch (prefill
// chunks, other settings, requests that stay on the host Sampler because they want logprobs or
// penalties); host-path requests are unchanged by the others being sampled on the backend.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/llm_engine.h"
#include "model/model.h"

namespace pagoda {
namespace {

struct Req {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingParams params;
};

std::map<std::string, std::vector<int32_t>> run(const std::vector<Req>& reqs, int backend_sampling,
                                                int chunk_budget = 256) {
  auto backend = make_cpu_backend();
  ModelLoadOptions lo;
  lo.max_num_tokens = 256;
  lo.max_num_logits = 16;
  auto model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend, lo);
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = chunk_budget;
  c.max_model_len = 512;
  c.num_kv_blocks = 400;
  c.kv_cache_dtype = DType::kF32;
  c.eos_token_ids = {2};
  c.backend_sampling = backend_sampling;
  LLMEngine engine(*model, *backend, c);
  for (const Req& r : reqs) engine.add_request(r.id, r.prompt, r.params);
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, int> logprobs;
  for (int step = 0; engine.has_unfinished() && step < 5000; ++step)
    for (const RequestOutput& o : engine.step()) {
      auto& t = tokens[o.request_id];
      t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      logprobs[o.request_id] += static_cast<int>(o.new_logprobs.size());
    }
  for (const Req& r : reqs)
    if (r.params.logprobs) {
      EXPECT_EQ(logprobs[r.id], static_cast<int>(tokens[r.id].size())) << r.id;
    }
  return tokens;
}

// "<prefix><i>" (built by appending: GCC 12 warns falsely on "literal" + std::string).
std::string numbered(std::string prefix, int i) {
  prefix.append(std::to_string(i));
  return prefix;
}

std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 37 + salt * 101) % 250);
  return p;
}

SamplingParams sampled(uint64_t seed, float t, int k, float p, float min_p) {
  SamplingParams s;
  s.temperature = t;
  s.top_k = k;
  s.top_p = p;
  s.min_p = min_p;
  s.seed = seed;
  s.max_tokens = 24;
  s.ignore_eos = true;
  return s;
}

TEST(BackendSampling, GreedyEqualsTheHostSampler) {
  std::vector<Req> reqs;
  for (int i = 0; i < 6; ++i) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = 20;
    p.ignore_eos = true;
    reqs.push_back({numbered("g", i), prompt(5 + 9 * i, i), p});
  }
  EXPECT_EQ(run(reqs, 1), run(reqs, 0));
}

TEST(BackendSampling, SeededDrawsDoNotDependOnTheBatch) {
  const Req mine{"mine", prompt(30, 7), sampled(42, 0.9f, 20, 0.9f, 0.02f)};
  const auto alone = run({mine}, 1)["mine"];
  ASSERT_EQ(alone.size(), 24u);
  // The path is really taken: the host Sampler's generator draws another text from the same seed.
  EXPECT_NE(run({mine}, 0)["mine"], alone);

  std::vector<Req> batch;
  for (int i = 0; i < 5; ++i)
    batch.push_back({numbered("other", i), prompt(10 + 23 * i, 20 + i), sampled(i, 1.0f + 0.1f * i, 0, 0.95f, 0)});
  SamplingParams lp = sampled(5, 1.0f, 0, 1.0f, 0);
  lp.logprobs = 2;  // stays on the host Sampler
  batch.push_back({"logprobs", prompt(40, 30), lp});
  SamplingParams pen = sampled(6, 0.8f, 10, 1.0f, 0);
  pen.repetition_penalty = 1.3f;
  batch.push_back({"penalty", prompt(17, 31), pen});
  batch.push_back(mine);
  // The batch at a small chunk budget: prefill chunks of several requests share steps with decodes.
  const auto mixed = run(batch, 1, 48);
  EXPECT_EQ(mixed.at("mine"), alone);

  // Host-path requests: the same tokens as with every request on the host Sampler.
  const auto host = run(batch, 0, 48);
  EXPECT_EQ(mixed.at("logprobs"), host.at("logprobs"));
  EXPECT_EQ(mixed.at("penalty"), host.at("penalty"));
  for (const Req& r : batch) EXPECT_EQ(mixed.at(r.id).size(), 24u) << r.id;
  // Different seeds draw different texts (the backend draw is not stuck on one token).
  EXPECT_NE(mixed.at("other0"), mixed.at("other1"));
}

}  // namespace
}  // namespace pagoda
