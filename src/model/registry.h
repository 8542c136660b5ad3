// Architectures by config.json model_type. load_model (model.h) looks the type up here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/checkpoint.h"
#include "model/model.h"

namespace pagoda {

using ModelFactory = std::unique_ptr<CausalLM> (*)(ModelConfig config, std::unique_ptr<Checkpoint> checkpoint,
                                                   Backend& backend, const ModelLoadOptions& options);

// The factory for model_type, or nullptr if no architecture handles it.
ModelFactory find_model_factory(const std::string& model_type);
// Every model_type the registry knows, sorted.
std::vector<std::string> supported_model_types();

}  // namespace pagoda
