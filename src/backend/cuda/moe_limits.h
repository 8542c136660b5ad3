// Limits the CUDA mixture-of-experts kernels rely on (moe_kernels.cuh; the caller checks them).
#pragma once

#include <cstdint>

namespace pagoda::cuda {

constexpr int64_t kMoeMaxExperts = 1024;  // one sort block: one expert per thread in the scan
constexpr int64_t kMoeMaxTopK = 64;
constexpr int64_t kMoeRouteMaxExperts = 8192;  // the probabilities of a token sit in shared memory

}  // namespace pagoda::cuda
