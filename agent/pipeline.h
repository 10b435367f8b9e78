// What every command that audits a process shares: its rules, its checks,
// and the pipeline from the target's threads to a snapshot (the injector
// captures, the collector builds). `dump` runs it once, `agent` round after
// round.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

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

class AuditPipeline {
 public:
  AuditPipeline(pid_t pid, const RuleSet& rules, std::chrono::milliseconds max_stop,
                SourceLines lines);
  AuditPipeline(const AuditPipeline&) = delete;  // the capturer asks builder_
  AuditPipeline& operator=(const AuditPipeline&) = delete;

  // Captures every thread. After the first round, what the previous capture
  // holds of threads that have not run since is reused, not taken again.
  const RawCapture& capture();
  // The snapshot of the last capture.
  Snapshot build() { return builder_.build(*last_); }

 private:
  SnapshotBuilder builder_;
  ProcessCapturer capturer_;
  std::optional<RawCapture> last_;
};

}  // namespace stackaudit
