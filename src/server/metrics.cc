#include "server/metrics.h"

#include <cstdio>

namespace pagoda {
namespace {

std::vector<double> token_buckets() {
  std::vector<double> b;
  for (double x = 1; x <= 1 << 20; x *= 2) b.push_back(x);
  return b;
}

}  // namespace

ServerMetrics::ServerMetrics()
    : ttft({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
            80.0, 160.0, 640.0, 2560.0}),
      itl({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}),
      tpot({0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}),
      e2e(request_latency_buckets()),
      prompt_tokens(token_buckets()),
      generation_tokens(token_buckets()) {}

void ServerMetrics::record_finish(const std::string& finish_reason) {
  std::lock_guard lock(mu_);
  ++success[finish_reason];
}

std::string stats_log_line(const EngineStats& before, const EngineStats& now, double seconds) {
  const int64_t prompt = now.num_prompt_tokens - before.num_prompt_tokens;
  const int64_t generated = now.num_generation_tokens - before.num_generation_tokens;
  if (prompt == 0 && generated == 0 && now.num_running == 0 && now.num_waiting == 0) return "";
  const double s = seconds > 0 ? seconds : 1.0;
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, Running: %d reqs, "
                "Waiting: %d reqs, KV cache usage: %.1f%%, Prefix cache hit rate: %.1f%%",
                static_cast<double>(prompt) / s, static_cast<double>(generated) / s, now.num_running,
                now.num_waiting, 100.0 * now.kv_cache_usage, 100.0 * now.prefix_cache.hit_rate());
  return buf;
}

std::string spec_decoding_log_line(const EngineStats& before, const EngineStats& now, double seconds) {
  const SpecDecodingStats& b = before.spec_decoding;
  const SpecDecodingStats& n = now.spec_decoding;
  const int64_t drafts = n.num_drafts - b.num_drafts;
  if (drafts <= 0) return "";
  const auto drafted = static_cast<double>(n.num_draft_tokens - b.num_draft_tokens);
  const auto accepted = static_cast<double>(n.num_accepted_tokens - b.num_accepted_tokens);
  const double s = seconds > 0 ? seconds : 1.0;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "SpecDecoding metrics: Mean acceptance length: %.2f, Accepted throughput: %.2f tokens/s, Drafted "
                "throughput: %.2f tokens/s, Accepted: %.0f tokens, Drafted: %.0f tokens, Per-position acceptance rate: ",
                1.0 + accepted / static_cast<double>(drafts), accepted / s, drafted / s, accepted, drafted);
  std::string line = buf;
  for (size_t k = 0; k < n.accepted_per_pos.size(); ++k) {
    const int64_t was = k < b.accepted_per_pos.size() ? b.accepted_per_pos[k] : 0;
    std::snprintf(buf, sizeof buf, "%s%.3f", k ? ", " : "",
                  static_cast<double>(n.accepted_per_pos[k] - was) / static_cast<double>(drafts));
    line += buf;
  }
  std::snprintf(buf, sizeof buf, ", Avg Draft acceptance rate: %.1f%%", drafted > 0 ? 100.0 * accepted / drafted : 0.0);
  line += buf;
  return line;
}

std::string ServerMetrics::render(const std::string& model_name, const EngineStats& s,
                                  const EngineMetrics& engine) const {
  const std::string labels = "engine=\"0\",model_name=\"" + model_name + "\"";
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v) {
    out += std::string("# HELP pagoda:") + name + " " + help + "\n# TYPE pagoda:" + name + " gauge\npagoda:" + name +
           "{" + labels + "} " + prometheus_number(v) + "\n";
  };
  auto counter = [&](const char* name, const char* help, double v) {
    out += std::string("# HELP pagoda:") + name + "_total " + help + "\n# TYPE pagoda:" + name +
           "_total counter\npagoda:" + name + "_total{" + labels + "} " + prometheus_number(v) + "\n";
  };
  gauge("num_requests_running", "Number of requests in model execution batches.", s.num_running);
  gauge("num_requests_waiting", "Number of requests waiting to be processed.", s.num_waiting);
  gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", s.kv_cache_usage);
  counter("num_preemptions", "Cumulative number of preemption from the engine.", static_cast<double>(s.num_preemptions));
  counter("prompt_tokens", "Number of prefill tokens processed.", static_cast<double>(s.num_prompt_tokens));
  counter("generation_tokens", "Number of generation tokens processed.", static_cast<double>(s.num_generation_tokens));
  counter("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.",
          static_cast<double>(s.prefix_cache.queries));
  counter("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
          static_cast<double>(s.prefix_cache.hits));
  counter("spec_decode_num_drafts", "Number of spec decoding drafts.", static_cast<double>(s.spec_decoding.num_drafts));
  counter("spec_decode_num_draft_tokens", "Number of draft tokens.",
          static_cast<double>(s.spec_decoding.num_draft_tokens));
  counter("spec_decode_num_accepted_tokens", "Number of accepted tokens.",
          static_cast<double>(s.spec_decoding.num_accepted_tokens));
  if (!s.spec_decoding.accepted_per_pos.empty()) {
    out += "# HELP pagoda:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.\n"
           "# TYPE pagoda:spec_decode_num_accepted_tokens_per_pos_total counter\n";
    for (size_t k = 0; k < s.spec_decoding.accepted_per_pos.size(); ++k)
      out += "pagoda:spec_decode_num_accepted_tokens_per_pos_total{" + labels + ",position=\"" + std::to_string(k) +
             "\"} " + std::to_string(s.spec_decoding.accepted_per_pos[k]) + "\n";
  }
  {
    std::lock_guard lock(mu_);
    out += "# HELP pagoda:request_success_total Count of successfully processed requests.\n"
           "# TYPE pagoda:request_success_total counter\n";
    for (const char* reason : {"stop", "length", "abort", "tool_calls"}) {
      auto it = success.find(reason);
      out += std::string("pagoda:request_success_total{") + labels + ",finished_reason=\"" + reason + "\"} " +
             std::to_string(it == success.end() ? 0 : it->second) + "\n";
    }
  }
  ttft.render(out, "pagoda:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels);
  itl.render(out, "pagoda:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels);
  tpot.render(out, "pagoda:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
              labels);
  e2e.render(out, "pagoda:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels);
  prompt_tokens.render(out, "pagoda:request_prompt_tokens", "Number of prefill tokens processed.", labels);
  generation_tokens.render(out, "pagoda:request_generation_tokens", "Number of generation tokens processed.", labels);
  engine.queue_time.render(out, "pagoda:request_queue_time_seconds",
                           "Histogram of time spent in WAITING phase for request.", labels);
  engine.prefill_time.render(out, "pagoda:request_prefill_time_seconds",
                             "Histogram of time spent in PREFILL phase for request.", labels);
  engine.decode_time.render(out, "pagoda:request_decode_time_seconds",
                            "Histogram of time spent in DECODE phase for request.", labels);
  engine.inference_time.render(out, "pagoda:request_inference_time_seconds",
                               "Histogram of time spent in RUNNING phase for request.", labels);
  engine.iteration_tokens.render(out, "pagoda:iteration_tokens_total", "Histogram of number of tokens per engine_step.",
                                 labels);
  return out;
}

}  // namespace pagoda
