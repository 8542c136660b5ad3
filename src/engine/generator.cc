#include "engine/generator.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "base/error.h"
#include "engine/sampler.h"

namespace pagoda {
namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Generator::Generator(CausalLM& model, Backend& backend, const GeneratorOptions& options)
    : model_(model), backend_(backend), options_(options) {
  PAGODA_CHECK(options.block_size > 0, "block size must be positive");
  PAGODA_CHECK(options.max_model_len > 0, "max model length must be positive");
  max_blocks_ = (options.max_model_len + options.block_size - 1) / options.block_size;
  kv_ = backend.allocate_kv_cache(model.num_kv_layers(), max_blocks_, options.block_size, model.num_kv_heads(),
                                  model.head_dim(), options.kv_cache_dtype);
  const size_t n = static_cast<size_t>(options.max_num_tokens);
  ids_buf_ = backend.allocate(n * 4);
  pos_buf_ = backend.allocate(n * 4);
  slot_buf_ = backend.allocate(n * 4);
  qsl_buf_ = backend.allocate(2 * 4);
  seqlen_buf_ = backend.allocate(4);
  logit_idx_buf_ = backend.allocate(4);
  table_buf_ = backend.allocate(static_cast<size_t>(max_blocks_) * 4);
  const int64_t vocab = model.config().vocab_size;
  logits_buf_ = backend.allocate(static_cast<size_t>(vocab) * 4);
  logits_host_.resize(static_cast<size_t>(vocab));
  // One sequence owns blocks 0..max_blocks-1 in order.
  std::vector<int32_t> table(static_cast<size_t>(max_blocks_));
  std::iota(table.begin(), table.end(), 0);
  backend.copy_from_host(table_buf_.data(), table.data(), table.size() * 4);
}

float* Generator::forward_chunk(const std::vector<int32_t>& tokens, int start, int n) {
  PAGODA_ASSERT(n > 0 && n <= options_.max_num_tokens && start + n <= static_cast<int>(tokens.size()));
  PAGODA_CHECK(start + n <= options_.max_model_len, "sequence length ", start + n, " exceeds max model length ",
               options_.max_model_len);
  std::vector<int32_t> pos(n), slots(n);
  for (int i = 0; i < n; ++i) {
    pos[i] = start + i;
    slots[i] = start + i;  // block b holds positions [b*bs, (b+1)*bs) and block ids are sequential
  }
  const int32_t qsl[2] = {0, n};
  const int32_t seq_len = start + n;
  const int32_t last = n - 1;
  backend_.copy_from_host(ids_buf_.data(), tokens.data() + start, static_cast<size_t>(n) * 4);
  backend_.copy_from_host(pos_buf_.data(), pos.data(), static_cast<size_t>(n) * 4);
  backend_.copy_from_host(slot_buf_.data(), slots.data(), static_cast<size_t>(n) * 4);
  backend_.copy_from_host(qsl_buf_.data(), qsl, sizeof(qsl));
  backend_.copy_from_host(seqlen_buf_.data(), &seq_len, 4);
  backend_.copy_from_host(logit_idx_buf_.data(), &last, 4);

  ForwardBatch batch;
  batch.token_ids = ids_buf_.as(DType::kI32, {n});
  batch.positions = pos_buf_.as(DType::kI32, {n});
  batch.logits_indices = logit_idx_buf_.as(DType::kI32, {1});
  AttentionMetadata& m = batch.attn;
  m.query_start_loc = qsl_buf_.as(DType::kI32, {2});
  m.seq_lens = seqlen_buf_.as(DType::kI32, {1});
  m.block_tables = table_buf_.as(DType::kI32, {1, max_blocks_});
  m.slot_mapping = slot_buf_.as(DType::kI32, {n});
  m.num_seqs = 1;
  m.num_tokens = n;
  m.max_query_len = n;
  m.max_seq_len = seq_len;

  const int64_t vocab = model_.config().vocab_size;
  model_.forward(batch, kv_, logits_buf_.as(DType::kF32, {1, vocab}));
  backend_.copy_to_host(logits_host_.data(), logits_buf_.data(), static_cast<size_t>(vocab) * 4);
  return logits_host_.data();
}

GenerationResult Generator::generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                                     const std::vector<int32_t>& eos_token_ids,
                                     const std::function<bool(int32_t)>& on_token) {
  params.validate();
  PAGODA_CHECK(!prompt.empty(), "the prompt is empty");
  const int prompt_len = static_cast<int>(prompt.size());
  PAGODA_CHECK(prompt_len < options_.max_model_len, "This model's maximum context length is ", options_.max_model_len,
               " tokens. However, your prompt has ", prompt_len, " tokens.");
  const int64_t vocab = model_.config().vocab_size;
  for (int32_t id : prompt)
    PAGODA_CHECK(id >= 0 && id < vocab, "prompt token id ", id, " is outside the vocabulary [0, ", vocab, ")");

  GenerationResult result;
  Sampler sampler(params, prompt, vocab, eos_token_ids);
  std::vector<int32_t> tokens = prompt;
  const double t0 = now_seconds();
  float* logits = nullptr;
  for (int start = 0; start < prompt_len; start += options_.max_num_tokens) {
    const int n = std::min(options_.max_num_tokens, prompt_len - start);
    logits = forward_chunk(tokens, start, n);
  }
  const double t1 = now_seconds();
  result.prefill_seconds = t1 - t0;

  const int room = options_.max_model_len - prompt_len;
  const int budget = std::min(params.max_tokens.value_or(room), room);
  result.finish_reason = "length";
  for (int step = 0; step < budget; ++step) {
    if (step > 0) logits = forward_chunk(tokens, static_cast<int>(tokens.size()) - 1, 1);
    const int32_t next = sampler.sample(logits).token;
    tokens.push_back(next);
    result.token_ids.push_back(next);
    const bool is_eos = !params.ignore_eos && std::find(eos_token_ids.begin(), eos_token_ids.end(), next) != eos_token_ids.end();
    const bool is_stop = std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), next) != params.stop_token_ids.end();
    if (on_token && !on_token(next)) {
      result.finish_reason = "abort";
      break;
    }
    if (is_eos || is_stop) {
      result.finish_reason = "stop";
      break;
    }
  }
  result.decode_seconds = now_seconds() - t1;
  return result;
}

}  // namespace pagoda
