#include "chat/tool_parser.h"

#include "chat/reasoning_parser.h"

#include <algorithm>
#include <cstdio>
#include <random>

namespace pagoda {
namespace {

using ordered_json = nlohmann::ordered_json;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

bool all_space(std::string_view s) { return std::all_of(s.begin(), s.end(), is_space); }

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// Matches `literal` at i (after optional whitespace); returns the position after it, npos if the
// text differs, or s.size() + 1 if the text ends before the literal is complete.
constexpr size_t kIncomplete = static_cast<size_t>(-2);
size_t expect(std::string_view s, size_t i, std::string_view literal) {
  i = skip_space(s, i);
  for (size_t k = 0; k < literal.size(); ++k, ++i) {
    if (i >= s.size()) return kIncomplete;
    if (s[i] != literal[k]) return std::string_view::npos;
  }
  return i;
}

// A JSON string starting at the quote at s[i]: the position after its closing quote, or
// kIncomplete.
size_t end_of_string(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return kIncomplete;
}

// {"name": ..., "arguments": ...} with both keys; nullopt otherwise.
std::optional<ToolCall> parse_call(std::string_view text) {
  ordered_json j;
  try {
    j = ordered_json::parse(text);
  } catch (const ordered_json::exception&) {
    return std::nullopt;
  }
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string() || !j.contains("arguments")) return std::nullopt;
  ToolCall c;
  c.id = make_tool_call_id();
  c.name = j["name"].get<std::string>();
  c.arguments = python_json_dumps(j["arguments"]);
  return c;
}

void dump_string(const std::string& s, std::string& out) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void dump(const ordered_json& v, std::string& out) {
  switch (v.type()) {
    case ordered_json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, x] : v.items()) {
        if (!first) out += ", ";
        first = false;
        dump_string(k, out);
        out += ": ";
        dump(x, out);
      }
      out.push_back('}');
      break;
    }
    case ordered_json::value_t::array: {
      out.push_back('[');
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        dump(v[i], out);
      }
      out.push_back(']');
      break;
    }
    case ordered_json::value_t::string: dump_string(v.get<std::string>(), out); break;
    default: out += v.dump(); break;  // numbers, booleans, null print as Python's json does
  }
}

}  // namespace

std::string python_json_dumps(const ordered_json& value) {
  std::string out;
  dump(value, out);
  return out;
}

std::string make_tool_call_id() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* hex = "0123456789abcdef";
  std::string id = "chatcmpl-tool-";
  for (int i = 0; i < 2; ++i) {
    uint64_t x = rng();
    for (int k = 0; k < 16; ++k, x >>= 4) id.push_back(hex[x & 15]);
  }
  return id;
}

ExtractedToolCalls HermesToolParser::extract(std::string_view output) {
  ExtractedToolCalls out;
  const size_t first = output.find(kStart);
  if (first == std::string_view::npos) {
    out.content = std::string(output);
    return out;
  }
  for (size_t pos = first; pos != std::string_view::npos;) {
    const size_t body = pos + kStart.size();
    const size_t end = output.find(kEnd, body);
    const std::string_view text = output.substr(body, end == std::string_view::npos ? std::string_view::npos : end - body);
    std::optional<ToolCall> call = parse_call(text);
    if (!call) {  // as vLLM: one bad call makes the whole output plain content
      out.tool_calls.clear();
      out.content = std::string(output);
      return out;
    }
    out.tool_calls.push_back(std::move(*call));
    if (end == std::string_view::npos) break;
    pos = output.find(kStart, end + kEnd.size());
  }
  out.tools_called = true;
  if (first > 0) out.content = std::string(output.substr(0, first));
  return out;
}

void HermesToolParser::scan_call(ToolParserDelta& d) {
  const std::string_view s = pending_;
  if (!name_sent_) {
    size_t i = expect(s, 0, "{");
    if (i != kIncomplete && i != std::string_view::npos) i = expect(s, i, "\"name\"");
    if (i != kIncomplete && i != std::string_view::npos) i = expect(s, i, ":");
    if (i != kIncomplete && i != std::string_view::npos) {
      i = skip_space(s, i);
      if (i >= s.size()) {
        i = kIncomplete;
      } else if (s[i] != '"') {
        i = std::string_view::npos;
      } else {
        const size_t name_end = end_of_string(s, i);
        if (name_end != kIncomplete) {
          std::string name;
          try {
            name = ordered_json::parse(s.substr(i, name_end - i)).get<std::string>();
          } catch (const ordered_json::exception&) {
            return;  // not a valid name: wait for the whole call
          }
          ToolCallDelta t;
          t.index = num_calls_++;
          t.id = make_tool_call_id();
          t.name = std::move(name);
          d.tool_calls.push_back(std::move(t));
          name_sent_ = true;
          args_start_ = std::string::npos;
          args_sent_ = 0;
          name_end_ = name_end;
        }
      }
    }
    if (!name_sent_) return;  // incomplete, or not the "name"-first layout (handled at the end)
  }
  if (args_start_ == std::string::npos) {
    size_t i = expect(s, name_end_, ",");
    if (i != kIncomplete && i != std::string_view::npos) i = expect(s, i, "\"arguments\"");
    if (i != kIncomplete && i != std::string_view::npos) i = expect(s, i, ":");
    if (i == kIncomplete || i == std::string_view::npos) return;
    i = skip_space(s, i);
    if (i >= s.size()) return;
    args_start_ = i;
  }
  // Send the arguments' text, holding back a possible closing brace of the call object followed
  // by nothing but whitespace and the start of "</tool_call>".
  size_t avail = s.size();
  size_t tail = avail - partial_tag_suffix(s, kEnd);
  while (tail > args_start_ && is_space(s[tail - 1])) --tail;
  if (tail > args_start_ && s[tail - 1] == '}') --tail;
  while (tail > args_start_ && is_space(s[tail - 1])) --tail;
  avail = tail;
  if (avail > args_start_ + args_sent_) {
    ToolCallDelta t;
    t.index = num_calls_ - 1;
    t.arguments = std::string(s.substr(args_start_ + args_sent_, avail - args_start_ - args_sent_));
    args_sent_ = avail - args_start_;
    d.tool_calls.push_back(std::move(t));
  }
}

ToolParserDelta HermesToolParser::push(std::string_view text) {
  ToolParserDelta d;
  pending_.append(text);
  for (;;) {
    if (!in_call_) {
      const size_t start = pending_.find(kStart);
      if (start == std::string::npos) {
        const size_t hold = partial_tag_suffix(pending_, kStart);
        std::string out = pending_.substr(0, pending_.size() - hold);
        pending_.erase(0, pending_.size() - hold);
        // After a call, whitespace waits: it is dropped unless more content follows.
        if (num_calls_ > 0 && all_space(out)) {
          pending_.insert(0, out);
        } else {
          d.content += out;
        }
        return d;
      }
      std::string before = pending_.substr(0, start);
      if (!(num_calls_ > 0 && all_space(before))) d.content += before;
      pending_.erase(0, start + kStart.size());
      in_call_ = true;
      name_sent_ = false;
      continue;
    }
    const size_t end = pending_.find(kEnd);
    if (end == std::string::npos) {
      scan_call(d);
      return d;
    }
    close_call(d, end);
    pending_.erase(0, end + kEnd.size());
    in_call_ = false;
  }
}

void HermesToolParser::close_call(ToolParserDelta& d, size_t end) {
  const std::string_view call = std::string_view(pending_).substr(0, end);
  if (!name_sent_) {
    // Not streamed so far (another key order, or it all came at once): send it whole.
    if (std::optional<ToolCall> c = parse_call(call)) {
      ToolCallDelta t;
      t.index = num_calls_++;
      t.id = std::move(c->id);
      t.name = std::move(c->name);
      t.arguments = std::move(c->arguments);
      d.tool_calls.push_back(std::move(t));
    }
    return;
  }
  if (args_start_ == std::string::npos) return;  // the arguments never started: nothing to send
  // The arguments end at the call object's closing brace.
  size_t tail = end;
  while (tail > args_start_ && is_space(call[tail - 1])) --tail;
  if (tail > args_start_ && call[tail - 1] == '}') --tail;
  while (tail > args_start_ && is_space(call[tail - 1])) --tail;
  if (tail > args_start_ + args_sent_) {
    ToolCallDelta t;
    t.index = num_calls_ - 1;
    t.arguments = std::string(call.substr(args_start_ + args_sent_, tail - args_start_ - args_sent_));
    d.tool_calls.push_back(std::move(t));
  }
}

ToolParserDelta HermesToolParser::finish() {
  ToolParserDelta d;
  if (in_call_) {
    close_call(d, pending_.size());  // an unclosed last call ends with the output
    in_call_ = false;
  } else if (!(num_calls_ > 0 && all_space(pending_))) {
    d.content = pending_;
  }
  pending_.clear();
  return d;
}

}  // namespace pagoda
