// Helpers for the backend op tests: random tensors in every weight dtype with their exact values
// in double (the reference computes in double from those), NaN-poisoned outputs, error checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "base/dtype.h"
#include "base/tensor.h"

namespace pagoda::testing {

// Every ISA this CPU can run (AVX-512 appears only on machines that have it).
inline std::vector<cpu::Isa> supported_isas() {
  std::vector<cpu::Isa> out;
  for (cpu::Isa isa : {cpu::Isa::kScalar, cpu::Isa::kAvx2, cpu::Isa::kAvx512})
    if (cpu::isa_supported(isa)) out.push_back(isa);
  return out;
}

// A host tensor of F32/BF16/F16 values; values() are the stored values exactly, as double.
class RandomTensor {
 public:
  RandomTensor(DType dtype, std::initializer_list<int64_t> dims, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f)
      : dtype_(dtype), dims_(dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    std::uniform_real_distribution<float> dist(lo, hi);
    values_.resize(n);
    if (dtype == DType::kF32) {
      f32_.resize(n);
      for (int64_t i = 0; i < n; ++i) values_[i] = f32_[i] = dist(rng);
    } else {
      u16_.resize(n);
      for (int64_t i = 0; i < n; ++i) {
        const float v = dist(rng);
        u16_[i] = dtype == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
        values_[i] = dtype == DType::kBF16 ? bf16_to_f32(u16_[i]) : f16_to_f32(u16_[i]);
      }
    }
  }
  Tensor tensor() {
    void* data = dtype_ == DType::kF32 ? static_cast<void*>(f32_.data()) : static_cast<void*>(u16_.data());
    Tensor t(data, dtype_, {1});
    t.ndim = 0;
    for (int64_t d : dims_) t.shape[t.ndim++] = d;
    return t;
  }
  const std::vector<double>& values() const { return values_; }
  double operator[](int64_t i) const { return values_[i]; }
  std::vector<float>& f32() { return f32_; }

 private:
  DType dtype_;
  std::vector<int64_t> dims_;
  std::vector<float> f32_;
  std::vector<uint16_t> u16_;
  std::vector<double> values_;
};

inline std::vector<float> nan_filled(int64_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// Largest |out - ref| divided by max(floor, largest |ref|): the error relative to the scale of
// the result (per-element relative error is meaningless for sums that cancel). NaN -> +inf.
inline double scaled_error(const std::vector<float>& out, const std::vector<double>& ref, double floor = 1.0) {
  double max_ref = floor, max_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) max_ref = std::max(max_ref, std::abs(ref[i]));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::abs(static_cast<double>(out[i]) - ref[i]);
    if (!(e == e)) return std::numeric_limits<double>::infinity();
    max_err = std::max(max_err, e);
  }
  return max_err / max_ref;
}

inline std::string dtype_str(DType d) { return std::string(dtype_name(d)); }

}  // namespace pagoda::testing
