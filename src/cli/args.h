// Command-line parsing shared by the subcommands: positionals, `--name value`, `--name=value`
// and boolean `--name`. Every flag must be declared; an unknown or malformed one is an error
// naming it (vLLM-style flag names). `-h` / `--help` where a flag may stand prints the command's
// help (flag_docs.h) to stdout and throws HelpShown, which main turns into exit status 0.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cli/flag_docs.h"

namespace pagoda {

// Thrown once --help has been printed (not an error: main exits 0).
struct HelpShown {};

class Args {
 public:
  // value_flags take a value; bool_flags do not. Throws pagoda::Error on unknown flags (naming
  // usage.command's --help), HelpShown after printing the help.
  Args(int argc, char** argv, const std::set<std::string>& value_flags, const std::set<std::string>& bool_flags,
       const CommandUsage& usage = {});

  const std::vector<std::string>& positionals() const { return positionals_; }
  bool has(const std::string& flag) const { return values_.count(flag) > 0 || bools_.count(flag) > 0; }
  bool flag(const std::string& flag) const { return bools_.count(flag) > 0; }
  std::optional<std::string> get(const std::string& flag) const;
  std::string get_or(const std::string& flag, const std::string& fallback) const;
  // Typed accessors: a value that does not parse fully is an error naming the flag.
  std::optional<long long> get_int(const std::string& flag) const;
  std::optional<double> get_double(const std::string& flag) const;

 private:
  std::vector<std::string> positionals_;
  std::map<std::string, std::string> values_;
  std::set<std::string> bools_;
};

}  // namespace pagoda
