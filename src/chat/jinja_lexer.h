// Jinja lexer: splits template source into data and tag tokens with jinja2 3.1's rules under
// Hugging Face's settings (trim_blocks=True, lstrip_blocks=True):
//   - "\r\n" and "\r" become "\n"; one trailing newline of the template is dropped;
//   - `{%-` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` after it;
//   - lstrip_blocks: spaces/tabs between a line start and `{%` / `{#` are removed (not for `{{`,
//     and not when the tag starts with `{%+`);
//   - trim_blocks: the first newline after `%}` / `#}` is removed (not after `+%}`);
//   - `{% raw %}...{% endraw %}` is data; comments produce no tokens.
// Errors are pagoda::Error naming the template line ("chat template line N: ...").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace pagoda::jinja {

enum class TokenType : uint8_t {
  kData,
  kVariableBegin,
  kVariableEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInteger,
  kFloat,
  kOperator,
  kEof,
};

struct Token {
  TokenType type;
  int line;
  std::string text;  // data, name, decoded string literal, or operator spelling
  int64_t int_value = 0;
  double float_value = 0;
};

std::vector<Token> tokenize(std::string_view source);

// Throws TemplateError (a pagoda::Error): "chat template line N: message".
[[noreturn]] void syntax_error(int line, const std::string& message);

}  // namespace pagoda::jinja
