// Hugging Face tokenizer.json tokenizers (byte-level BPE: Qwen, Llama 3, DeepSeek) and streaming
// detokenization. Results equal the `tokenizers` library (encode(...).ids and decode(...)); the
// reference fixtures in tests/tokenizer/data come from tools/make_tokenizer_corpus.py.
//
// A Tokenizer is immutable after loading, cheap to copy (shared state) and safe to use from many
// threads at once (the BPE word cache is internally synchronised).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pagoda {

namespace tokenizer_detail {
struct TokenizerImpl;
}

class Tokenizer {
 public:
  // Loads tokenizer.json. Errors (pagoda::Error) name the file.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  // Loads MODEL_DIR/tokenizer.json and, when present, MODEL_DIR/tokenizer_config.json
  // (added_tokens_decoder, bos_token, eos_token).
  static Tokenizer from_dir(const std::string& model_dir);

  // == HF encode(text, add_special_tokens).ids. Invalid UTF-8 in `text` is first replaced with
  // U+FFFD the way Python's bytes.decode('utf-8', errors='replace') does.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // == HF decode(ids, skip_special_tokens). Unknown ids are skipped (as HF does).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  std::string id_to_token(int32_t id) const;           // "" if unknown / out of range
  int64_t vocab_size() const;                          // HF get_vocab_size(with_added_tokens=True)
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;

  const tokenizer_detail::TokenizerImpl& impl() const { return *impl_; }

 private:
  explicit Tokenizer(std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl);
  std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl_;
};

// Streaming detokenizer. push() returns only complete UTF-8 text; the concatenation of every
// push() result and flush() equals tok.decode(all ids, skip_special_tokens).
// Keeps a reference to `tok`'s shared state (the Tokenizer object itself may go away).
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tok, bool skip_special_tokens);
  std::string push(int32_t id);
  std::string flush();

 private:
  Tokenizer tok_;
  bool skip_special_;
  std::string pending_;               // bytes not yet emitted (an incomplete UTF-8 tail)
  size_t kept_ = 0;                   // tokens emitted so far (for decoders that join with ' ')
};

}  // namespace pagoda
