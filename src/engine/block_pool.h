// The pool of fixed-size KV blocks shared by every layer (a block id indexes each layer's KV
// tensors) and the prefix cache over it (vLLM V1's BlockPool + FreeKVCacheBlockQueue).
//
// Every block with reference count 0 sits in one doubly linked free queue, which is also the LRU
// of cached blocks: new blocks are taken (and their cached content evicted) from the head, freed
// cached blocks join the tail. A cached block stays findable by its hash while it is free, until
// it is evicted; a hit on it takes it out of the queue again. All operations are O(1) per block.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/block_hash.h"

namespace pagoda {

class BlockPool {
 public:
  // Content id of the (virtual) parent of a request's first block.
  static constexpr uint64_t kRootContentId = 0;

  BlockPool(int num_blocks, bool enable_caching);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  bool caching_enabled() const { return enable_caching_; }
  // Blocks with reference count 0, cached or not: all of them can be handed out.
  int num_free_blocks() const { return num_free_; }
  // Fraction of blocks in use by some request (cached free blocks count as free).
  double usage() const;
  int num_cached_blocks() const { return num_cached_; }
  int64_t num_evictions() const { return num_evictions_; }

  // Takes n blocks from the head of the free queue with reference count 1, evicting whatever they
  // cached. The caller checks n <= num_free_blocks() first (a bug otherwise).
  std::vector<int32_t> get_new_blocks(int n);
  // Adds a reference to each block (prefix-cache hits); a free block leaves the free queue.
  void touch(std::span<const int32_t> ids);
  // Drops a reference from each block, in order. Blocks reaching 0 join the free queue in that
  // order, so callers pass a request's blocks tail first: a request's last blocks are the least
  // likely to be shared, and get evicted before its first ones. Blocks that cache nothing go to
  // the head instead: they hold nothing worth keeping, so they are handed out first.
  void free_blocks(std::span<const int32_t> ids);

  // The cached block holding exactly this content (hash, tokens, extra keys) after the cached
  // block whose content id is parent_content_id; -1 if none. Comparing the contents and the
  // parent, not only the hash, is the collision guard: by induction over a request's blocks a hit
  // means the whole prefix is equal.
  int32_t find_cached_block(const BlockHash& hash, uint64_t parent_content_id, std::span<const int32_t> token_ids,
                            std::span<const int64_t> extra_keys) const;
  // Marks an in-use, uncached, full block as cached with this content.
  void cache_block(int32_t id, const BlockHash& hash, uint64_t parent_content_id, std::span<const int32_t> token_ids,
                   std::span<const int64_t> extra_keys);
  // Forgets the cached content of an in-use block (its KV was never written: the step that was
  // to compute it dropped the request). No-op on a block that caches nothing.
  void uncache_block(int32_t id);
  // A number unique to this block's current cached content (never reused, unlike block ids,
  // which an evicted block gets a new content under); 0 if the block caches nothing.
  uint64_t content_id(int32_t id) const { return block(id).content_id; }
  bool is_cached(int32_t id) const { return block(id).content_id != 0; }
  const BlockHash& block_hash(int32_t id) const { return block(id).hash; }
  int ref_count(int32_t id) const { return block(id).ref_cnt; }

  // Drops every cached hash; only possible when no block is in use (returns false otherwise).
  // For benchmarks and tests (vLLM's reset_prefix_cache).
  bool reset_prefix_cache();

  // The free queue from head (next to be evicted) to tail; for tests.
  std::vector<int32_t> free_queue() const;
  // Throws pagoda::Error if the free queue, reference counts or the hash map disagree.
  void check_invariants() const;

 private:
  struct Block {
    int32_t ref_cnt = 0;
    uint64_t content_id = 0;  // 0: caches nothing
    uint64_t parent_content_id = 0;
    BlockHash hash;
    std::vector<int32_t> token_ids;
    std::vector<int64_t> extra_keys;
  };

  const Block& block(int32_t id) const;
  void unlink(int32_t id);
  void link_before(int32_t id, int32_t next);  // next == sentinel_ appends at the tail
  void evict(int32_t id);

  bool enable_caching_;
  std::vector<Block> blocks_;
  // Free queue: a circular list through prev_/next_ with a sentinel at index num_blocks
  // (next_[sentinel] = head, prev_[sentinel] = tail), so links never need a null check. A block
  // in use has prev_ = next_ = -1.
  int32_t sentinel_;
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  int num_free_ = 0;
  int num_cached_ = 0;
  int64_t num_evictions_ = 0;
  uint64_t next_content_id_ = 1;
  // Usually one block per hash; more when requests computed the same prefix at the same time or
  // when hashes collide.
  std::unordered_map<BlockHash, std::vector<int32_t>, BlockHashHasher> cached_;
};

}  // namespace pagoda
