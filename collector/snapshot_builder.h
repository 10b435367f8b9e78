// Turns raw captures into snapshots: unwinds each thread from its copy,
// symbolizes, resolves the syscall and its fd, classifies. Keeps its caches
// (modules, unwind info, symbols) from one capture to the next.
#pragma once

#include <sys/types.h>

#include "collector/module_map.h"
#include "collector/rules.h"
#include "collector/snapshot.h"
#include "collector/symbolizer.h"
#include "collector/unwinder.h"
#include "injector/capture_types.h"
#include "injector/remote_memory.h"

namespace stackaudit {

class SnapshotBuilder {
 public:
  SnapshotBuilder(pid_t pid, RuleSet rules);

  Snapshot build(const RawCapture& raw);

 private:
  Thread build_thread(const RawThread& raw, const RawCapture& capture);

  pid_t pid_;
  RuleSet rules_;
  ModuleMap modules_;
  RemoteMemory memory_;
  Unwinder unwinder_;
  Symbolizer symbolizer_;
};

// Helpers with no live process behind them, public for tests.
std::string state_name(char proc_state);
FdInfo describe_fd(const FdLink& link, const std::vector<SocketEntry>& sockets);
StopStats stop_stats(std::vector<uint64_t> stop_ns);

}  // namespace stackaudit
