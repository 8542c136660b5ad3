// Prometheus metrics of the server, named as vLLM's with a "pagoda:" prefix (API.md), labelled
// model_name and engine. Counters and histograms are updated from any thread (atomics and one
// small lock per histogram); render() writes the text exposition format.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "base/histogram.h"
#include "engine/engine_core.h"

namespace pagoda {

struct ServerMetrics {
  ServerMetrics();
  // The server's own series, then the engine's gauges, counters and histograms.
  std::string render(const std::string& model_name, const EngineStats& stats, const EngineMetrics& engine) const;
  void record_finish(const std::string& finish_reason);

  Histogram ttft, itl, tpot, e2e, prompt_tokens, generation_tokens;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> success;  // finished_reason -> count
};

// The periodic log line of `pagoda serve` (vLLM's "Avg prompt throughput: ..." line): prompt and
// generation tokens/s over the interval from `before` to `now` (`seconds` long), requests running
// and waiting, KV-cache usage and the prefix-cache hit rate since start. Empty when the engine
// was idle over this interval and has nothing in flight (vLLM logs those at debug level only).
std::string stats_log_line(const EngineStats& before, const EngineStats& now, double seconds);

// vLLM's speculative-decoding line for the same interval: mean acceptance length (1 + accepted /
// drafts), accepted and drafted tokens/s and counts, the acceptance rate per draft position and
// overall. Empty when no draft was verified over the interval.
std::string spec_decoding_log_line(const EngineStats& before, const EngineStats& now, double seconds);

}  // namespace pagoda
