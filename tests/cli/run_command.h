// Runs a shell command the way a user would and captures what it printed (CLI tests).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace pagoda::testing {

struct RunResult {
  int exit_code;
  std::string output;  // stdout, plus stderr unless stdout_only
};

inline RunResult run(const std::string& cmd, bool stdout_only = false) {
  RunResult r{-1, ""};
  FILE* p = popen((cmd + (stdout_only ? " 2>/dev/null" : " 2>&1")).c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace pagoda::testing
