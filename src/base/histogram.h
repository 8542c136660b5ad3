// A Prometheus histogram: fixed upper bounds, observed from any thread (one small lock), rendered
// in the text exposition format (_bucket cumulative per bound and +Inf, _sum, _count).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace pagoda {

class Histogram {
 public:
  explicit Histogram(std::vector<double> buckets) : buckets_(std::move(buckets)), counts_(buckets_.size() + 1, 0) {}
  void observe(double v);
  // "# HELP" / "# TYPE" lines and the _bucket / _sum / _count series.
  void render(std::string& out, const std::string& name, const std::string& help, const std::string& labels) const;
  uint64_t count() const;
  double sum() const;

 private:
  std::vector<double> buckets_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last: +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// vLLM's request latency buckets (seconds): e2e latency and the request-phase histograms.
std::vector<double> request_latency_buckets();

// "%.17g": a double that reads back exactly (the exposition format's numbers).
std::string prometheus_number(double v);

}  // namespace pagoda
