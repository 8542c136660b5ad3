// Single-sequence generation on a CausalLM: chunked prefill of the prompt, then one decode step
// per token through the paged KV cache, sampling on the host. This is the foundation's
// `pagoda generate` path; the continuous-batching engine (scheduler, block manager) replaces
// it for many requests and reuses the same ForwardBatch / AttentionMetadata contract.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/sampling_params.h"
#include "model/model.h"

namespace pagoda {

struct GeneratorOptions {
  int block_size = 16;
  int max_model_len = 4096;     // prompt + generated tokens
  int max_num_tokens = 512;     // prefill chunk size (tokens per forward)
  DType kv_cache_dtype = DType::kBF16;
};

struct GenerationResult {
  std::vector<int32_t> token_ids;
  std::string finish_reason;  // "stop" (eos / stop token) or "length"
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // from the first sampled token to the last
};

class Generator {
 public:
  Generator(CausalLM& model, Backend& backend, const GeneratorOptions& options);

  // Generates up to params.max_tokens tokens after `prompt` (unset: up to max_model_len). on_token
  // is called for each new token; returning false stops generation early (finish_reason "abort").
  GenerationResult generate(const std::vector<int32_t>& prompt, const SamplingParams& params,
                            const std::vector<int32_t>& eos_token_ids,
                            const std::function<bool(int32_t)>& on_token = {});

  // Runs one forward over tokens [start, start + n) of `tokens` (context already cached for
  // [0, start)) and returns the logits of the last token (a host buffer the caller may modify
  // until the next call). Exposed for benchmarks.
  float* forward_chunk(const std::vector<int32_t>& tokens, int start, int n);

 private:
  CausalLM& model_;
  Backend& backend_;
  GeneratorOptions options_;
  KvCache kv_;
  int max_blocks_ = 0;
  // Backend-side batch buffers (sized once) and their host staging copies.
  DeviceBuffer ids_buf_, pos_buf_, qsl_buf_, seqlen_buf_, table_buf_, slot_buf_, logit_idx_buf_, logits_buf_;
  std::vector<float> logits_host_;
};

}  // namespace pagoda
