// A causal language model written once against the Backend ops. Architectures register by
// config.json model_type (registry.cc).
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "io/model_config.h"

namespace pagoda {

// One forward pass over a flattened variable-length batch (see AttentionMetadata). All
// tensors are in backend memory.
struct ForwardBatch {
  Tensor token_ids;       // I32 [T]
  Tensor positions;       // I32 [T]: position of each token in its sequence
  AttentionMetadata attn;
  Tensor logits_indices;  // I32 [L]: rows of the batch whose next-token logits are wanted
};

struct ModelLoadOptions {
  int max_num_tokens = 2048;  // most tokens in one forward pass (sizes the activation workspace)
  int max_num_logits = 256;   // most rows of logits in one forward pass
  // Hybrid models (linear-attention layers) only: how many per-sequence state slots to allocate
  // (conv + recurrent state per linear-attention layer each). 0 = max_num_logits. A forward batch
  // names the slot of each sequence in attn.state_slots; every sequence in flight needs its own.
  int num_state_slots = 0;
  // Weight quantization (vLLM's --quantization): "" = what the checkpoint is (its config.json
  // quantization_config, if any); "fp8" = FP8 weights, quantized at load when the checkpoint is
  // BF16 / F16 / F32 (see model/weights.h). Anything else is an error naming the method.
  std::string quantization;
  // Block (rows x columns of a weight) that shares one scale when weights are quantized at load.
  int quantization_block = 128;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual const ModelConfig& config() const = 0;

  // Shape of the paged KV cache this model needs (one entry per attention layer).
  virtual int num_kv_layers() const = 0;
  virtual int num_kv_heads() const = 0;
  virtual int head_dim() const = 0;
  // Per-sequence state slots of a hybrid model (0: the model keeps no state besides the KV cache
  // and ignores attn.state_slots). A sequence's slot is overwritten when its chunk starts at
  // position 0, so a slot needs no reset between requests.
  virtual int num_state_slots() const { return 0; }
  // Bytes of one state slot across all linear-attention layers (conv + recurrent state); the
  // engine counts num_state_slots() of them inside its KV cache memory budget.
  virtual size_t state_bytes_per_slot() const { return 0; }
  // Whether a decode forward may be recorded once and replayed (CUDA graphs): the same launches
  // for every batch of the same size, whatever the contexts (no host-side work that depends on
  // positions or lengths, such as dynamic-NTK frequencies; no per-sequence state slots).
  virtual bool replayable_decode() const { return false; }

  // Runs the batch, writes K/V of its tokens into `kv`, and writes F32 logits [L, vocab_size]
  // for the rows named by batch.logits_indices into `logits`.
  virtual void forward(const ForwardBatch& batch, KvCache& kv, Tensor logits) = 0;
};

// Loads config.json + safetensors from model_dir and builds the architecture named by
// model_type. Throws pagoda::Error naming the file/tensor on any problem.
std::unique_ptr<CausalLM> load_model(const std::string& model_dir, Backend& backend, const ModelLoadOptions& options);

}  // namespace pagoda
