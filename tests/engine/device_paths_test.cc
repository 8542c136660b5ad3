// The engine paths a GPU takes, exercised on the CPU backend with the tiny Qwen3 fixture.
// Backend sampling (EngineConfig::backend_sampling: only token ids and requested logprobs come
// back): greedy tokens equal the host Sampler's; a seeded request draws the same tokens alone and
// in a mixed batch (prefill chunks, other settings, a request with logprobs, requests that stay on
// the host Sampler because they want allowed_token_ids); penalties, logit_bias and min_tokens as
// LogitEdits equal the host processors exactly; raw logprobs (and their top entries) equal the host
// Sampler's; host-path requests are unchanged by the others being sampled on the backend.
// The padded decode layout CUDA graphs replay (EngineConfig::cuda_graphs = 1: decode steps padded
// to a capture size, fixed-width block tables, padding tokens that write no K/V): the same tokens
// as the unpadded steps while the batch shrinks through every capture size, for a dense and a
// hybrid model.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/llm_engine.h"
#include "engine/sampler.h"
#include "model/model.h"
#include "engine_test_util.h"

namespace pagoda {
namespace {

using test_support::numbered;
using test_support::Req;
using test_support::test_prompt;

// Every sampled token's logprob, per request (requests with params.logprobs).
using Logprobs = std::map<std::string, std::vector<float>>;

std::map<std::string, std::vector<int32_t>> run(const std::vector<Req>& reqs, int backend_sampling,
                                                int chunk_budget = 256, int cuda_graphs = 0,
                                                Logprobs* lps = nullptr, const char* fixture = "qwen3") {
  auto backend = make_cpu_backend();
  ModelLoadOptions lo;
  lo.max_num_tokens = 256;
  lo.max_num_logits = 16;
  auto model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + fixture, *backend, lo);
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = chunk_budget;
  c.max_model_len = 512;
  c.num_kv_blocks = 400;
  c.kv_cache_dtype = DType::kF32;
  c.eos_token_ids = {2};
  c.backend_sampling = backend_sampling;
  c.cuda_graphs = cuda_graphs;
  LLMEngine engine(*model, *backend, c);
  for (const Req& r : reqs) engine.add_request(r.id, r.prompt, r.params);
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, int> logprobs;
  for (int step = 0; engine.has_unfinished() && step < 5000; ++step)
    for (const RequestOutput& o : engine.step()) {
      auto& t = tokens[o.request_id];
      t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      logprobs[o.request_id] += static_cast<int>(o.new_logprobs.size());
      if (lps != nullptr)
        for (const SampledToken& t : o.new_logprobs) (*lps)[o.request_id].push_back(t.logprob);
    }
  for (const Req& r : reqs)
    if (r.params.logprobs) {
      EXPECT_EQ(logprobs[r.id], static_cast<int>(tokens[r.id].size())) << r.id;
    }
  return tokens;
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
    reqs.push_back({numbered("g", i), test_prompt(5 + 9 * i, i), p});
  }
  EXPECT_EQ(run(reqs, 1), run(reqs, 0));
}

// Sampler::append_edits + Backend::apply_logit_edits change a row exactly as
// Sampler::apply_processors does (penalties, logit_bias, min_tokens), before and after outputs.
TEST(BackendSampling, LogitEditsEqualTheHostProcessors) {
  auto backend = make_cpu_backend();
  const int64_t V = 300;
  SamplingParams p;
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.4f;
  p.frequency_penalty = 0.25f;
  p.logit_bias = {{5, 2.5f}, {7, -1.0f}, {2, 3.0f}, {40, 0.5f}};
  p.min_tokens = 3;
  p.stop_token_ids = {9};
  Sampler sampler(p, std::vector<int32_t>{4, 5, 6, 6, 200, 299}, V, {2});
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int32_t next : {40, 5, 40, 123, 9, 2}) {
    std::vector<float> row(static_cast<size_t>(V));
    for (float& x : row) x = nd(g);
    std::vector<float> want = row;
    sampler.apply_processors(want.data());
    std::vector<LogitEdit> edits;
    SamplingRow r;
    sampler.append_edits(edits, r);
    std::vector<int32_t> offsets = {0, static_cast<int32_t>(edits.size())};
    backend->apply_logit_edits(Tensor(row.data(), DType::kF32, {1, V}), Tensor(&r, DType::kI32, {1, kSamplingRowWords}),
                               Tensor(edits.data(), DType::kI32, {static_cast<int64_t>(edits.size()), 4}),
                               Tensor(offsets.data(), DType::kI32, {2}));
    for (int64_t i = 0; i < V; ++i) ASSERT_EQ(row[static_cast<size_t>(i)], want[static_cast<size_t>(i)]) << "token " << i;
    sampler.accept(next);
  }
}

TEST(BackendSampling, GreedyWithPenaltiesEqualsTheHostSampler) {
  std::vector<Req> reqs;
  for (int i = 0; i < 5; ++i) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = 24;
    p.repetition_penalty = 1.0f + 0.2f * static_cast<float>(i);
    p.frequency_penalty = 0.3f * static_cast<float>(i % 3);
    p.presence_penalty = i == 2 ? 0.8f : 0.0f;
    if (i == 3) p.logit_bias = {{17, 4.0f}, {30, -100.0f}};
    if (i == 4) p.min_tokens = 10;
    reqs.push_back({numbered("p", i), test_prompt(6 + 11 * i, 60 + i), p});
  }
  EXPECT_EQ(run(reqs, 1, 32), run(reqs, 0, 32));
}

TEST(BackendSampling, SeededDrawsDoNotDependOnTheBatch) {
  const Req mine{"mine", test_prompt(30, 7), sampled(42, 0.9f, 20, 0.9f, 0.02f)};
  const auto alone = run({mine}, 1)["mine"];
  ASSERT_EQ(alone.size(), 24u);
  // The path is really taken: the host Sampler's generator draws another text from the same seed.
  EXPECT_NE(run({mine}, 0)["mine"], alone);

  std::vector<Req> batch;
  for (int i = 0; i < 5; ++i)
    batch.push_back({numbered("other", i), test_prompt(10 + 23 * i, 20 + i), sampled(i, 1.0f + 0.1f * i, 0, 0.95f, 0)});
  SamplingParams lp = sampled(5, 1.0f, 0, 1.0f, 0);
  lp.logprobs = 2;  // on the backend, logprobs by Backend::compute_logprobs
  const Req logprobs{"logprobs", test_prompt(40, 30), lp};
  batch.push_back(logprobs);
  SamplingParams pen = sampled(6, 0.8f, 10, 1.0f, 0);
  pen.repetition_penalty = 1.3f;  // on the backend, with LogitEdits
  pen.logit_bias = {{11, 1.5f}};
  const Req penalty{"penalty", test_prompt(17, 31), pen};
  batch.push_back(penalty);
  SamplingParams allowed = sampled(7, 1.0f, 0, 1.0f, 0);
  allowed.allowed_token_ids = std::vector<int32_t>{3, 4, 5, 6, 7, 8};  // stays on the host Sampler
  batch.push_back({"allowed", test_prompt(9, 32), allowed});
  batch.push_back(mine);
  // The batch at a small chunk budget: prefill chunks of several requests share steps with decodes.
  const auto mixed = run(batch, 1, 48);
  EXPECT_EQ(mixed.at("mine"), alone);
  EXPECT_EQ(mixed.at("penalty"), run({penalty}, 1)["penalty"]);
  EXPECT_EQ(mixed.at("logprobs"), run({logprobs}, 1)["logprobs"]);

  // Host-path requests: the same tokens as with every request on the host Sampler.
  const auto host = run(batch, 0, 48);
  EXPECT_EQ(mixed.at("allowed"), host.at("allowed"));
  for (const Req& r : batch) EXPECT_EQ(mixed.at(r.id).size(), 24u) << r.id;
  // Different seeds draw different texts (the backend draw is not stuck on one token).
  EXPECT_NE(mixed.at("other0"), mixed.at("other1"));
}

// Raw logprobs of backend-sampled tokens (Backend::compute_logprobs, up to kMaxBackendLogprobs
// top entries) equal the host Sampler's: the same greedy tokens, each token's logprob and the top
// entries' ids exactly, their logprobs within 1e-5 (FP32 exp summed in another order). A request
// wanting more top logprobs than the backend computes is sampled on the host, unchanged.
TEST(BackendSampling, LogprobsEqualTheHostSampler) {
  std::vector<Req> reqs;
  const int wants[] = {0, 1, 5, 20, kMaxBackendLogprobs, kMaxBackendLogprobs + 8};
  for (int i = 0; i < 6; ++i) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = 12;
    p.ignore_eos = true;
    p.logprobs = wants[i];
    if (i == 3) p.repetition_penalty = 1.3f;  // edits: the logprobs stay those of the raw logits
    if (i == 4) p.logit_bias = {{17, 5.0f}};
    reqs.push_back({numbered("l", i), test_prompt(7 + 9 * i, 90 + i), p});
  }
  auto collect = [&](int backend_sampling) {
    auto backend = make_cpu_backend();
    ModelLoadOptions lo;
    lo.max_num_tokens = 64;
    lo.max_num_logits = 16;
    auto model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend, lo);
    EngineConfig c;
    c.max_num_seqs = 16;
    c.max_num_batched_tokens = 64;
    c.max_model_len = 256;
    c.num_kv_blocks = 100;
    c.kv_cache_dtype = DType::kF32;
    c.eos_token_ids = {2};
    c.backend_sampling = backend_sampling;
    c.max_logprobs = 64;
    LLMEngine engine(*model, *backend, c);
    for (const Req& r : reqs) engine.add_request(r.id, r.prompt, r.params);
    std::map<std::string, std::vector<SampledToken>> out;
    while (engine.has_unfinished())
      for (const RequestOutput& o : engine.step()) {
        EXPECT_EQ(o.new_logprobs.size(), o.new_token_ids.size()) << o.request_id;
        for (const SampledToken& t : o.new_logprobs) out[o.request_id].push_back(t);
      }
    return out;
  };
  const auto host = collect(0), dev = collect(1);
  for (int i = 0; i < 6; ++i) {
    const std::string id = numbered("l", i);
    ASSERT_EQ(dev.at(id).size(), 12u) << id;
    ASSERT_EQ(host.at(id).size(), 12u) << id;
    for (size_t k = 0; k < 12; ++k) {
      const SampledToken &d = dev.at(id)[k], &h = host.at(id)[k];
      ASSERT_EQ(d.token, h.token) << id << " token " << k;
      EXPECT_NEAR(d.logprob, h.logprob, 1e-5) << id << " token " << k;
      ASSERT_EQ(d.top_logprobs.size(), static_cast<size_t>(wants[i])) << id;
      ASSERT_EQ(h.top_logprobs.size(), static_cast<size_t>(wants[i])) << id;
      for (size_t e = 0; e < d.top_logprobs.size(); ++e) {
        EXPECT_EQ(d.top_logprobs[e].first, h.top_logprobs[e].first) << id << " token " << k << " entry " << e;
        EXPECT_NEAR(d.top_logprobs[e].second, h.top_logprobs[e].second, 1e-5) << id << " token " << k << " entry " << e;
      }
    }
  }
}

TEST(PaddedDecode, SameTokensAsUnpaddedSteps) {
  // 11 requests with different prompt and output lengths: decode batches of 11 down to 1 (padded
  // to 16, 8, 4, 2, 1), steps that mix prefill chunks (not padded), prompt logprobs (not padded).
  std::vector<Req> reqs;
  for (int i = 0; i < 11; ++i) {
    SamplingParams p = i % 3 == 0 ? sampled(70 + i, 0.8f, 0, 1.0f, 0) : SamplingParams{};
    if (i % 3 != 0) {
      p.temperature = 0;
      p.logprobs = 0;  // the logprob of every token: the logits themselves are compared
    }
    p.max_tokens = 3 + 4 * i;
    p.ignore_eos = true;
    if (i == 4) p.prompt_logprobs = 1;
    reqs.push_back({numbered("r", i), test_prompt(4 + 13 * i, 40 + i), p});
  }
  // qwen3_5: a hybrid model, whose padding sequences carry AttentionMetadata::kPaddingSlot.
  for (const char* fixture : {"qwen3", "qwen3_5"})
  for (int backend_sampling : {0, 1}) {
    SCOPED_TRACE(fixture);
    Logprobs lp_eager, lp_padded;
    const auto eager = run(reqs, backend_sampling, 64, 0, &lp_eager, fixture);
    const auto padded = run(reqs, backend_sampling, 64, 1, &lp_padded, fixture);
    EXPECT_EQ(padded, eager) << "backend_sampling " << backend_sampling;
    ASSERT_EQ(lp_padded.size(), lp_eager.size());
    for (const auto& [id, v] : lp_eager) {
      ASSERT_EQ(lp_padded[id].size(), v.size()) << id;
      for (size_t k = 0; k < v.size(); ++k) EXPECT_NEAR(lp_padded[id][k], v[k], 1e-4) << id << " token " << k;
    }
    for (int i = 0; i < 11; ++i) EXPECT_EQ(padded.at(numbered("r", i)).size(), static_cast<size_t>(3 + 4 * i));
  }
}

}  // namespace
}  // namespace pagoda
