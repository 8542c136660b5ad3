#include "engine/block_pool.h"

#include <algorithm>

#include "base/error.h"

namespace pagoda {

BlockPool::BlockPool(int num_blocks, bool enable_caching)
    : enable_caching_(enable_caching),
      blocks_(static_cast<size_t>(std::max(num_blocks, 0))),
      sentinel_(num_blocks),
      prev_(static_cast<size_t>(std::max(num_blocks, 0)) + 1, -1),
      next_(static_cast<size_t>(std::max(num_blocks, 0)) + 1, -1) {
  PAGODA_CHECK(num_blocks > 0, "the KV cache needs at least one block (got ", num_blocks, ")");
  prev_[sentinel_] = next_[sentinel_] = sentinel_;
  // Initially in id order, so a fresh engine hands out blocks 0, 1, 2, ...
  for (int32_t id = 0; id < num_blocks; ++id) link_before(id, sentinel_);
  num_free_ = num_blocks;
}

const BlockPool::Block& BlockPool::block(int32_t id) const {
  PAGODA_ASSERT(id >= 0 && id < num_blocks());
  return blocks_[id];
}

double BlockPool::usage() const { return 1.0 - static_cast<double>(num_free_) / num_blocks(); }

void BlockPool::unlink(int32_t id) {
  PAGODA_ASSERT(next_[id] >= 0);
  next_[prev_[id]] = next_[id];
  prev_[next_[id]] = prev_[id];
  prev_[id] = next_[id] = -1;
}

void BlockPool::link_before(int32_t id, int32_t next) {
  PAGODA_ASSERT(next_[id] < 0);
  const int32_t prev = prev_[next];
  prev_[id] = prev;
  next_[id] = next;
  next_[prev] = id;
  prev_[next] = id;
}

void BlockPool::evict(int32_t id) {
  Block& b = blocks_[id];
  auto it = cached_.find(b.hash);
  PAGODA_ASSERT(it != cached_.end());
  std::vector<int32_t>& ids = it->second;
  auto pos = std::find(ids.begin(), ids.end(), id);
  PAGODA_ASSERT(pos != ids.end());
  ids.erase(pos);
  if (ids.empty()) cached_.erase(it);
  b.content_id = 0;
  b.parent_content_id = 0;
  b.hash = BlockHash{};
  b.token_ids.clear();
  b.extra_keys.clear();
  --num_cached_;
  ++num_evictions_;
}

void BlockPool::uncache_block(int32_t id) {
  PAGODA_ASSERT(block(id).ref_cnt > 0);
  if (blocks_[static_cast<size_t>(id)].content_id == 0) return;
  evict(id);
  --num_evictions_;  // not an eviction: nothing valid was lost
}

std::vector<int32_t> BlockPool::get_new_blocks(int n) {
  PAGODA_ASSERT(n >= 0 && n <= num_free_);
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const int32_t id = next_[sentinel_];
    unlink(id);
    Block& b = blocks_[id];
    PAGODA_ASSERT(b.ref_cnt == 0);
    if (b.content_id != 0) evict(id);
    b.ref_cnt = 1;
    out.push_back(id);
  }
  num_free_ -= n;
  return out;
}

void BlockPool::touch(std::span<const int32_t> ids) {
  for (int32_t id : ids) {
    PAGODA_ASSERT(id >= 0 && id < num_blocks());
    Block& b = blocks_[id];
    if (b.ref_cnt == 0) {
      unlink(id);
      --num_free_;
    }
    ++b.ref_cnt;
  }
}

void BlockPool::free_blocks(std::span<const int32_t> ids) {
  for (int32_t id : ids) {
    PAGODA_ASSERT(id >= 0 && id < num_blocks());
    Block& b = blocks_[id];
    PAGODA_ASSERT(b.ref_cnt > 0);
    if (--b.ref_cnt == 0) {
      link_before(id, b.content_id != 0 ? sentinel_ : next_[sentinel_]);
      ++num_free_;
    }
  }
}

int32_t BlockPool::find_cached_block(const BlockHash& hash, uint64_t parent_content_id,
                                     std::span<const int32_t> token_ids, std::span<const int64_t> extra_keys) const {
  if (!enable_caching_) return -1;
  auto it = cached_.find(hash);
  if (it == cached_.end()) return -1;
  for (int32_t id : it->second) {
    const Block& b = blocks_[id];
    if (b.parent_content_id == parent_content_id && std::ranges::equal(b.token_ids, token_ids) &&
        std::ranges::equal(b.extra_keys, extra_keys)) {
      return id;
    }
  }
  return -1;
}

void BlockPool::cache_block(int32_t id, const BlockHash& hash, uint64_t parent_content_id,
                            std::span<const int32_t> token_ids, std::span<const int64_t> extra_keys) {
  PAGODA_ASSERT(enable_caching_);
  PAGODA_ASSERT(id >= 0 && id < num_blocks());
  Block& b = blocks_[id];
  PAGODA_ASSERT(b.ref_cnt > 0 && b.content_id == 0);
  b.content_id = next_content_id_++;
  b.parent_content_id = parent_content_id;
  b.hash = hash;
  b.token_ids.assign(token_ids.begin(), token_ids.end());
  b.extra_keys.assign(extra_keys.begin(), extra_keys.end());
  cached_[hash].push_back(id);
  ++num_cached_;
}

bool BlockPool::reset_prefix_cache() {
  if (num_free_ != num_blocks()) return false;
  for (int32_t id = 0; id < num_blocks(); ++id) {
    if (blocks_[id].content_id != 0) evict(id);
  }
  return true;
}

std::vector<int32_t> BlockPool::free_queue() const {
  std::vector<int32_t> out;
  for (int32_t id = next_[sentinel_]; id != sentinel_; id = next_[id]) out.push_back(id);
  return out;
}

void BlockPool::check_invariants() const {
  int queued = 0;
  int32_t prev = sentinel_;
  for (int32_t id = next_[sentinel_]; id != sentinel_; id = next_[id]) {
    PAGODA_CHECK(id >= 0 && id < num_blocks(), "free queue holds out-of-range block ", id);
    PAGODA_CHECK(prev_[id] == prev, "free queue back link broken at block ", id);
    PAGODA_CHECK(blocks_[id].ref_cnt == 0, "block ", id, " is in the free queue with refcount ", blocks_[id].ref_cnt);
    PAGODA_CHECK(++queued <= num_blocks(), "free queue has a cycle");
    prev = id;
  }
  PAGODA_CHECK(prev_[sentinel_] == prev, "free queue tail link broken");
  int zero = 0;
  int cached = 0;
  for (int32_t id = 0; id < num_blocks(); ++id) {
    const Block& b = blocks_[id];
    PAGODA_CHECK(b.ref_cnt >= 0, "block ", id, " has negative refcount");
    if (b.ref_cnt == 0) ++zero;
    else PAGODA_CHECK(next_[id] < 0 && prev_[id] < 0, "in-use block ", id, " is linked into the free queue");
    if (b.content_id != 0) {
      ++cached;
      auto it = cached_.find(b.hash);
      PAGODA_CHECK(it != cached_.end() && std::ranges::count(it->second, id) == 1,
                   "cached block ", id, " is missing from the hash map");
    }
  }
  PAGODA_CHECK(zero == queued && queued == num_free_, "free count mismatch: ", zero, " blocks at refcount 0, ",
               queued, " queued, num_free ", num_free_);
  size_t mapped = 0;
  for (const auto& [hash, ids] : cached_) {
    PAGODA_CHECK(!ids.empty(), "empty hash-map entry");
    for (int32_t id : ids) PAGODA_CHECK(blocks_[id].content_id != 0 && blocks_[id].hash == hash, "stale hash-map entry for block ", id);
    mapped += ids.size();
  }
  PAGODA_CHECK(cached == num_cached_ && mapped == static_cast<size_t>(cached), "cached block count mismatch");
}

}  // namespace pagoda
