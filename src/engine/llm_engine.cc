#include "engine/llm_engine.h"

#include <algorithm>
#include <utility>

#include "backend/device.h"
#include "base/error.h"
#include "io/model_config.h"

namespace pagoda {

LLMEngine::LLMEngine(CausalLM& model, Backend& backend, const EngineConfig& config)
    : core_(std::make_unique<EngineCore>(model, backend, config)) {}

LLMEngine::~LLMEngine() = default;

std::unique_ptr<LLMEngine> LLMEngine::from_model_dir(const std::string& model_dir, EngineConfig config) {
  if (config.eos_token_ids.empty()) {
    const ModelConfig mc = load_model_config(model_dir);
    const GenerationConfig gc = load_generation_config(model_dir);
    for (const std::vector<int64_t>* ids : {&mc.eos_token_ids, &gc.eos_token_ids})
      for (int64_t id : *ids)
        if (std::ranges::find(config.eos_token_ids, static_cast<int32_t>(id)) == config.eos_token_ids.end())
          config.eos_token_ids.push_back(static_cast<int32_t>(id));
  }
  std::unique_ptr<Backend> backend = make_backend(config.device);
  std::unique_ptr<CausalLM> model = load_model(model_dir, *backend, engine_load_options(config));
  auto engine = std::make_unique<LLMEngine>(*model, *backend, config);
  engine->owned_backend_ = std::move(backend);
  engine->owned_model_ = std::move(model);
  return engine;
}

void LLMEngine::add_request(const std::string& request_id, const std::vector<int32_t>& prompt_token_ids,
                            const SamplingParams& params, int priority,
                            std::chrono::steady_clock::time_point arrival) {
  PAGODA_CHECK(params.n >= 1, "n must be at least 1, got ", params.n);
  PAGODA_CHECK(!parents_.contains(request_id), "request id '", request_id, "' is already in use");
  std::vector<std::string> ids;
  for (int i = 0; i < params.n; ++i) {
    // vLLM names the children "<index>_<parent id>".
    ids.push_back(params.n == 1 ? request_id : std::to_string(i) + "_" + request_id);
    PAGODA_CHECK(!children_.contains(ids.back()), "request id '", ids.back(), "' is already in use");
  }
  for (int i = 0; i < params.n; ++i) {
    EngineCoreRequest r;
    r.request_id = ids[static_cast<size_t>(i)];
    r.prompt_token_ids = prompt_token_ids;
    r.params = params;
    r.params.n = 1;
    // Each child draws its own stream; seed + index keeps a seeded request reproducible.
    if (params.seed && i > 0) r.params.seed = *params.seed + static_cast<uint64_t>(i);
    // The prompt's logprobs are the same for every completion: only the first computes them (the
    // others can then read the prompt from the prefix cache).
    if (i > 0) r.params.prompt_logprobs.reset();
    r.priority = priority;
    r.arrival_time = arrival;
    try {
      core_->add_request(std::move(r));
    } catch (...) {
      for (int j = 0; j < i; ++j) core_->abort(ids[static_cast<size_t>(j)]);
      // The aborted children's outputs must not surface: they belong to a request that failed.
      for (int j = 0; j < i; ++j) children_.erase(ids[static_cast<size_t>(j)]);
      throw;
    }
    children_[ids[static_cast<size_t>(i)]] = Child{request_id, i};
  }
  parents_[request_id] = std::move(ids);
}

void LLMEngine::abort(const std::string& request_id) {
  auto it = parents_.find(request_id);
  if (it == parents_.end()) return;
  for (const std::string& id : it->second) core_->abort(id);
}

std::vector<RequestOutput> LLMEngine::step() {
  std::vector<RequestOutput> outs;
  for (EngineCoreOutput& o : core_->step()) {
    auto it = children_.find(o.request_id);
    if (it == children_.end()) continue;  // a child of a request whose add_request failed
    RequestOutput r;
    r.request_id = it->second.parent_id;
    r.index = it->second.index;
    r.new_token_ids = std::move(o.new_token_ids);
    r.new_logprobs = std::move(o.new_logprobs);
    r.new_prompt_logprobs = std::move(o.new_prompt_logprobs);
    r.finished = o.finished;
    r.finish_reason = std::move(o.finish_reason);
    r.stop_reason = o.stop_reason;
    r.num_cached_tokens = o.num_cached_tokens;
    if (o.finished) {
      std::vector<std::string>& siblings = parents_[r.request_id];
      std::erase(siblings, o.request_id);
      if (siblings.empty()) parents_.erase(r.request_id);
      children_.erase(it);
    }
    outs.push_back(std::move(r));
  }
  return outs;
}

}  // namespace pagoda
