// libFuzzer target for the safetensors parser: any byte string must either parse into tensors
// whose every byte is readable (ASan catches an out-of-bounds view) or raise pagoda::Error.
// Any other exception escaping (e.g. a raw nlohmann::json exception) aborts the run as a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>

#include "base/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tensors = pagoda::parse_safetensors(data, size, "fuzz.safetensors");
    volatile uint64_t sum = 0;
    for (const auto& [name, info] : tensors) {
      for (size_t i = 0; i < info.nbytes; ++i) sum = sum + info.data[i];
      try {
        const pagoda::Tensor t = info.view();
        if (t.nbytes() != info.nbytes) std::abort();  // the view must describe exactly the checked bytes
      } catch (const pagoda::Error&) {
        // more than kMaxDims dimensions: a documented, clean rejection
      }
    }
  } catch (const pagoda::Error&) {
    // rejected input: the expected outcome for most mutations
  } catch (const std::exception&) {
    std::abort();
  }
  return 0;
}
