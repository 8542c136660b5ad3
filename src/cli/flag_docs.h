// What `pagoda <command> --help` prints: one line of help per flag, kept in one catalogue
// (flag_docs.cc) and printed for exactly the flags the command's Args accepts, so the help can
// neither list a flag the command rejects nor leave out one it takes.
#pragma once

#include <set>
#include <string>

namespace pagoda {

// The command line a command's --help and its unknown-flag errors name.
struct CommandUsage {
  const char* command = "pagoda";  // "pagoda serve"
  const char* synopsis = "";       // "MODEL_DIR [options]"
  const char* summary = "";        // one sentence on what the command does
};

// The help text: "usage: <command> <synopsis>", the summary, then every flag of value_flags and
// bool_flags with its value name and help, in catalogue order. A flag missing from the catalogue
// is listed last as "(undocumented)" (the CLI tests fail on that).
std::string format_help(const CommandUsage& usage, const std::set<std::string>& value_flags,
                        const std::set<std::string>& bool_flags);

}  // namespace pagoda
