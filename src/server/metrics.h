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

#include "engine/engine_core.h"

namespace pagoda {

class Histogram {
 public:
  explicit Histogram(std::vector<double> buckets) : buckets_(std::move(buckets)), counts_(buckets_.size() + 1, 0) {}
  void observe(double v);
  // "# TYPE" line and the _bucket / _sum / _count series.
  void render(std::string& out, const std::string& name, const std::string& help, const std::string& labels) const;

 private:
  std::vector<double> buckets_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last: +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct ServerMetrics {
  ServerMetrics();
  std::string render(const std::string& model_name, const EngineStats& stats) const;
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

}  // namespace pagoda
