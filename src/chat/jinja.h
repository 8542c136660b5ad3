// Our own Jinja2 interpreter for chat templates (the subset Hugging Face chat templates use),
// with jinja2 3.1's semantics under transformers' environment: ImmutableSandboxedEnvironment
// with trim_blocks=True, lstrip_blocks=True, the loopcontrols extension ({% break %} /
// {% continue %}), {% generation %} blocks, and the globals raise_exception(), strftime_now(),
// namespace(), dict(), range(), joiner(), plus HF's tojson filter (json.dumps with
// ensure_ascii=False). Output matches Python's byte for byte: str() of values, float repr, dict and
// list printing, undefined handling (printing an undefined name gives "", using it errors).
//
// A Template is parsed once (Template::parse) and rendered many times, concurrently if wanted:
// render() is const and keeps all state on its own stack.
//
// Every failure is a pagoda::Error (concretely jinja::TemplateError) whose message names the
// template line: "chat template line 12: No filter named 'foo'.". raise_exception("msg") gives
// TemplateError with detail() == "msg" and raised_by_template() == true.
//
// Hostile templates cannot crash, hang or exhaust memory: nesting, recursion, output and value
// sizes and the total work per render are capped (RenderLimits in jinja_interp.h).
//
// Layers: jinja_lexer (tokens, whitespace control) -> jinja_parser (AST, jinja_ast.h) ->
// jinja_interp (evaluation, scopes) with jinja_value (Python value semantics), jinja_filters,
// jinja_tests, jinja_methods (str/list/dict methods, globals) and jinja_format (% and .format).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "chat/jinja_interp.h"

namespace pagoda::jinja {

class Template {
 public:
  // Parses `source`; throws pagoda::Error on syntax errors (unknown tags, filters, tests, ...).
  static Template parse(std::string_view source);

  // Renders with the given variables (a JSON object; JSON null -> None, numbers keep int/float).
  std::string render(const nlohmann::ordered_json& context, const RenderLimits& limits = {}) const;
  // Same, with the variables already converted (a dict Value, e.g. built with from_json()).
  std::string render(const Value& context, const RenderLimits& limits = {}) const;

  const std::string& source() const { return *source_; }

 private:
  Template() = default;
  std::shared_ptr<const Program> program_;
  std::shared_ptr<const std::string> source_;
};

// JSON -> template value (objects keep their key order). Throws pagoda::Error past kMaxDepth.
Value from_json(const nlohmann::ordered_json& j);

}  // namespace pagoda::jinja
