// Element types of checkpoints and tensors, and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace pagoda {

enum class DType : uint8_t { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool, kF8E4M3, kF8E5M2 };

// Bytes per element.
size_t dtype_size(DType dtype);
// safetensors spelling: "F32", "BF16", ...
std::string_view dtype_name(DType dtype);
// Parses the safetensors spelling; returns false if unknown.
bool parse_dtype(std::string_view name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round-to-nearest-even, NaN stays NaN (same as torch's float -> bfloat16).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// FP8 (the OCP formats torch calls float8_e4m3fn and float8_e5m2), for the KV cache. Decoding is
// exact. Encoding rounds to nearest even, as torch does, but saturates: a finite value beyond the
// largest finite one (448 for E4M3, 57344 for E5M2) and an infinity become that largest value
// with their sign, as vLLM's KV-cache writes do; NaN stays NaN.
inline float fp8_e4m3_to_f32(uint8_t b) {
  // The 7 magnitude bits placed as an f32 exponent + mantissa (a subnormal f32 for E4M3's
  // subnormals), then rescaled by 2^(127 - 7).
  const uint32_t mag = static_cast<uint32_t>(b & 0x7f) << 20;
  float f;
  std::memcpy(&f, &mag, sizeof(f));
  f *= 1.329227995784916e36f;  // 2^120
  if ((b & 0x7f) == 0x7f) f = __builtin_nanf("");
  return (b & 0x80) ? -f : f;
}
inline float fp8_e5m2_to_f32(uint8_t b) { return f16_to_f32(static_cast<uint16_t>(b << 8)); }
// Branch-free (it vectorizes: weights are quantized with it at load). |f| is clamped to 448, then
// rounded to the E4M3 grid with the float adder's own round-to-nearest-even: with E the exponent
// of |f| (at least -6, E4M3's smallest normal exponent), adding and subtracting 2^(E + 20) keeps
// exactly the 3 mantissa bits of that binade (2^-9 steps below 2^-6: the subnormals). The rounded
// value is then re-biased into the code (or, below 2^-6, counted in 2^-9 steps).
inline uint8_t f32_to_fp8_e4m3(float f) {
  // Signed 32-bit integers throughout (the sign bit is cleared first), which SSE2 compares.
  int32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const int32_t sign = (bits >> 24) & 0x80;
  int32_t abits = bits & 0x7fffffff;
  const int32_t nan = -static_cast<int32_t>(abits > 0x7f800000);  // all ones for NaN
  abits = abits < 0x43e00000 ? abits : 0x43e00000;  // min(|f|, 448) (inf and NaN too; NaN below)
  float a;
  std::memcpy(&a, &abits, sizeof(a));
  int32_t e = abits & 0x7f800000;
  e = e > (121 << 23) ? e : (121 << 23);  // 2^-6
  const int32_t mbits = e + (20 << 23);
  float magic;
  std::memcpy(&magic, &mbits, sizeof(magic));
  const float r = (a + magic) - magic;  // not folded to a: no -ffast-math anywhere
  int32_t rbits;
  std::memcpy(&rbits, &r, sizeof(rbits));
  // Both forms computed and blended by a mask, as the NaN case is (a ternary here becomes a branch
  // around float arithmetic, which GCC will not if-convert under -ftrapping-math: the loop would
  // not vectorize). Below 2^-6, r is a
  // multiple of 2^-9 under 2^-5, so r + 2^14 is exact and its low mantissa bits count r in 2^-9
  // steps: the subnormal code.
  const float shifted = r + 16384.0f;
  int32_t sbits;
  std::memcpy(&sbits, &shifted, sizeof(sbits));
  const int32_t normal = (rbits >> 20) - (120 << 3), subnormal = sbits - 0x46800000;
  const int32_t is_normal = -static_cast<int32_t>(rbits >= (121 << 23));
  const int32_t code = (normal & is_normal) | (subnormal & ~is_normal);
  return static_cast<uint8_t>(sign | (0x7f & nan) | (code & ~nan));
}
uint8_t f32_to_fp8_e5m2(float f);

}  // namespace pagoda
