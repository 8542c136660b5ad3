// Process-level settings.
#pragma once

namespace pagoda {

// Raises the soft limit on open files to the hard limit (as vLLM does at startup), so that a
// server or load generator can hold thousands of sockets. Returns the soft limit now in force.
long raise_open_file_limit();

}  // namespace pagoda
