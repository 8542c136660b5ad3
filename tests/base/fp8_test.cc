// The FP8 codecs of the KV cache (base/dtype.h) against torch's float8_e4m3fn / float8_e5m2
// (tests/base/data/fp8_reference.json, written by tools/make_fp8_fixture.py): every code decodes
// to torch's value, and values inside the finite range (random, subnormal, exact ties between
// codes and their neighbours) encode to torch's code. Beyond the range pagoda saturates (torch
// does not; vLLM's KV-cache writes do), checked here by itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "base/dtype.h"

namespace pagoda {
namespace {

float from_bits(int64_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

const nlohmann::json& reference() {
  static const nlohmann::json j = [] {
    std::ifstream in(std::string(PAGODA_SOURCE_DIR) + "/tests/base/data/fp8_reference.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

void check_format(const char* name, float (*decode)(uint8_t), uint8_t (*encode)(float)) {
  const nlohmann::json& f = reference().at(name);
  const auto& dec = f.at("decode_f32_bits");
  ASSERT_EQ(dec.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    const float want = from_bits(dec[c].get<int64_t>());
    const float got = decode(static_cast<uint8_t>(c));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << name << " code " << c;
    } else {
      EXPECT_EQ(std::memcmp(&got, &want, sizeof(float)), 0) << name << " code " << c << ": " << got << " vs " << want;
    }
  }
  const auto& vals = f.at("encode_f32_bits");
  const auto& codes = f.at("encode_codes");
  ASSERT_EQ(vals.size(), codes.size());
  ASSERT_GT(vals.size(), 1000u);
  int bad = 0;
  for (size_t i = 0; i < vals.size(); ++i) {
    const float x = from_bits(vals[i].get<int64_t>());
    const int got = encode(x), want = codes[i].get<int>();
    if (got != want && ++bad <= 10) ADD_FAILURE() << name << " encode " << x << ": " << got << " vs torch " << want;
  }
  EXPECT_EQ(bad, 0);
}

TEST(Fp8, E4m3MatchesTorch) { check_format("e4m3", fp8_e4m3_to_f32, f32_to_fp8_e4m3); }
TEST(Fp8, E5m2MatchesTorch) { check_format("e5m2", fp8_e5m2_to_f32, f32_to_fp8_e5m2); }

TEST(Fp8, E4m3RoundsToNearestEvenAtEveryBoundary) {
  // Every pair of neighbouring finite codes (c, c + 1), both signs: their values encode to
  // themselves, the midpoint to the even code (mantissa LSB 0), and the floats just inside it to
  // the nearer code: every rounding boundary of the format, not a sample of them.
  for (int c = 0; c < 0x7e; ++c) {
    for (const uint8_t sign : {uint8_t{0}, uint8_t{0x80}}) {
      const uint8_t a = static_cast<uint8_t>(sign | c), b = static_cast<uint8_t>(sign | (c + 1));
      const float lo = fp8_e4m3_to_f32(a), hi = fp8_e4m3_to_f32(b), mid = (lo + hi) / 2;
      ASSERT_EQ((lo + hi) / 2 - lo, hi - (lo + hi) / 2) << "midpoint not exact at code " << c;
      EXPECT_EQ(f32_to_fp8_e4m3(lo), a) << lo;
      EXPECT_EQ(f32_to_fp8_e4m3(hi), b) << hi;
      EXPECT_EQ(f32_to_fp8_e4m3(mid), (c & 1) ? b : a) << "tie at " << mid;
      EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, lo)), a) << mid;
      EXPECT_EQ(f32_to_fp8_e4m3(std::nextafter(mid, hi)), b) << mid;
    }
  }
  EXPECT_EQ(f32_to_fp8_e4m3(0.0f), 0x00);
  EXPECT_EQ(f32_to_fp8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_fp8_e4m3(std::numeric_limits<float>::denorm_min()), 0x00);
}

TEST(Fp8, SaturatesBeyondTheFiniteRangeAndKeepsNan) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {448.0f, 464.0f, 465.0f, 1e6f, inf}) {
    EXPECT_EQ(f32_to_fp8_e4m3(x), 0x7e) << x;
    EXPECT_EQ(f32_to_fp8_e4m3(-x), 0xfe) << x;
  }
  for (float x : {57344.0f, 61440.0f, 1e9f, inf}) {
    EXPECT_EQ(f32_to_fp8_e5m2(x), 0x7b) << x;
    EXPECT_EQ(f32_to_fp8_e5m2(-x), 0xfb) << x;
  }
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(f32_to_fp8_e4m3(std::nanf("")))));
  EXPECT_TRUE(std::isnan(fp8_e5m2_to_f32(f32_to_fp8_e5m2(std::nanf("")))));
}

}  // namespace
}  // namespace pagoda
