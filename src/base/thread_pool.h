// A fixed pool of worker threads for data-parallel loops in CPU kernels. One parallel region
// runs at a time; the calling thread takes part as worker 0. Workers spin briefly before
// sleeping, because kernels issue thousands of short regions per second during decode.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace pagoda {

class ThreadPool {
 public:
  // num_threads <= 0: one per available core (PAGODA_NUM_THREADS overrides).
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(thread_index, num_threads) once on every thread and waits for all.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous chunks (multiples of `grain`, except the last) over the
  // threads and calls fn(begin, end) for each non-empty chunk.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  // The process-wide pool used by the CPU backend.
  static ThreadPool& global();

 private:
  void worker_loop(int index);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::mutex run_mu_;  // one parallel region at a time
};

}  // namespace pagoda
