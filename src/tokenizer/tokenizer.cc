#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace pagoda {

using json = nlohmann::json;
using namespace tokenizer_detail;

namespace tokenizer_detail {

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet (GPT-2): every byte is shown as a printable code point.
namespace {
struct ByteAlphabet {
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[512];
  ByteAlphabet() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t{-1});
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      byte_to_cp[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// Maps a byte-level token string to raw bytes; false when a character is outside the alphabet.
bool byte_level_to_bytes(std::string_view token, std::string& out) {
  out.clear();
  if (!utf8::is_valid(token)) return false;
  size_t i = 0;
  while (i < token.size()) {
    const uint32_t cp = utf8::next_codepoint(token, i);
    if (cp >= 512 || alphabet().cp_to_byte[cp] < 0) return false;
    out.push_back(static_cast<char>(alphabet().cp_to_byte[cp]));
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// PCRE2 per-thread match state.
struct MatchState {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mc = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    md = pcre2_match_data_create(32, nullptr);
    mc = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (mc && stack) pcre2_jit_stack_assign(mc, nullptr, stack);
  }
  ~MatchState() {
    if (md) pcre2_match_data_free(md);
    if (mc) pcre2_match_context_free(mc);
    if (stack) pcre2_jit_stack_free(stack);
  }
};
MatchState& match_state() {
  thread_local MatchState s;
  return s;
}

std::string escape_regex(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::strchr("\\^$.|?*+()[]{}-/#", c) != nullptr && c != 0) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

bool is_space_cp(uint32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || cp == 0x85) return true;
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_ZS ||
         cp == 0x2028 || cp == 0x2029;
}
bool is_alnum_cp(uint32_t cp) {
  const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}
uint32_t last_codepoint(std::string_view s, size_t end, size_t* start_out) {
  size_t i = end;
  do {
    --i;
  } while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
  size_t j = i;
  *start_out = i;
  return utf8::next_codepoint(s, j);
}
}  // namespace

Regex::Regex(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("cannot compile pre-tokenizer regex /", pattern, "/ at offset ", off, ": ",
         reinterpret_cast<const char*>(msg));
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::find(std::string_view subject, size_t from, size_t* start, size_t* end) const {
  MatchState& st = match_state();
  auto* code = static_cast<pcre2_code*>(code_);
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const int rc = jit_ ? pcre2_jit_match(code, subj, subject.size(), from, 0, st.md, st.mc)
                      : pcre2_match(code, subj, subject.size(), from, PCRE2_NO_UTF_CHECK, st.md,
                                    st.mc);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0 && rc != 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof(msg));
    fail("pre-tokenizer regex match failed: ", reinterpret_cast<const char*>(msg));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.md);
  *start = ov[0];
  *end = ov[1];
  return true;
}

// ---------------------------------------------------------------------------------------------
void AddedMatcher::build(std::vector<AddedToken> tokens) {
  tokens_.clear();
  for (auto& t : tokens)
    if (!t.content.empty()) tokens_.push_back(std::move(t));
  by_first_.assign(256, {});
  std::fill(std::begin(first_), std::end(first_), false);
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    const auto b = static_cast<unsigned char>(tokens_[i].content[0]);
    by_first_[b].push_back(i);
    first_[b] = true;
  }
  for (auto& v : by_first_) {
    std::stable_sort(v.begin(), v.end(), [&](uint32_t a, uint32_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

std::optional<AddedMatcher::Match> AddedMatcher::find(std::string_view text, size_t from) const {
  const size_t n = text.size();
  size_t i = from;
  while (i < n) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (!first_[b]) {
      ++i;
      continue;
    }
    const AddedToken* hit = nullptr;
    for (uint32_t idx : by_first_[b]) {
      const auto& c = tokens_[idx].content;
      if (c.size() <= n - i && std::memcmp(text.data() + i, c.data(), c.size()) == 0) {
        hit = &tokens_[idx];
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, stop = i + hit->content.size();
    if (hit->single_word) {
      size_t ps = 0;
      const bool start_ok = start == 0 || !is_alnum_cp(last_codepoint(text, start, &ps));
      size_t j = stop;
      const bool stop_ok = stop == n || !is_alnum_cp(utf8::next_codepoint(text, j));
      if (!start_ok || !stop_ok) {
        i = stop;
        continue;
      }
    }
    if (hit->lstrip) {
      while (start > from) {
        size_t ps = 0;
        if (!is_space_cp(last_codepoint(text, start, &ps))) break;
        start = ps;
      }
    }
    if (hit->rstrip) {
      while (stop < n) {
        size_t j = stop;
        if (!is_space_cp(utf8::next_codepoint(text, j))) break;
        stop = j;
      }
    }
    return Match{start, stop, hit->id};
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
std::string TokenizerImpl::normalize(std::string_view s) const {
  std::string cur(s);
  for (NormStep step : normalizer) {
    if (step == NormStep::kLowercase) {
      std::string out;
      out.reserve(cur.size());
      size_t i = 0;
      while (i < cur.size()) {
        const uint32_t cp = utf8::next_codepoint(cur, i);
        utf8::append_codepoint(out, static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
      }
      cur.swap(out);
      continue;
    }
    // NFC leaves text without bytes >= 0xCC (all code points < U+0300) unchanged: nothing
    // below U+0300 decomposes to something that does not recompose to itself.
    if (step == NormStep::kNFC) {
      bool trivial = true;
      for (unsigned char c : cur) {
        if (c >= 0xCC) {
          trivial = false;
          break;
        }
      }
      if (trivial) continue;
    }
    int opts = UTF8PROC_STABLE;
    switch (step) {
      case NormStep::kNFC: opts |= UTF8PROC_COMPOSE; break;
      case NormStep::kNFD: opts |= UTF8PROC_DECOMPOSE; break;
      case NormStep::kNFKC: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
      case NormStep::kNFKD: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
      default: break;
    }
    utf8proc_uint8_t* result = nullptr;
    const utf8proc_ssize_t len =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(cur.data()),
                     static_cast<utf8proc_ssize_t>(cur.size()), &result,
                     static_cast<utf8proc_option_t>(opts));
    if (len < 0) fail("normalization failed: ", utf8proc_errmsg(len));
    cur.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(len));
    std::free(result);
  }
  return cur;
}

void TokenizerImpl::pretokenize(size_t stage, std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (stage == pretok.size()) {
    bpe.encode_word(piece, out);
    return;
  }
  const PreTokStage& st = pretok[stage];
  if (st.kind == PreTokStage::Kind::kPrefixSpace) {
    if (piece[0] == ' ') {
      pretokenize(stage + 1, piece, out);
    } else {
      std::string with_space;
      with_space.reserve(piece.size() + 1);
      with_space.push_back(' ');
      with_space.append(piece);
      pretokenize(stage + 1, with_space, out);
    }
    return;
  }
  const Regex& re = *st.regex;
  if (st.behavior == SplitBehavior::kIsolated && !st.invert) {  // the common case, no buffering
    size_t pos = 0, from = 0, s = 0, e = 0;
    while (from <= piece.size() && re.find(piece, from, &s, &e)) {
      if (s > pos) pretokenize(stage + 1, piece.substr(pos, s - pos), out);
      if (e > s) pretokenize(stage + 1, piece.substr(s, e - s), out);
      pos = e;
      if (e == s) {  // empty match: step one character
        if (e >= piece.size()) break;
        size_t j = e;
        utf8::next_codepoint(piece, j);
        from = j;
      } else {
        from = e;
      }
    }
    if (pos < piece.size()) pretokenize(stage + 1, piece.substr(pos), out);
    return;
  }
  // General behaviours (HF SplitDelimiterBehavior) over the (span, is_match) list.
  struct Span {
    size_t s, e;
    bool m;
  };
  std::vector<Span> spans;
  {
    size_t pos = 0, from = 0, s = 0, e = 0;
    while (from <= piece.size() && re.find(piece, from, &s, &e)) {
      if (s > pos) spans.push_back({pos, s, false});
      spans.push_back({s, e, true});
      pos = e;
      if (e == s) {
        if (e >= piece.size()) break;
        size_t j = e;
        utf8::next_codepoint(piece, j);
        from = j;
      } else {
        from = e;
      }
    }
    if (pos < piece.size()) spans.push_back({pos, piece.size(), false});
    if (st.invert)
      for (auto& sp : spans) sp.m = !sp.m;
  }
  std::vector<Span> res;
  bool prev_match = false;
  switch (st.behavior) {
    case SplitBehavior::kIsolated: res = spans; break;
    case SplitBehavior::kRemoved:
      for (auto& sp : spans)
        if (!sp.m) res.push_back(sp);
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (auto& sp : spans) {
        if (sp.m && !prev_match && !res.empty()) res.back().e = sp.e;
        else res.push_back(sp);
        prev_match = sp.m;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (size_t k = spans.size(); k-- > 0;) {
        const auto& sp = spans[k];
        if (sp.m && !prev_match && !res.empty()) res.back().s = sp.s;
        else res.push_back(sp);
        prev_match = sp.m;
      }
      std::reverse(res.begin(), res.end());
      break;
    case SplitBehavior::kContiguous:
      for (auto& sp : spans) {
        if (sp.m == prev_match && !res.empty()) res.back().e = sp.e;
        else res.push_back(sp);
        prev_match = sp.m;
      }
      break;
  }
  for (const auto& sp : res) pretokenize(stage + 1, piece.substr(sp.s, sp.e - sp.s), out);
}

void TokenizerImpl::encode_normal(std::string_view segment, std::vector<int32_t>& out) const {
  if (segment.empty()) return;
  std::string normalized;
  std::string_view s = segment;
  if (!normalizer.empty()) {
    normalized = normalize(segment);
    s = normalized;
  }
  if (norm_added.empty()) {
    pretokenize(0, s, out);
    return;
  }
  size_t pos = 0;
  while (auto m = norm_added.find(s, pos)) {
    pretokenize(0, s.substr(pos, m->start - pos), out);
    out.push_back(m->id);
    pos = m->end;
  }
  pretokenize(0, s.substr(pos), out);
}

void TokenizerImpl::encode(std::string_view text, bool add_special, std::vector<int32_t>& out) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::to_valid(text);
    text = repaired;
  }
  if (add_special) out.insert(out.end(), post_prefix.begin(), post_prefix.end());
  if (raw_added.empty()) {
    encode_normal(text, out);
  } else {
    size_t pos = 0;
    while (auto m = raw_added.find(text, pos)) {
      encode_normal(text.substr(pos, m->start - pos), out);
      out.push_back(m->id);
      pos = m->end;
    }
    encode_normal(text.substr(pos), out);
  }
  if (add_special) out.insert(out.end(), post_suffix.begin(), post_suffix.end());
}

void TokenizerImpl::decode_bytes(const int32_t* ids, size_t n, bool skip_special, std::string& out) const {
  bool first = true;
  for (size_t i = 0; i < n; ++i) {
    if (!token_kept(ids[i], skip_special)) continue;
    if (decoder == DecoderKind::kNone && !first) out.push_back(' ');
    out.append(id_bytes[ids[i]]);
    first = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Loading.
namespace {

const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  PAGODA_CHECK(f.good(), "cannot open tokenizer file ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool get_bool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<bool>();
}

void parse_normalizer(const json& j, std::vector<NormStep>& out) {
  if (j.is_null()) return;
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const auto& n : j.at("normalizers")) parse_normalizer(n, out);
  } else if (type == "NFC") {
    out.push_back(NormStep::kNFC);
  } else if (type == "NFD") {
    out.push_back(NormStep::kNFD);
  } else if (type == "NFKC") {
    out.push_back(NormStep::kNFKC);
  } else if (type == "NFKD") {
    out.push_back(NormStep::kNFKD);
  } else if (type == "Lowercase") {
    out.push_back(NormStep::kLowercase);
  } else {
    fail("unsupported normalizer type \"", type, "\"");
  }
}

SplitBehavior parse_behavior(const std::string& b) {
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  fail("unsupported split behavior \"", b, "\"");
}

void parse_pretok(const json& j, TokenizerImpl& t) {
  if (j.is_null()) return;
  const std::string type = j.at("type").get<std::string>();
  if (type != "Sequence" && type != "ByteLevel" && t.byte_level)
    fail("pre-tokenizer \"", type, "\" after ByteLevel is not supported");
  if (type == "Sequence") {
    for (const auto& p : j.at("pretokenizers")) parse_pretok(p, t);
  } else if (type == "Split") {
    const json& pat = j.at("pattern");
    std::string regex;
    if (pat.contains("Regex")) regex = pat.at("Regex").get<std::string>();
    else regex = escape_regex(pat.at("String").get<std::string>());
    PreTokStage st;
    st.regex = std::make_shared<Regex>(regex);
    st.behavior = parse_behavior(j.at("behavior").get<std::string>());
    st.invert = get_bool(j, "invert", false);
    t.pretok.push_back(std::move(st));
  } else if (type == "Digits") {
    PreTokStage st;
    st.regex = std::make_shared<Regex>(get_bool(j, "individual_digits", false) ? "\\p{N}" : "\\p{N}+");
    t.pretok.push_back(std::move(st));
  } else if (type == "ByteLevel") {
    if (get_bool(j, "add_prefix_space", true)) {
      PreTokStage st;
      st.kind = PreTokStage::Kind::kPrefixSpace;
      t.pretok.push_back(std::move(st));
    }
    if (get_bool(j, "use_regex", true)) {
      PreTokStage st;
      st.regex = std::make_shared<Regex>(kGpt2Pattern);
      t.pretok.push_back(std::move(st));
    }
    t.byte_level = true;
  } else {
    fail("unsupported pre-tokenizer type \"", type, "\"");
  }
}

void parse_decoder(const json& j, TokenizerImpl& t) {
  if (j.is_null()) return;
  const std::string type = j.at("type").get<std::string>();
  if (type == "ByteLevel") {
    t.decoder = TokenizerImpl::DecoderKind::kByteLevel;
  } else if (type == "Sequence" && j.at("decoders").size() == 1) {
    parse_decoder(j.at("decoders")[0], t);
  } else {
    fail("unsupported decoder type \"", type, "\"");
  }
}

void parse_post(const json& j, TokenizerImpl& t) {
  if (j.is_null()) return;
  const std::string type = j.at("type").get<std::string>();
  if (type == "ByteLevel") return;  // affects offsets only
  if (type == "Sequence") {
    for (const auto& p : j.at("processors")) parse_post(p, t);
  } else if (type == "TemplateProcessing") {
    const json& specials = j.at("special_tokens");
    bool seen_seq = false;
    for (const auto& piece : j.at("single")) {
      if (piece.contains("Sequence")) {
        seen_seq = true;
        continue;
      }
      const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
      PAGODA_CHECK(specials.contains(name), "post_processor special token \"", name, "\" undefined");
      for (const auto& id : specials.at(name).at("ids"))
        (seen_seq ? t.post_suffix : t.post_prefix).push_back(id.get<int32_t>());
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    t.post_prefix.push_back(j.at("cls").at(1).get<int32_t>());
    t.post_suffix.push_back(j.at("sep").at(1).get<int32_t>());
  } else {
    fail("unsupported post_processor type \"", type, "\"");
  }
}

AddedToken parse_added(const json& a, int32_t id) {
  AddedToken t;
  t.content = a.at("content").get<std::string>();
  t.id = id;
  t.special = get_bool(a, "special", false);
  t.single_word = get_bool(a, "single_word", false);
  t.lstrip = get_bool(a, "lstrip", false);
  t.rstrip = get_bool(a, "rstrip", false);
  t.normalized = get_bool(a, "normalized", !t.special);
  return t;
}

std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content")) return it->at("content").get<std::string>();
  return std::nullopt;
}

std::shared_ptr<TokenizerImpl> load(const std::string& path, const json* config) {
  auto t = std::make_shared<TokenizerImpl>();
  t->path = path;
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("cannot parse tokenizer file ", path, ": ", e.what());
  }
  try {
    if (j.contains("normalizer")) parse_normalizer(j["normalizer"], t->normalizer);
    if (j.contains("pre_tokenizer")) parse_pretok(j["pre_tokenizer"], *t);
    if (j.contains("decoder")) parse_decoder(j["decoder"], *t);
    if (j.contains("post_processor")) parse_post(j["post_processor"], *t);

    const json& model = j.at("model");
    const std::string mtype = model.value("type", std::string("BPE"));
    PAGODA_CHECK(mtype == "BPE", "unsupported model type \"", mtype, "\" (only BPE)");
    PAGODA_CHECK(!get_bool(model, "byte_fallback", false), "BPE byte_fallback is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(k);
      PAGODA_CHECK(it == model.end() || it->is_null() || it->get<std::string>().empty(),
                   "BPE ", k, " is not supported");
    }
    int32_t max_id = -1;
    const json& vocab = model.at("vocab");
    t->model_vocab.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id = it.value().get<int32_t>();
      PAGODA_CHECK(id >= 0, "negative id for token \"", it.key(), "\"");
      t->model_vocab.emplace(it.key(), id);
      max_id = std::max(max_id, id);
    }
    // Added tokens (tokenizer.json), then tokenizer_config.json's added_tokens_decoder.
    std::vector<AddedToken> added;
    if (j.contains("added_tokens")) {
      for (const auto& a : j["added_tokens"]) added.push_back(parse_added(a, a.at("id").get<int32_t>()));
    }
    if (config != nullptr && config->contains("added_tokens_decoder")) {
      const json& atd = (*config)["added_tokens_decoder"];
      for (auto it = atd.begin(); it != atd.end(); ++it) {
        const int32_t id = std::stoi(it.key());
        AddedToken tok = parse_added(it.value(), id);
        auto found = std::find_if(added.begin(), added.end(), [&](const AddedToken& a) { return a.id == id; });
        if (found == added.end()) added.push_back(std::move(tok));
        else if (tok.special) found->special = true;
      }
    }
    for (const auto& a : added) {
      PAGODA_CHECK(a.id >= 0, "negative id for added token \"", a.content, "\"");
      max_id = std::max(max_id, a.id);
    }

    // Vocabulary tables by id.
    const size_t n = static_cast<size_t>(max_id + 1);
    t->id_to_token.assign(n, std::string());
    t->special.assign(n, 0);
    for (const auto& [tok, id] : t->model_vocab) t->id_to_token[id] = tok;
    std::vector<AddedToken> raw, norm;
    for (const auto& a : added) {
      t->id_to_token[a.id] = a.content;
      t->added_vocab[a.content] = a.id;
      if (a.special) t->special[a.id] = 1;
      AddedToken m = a;
      if (a.normalized && !t->normalizer.empty()) {
        m.content = t->normalize(a.content);
        norm.push_back(std::move(m));
      } else if (a.normalized) {
        norm.push_back(std::move(m));
      } else {
        raw.push_back(std::move(m));
      }
    }
    t->raw_added.build(std::move(raw));
    t->norm_added.build(std::move(norm));
    for (const auto& s : t->id_to_token) t->vocab_size += s.empty() ? 0 : 1;

    t->id_bytes.assign(n, std::string());
    std::string bytes;
    for (size_t id = 0; id < n; ++id) {
      const std::string& tok = t->id_to_token[id];
      if (t->decoder == TokenizerImpl::DecoderKind::kByteLevel && byte_level_to_bytes(tok, bytes))
        t->id_bytes[id] = bytes;
      else
        t->id_bytes[id] = tok;
    }

    // BPE pieces in byte form, and merges.
    StringMap pieces;
    pieces.reserve(t->model_vocab.size());
    for (const auto& [tok, id] : t->model_vocab) {
      if (!t->byte_level) pieces.emplace(tok, id);
      else if (byte_level_to_bytes(tok, bytes)) pieces.emplace(bytes, id);
    }
    const json& merges = model.at("merges");
    t->bpe.init(std::move(pieces), t->byte_level, get_bool(model, "ignore_merges", false), merges.size());
    int32_t rank = 0;
    std::string left, right;
    for (const auto& m : merges) {
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const size_t sp = s.find(' ');
        PAGODA_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                     "merge #", rank, " \"", s, "\" is not two tokens");
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      } else {
        PAGODA_CHECK(m.is_array() && m.size() == 2, "merge #", rank, " is not a pair");
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      }
      auto a = t->model_vocab.find(left), b = t->model_vocab.find(right),
           c = t->model_vocab.find(left + right);
      PAGODA_CHECK(a != t->model_vocab.end() && b != t->model_vocab.end() && c != t->model_vocab.end(),
                   "merge #", rank, " (\"", left, "\", \"", right, "\") uses a token missing from the vocab");
      t->bpe.add_merge(a->second, b->second, rank, c->second);
      ++rank;
    }

    if (config != nullptr) {
      auto lookup = [&](const char* key) -> std::optional<int32_t> {
        auto tok = config_token(*config, key);
        if (!tok) return std::nullopt;
        auto it = t->added_vocab.find(*tok);
        if (it != t->added_vocab.end()) return it->second;
        auto it2 = t->model_vocab.find(*tok);
        if (it2 != t->model_vocab.end()) return it2->second;
        return std::nullopt;
      };
      t->bos = lookup("bos_token");
      t->eos = lookup("eos_token");
    }
  } catch (const Error& e) {
    fail("tokenizer file ", path, ": ", e.what());
  } catch (const json::exception& e) {
    fail("tokenizer file ", path, ": malformed: ", e.what());
  }
  return t;
}

}  // namespace
}  // namespace tokenizer_detail

// ---------------------------------------------------------------------------------------------
Tokenizer::Tokenizer(std::shared_ptr<const TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_file(const std::string& path) { return Tokenizer(load(path, nullptr)); }

Tokenizer Tokenizer::from_dir(const std::string& model_dir) {
  namespace fs = std::filesystem;
  PAGODA_CHECK(fs::is_directory(model_dir), "model folder ", model_dir, " does not exist");
  const fs::path tj = fs::path(model_dir) / "tokenizer.json";
  PAGODA_CHECK(fs::exists(tj), "model folder ", model_dir, " has no tokenizer.json");
  const fs::path cfg_path = fs::path(model_dir) / "tokenizer_config.json";
  if (!fs::exists(cfg_path)) return from_file(tj.string());
  json cfg;
  try {
    cfg = json::parse(read_file(cfg_path.string()));
  } catch (const json::exception& e) {
    fail("cannot parse ", cfg_path.string(), ": ", e.what());
  }
  return Tokenizer(load(tj.string(), &cfg));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode(text, add_special_tokens, out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  impl_->decode_bytes(ids.data(), ids.size(), skip_special_tokens, bytes);
  if (utf8::is_valid(bytes)) return bytes;
  return utf8::to_valid(bytes);
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_vocab.find(token);
  if (it != impl_->added_vocab.end()) return it->second;
  auto it2 = impl_->model_vocab.find(token);
  return it2 == impl_->model_vocab.end() ? -1 : it2->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return {};
  return impl_->id_to_token[id];
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id] != 0;
}

std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos; }

// ---------------------------------------------------------------------------------------------
IncrementalDecoder::IncrementalDecoder(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::string IncrementalDecoder::push(int32_t id) {
  const TokenizerImpl& t = tok_.impl();
  if (!t.token_kept(id, skip_special_)) return {};
  if (t.decoder == TokenizerImpl::DecoderKind::kNone) {
    std::string out;
    if (kept_++ > 0) out.push_back(' ');
    out += t.id_bytes[id];
    return out;
  }
  // Byte-level: decode = lossy(concatenated bytes). Emit everything except a trailing,
  // still-completable partial character; cutting there leaves lossy decoding unchanged.
  pending_ += t.id_bytes[id];
  const size_t keep = utf8::incomplete_tail(pending_);
  const std::string_view ready(pending_.data(), pending_.size() - keep);
  std::string out = utf8::is_valid(ready) ? std::string(ready) : utf8::to_valid(ready);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string IncrementalDecoder::flush() {
  std::string out = utf8::to_valid(pending_);
  pending_.clear();
  return out;
}

}  // namespace pagoda
