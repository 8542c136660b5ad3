// Tensor: a non-owning, row-major, contiguous view of backend memory (host memory on the CPU
// backend, device memory on CUDA). Ops and model code pass these; ownership lives elsewhere
// (mmapped checkpoints, backend buffers, workspaces).
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "base/dtype.h"
#include "base/error.h"

namespace pagoda {

constexpr int kMaxDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  // Block-scaled weights (FP8 linears, dtype F8E4M3): element (n, k) of a [N, K] weight stands for
  // data[n, k] * scale[(n / scale_block_n) * ceil(K / scale_block_k) + k / scale_block_k], F32
  // scales in the same memory as data. nullptr: the elements are the values.
  const float* scale = nullptr;
  int32_t scale_block_n = 0;
  int32_t scale_block_k = 0;

  Tensor() = default;
  Tensor(void* d, DType t, std::initializer_list<int64_t> dims) : data(d), dtype(t) {
    PAGODA_ASSERT(dims.size() <= kMaxDims);
    for (int64_t v : dims) shape[ndim++] = v;
  }

  // Size of dimension i; negative i counts from the back.
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  // Product of all dimensions but the last (the number of rows of a 2-D view).
  int64_t rows() const { return ndim == 0 ? 1 : numel() / shape[ndim - 1]; }
  int64_t cols() const { return ndim == 0 ? 1 : shape[ndim - 1]; }

  template <class T>
  T* ptr() const { return static_cast<T*>(data); }

  // The same memory viewed with new dimensions (element count must match). A block-scaled
  // weight keeps its scales when its rows and columns stay the same.
  Tensor view(std::initializer_list<int64_t> dims) const {
    Tensor t(data, dtype, dims);
    PAGODA_ASSERT(t.numel() == numel());
    if (scale != nullptr) {
      PAGODA_ASSERT(t.cols() == cols());
      t.scale = scale;
      t.scale_block_n = scale_block_n;
      t.scale_block_k = scale_block_k;
    }
    return t;
  }
  // Rows [begin, end) of the leading dimension. A block-scaled 2-D weight is cut at a multiple of
  // its scale block rows (its scales are cut with it).
  Tensor slice_rows(int64_t begin, int64_t end) const {
    PAGODA_ASSERT(ndim >= 1 && begin >= 0 && begin <= end && end <= shape[0]);
    Tensor t = *this;
    if (scale != nullptr) {
      PAGODA_ASSERT(ndim == 2 && begin % scale_block_n == 0);
      t.scale = scale + (begin / scale_block_n) * ((shape[1] + scale_block_k - 1) / scale_block_k);
    }
    t.shape[0] = end - begin;
    t.data = static_cast<char*>(data) + static_cast<size_t>(begin) * (nbytes() / (shape[0] ? shape[0] : 1));
    return t;
  }
  std::string shape_string() const {
    std::string s = "[";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

}  // namespace pagoda
