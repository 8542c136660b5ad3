// The KV cache manager (vLLM V1's KVCacheManager): block tables per request over one BlockPool,
// with automatic prefix caching. Pure host-side bookkeeping: it never touches KV memory; block
// ids index every layer's KV tensors (backend KvCacheLayer).
//
// Scheduler protocol, per request and step (as in vLLM):
//   new (or resumed) request:  auto hit = get_computed_blocks(r);
//                              allocate_slots(r, n, hit.num_computed_tokens, hit.blocks)
//   running request:           allocate_slots(r, n)
//   finished / preempted:      free(r)
// get_computed_blocks only looks; nothing may be allocated between it and the allocate_slots call
// that consumes its result (a free hit block could be evicted otherwise). allocate_slots returning
// false changed nothing; the scheduler then preempts someone and retries, or waits.
//
// Layer types are first-class: the cache is a list of groups, each with a KvCacheSpec, and every
// block list in the API is per group. Only full attention exists so far; Gated DeltaNet layers
// will add a group whose requests hold one fixed state slot each.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/block_hash.h"
#include "engine/block_pool.h"
#include "engine/request.h"

namespace pagoda {

enum class KvCacheKind {
  kFullAttention,  // pages K and V of every token into block_size-token blocks
};

struct KvCacheSpec {
  KvCacheKind kind = KvCacheKind::kFullAttention;
  int block_size = 16;
  std::vector<int> layer_indices;  // model layers in this group (informational for now)
};

struct KvCacheConfig {
  int num_blocks = 0;
  std::vector<KvCacheSpec> groups;  // empty: one full-attention group of block size 16
  bool enable_prefix_caching = true;
  BlockHasher hasher;  // empty: hash_block_tokens
  // Hybrid models (linear-attention layers): slots of recurrent state, one per request holding
  // blocks, taken at admission and given back by free(). 0: the model keeps no such state.
  int num_state_slots = 0;
};

// Block ids of one request, one list per group (vLLM's KVCacheBlocks).
struct KvCacheBlocks {
  std::vector<std::vector<int32_t>> block_ids;  // [group][block index]
  bool empty() const {
    for (const auto& g : block_ids)
      if (!g.empty()) return false;
    return true;
  }
};

struct ComputedBlocks {
  KvCacheBlocks blocks;         // cache hits, to pass to allocate_slots
  int num_computed_tokens = 0;  // tokens they cover (a multiple of the block size)
};

// Counted in tokens, like vLLM's prefix-cache hit rate, once per admission (the allocate_slots
// call that consumed a lookup), so a request that waits for memory and looks again is counted
// once. Requests resumed after preemption are counted apart (they mostly hit their own blocks).
struct PrefixCacheStats {
  int64_t requests = 0;  // admitted requests that read the cache
  int64_t queries = 0;   // their tokens looked up
  int64_t hits = 0;      // of those, tokens found cached
  int64_t preempted_requests = 0;
  int64_t preempted_queries = 0;
  int64_t preempted_hits = 0;
  double hit_rate() const { return queries > 0 ? static_cast<double>(hits) / static_cast<double>(queries) : 0.0; }
};

class KvCacheManager {
 public:
  // One full-attention group.
  KvCacheManager(int num_blocks, int block_size, bool enable_prefix_caching = true, BlockHasher hasher = {});
  explicit KvCacheManager(KvCacheConfig config);

  // The longest cached prefix of the request, in whole blocks. Never the whole sequence: at least
  // the last token is recomputed, because the step must produce its logits. Empty when prefix
  // caching is off or the request skips it. Extends request.block_hashes.
  ComputedBlocks get_computed_blocks(Request& request);

  // Makes room for num_new_tokens more tokens after request.num_computed_tokens +
  // num_new_computed_tokens (the latter covered by new_computed_blocks, the hits from
  // get_computed_blocks, which are only passed when the request holds no blocks). Blocks that
  // will be full of known tokens (no placeholders) once this step ran are entered into the prefix cache (the step writes their KV
  // before any later step can read it). Returns false, changing nothing, if the pool is short.
  bool allocate_slots(Request& request, int num_new_tokens, int num_new_computed_tokens = 0,
                      const KvCacheBlocks& new_computed_blocks = {});

  // Releases the request's blocks (tail first into the LRU); cached ones stay findable until
  // evicted. Unknown ids are ignored, so it is safe on a request that never got blocks.
  void free(const Request& request);
  // The same for a request whose step was scheduled but will not run (the priority policy
  // preempting a request it had already scheduled): blocks cached at allocation but not computed
  // (holding tokens at or past request.num_computed_tokens) are first taken out of the prefix
  // cache, so no later request can hit KV that was never written.
  void free_unrun(const Request& request);

  // The request's recurrent-state slot (hybrid models), -1 if it holds none.
  int32_t state_slot(const std::string& request_id) const;
  int num_free_state_slots() const { return static_cast<int>(free_state_slots_.size()); }

  // The request's block table for a group (empty if it holds none).
  std::span<const int32_t> block_table(const std::string& request_id, int group = 0) const;
  KvCacheBlocks get_blocks(const std::string& request_id) const;

  int num_groups() const { return static_cast<int>(specs_.size()); }
  const KvCacheSpec& spec(int group = 0) const { return specs_.at(static_cast<size_t>(group)); }
  int block_size() const { return specs_[0].block_size; }
  int num_blocks() const { return pool_.num_blocks(); }
  int num_free_blocks() const { return pool_.num_free_blocks(); }
  double usage() const { return pool_.usage(); }
  bool prefix_caching_enabled() const { return enable_prefix_caching_; }
  const PrefixCacheStats& prefix_cache_stats() const { return stats_; }
  // Forgets every cached block; false (and nothing done) while any request holds blocks.
  bool reset_prefix_cache() { return pool_.reset_prefix_cache(); }

  const BlockPool& pool() const { return pool_; }
  // Throws pagoda::Error unless every block's refcount equals the number of block tables holding
  // it and the pool is consistent. For tests and debug builds.
  void check_invariants() const;

 private:
  struct RequestBlocks {
    std::vector<std::vector<int32_t>> groups;  // block table per group
    int num_cached_blocks = 0;                 // leading full-attention blocks in the prefix cache
    int32_t state_slot = -1;                   // hybrid models: its recurrent-state slot
  };

  void update_block_hashes(Request& request, int num_full_blocks) const;
  void cache_full_blocks(Request& request, RequestBlocks& blocks, int num_tokens);

  std::vector<KvCacheSpec> specs_;
  bool enable_prefix_caching_;
  BlockHasher hasher_;
  BlockPool pool_;
  std::unordered_map<std::string, RequestBlocks> requests_;
  int num_state_slots_ = 0;
  std::vector<int32_t> free_state_slots_;  // a stack; lowest slot on top
  PrefixCacheStats stats_;
};

}  // namespace pagoda
