// BlockPool: the free queue hands out and takes back blocks in LRU order, reference counts decide
// membership, and the prefix cache only answers for identical content after the same parent.
#include "engine/block_pool.h"

#include <gtest/gtest.h>

#include <vector>

#include "base/error.h"
#include "engine/block_hash.h"

namespace pagoda {
namespace {

const std::vector<int32_t> kTokens = {1, 2, 3, 4};
const std::vector<int64_t> kNoExtra;

TEST(BlockPool, RejectsEmptyPool) { EXPECT_THROW(BlockPool(0, true), Error); }

TEST(BlockPool, HandsOutBlocksInIdOrderAndTakesThemBack) {
  BlockPool pool(4, true);
  EXPECT_EQ(pool.free_queue(), (std::vector<int32_t>{0, 1, 2, 3}));
  std::vector<int32_t> got = pool.get_new_blocks(3);
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(pool.num_free_blocks(), 1);
  EXPECT_DOUBLE_EQ(pool.usage(), 0.75);
  for (int32_t id : got) EXPECT_EQ(pool.ref_count(id), 1);
  pool.free_blocks(got);
  EXPECT_EQ(pool.num_free_blocks(), 4);
  EXPECT_DOUBLE_EQ(pool.usage(), 0.0);
  pool.check_invariants();
}

TEST(BlockPool, CachedBlocksJoinTheTailUncachedTheHead) {
  BlockPool pool(4, true);
  std::vector<int32_t> got = pool.get_new_blocks(3);  // 0 1 2; queue: 3
  pool.cache_block(0, BlockHash{1, 1}, BlockPool::kRootContentId, kTokens, kNoExtra);
  pool.cache_block(1, BlockHash{2, 2}, pool.content_id(0), kTokens, kNoExtra);
  pool.free_blocks(std::vector<int32_t>{2, 1, 0});  // tail first, as the manager does
  // Block 2 caches nothing: it is handed out first; then 3; then the cached ones, tail first.
  EXPECT_EQ(pool.free_queue(), (std::vector<int32_t>{2, 3, 1, 0}));
  pool.check_invariants();
}

TEST(BlockPool, TouchTakesAFreeCachedBlockOutOfTheQueue) {
  BlockPool pool(3, true);
  std::vector<int32_t> got = pool.get_new_blocks(1);
  pool.cache_block(got[0], BlockHash{7, 7}, BlockPool::kRootContentId, kTokens, kNoExtra);
  pool.free_blocks(got);
  EXPECT_EQ(pool.num_free_blocks(), 3);
  EXPECT_EQ(pool.find_cached_block(BlockHash{7, 7}, BlockPool::kRootContentId, kTokens, kNoExtra), got[0]);
  pool.touch(got);
  EXPECT_EQ(pool.num_free_blocks(), 2);
  EXPECT_EQ(pool.ref_count(got[0]), 1);
  pool.touch(got);
  EXPECT_EQ(pool.ref_count(got[0]), 2);
  pool.check_invariants();
  pool.free_blocks(got);
  EXPECT_EQ(pool.num_free_blocks(), 2);
  pool.free_blocks(got);
  EXPECT_EQ(pool.num_free_blocks(), 3);
  pool.check_invariants();
}

TEST(BlockPool, ReuseEvictsTheCachedContent) {
  BlockPool pool(1, true);
  std::vector<int32_t> got = pool.get_new_blocks(1);
  pool.cache_block(0, BlockHash{7, 7}, BlockPool::kRootContentId, kTokens, kNoExtra);
  const uint64_t old_content = pool.content_id(0);
  pool.free_blocks(got);
  EXPECT_EQ(pool.num_cached_blocks(), 1);
  got = pool.get_new_blocks(1);
  EXPECT_EQ(pool.num_cached_blocks(), 0);
  EXPECT_EQ(pool.num_evictions(), 1);
  EXPECT_EQ(pool.find_cached_block(BlockHash{7, 7}, BlockPool::kRootContentId, kTokens, kNoExtra), -1);
  // The same id caching new content gets a new content id: children of the old content can
  // never be mistaken for children of the new one.
  pool.cache_block(0, BlockHash{7, 7}, BlockPool::kRootContentId, kTokens, kNoExtra);
  EXPECT_NE(pool.content_id(0), old_content);
  pool.check_invariants();
}

TEST(BlockPool, LookupComparesContentAndParentNotJustTheHash) {
  BlockPool pool(3, true);
  pool.get_new_blocks(2);
  const BlockHash h{5, 5};
  pool.cache_block(0, h, BlockPool::kRootContentId, kTokens, kNoExtra);
  const std::vector<int32_t> other = {1, 2, 3, 5};
  const std::vector<int64_t> lora = {42};
  EXPECT_EQ(pool.find_cached_block(h, BlockPool::kRootContentId, kTokens, kNoExtra), 0);
  EXPECT_EQ(pool.find_cached_block(h, BlockPool::kRootContentId, other, kNoExtra), -1);
  EXPECT_EQ(pool.find_cached_block(h, BlockPool::kRootContentId, kTokens, lora), -1);
  EXPECT_EQ(pool.find_cached_block(h, pool.content_id(0), kTokens, kNoExtra), -1);
  EXPECT_EQ(pool.find_cached_block(BlockHash{5, 6}, BlockPool::kRootContentId, kTokens, kNoExtra), -1);
  // Two blocks under one hash (a collision): each is found by its own content.
  pool.cache_block(1, h, BlockPool::kRootContentId, other, kNoExtra);
  EXPECT_EQ(pool.find_cached_block(h, BlockPool::kRootContentId, kTokens, kNoExtra), 0);
  EXPECT_EQ(pool.find_cached_block(h, BlockPool::kRootContentId, other, kNoExtra), 1);
  pool.check_invariants();
}

TEST(BlockPool, DisabledCachingNeverFinds) {
  BlockPool pool(2, false);
  EXPECT_EQ(pool.find_cached_block(BlockHash{}, BlockPool::kRootContentId, kTokens, kNoExtra), -1);
  pool.get_new_blocks(1);
  EXPECT_THROW(pool.cache_block(0, BlockHash{}, BlockPool::kRootContentId, kTokens, kNoExtra), Error);
}

TEST(BlockPool, ResetPrefixCacheOnlyWhenIdle) {
  BlockPool pool(2, true);
  std::vector<int32_t> got = pool.get_new_blocks(1);
  pool.cache_block(got[0], BlockHash{1, 2}, BlockPool::kRootContentId, kTokens, kNoExtra);
  EXPECT_FALSE(pool.reset_prefix_cache());
  pool.free_blocks(got);
  EXPECT_TRUE(pool.reset_prefix_cache());
  EXPECT_EQ(pool.num_cached_blocks(), 0);
  pool.check_invariants();
}

}  // namespace
}  // namespace pagoda

namespace pagoda {
namespace {

TEST(BlockHash, EveryInputChangesTheHash) {
  const std::vector<int32_t> t = {1, 2, 3, 4, 5};
  const BlockHash h = hash_block_tokens(kRootBlockHash, t, {});
  EXPECT_EQ(h, hash_block_tokens(kRootBlockHash, t, {}));  // reproducible
  std::vector<int32_t> t2 = t;
  t2[4] = 6;
  EXPECT_NE(h, hash_block_tokens(kRootBlockHash, t2, {}));
  EXPECT_NE(h, hash_block_tokens(h, t, {}));  // parent
  const std::vector<int64_t> lora = {3};
  EXPECT_NE(h, hash_block_tokens(kRootBlockHash, t, lora));
  // Tokens and extra keys never shift into each other.
  const std::vector<int32_t> a = {1, 2}, b = {1};
  const std::vector<int64_t> ea = {}, eb = {2};
  EXPECT_NE(hash_block_tokens(kRootBlockHash, a, ea), hash_block_tokens(kRootBlockHash, b, eb));
  // Both 64-bit halves carry information.
  EXPECT_NE(h.lo, h.hi);
  EXPECT_NE(h.lo, hash_block_tokens(kRootBlockHash, t2, {}).lo);
  EXPECT_NE(h.hi, hash_block_tokens(kRootBlockHash, t2, {}).hi);
}

}  // namespace
}  // namespace pagoda
