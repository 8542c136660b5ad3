// tools/make_random_checkpoint output must load through our own readers with the shapes the
// Qwen3 model code will ask for (transformers loading it was checked by hand; see the tool).
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "io/checkpoint.h"
#include "io/model_config.h"
#include "temp_dir.h"

namespace pagoda {
namespace {

TEST(RandomCheckpoint, TinyPresetLoads) {
  const std::string tool = std::string(PAGODA_BINARY_DIR) + "/bin/make_random_checkpoint";
  const std::string tokenizers = std::string(PAGODA_SHARED_DIR) + "/tokenizers/qwen3";
  if (!std::filesystem::exists(tool)) GTEST_SKIP() << "build the make_random_checkpoint target first";
  if (!std::filesystem::exists(tokenizers)) GTEST_SKIP() << "no " << tokenizers;
  testing::TempDir dir;
  const std::string out = dir.file("tiny");
  const std::string cmd = tool + " " + out + " --preset tiny --seed 3 --tokenizer-dir " + tokenizers + " > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  const ModelConfig c = load_model_config(out);
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_EQ(c.torch_dtype, DType::kBF16);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
  EXPECT_EQ(load_generation_config(out).eos_token_ids, (std::vector<int64_t>{151645, 151643}));

  Checkpoint ckpt(out);
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  EXPECT_EQ(ckpt.get("model.embed_tokens.weight", {c.vocab_size, h}).dtype, DType::kBF16);
  EXPECT_FALSE(ckpt.has("lm_head.weight"));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    ckpt.get(l + "self_attn.q_proj.weight", {q, h});
    ckpt.get(l + "self_attn.k_proj.weight", {kv, h});
    ckpt.get(l + "self_attn.v_proj.weight", {kv, h});
    ckpt.get(l + "self_attn.o_proj.weight", {h, q});
    ckpt.get(l + "self_attn.q_norm.weight", {c.head_dim});
    ckpt.get(l + "mlp.down_proj.weight", {h, c.intermediate_size});
    const Tensor norm = ckpt.get(l + "input_layernorm.weight", {h}).view();
    EXPECT_EQ(bf16_to_f32(norm.ptr<uint16_t>()[0]), 1.0f);
  }
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer_config.json"));
}

}  // namespace
}  // namespace pagoda
