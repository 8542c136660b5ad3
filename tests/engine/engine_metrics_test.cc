// vLLM's request-phase and step histograms (EngineMetrics) against what the run must give: one
// queue / prefill observation per request that was scheduled, one decode / inference observation
// per request that finished by stop or length (none for aborted ones), prefill + decode adding
// up to inference, and the step histogram counting every step and every scheduled token
// (prompts in chunks, then one token per decode step).
#include <gtest/gtest.h>

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

struct Fixture {
  Fixture() : backend(make_backend("cpu")) {
    ModelLoadOptions lo;
    lo.max_num_tokens = 64;
    lo.max_num_logits = 16;
    model = load_model(std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/qwen3", *backend, lo);
    config.max_num_seqs = 16;
    config.max_num_batched_tokens = 24;  // prompts of 40 tokens take two chunks
    config.max_model_len = 128;
    config.num_kv_blocks = 256;
    config.enable_prefix_caching = false;  // every prompt token is computed
    config.eos_token_ids = {2};
  }
  std::unique_ptr<Backend> backend;
  std::unique_ptr<CausalLM> model;
  EngineConfig config;
};

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.ignore_eos = true;
  p.max_tokens = max_tokens;
  return p;
}

TEST(EngineMetrics, PhasesAndStepTokensAddUp) {
  Fixture f;
  LLMEngine engine(*f.model, *f.backend, f.config);
  constexpr int kRequests = 5, kPrompt = 40, kMax = 6;
  for (int i = 0; i < kRequests; ++i) engine.add_request(numbered("r", i), test_prompt(kPrompt, i), greedy(kMax));
  int steps = 0;
  while (engine.has_unfinished()) {
    engine.step();
    ASSERT_LT(++steps, 1000);
  }
  const EngineMetrics& m = engine.metrics();
  for (const Histogram* h : {&m.queue_time, &m.prefill_time, &m.decode_time, &m.inference_time})
    EXPECT_EQ(h->count(), static_cast<uint64_t>(kRequests));
  EXPECT_GE(m.queue_time.sum(), 0.0);
  EXPECT_GT(m.prefill_time.sum(), 0.0);
  EXPECT_GT(m.decode_time.sum(), 0.0);
  // Per request prefill (scheduled -> first token) + decode (-> finished) == inference.
  EXPECT_NEAR(m.prefill_time.sum() + m.decode_time.sum(), m.inference_time.sum(), 1e-9);

  // Every step once; its tokens: each prompt once (in chunks), then every output token but the
  // last fed back.
  const EngineStats st = engine.stats();
  EXPECT_EQ(m.iteration_tokens.count(), static_cast<uint64_t>(st.num_steps));
  EXPECT_EQ(m.iteration_tokens.sum(), kRequests * (kPrompt + kMax - 1.0));
}

TEST(EngineMetrics, AbortedRequestsEndTheirPhasesWhereTheyStopped) {
  Fixture f;
  LLMEngine engine(*f.model, *f.backend, f.config);
  // Aborted before it is ever scheduled: no phase at all.
  engine.add_request("never", test_prompt(40, 99), greedy(6));
  engine.abort("never");
  // Aborted after its first tokens: queue and prefill, no decode or inference (as vLLM).
  engine.add_request("cut", test_prompt(8, 7), greedy(50));
  int steps = 0, cut_tokens = 0;
  while (engine.has_unfinished()) {
    for (const RequestOutput& o : engine.step()) cut_tokens += static_cast<int>(o.new_token_ids.size());
    if (cut_tokens == 2) engine.abort("cut");
    ASSERT_LT(++steps, 1000);
  }
  const EngineMetrics& m = engine.metrics();
  EXPECT_EQ(m.queue_time.count(), 1u);
  EXPECT_EQ(m.prefill_time.count(), 1u);
  EXPECT_EQ(m.decode_time.count(), 0u);
  EXPECT_EQ(m.inference_time.count(), 0u);
  EXPECT_EQ(cut_tokens, 2);
}

}  // namespace
}  // namespace pagoda
