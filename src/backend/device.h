// Choosing a backend by device name, as the --device flag spells it.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"

namespace pagoda {

// "cpu" (the default everywhere), "cuda" (GPU 0) or "cuda:N". Throws pagoda::Error naming the
// device when it is unknown, when this build has no CUDA, or when the GPU is absent.
std::unique_ptr<Backend> make_backend(const std::string& device);

// Checks the spelling only (for flag validation before anything is loaded).
void check_device_name(const std::string& device);

}  // namespace pagoda
