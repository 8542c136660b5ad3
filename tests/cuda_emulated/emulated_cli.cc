// pagoda_emulated: the pagoda CLI whose --device cuda is the CUDA backend on the host emulation
// of the CUDA runtime (a dry run of the GPU paths of generate / bench / serve on the CPU, e.g. of
// tools/gpu_run.sh's commands on tiny checkpoints). These definitions take the place of the real
// backend's make_cuda_backend / cuda_device_count at link time (an object file of the executable
// wins over the archive member, which is then never pulled in).
#include <memory>

#include "backend/backend.h"

namespace pagoda {

std::unique_ptr<Backend> make_emulated_cuda_backend(int device);
int emulated_cuda_device_count();

std::unique_ptr<Backend> make_cuda_backend(int device) { return make_emulated_cuda_backend(device); }
int cuda_device_count() { return emulated_cuda_device_count(); }

}  // namespace pagoda
