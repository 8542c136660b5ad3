#include "engine/kv_cache_manager.h"

#include <algorithm>
#include <utility>

#include "base/error.h"

namespace pagoda {
namespace {

std::vector<KvCacheSpec> validated_groups(std::vector<KvCacheSpec> groups) {
  if (groups.empty()) groups.emplace_back();
  // Several groups need a group id in the cache key and a coordinator that intersects their hit
  // lengths (vLLM's HybridKVCacheCoordinator); that arrives with the hybrid models.
  PAGODA_CHECK(groups.size() == 1, "the KV cache manager supports one layer group so far (got ", groups.size(), ")");
  for (const KvCacheSpec& g : groups) {
    PAGODA_CHECK(g.kind == KvCacheKind::kFullAttention, "unsupported KV cache group kind");
    PAGODA_CHECK(g.block_size > 0, "--block-size must be positive (got ", g.block_size, ")");
  }
  return groups;
}

int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace

KvCacheManager::KvCacheManager(int num_blocks, int block_size, bool enable_prefix_caching, BlockHasher hasher)
    : KvCacheManager(KvCacheConfig{num_blocks, {KvCacheSpec{KvCacheKind::kFullAttention, block_size, {}}},
                                   enable_prefix_caching, std::move(hasher)}) {}

KvCacheManager::KvCacheManager(KvCacheConfig config)
    : specs_(validated_groups(std::move(config.groups))),
      enable_prefix_caching_(config.enable_prefix_caching),
      hasher_(config.hasher ? std::move(config.hasher) : BlockHasher(hash_block_tokens)),
      pool_(config.num_blocks, config.enable_prefix_caching) {
  PAGODA_CHECK(config.num_state_slots >= 0, "num_state_slots must be non-negative");
  // A prefix hit would resume a hybrid model's recurrent state that was never stored.
  PAGODA_CHECK(config.num_state_slots == 0 || !config.enable_prefix_caching,
               "prefix caching cannot be on for a model with recurrent state");
  num_state_slots_ = config.num_state_slots;
  for (int32_t s = config.num_state_slots - 1; s >= 0; --s) free_state_slots_.push_back(s);
}

void KvCacheManager::update_block_hashes(Request& request, int num_full_blocks) const {
  const int bs = block_size();
  std::vector<BlockHash>& hashes = request.block_hashes;
  // Tokens are only ever appended, so existing hashes stay valid; a shorter sequence (should the
  // scheduler ever roll tokens back) invalidates the hashes past its end.
  const int max_blocks = request.num_known_tokens() / bs;
  if (static_cast<int>(hashes.size()) > max_blocks) hashes.resize(static_cast<size_t>(max_blocks));
  num_full_blocks = std::min(num_full_blocks, max_blocks);
  for (int i = static_cast<int>(hashes.size()); i < num_full_blocks; ++i) {
    const BlockHash& parent = i == 0 ? kRootBlockHash : hashes[static_cast<size_t>(i - 1)];
    std::span<const int32_t> tokens(request.all_token_ids.data() + static_cast<size_t>(i) * bs, static_cast<size_t>(bs));
    hashes.push_back(hasher_(parent, tokens, request.extra_keys));
  }
}

ComputedBlocks KvCacheManager::get_computed_blocks(Request& request) {
  ComputedBlocks out;
  out.blocks.block_ids.resize(specs_.size());
  PAGODA_ASSERT(request.num_output_placeholders == 0);  // waiting requests have every token
  if (!enable_prefix_caching_ || request.skip_reading_prefix_cache || request.num_tokens() == 0) return out;

  const int bs = block_size();
  // num_tokens - 1: a full hit would leave nothing to compute and no logits to sample from.
  const int max_hit_blocks = (request.num_tokens() - 1) / bs;
  update_block_hashes(request, max_hit_blocks);
  std::vector<int32_t>& hits = out.blocks.block_ids[0];
  uint64_t parent = BlockPool::kRootContentId;
  for (int i = 0; i < max_hit_blocks; ++i) {
    std::span<const int32_t> tokens(request.all_token_ids.data() + static_cast<size_t>(i) * bs, static_cast<size_t>(bs));
    const int32_t id = pool_.find_cached_block(request.block_hashes[static_cast<size_t>(i)], parent, tokens,
                                               request.extra_keys);
    if (id < 0) break;  // a prefix cache: the first miss ends the hit
    hits.push_back(id);
    parent = pool_.content_id(id);
  }
  out.num_computed_tokens = static_cast<int>(hits.size()) * bs;
  return out;
}

bool KvCacheManager::allocate_slots(Request& request, int num_new_tokens, int num_new_computed_tokens,
                                    const KvCacheBlocks& new_computed_blocks) {
  PAGODA_ASSERT(num_new_tokens >= 0 && num_new_computed_tokens >= 0);
  const int bs = block_size();
  std::span<const int32_t> hits;
  if (!new_computed_blocks.block_ids.empty()) {
    PAGODA_ASSERT(new_computed_blocks.block_ids.size() == specs_.size());
    hits = new_computed_blocks.block_ids[0];
  }
  PAGODA_ASSERT(num_new_computed_tokens == static_cast<int>(hits.size()) * bs);

  auto it = requests_.find(request.request_id);
  const bool admission = it == requests_.end();
  const int held = admission ? 0 : static_cast<int>(it->second.groups[0].size());
  // Hits only ever start a block table (a new or resumed request): they are its prefix.
  PAGODA_ASSERT(hits.empty() || held == 0);

  const int64_t num_computed = int64_t{request.num_computed_tokens} + num_new_computed_tokens;
  const int64_t total = num_computed + num_new_tokens;
  const int num_new_blocks = std::max(0, ceil_div(total, bs) - held - static_cast<int>(hits.size()));
  // Free hits sit in the free queue: taking them shrinks what is left for new blocks.
  const int free_hits = static_cast<int>(std::ranges::count_if(hits, [&](int32_t id) { return pool_.ref_count(id) == 0; }));
  if (num_new_blocks > pool_.num_free_blocks() - free_hits) return false;
  const bool needs_state_slot = admission && num_state_slots_ > 0;
  if (needs_state_slot && free_state_slots_.empty()) return false;

  // Touch the hits before taking new blocks, so that eviction cannot hand one of them out.
  pool_.touch(hits);
  RequestBlocks& blocks = requests_[request.request_id];
  if (blocks.groups.empty()) blocks.groups.resize(specs_.size());
  if (needs_state_slot) {
    blocks.state_slot = free_state_slots_.back();
    free_state_slots_.pop_back();
  }
  std::vector<int32_t>& table = blocks.groups[0];
  table.insert(table.end(), hits.begin(), hits.end());
  if (!hits.empty()) blocks.num_cached_blocks = static_cast<int>(hits.size());
  std::vector<int32_t> fresh = pool_.get_new_blocks(num_new_blocks);
  table.insert(table.end(), fresh.begin(), fresh.end());

  if (enable_prefix_caching_) {
    cache_full_blocks(request, blocks, static_cast<int>(std::min<int64_t>(total, request.num_known_tokens())));
    // The lookup is counted once it took effect: a request that waits for memory and looks
    // again next step is not counted twice. Resumed (preempted) requests are counted apart.
    if (admission && !request.skip_reading_prefix_cache) {
      const bool resumed = request.num_preemptions > 0;
      (resumed ? stats_.preempted_requests : stats_.requests) += 1;
      (resumed ? stats_.preempted_queries : stats_.queries) += request.num_tokens();
      (resumed ? stats_.preempted_hits : stats_.hits) += num_new_computed_tokens;
    }
  }
  return true;
}

void KvCacheManager::cache_full_blocks(Request& request, RequestBlocks& blocks, int num_tokens) {
  const int bs = block_size();
  const std::vector<int32_t>& table = blocks.groups[0];
  const int num_full = std::min(num_tokens / bs, static_cast<int>(table.size()));
  if (num_full <= blocks.num_cached_blocks) return;
  update_block_hashes(request, num_full);
  for (int i = blocks.num_cached_blocks; i < num_full; ++i) {
    const int32_t id = table[static_cast<size_t>(i)];
    // Earlier blocks of the table are cached and in use, so their content ids are current.
    const uint64_t parent = i == 0 ? BlockPool::kRootContentId : pool_.content_id(table[static_cast<size_t>(i - 1)]);
    PAGODA_ASSERT(i == 0 || parent != BlockPool::kRootContentId);
    std::span<const int32_t> tokens(request.all_token_ids.data() + static_cast<size_t>(i) * bs, static_cast<size_t>(bs));
    pool_.cache_block(id, request.block_hashes[static_cast<size_t>(i)], parent, tokens, request.extra_keys);
  }
  blocks.num_cached_blocks = num_full;
}

void KvCacheManager::free(const Request& request) {
  auto it = requests_.find(request.request_id);
  if (it == requests_.end()) return;
  for (const std::vector<int32_t>& table : it->second.groups) {
    std::vector<int32_t> tail_first(table.rbegin(), table.rend());
    pool_.free_blocks(tail_first);
  }
  if (it->second.state_slot >= 0) free_state_slots_.push_back(it->second.state_slot);
  requests_.erase(it);
}

void KvCacheManager::free_unrun(const Request& request) {
  auto it = requests_.find(request.request_id);
  if (it == requests_.end()) return;
  RequestBlocks& blocks = it->second;
  const int first_unwritten = request.num_computed_tokens / block_size();  // first block not fully computed
  for (int i = first_unwritten; i < blocks.num_cached_blocks; ++i) pool_.uncache_block(blocks.groups[0][static_cast<size_t>(i)]);
  blocks.num_cached_blocks = std::min(blocks.num_cached_blocks, first_unwritten);
  free(request);
}

int32_t KvCacheManager::state_slot(const std::string& request_id) const {
  auto it = requests_.find(request_id);
  return it == requests_.end() ? -1 : it->second.state_slot;
}

std::span<const int32_t> KvCacheManager::block_table(const std::string& request_id, int group) const {
  PAGODA_ASSERT(group >= 0 && group < num_groups());
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return {};
  return it->second.groups[static_cast<size_t>(group)];
}

KvCacheBlocks KvCacheManager::get_blocks(const std::string& request_id) const {
  KvCacheBlocks out;
  out.block_ids.resize(specs_.size());
  auto it = requests_.find(request_id);
  if (it != requests_.end()) out.block_ids = it->second.groups;
  return out;
}

void KvCacheManager::check_invariants() const {
  pool_.check_invariants();
  std::vector<int> refs(static_cast<size_t>(num_blocks()), 0);
  for (const auto& [id, blocks] : requests_) {
    PAGODA_CHECK(blocks.groups.size() == specs_.size(), "request ", id, " has a wrong number of groups");
    const std::vector<int32_t>& table = blocks.groups[0];
    PAGODA_CHECK(blocks.num_cached_blocks <= static_cast<int>(table.size()), "request ", id, " caches more blocks than it holds");
    std::vector<int32_t> sorted = table;
    std::ranges::sort(sorted);
    PAGODA_CHECK(std::ranges::adjacent_find(sorted) == sorted.end(), "request ", id, " holds a block twice");
    for (size_t i = 0; i < table.size(); ++i) {
      const int32_t b = table[i];
      PAGODA_CHECK(b >= 0 && b < num_blocks(), "request ", id, " holds out-of-range block ", b);
      ++refs[static_cast<size_t>(b)];
      if (static_cast<int>(i) < blocks.num_cached_blocks) PAGODA_CHECK(pool_.is_cached(b), "request ", id, " lost cached block ", b);
    }
  }
  int used = 0;
  for (int32_t b = 0; b < num_blocks(); ++b) {
    PAGODA_CHECK(pool_.ref_count(b) == refs[static_cast<size_t>(b)], "block ", b, " has refcount ", pool_.ref_count(b),
                 " but ", refs[static_cast<size_t>(b)], " block tables hold it");
    if (refs[static_cast<size_t>(b)] > 0) ++used;
  }
  PAGODA_CHECK(used + num_free_blocks() == num_blocks(), "used + free != total blocks");
}

}  // namespace pagoda
