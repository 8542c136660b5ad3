#include "chat/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "chat/jinja_unicode.h"

namespace pagoda {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// transformers' PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES
constexpr const char* kSpecialTokens[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                          "pad_token", "cls_token", "mask_token"};

// Appended to the final message for continue_final_message, then cut from the rendered prompt.
constexpr const char* kContinueTag = "CONTINUE_FINAL_MESSAGE_TAG ";

std::string py_strip(std::string_view s) { return std::string(jinja::str_strip(s, nullptr, true, true)); }

// Names a message's reasoning may come under; transformers copies it to all of them.
constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  PAGODA_CHECK(f.good(), "cannot read ", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json read_json(const fs::path& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail(path.string(), ": invalid JSON: ", e.what());
  }
}

jinja::Template compile(std::string_view source, const std::string& where) {
  try {
    return jinja::Template::parse(source);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
}

// The special tokens (string values) of tokenizer_config.json, plus special_tokens_map.json
// for old checkpoints without added_tokens_decoder (transformers' legacy path).
json load_special_tokens(const fs::path& dir) {
  json out = json::object();
  auto take = [&](const json& src) {
    for (const char* key : kSpecialTokens) {
      if (!src.contains(key)) continue;
      const json& v = src[key];
      if (v.is_string()) {
        out[key] = v;
      } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        out[key] = v["content"];
      } else if (v.is_null()) {
        out.erase(key);
      }
    }
  };
  const fs::path config = dir / "tokenizer_config.json";
  json cfg = json::object();
  if (fs::exists(config)) {
    cfg = read_json(config);
    if (cfg.is_object()) take(cfg);
  }
  const fs::path map = dir / "special_tokens_map.json";
  if (fs::exists(map) && !(cfg.is_object() && cfg.contains("added_tokens_decoder"))) {
    const json m = read_json(map);
    if (m.is_object()) take(m);
  }
  return out;
}

// apply_chat_template's message preprocessing, converting straight into template values: drop
// null-valued keys, alias the reasoning fields ({"thinking": r, **message, "reasoning_content": r}).
jinja::Value prepare_messages(const json& messages) {
  PAGODA_CHECK(messages.is_array(), "chat messages must be a JSON array");
  if (messages.empty()) fail("Cannot apply chat template to an empty conversation. Provide at least one message.");
  std::vector<jinja::Value> out;
  out.reserve(messages.size());
  for (const json& m : messages) {
    PAGODA_CHECK(m.is_object(), "Chat messages should be dicts, but got ", m.dump());
    const json* reasoning = nullptr;
    for (const char* field : kReasoningFields) {
      auto it = m.find(field);
      if (it != m.end() && !it->is_null()) {
        reasoning = &*it;
        break;
      }
    }
    auto msg = std::make_shared<jinja::DictObj>();
    msg->items.reserve(m.size() + 2);
    jinja::Value r;
    if (reasoning != nullptr) {
      r = jinja::from_json(*reasoning);
      msg->items.emplace_back(jinja::Value::string("thinking"), r);
    }
    for (const auto& [k, v] : m.items()) {
      if (v.is_null()) continue;
      jinja::Value value = jinja::from_json(v);
      if (reasoning != nullptr && k == "thinking") {
        msg->items[0].second = std::move(value);
        continue;
      }
      msg->depth = std::max(msg->depth, value.depth() + 1);
      msg->items.emplace_back(jinja::Value::string(k), std::move(value));
    }
    if (reasoning != nullptr) {
      bool replaced = false;
      for (auto& [k, v] : msg->items) {
        if (k.as_string() == "reasoning_content") {
          v = r;
          replaced = true;
        }
      }
      if (!replaced) msg->items.emplace_back(jinja::Value::string("reasoning_content"), r);
      msg->depth = std::max(msg->depth, r.depth() + 1);
    }
    out.push_back(jinja::Value::dict(std::move(msg)));
  }
  try {
    return jinja::Value::list(std::move(out));
  } catch (const jinja::EvalError& e) {  // nesting past jinja::kMaxDepth
    fail("chat messages: ", e.message);
  }
}

void set(jinja::DictObj& d, const std::string& key, jinja::Value v) {
  for (auto& [k, old] : d.items) {
    if (k.as_string() == key) {
      old = std::move(v);
      return;
    }
  }
  d.depth = std::max(d.depth, v.depth() + 1);
  d.items.emplace_back(jinja::Value::string(key), std::move(v));
}

}  // namespace

ChatTemplate ChatTemplate::from_model_dir(const std::string& dir_str, const std::string& name) {
  const fs::path dir(dir_str);
  ChatTemplate ct;
  ct.chosen_ = name;
  ct.special_tokens_ = load_special_tokens(dir);
  const fs::path jinja_file = dir / "chat_template.jinja";
  const fs::path extra_dir = dir / "additional_chat_templates";
  if (fs::exists(jinja_file)) {
    ct.templates_.emplace("default", compile(read_file(jinja_file), jinja_file.string()));
  }
  if (fs::is_directory(extra_dir)) {
    for (const auto& entry : fs::directory_iterator(extra_dir)) {
      if (entry.path().extension() != ".jinja") continue;
      ct.templates_.emplace(entry.path().stem().string(), compile(read_file(entry.path()), entry.path().string()));
    }
  }
  if (ct.templates_.empty()) {
    const fs::path config = dir / "tokenizer_config.json";
    PAGODA_CHECK(fs::exists(config), dir_str, ": no chat_template.jinja and no tokenizer_config.json");
    const json cfg = read_json(config);
    const std::string where = config.string() + " chat_template";
    PAGODA_CHECK(cfg.is_object() && cfg.contains("chat_template") && !cfg["chat_template"].is_null(), config.string(),
                 ": no chat_template (pass --chat-template)");
    const json& t = cfg["chat_template"];
    if (t.is_string()) {
      ct.templates_.emplace("default", compile(t.get<std::string>(), where));
    } else if (t.is_array()) {
      for (const json& item : t) {
        PAGODA_CHECK(item.is_object() && item.contains("name") && item["name"].is_string() &&
                         item.contains("template") && item["template"].is_string(),
                     where, ": list entries must be {\"name\": ..., \"template\": ...}");
        const std::string n = item["name"].get<std::string>();
        ct.templates_.emplace(n, compile(item["template"].get<std::string>(), where + " '" + n + "'"));
      }
    } else {
      fail(where, ": must be a string or a list of {name, template}");
    }
  }
  if (!name.empty()) PAGODA_CHECK(ct.templates_.count(name), dir_str, ": no chat template named '", name, "'");
  return ct;
}

ChatTemplate ChatTemplate::from_flag(const std::string& value, const std::string& model_dir) {
  std::error_code ec;
  std::string source = value;
  std::string where = "--chat-template";
  if (value.find('\n') == std::string::npos && value.size() < 4096 && fs::is_regular_file(value, ec)) {
    source = read_file(value);
    where = value;
  }
  ChatTemplate ct;
  if (!model_dir.empty() && fs::is_directory(model_dir, ec)) ct.special_tokens_ = load_special_tokens(model_dir);
  ct.templates_.emplace("default", compile(source, where));
  return ct;
}

ChatTemplate ChatTemplate::from_string(std::string_view source, const json& special_tokens) {
  ChatTemplate ct;
  PAGODA_CHECK(special_tokens.is_object(), "special tokens must be a JSON object");
  ct.special_tokens_ = special_tokens;
  ct.templates_.emplace("default", jinja::Template::parse(source));
  return ct;
}

const jinja::Template& ChatTemplate::select(bool has_tools) const {
  if (!chosen_.empty()) return templates_.at(chosen_);
  if (has_tools) {
    if (auto it = templates_.find("tool_use"); it != templates_.end()) return it->second;
  }
  if (auto it = templates_.find("default"); it != templates_.end()) return it->second;
  std::string names;
  for (const auto& [n, t] : templates_) names += (names.empty() ? "" : ", ") + n;
  fail("This model has multiple chat templates with no default specified! Available template names are: ", names);
}

const std::string& ChatTemplate::source() const { return select(false).source(); }

std::string ChatTemplate::apply(const json& messages, const json* tools, bool add_generation_prompt,
                                const json& extra_kwargs, bool continue_final_message) const {
  const bool has_tools = tools != nullptr && !tools->is_null();
  if (has_tools) PAGODA_CHECK(tools->is_array(), "tools must be a JSON array");
  PAGODA_CHECK(extra_kwargs.is_null() || extra_kwargs.is_object(), "chat template kwargs must be a JSON object");
  auto ctx = std::make_shared<jinja::DictObj>();
  const jinja::Value msgs = prepare_messages(messages);
  set(*ctx, "messages", msgs);
  set(*ctx, "tools", has_tools ? jinja::from_json(*tools) : jinja::Value::none());
  set(*ctx, "documents", jinja::Value::none());
  set(*ctx, "add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  for (const auto& [k, v] : special_tokens_.items()) set(*ctx, k, jinja::from_json(v));
  if (extra_kwargs.is_object()) {
    for (const auto& [k, v] : extra_kwargs.items()) {
      if (k == "messages" || k == "tools" || k == "add_generation_prompt") {
        fail("chat template kwargs may not override '", k, "'");
      }
      set(*ctx, k, jinja::from_json(v));
    }
  }
  std::string final_message;
  if (continue_final_message) {
    PAGODA_CHECK(!add_generation_prompt,
                 "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when "
                 "you want the model to continue the final message, and add_generation_prompt when you want to add a "
                 "header that will prompt it to start a new assistant message instead.");
    // The message values were converted just above, so they are ours to modify.
    jinja::DictObj& last = msgs.as_list().items.back().mutable_dict();
    jinja::Value* content = nullptr;
    for (auto& [k, v] : last.items) {
      if (k.as_string() == "content") content = &v;
    }
    PAGODA_CHECK(content != nullptr,
                 "continue_final_message is set but the final message has no \"content\" to continue!");
    PAGODA_CHECK(select(has_tools).source().find("content") != std::string::npos,
                 "continue_final_message is set to \"content\" but this is not an accepted field in the chat_template");
    if (content->is_list()) {
      bool found = false;
      auto& parts = content->mutable_list().items;
      for (auto it = parts.rbegin(); it != parts.rend() && !found; ++it) {
        if (!it->is_dict()) continue;
        for (auto& [k, v] : it->mutable_dict().items) {
          if (k.as_string() == "text" && v.is_string()) {
            final_message = v.as_string();
            v = jinja::Value::string(final_message + kContinueTag);
            found = true;
            break;
          }
        }
      }
      PAGODA_CHECK(found,
                   "continue_final_message is set but we could not find any text to continue in the final message!");
    } else {
      PAGODA_CHECK(content->is_string(), "continue_final_message needs the final message's content to be a string");
      final_message = content->as_string();
      *content = jinja::Value::string(final_message + kContinueTag);
    }
  }
  std::string rendered = select(has_tools).render(jinja::Value::dict(std::move(ctx)));
  if (continue_final_message) {
    // Cut the prompt just before the tag (transformers' rendered_chat[:tag_loc], rstripped when
    // the template trimmed the space that ends the tag).
    const std::string tag(kContinueTag);
    const std::string tag_core(py_strip(tag));
    const size_t at = rendered.rfind(tag_core);
    PAGODA_CHECK(rendered.find(py_strip(final_message)) != std::string::npos && at != std::string::npos,
                 "continue_final_message is set but the final message does not appear in the chat after applying the "
                 "chat template! This can happen if the chat template deletes portions of the final message.");
    if (rendered.compare(at, tag.size(), tag) == 0) {
      rendered.resize(at);
    } else {
      rendered = std::string(jinja::str_strip(std::string_view(rendered).substr(0, at), nullptr, false, true));
    }
  }
  return rendered;
}

}  // namespace pagoda
