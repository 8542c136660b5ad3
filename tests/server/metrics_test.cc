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

}  // namespace
}  // namespace pagoda
