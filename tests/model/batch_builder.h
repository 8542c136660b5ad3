// Test helper: builds a ForwardBatch (token ids, positions, attention metadata, logits indices)
// from host-side sequence chunks, the way the engine's model runner will, and copies it into
// backend memory.
//
// KV blocks: sequence slot s owns max_blocks_per_seq blocks; its j-th logical block is physical
// block j * max_seqs + s (interleaved across sequences, so block tables are not the identity and
// a wrong table lookup shows up). slot = block * block_size + offset.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace pagoda::test_util {

struct SeqChunk {
  int slot = 0;                 // sequence slot (selects its KV blocks)
  int num_computed = 0;         // tokens of this sequence already in the KV cache
  std::vector<int32_t> tokens;  // tokens of this step, at positions num_computed, ...
};

class BatchBuilder {
 public:
  BatchBuilder(Backend& backend, int block_size, int max_seqs, int max_blocks_per_seq)
      : backend_(backend), block_size_(block_size), max_seqs_(max_seqs), max_blocks_(max_blocks_per_seq) {}

  int num_blocks() const { return max_seqs_ * max_blocks_; }
  int block_size() const { return block_size_; }
  int32_t physical_block(int slot, int logical) const { return logical * max_seqs_ + slot; }

  // all_logits: a logits row for every token; else only for the last token of each chunk.
  ForwardBatch build(const std::vector<SeqChunk>& chunks, bool all_logits) {
    std::vector<int32_t> ids, pos, qsl{0}, seq_lens, tables, slots, logits_idx, state_slots;
    int32_t max_q = 0, max_len = 0;
    for (const SeqChunk& c : chunks) {
      PAGODA_ASSERT(c.slot >= 0 && c.slot < max_seqs_);
      const int32_t n = static_cast<int32_t>(c.tokens.size());
      const int32_t len = c.num_computed + n;
      PAGODA_ASSERT(len <= max_blocks_ * block_size_);
      for (int32_t i = 0; i < n; ++i) {
        const int32_t p = c.num_computed + i;
        if (all_logits || i == n - 1) logits_idx.push_back(static_cast<int32_t>(ids.size()));
        ids.push_back(c.tokens[i]);
        pos.push_back(p);
        slots.push_back(physical_block(c.slot, p / block_size_) * block_size_ + p % block_size_);
      }
      qsl.push_back(static_cast<int32_t>(ids.size()));
      seq_lens.push_back(len);
      state_slots.push_back(c.slot);  // hybrid models: the sequence slot doubles as its state slot
      for (int j = 0; j < max_blocks_; ++j) tables.push_back(physical_block(c.slot, j));
      max_q = std::max(max_q, n);
      max_len = std::max(max_len, len);
    }
    buffers_.clear();
    ForwardBatch b;
    b.token_ids = upload(ids, {static_cast<int64_t>(ids.size())});
    b.positions = upload(pos, {static_cast<int64_t>(pos.size())});
    b.attn.query_start_loc = upload(qsl, {static_cast<int64_t>(qsl.size())});
    b.attn.seq_lens = upload(seq_lens, {static_cast<int64_t>(seq_lens.size())});
    b.attn.block_tables = upload(tables, {static_cast<int64_t>(chunks.size()), max_blocks_});
    b.attn.slot_mapping = upload(slots, {static_cast<int64_t>(slots.size())});
    b.attn.state_slots = upload(state_slots, {static_cast<int64_t>(state_slots.size())});
    b.attn.num_seqs = static_cast<int32_t>(chunks.size());
    b.attn.num_tokens = static_cast<int32_t>(ids.size());
    b.attn.max_query_len = max_q;
    b.attn.max_seq_len = max_len;
    b.logits_indices = upload(logits_idx, {static_cast<int64_t>(logits_idx.size())});
    return b;
  }

 private:
  Tensor upload(const std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
    buffers_.push_back(backend_.allocate(std::max<size_t>(v.size(), 1) * sizeof(int32_t)));
    DeviceBuffer& buf = buffers_.back();
    if (!v.empty()) backend_.copy_from_host(buf.data(), v.data(), v.size() * sizeof(int32_t));
    return Tensor(buf.data(), DType::kI32, dims);
  }

  Backend& backend_;
  int block_size_, max_seqs_, max_blocks_;
  std::vector<DeviceBuffer> buffers_;
};

}  // namespace pagoda::test_util
