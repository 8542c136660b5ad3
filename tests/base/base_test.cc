// base/: dtype conversions agree with IEEE rounding, the thread pool covers every index once.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/dtype.h"
#include "base/error.h"
#include "base/thread_pool.h"

namespace pagoda {
namespace {

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down to 1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3*2^-8 is halfway too: rounds up to the even mantissa 0x3f82.
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
}

TEST(DType, F16RoundTripsEveryHalfValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    const float f = f16_to_f32(v);
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_f16(f), v) << std::hex << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to +inf
}

TEST(DType, ParsesSafetensorsNames) {
  DType d;
  EXPECT_TRUE(parse_dtype("BF16", &d));
  EXPECT_EQ(d, DType::kBF16);
  EXPECT_EQ(dtype_size(d), 2u);
  EXPECT_FALSE(parse_dtype("Q4_K", &d));
}

TEST(ThreadPool, ParallelForCoversEachIndexOnce) {
  ThreadPool pool(4);
  for (int64_t n : {0, 1, 7, 1000, 12345}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPool, RunCallsEveryThreadAndCanRepeatManyTimes) {
  ThreadPool pool(2);
  std::atomic<int> total{0};
  for (int rep = 0; rep < 500; ++rep) pool.run([&](int t, int n) { total += (t < n) ? 1 : 100; });
  EXPECT_EQ(total.load(), 2 * 500);
}

TEST(Error, CheckThrowsWithMessage) {
  try {
    PAGODA_CHECK(1 + 1 == 3, "file.json: field ", "x", " is wrong");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "file.json: field x is wrong");
  }
}

}  // namespace
}  // namespace pagoda
