// RequestOutputState on the real Qwen3 tokenizer: stop strings (spanning tokens, held back while
// ambiguous, released when they do not match, kept with include_stop_str_in_output), stop token
// ids and eos, UTF-8 characters split across tokens, skip_special_tokens and logprob totals.
#include "engine/output_processor.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tokenizer/utf8.h"

namespace pagoda {
namespace {

const Tokenizer& qwen() {
  static const Tokenizer tok = Tokenizer::from_dir(std::string(PAGODA_SHARED_DIR) + "/tokenizers/qwen3");
  return tok;
}

constexpr int32_t kImEnd = 151645;  // <|im_end|>, special (Qwen's eos)

struct Pushed {
  std::vector<Delta> deltas;
  std::string streamed;  // concatenation of every delta's text
};

// Pushes `ids`; the last one carries the engine's finish (if any). Stops pushing once finished.
Pushed push_all(RequestOutputState& st, const std::vector<int32_t>& ids, const std::string& engine_reason = {}) {
  Pushed r;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool last = i + 1 == ids.size();
    Delta d = st.push(ids[i], last && !engine_reason.empty(), last ? engine_reason : std::string());
    EXPECT_TRUE(utf8::is_valid(d.text)) << "delta " << i;
    r.streamed += d.text;
    r.deltas.push_back(d);
    if (d.finished) break;
  }
  return r;
}

SamplingParams with_stop(std::vector<std::string> stop, bool include = false) {
  SamplingParams p;
  p.stop = std::move(stop);
  p.include_stop_str_in_output = include;
  return p;
}

TEST(OutputProcessor, PlainTextStreamsEveryToken) {
  const auto ids = qwen().encode("Hello world, how are you?");
  RequestOutputState st(qwen(), SamplingParams{}, {1, 2});
  const Pushed r = push_all(st, ids, "length");
  EXPECT_EQ(r.streamed, "Hello world, how are you?");
  EXPECT_EQ(r.deltas.size(), ids.size());
  for (const Delta& d : r.deltas) EXPECT_FALSE(d.text.empty());
  EXPECT_TRUE(r.deltas.back().finished);
  EXPECT_EQ(r.deltas.back().finish_reason, "length");
  EXPECT_TRUE(std::holds_alternative<std::monostate>(r.deltas.back().stop_reason));
  EXPECT_EQ(st.token_ids(), ids);
  EXPECT_EQ(st.prompt_token_ids(), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(st.text(), r.streamed);
  EXPECT_TRUE(st.finished());
}

TEST(OutputProcessor, StopStringSpanningTokens) {
  const auto ids = qwen().encode("Hello world and goodbye forever");
  ASSERT_GE(ids.size(), 5u);
  RequestOutputState st(qwen(), with_stop({"d and good"}), {});
  const Pushed r = push_all(st, ids);
  EXPECT_EQ(r.streamed, "Hello worl");
  EXPECT_EQ(st.text(), "Hello worl");
  const Delta& last = r.deltas.back();
  EXPECT_TRUE(last.finished);
  EXPECT_EQ(last.finish_reason, "stop");
  ASSERT_TRUE(std::holds_alternative<std::string>(last.stop_reason));
  EXPECT_EQ(std::get<std::string>(last.stop_reason), "d and good");
  EXPECT_LT(st.token_ids().size(), ids.size());  // finished before " forever"
  // Nothing past the cut was ever streamed, even transiently.
  std::string so_far;
  for (const Delta& d : r.deltas) {
    so_far += d.text;
    EXPECT_EQ(std::string("Hello worl").compare(0, so_far.size(), so_far), 0) << so_far;
  }
  // Pushes after the finish are ignored.
  const Delta after = st.push(ids.back());
  EXPECT_TRUE(after.text.empty());
  EXPECT_FALSE(after.finished);
}

TEST(OutputProcessor, PartialMatchIsHeldThenReleased) {
  const std::string text = "Hello world war and peace";
  const auto ids = qwen().encode(text);
  RequestOutputState st(qwen(), with_stop({"world peace"}), {});
  Pushed r;
  bool held = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    Delta d = st.push(ids[i]);
    r.streamed += d.text;
    // While the text ends in "world" (a prefix of the stop string) it must not be streamed.
    if (st.text().size() >= 5 && st.text().ends_with("world")) {
      EXPECT_FALSE(r.streamed.ends_with("world")) << r.streamed;
      held = true;
    }
    EXPECT_FALSE(d.finished);
  }
  EXPECT_TRUE(held);
  EXPECT_EQ(r.streamed, text);  // "world" came out once " war" ruled the stop string out
  // A prefix held at the very end is released by the engine's finish.
  const auto ids2 = qwen().encode("Hello world");
  RequestOutputState st2(qwen(), with_stop({"world peace"}), {});
  const Pushed r2 = push_all(st2, ids2, "length");
  EXPECT_EQ(r2.streamed, "Hello world");
  EXPECT_EQ(r2.deltas.back().finish_reason, "length");
  // ... and by an abort without a token.
  RequestOutputState st3(qwen(), with_stop({"world peace"}), {});
  const Pushed r3 = push_all(st3, ids2);
  EXPECT_EQ(r3.streamed, "Hello ");
  const Delta ab = st3.finish("abort");
  EXPECT_EQ(ab.text, "world");
  EXPECT_TRUE(ab.finished);
  EXPECT_EQ(ab.finish_reason, "abort");
}

TEST(OutputProcessor, IncludeStopStringInOutput) {
  const auto ids = qwen().encode("Hello world and goodbye forever");
  RequestOutputState st(qwen(), with_stop({"d and"}, true), {});
  const Pushed r = push_all(st, ids);
  EXPECT_EQ(r.streamed, "Hello world and");
  EXPECT_EQ(st.text(), "Hello world and");
  EXPECT_EQ(r.deltas.back().finish_reason, "stop");
  // A stop string ending inside a token cuts that token's text right after it.
  RequestOutputState st2(qwen(), with_stop({"wor"}, true), {});
  EXPECT_EQ(push_all(st2, ids).streamed, "Hello wor");
  RequestOutputState st3(qwen(), with_stop({"wor"}, false), {});
  EXPECT_EQ(push_all(st3, ids).streamed, "Hello ");
}

TEST(OutputProcessor, FirstListedStopStringWins) {
  const auto ids = qwen().encode("one two three");
  RequestOutputState st(qwen(), with_stop({"zzz", "three", "two three"}), {});
  const Pushed r = push_all(st, ids);
  // "two three" and "three" complete on the same token; the list order decides (vLLM).
  EXPECT_EQ(std::get<std::string>(r.deltas.back().stop_reason), "three");
  EXPECT_EQ(r.streamed, "one two ");
}

TEST(OutputProcessor, MultiByteCharactersSplitAcrossTokens) {
  const std::string text = "Smile 😀 and 𝄞 music — 你好世界 🧑‍🚀!";
  const auto ids = qwen().encode(text);
  RequestOutputState st(qwen(), SamplingParams{}, {});
  const Pushed r = push_all(st, ids, "length");
  EXPECT_EQ(r.streamed, text);
  int empty = 0;
  for (const Delta& d : r.deltas) empty += d.text.empty();
  EXPECT_GT(empty, 0);  // some tokens end mid-character and stream nothing yet
  // A stop string that is itself a multi-byte character.
  RequestOutputState st2(qwen(), with_stop({"世界"}), {});
  const Pushed r2 = push_all(st2, ids);
  EXPECT_EQ(r2.streamed, "Smile 😀 and 𝄞 music — 你好");
  EXPECT_EQ(r2.deltas.back().finish_reason, "stop");
}

TEST(OutputProcessor, SkipSpecialTokens) {
  auto ids = qwen().encode("Hi there");
  ids.push_back(kImEnd);
  const auto tail = qwen().encode(" after");
  ids.insert(ids.end(), tail.begin(), tail.end());
  RequestOutputState skip(qwen(), SamplingParams{}, {});
  EXPECT_EQ(push_all(skip, ids, "length").streamed, "Hi there after");
  SamplingParams keep;
  keep.skip_special_tokens = false;
  RequestOutputState kept(qwen(), keep, {});
  EXPECT_EQ(push_all(kept, ids, "length").streamed, "Hi there<|im_end|> after");
}

TEST(OutputProcessor, StopTokenIdsAndEos) {
  auto ids = qwen().encode("Hi there");
  const int32_t stop_tok = qwen().encode(" done")[0];
  SamplingParams p;
  p.stop_token_ids = {stop_tok};
  {
    RequestOutputState st(qwen(), p, {});
    auto seq = ids;
    seq.push_back(stop_tok);
    const Pushed r = push_all(st, seq, "stop");
    EXPECT_EQ(r.streamed, "Hi there");  // the stop token's text is left out
    ASSERT_TRUE(std::holds_alternative<int32_t>(r.deltas.back().stop_reason));
    EXPECT_EQ(std::get<int32_t>(r.deltas.back().stop_reason), stop_tok);
    EXPECT_EQ(st.token_ids().back(), stop_tok);  // but kept in the token ids
  }
  {
    SamplingParams inc = p;
    inc.include_stop_str_in_output = true;
    RequestOutputState st(qwen(), inc, {});
    auto seq = ids;
    seq.push_back(stop_tok);
    EXPECT_EQ(push_all(st, seq, "stop").streamed, "Hi there done");
  }
  {
    RequestOutputState st(qwen(), p, {});
    auto seq = ids;
    seq.push_back(kImEnd);
    const Pushed r = push_all(st, seq, "stop");
    EXPECT_EQ(r.streamed, "Hi there");
    EXPECT_EQ(r.deltas.back().finish_reason, "stop");
    EXPECT_TRUE(std::holds_alternative<std::monostate>(r.deltas.back().stop_reason));
  }
}

TEST(OutputProcessor, MinTokensDefersStopStrings) {
  const auto ids = qwen().encode("stop here then stop again");
  SamplingParams p = with_stop({"stop"});
  p.min_tokens = 2;
  RequestOutputState st(qwen(), p, {});
  const Pushed r = push_all(st, ids);
  EXPECT_EQ(r.streamed, "stop here then ");
  EXPECT_EQ(std::get<std::string>(r.deltas.back().stop_reason), "stop");
}

TEST(OutputProcessor, CumulativeLogprob) {
  SamplingParams p;
  p.logprobs = 0;
  RequestOutputState st(qwen(), p, {});
  const auto ids = qwen().encode("a b c");
  float lp = -0.25f;
  for (int32_t id : ids) {
    SampledToken t;
    t.token = id;
    t.logprob = lp;
    st.push(t);
    lp *= 2;
  }
  double expected = 0;
  lp = -0.25f;
  for (size_t i = 0; i < ids.size(); ++i, lp *= 2) expected += lp;
  EXPECT_DOUBLE_EQ(st.cumulative_logprob(), expected);
  EXPECT_EQ(st.num_output_tokens(), static_cast<int>(ids.size()));
}

TEST(OutputProcessor, RandomStopStringsMatchReference) {
  // Random word sequences and a stop string cut from somewhere in the text: the streamed text is
  // always a prefix of the answer (the text before the first occurrence) and ends equal to it.
  const std::vector<std::string> words = {"the", " cat", " sat", " on", " a", " mat", ",", " and", " 😀", " ok",
                                          "ing", " é", "!", " then", " dog"};
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = 5 + static_cast<int>(rng() % 15);
    for (int i = 0; i < n; ++i) text += words[rng() % words.size()];
    const auto ids = qwen().encode(text);
    const std::string full = qwen().decode(ids);
    ASSERT_EQ(full, text);
    // A stop string: a substring starting and ending at character boundaries, or a miss.
    std::string stop;
    if (trial % 5 == 4) {
      stop = "zebra";
    } else {
      size_t a = rng() % full.size();
      while (a > 0 && (static_cast<unsigned char>(full[a]) & 0xC0) == 0x80) --a;
      size_t len = 1 + rng() % 8;
      size_t b = std::min(full.size(), a + len);
      while (b < full.size() && (static_cast<unsigned char>(full[b]) & 0xC0) == 0x80) ++b;
      stop = full.substr(a, b - a);
    }
    const bool include = trial % 3 == 0;
    const size_t pos = full.find(stop);
    const std::string expected =
        pos == std::string::npos ? full : full.substr(0, include ? pos + stop.size() : pos);
    RequestOutputState st(qwen(), with_stop({stop}, include), {});
    std::string streamed;
    bool finished = false;
    for (size_t i = 0; i < ids.size() && !finished; ++i) {
      const bool last = i + 1 == ids.size();
      Delta d = st.push(ids[i], last, last ? "length" : "");
      ASSERT_TRUE(utf8::is_valid(d.text));
      streamed += d.text;
      ASSERT_EQ(expected.compare(0, streamed.size(), streamed), 0)
          << "trial " << trial << " stop '" << stop << "' streamed '" << streamed << "'";
      finished = d.finished;
    }
    EXPECT_TRUE(finished);
    EXPECT_EQ(streamed, expected) << "trial " << trial << " stop '" << stop << "'";
    EXPECT_EQ(st.finish_reason(), pos == std::string::npos ? "length" : "stop");
  }
}

}  // namespace
}  // namespace pagoda
