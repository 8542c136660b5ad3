// Hybrid models keep a recurrent-state slot per sequence; that pool is part of the KV cache
// memory budget (--kv-cache-memory), as in vLLM: the paged KV blocks get what the slots leave.
#include <gtest/gtest.h>

#include <string>

#include "backend/backend.h"
#include "base/error.h"
#include "engine/engine_core.h"
#include "engine/llm_engine.h"
#include "model/model.h"

namespace pagoda {
namespace {

std::string fixture_dir(const std::string& name) {
  return std::string(PAGODA_SOURCE_DIR) + "/tests/model/data/" + name;
}

EngineConfig budget_config(size_t kv_cache_memory_bytes) {
  EngineConfig c;
  c.max_num_seqs = 8;
  c.max_num_batched_tokens = 64;
  c.max_model_len = 160;
  c.block_size = 16;
  c.kv_cache_dtype = DType::kF32;
  c.kv_cache_memory_bytes = kv_cache_memory_bytes;
  return c;
}

// qwen3_next fixture: 2 linear-attention layers, 2 key heads x 16, 4 value heads x 16, conv kernel
// 4; 2 full-attention layers with 2 KV heads of 32.
constexpr size_t kConvDim = 2 * 2 * 16 + 4 * 16;
constexpr size_t kSlotBytes = 2 * (kConvDim * 3 + 4 * 16 * 16) * sizeof(float);
constexpr size_t kBlockBytes = 2 * 2 * 2 * 32 * 16 * sizeof(float);

TEST(StateBudget, HybridStatePoolIsCountedInKvCacheMemory) {
  auto backend = make_cpu_backend();
  const EngineConfig probe = budget_config(0);
  auto model = load_model(fixture_dir("qwen3_next"), *backend, engine_load_options(probe));
  ASSERT_EQ(model->num_state_slots(), 8);
  EXPECT_EQ(model->state_bytes_per_slot(), kSlotBytes);

  // Room for the 8 slots plus 20 blocks and a little: 20 blocks, not 20 + what the slots hold.
  LLMEngine engine(*model, *backend, budget_config(8 * kSlotBytes + 20 * kBlockBytes + 100));
  EXPECT_EQ(engine.config().num_kv_blocks, 20);

  // The slots alone exceed the budget: a clear error naming both flags.
  try {
    LLMEngine tiny(*model, *backend, budget_config(8 * kSlotBytes - 1));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--kv-cache-memory"), std::string::npos) << what;
    EXPECT_NE(what.find("--max-num-seqs"), std::string::npos) << what;
  }
  // Slots fit but fewer blocks than one --max-model-len sequence needs (10): the error says the
  // state pool is counted.
  try {
    LLMEngine small(*model, *backend, budget_config(8 * kSlotBytes + 5 * kBlockBytes));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("recurrent-state pool"), std::string::npos) << e.what();
  }
}

TEST(StateBudget, DenseModelsSpendTheWholeBudgetOnBlocks) {
  auto backend = make_cpu_backend();
  const EngineConfig probe = budget_config(0);
  auto model = load_model(fixture_dir("qwen3"), *backend, engine_load_options(probe));
  EXPECT_EQ(model->num_state_slots(), 0);
  EXPECT_EQ(model->state_bytes_per_slot(), 0u);
  const size_t per_block = ModelRunner::kv_bytes_per_block(*model, 16, DType::kF32);
  LLMEngine engine(*model, *backend, budget_config(30 * per_block + 1));
  EXPECT_EQ(engine.config().num_kv_blocks, 30);
}

}  // namespace
}  // namespace pagoda
