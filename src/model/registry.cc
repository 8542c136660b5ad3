#include "model/registry.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "base/error.h"
#include "base/log.h"
#include "model/decoder_lm.h"
#include "model/hybrid_lm.h"

namespace pagoda {
namespace {

// An explicit table rather than self-registering static objects: those live in object files of
// a static library that nothing references, and the linker would drop them.
const std::map<std::string, ModelFactory>& registry() {
  static const std::map<std::string, ModelFactory> table = {
      {"llama", &make_decoder_lm},
      {"qwen2", &make_decoder_lm},
      {"qwen3", &make_decoder_lm},
      {"qwen3_moe", &make_decoder_lm},
      {"qwen3_next", &make_hybrid_lm},
      {"qwen3_5", &make_hybrid_lm},
      {"qwen3_5_moe", &make_hybrid_lm},
  };
  return table;
}

}  // namespace

ModelFactory find_model_factory(const std::string& model_type) {
  const auto it = registry().find(model_type);
  return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const auto& [name, factory] : registry()) out.push_back(name);
  return out;
}

std::unique_ptr<CausalLM> load_model(const std::string& model_dir, Backend& backend, const ModelLoadOptions& options) {
  ModelConfig config = load_model_config(model_dir);
  const ModelFactory factory = find_model_factory(config.model_type);
  if (factory == nullptr) {
    std::string known;
    for (const std::string& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
    fail(model_dir, "/config.json: model_type \"", config.model_type, "\" is not supported; supported: ", known);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto checkpoint = std::make_unique<Checkpoint>(model_dir);
  const double gb = static_cast<double>(checkpoint->total_bytes()) / 1e9;
  std::unique_ptr<CausalLM> model = factory(std::move(config), std::move(checkpoint), backend, options);
  backend.weights_loaded();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log_info("loaded ", model_dir, " on ", backend.name(), ": ", fixed(gb, 2), " GB of tensors in ", fixed(s, 2), " s (",
           fixed(gb / std::max(s, 1e-9), 1), " GB/s)");
  return model;
}

}  // namespace pagoda
