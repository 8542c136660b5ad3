// Memory bandwidth of this machine with every thread of the CPU backend's pool: read (sum over
// a buffer far larger than the last-level cache), copy (memcpy, counting bytes read + written)
// and write (memset). The decode GEMV is judged against the read figure.
//   membw [--mib 1024] [--reps 5]     (prints one JSON line; details on stderr)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <emmintrin.h>

#include "base/thread_pool.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Sum with four independent SSE accumulators: enough loads in flight to saturate memory
// without needing AVX (this file is compiled for baseline x86-64).
float sum_chunk(const float* p, size_t n) {
  __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm_add_ps(a0, _mm_load_ps(p + i));
    a1 = _mm_add_ps(a1, _mm_load_ps(p + i + 4));
    a2 = _mm_add_ps(a2, _mm_load_ps(p + i + 8));
    a3 = _mm_add_ps(a3, _mm_load_ps(p + i + 12));
  }
  float out[4];
  _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(a0, a1), _mm_add_ps(a2, a3)));
  float s = out[0] + out[1] + out[2] + out[3];
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 1024;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--mib") mib = std::strtoul(argv[i + 1], nullptr, 10);
    if (a == "--reps") reps = std::atoi(argv[i + 1]);
  }
  pagoda::ThreadPool& pool = pagoda::ThreadPool::global();
  const size_t n = mib * 1024 * 1024 / sizeof(float);
  float* src = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  float* dst = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  // First touch from the threads that will read each chunk (NUMA placement on big machines).
  pool.parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) src[i] = static_cast<float>(i & 1023) * 1e-3f;
    std::memset(dst + b, 0, (e - b) * sizeof(float));
  });
  std::vector<float> sink(pool.num_threads());
  double best_read = 0, best_copy = 0, best_write = 0;
  const double bytes = static_cast<double>(n) * sizeof(float);
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    pool.run([&](int t, int nt) {
      const size_t b = n * t / nt / 16 * 16, e = t + 1 == nt ? n : n * (t + 1) / nt / 16 * 16;
      sink[t] += sum_chunk(src + b, e - b);
    });
    best_read = std::max(best_read, bytes / seconds_since(t0) / 1e9);
    t0 = Clock::now();
    pool.run([&](int t, int nt) {
      const size_t b = n * t / nt / 16 * 16, e = t + 1 == nt ? n : n * (t + 1) / nt / 16 * 16;
      std::memcpy(dst + b, src + b, (e - b) * sizeof(float));
    });
    best_copy = std::max(best_copy, 2 * bytes / seconds_since(t0) / 1e9);
    t0 = Clock::now();
    pool.run([&](int t, int nt) {
      const size_t b = n * t / nt / 16 * 16, e = t + 1 == nt ? n : n * (t + 1) / nt / 16 * 16;
      std::memset(dst + b, r, (e - b) * sizeof(float));
    });
    best_write = std::max(best_write, bytes / seconds_since(t0) / 1e9);
  }
  float s = 0;
  for (float v : sink) s += v;
  // Human-readable lines on stderr; one JSON line on stdout (bench/run_foundation.sh keeps it).
  std::fprintf(stderr, "threads %d, buffer %zu MiB, best of %d (checksum %g %g)\n", pool.num_threads(), mib, reps,
               static_cast<double>(s), static_cast<double>(dst[n / 2]));
  std::fprintf(stderr, "read   %7.2f GB/s\ncopy   %7.2f GB/s (read + write bytes)\nwrite  %7.2f GB/s\n", best_read,
               best_copy, best_write);
  std::printf("{\"bench\": \"membw\", \"threads\": %d, \"read_gbs\": %.2f, \"copy_gbs\": %.2f, \"write_gbs\": %.2f}\n",
              pool.num_threads(), best_read, best_copy, best_write);
  std::free(src);
  std::free(dst);
  return 0;
}
