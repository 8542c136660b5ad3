// `pagoda tokenize MODEL_DIR TEXT [--add-special-tokens]` prints the token ids as a JSON array;
// `pagoda tokenize MODEL_DIR '[ids...]' --decode [--skip-special-tokens]` prints the text.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace pagoda {

namespace {
constexpr const char* kUsage =
    "usage: pagoda tokenize MODEL_DIR TEXT [--add-special-tokens]\n"
    "       pagoda tokenize MODEL_DIR '[id, ...]' --decode [--skip-special-tokens]\n";

std::vector<int32_t> parse_ids(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--decode expects TEXT to be a JSON array of token ids, got '", text, "' (", e.what(), ")");
  }
  PAGODA_CHECK(j.is_array(), "--decode expects TEXT to be a JSON array of token ids, got '", text, "'");
  std::vector<int32_t> ids;
  for (const auto& v : j) {
    PAGODA_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX,
                 "--decode: '", v.dump(), "' is not a token id (a non-negative integer)");
    ids.push_back(v.get<int32_t>());
  }
  return ids;
}
}  // namespace

int tokenize_command(int argc, char** argv) {
  std::vector<std::string> positional;
  bool decode = false, add_special = false, skip_special = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--decode") decode = true;
    else if (a == "--add-special-tokens") add_special = true;
    else if (a == "--skip-special-tokens") skip_special = true;
    else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a.size() > 2 && a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "error: unknown flag '%s'\n%s", a.c_str(), kUsage);
      return 2;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr, "error: expected MODEL_DIR and TEXT\n%s", kUsage);
    return 2;
  }
  try {
    const Tokenizer tok = Tokenizer::from_dir(positional[0]);
    if (decode) {
      const std::string text = tok.decode(parse_ids(positional[1]), skip_special);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fputc('\n', stdout);
    } else {
      const std::vector<int32_t> ids = tok.encode(positional[1], add_special);
      std::string out = "[";
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(ids[i]);
      }
      out += "]\n";
      std::fputs(out.c_str(), stdout);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace pagoda
