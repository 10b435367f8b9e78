#pragma once

#include <stdexcept>
#include <string>

namespace stackaudit {

// Exit codes (ARCHITECTURE §5, docs/cli.md).
enum ExitCode : int {
  kExitOk = 0,       // done
  kExitPartial = 1,  // done, but some threads could not be captured, or --consistent could not
                     // pin every thread to one instant (said in the output)
  kExitUsage = 2,    // bad command line, unreadable or malformed rules file, unwritable output
  kExitTarget = 3,   // target not found or not traceable (permission, tracer, kernel thread...)
};

// `stackaudit gate` (docs/gate.md): 0 every evaluated gate holds, 1 a gate
// fails, 2 usage error (as above: a missing or malformed audit or thresholds
// file, audits of different kinds).
constexpr int kExitGateFailed = 1;

// A user error: one sentence, and the exit code it ends with.
struct UserError : std::runtime_error {
  UserError(int exit_code, const std::string& sentence)
      : std::runtime_error(sentence), code(exit_code), message(sentence) {}
  int code;
  std::string message;
};

}  // namespace stackaudit
