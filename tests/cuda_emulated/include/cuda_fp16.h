// F16 for the host emulation of the CUDA runtime: the type comes from tests/cuda/cuda_emu.h.
#pragma once

#include "cuda_runtime.h"
