// Rules of the CUDA kernel sources that no run on the emulation can check:
//  - every kernel (__global__ function in src/backend/cuda/*.cuh) starts with
//    PAGODA_GRID_DEPENDENCY_WAIT(): with PAGODA_CUDA_PDL=on a kernel may be scheduled before the
//    previous one on the stream has finished, and a kernel that reads before waiting races with
//    it (on a GPU only, and only sometimes);
//  - kernels are launched through PAGODA_LAUNCH, never a raw <<<>>> (which builds neither for the
//    emulation nor as a programmatic dependent launch).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> cuda_sources(const char* ext) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fs::path(PAGODA_SOURCE_DIR) / "src" / "backend" / "cuda"))
    if (e.path().extension() == ext) out.push_back(e.path());
  return out;
}

TEST(CudaKernelSource, EveryKernelWaitsForThePreviousGridFirst) {
  int kernels = 0;
  for (const fs::path& p : cuda_sources(".cuh")) {
    const std::string s = read_file(p);
    for (size_t at = s.find("__global__"); at != std::string::npos; at = s.find("__global__", at + 1)) {
      // The body opens at the first '{' after the parameter list's closing parenthesis.
      size_t paren = s.find('(', at);
      ASSERT_NE(paren, std::string::npos);
      int depth = 0;
      size_t i = paren;
      for (; i < s.size(); ++i) {
        if (s[i] == '(') ++depth;
        if (s[i] == ')' && --depth == 0) break;
      }
      // __launch_bounds__(...) comes before the name: skip to the parameter list after it.
      if (s.compare(paren - std::string("__launch_bounds__").size(), 17, "__launch_bounds__") == 0) {
        paren = s.find('(', i + 1);
        depth = 0;
        for (i = paren; i < s.size(); ++i) {
          if (s[i] == '(') ++depth;
          if (s[i] == ')' && --depth == 0) break;
        }
      }
      const size_t body = s.find('{', i);
      ASSERT_NE(body, std::string::npos);
      size_t first = body + 1;
      while (first < s.size() && std::isspace(static_cast<unsigned char>(s[first]))) ++first;
      const size_t line = static_cast<size_t>(std::count(s.begin(), s.begin() + static_cast<long>(at), '\n')) + 1;
      EXPECT_EQ(s.compare(first, 30, "PAGODA_GRID_DEPENDENCY_WAIT();"), 0)
          << p.filename().string() << ":" << line << ": a kernel whose first statement is not PAGODA_GRID_DEPENDENCY_WAIT()";
      ++kernels;
    }
  }
  EXPECT_GE(kernels, 25) << "kernels found";
}

TEST(CudaKernelSource, LaunchesGoThroughPagodaLaunch) {
  for (const char* ext : {".cu", ".cuh", ".cc", ".h"})
    for (const fs::path& p : cuda_sources(ext)) {
      const std::string s = read_file(p);
      size_t at = s.find("<<<");
      // kernel_macros.cuh / cuda_common.h define the launch itself.
      const std::string name = p.filename().string();
      if (name == "kernel_macros.cuh" || name == "cuda_common.h") continue;
      EXPECT_EQ(at, std::string::npos) << name << ": a raw <<<>>> launch; use PAGODA_LAUNCH";
    }
}

}  // namespace
