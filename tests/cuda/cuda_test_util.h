// Helpers shared by the CUDA op tests (cuda_ops_test.cc, cuda_hybrid_test.cc): random inputs
// exactly representable in BF16, device tensors that own their buffers, uploads / downloads
// through the Backend interface, NaN poisoning of outputs, and the element-wise closeness check.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "../backend/test_util.h"
#include "backend/backend.h"
#include "base/dtype.h"

namespace pagoda::testing {

inline constexpr uint16_t kBf16NaN = 0x7fc0;

// Random floats in [lo, hi] rounded to BF16 (exactly representable in both backends).
inline std::vector<float> rand_bf16(int64_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

inline std::vector<float> rand_f32(int64_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A device tensor that owns its buffer.
struct Dev {
  DeviceBuffer buf;
  Tensor t;
};

inline Dev dev_alloc(Backend& b, DType dtype, std::initializer_list<int64_t> dims) {
  Tensor shape(nullptr, dtype, dims);
  Dev d;
  d.buf = b.allocate(shape.nbytes());
  d.t = shape;
  d.t.data = d.buf.data();
  return d;
}

// Uploads float values as dtype (BF16 / F32).
inline Dev upload(Backend& b, const std::vector<float>& v, DType dtype, std::initializer_list<int64_t> dims) {
  Dev d = dev_alloc(b, dtype, dims);
  EXPECT_EQ(static_cast<size_t>(d.t.numel()), v.size());
  if (dtype == DType::kBF16) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(v[i]);
    b.copy_from_host(d.t.data, h.data(), h.size() * 2);
  } else {
    b.copy_from_host(d.t.data, v.data(), v.size() * 4);
  }
  return d;
}

inline Dev upload_i32(Backend& b, const std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
  Dev d = dev_alloc(b, DType::kI32, dims);
  EXPECT_EQ(static_cast<size_t>(d.t.numel()), v.size());
  b.copy_from_host(d.t.data, v.data(), v.size() * 4);
  return d;
}

inline Dev upload_i32(Backend& b, const std::vector<int32_t>& v) {
  return upload_i32(b, v, {static_cast<int64_t>(v.size())});
}

// Fills a BF16 / F32 / I32 device tensor with NaN (I32: the bit pattern of an F32 NaN).
inline void poison(Backend& b, const Tensor& t) {
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> h(t.numel(), kBf16NaN);
    b.copy_from_host(t.data, h.data(), h.size() * 2);
  } else {
    std::vector<float> h(t.numel(), std::numeric_limits<float>::quiet_NaN());
    b.copy_from_host(t.data, h.data(), h.size() * 4);
  }
}

inline std::vector<float> download(Backend& b, const Tensor& t) {
  std::vector<float> out(t.numel());
  if (t.dtype == DType::kBF16) {
    std::vector<uint16_t> h(t.numel());
    b.copy_to_host(h.data(), t.data, h.size() * 2);
    for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_to_f32(h[i]);
  } else {
    b.copy_to_host(out.data(), t.data, out.size() * 4);
  }
  return out;
}

inline std::vector<int32_t> download_i32(Backend& b, const Tensor& t) {
  std::vector<int32_t> out(t.numel());
  b.copy_to_host(out.data(), t.data, out.size() * 4);
  return out;
}

// |got - ref| <= rel * |ref| + abs everywhere; NaN / Inf in got never pass.
inline ::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& ref, double rel, double abs) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << ref.size();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], r = ref[i];
    if (!std::isfinite(g) || !(std::abs(g - r) <= rel * std::abs(r) + abs))
      return ::testing::AssertionFailure() << "at " << i << ": got " << g << ", expected " << r << " (rel " << rel
                                           << ", abs " << abs << ")";
  }
  return ::testing::AssertionSuccess();
}

// close() with abs = abs_of_scale * max |ref|.
inline ::testing::AssertionResult close_scaled(const std::vector<float>& got, const std::vector<float>& ref, double rel,
                                        double abs_of_scale) {
  double scale = 0.0;
  for (float r : ref) scale = std::max(scale, static_cast<double>(std::abs(r)));
  return close(got, ref, rel, abs_of_scale * scale);
}

}  // namespace pagoda::testing
