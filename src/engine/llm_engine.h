// LLMEngine (vLLM's LLMEngine, offline / synchronous): requests in, per-step token news out.
// It wraps an EngineCore and adds what sits around it in vLLM: parallel sampling (n > 1 fans a
// request out into n child requests, which share the prompt's KV blocks through the prefix
// cache) and, optionally, ownership of the backend and model. Token ids only; detokenization and
// stop strings belong to the OutputProcessor.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "engine/engine_core.h"
#include "engine/sampling_params.h"
#include "model/model.h"

namespace pagoda {

struct RequestOutput {
  std::string request_id;  // as given to add_request
  int index = 0;           // which of the n completions (0 when n == 1)
  std::vector<int32_t> new_token_ids;
  std::vector<SampledToken> new_logprobs;  // parallel to new_token_ids when params.logprobs is set
  // The next prompt positions' logprobs (see EngineCoreOutput); only on index 0 with n > 1.
  std::vector<SampledToken> new_prompt_logprobs;
  bool finished = false;
  std::string finish_reason;           // "stop" | "length" | "abort" when finished
  std::optional<int32_t> stop_reason;  // the stop token id that finished it (EOS: none)
  int num_cached_tokens = 0;           // prompt tokens served by the prefix cache
};

class LLMEngine {
 public:
  // Serves `model` (which must outlive the engine and have been loaded with
  // engine_load_options(config)).
  LLMEngine(CausalLM& model, Backend& backend, const EngineConfig& config);
  // Loads the checkpoint on the CPU backend; EOS ids come from config.json and
  // generation_config.json unless config.eos_token_ids is set.
  static std::unique_ptr<LLMEngine> from_model_dir(const std::string& model_dir, EngineConfig config);
  ~LLMEngine();

  // Queues a request (params.n completions). Throws pagoda::Error naming the field on bad input;
  // nothing is queued then. arrival: when it reached the engine (the start of its queue time);
  // default now.
  void add_request(const std::string& request_id, const std::vector<int32_t>& prompt_token_ids,
                   const SamplingParams& params, int priority = 0,
                   std::chrono::steady_clock::time_point arrival = {});
  // Finishes every completion of the request; each reports finish_reason "abort" from the next
  // step(). Unknown ids are ignored.
  void abort(const std::string& request_id);
  std::vector<RequestOutput> step();
  bool has_unfinished() const { return core_->has_unfinished_requests(); }
  bool reset_prefix_cache() { return core_->reset_prefix_cache(); }

  EngineStats stats() const { return core_->stats(); }
  const EngineCore& core() const { return *core_; }
  const EngineConfig& config() const { return core_->config(); }
  const EngineMetrics& metrics() const { return core_->metrics(); }

 private:
  struct Child {
    std::string parent_id;
    int index = 0;
  };
  std::unique_ptr<Backend> owned_backend_;
  std::unique_ptr<CausalLM> owned_model_;
  std::unique_ptr<EngineCore> core_;
  std::unordered_map<std::string, Child> children_;                     // core request id -> parent
  std::unordered_map<std::string, std::vector<std::string>> parents_;  // parent id -> core ids
};

}  // namespace pagoda
