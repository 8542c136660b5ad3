// The `pagoda` subcommands. Each takes the arguments after the subcommand name and returns the
// process exit code; errors are printed to stderr.
#pragma once

namespace pagoda {

int tokenize_command(int argc, char** argv);  // pagoda tokenize MODEL_DIR TEXT [--decode]
int generate_command(int argc, char** argv);  // pagoda generate MODEL_DIR --prompt TEXT ...

}  // namespace pagoda
