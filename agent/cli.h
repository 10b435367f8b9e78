#pragma once

namespace stackaudit {

// Parses the command line and runs the command. Never throws: every error ends
// as one sentence on stderr and an exit code from agent/exit_codes.h.
int run_cli(int argc, char** argv);

}  // namespace stackaudit
