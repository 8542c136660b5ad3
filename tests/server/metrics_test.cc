// The periodic stats line of `pagoda serve` (stats_log_line): rates over the interval, gauges
// from the newer snapshot, and silence while the engine is idle.
#include <gtest/gtest.h>

#include <string>

#include "server/metrics.h"

namespace pagoda {
namespace {

TEST(StatsLogLine, RatesOverTheIntervalAndGaugesFromNow) {
  EngineStats before, now;
  before.num_prompt_tokens = 100;
  before.num_generation_tokens = 40;
  now.num_prompt_tokens = 350;       // +250 in 2.5 s: 100 tokens/s
  now.num_generation_tokens = 65;    // +25 in 2.5 s: 10 tokens/s
  now.num_running = 3;
  now.num_waiting = 2;
  now.kv_cache_usage = 0.125;
  now.prefix_cache.queries = 400;
  now.prefix_cache.hits = 100;
  EXPECT_EQ(stats_log_line(before, now, 2.5),
            "Avg prompt throughput: 100.0 tokens/s, Avg generation throughput: 10.0 tokens/s, Running: 3 reqs, "
            "Waiting: 2 reqs, KV cache usage: 12.5%, Prefix cache hit rate: 25.0%");
}

TEST(StatsLogLine, SilentOnlyWhenIdleWithNothingInFlight) {
  EngineStats s;
  s.num_prompt_tokens = 7;
  s.num_generation_tokens = 9;
  EXPECT_EQ(stats_log_line(s, s, 10.0), "");
  EngineStats waiting = s;
  waiting.num_waiting = 1;  // queued but not yet scheduled: still worth a line
  EXPECT_NE(stats_log_line(s, waiting, 10.0), "");
  EngineStats generated = s;
  generated.num_generation_tokens += 1;  // finished within the interval
  EXPECT_NE(stats_log_line(s, generated, 10.0).find("Avg generation throughput: 0.1 tokens/s"), std::string::npos);
}

TEST(SpecDecodingLogLine, VllmFieldsOverTheInterval) {
  EngineStats before, now;
  before.spec_decoding = {10, 30, 12, {8, 4, 0}};
  // +20 drafts of 3 tokens in 2 s, 30 of the 60 drafted accepted: 15 at position 0, 10 at 1, 5 at 2.
  now.spec_decoding = {30, 90, 42, {23, 14, 5}};
  EXPECT_EQ(spec_decoding_log_line(before, now, 2.0),
            "SpecDecoding metrics: Mean acceptance length: 2.50, Accepted throughput: 15.00 tokens/s, Drafted "
            "throughput: 30.00 tokens/s, Accepted: 30 tokens, Drafted: 60 tokens, Per-position acceptance rate: "
            "0.750, 0.500, 0.250, Avg Draft acceptance rate: 50.0%");
  EXPECT_EQ(spec_decoding_log_line(now, now, 2.0), "");  // no draft verified in the interval
}

}  // namespace
}  // namespace pagoda
