// AsyncEngine (vLLM's AsyncLLM, in process): the engine loop on its own thread, fed by a queue.
// Any thread may add and abort requests; each request's outputs arrive on its own RequestStream.
// Threads meet only at the queue (AsyncEngine's mutex) and at each stream's mutex: the engine
// thread alone touches the LLMEngine.
//
// Bad input is rejected synchronously by add_request (pagoda::Error naming the field), so an
// HTTP handler can answer 400 before it opens a stream. If a step throws (a bug or a backend
// failure), the engine is dead: every open stream ends with that error and is_dead() turns true.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/llm_engine.h"

namespace pagoda {

// The outputs of one request (all n completions), in order. Thread-safe.
class RequestStream {
 public:
  explicit RequestStream(int n) : remaining_(n) {}

  // Blocks until the next output; nullopt once every completion finished (or the stream failed:
  // then error() says why).
  std::optional<RequestOutput> next();
  // The next output if one is ready.
  std::optional<RequestOutput> try_next();
  // Every completion finished and every output was taken (or the stream failed).
  bool done() const;
  // Every completion finished (outputs may still be queued).
  bool all_finished() const;
  std::string error() const;

  // Called after every push() and fail(), on the pushing thread (the engine thread) and outside
  // the stream's lock: it must only hand work off (the server queues the request for an output
  // thread). Set it before the first output can arrive; a push that came earlier is not lost
  // (try_next still has it) but was not signalled, so the setter should poll once afterwards.
  void set_notify(std::function<void()> notify);

  // Engine side.
  void push(RequestOutput output);
  void fail(const std::string& message);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  int remaining_;  // completions not finished yet
  std::string error_;
  std::function<void()> notify_;
};

class AsyncEngine {
 public:
  // Starts the engine thread.
  explicit AsyncEngine(std::unique_ptr<LLMEngine> engine);
  // Stops the thread; open streams end with the error "engine shut down".
  ~AsyncEngine();
  AsyncEngine(const AsyncEngine&) = delete;
  AsyncEngine& operator=(const AsyncEngine&) = delete;

  // Validates and queues the request; throws pagoda::Error on bad input, a request id in use, or
  // a dead engine.
  std::shared_ptr<RequestStream> add_request(const std::string& request_id, std::vector<int32_t> prompt_token_ids,
                                             const SamplingParams& params, int priority = 0);
  // Its stream ends with finish_reason "abort" (unless it finished first). Unknown ids: no-op.
  void abort(const std::string& request_id);

  bool is_dead() const;
  // A snapshot taken after the latest step.
  EngineStats stats() const;
  // The engine's histograms (thread-safe to read while the engine runs).
  const EngineMetrics& metrics() const { return engine_->metrics(); }
  const EngineConfig& config() const { return config_; }
  int64_t vocab_size() const { return vocab_size_; }

 private:
  void loop();
  void fail_all(const std::string& message);

  std::unique_ptr<LLMEngine> engine_;
  const EngineConfig config_;
  const int64_t vocab_size_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Pending {
    std::string request_id;
    std::vector<int32_t> prompt;
    SamplingParams params;
    int priority = 0;
    std::chrono::steady_clock::time_point arrival;
  };
  std::vector<Pending> pending_adds_;
  std::vector<std::string> pending_aborts_;
  std::unordered_map<std::string, std::shared_ptr<RequestStream>> streams_;  // open requests
  EngineStats stats_;
  bool stop_ = false;
  bool dead_ = false;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace pagoda
