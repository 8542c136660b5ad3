// The `pagoda` binary as a user runs it: generate on a random-weight checkpoint written by
// tools/make_random_checkpoint, JSON output shape, seeded reproducibility, and clear errors for
// bad folders and flags (non-zero exit, a message naming the problem, no crash).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "run_command.h"

namespace {

namespace fs = std::filesystem;

using pagoda::testing::run;

const std::string kBin = std::string(PAGODA_BINARY_DIR) + "/bin/";

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("pagoda_cli_test_" + std::to_string(getpid()));
    const auto r = run(kBin + "make_random_checkpoint " + dir_.string() + " --preset tiny --tokenizer-dir " +
                       std::string(PAGODA_SHARED_DIR) + "/tokenizers/qwen3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
};
fs::path CliTest::dir_;

TEST_F(CliTest, GenerateJsonHasTextTokenIdsAndFinishReason) {
  const auto r = run(kBin + "pagoda generate " + dir_.string() +
                     " --prompt 'Hello there' --max-tokens 8 --temperature 0 --ignore-eos --output-format json",
                     true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_TRUE(j.contains("text") && j.contains("token_ids") && j.contains("finish_reason"));
  EXPECT_EQ(j["token_ids"].size(), 8u);
  EXPECT_EQ(j["finish_reason"], "length");
}

TEST_F(CliTest, KvCacheDtypeFp8RunsAndBadValuesAreNamed) {
  for (const char* dt : {"fp8", "fp8_e4m3", "fp8_e5m2"}) {
    const std::string opts = " --prompt 'Hello there' --max-tokens 8 --temperature 0 --ignore-eos --output-format json";
    auto r = run(kBin + "pagoda generate " + dir_.string() + opts + " --kv-cache-dtype " + dt, true);
    ASSERT_EQ(r.exit_code, 0) << dt << ": " << r.output;
    EXPECT_EQ(nlohmann::json::parse(r.output)["token_ids"].size(), 8u) << dt;
    r = run(kBin + "pagoda generate " + dir_.string() + " --input /dev/null --kv-cache-dtype " + dt, true);
    EXPECT_EQ(r.exit_code, 0) << dt << " (batch): " << r.output;
  }
  const auto bad = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --kv-cache-dtype fp9");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--kv-cache-dtype must be auto, bfloat16, fp8"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("'fp9'"), std::string::npos) << bad.output;
}

TEST_F(CliTest, QuantizationFp8RunsAndBadValuesAreNamed) {
  // --quantization fp8 / -q fp8 quantize the BF16 checkpoint at load; on the CPU, single prompt,
  // batch (--input) and bench all take it.
  const std::string opts = " --prompt 'Hello there' --max-tokens 8 --temperature 0 --ignore-eos --output-format json";
  for (const char* flag : {" --quantization fp8", " -q fp8", " --quantization=fp8"}) {
    const auto r = run(kBin + "pagoda generate " + dir_.string() + opts + flag, true);
    ASSERT_EQ(r.exit_code, 0) << flag << ": " << r.output;
    EXPECT_EQ(nlohmann::json::parse(r.output)["token_ids"].size(), 8u) << flag;
  }
  auto r = run(kBin + "pagoda generate " + dir_.string() + " --input /dev/null -q fp8", true);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run(kBin + "pagoda bench latency " + dir_.string() +
              " --input-len 8 --output-len 4 --batch-size 1 --num-iters 1 --num-iters-warmup 0 -q fp8",
          true);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto bad = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --quantization awq");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--quantization awq is not supported"), std::string::npos) << bad.output;
  const auto both = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --quantization fp8 -q fp8");
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.output.find("--quantization and -q both given"), std::string::npos) << both.output;
  const auto cuda = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi -q fp8 --device cuda");
  EXPECT_EQ(cuda.exit_code, 1);
  EXPECT_NE(cuda.output.find("CPU-only"), std::string::npos) << cuda.output;
}

TEST_F(CliTest, SameSeedSameTokens) {
  const std::string cmd = kBin + "pagoda generate " + dir_.string() +
                          " --prompt 'Once upon a time' --max-tokens 12 --temperature 1.0 --top-p 0.9 --seed 7"
                          " --ignore-eos --output-format json";
  const auto a = run(cmd, true), b = run(cmd, true);
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(nlohmann::json::parse(a.output)["token_ids"], nlohmann::json::parse(b.output)["token_ids"]);
}

TEST_F(CliTest, TokenizeMatchesKnownQwenIds) {
  // "Hello world" is [9707, 1879] in the Qwen3 vocabulary (HF tokenizers).
  const auto r = run(kBin + "pagoda tokenize " + dir_.string() + " 'Hello world'", true);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output), nlohmann::json::parse("[9707, 1879]"));
}

TEST(CliErrors, MissingFolderIsAClearError) {
  const auto r = run(kBin + "pagoda generate /nonexistent/model --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/nonexistent/model"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no such directory"), std::string::npos) << r.output;
}

TEST(CliErrors, FolderThatIsNotACheckpoint) {
  const fs::path d = fs::temp_directory_path() / ("pagoda_empty_" + std::to_string(getpid()));
  fs::create_directories(d);
  const auto r = run(kBin + "pagoda generate " + d.string() + " --prompt hi");
  fs::remove_all(d);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("not a checkpoint"), std::string::npos) << r.output;
}

TEST_F(CliTest, BadFlagValuesAreNamed) {
  auto r = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --top-p 2");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("top_p"), std::string::npos) << r.output;
  r = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --max-tokens abc");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--max-tokens"), std::string::npos) << r.output;
  r = run(kBin + "pagoda generate " + dir_.string() + " --prompt hi --no-such-flag");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--no-such-flag"), std::string::npos) << r.output;
}

TEST(CliHelp, EveryCommandDocumentsEveryFlagItTakes) {
  // --help exits 0, prints to stdout, and lists each flag the command accepts with its help.
  const std::pair<std::string, std::string> cases[] = {
      {"serve", "--max-num-seqs"},          {"generate", "--prompt"},
      {"generate m --input f", "--output"}, {"bench throughput", "--num-prompts"},
      {"bench latency", "--batch-size"},    {"bench prefix-caching", "--prefix-len"},
      {"bench serve", "--max-concurrency"},
  };
  for (const auto& [command, flag] : cases) {
    const auto r = run(kBin + "pagoda " + command + " --help", /*stdout_only=*/true);
    EXPECT_EQ(r.exit_code, 0) << command;
    const std::string name = command.substr(0, command.find(" m "));
    EXPECT_EQ(r.output.rfind("usage: pagoda " + name + " ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("\n  " + flag + " "), std::string::npos) << command << ":\n" << r.output;
    EXPECT_EQ(r.output.find("(undocumented)"), std::string::npos) << command << ":\n" << r.output;
  }
  // -h too, and wherever a flag may stand; a flag's value that reads "--help" is just a value.
  EXPECT_EQ(run(kBin + "pagoda serve /nonexistent -h", true).exit_code, 0);
  const auto top = run(kBin + "pagoda --help", true);
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.output.find("pagoda <command> --help"), std::string::npos) << top.output;
  const auto bench = run(kBin + "pagoda bench --help", true);
  EXPECT_EQ(bench.exit_code, 0);
  EXPECT_NE(bench.output.find("prefix-caching"), std::string::npos) << bench.output;
  const auto value = run(kBin + "pagoda generate /nonexistent --prompt --help");
  EXPECT_EQ(value.exit_code, 1);
  EXPECT_NE(value.output.find("no such directory"), std::string::npos) << value.output;
}

TEST(CliHelp, UnknownFlagPointsAtTheHelp) {
  const auto r = run(kBin + "pagoda serve /nonexistent --no-such-flag");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown flag --no-such-flag (`pagoda serve --help` lists the flags)"), std::string::npos)
      << r.output;
}

}  // namespace
