// What every command that audits a process shares: its rules, its checks,
// and the pipeline from the target's threads to a snapshot (the injector
// captures, the collector builds). `dump` runs it once, `agent` round after
// round.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "collector/rules.h"
#include "collector/snapshot.h"
#include "collector/snapshot_builder.h"
#include "injector/capture.h"

namespace stackaudit {

// Loads the built-in rules plus a user rules file; throws UserError.
RuleSet load_rules(const std::string& rules_file);

// Checks --max-stop (10 ms to 10 s); throws UserError (exit 2).
void check_max_stop(std::chrono::milliseconds max_stop);

// Whether the process can be audited; throws UserError (exit 3) saying why not.
void check_auditable(pid_t pid);

// Checks --max-processes (1 to 4096); throws UserError (exit 2).
void check_max_processes(size_t max_processes);

// Whether to read a CPython target's asyncio tasks (--tasks, --no-tasks), and
// at most how many per event loop (--max-tasks).
struct TaskOptions {
  bool enabled = true;
  size_t max_per_loop = SnapshotBuilder::kDefaultMaxTasksPerLoop;
};

// Checks --max-tasks (at least 1); throws UserError (exit 2). Signed, so that
// "-1" from the command line is refused, not taken as a huge cap.
void check_max_tasks(long long max_per_loop);

// One process of an audited tree: who it is and where it sits.
struct TreeProcess {
  pid_t pid = 0;
  pid_t ppid = 0;
  int depth = 0;  // 0: a root (the --pid, or a --match); 1: its child; ...
  std::string comm;
  std::vector<std::string> cmdline;  // filled by process_tree
};

// Every process on the machine with its parent, from /proc/PID/stat (the
// kernel here has no /proc/PID/task/TID/children: CONFIG_PROC_CHILDREN is
// off in most distribution kernels).
struct ProcessTable {
  std::vector<TreeProcess> processes;  // depth 0, sorted by pid
  static ProcessTable scan();
};

// The roots and their descendants in `table`, breadth first (each root, then
// their children, ...), without duplicates, without `excluded` and anything
// below it; their command lines read.
std::vector<TreeProcess> process_tree(const ProcessTable& table, const std::vector<pid_t>& roots,
                                      const std::set<pid_t>& excluded);

// stackaudit itself and its descendants (its stopper process): never
// audited, whatever a --match says.
std::set<pid_t> own_processes(const ProcessTable& table);

// The audit of one process of a tree: its snapshot, or why there is none
// (`gone`: it exited, or could not be traced, before any thread was captured).
struct ProcessAudit {
  TreeProcess process;
  std::optional<Snapshot> snapshot;
  std::string gone;
};

// A multi-process audit (dump --children, the agent over a tree).
struct TreeAudit {
  std::vector<ProcessAudit> processes;
  size_t not_audited = 0;  // over --max-processes
  std::vector<std::string> warnings;
};

class AuditPipeline {
 public:
  // stopper: shared with the other pipelines of a tree (null: its own).
  // consistent: every capture is a consistent one (dump --consistent).
  AuditPipeline(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                SourceLines lines, TaskOptions tasks,
                std::shared_ptr<StopperProcess> stopper = nullptr, bool consistent = false);
  AuditPipeline(const AuditPipeline&) = delete;  // the capturer asks builder_
  AuditPipeline& operator=(const AuditPipeline&) = delete;

  // Captures every thread. After the first round, what the previous capture
  // holds of threads that have not run since is reused, not taken again.
  const RawCapture& capture();
  // The snapshot of the last capture.
  Snapshot build() { return builder_.build(*last_); }
  // The snapshot of a capture that will not be followed by another (dump):
  // lighter, and the capture's stack copies are gone after it.
  Snapshot build_once() { return builder_.build_once(*last_); }
  // Whether some thread of the last capture was captured at all, and whether
  // the process went away (then build() says what was seen).
  bool captured_any() const;
  bool target_gone() const;

 private:
  SnapshotBuilder builder_;
  ProcessCapturer capturer_;
  std::optional<RawCapture> last_;
};

// A stopper process for the pipelines of a tree, one capturing after another.
std::shared_ptr<StopperProcess> shared_stopper(std::chrono::milliseconds max_stop);

}  // namespace stackaudit
