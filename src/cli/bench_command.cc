// `pagoda bench throughput|latency MODEL_DIR ...`: vLLM's benchmark_throughput.py /
// benchmark_latency.py on synthetic prompts (random token ids, ignore_eos, max_tokens =
// --output-len), on one LLMEngine with the usual engine flags.
//
//   throughput: --num-prompts P requests submitted at once, timed to the last token; prints
//     "Throughput: X requests/s, Y total tokens/s, Z output tokens/s".
//   latency: --batch-size B requests run to completion, --num-iters-warmup + --num-iters times;
//     prints "Avg latency: X seconds" and the 10/25/50/75/90/99% percentiles (numpy's linear
//     interpolation). The prefix cache is reset before every iteration, so each one prefills.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "engine/llm_engine.h"

namespace pagoda {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::vector<int32_t>> random_prompts(int count, int len, int64_t vocab_size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, vocab_size - 1);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(count));
  for (auto& p : prompts)
    for (int i = 0; i < len; ++i) p.push_back(static_cast<int32_t>(dist(rng)));
  return prompts;
}

// Submits the prompts and steps the engine until all finish; returns the output token count.
int64_t run_batch(LLMEngine& engine, const std::vector<std::vector<int32_t>>& prompts, int output_len,
                  const std::string& tag) {
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 1.0f;
  params.ignore_eos = true;
  params.max_tokens = output_len;
  for (size_t i = 0; i < prompts.size(); ++i) engine.add_request(tag + std::to_string(i), prompts[i], params);
  int64_t out = 0;
  while (engine.has_unfinished())
    for (const RequestOutput& o : engine.step()) out += static_cast<int64_t>(o.new_token_ids.size());
  return out;
}

int positive(const Args& args, const char* flag, long long fallback, bool required) {
  auto v = args.get_int(flag);
  PAGODA_CHECK(v || !required, "bench needs ", flag, " N");
  const long long x = v.value_or(fallback);
  PAGODA_CHECK(x >= 1 && x <= (1 << 24), flag, " must be in [1, ", 1 << 24, "], got ", x);
  return static_cast<int>(x);
}

// numpy.percentile's default (linear) interpolation.
double percentile(std::vector<double> xs, double q) {
  std::sort(xs.begin(), xs.end());
  const double pos = q / 100.0 * static_cast<double>(xs.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, xs.size() - 1);
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - static_cast<double>(lo));
}

std::unique_ptr<LLMEngine> make_engine(const Args& args, int input_len, int output_len) {
  const std::string model_dir = args.positionals()[0];
  check_checkpoint_dir(model_dir);
  EngineConfig config = engine_config_from_args(args);
  if (config.max_model_len == 0) config.max_model_len = input_len + output_len;
  PAGODA_CHECK(input_len + output_len <= config.max_model_len, "--input-len + --output-len (",
               input_len + output_len, ") exceeds --max-model-len ", config.max_model_len);
  return LLMEngine::from_model_dir(model_dir, config);
}

int throughput(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--input-len", "--output-len", "--num-prompts", "--seed"}) value_flags.insert(f);
  Args args(argc, argv, value_flags, {"--no-enable-prefix-caching"});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda bench throughput MODEL_DIR --input-len N --output-len M --num-prompts P");
  const int input_len = positive(args, "--input-len", 0, true);
  const int output_len = positive(args, "--output-len", 0, true);
  const int num_prompts = positive(args, "--num-prompts", 0, true);
  const long long seed = args.get_int("--seed").value_or(0);
  PAGODA_CHECK(seed >= 0, "--seed must be non-negative");

  std::unique_ptr<LLMEngine> engine = make_engine(args, input_len, output_len);
  const auto prompts =
      random_prompts(num_prompts, input_len, engine->core().vocab_size(), static_cast<uint64_t>(seed));
  const auto start = Clock::now();
  const int64_t output_tokens = run_batch(*engine, prompts, output_len, "bench-");
  const double elapsed = std::max(std::chrono::duration<double>(Clock::now() - start).count(), 1e-9);
  const double total_tokens = static_cast<double>(num_prompts) * input_len + static_cast<double>(output_tokens);
  std::printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", num_prompts / elapsed,
              total_tokens / elapsed, static_cast<double>(output_tokens) / elapsed);
  std::printf("Total num prompt tokens:  %lld\nTotal num output tokens:  %lld\n",
              static_cast<long long>(num_prompts) * input_len, static_cast<long long>(output_tokens));
  std::fflush(stdout);
  return 0;
}

int latency(int argc, char** argv) {
  std::set<std::string> value_flags = engine_value_flags();
  for (const char* f : {"--input-len", "--output-len", "--batch-size", "--num-iters", "--num-iters-warmup", "--seed"})
    value_flags.insert(f);
  Args args(argc, argv, value_flags, {"--no-enable-prefix-caching"});
  PAGODA_CHECK(args.positionals().size() == 1,
               "usage: pagoda bench latency MODEL_DIR --input-len N --output-len M --batch-size B");
  // vLLM's defaults: --input-len 32 --output-len 128 --batch-size 8 (required-ness relaxed).
  const int input_len = positive(args, "--input-len", 32, false);
  const int output_len = positive(args, "--output-len", 128, false);
  const int batch_size = positive(args, "--batch-size", 8, false);
  const int num_iters = positive(args, "--num-iters", 3, false);
  const long long warmup = args.get_int("--num-iters-warmup").value_or(1);
  PAGODA_CHECK(warmup >= 0 && warmup <= 1000, "--num-iters-warmup must be in [0, 1000]");
  const long long seed = args.get_int("--seed").value_or(0);
  PAGODA_CHECK(seed >= 0, "--seed must be non-negative");

  std::unique_ptr<LLMEngine> engine = make_engine(args, input_len, output_len);
  const auto prompts =
      random_prompts(batch_size, input_len, engine->core().vocab_size(), static_cast<uint64_t>(seed));
  int iter = 0;
  auto one = [&] {
    engine->reset_prefix_cache();
    const auto start = Clock::now();
    run_batch(*engine, prompts, output_len, "it" + std::to_string(iter++) + "-");
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  for (long long i = 0; i < warmup; ++i) {
    one();
    std::fprintf(stderr, "\rWarmup iterations: %lld/%lld", i + 1, warmup);
  }
  if (warmup > 0) std::fputc('\n', stderr);
  std::vector<double> latencies;
  for (int i = 0; i < num_iters; ++i) {
    latencies.push_back(one());
    std::fprintf(stderr, "\rProfiling iterations: %d/%d", i + 1, num_iters);
  }
  std::fputc('\n', stderr);
  double sum = 0;
  for (double l : latencies) sum += l;
  std::printf("Avg latency: %.6f seconds\n", sum / static_cast<double>(latencies.size()));
  for (int q : {10, 25, 50, 75, 90, 99})
    std::printf("%d%% percentile latency: %.6f seconds\n", q, percentile(latencies, q));
  std::fflush(stdout);
  return 0;
}

}  // namespace

int bench_command(int argc, char** argv) {
  PAGODA_CHECK(argc >= 1, "usage: pagoda bench throughput|latency MODEL_DIR [options]");
  const std::string sub = argv[0];
  if (sub == "throughput") return throughput(argc - 1, argv + 1);
  if (sub == "latency") return latency(argc - 1, argv + 1);
  fail("unknown bench '", sub, "' (expected throughput or latency)");
}

}  // namespace pagoda
