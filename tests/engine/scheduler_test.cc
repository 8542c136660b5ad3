// Scheduler, without a model: a fake "model" samples a token that is a function of the request's
// whole context, so a request's tokens do not depend on how it was scheduled (chunked, batched,
// preempted and recomputed) exactly when the scheduler feeds it the right context. Pins: the
// token budget split (running first, chunks, mixed batches), max_num_seqs, preemption of the
// newest request and its resumption, abort freeing blocks at once, prefix-hit accounting, the
// priority policy and the stop conditions.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/kv_cache_manager.h"

namespace pagoda {
namespace {

// "<prefix><i>" (built by appending: GCC 12 warns falsely on "literal" + std::string).
std::string numbered(std::string prefix, size_t i) {
  prefix.append(std::to_string(i));
  return prefix;
}

std::unique_ptr<Request> make_request(const std::string& id, std::vector<int32_t> prompt, int max_tokens,
                                      int priority = 0) {
  auto r = std::make_unique<Request>();
  r->request_id = id;
  r->all_token_ids = std::move(prompt);
  r->num_prompt_tokens = r->num_tokens();
  r->max_tokens = max_tokens;
  r->priority = priority;
  return r;
}

std::vector<int32_t> tokens(int n, int32_t start) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

// The fake model: the next token depends on every token of the context.
int32_t fake_next_token(const Request& r) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : r.all_token_ids) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
  return static_cast<int32_t>(10 + h % 400);
}

struct Harness {
  Harness(SchedulerConfig config, int num_blocks, int block_size, bool prefix_caching = true)
      : kv(num_blocks, block_size, prefix_caching), sched(config, kv) {}

  // One step; records every request's tokens and final status. Returns the schedule (whose
  // Request pointers dangle for requests that finished in it: last_ids has their ids).
  SchedulerOutput step() {
    SchedulerOutput out = sched.schedule();
    last_ids.clear();
    for (const ScheduledRequest& s : out.scheduled) last_ids.push_back(s.request->request_id);
    std::vector<int32_t> sampled(out.scheduled.size(), -1);
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const ScheduledRequest& s = out.scheduled[i];
      // The context the model sees this step must be exactly the request's known tokens.
      EXPECT_LE(s.num_computed_tokens + s.num_new_tokens, s.request->num_tokens());
      if (s.samples) sampled[i] = fake_next_token(*s.request);
    }
    for (SchedulerRequestOutput& o : sched.update_from_output(out, sampled)) {
      auto& toks = outputs[o.request_id];
      toks.insert(toks.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) {
        EXPECT_FALSE(finished.contains(o.request_id)) << o.request_id << " finished twice";
        finished[o.request_id] = o.status;
        cached[o.request_id] = o.num_cached_tokens;
      }
    }
    kv.check_invariants();
    return out;
  }

  void run_to_completion(int max_steps = 10000) {
    for (int i = 0; i < max_steps && sched.has_unfinished_requests(); ++i) step();
    ASSERT_FALSE(sched.has_unfinished_requests());
    EXPECT_EQ(kv.num_free_blocks(), kv.num_blocks());
  }

  KvCacheManager kv;
  Scheduler sched;
  std::map<std::string, std::vector<int32_t>> outputs;
  std::map<std::string, RequestStatus> finished;
  std::map<std::string, int> cached;
  std::vector<std::string> last_ids;
};

SchedulerConfig config(int budget, int max_seqs = 256, int max_model_len = 1024) {
  SchedulerConfig c;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = max_seqs;
  c.max_model_len = max_model_len;
  return c;
}

TEST(Scheduler, TokenBudgetGoesToRunningRequestsFirstThenChunksTheRest) {
  Harness h(config(10), 64, 4);
  h.sched.add_request(make_request("a", tokens(6, 100), 5));
  h.sched.add_request(make_request("b", tokens(6, 200), 5));
  h.sched.add_request(make_request("c", tokens(6, 300), 5));

  SchedulerOutput s1 = h.step();
  ASSERT_EQ(s1.scheduled.size(), 2u);  // a: whole prompt, b: a 4-token chunk, c: no budget left
  EXPECT_EQ(s1.scheduled[0].request->request_id, "a");
  EXPECT_EQ(s1.scheduled[0].num_new_tokens, 6);
  EXPECT_TRUE(s1.scheduled[0].samples);
  EXPECT_TRUE(s1.scheduled[0].is_new);
  EXPECT_EQ(s1.scheduled[1].num_new_tokens, 4);
  EXPECT_FALSE(s1.scheduled[1].samples);  // a partial prefill chunk yields no token
  EXPECT_EQ(s1.total_num_scheduled_tokens, 10);
  EXPECT_EQ(s1.num_sampling, 1);
  EXPECT_EQ(h.outputs["a"].size(), 1u);
  EXPECT_FALSE(h.outputs.contains("b"));

  SchedulerOutput s2 = h.step();  // a decodes (1), b finishes its prompt (2), c gets 6 of 7 left
  ASSERT_EQ(s2.scheduled.size(), 3u);
  EXPECT_EQ(s2.scheduled[0].num_new_tokens, 1);
  EXPECT_FALSE(s2.scheduled[0].is_new);
  EXPECT_EQ(s2.scheduled[1].num_computed_tokens, 4);
  EXPECT_EQ(s2.scheduled[1].num_new_tokens, 2);
  EXPECT_TRUE(s2.scheduled[1].samples);
  EXPECT_EQ(s2.scheduled[2].request->request_id, "c");
  EXPECT_EQ(s2.scheduled[2].num_new_tokens, 6);
  EXPECT_TRUE(s2.scheduled[2].is_new);
  h.run_to_completion();
  for (const char* id : {"a", "b", "c"}) {
    EXPECT_EQ(h.outputs[id].size(), 5u) << id;
    EXPECT_EQ(h.finished[id], RequestStatus::kFinishedLength) << id;
  }
}

TEST(Scheduler, ChunkedPrefillTakesBudgetSizedChunks) {
  Harness h(config(7), 64, 4);
  h.sched.add_request(make_request("a", tokens(20, 100), 2));
  std::vector<int> chunks;
  while (h.sched.has_unfinished_requests()) {
    SchedulerOutput s = h.step();
    ASSERT_EQ(s.scheduled.size(), 1u);
    chunks.push_back(s.scheduled[0].num_new_tokens);
  }
  EXPECT_EQ(chunks, (std::vector<int>{7, 7, 6, 1}));
  EXPECT_EQ(h.outputs["a"].size(), 2u);
}

TEST(Scheduler, MaxNumSeqsBoundsTheRunningSet) {
  Harness h(config(100, /*max_seqs=*/2), 64, 4);
  h.sched.add_request(make_request("a", tokens(3, 100), 1));
  h.sched.add_request(make_request("b", tokens(3, 200), 3));
  h.sched.add_request(make_request("c", tokens(3, 300), 3));
  SchedulerOutput s1 = h.step();
  EXPECT_EQ(s1.scheduled.size(), 2u);
  EXPECT_EQ(h.sched.num_waiting(), 1);
  EXPECT_EQ(h.finished.count("a"), 1u);  // a finished after one token: room for c
  SchedulerOutput s2 = h.step();
  ASSERT_EQ(s2.scheduled.size(), 2u);
  EXPECT_EQ(s2.scheduled[1].request->request_id, "c");
  h.run_to_completion();
}

TEST(Scheduler, OutOfBlocksPreemptsTheNewestRequestWhichResumesLater) {
  // 4 blocks of 4 tokens. a, b, c (4-token prompts) take one block each; their 5th tokens need a
  // second block each: a takes the last free one, b gets c's after c (the newest) is preempted.
  Harness h(config(64), 4, 4, /*prefix_caching=*/false);
  h.sched.add_request(make_request("a", tokens(4, 100), 3));
  h.sched.add_request(make_request("b", tokens(4, 200), 6));
  h.sched.add_request(make_request("c", tokens(4, 300), 6));
  SchedulerOutput s1 = h.step();
  EXPECT_EQ(s1.scheduled.size(), 3u);
  EXPECT_EQ(h.kv.num_free_blocks(), 1);

  SchedulerOutput s2 = h.step();
  EXPECT_EQ(s2.preempted_ids, (std::vector<std::string>{"c"}));
  ASSERT_EQ(s2.scheduled.size(), 2u);
  EXPECT_EQ(s2.scheduled[0].request->request_id, "a");
  EXPECT_EQ(s2.scheduled[1].request->request_id, "b");
  const Request* c = h.sched.find("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->status, RequestStatus::kPreempted);
  EXPECT_EQ(c->num_computed_tokens, 0);
  EXPECT_EQ(c->num_tokens(), 5);  // its sampled token is kept and recomputed
  EXPECT_EQ(h.sched.num_preemptions(), 1);
  EXPECT_TRUE(h.kv.block_table("c").empty());

  SchedulerOutput s3 = h.step();  // a finishes (3 tokens); c still cannot get 2 blocks
  EXPECT_EQ(s3.scheduled.size(), 2u);
  EXPECT_EQ(h.finished.count("a"), 1u);
  SchedulerOutput s4 = h.step();  // a's blocks are free: c resumes, recomputing all 5 tokens
  ASSERT_EQ(s4.scheduled.size(), 2u);
  const ScheduledRequest& rc = s4.scheduled[1];
  EXPECT_EQ(rc.request->request_id, "c");
  EXPECT_TRUE(rc.is_new);
  EXPECT_TRUE(rc.resumed);
  EXPECT_EQ(rc.num_computed_tokens, 0);
  EXPECT_EQ(rc.num_new_tokens, 5);
  EXPECT_TRUE(rc.samples);
  h.run_to_completion();

  // Same tokens as with memory to spare.
  Harness ref(config(64), 64, 4, false);
  ref.sched.add_request(make_request("a", tokens(4, 100), 3));
  ref.sched.add_request(make_request("b", tokens(4, 200), 6));
  ref.sched.add_request(make_request("c", tokens(4, 300), 6));
  ref.run_to_completion();
  EXPECT_EQ(ref.sched.num_preemptions(), 0);
  EXPECT_EQ(h.outputs, ref.outputs);
}

TEST(Scheduler, PreemptionKeepsEveryRequestsTokensUnderRandomLoad) {
  std::mt19937 rng(7);
  // 10 blocks of 4 tokens; every request fits alone (at most 20 + 16 tokens), or the oldest
  // could not progress.
  Harness tight(config(13, 8, 64), 10, 4);
  Harness roomy(config(64, 64, 64), 256, 4);
  for (int i = 0; i < 40; ++i) {
    const int len = 1 + static_cast<int>(rng() % 20);
    const int max_tokens = 1 + static_cast<int>(rng() % 16);
    // Shared starts exercise prefix hits on resumed requests as well.
    std::vector<int32_t> prompt = tokens(len, static_cast<int32_t>(100 * (i % 3)));
    prompt.back() = static_cast<int32_t>(1000 + i);
    tight.sched.add_request(make_request(numbered("r", static_cast<size_t>(i)), prompt, max_tokens));
    roomy.sched.add_request(make_request(numbered("r", static_cast<size_t>(i)), prompt, max_tokens));
  }
  tight.run_to_completion();
  roomy.run_to_completion();
  EXPECT_GT(tight.sched.num_preemptions(), 0);
  EXPECT_EQ(tight.outputs, roomy.outputs);
  for (const auto& [id, status] : tight.finished) EXPECT_EQ(status, RequestStatus::kFinishedLength) << id;
}

TEST(Scheduler, AbortFreesBlocksAtOnceAndReportsOnce) {
  Harness h(config(64), 16, 4);
  h.sched.add_request(make_request("a", tokens(9, 100), 10));
  h.sched.add_request(make_request("b", tokens(9, 200), 10));
  h.step();
  h.sched.add_request(make_request("w", tokens(3, 300), 10));  // still waiting
  const int free_before = h.kv.num_free_blocks();
  EXPECT_TRUE(h.sched.abort("a"));
  EXPECT_EQ(h.kv.num_free_blocks(), free_before + 3);
  EXPECT_TRUE(h.sched.abort("w"));
  EXPECT_FALSE(h.sched.abort("a"));
  EXPECT_FALSE(h.sched.abort("nobody"));
  EXPECT_EQ(h.sched.find("a"), nullptr);
  EXPECT_EQ(h.sched.num_running(), 1);
  EXPECT_EQ(h.sched.num_waiting(), 0);
  h.kv.check_invariants();
  h.step();
  EXPECT_EQ(h.finished["a"], RequestStatus::kFinishedAborted);
  EXPECT_EQ(h.finished["w"], RequestStatus::kFinishedAborted);
  EXPECT_EQ(h.outputs["a"].size(), 1u);
  h.run_to_completion();
  EXPECT_EQ(h.outputs["b"].size(), 10u);

  // Without a step to run, take_aborted() hands out the final outputs.
  h.sched.add_request(make_request("x", tokens(3, 400), 4));
  h.sched.abort("x");
  EXPECT_FALSE(h.sched.has_unfinished_requests());
  EXPECT_TRUE(h.sched.has_pending_outputs());
  std::vector<SchedulerRequestOutput> aborted = h.sched.take_aborted();
  ASSERT_EQ(aborted.size(), 1u);
  EXPECT_EQ(aborted[0].request_id, "x");
  EXPECT_EQ(aborted[0].status, RequestStatus::kFinishedAborted);
  EXPECT_EQ(h.kv.num_free_blocks(), h.kv.num_blocks());
}

TEST(Scheduler, PrefixHitsSkipCachedBlocksAndAreCounted) {
  Harness h(config(64), 32, 4);
  h.sched.add_request(make_request("a", tokens(12, 100), 2));
  h.run_to_completion();
  EXPECT_EQ(h.cached["a"], 0);

  std::vector<int32_t> prompt = tokens(8, 100);  // a's first two blocks, then new tokens
  prompt.insert(prompt.end(), {7, 8, 9, 10, 11});
  h.sched.add_request(make_request("b", prompt, 2));
  SchedulerOutput s = h.step();
  ASSERT_EQ(s.scheduled.size(), 1u);
  EXPECT_EQ(s.scheduled[0].num_computed_tokens, 8);
  EXPECT_EQ(s.scheduled[0].num_new_tokens, 5);
  h.run_to_completion();
  EXPECT_EQ(h.cached["b"], 8);

  // The same prompt again: never a full hit, the last block is recomputed for its logits.
  h.sched.add_request(make_request("c", tokens(12, 100), 2));
  s = h.step();
  EXPECT_EQ(s.scheduled[0].num_computed_tokens, 8);
  EXPECT_EQ(s.scheduled[0].num_new_tokens, 4);
  h.run_to_completion();
  EXPECT_EQ(h.outputs["c"], h.outputs["a"]);
  const PrefixCacheStats& st = h.kv.prefix_cache_stats();
  EXPECT_EQ(st.requests, 3);
  EXPECT_EQ(st.queries, 12 + 13 + 12);
  EXPECT_EQ(st.hits, 16);
}

TEST(Scheduler, PrefixHitsWithinOneStepShareTheFirstRequestsBlocks) {
  Harness h(config(256), 64, 4);
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> prompt = tokens(16, 100);
    prompt.push_back(static_cast<int32_t>(500 + i));
    h.sched.add_request(make_request(numbered("r", static_cast<size_t>(i)), prompt, 3));
  }
  SchedulerOutput s = h.step();
  ASSERT_EQ(s.scheduled.size(), 4u);
  EXPECT_EQ(s.scheduled[0].num_computed_tokens, 0);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(s.scheduled[static_cast<size_t>(i)].num_computed_tokens, 16);
  h.run_to_completion();
}

TEST(Scheduler, PriorityPolicyAdmitsLowestValueFirstThenByArrival) {
  SchedulerConfig c = config(64, /*max_seqs=*/1);
  c.policy = SchedulingPolicy::kPriority;
  Harness h(c, 64, 4);
  h.sched.add_request(make_request("late", tokens(3, 100), 1, /*priority=*/5));
  h.sched.add_request(make_request("first", tokens(3, 200), 1, /*priority=*/-1));
  h.sched.add_request(make_request("second", tokens(3, 300), 1, /*priority=*/0));
  h.sched.add_request(make_request("third", tokens(3, 400), 1, /*priority=*/0));
  std::vector<std::string> order;
  while (h.sched.has_unfinished_requests()) {
    ASSERT_EQ(h.step().scheduled.size(), 1u);
    order.push_back(h.last_ids.at(0));
  }
  EXPECT_EQ(order, (std::vector<std::string>{"first", "second", "third", "late"}));
}

TEST(Scheduler, PriorityPolicyPreemptsTheLowestPriorityRequestEvenIfAlreadyScheduled) {
  // 3 blocks of 4 tokens. "low" (priority 5, admitted first) holds 2 blocks, "high" 1. In step 2
  // "low" is scheduled first and its chunk completes its second block, which enters the prefix
  // cache at allocation; then "high" needs a block: the victim is "low", taken out of the step,
  // and its uncomputed block must leave the prefix cache with it.
  SchedulerConfig c = config(64);
  c.policy = SchedulingPolicy::kPriority;
  Harness h(c, 3, 4);
  h.sched.add_request(make_request("low", tokens(7, 100), 3, /*priority=*/5));
  h.sched.add_request(make_request("high", tokens(4, 200), 2, /*priority=*/0));
  ASSERT_EQ(h.step().scheduled.size(), 2u);
  EXPECT_EQ(h.kv.num_free_blocks(), 0);
  const std::vector<int32_t> low_tokens = h.sched.find("low")->all_token_ids;  // 7 + 1 sampled

  SchedulerOutput s2 = h.step();
  EXPECT_EQ(s2.preempted_ids, (std::vector<std::string>{"low"}));
  ASSERT_EQ(s2.scheduled.size(), 1u);
  EXPECT_EQ(h.last_ids, (std::vector<std::string>{"high"}));
  EXPECT_EQ(s2.total_num_scheduled_tokens, 1);
  // Only "low"'s first block (computed in step 1) may still be found.
  Request probe = *make_request("probe", low_tokens, 1);
  probe.all_token_ids.push_back(1);
  EXPECT_EQ(h.kv.get_computed_blocks(probe).num_computed_tokens, 4);

  h.run_to_completion();
  // Resumed requests are counted apart in the prefix-cache stats.
  EXPECT_EQ(h.kv.prefix_cache_stats().requests, 2);
  EXPECT_EQ(h.kv.prefix_cache_stats().preempted_requests, 1);
  Harness ref(config(64), 64, 4);
  ref.sched.add_request(make_request("low", tokens(7, 100), 3, 5));
  ref.sched.add_request(make_request("high", tokens(4, 200), 2, 0));
  ref.run_to_completion();
  EXPECT_EQ(h.outputs, ref.outputs);
}

TEST(Scheduler, FcfsPreemptsTheNewestWhateverItsPriority) {
  Harness h(config(64), 3, 4);
  h.sched.add_request(make_request("low", tokens(7, 100), 3, /*priority=*/5));
  h.sched.add_request(make_request("high", tokens(4, 200), 2, /*priority=*/0));
  h.step();
  EXPECT_EQ(h.step().preempted_ids, (std::vector<std::string>{"high"}));
  h.run_to_completion();
}

TEST(Scheduler, WaitingForMemoryCountsOnePrefixCacheLookup) {
  Harness h(config(64), 4, 4);
  h.sched.add_request(make_request("a", tokens(12, 100), 4));  // 3 blocks, then a 4th
  h.step();
  h.sched.add_request(make_request("b", tokens(9, 100), 1));  // 2 cached blocks + 1: no room yet
  for (int i = 0; i < 3; ++i) {
    h.step();
    EXPECT_EQ(h.sched.num_waiting(), 1);
  }
  h.run_to_completion();
  EXPECT_EQ(h.kv.prefix_cache_stats().requests, 2);
  EXPECT_EQ(h.kv.prefix_cache_stats().queries, 12 + 9);
  EXPECT_EQ(h.kv.prefix_cache_stats().hits, 8);
}

TEST(Scheduler, PromptLogprobChunksFitTheLogitsRows) {
  // max_num_seqs 2 gives 2 logits rows per step: a 10-token prompt that wants prompt logprobs is
  // computed 2 positions at a time; every position 0..8 gets exactly one row, position 9 samples.
  Harness h(config(64, /*max_seqs=*/2), 64, 4);
  auto r = make_request("a", tokens(10, 100), 2);
  r->wants_prompt_logprobs = true;
  r->skip_reading_prefix_cache = true;
  h.sched.add_request(std::move(r));
  std::vector<int> rows_at;
  for (int step = 0; step < 5; ++step) {
    SchedulerOutput s = h.step();
    ASSERT_EQ(s.scheduled.size(), 1u);
    EXPECT_EQ(s.scheduled[0].num_new_tokens, 2);
    EXPECT_LE(s.num_logits_rows, 2);
    for (int k = 0; k < s.scheduled[0].num_prompt_logprob_rows; ++k)
      rows_at.push_back(s.scheduled[0].prompt_logprob_begin + k);
    EXPECT_EQ(s.scheduled[0].samples, step == 4);
  }
  EXPECT_EQ(rows_at, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  // A decoding request beside it keeps its row: the prompt-logprob chunk takes what is left.
  Harness h2(config(64, 2), 64, 4);
  h2.sched.add_request(make_request("d", tokens(3, 500), 20));
  h2.step();
  auto r2 = make_request("a", tokens(10, 100), 2);
  r2->wants_prompt_logprobs = true;
  h2.sched.add_request(std::move(r2));
  SchedulerOutput s = h2.step();
  ASSERT_EQ(s.scheduled.size(), 2u);
  EXPECT_EQ(s.scheduled[1].num_new_tokens, 1);
  EXPECT_EQ(s.num_logits_rows, 2);
  h2.run_to_completion();
  h.run_to_completion();
}

TEST(Scheduler, StopConditions) {
  Harness h(config(64, 256, /*max_model_len=*/20), 64, 4);
  // Learn the fake model's first two tokens for this prompt.
  h.sched.add_request(make_request("probe", tokens(5, 100), 2));
  h.run_to_completion();
  const int32_t t0 = h.outputs["probe"][0], t1 = h.outputs["probe"][1];

  auto eos = make_request("eos", tokens(5, 100), 10);
  eos->eos_token_ids = {t0};
  h.sched.add_request(std::move(eos));
  auto ignore = make_request("ignore", tokens(5, 100), 2);
  ignore->eos_token_ids = {t0};
  ignore->ignore_eos = true;
  h.sched.add_request(std::move(ignore));
  auto stop = make_request("stop", tokens(5, 100), 10);
  stop->stop_token_ids = {t1};
  h.sched.add_request(std::move(stop));
  auto min = make_request("min", tokens(5, 100), 10);
  min->eos_token_ids = {t0};
  min->min_tokens = 2;
  min->stop_token_ids = {t1};
  h.sched.add_request(std::move(min));
  h.sched.add_request(make_request("ctx", tokens(5, 100), 100));  // capped by max_model_len
  std::map<std::string, std::optional<int32_t>> reasons;
  while (h.sched.has_unfinished_requests()) {
    SchedulerOutput out = h.sched.schedule();
    std::vector<int32_t> sampled(out.scheduled.size(), -1);
    for (size_t i = 0; i < out.scheduled.size(); ++i)
      if (out.scheduled[i].samples) sampled[i] = fake_next_token(*out.scheduled[i].request);
    for (SchedulerRequestOutput& o : h.sched.update_from_output(out, sampled)) {
      auto& t = h.outputs[o.request_id];
      t.insert(t.end(), o.new_token_ids.begin(), o.new_token_ids.end());
      if (o.finished) {
        h.finished[o.request_id] = o.status;
        reasons[o.request_id] = o.stop_reason;
      }
    }
  }
  EXPECT_EQ(h.outputs["eos"], (std::vector<int32_t>{t0}));
  EXPECT_EQ(h.finished["eos"], RequestStatus::kFinishedStopped);
  EXPECT_EQ(reasons["eos"], std::nullopt);
  EXPECT_EQ(h.outputs["ignore"], (std::vector<int32_t>{t0, t1}));
  EXPECT_EQ(h.finished["ignore"], RequestStatus::kFinishedLength);
  EXPECT_EQ(h.outputs["stop"], (std::vector<int32_t>{t0, t1}));
  EXPECT_EQ(h.finished["stop"], RequestStatus::kFinishedStopped);
  EXPECT_EQ(reasons["stop"], t1);
  // min_tokens 2: t0 (EOS) does not stop it, t1 (a stop token, the 2nd output) does.
  EXPECT_EQ(h.outputs["min"], (std::vector<int32_t>{t0, t1}));
  EXPECT_EQ(reasons["min"], t1);
  EXPECT_EQ(h.outputs["ctx"].size(), 15u);
  EXPECT_EQ(h.finished["ctx"], RequestStatus::kFinishedLength);
  EXPECT_EQ(h.kv.num_free_blocks(), h.kv.num_blocks());
}

TEST(Scheduler, RejectsBadRequests) {
  Harness h(config(64, 256, 16), 64, 4);
  EXPECT_THROW(h.sched.add_request(make_request("empty", {}, 1)), Error);
  EXPECT_THROW(h.sched.add_request(make_request("long", tokens(16, 1), 1)), Error);
  h.sched.add_request(make_request("a", tokens(3, 1), 1));
  EXPECT_THROW(h.sched.add_request(make_request("a", tokens(3, 1), 1)), Error);
  h.run_to_completion();
}

}  // namespace
}  // namespace pagoda
