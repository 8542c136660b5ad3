#include "backend/device.h"

#include <cerrno>
#include <cctype>
#include <cstdlib>

#include "base/error.h"

namespace pagoda {

std::unique_ptr<Backend> make_cuda_backend(int device);
int cuda_device_count();

namespace {

// -1: cpu; otherwise the CUDA device index.
int parse_device(const std::string& device) {
  if (device == "cpu") return -1;
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5) {
    const std::string idx = device.substr(5);
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(idx.c_str(), &end, 10);
    if (errno == 0 && end != nullptr && *end == '\0' && v >= 0 && v < 1024 && std::isdigit(static_cast<unsigned char>(idx[0])))
      return static_cast<int>(v);
  }
  fail("--device must be cpu, cuda or cuda:N, got '", device, "'");
}

}  // namespace

void check_device_name(const std::string& device) { (void)parse_device(device); }

std::unique_ptr<Backend> make_backend(const std::string& device) {
  const int idx = parse_device(device);
  if (idx < 0) return make_cpu_backend();
  const int n = cuda_device_count();
  PAGODA_CHECK(idx < n, "--device ", device, ": ", n == 0 ? "no CUDA device is visible (or this build has no CUDA)"
                                                          : "only " + std::to_string(n) + " CUDA device(s) are visible");
  return make_cuda_backend(idx);
}

}  // namespace pagoda
