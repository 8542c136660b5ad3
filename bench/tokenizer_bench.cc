// Single-threaded encode throughput of pagoda::Tokenizer (MB/s of UTF-8 input) on the tokenizer
// test corpus (tests/tokenizer/data/corpus.json) repeated to ~8 MB, one encode() per document.
// bench/tokenizer_bench_hf.py measures Hugging Face `tokenizers` on exactly the same documents.
//   tokenizer_bench [--shared DIR] [--corpus FILE | --text FILE] [--repeat N] [--names a,b]
// --text FILE: documents are consecutive 64-line chunks of a plain UTF-8 file instead.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(__FILE__).parent_path().parent_path();
  std::string shared = (root / ".." / "shared").string();
  std::string corpus_path = (root / "tests" / "tokenizer" / "data" / "corpus.json").string();
  std::string text_path;
  int repeat = 16;
  std::vector<std::string> names = {"qwen3", "llama3", "deepseek_v3"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--shared") shared = argv[i + 1];
    else if (a == "--corpus") corpus_path = argv[i + 1];
    else if (a == "--text") text_path = argv[i + 1];
    else if (a == "--repeat") repeat = std::stoi(argv[i + 1]);
    else if (a == "--names") {
      names.clear();
      std::stringstream ss(argv[i + 1]);
      for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
    }
  }
  const std::string& input = text_path.empty() ? corpus_path : text_path;
  std::ifstream f(input, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot open %s\n", input.c_str());
    return 1;
  }
  std::vector<std::string> docs;
  if (text_path.empty()) {
    const auto corpus = nlohmann::json::parse(f);
    for (const auto& t : corpus["texts"]) docs.push_back(t.get<std::string>());
  } else {
    std::string line, doc;
    int n = 0;
    while (std::getline(f, line)) {
      doc += line;
      doc += '\n';
      if (++n % 64 == 0) docs.push_back(std::move(doc)), doc.clear();
    }
    if (!doc.empty()) docs.push_back(doc);
  }
  size_t bytes_per_pass = 0;
  for (const auto& d : docs) bytes_per_pass += d.size();
  std::printf("corpus: %zu documents, %.2f MB per pass, %d passes\n", docs.size(), bytes_per_pass / 1e6, repeat);

  for (const auto& name : names) {
    const auto t0 = std::chrono::steady_clock::now();
    const pagoda::Tokenizer tok = pagoda::Tokenizer::from_dir(shared + "/tokenizers/" + name);
    const auto t1 = std::chrono::steady_clock::now();
    size_t tokens = 0;
    double first_pass = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeat; ++r) {
      for (const auto& d : docs) tokens += tok.encode(d).size();
      if (r == 0) first_pass = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double mb = static_cast<double>(bytes_per_pass) * repeat / 1e6;
    std::printf("%-12s load %.2fs  encode %.1f MB/s (first pass %.1f MB/s), %.2fM tokens/s\n", name.c_str(),
                std::chrono::duration<double>(t1 - t0).count(), mb / secs, bytes_per_pass / 1e6 / first_pass,
                static_cast<double>(tokens) / secs / 1e6);
  }
  return 0;
}
