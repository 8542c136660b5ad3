// Async scheduling (EngineConfig::async_scheduling = 1) on the CPU backend with the tiny
// fixtures: step N+1 is scheduled and issued before step N's tokens are processed, its new tokens
// fed from step N's backend-sampled ids (Backend::feed_tokens). The reference is the same engine
// without it (each step finished before the next is scheduled): every request gets the same
// tokens, finish reason, stop reason and logprobs; steps really overlap (num_overlapped_steps);
// requests that stop while the next step already covers them, preemption under a small KV pool,
// aborts between steps, max_model_len, the padded decode layout and a hybrid (recurrent-state)
// model all behave; every KV block is back in the pool at the end. The same on a backend that
// defers every op until the host waits (a GPU stream's semantics), whose defaults turn backend
// sampling and async scheduling on by themselves.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "deferred_backend.h"
#include "engine/llm_engine.h"
#include "model/model.h"
#include "engine_test_util.h"

namespace pagoda {
namespace {

using test_support::numbered;
using test_support::Req;
using test_support::test_prompt;

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<float> prompt_logprobs;
  std::string finish_reason;
  std::optional<int32_t> stop_reason;
  bool operator==(const Result&) const = default;
};

struct Options {
  std::string fixture = "qwen3";
  int async = 1;
  int chunk_budget = 256;
  int num_kv_blocks = 400;
  int max_model_len = 512;
  int cuda_graphs = 0;
  // test_support::DeferredBackend: ops run only when the host waits, as on a GPU stream.
  bool deferred = false;
  // Aborted after this many steps (with the step count at which to abort).
  std::string abort_id;
  int abort_at_step = -1;
};

struct Outcome {
  std::map<std::string, Result> results;
  EngineStats stats;
};

Outcome run(const std::vector<Req>& reqs, const Options& o) {
  std::unique_ptr<Backend> backend = make_cpu_backend();
  if (o.deferred) backend = std::make_unique<test_support::DeferredBackend>(std::move(backend));
  ModelLoadOptions lo;
  lo.max_num_tokens = 256;
  lo.max_num_logits = 16;
  lo.num_state_slots = 16;
  auto model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + o.fixture, *backend, lo);
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = o.chunk_budget;
  c.max_model_len = o.max_model_len;
  c.num_kv_blocks = o.num_kv_blocks;
  c.block_size = 16;
  c.kv_cache_dtype = DType::kF32;
  c.eos_token_ids = {2};
  c.backend_sampling = o.deferred ? -1 : 1;  // the deferred backend "samples on the device"
  c.async_scheduling = o.deferred && o.async == 1 ? -1 : o.async;
  c.cuda_graphs = o.cuda_graphs;
  LLMEngine engine(*model, *backend, c);
  for (const Req& r : reqs) engine.add_request(r.id, r.prompt, r.params);
  Outcome out;
  int step = 0;
  for (; engine.has_unfinished() && step < 5000; ++step) {
    if (step == o.abort_at_step) engine.abort(o.abort_id);
    for (const RequestOutput& ro : engine.step()) {
      Result& r = out.results[ro.request_id];
      EXPECT_TRUE(r.finish_reason.empty()) << ro.request_id << ": output after it finished";
      r.tokens.insert(r.tokens.end(), ro.new_token_ids.begin(), ro.new_token_ids.end());
      for (const SampledToken& t : ro.new_logprobs) r.logprobs.push_back(t.logprob);
      for (const SampledToken& t : ro.new_prompt_logprobs) r.prompt_logprobs.push_back(t.logprob);
      if (ro.finished) {
        r.finish_reason = ro.finish_reason;
        r.stop_reason = ro.stop_reason;
      }
    }
  }
  EXPECT_LT(step, 5000);
  out.stats = engine.stats();
  // Everything finished and gave its blocks back.
  EXPECT_EQ(out.stats.num_running, 0);
  EXPECT_EQ(out.stats.num_waiting, 0);
  EXPECT_EQ(out.stats.num_free_blocks, out.stats.num_blocks);
  engine.core().kv_cache_manager().check_invariants();
  for (const Req& r : reqs) EXPECT_FALSE(out.results[r.id].finish_reason.empty()) << r.id << " never finished";
  return out;
}


SamplingParams seeded(uint64_t seed, int max_tokens) {
  SamplingParams s;
  s.temperature = 0.9f;
  s.top_k = 40;
  s.top_p = 0.95f;
  s.seed = seed;
  s.max_tokens = max_tokens;
  s.ignore_eos = true;
  return s;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams s;
  s.temperature = 0;
  s.max_tokens = max_tokens;
  s.ignore_eos = true;
  return s;
}

// The same requests with and without async scheduling: identical results; returns the async run.
Outcome expect_same(const std::vector<Req>& reqs, Options o) {
  o.async = 0;
  const Outcome sync = run(reqs, o);
  o.async = 1;
  Outcome async = run(reqs, o);
  EXPECT_EQ(sync.stats.num_overlapped_steps, 0);
  for (const Req& r : reqs) {
    const Result& a = async.results.at(r.id);
    const Result& s = sync.results.at(r.id);
    EXPECT_EQ(a.tokens, s.tokens) << r.id;
    EXPECT_EQ(a.finish_reason, s.finish_reason) << r.id;
    EXPECT_EQ(a.stop_reason, s.stop_reason) << r.id;
    EXPECT_EQ(a.logprobs, s.logprobs) << r.id;
    EXPECT_EQ(a.prompt_logprobs, s.prompt_logprobs) << r.id;
  }
  return async;
}

TEST(AsyncScheduling, SameTokensAsWithoutItOnAMixedBatch) {
  std::vector<Req> reqs;
  for (int i = 0; i < 4; ++i) reqs.push_back({numbered("seeded", i), test_prompt(7 + 19 * i, i), seeded(100 + i, 10 + 5 * i)});
  for (int i = 0; i < 3; ++i) reqs.push_back({numbered("greedy", i), test_prompt(12 + 31 * i, 10 + i), greedy(9 + 7 * i)});
  SamplingParams bias = seeded(7, 20);
  bias.logit_bias = {{17, 3.0f}, {40, -100.0f}};  // static edits: overlapped
  reqs.push_back({"bias", test_prompt(25, 20), bias});
  SamplingParams min_tokens = seeded(8, 20);
  min_tokens.ignore_eos = false;
  min_tokens.min_tokens = 12;  // the mask counts the token in flight
  min_tokens.stop_token_ids = {5, 6, 7, 8, 9, 10, 11, 12};
  reqs.push_back({"min_tokens", test_prompt(30, 21), min_tokens});
  SamplingParams pen = seeded(9, 18);
  pen.repetition_penalty = 1.4f;  // edits need the last token: its steps are not overlapped
  pen.frequency_penalty = 0.3f;
  reqs.push_back({"penalty", test_prompt(14, 22), pen});
  SamplingParams lp = seeded(10, 15);
  lp.logprobs = 2;  // sampled on the host
  reqs.push_back({"logprobs", test_prompt(33, 23), lp});
  SamplingParams plp = greedy(6);
  plp.prompt_logprobs = 1;
  reqs.push_back({"prompt_logprobs", test_prompt(40, 24), plp});
  SamplingParams allowed = seeded(11, 12);
  allowed.allowed_token_ids = std::vector<int32_t>{3, 4, 5, 6, 7, 8};  // host Sampler
  reqs.push_back({"allowed", test_prompt(9, 25), allowed});
  Options o;
  o.chunk_budget = 40;  // prefill chunks share steps with decodes
  const Outcome async = expect_same(reqs, o);
  EXPECT_GT(async.stats.num_overlapped_steps, 0);
  EXPECT_EQ(async.results.at("seeded3").tokens.size(), 25u);

  // Only requests the backend samples without penalties: every step after the first overlaps.
  std::vector<Req> plain(reqs.begin(), reqs.begin() + 8);
  const Outcome all = expect_same(plain, Options{});
  EXPECT_EQ(all.stats.num_overlapped_steps, all.stats.num_steps - 1);
}

TEST(AsyncScheduling, StopsWhileTheNextStepIsInFlight) {
  // Stop tokens taken from each request's own unconstrained output, so each stops early: the
  // step issued after the stopping one already holds the request and its work is dropped.
  std::vector<Req> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back({numbered("s", i), test_prompt(5 + 13 * i, 40 + i), seeded(200 + i, 30)});
  const Outcome free_run = run(reqs, Options{});
  for (int i = 0; i < 6; ++i) {
    Req& r = reqs[static_cast<size_t>(i)];
    const std::vector<int32_t>& t = free_run.results.at(r.id).tokens;
    ASSERT_EQ(t.size(), 30u);
    r.params.stop_token_ids = {t[static_cast<size_t>(3 + 4 * i)]};
  }
  const Outcome async = expect_same(reqs, Options{});
  for (int i = 0; i < 6; ++i) {
    const Result& r = async.results.at(numbered("s", i));
    EXPECT_EQ(r.finish_reason, "stop") << i;
    EXPECT_LE(r.tokens.size(), static_cast<size_t>(4 + 4 * i)) << i;
    ASSERT_TRUE(r.stop_reason.has_value()) << i;
    EXPECT_EQ(r.tokens.back(), *r.stop_reason) << i;
  }
  EXPECT_GT(async.stats.num_overlapped_steps, 0);
}

TEST(AsyncScheduling, PreemptionUnderAShortKvPool) {
  // 10 requests of up to 40 + 60 tokens in a pool of 40 blocks of 16: requests are preempted
  // (recomputed) while a step is in flight.
  std::vector<Req> reqs;
  for (int i = 0; i < 10; ++i) reqs.push_back({numbered("p", i), test_prompt(20 + 2 * i, 60 + i), seeded(300 + i, 60)});
  Options o;
  o.num_kv_blocks = 40;
  o.max_model_len = 256;
  const Outcome async = expect_same(reqs, o);
  EXPECT_GT(async.stats.num_preemptions, 0);
  EXPECT_GT(async.stats.num_overlapped_steps, 0);
}

TEST(AsyncScheduling, AbortBetweenSteps) {
  std::vector<Req> reqs;
  for (int i = 0; i < 5; ++i) reqs.push_back({numbered("a", i), test_prompt(10 + 7 * i, 80 + i), seeded(400 + i, 20)});
  Options o;
  const Outcome full = run(reqs, o);
  o.abort_id = "a2";
  o.abort_at_step = 6;  // mid-decode, with a step in flight
  const Outcome aborted = run(reqs, o);
  EXPECT_EQ(aborted.results.at("a2").finish_reason, "abort");
  const std::vector<int32_t>& got = aborted.results.at("a2").tokens;
  const std::vector<int32_t>& all = full.results.at("a2").tokens;
  ASSERT_LT(got.size(), all.size());
  EXPECT_EQ(got, std::vector<int32_t>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(got.size())));
  for (int i = 0; i < 5; ++i)
    if (i != 2) {
      EXPECT_EQ(aborted.results.at(numbered("a", i)), full.results.at(numbered("a", i))) << i;
    }
}

TEST(AsyncScheduling, MaxModelLenAndMaxTokens) {
  std::vector<Req> reqs;
  SamplingParams to_the_end = seeded(500, 1000);  // capped by max_model_len
  reqs.push_back({"long", test_prompt(100, 90), to_the_end});
  reqs.push_back({"one", test_prompt(20, 91), seeded(501, 1)});
  reqs.push_back({"two", test_prompt(21, 92), greedy(2)});
  Options o;
  o.max_model_len = 128;
  const Outcome async = expect_same(reqs, o);
  EXPECT_EQ(async.results.at("long").tokens.size(), 28u);
  EXPECT_EQ(async.results.at("long").finish_reason, "length");
  EXPECT_EQ(async.results.at("one").tokens.size(), 1u);
  EXPECT_EQ(async.results.at("two").tokens.size(), 2u);
}

TEST(AsyncScheduling, PaddedDecodeLayout) {
  std::vector<Req> reqs;
  for (int i = 0; i < 11; ++i) reqs.push_back({numbered("g", i), test_prompt(4 + 13 * i, 110 + i), seeded(600 + i, 3 + 4 * i)});
  Options o;
  o.cuda_graphs = 1;
  o.chunk_budget = 64;
  const Outcome async = expect_same(reqs, o);
  EXPECT_GT(async.stats.num_overlapped_steps, 0);
}

TEST(AsyncScheduling, HybridModelStateSlots) {
  std::vector<Req> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back({numbered("h", i), test_prompt(6 + 17 * i, 120 + i), seeded(700 + i, 8 + 3 * i)});
  Options o;
  o.fixture = "qwen3_5";
  o.chunk_budget = 48;
  const Outcome async = expect_same(reqs, o);
  EXPECT_GT(async.stats.num_overlapped_steps, 0);
}

TEST(AsyncScheduling, OnABackendThatRunsOpsOnlyWhenTheHostWaits) {
  // Host buffers (staging, sampling rows, sampled tokens) are reused while the step that reads
  // or writes them may not have run yet: the same results as synchronous steps on the CPU.
  std::vector<Req> reqs;
  for (int i = 0; i < 5; ++i) reqs.push_back({numbered("d", i), test_prompt(8 + 21 * i, 130 + i), seeded(800 + i, 12 + 3 * i)});
  for (int i = 0; i < 2; ++i) reqs.push_back({numbered("dg", i), test_prompt(30 + 5 * i, 140 + i), greedy(14)});
  SamplingParams min_tokens = seeded(810, 20);
  min_tokens.ignore_eos = false;
  min_tokens.min_tokens = 9;
  min_tokens.stop_token_ids = {5, 6, 7, 8, 9, 10, 11, 12};
  reqs.push_back({"min_tokens", test_prompt(19, 150), min_tokens});
  SamplingParams pen = seeded(811, 16);
  pen.presence_penalty = 0.7f;
  reqs.push_back({"penalty", test_prompt(23, 151), pen});
  SamplingParams lp = greedy(10);
  lp.logprobs = 1;
  reqs.push_back({"logprobs", test_prompt(27, 152), lp});
  Options o;
  o.chunk_budget = 48;
  o.async = 0;
  const Outcome sync = run(reqs, o);
  for (int graphs : {0, 1}) {
    Options d = o;
    d.deferred = true;
    d.async = 1;
    d.cuda_graphs = graphs;
    const Outcome deferred = run(reqs, d);
    EXPECT_GT(deferred.stats.num_overlapped_steps, 0);
    for (const Req& r : reqs) {
      EXPECT_EQ(deferred.results.at(r.id).tokens, sync.results.at(r.id).tokens) << r.id << " graphs " << graphs;
      EXPECT_EQ(deferred.results.at(r.id).finish_reason, sync.results.at(r.id).finish_reason) << r.id;
      EXPECT_EQ(deferred.results.at(r.id).logprobs, sync.results.at(r.id).logprobs) << r.id;
    }
  }
}

}  // namespace
}  // namespace pagoda
