// AsyncEngine: requests added from several threads stream the same tokens as the synchronous
// engine; abort ends a stream with "abort"; bad input is rejected synchronously; shutdown ends
// open streams.
#include "engine/async_engine.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "engine_test_util.h"

namespace pagoda {
namespace {

using test_support::numbered;

std::string fixture_dir(const std::string& name) {
  return std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + name;
}

EngineConfig small_config() {
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = 64;
  c.max_model_len = 128;
  c.num_kv_blocks = 64;
  c.kv_cache_dtype = DType::kF32;
  return c;
}

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

std::vector<int32_t> prompt_for(int i) {
  std::vector<int32_t> p;
  for (int t = 0; t < 5 + 7 * i; ++t) p.push_back(static_cast<int32_t>(3 + (t * 31 + i * 17) % 500));
  return p;
}

// Drains a stream: tokens per completion index and the finish reasons.
struct Drained {
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, std::string> finish;
};

Drained drain(RequestStream& s) {
  Drained d;
  while (std::optional<RequestOutput> o = s.next()) {
    auto& t = d.tokens[o->index];
    t.insert(t.end(), o->new_token_ids.begin(), o->new_token_ids.end());
    if (o->finished) d.finish[o->index] = o->finish_reason;
  }
  return d;
}

TEST(AsyncEngine, ConcurrentClientsGetTheSynchronousEnginesTokens) {
  constexpr int kRequests = 8;
  std::map<int, std::vector<int32_t>> want;
  {
    std::unique_ptr<LLMEngine> e = LLMEngine::from_model_dir(fixture_dir("qwen3"), small_config());
    for (int i = 0; i < kRequests; ++i)
      e->add_request(numbered("r", static_cast<size_t>(i)), prompt_for(i), greedy(6 + i));
    while (e->has_unfinished())
      for (const RequestOutput& o : e->step()) {
        auto& t = want[std::stoi(o.request_id.substr(1))];
        t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      }
  }
  AsyncEngine engine(LLMEngine::from_model_dir(fixture_dir("qwen3"), small_config()));
  std::vector<Drained> got(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i)
    clients.emplace_back([&, i] {
      std::shared_ptr<RequestStream> s =
          engine.add_request(numbered("r", static_cast<size_t>(i)), prompt_for(i), greedy(6 + i));
      got[static_cast<size_t>(i)] = drain(*s);
    });
  for (std::thread& t : clients) t.join();
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(got[static_cast<size_t>(i)].tokens[0], want[i]) << i;
    EXPECT_EQ(got[static_cast<size_t>(i)].finish[0], "length") << i;
  }
  EXPECT_FALSE(engine.is_dead());
  // The id is free again once its stream finished.
  std::shared_ptr<RequestStream> again = engine.add_request("r0", prompt_for(0), greedy(6));
  EXPECT_EQ(drain(*again).tokens[0], want[0]);
  EXPECT_EQ(engine.stats().num_free_blocks, engine.stats().num_blocks);
}

TEST(AsyncEngine, AbortEndsTheStreamAndParallelSamplingStreamsEveryCompletion) {
  // The aborted request must still be running when the abort arrives: it asks for 250 tokens
  // and runs beside 15 others as long, so that its natural end is far off even on a loaded
  // machine that deschedules this thread for a while.
  EngineConfig c = small_config();
  c.max_model_len = 256;
  c.num_kv_blocks = 16 * 256 / 16;
  AsyncEngine engine(LLMEngine::from_model_dir(fixture_dir("qwen2"), c));
  std::vector<std::shared_ptr<RequestStream>> ballast;
  for (int i = 0; i < 15; ++i) ballast.push_back(engine.add_request(numbered("ballast", static_cast<size_t>(i)), prompt_for(3), greedy(250)));
  std::shared_ptr<RequestStream> s = engine.add_request("long", prompt_for(3), greedy(250));
  std::optional<RequestOutput> first = s->next();
  ASSERT_TRUE(first.has_value());
  engine.abort("long");
  Drained rest = drain(*s);
  EXPECT_EQ(rest.finish[0], "abort");
  EXPECT_LT(rest.tokens[0].size() + first->new_token_ids.size(), 250u);
  for (int i = 0; i < 15; ++i) engine.abort(numbered("ballast", static_cast<size_t>(i)));
  for (auto& b : ballast) drain(*b);

  SamplingParams p = greedy(5);
  p.n = 3;
  Drained fan = drain(*engine.add_request("fan", prompt_for(2), p));
  ASSERT_EQ(fan.tokens.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(fan.tokens[i], fan.tokens[0]);  // greedy: every completion is the same
    EXPECT_EQ(fan.finish[i], "length");
  }
}

TEST(AsyncEngine, RejectsBadInputSynchronouslyAndEndsStreamsOnShutdown) {
  auto engine = std::make_unique<AsyncEngine>(LLMEngine::from_model_dir(fixture_dir("qwen3"), small_config()));
  EXPECT_THROW(engine->add_request("a", {}, greedy(3)), Error);
  EXPECT_THROW(engine->add_request("a", {600}, greedy(3)), Error);
  EXPECT_THROW(engine->add_request("a", std::vector<int32_t>(128, 5), greedy(3)), Error);
  SamplingParams bad = greedy(3);
  bad.temperature = -1.0f;
  EXPECT_THROW(engine->add_request("a", {5}, bad), Error);
  std::shared_ptr<RequestStream> s = engine->add_request("a", {5, 6}, greedy(100000));
  EXPECT_THROW(engine->add_request("a", {5, 6}, greedy(3)), Error);
  engine.reset();  // shutdown with "a" still running
  while (s->next()) {
  }
  EXPECT_TRUE(s->done());
  // Normally cut short; on a very slow machine it may have finished its 126 tokens first.
  EXPECT_TRUE(s->error() == "engine shut down" || (s->error().empty() && s->all_finished())) << s->error();
}

}  // namespace
}  // namespace pagoda
