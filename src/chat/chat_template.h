// A model's chat template: the Jinja program that turns OpenAI-style messages into the prompt
// text, rendered exactly as transformers' tokenizer.apply_chat_template(..., tokenize=False).
//
// Where the template comes from (transformers' precedence):
//   1. MODEL_DIR/chat_template.jinja (newer checkpoints) as "default", plus
//      MODEL_DIR/additional_chat_templates/<name>.jinja as named templates;
//   2. else tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"};
//   3. or a template given explicitly (the --chat-template flag: a file path or the template text).
// With several named templates, apply() uses "tool_use" when tools are given and it exists,
// else "default" (or the one chosen by name).
//
// What apply() passes to the template, as apply_chat_template does: messages (top-level keys
// whose value is null dropped; "reasoning_content" / "thinking" / "reasoning" aliased to each
// other), tools (or none), documents (none unless given in the kwargs), add_generation_prompt,
// the special tokens of tokenizer_config.json (bos_token, eos_token, unk_token, sep_token,
// pad_token, cls_token, mask_token; strings or {"content": ...}), then the extra kwargs
// (chat_template_kwargs such as enable_thinking), which override special tokens.
//
// Immutable after loading; apply() is const and safe to call from many threads at once.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "chat/jinja.h"

namespace pagoda {

class ChatTemplate {
 public:
  // From a Hugging Face model / tokenizer folder (see the precedence above). `name` picks one of
  // several named templates ("" = automatic). Errors name the file.
  static ChatTemplate from_model_dir(const std::string& dir, const std::string& name = "");
  // The --chat-template flag: `value` is a path to a file if one exists there, else the template
  // text itself. Special tokens still come from `model_dir` (may be "").
  static ChatTemplate from_flag(const std::string& value, const std::string& model_dir);
  // A template string plus special tokens ({"bos_token": "<s>", ...}).
  static ChatTemplate from_string(std::string_view source,
                                  const nlohmann::ordered_json& special_tokens = nlohmann::ordered_json::object());

  // Renders the prompt. `messages`: JSON array of message objects. `tools`: JSON array of tool
  // schemas, or nullptr. `extra_kwargs`: a JSON object (or null) of extra template variables.
  // `continue_final_message`: end the prompt inside the last message's content (so the model
  // continues it) instead of closing it, as transformers does (incompatible with
  // add_generation_prompt). Throws pagoda::Error (jinja::TemplateError for template failures,
  // with the template line).
  std::string apply(const nlohmann::ordered_json& messages, const nlohmann::ordered_json* tools,
                    bool add_generation_prompt,
                    const nlohmann::ordered_json& extra_kwargs = nlohmann::ordered_json::object(),
                    bool continue_final_message = false) const;

  // The default template's source text.
  const std::string& source() const;
  const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }

 private:
  const jinja::Template& select(bool has_tools) const;

  std::map<std::string, jinja::Template> templates_;
  std::string chosen_;  // explicit name, or "" for automatic selection
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
};

}  // namespace pagoda
