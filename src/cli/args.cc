#include "cli/args.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/error.h"

namespace pagoda {

Args::Args(int argc, char** argv, const std::set<std::string>& value_flags, const std::set<std::string>& bool_flags,
           const CommandUsage& usage) {
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(format_help(usage, value_flags, bool_flags).c_str(), stdout);
      std::fflush(stdout);
      throw HelpShown{};
    }
    if (arg.size() < 2 || arg[0] != '-' || (arg[1] != '-' && !value_flags.count(arg) && !bool_flags.count(arg))) {
      positionals_.push_back(arg);
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (bool_flags.count(name)) {
      PAGODA_CHECK(!has_value, "flag ", name, " takes no value");
      bools_.insert(name);
    } else if (value_flags.count(name)) {
      if (!has_value) {
        PAGODA_CHECK(i + 1 < argc, "flag ", name, " needs a value");
        value = argv[++i];
      }
      values_[name] = value;
    } else {
      fail("unknown flag ", name, " (`", usage.command, " --help` lists the flags)");
    }
  }
}

std::optional<std::string> Args::get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& flag, const std::string& fallback) const {
  auto v = get(flag);
  return v ? *v : fallback;
}

std::optional<long long> Args::get_int(const std::string& flag) const {
  auto v = get(flag);
  if (!v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  PAGODA_CHECK(!v->empty() && errno == 0 && end && *end == '\0', "flag ", flag, " expects an integer, got '", *v, "'");
  return x;
}

std::optional<double> Args::get_double(const std::string& flag) const {
  auto v = get(flag);
  if (!v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v->c_str(), &end);
  PAGODA_CHECK(!v->empty() && errno == 0 && end && *end == '\0', "flag ", flag, " expects a number, got '", *v, "'");
  return x;
}

}  // namespace pagoda
