// KvCacheManager: block tables, prefix-cache hits (block-granular, never the whole sequence),
// statistics, LRU eviction, shared prefixes, the collision guard, out-of-memory behaviour, and a
// randomized scheduler-like stress run that checks every hit against the KV actually written.
#include "engine/kv_cache_manager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"

namespace pagoda {
namespace {

constexpr int kBs = 16;

std::vector<int32_t> iota_tokens(int n, int32_t start = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

Request make_request(const std::string& id, std::vector<int32_t> tokens, std::vector<int64_t> extra = {}) {
  Request r;
  r.request_id = id;
  r.all_token_ids = std::move(tokens);
  r.num_prompt_tokens = r.num_tokens();
  r.extra_keys = std::move(extra);
  return r;
}

// Admits a request and "computes" its whole prompt in one step; returns the hit tokens.
int admit(KvCacheManager& m, Request& r) {
  ComputedBlocks hit = m.get_computed_blocks(r);
  EXPECT_TRUE(m.allocate_slots(r, r.num_tokens() - hit.num_computed_tokens, hit.num_computed_tokens, hit.blocks));
  r.num_computed_tokens = r.num_tokens();
  return hit.num_computed_tokens;
}

// One decode step: the sampled token joins the sequence, then gets its slot.
bool decode(KvCacheManager& m, Request& r, int32_t token) {
  r.all_token_ids.push_back(token);
  if (!m.allocate_slots(r, 1)) return false;
  r.num_computed_tokens = r.num_tokens();
  return true;
}

std::vector<int32_t> table(const KvCacheManager& m, const Request& r) {
  std::span<const int32_t> t = m.block_table(r.request_id);
  return {t.begin(), t.end()};
}

TEST(KvCacheManager, AllocationAndFreeReturnEveryBlock) {
  KvCacheManager m(10, kBs);
  Request a = make_request("a", iota_tokens(33));
  Request b = make_request("b", iota_tokens(5, 900));
  admit(m, a);
  admit(m, b);
  EXPECT_EQ(table(m, a).size(), 3u);
  EXPECT_EQ(table(m, b).size(), 1u);
  EXPECT_EQ(m.num_free_blocks(), 6);
  EXPECT_DOUBLE_EQ(m.usage(), 0.4);
  m.check_invariants();
  m.free(a);
  m.free(b);
  m.free(b);  // unknown ids are ignored
  EXPECT_EQ(m.num_free_blocks(), 10);
  EXPECT_DOUBLE_EQ(m.usage(), 0.0);
  EXPECT_TRUE(m.block_table("a").empty());
  m.check_invariants();
}

// Hybrid models: each request holding blocks owns one recurrent-state slot of its own; a request
// cannot be admitted without one, and free() gives it back.
TEST(KvCacheManager, StateSlotsAreOwnedPerRequest) {
  KvCacheConfig cfg;
  cfg.num_blocks = 32;
  cfg.enable_prefix_caching = false;
  cfg.num_state_slots = 2;
  KvCacheManager kv(cfg);
  Request a = make_request("a", iota_tokens(20));
  Request b = make_request("b", iota_tokens(3));
  Request c = make_request("c", iota_tokens(3));
  ASSERT_TRUE(kv.allocate_slots(a, 20));
  ASSERT_TRUE(kv.allocate_slots(b, 3));
  EXPECT_NE(kv.state_slot("a"), kv.state_slot("b"));
  EXPECT_GE(kv.state_slot("a"), 0);
  EXPECT_LT(kv.state_slot("a"), 2);
  EXPECT_GE(kv.state_slot("b"), 0);
  EXPECT_LT(kv.state_slot("b"), 2);
  const int free_blocks = kv.num_free_blocks();
  EXPECT_FALSE(kv.allocate_slots(c, 3));  // blocks to spare, but no slot: nothing taken
  EXPECT_EQ(kv.num_free_blocks(), free_blocks);
  EXPECT_EQ(kv.state_slot("c"), -1);
  // Growing a request keeps its slot.
  const int32_t slot_a = kv.state_slot("a");
  a.num_computed_tokens = 20;
  a.all_token_ids.push_back(7);
  ASSERT_TRUE(kv.allocate_slots(a, 1));
  EXPECT_EQ(kv.state_slot("a"), slot_a);
  kv.free(a);
  EXPECT_EQ(kv.state_slot("a"), -1);
  EXPECT_EQ(kv.num_free_state_slots(), 1);
  ASSERT_TRUE(kv.allocate_slots(c, 3));
  EXPECT_EQ(kv.state_slot("c"), slot_a);
  kv.free(b);
  kv.free(c);
  EXPECT_EQ(kv.num_free_state_slots(), 2);
  EXPECT_EQ(kv.num_free_blocks(), 32);
  // Prefix caching cannot be combined with recurrent state.
  cfg.enable_prefix_caching = true;
  EXPECT_THROW(KvCacheManager{cfg}, Error);
}

TEST(KvCacheManager, DecodeTakesANewBlockOnlyAtABlockBoundary) {
  KvCacheManager m(10, kBs);
  Request a = make_request("a", iota_tokens(31));
  admit(m, a);
  EXPECT_EQ(table(m, a).size(), 2u);
  ASSERT_TRUE(decode(m, a, 7));  // 32 tokens: still two blocks, now both full and cached
  EXPECT_EQ(table(m, a).size(), 2u);
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);
  ASSERT_TRUE(decode(m, a, 8));  // 33
  EXPECT_EQ(table(m, a).size(), 3u);
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);
  m.check_invariants();
}

TEST(KvCacheManager, PrefixHitsAreBlockGranular) {
  KvCacheManager m(20, kBs);
  Request a = make_request("a", iota_tokens(40));
  EXPECT_EQ(admit(m, a), 0);
  std::vector<int32_t> a_blocks = table(m, a);

  std::vector<int32_t> tokens = iota_tokens(40);
  tokens[35] = 1;  // differs inside the partial third block: two blocks hit
  Request b = make_request("b", tokens);
  EXPECT_EQ(admit(m, b), 32);
  tokens[20] = 1;  // differs inside the second block: one block hits
  Request c = make_request("c", tokens);
  EXPECT_EQ(admit(m, c), 16);
  EXPECT_EQ(table(m, b)[0], a_blocks[0]);
  EXPECT_EQ(table(m, b)[1], a_blocks[1]);
  EXPECT_NE(table(m, b)[2], a_blocks[2]);
  EXPECT_EQ(table(m, c)[0], a_blocks[0]);
  EXPECT_NE(table(m, c)[1], a_blocks[1]);
  m.check_invariants();
}

TEST(KvCacheManager, NeverReportsTheWholeSequenceAsCached) {
  KvCacheManager m(20, kBs);
  Request a = make_request("a", iota_tokens(32));
  admit(m, a);
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);
  Request same = make_request("same", iota_tokens(32));
  ComputedBlocks hit = m.get_computed_blocks(same);
  EXPECT_EQ(hit.num_computed_tokens, 16);  // the last token must be computed for its logits
  Request longer = make_request("longer", iota_tokens(33));
  EXPECT_EQ(m.get_computed_blocks(longer).num_computed_tokens, 32);
}

TEST(KvCacheManager, PartialLastBlockIsNeverCached) {
  KvCacheManager m(20, kBs);
  Request a = make_request("a", iota_tokens(20));
  admit(m, a);
  EXPECT_EQ(m.pool().num_cached_blocks(), 1);
  Request b = make_request("b", iota_tokens(60));
  EXPECT_EQ(m.get_computed_blocks(b).num_computed_tokens, 16);
  // A chunked prefill caches only the blocks its chunk completes.
  Request c = make_request("c", iota_tokens(60, 5000));
  ASSERT_TRUE(m.allocate_slots(c, 24));
  EXPECT_EQ(m.pool().num_cached_blocks(), 2);
  c.num_computed_tokens = 24;
  ASSERT_TRUE(m.allocate_slots(c, 24));
  EXPECT_EQ(m.pool().num_cached_blocks(), 4);
  m.check_invariants();
}

TEST(KvCacheManager, CountsQueriesAndHitsInTokens) {
  KvCacheManager m(20, kBs);
  Request a = make_request("a", iota_tokens(40));
  Request b = make_request("b", iota_tokens(50));
  admit(m, a);
  admit(m, b);
  const PrefixCacheStats& s = m.prefix_cache_stats();
  EXPECT_EQ(s.requests, 2);
  EXPECT_EQ(s.queries, 90);
  EXPECT_EQ(s.hits, 32);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 32.0 / 90.0);
}

TEST(KvCacheManager, EvictsLeastRecentlyFreedFirstAndTailBlocksBeforeHeadBlocks) {
  KvCacheManager m(6, kBs);
  Request a = make_request("a", iota_tokens(48, 100));
  Request b = make_request("b", iota_tokens(48, 1000));
  admit(m, a);
  admit(m, b);
  std::vector<int32_t> a_blocks = table(m, a);
  std::vector<int32_t> b_blocks = table(m, b);
  m.free(a);
  m.free(b);
  std::vector<int32_t> expected = {a_blocks[2], a_blocks[1], a_blocks[0], b_blocks[2], b_blocks[1], b_blocks[0]};
  EXPECT_EQ(m.pool().free_queue(), expected);

  // One new block evicts a's tail block; a's first two blocks still hit.
  Request c = make_request("c", iota_tokens(10, 7000));
  admit(m, c);
  EXPECT_EQ(table(m, c), std::vector<int32_t>{a_blocks[2]});
  Request a2 = make_request("a2", iota_tokens(49, 100));
  EXPECT_EQ(m.get_computed_blocks(a2).num_computed_tokens, 32);
  // Three more evict the rest of a; b is untouched.
  Request d = make_request("d", iota_tokens(40, 9000));
  admit(m, d);
  EXPECT_EQ(table(m, d), (std::vector<int32_t>{a_blocks[1], a_blocks[0], b_blocks[2]}));
  EXPECT_EQ(m.get_computed_blocks(a2).num_computed_tokens, 0);
  Request b2 = make_request("b2", iota_tokens(49, 1000));
  EXPECT_EQ(m.get_computed_blocks(b2).num_computed_tokens, 32);
  m.check_invariants();
}

TEST(KvCacheManager, AHitMovesFreedBlocksBackOutOfTheLru) {
  KvCacheManager m(4, kBs);
  Request a = make_request("a", iota_tokens(33));
  admit(m, a);
  m.free(a);
  EXPECT_EQ(m.num_free_blocks(), 4);
  Request b = make_request("b", iota_tokens(40));
  EXPECT_EQ(admit(m, b), 32);
  EXPECT_EQ(m.num_free_blocks(), 1);
  for (int32_t id : table(m, b)) EXPECT_EQ(m.pool().ref_count(id), 1);
  m.check_invariants();
}

TEST(KvCacheManager, SharedPrefixBlocksAreRefCounted) {
  KvCacheManager m(10, kBs);
  Request a = make_request("a", iota_tokens(40));
  Request b = make_request("b", iota_tokens(45));
  admit(m, a);
  EXPECT_EQ(admit(m, b), 32);
  std::vector<int32_t> shared = {table(m, a)[0], table(m, a)[1]};
  for (int32_t id : shared) EXPECT_EQ(m.pool().ref_count(id), 2);
  EXPECT_EQ(m.num_free_blocks(), 10 - 4);
  m.check_invariants();
  m.free(a);
  for (int32_t id : shared) EXPECT_EQ(m.pool().ref_count(id), 1);
  EXPECT_EQ(m.num_free_blocks(), 10 - 2 - 1);  // b's two shared + its own third block
  Request c = make_request("c", iota_tokens(45));
  EXPECT_EQ(admit(m, c), 32);
  m.free(b);
  m.free(c);
  EXPECT_EQ(m.num_free_blocks(), 10);
  m.check_invariants();
}

// Every block gets the same hash: only the content and parent checks stand between a lookup and
// wrong KV.
BlockHash constant_hash(const BlockHash&, std::span<const int32_t>, std::span<const int64_t>) { return BlockHash{1, 1}; }

TEST(KvCacheManager, HashCollisionsNeverYieldAWrongHit) {
  KvCacheManager m(20, kBs, true, constant_hash);
  std::vector<int32_t> blk_a = iota_tokens(16, 100), blk_b = iota_tokens(16, 200), blk_c = iota_tokens(16, 300);
  auto concat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    out.push_back(1);  // one more token so full blocks can hit
    return out;
  };
  Request r1 = make_request("r1", concat({blk_a, blk_b}));
  admit(m, r1);
  // Same second block after a different first block: nothing hits.
  Request r2 = make_request("r2", concat({blk_c, blk_b}));
  EXPECT_EQ(admit(m, r2), 0);
  // Now both chains are cached under one hash; each lookup must follow its own parent.
  Request r3 = make_request("r3", concat({blk_c, blk_b}));
  EXPECT_EQ(admit(m, r3), 32);
  EXPECT_EQ(table(m, r3)[0], table(m, r2)[0]);
  EXPECT_EQ(table(m, r3)[1], table(m, r2)[1]);
  Request r4 = make_request("r4", concat({blk_a, blk_b}));
  EXPECT_EQ(admit(m, r4), 32);
  EXPECT_EQ(table(m, r4)[1], table(m, r1)[1]);
  // Different tokens under the same hash, and different extra keys, miss.
  Request r5 = make_request("r5", concat({blk_b, blk_a}));
  EXPECT_EQ(m.get_computed_blocks(r5).num_computed_tokens, 0);
  Request r6 = make_request("r6", concat({blk_a, blk_b}), {7});
  EXPECT_EQ(m.get_computed_blocks(r6).num_computed_tokens, 0);
  m.check_invariants();
}

TEST(KvCacheManager, ExtraKeysSeparateOtherwiseEqualPrefixes) {
  KvCacheManager m(20, kBs);
  Request base = make_request("base", iota_tokens(40), {1});
  admit(m, base);
  Request other_lora = make_request("x", iota_tokens(40), {2});
  EXPECT_EQ(m.get_computed_blocks(other_lora).num_computed_tokens, 0);
  Request no_lora = make_request("y", iota_tokens(40));
  EXPECT_EQ(m.get_computed_blocks(no_lora).num_computed_tokens, 0);
  Request same_lora = make_request("z", iota_tokens(40), {1});
  EXPECT_EQ(m.get_computed_blocks(same_lora).num_computed_tokens, 32);
  // Prompt-logprob requests read nothing from the cache.
  same_lora.skip_reading_prefix_cache = true;
  EXPECT_EQ(m.get_computed_blocks(same_lora).num_computed_tokens, 0);
}

TEST(KvCacheManager, DisabledPrefixCachingNeverHits) {
  KvCacheManager m(20, kBs, false);
  Request a = make_request("a", iota_tokens(40));
  admit(m, a);
  Request b = make_request("b", iota_tokens(40));
  EXPECT_EQ(admit(m, b), 0);
  EXPECT_EQ(m.pool().num_cached_blocks(), 0);
  EXPECT_TRUE(b.block_hashes.empty());
  EXPECT_EQ(m.prefix_cache_stats().queries, 0);
  m.free(a);
  m.free(b);
  EXPECT_EQ(m.num_free_blocks(), 20);
  m.check_invariants();
}

TEST(KvCacheManager, OutOfBlocksReturnsFalseAndChangesNothing) {
  KvCacheManager m(4, kBs);
  Request a = make_request("a", iota_tokens(48));
  admit(m, a);
  Request b = make_request("b", iota_tokens(20, 5000));
  EXPECT_FALSE(m.allocate_slots(b, 20));
  EXPECT_TRUE(m.block_table("b").empty());
  EXPECT_EQ(m.num_free_blocks(), 1);
  m.check_invariants();
  // A running request that cannot grow keeps what it had.
  EXPECT_TRUE(decode(m, a, 1));  // 49 tokens: takes the last block
  EXPECT_FALSE(m.allocate_slots(a, 16));
  EXPECT_EQ(table(m, a).size(), 4u);
  m.check_invariants();

  // Free cached hits count against the free blocks: 3 hits + 3 new blocks > 4.
  m.free(a);
  Request c = make_request("c", iota_tokens(88));
  ComputedBlocks hit = m.get_computed_blocks(c);
  ASSERT_EQ(hit.num_computed_tokens, 48);
  EXPECT_FALSE(m.allocate_slots(c, 40, 48, hit.blocks));
  EXPECT_EQ(m.num_free_blocks(), 4);
  EXPECT_EQ(m.pool().num_cached_blocks(), 3);
  m.check_invariants();
  // 3 hits + 1 new block fit exactly.
  Request d = make_request("d", iota_tokens(64));
  hit = m.get_computed_blocks(d);
  ASSERT_EQ(hit.num_computed_tokens, 48);
  EXPECT_TRUE(m.allocate_slots(d, 16, 48, hit.blocks));
  EXPECT_EQ(m.num_free_blocks(), 0);
  m.check_invariants();
}

TEST(KvCacheManager, RejectsBadConfigurations) {
  EXPECT_THROW(KvCacheManager(0, 16), Error);
  EXPECT_THROW(KvCacheManager(8, 0), Error);
  KvCacheConfig two;
  two.num_blocks = 8;
  two.groups.resize(2);
  EXPECT_THROW(KvCacheManager{two}, Error);
}

// A scheduler-like random walk: admit (with prefix hits), prefill chunks, decode, preempt, finish.
// Every token computed is "written" into a simulated KV (block, slot) -> token; every hit must
// read back exactly the request's tokens, blocks written to must be exclusively owned, and the
// pool's accounting must hold after every operation.
void stress(const BlockHasher& hasher, uint32_t seed, bool caching) {
  constexpr int kBlocks = 64;
  constexpr int kBlock = 4;
  KvCacheManager m(kBlocks, kBlock, caching, hasher);
  std::mt19937 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<std::vector<int32_t>> kv(kBlocks, std::vector<int32_t>(kBlock, -1));
  // A few shared system prompts over a tiny vocabulary make hits (and near misses) frequent.
  std::vector<std::vector<int32_t>> prefixes;
  for (int p = 0; p < 4; ++p) {
    std::vector<int32_t> t;
    for (int i = 0; i < uniform(2, 30); ++i) t.push_back(uniform(0, 3));
    prefixes.push_back(t);
  }
  std::map<std::string, Request> waiting, running;
  int next_id = 0;
  int64_t hits = 0;

  auto compute = [&](Request& r, int n) {
    std::span<const int32_t> t = m.block_table(r.request_id);
    for (int p = r.num_computed_tokens; p < r.num_computed_tokens + n; ++p) {
      const int32_t b = t[static_cast<size_t>(p / kBlock)];
      ASSERT_TRUE(b >= 0 && b < kBlocks);
      ASSERT_EQ(m.pool().ref_count(b), 1) << "writing into a shared block";
      kv[static_cast<size_t>(b)][static_cast<size_t>(p % kBlock)] = r.all_token_ids[static_cast<size_t>(p)];
    }
    r.num_computed_tokens += n;
  };

  for (int step = 0; step < 4000; ++step) {
    const int op = uniform(0, 9);
    if (op <= 2 && waiting.size() + running.size() < 24) {  // a new request
      std::vector<int32_t> t = prefixes[static_cast<size_t>(uniform(0, 3))];
      t.resize(static_cast<size_t>(uniform(0, static_cast<int>(t.size()))));
      for (int i = uniform(1, 12); i > 0; --i) t.push_back(uniform(0, 3));
      std::vector<int64_t> extra;
      if (uniform(0, 4) == 0) extra.push_back(uniform(1, 2));
      std::string id = "r" + std::to_string(next_id++);
      waiting.emplace(id, make_request(id, t, extra));
    } else if (op <= 4 && !waiting.empty()) {  // admit a waiting (new or preempted) request
      auto it = std::next(waiting.begin(), uniform(0, static_cast<int>(waiting.size()) - 1));
      Request& r = it->second;
      ComputedBlocks hit = m.get_computed_blocks(r);
      ASSERT_LT(hit.num_computed_tokens, r.num_tokens());
      for (size_t i = 0; i < hit.blocks.block_ids[0].size(); ++i) {
        const int32_t b = hit.blocks.block_ids[0][i];
        for (int s = 0; s < kBlock; ++s)
          ASSERT_EQ(kv[static_cast<size_t>(b)][static_cast<size_t>(s)], r.all_token_ids[i * kBlock + static_cast<size_t>(s)])
              << "prefix hit returned KV of other tokens";
      }
      const int chunk = uniform(1, r.num_tokens() - hit.num_computed_tokens);
      if (m.allocate_slots(r, chunk, hit.num_computed_tokens, hit.blocks)) {
        hits += hit.num_computed_tokens;
        r.num_computed_tokens = hit.num_computed_tokens;
        compute(r, chunk);
        running.emplace(it->first, std::move(r));
        waiting.erase(it);
      } else {
        ASSERT_TRUE(m.block_table(r.request_id).empty());
      }
    } else if (op <= 7 && !running.empty()) {  // one step of a running request
      auto it = std::next(running.begin(), uniform(0, static_cast<int>(running.size()) - 1));
      Request& r = it->second;
      int n = 1;
      if (r.num_computed_tokens < r.num_tokens()) n = uniform(1, r.num_tokens() - r.num_computed_tokens);
      else r.all_token_ids.push_back(uniform(0, 3));  // decode: the sampled token
      if (m.allocate_slots(r, n)) {
        compute(r, n);
      } else {  // preempt (recompute later)
        m.free(r);
        r.num_computed_tokens = 0;
        waiting.emplace(it->first, std::move(r));
        running.erase(it);
      }
    } else if (!running.empty()) {  // finish
      auto it = std::next(running.begin(), uniform(0, static_cast<int>(running.size()) - 1));
      m.free(it->second);
      running.erase(it);
    }
    m.check_invariants();
    if (testing::Test::HasFatalFailure()) return;
  }
  for (auto& [id, r] : running) m.free(r);
  EXPECT_EQ(m.num_free_blocks(), kBlocks);
  m.check_invariants();
  if (caching) {
    EXPECT_GT(hits, 0);
  } else {
    EXPECT_EQ(hits, 0);
  }
}

TEST(KvCacheManager, RandomizedStress) {
  for (uint32_t seed = 1; seed <= 5; ++seed) stress(BlockHasher{}, seed, true);
}

TEST(KvCacheManager, RandomizedStressWithCollidingHashes) {
  // Four hash values in all: nearly every lookup meets colliding candidates.
  BlockHasher weak = [](const BlockHash&, std::span<const int32_t> t, std::span<const int64_t>) {
    return BlockHash{static_cast<uint64_t>(t[0] & 3), 0};
  };
  for (uint32_t seed = 1; seed <= 5; ++seed) stress(weak, seed, true);
}

TEST(KvCacheManager, RandomizedStressWithoutPrefixCaching) { stress(BlockHasher{}, 9, false); }

}  // namespace
}  // namespace pagoda
