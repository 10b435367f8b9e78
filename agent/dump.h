// One-shot audit of a live process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include "agent/pipeline.h"
#include "collector/rules.h"
#include "collector/snapshot.h"
#include "collector/symbolizer.h"

namespace stackaudit {

// Which frames to show: Python ones only, Python and native merged, or
// native only. "auto": python in the text report of a Python process, merged
// otherwise.
enum class StackView { kAuto, kPython, kMerged, kNative };

// Drops the frames a view does not show. A thread with no Python frame keeps
// its native ones in the Python view.
void apply_stack_view(Snapshot& snapshot, StackView view);

struct DumpOptions {
  pid_t pid = 0;
  bool children = false;      // --children: the process and every descendant
  size_t max_processes = 64;  // --max-processes: the cap with --children
  StackView stack = StackView::kAuto;
  std::string format = "text";  // text | json
  std::string output;           // "" or "-" for stdout
  std::string rules_file;
  std::chrono::milliseconds max_stop{50};  // --max-stop
  SourceLines source_lines = SourceLines::kProgram;
  TaskOptions tasks;        // --tasks, --no-tasks, --max-tasks
  bool consistent = false;  // --consistent
};

// Checks the target, captures every thread, builds the snapshot. Throws
// UserError for a target that cannot be audited.
Snapshot audit_process(pid_t pid, const RuleSet& rules,
                       std::chrono::milliseconds max_stop = std::chrono::milliseconds(50),
                       SourceLines lines = SourceLines::kProgram, TaskOptions tasks = {},
                       bool consistent = false);

// The process and its descendants, found at start (stackaudit's own
// processes excluded), each audited in turn: at most max_processes of them,
// breadth first. A descendant that exits or cannot be traced is reported as
// gone; only the root failing its checks throws UserError.
TreeAudit audit_tree(pid_t root, const RuleSet& rules, std::chrono::milliseconds max_stop,
                     SourceLines lines, size_t max_processes, TaskOptions tasks,
                     bool consistent = false);

// The exit code a finished audit deserves (0, or 1 when some threads are missing).
int audit_exit_code(const Snapshot& snapshot);

int run_dump(const DumpOptions& options);

}  // namespace stackaudit
