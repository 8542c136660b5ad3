// make_backend() for the test binary that runs on the emulated CUDA backend: the test sources
// compiled into it call make_emulated_backend (CMake renames make_backend there), which gives
// "cuda" / "cuda:0" the CUDA backend built against the host emulation of the runtime.
#include <memory>
#include <string>

#include "backend/backend.h"
#include "base/error.h"

namespace pagoda {

std::unique_ptr<Backend> make_emulated_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  PAGODA_CHECK(device == "cuda" || device == "cuda:0", "emulated CUDA: no device '", device, "'");
  return make_emulated_cuda_backend(0);
}

}  // namespace pagoda
