#include "engine/async_engine.h"

#include <exception>
#include <utility>

#include "base/error.h"

namespace pagoda {

// ---- RequestStream -----------------------------------------------------------------------

std::optional<RequestOutput> RequestStream::next() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || remaining_ == 0 || !error_.empty(); });
  if (queue_.empty()) return std::nullopt;
  RequestOutput o = std::move(queue_.front());
  queue_.pop_front();
  return o;
}

std::optional<RequestOutput> RequestStream::try_next() {
  std::lock_guard lock(mu_);
  if (queue_.empty()) return std::nullopt;
  RequestOutput o = std::move(queue_.front());
  queue_.pop_front();
  return o;
}

bool RequestStream::all_finished() const {
  std::lock_guard lock(mu_);
  return remaining_ == 0;
}

bool RequestStream::done() const {
  std::lock_guard lock(mu_);
  return queue_.empty() && (remaining_ == 0 || !error_.empty());
}

std::string RequestStream::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

void RequestStream::set_notify(std::function<void()> notify) {
  std::lock_guard lock(mu_);
  notify_ = std::move(notify);
}

void RequestStream::push(RequestOutput output) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mu_);
    if (output.finished && remaining_ > 0) --remaining_;
    queue_.push_back(std::move(output));
    notify = notify_;
  }
  cv_.notify_all();
  if (notify) notify();
}

void RequestStream::fail(const std::string& message) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mu_);
    if (error_.empty()) error_ = message.empty() ? "engine error" : message;
    notify = notify_;
  }
  cv_.notify_all();
  if (notify) notify();
}

// ---- AsyncEngine -------------------------------------------------------------------------

AsyncEngine::AsyncEngine(std::unique_ptr<LLMEngine> engine)
    : engine_(std::move(engine)),
      config_(engine_->config()),
      vocab_size_(engine_->core().vocab_size()),
      stats_(engine_->stats()),
      thread_([this] { loop(); }) {}

AsyncEngine::~AsyncEngine() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  fail_all("engine shut down");
}

std::shared_ptr<RequestStream> AsyncEngine::add_request(const std::string& request_id,
                                                        std::vector<int32_t> prompt_token_ids,
                                                        const SamplingParams& params, int priority) {
  // What the engine would reject, checked here so that the caller hears of it at once.
  params.validate(vocab_size_);
  PAGODA_CHECK(params.n >= 1, "n must be at least 1, got ", params.n);
  PAGODA_CHECK(!prompt_token_ids.empty(), "the prompt is empty");
  for (int32_t id : prompt_token_ids)
    PAGODA_CHECK(id >= 0 && id < vocab_size_, "prompt token id ", id, " is outside the vocabulary [0, ", vocab_size_,
                 ")");
  const int prompt_len = static_cast<int>(prompt_token_ids.size());
  PAGODA_CHECK(prompt_len < config_.max_model_len, "This model's maximum context length is ", config_.max_model_len,
               " tokens. However, your request has ", prompt_len, " input tokens. Please reduce the length of the ",
               "input messages.");
  auto stream = std::make_shared<RequestStream>(params.n);
  {
    std::lock_guard lock(mu_);
    PAGODA_CHECK(!dead_ && !stop_, "the engine is not running");
    PAGODA_CHECK(!streams_.contains(request_id), "request id '", request_id, "' is already in use");
    streams_.emplace(request_id, stream);
    pending_adds_.push_back(
        {request_id, std::move(prompt_token_ids), params, priority, std::chrono::steady_clock::now()});
  }
  cv_.notify_all();
  return stream;
}

void AsyncEngine::abort(const std::string& request_id) {
  {
    std::lock_guard lock(mu_);
    if (!streams_.contains(request_id)) return;
    pending_aborts_.push_back(request_id);
  }
  cv_.notify_all();
}

bool AsyncEngine::is_dead() const {
  std::lock_guard lock(mu_);
  return dead_;
}

EngineStats AsyncEngine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void AsyncEngine::fail_all(const std::string& message) {
  std::unordered_map<std::string, std::shared_ptr<RequestStream>> streams;
  {
    std::lock_guard lock(mu_);
    streams.swap(streams_);
  }
  for (auto& [id, s] : streams) s->fail(message);
}

void AsyncEngine::loop() {
  try {
    for (;;) {
      std::vector<Pending> adds;
      std::vector<std::string> aborts;
      {
        std::unique_lock lock(mu_);
        // Only this thread touches engine_, so reading it under our own lock is safe.
        cv_.wait(lock, [&] {
          return stop_ || !pending_adds_.empty() || !pending_aborts_.empty() || engine_->has_unfinished();
        });
        if (stop_) return;
        adds.swap(pending_adds_);
        aborts.swap(pending_aborts_);
      }
      for (Pending& p : adds) {
        try {
          engine_->add_request(p.request_id, p.prompt, p.params, p.priority, p.arrival);
        } catch (const Error& e) {
          std::shared_ptr<RequestStream> s;
          {
            std::lock_guard lock(mu_);
            auto it = streams_.find(p.request_id);
            if (it != streams_.end()) {
              s = it->second;
              streams_.erase(it);
            }
          }
          if (s) s->fail(e.what());
        }
      }
      for (const std::string& id : aborts) engine_->abort(id);
      if (!engine_->has_unfinished()) continue;

      std::vector<RequestOutput> outs = engine_->step();
      const EngineStats st = engine_->stats();
      std::vector<std::pair<std::shared_ptr<RequestStream>, RequestOutput>> deliveries;
      {
        std::lock_guard lock(mu_);
        stats_ = st;
        for (RequestOutput& o : outs) {
          auto it = streams_.find(o.request_id);
          if (it == streams_.end()) continue;
          std::shared_ptr<RequestStream> s = it->second;
          deliveries.emplace_back(s, std::move(o));
        }
      }
      // Streams are fed outside the engine lock. A stream whose every completion finished is
      // forgotten (its request id may be used again).
      for (auto& [stream, o] : deliveries) {
        const std::string id = o.request_id;
        stream->push(std::move(o));
        if (!stream->all_finished()) continue;
        std::lock_guard lock(mu_);
        auto it = streams_.find(id);
        if (it != streams_.end() && it->second == stream) streams_.erase(it);
      }
    }
  } catch (const std::exception& e) {
    {
      std::lock_guard lock(mu_);
      dead_ = true;
    }
    fail_all(std::string("engine error: ") + e.what());
  }
}

}  // namespace pagoda
