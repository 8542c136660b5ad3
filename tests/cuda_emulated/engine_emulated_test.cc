// The engine on the CUDA backend over the emulated runtime (include/cuda_runtime.h): the paths
// only a GPU backend takes — decode steps recorded as CUDA graphs and replayed, async
// scheduling (step N+1 issued before step N is waited for, its placeholder tokens fed on the
// device, pinned host buffers reused by step parity), sampling and logprobs on the device, and
// the KV pool sized from the device's free memory by --gpu-memory-utilization.
//
// The emulated device computes every kernel the same way whatever the batch (its GEMM is one
// dot product per output, attention and the rest are per row / per sequence), so eager,
// graph-replayed, synchronous and asynchronous runs of the same requests must give identical
// tokens and identical logprobs; a graph replaying stale arguments, a placeholder fed from the
// wrong row or a pinned buffer overwritten too early changes them.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/device.h"
#include "base/error.h"
#include "engine/llm_engine.h"
#include "model/model.h"

namespace pagoda {
namespace {

std::string fixture_dir(const std::string& name) { return std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + name; }

struct RunResult {
  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, std::vector<float>> logprobs;  // sampled token's, then the top ones'
  std::map<std::string, std::string> finish;
  EngineStats stats;
  int num_graphs = 0;           // recorded when the run ended
  int num_graphs_at_build = 0;  // recorded when the engine was built
  int num_capture_sizes = 0;
};

struct Job {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingParams params;
};

// 16 requests: prompts of 1..40 tokens, 1..16 outputs, greedy with top logprobs, seeded
// top-k / top-p sampling, penalties, min_tokens with a stop token.
std::vector<Job> jobs() {
  std::mt19937 rng(11);
  std::vector<Job> out;
  for (int i = 0; i < 16; ++i) {
    Job j;
    j.id = "r";
    j.id.append(std::to_string(i));
    const int len = 1 + static_cast<int>(rng() % 40);
    for (int t = 0; t < len; ++t) j.prompt.push_back(static_cast<int32_t>(3 + rng() % 500));
    SamplingParams& p = j.params;
    p.max_tokens = 1 + static_cast<int>(rng() % 16);
    switch (i % 4) {
      case 0:
        p.temperature = 0.0f;
        p.logprobs = 3;
        break;
      case 1:
        p.temperature = 0.8f;
        p.top_k = 20;
        p.top_p = 0.9f;
        p.seed = 100 + static_cast<uint64_t>(i);
        p.logprobs = 0;
        break;
      case 2:
        p.temperature = 1.0f;
        p.seed = 200 + static_cast<uint64_t>(i);
        p.presence_penalty = 0.5f;
        p.repetition_penalty = 1.2f;
        break;
      default:
        p.temperature = 0.0f;
        p.min_tokens = 2;
        p.stop_token_ids = {static_cast<int32_t>(3 + i)};
        p.ignore_eos = true;
        break;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::unique_ptr<CausalLM> load_fixture(const std::string& name, Backend& backend) {
  ModelLoadOptions lo;
  lo.max_num_tokens = 64;
  lo.max_num_logits = 16;
  return load_model(fixture_dir(name), backend, lo);
}

// KV pool: num_kv_blocks (0: sized from the device memory).
EngineConfig base_config(int num_kv_blocks) {
  EngineConfig c;
  c.max_num_seqs = 16;
  c.max_num_batched_tokens = 64;  // prompts are cut into chunks beside decode tokens
  c.max_model_len = 128;
  c.block_size = 16;
  c.num_kv_blocks = num_kv_blocks;
  c.kv_cache_dtype = DType::kBF16;
  c.eos_token_ids = {2};
  return c;
}

class EmulatedCudaEngine : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    backend_ = make_backend("cuda");
    model_ = load_fixture(GetParam(), *backend_);
  }

  EngineConfig config(int graphs, int async, bool graphs_at_start = true) const {
    EngineConfig c = base_config(256);
    c.cuda_graphs = graphs;
    c.async_scheduling = async;
    c.graphs_at_start = graphs_at_start;
    return c;
  }

  RunResult run(const EngineConfig& c) {
    LLMEngine engine(*model_, *backend_, c);
    RunResult r;
    r.num_graphs_at_build = engine.core().model_runner().num_graphs();
    r.num_capture_sizes = static_cast<int>(engine.core().model_runner().capture_sizes().size());
    for (const Job& j : jobs()) engine.add_request(j.id, j.prompt, j.params);
    for (int step = 0; engine.has_unfinished() && step < 10000; ++step)
      for (const RequestOutput& o : engine.step()) {
        auto& t = r.tokens[o.request_id];
        t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
        for (const SampledToken& s : o.new_logprobs) {
          r.logprobs[o.request_id].push_back(s.logprob);
          for (const auto& [token, lp] : s.top_logprobs) {
            r.tokens[o.request_id + "/top"].push_back(token);
            r.logprobs[o.request_id].push_back(lp);
          }
        }
        if (o.finished) r.finish[o.request_id] = o.finish_reason;
      }
    EXPECT_FALSE(engine.has_unfinished());
    r.stats = engine.stats();
    r.num_graphs = engine.core().model_runner().num_graphs();
    const KvCacheManager& kv = engine.core().kv_cache_manager();
    EXPECT_EQ(kv.num_free_blocks(), kv.num_blocks()) << "KV blocks leaked";
    return r;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<CausalLM> model_;
};

void expect_identical(const RunResult& got, const RunResult& want, const char* what) {
  EXPECT_EQ(got.finish, want.finish) << what;
  for (const auto& [id, w] : want.tokens) EXPECT_EQ(got.tokens.at(id), w) << what << ": request " << id;
  for (const auto& [id, w] : want.logprobs) EXPECT_EQ(got.logprobs.at(id), w) << what << ": logprobs of " << id;
}

TEST_P(EmulatedCudaEngine, GraphsAndAsyncSchedulingChangeNothing) {
  const RunResult eager = run(config(0, 0));
  EXPECT_EQ(eager.num_graphs, 0);
  EXPECT_EQ(eager.num_graphs_at_build, 0);
  EXPECT_EQ(eager.stats.num_overlapped_steps, 0);
  ASSERT_EQ(eager.finish.size(), 16u);

  // Each decode size recorded at its first step.
  const RunResult lazy = run(config(-1, 0, false));
  EXPECT_EQ(lazy.num_graphs_at_build, 0);
  EXPECT_GT(lazy.num_graphs, 0) << "no decode step was recorded as a graph";
  expect_identical(lazy, eager, "graphs recorded at first use");

  // Every decode size (1, 2, 4, 8, 16) recorded from padding batches when the engine is built;
  // the steps only replay them.
  const RunResult graphs = run(config(-1, 0));
  EXPECT_EQ(graphs.num_capture_sizes, 5);
  EXPECT_EQ(graphs.num_graphs_at_build, graphs.num_capture_sizes);
  EXPECT_EQ(graphs.num_graphs, graphs.num_capture_sizes) << "a step recorded a graph";
  expect_identical(graphs, eager, "graphs recorded at start");

  const RunResult async = run(config(-1, -1));  // auto: on, the backend samples on the device
  EXPECT_EQ(async.num_graphs, async.num_capture_sizes);
  EXPECT_GT(async.stats.num_overlapped_steps, 0) << "no step was issued while the one before ran";
  expect_identical(async, eager, "graphs + async scheduling");

  // --max-cudagraph-capture-size 4: sizes 1, 2 and 4 recorded; decode batches of 5 to 16 run eagerly.
  EngineConfig capped = config(-1, -1);
  capped.max_cudagraph_capture_size = 4;
  const RunResult small = run(capped);
  EXPECT_EQ(small.num_capture_sizes, 3);
  EXPECT_EQ(small.num_graphs, 3) << "a step recorded a graph";
  expect_identical(small, eager, "graphs up to batch 4 + async scheduling");
}

// Speculative decoding samples every row on the host (each request's Sampler verifies its drafts
// in order), with graphs still recording and replaying the steps without drafts: the tokens and
// logprobs must be those of plain decoding sampled on the host.
TEST_P(EmulatedCudaEngine, SpeculativeDecodingMatchesHostSampledDecoding) {
  if (GetParam() == "qwen3_next") GTEST_SKIP() << "hybrid models refuse speculative decoding";
  EngineConfig plain = config(0, 0);
  plain.backend_sampling = 0;
  EngineConfig spec = config(-1, -1);
  spec.speculative.method = "ngram";
  spec.speculative.num_speculative_tokens = 3;
  spec.speculative.prompt_lookup_min = 1;
  spec.speculative.prompt_lookup_max = 2;
  model_ = load_model(fixture_dir(GetParam()), *backend_, engine_load_options(spec));
  const RunResult want = run(plain);
  const RunResult got = run(spec);
  expect_identical(got, want, "speculative decoding");
  EXPECT_GT(got.stats.spec_decoding.num_accepted_tokens, 0);
  EXPECT_EQ(got.stats.num_overlapped_steps, 0);  // no async scheduling with drafts
  EXPECT_GT(got.num_graphs, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EmulatedCudaEngine, ::testing::Values("qwen3", "qwen3_moe", "qwen3_next"));

// With neither --num-kv-blocks nor --kv-cache-memory, the pool takes what --gpu-memory-utilization
// leaves of the device after the weights and workspaces, less the engine's 512 MiB reserve.
TEST(EmulatedCudaEngineMemory, KvPoolIsSizedFromTheDeviceMemory) {
  std::unique_ptr<Backend> backend = make_backend("cuda");
  std::unique_ptr<CausalLM> model = load_fixture("qwen3", *backend);
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_TRUE(backend->memory_info(&free_bytes, &total_bytes));
  EngineConfig c = base_config(0);
  c.gpu_memory_utilization = 0.4;
  const size_t allowed = static_cast<size_t>(0.4 * static_cast<double>(total_bytes));
  const size_t reserve = size_t{512} << 20;
  ASSERT_GT(allowed, total_bytes - free_bytes + reserve) << "the emulated device is too small for this test";
  const size_t per_block = ModelRunner::kv_bytes_per_block(*model, c.block_size, c.kv_cache_dtype);
  const auto want_blocks = static_cast<int>((allowed - (total_bytes - free_bytes) - reserve) / per_block);
  {
    LLMEngine engine(*model, *backend, c);
    EXPECT_EQ(engine.core().config().num_kv_blocks, want_blocks);
    size_t free_after = 0;
    ASSERT_TRUE(backend->memory_info(&free_after, &total_bytes));
    EXPECT_GE(free_bytes - free_after, static_cast<size_t>(want_blocks) * per_block);  // the pool is allocated
    SamplingParams p;
    p.temperature = 0.0f;
    p.max_tokens = 4;
    engine.add_request("a", {5, 6, 7}, p);
    int tokens = 0;
    while (engine.has_unfinished())
      for (const RequestOutput& o : engine.step()) tokens += static_cast<int>(o.new_token_ids.size());
    EXPECT_EQ(tokens, 4);
  }
  // A utilization that leaves nothing after the weights fails, naming the flag.
  c.gpu_memory_utilization = 0.05;
  try {
    LLMEngine engine(*model, *backend, c);
    FAIL() << "an engine without room for a KV cache was built";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--gpu-memory-utilization"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pagoda
