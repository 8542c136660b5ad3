// Errors of the Jinja interpreter.
#pragma once

#include <string>

#include "base/error.h"

namespace pagoda::jinja {

// The error type every template failure throws: what() is "chat template line N: detail".
class TemplateError : public Error {
 public:
  TemplateError(int line, std::string detail, bool raised);
  int line() const { return line_; }
  // The message without the line prefix; for raise_exception() exactly the template's text.
  const std::string& detail() const { return detail_; }
  bool raised_by_template() const { return raised_; }

 private:
  int line_;
  std::string detail_;
  bool raised_;
};

// Errors raised inside builtins before the template line is known; the interpreter adds the line
// (the innermost expression or statement being evaluated) and rethrows a TemplateError.
struct EvalError {
  std::string message;
  bool raised = false;  // from raise_exception(): the message is the template author's
};
[[noreturn]] void eval_fail(std::string message);

}  // namespace pagoda::jinja
