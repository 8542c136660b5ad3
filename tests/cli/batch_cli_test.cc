// `pagoda generate --input` (batch, one engine) and `pagoda bench` as a user runs them, on a
// random-weight checkpoint from tools/make_random_checkpoint: output order and shape, bad lines
// reported and skipped, greedy batch results equal to single-prompt generate, bench output.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "run_command.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using pagoda::testing::run;

std::vector<json> read_jsonl(const fs::path& path) {
  std::ifstream in(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

const std::string kBin = std::string(PAGODA_BINARY_DIR) + "/bin/";

class BatchCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("pagoda_batch_cli_test_" + std::to_string(getpid()));
    const auto r = run(kBin + "make_random_checkpoint " + (dir_ / "model").string() + " --preset tiny --tokenizer-dir " +
                       std::string(PAGODA_SHARED_DIR) + "/tokenizers/qwen3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static std::string model() { return (dir_ / "model").string(); }
  static fs::path write_input(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << content;
    return p;
  }
  static fs::path dir_;
};
fs::path BatchCliTest::dir_;

const std::vector<std::string> kPrompts = {"Hello there", "Once upon a time", "The capital of France is",
                                           "1, 2, 3,", "Why"};

TEST_F(BatchCliTest, OneLinePerRequestInInputOrder) {
  std::string input;
  for (size_t i = 0; i < kPrompts.size(); ++i)
    input += json{{"prompt", kPrompts[i]}, {"max_tokens", 3 + static_cast<int>(i)}, {"temperature", 0},
                  {"ignore_eos", true}}
                 .dump() +
             "\n";
  const fs::path in = write_input("order.jsonl", input), out = dir_ / "order_out.jsonl";
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string() + " --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("toks/s"), std::string::npos) << r.output;  // the progress bar
  const auto lines = read_jsonl(out);
  ASSERT_EQ(lines.size(), kPrompts.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["index"], i);
    EXPECT_EQ(lines[i]["prompt"], kPrompts[i]);
    EXPECT_EQ(lines[i]["token_ids"].size(), 3 + i);
    EXPECT_EQ(lines[i]["finish_reason"], "length");
    EXPECT_TRUE(lines[i].contains("text") && lines[i].contains("num_cached_tokens"));
  }
}

TEST_F(BatchCliTest, LogprobsAndPromptLogprobsInVllmLayout) {
  const std::string input =
      json{{"prompt_token_ids", {9707, 1052, 13, 576, 6722}}, {"max_tokens", 4}, {"temperature", 0},
           {"ignore_eos", true}, {"logprobs", 2}, {"prompt_logprobs", 1}}
          .dump() +
      "\n";
  const fs::path in = write_input("logprobs.jsonl", input), out = dir_ / "logprobs_out.jsonl";
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string() + " --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto lines = read_jsonl(out);
  ASSERT_EQ(lines.size(), 1u);
  const json& l = lines[0];
  ASSERT_FALSE(l.contains("error")) << l.dump();
  // Prompt: null for the first token, then an entry holding each later prompt token.
  const std::vector<int> prompt = {9707, 1052, 13, 576, 6722};
  ASSERT_EQ(l["prompt_logprobs"].size(), prompt.size());
  EXPECT_TRUE(l["prompt_logprobs"][0].is_null());
  for (size_t i = 1; i < prompt.size(); ++i) {
    const json& e = l["prompt_logprobs"][i];
    ASSERT_TRUE(e.contains(std::to_string(prompt[i]))) << e.dump();
    EXPECT_LE(e.size(), 2u);  // the token and the top 1
    for (const auto& [id, v] : e.items()) EXPECT_LE(v["logprob"].get<double>(), 0.0);
  }
  // Output: one entry per token; greedy picks the most likely token, so it has the top logprob.
  ASSERT_EQ(l["logprobs"].size(), l["token_ids"].size());
  for (size_t i = 0; i < l["token_ids"].size(); ++i) {
    const json& e = l["logprobs"][i];
    const std::string tok = std::to_string(l["token_ids"][i].get<int>());
    ASSERT_TRUE(e.contains(tok)) << e.dump();
    EXPECT_EQ(e.size(), 2u) << e.dump();  // the sampled token is the best one, plus the second
    for (const auto& [id, v] : e.items()) {
      EXPECT_LE(v["logprob"].get<double>(), e[tok]["logprob"].get<double>() + 1e-6);
      EXPECT_TRUE(v.contains("decoded_token"));
    }
  }
}

TEST_F(BatchCliTest, BadLinesAreReportedWithLineNumbersAndSkipped) {
  const std::string input =
      "{\"prompt\": \"Hello\", \"max_tokens\": 4, \"ignore_eos\": true}\n"
      "{\"prompt\": \"oops\", \"max_tokens\": 4\n"                          // line 2: invalid JSON
      "{\"prompt\": \"x\", \"temperature\": \"hot\"}\n"                     // line 3: wrong type
      "{\"prompt\": \"x\", \"top_p\": 2.0}\n"                               // line 4: out of range
      "{\"prompt_token_ids\": [1, 2, 3], \"max_tokens\": 4, \"ignore_eos\": true}\n";
  const fs::path in = write_input("bad.jsonl", input), out = dir_ / "bad_out.jsonl";
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string() + " --output " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:2:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:3:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("temperature"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:4:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("top_p"), std::string::npos) << r.output;
  const auto lines = read_jsonl(out);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0]["token_ids"].size(), 4u);
  for (size_t i : {1u, 2u, 3u}) {
    EXPECT_EQ(lines[i]["index"], i);
    EXPECT_TRUE(lines[i].contains("error")) << lines[i].dump();
    EXPECT_EQ(lines[i]["line"], i + 1);
  }
  EXPECT_EQ(lines[4]["token_ids"].size(), 4u);
  EXPECT_FALSE(lines[4].contains("error"));
}

TEST_F(BatchCliTest, GreedyBatchEqualsSinglePromptGenerate) {
  std::string input;
  for (const std::string& p : kPrompts)
    input += json{{"prompt", p}, {"max_tokens", 10}, {"temperature", 0}, {"ignore_eos", true}}.dump() + "\n";
  const fs::path in = write_input("greedy.jsonl", input), out = dir_ / "greedy_out.jsonl";
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string() + " --output " + out.string() +
                     " --max-num-seqs 3 --max-num-batched-tokens 16");  // forces chunking and queueing
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto lines = read_jsonl(out);
  ASSERT_EQ(lines.size(), kPrompts.size());
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const auto s = run(kBin + "pagoda generate " + model() + " --prompt '" + kPrompts[i] +
                           "' --max-tokens 10 --temperature 0 --ignore-eos --output-format json",
                       true);
    ASSERT_EQ(s.exit_code, 0) << s.output;
    EXPECT_EQ(lines[i]["token_ids"], json::parse(s.output)["token_ids"]) << kPrompts[i];
  }
}

TEST_F(BatchCliTest, NGreaterThanOneListsEveryCompletion) {
  const fs::path in = write_input("n.jsonl", "{\"prompt\": \"Hi\", \"n\": 3, \"max_tokens\": 5, \"seed\": 1, "
                                             "\"ignore_eos\": true}\n");
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string(), true);  // stdout
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  ASSERT_EQ(j["outputs"].size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["outputs"][i]["index"], i);
    EXPECT_EQ(j["outputs"][i]["token_ids"].size(), 5u);
  }
  EXPECT_EQ(j["token_ids"], j["outputs"][0]["token_ids"]);
}

TEST_F(BatchCliTest, StopStringEndsTheCompletion) {
  // Find what greedy generates, then stop on a piece of it.
  const auto g = run(kBin + "pagoda generate " + model() +
                         " --prompt 'Hello' --max-tokens 12 --temperature 0 --ignore-eos --output-format json",
                     true);
  ASSERT_EQ(g.exit_code, 0) << g.output;
  const std::string text = json::parse(g.output)["text"];
  // Two ASCII bytes from the second half (a stop string must be valid UTF-8).
  std::string stop;
  for (size_t k = text.size() / 2; k + 1 < text.size() && stop.empty(); ++k)
    if (static_cast<unsigned char>(text[k]) < 0x80 && static_cast<unsigned char>(text[k + 1]) < 0x80)
      stop = text.substr(k, 2);
  if (stop.empty()) GTEST_SKIP() << "no ASCII pair in the greedy text to stop on";
  const size_t at = text.find(stop);
  const fs::path in = write_input(
      "stop.jsonl",
      json{{"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}, {"stop", {stop}}}.dump() +
          "\n");
  const auto r = run(kBin + "pagoda generate " + model() + " --input " + in.string(), true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const json j = json::parse(r.output);
  EXPECT_EQ(j["finish_reason"], "stop");
  EXPECT_EQ(j["stop_reason"], stop);
  EXPECT_EQ(j["text"], text.substr(0, at));
}

TEST_F(BatchCliTest, BenchThroughputPrintsTheThroughputLine) {
  const auto r = run(kBin + "pagoda bench throughput " + model() +
                         " --input-len 8 --output-len 4 --num-prompts 6 --max-num-seqs 4",
                     true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Throughput: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" requests/s, "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" total tokens/s, "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" output tokens/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Total num output tokens:  24"), std::string::npos) << r.output;
}

// --max-cudagraph-capture-size (vLLM's flag): accepted by the engine commands (on the CPU there
// are no graphs, so it changes nothing); a value out of range is an error naming the flag.
TEST_F(BatchCliTest, MaxCudagraphCaptureSizeIsCheckedAndAccepted) {
  const auto ok = run(kBin + "pagoda bench throughput " + model() +
                          " --input-len 8 --output-len 2 --num-prompts 2 --max-cudagraph-capture-size 8",
                      true);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  for (const char* bad : {"0", "9000", "many"}) {
    const auto r = run(kBin + "pagoda bench throughput " + model() +
                           " --input-len 8 --output-len 2 --num-prompts 2 --max-cudagraph-capture-size " + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--max-cudagraph-capture-size"), std::string::npos) << r.output;
  }
}

TEST_F(BatchCliTest, BenchThroughputReportsKvWasteOfPartlyFilledBlocks) {
  // 4 prompts of 8 tokens + 4 outputs, block size 16, in lockstep: after steps 1, 2, 3 each
  // request holds one block storing 8, 9, 10 tokens (after step 4 all have finished and hold
  // nothing) -> mean empty share over those 3 steps (8 + 7 + 6) / 48 = 43.75%.
  const auto r = run(kBin + "pagoda bench throughput " + model() +
                         " --input-len 8 --output-len 4 --num-prompts 4 --num-kv-blocks 4 --max-model-len 16",
                     true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("at most 4 of 4 blocks held (100.0%); partly filled blocks leave 43.75% of the held KV memory "
                          "empty (mean over 3 steps with >= 90% of the blocks held)"),
            std::string::npos)
      << r.output;
}

TEST_F(BatchCliTest, BenchPrefixCachingServesTheSharedPrefixFromTheCache) {
  const auto r = run(kBin + "pagoda bench prefix-caching " + model() +
                         " --prefix-len 40 --suffix-len 5 --num-prompts 3 --output-len 2",
                     true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Block size 16: the first request computes everything, the later ones find 32 tokens cached.
  EXPECT_NE(r.output.find("Request  0: TTFT"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("0 of 45 prompt tokens from the prefix cache"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Request  2: TTFT"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("32 of 45 prompt tokens from the prefix cache"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Later requests TTFT: mean "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Prefix cache hit rate: 47.41% (64 of 135 tokens)"), std::string::npos) << r.output;
}

TEST_F(BatchCliTest, BenchLatencyPrintsAverageAndPercentiles) {
  const auto r = run(kBin + "pagoda bench latency " + model() +
                         " --input-len 8 --output-len 4 --batch-size 2 --num-iters 2 --num-iters-warmup 0",
                     true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Avg latency: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("99% percentile latency: "), std::string::npos) << r.output;
}

TEST(BatchCliErrors, MissingInputFileIsAClearError) {
  const auto r = run(kBin + "pagoda generate /nonexistent/model --input /nonexistent/in.jsonl");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no such directory"), std::string::npos) << r.output;
}

}  // namespace
