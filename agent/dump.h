// One-shot audit of a live process.
#pragma once

#include <sys/types.h>

#include <string>

#include "collector/rules.h"
#include "collector/snapshot.h"

namespace stackaudit {

struct DumpOptions {
  pid_t pid = 0;
  std::string format = "text";  // text | json
  std::string output;           // "" or "-" for stdout
  std::string rules_file;
};

// Loads the built-in rules plus a user rules file; throws UserError.
RuleSet load_rules(const std::string& rules_file);

// Checks the target, captures every thread, builds the snapshot. Throws
// UserError for a target that cannot be audited.
Snapshot audit_process(pid_t pid, const RuleSet& rules);

// The exit code a finished audit deserves (0, or 1 when some threads are missing).
int audit_exit_code(const Snapshot& snapshot);

int run_dump(const DumpOptions& options);

}  // namespace stackaudit
