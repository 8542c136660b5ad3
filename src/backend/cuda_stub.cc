// make_cuda_backend() / cuda_device_count() for builds without the CUDA backend (PAGODA_CUDA=OFF
// or no nvcc). With CUDA, src/backend/cuda/cuda_backend.cc defines them and this file is empty.
#include "backend/backend.h"
#include "base/error.h"

#ifndef PAGODA_HAVE_CUDA

namespace pagoda {

std::unique_ptr<Backend> make_cuda_backend(int) {
  fail("this pagoda was built without CUDA (-DPAGODA_CUDA=ON and nvcc needed)");
}

int cuda_device_count() { return 0; }

}  // namespace pagoda

#endif  // PAGODA_HAVE_CUDA
