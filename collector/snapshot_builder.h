// Turns raw captures into snapshots: unwinds each thread from its copy,
// symbolizes, resolves the syscall and its fd, classifies. Keeps its caches
// (modules, unwind info, symbols) from one capture to the next.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <unordered_map>

#include "collector/cpython_reader.h"
#include "collector/module_map.h"
#include "collector/rules.h"
#include "collector/snapshot.h"
#include "collector/symbolizer.h"
#include "collector/unwinder.h"
#include "collector/wait_context.h"
#include "injector/capture_types.h"
#include "injector/remote_memory.h"

namespace stackaudit {

class SnapshotBuilder {
 public:
  SnapshotBuilder(pid_t pid, RuleSet rules, SourceLines lines = SourceLines::kProgram);

  Snapshot build(const RawCapture& raw);
  // The same for a capture that is not captured again: each thread's stack
  // copy is freed as soon as it is unwound, and nothing is kept for a next
  // round (dump; the agent's rounds use build()).
  Snapshot build_once(RawCapture& raw);

  // Whether build() reads the asyncio tasks of a CPython target (on by
  // default), and how many tasks it reads per event loop at most.
  void set_tasks(bool enabled, size_t max_per_loop = kDefaultMaxTasksPerLoop);
  static constexpr size_t kDefaultMaxTasksPerLoop = 10000;

  // Loads the modules of these mappings before a capture, so that copies can
  // be unwound during it (complete_without_stop).
  void prepare(const std::vector<Mapping>& maps);

  // Whether a thread copied without a stop unwinds to the end of its stack from
  // sp and pc alone. Then it need not be stopped at all. (Used as
  // CaptureOptions::nonstop_sufficient; the stack is unwound again in build().)
  bool complete_without_stop(const RawThread& thread);

 private:
  // release: the capture to free stack copies from (build_once), or null.
  Snapshot build(const RawCapture& raw, RawCapture* release);
  void update_modules(const std::vector<Mapping>& maps);
  Thread build_thread(const RawThread& raw, const RawCapture& capture, const PyProcessInfo* python);
  // A blocked call's watched fds and timeout (collector/wait_context.h).
  void add_wait_context(SyscallInfo& sc, const RawCapture& capture);
  // The asyncio loops and tasks of a CPython target (Snapshot::event_loops).
  void add_tasks(Snapshot& s, const RawCapture& raw, const PyProcessInfo& python);

  RuleSet rules_;
  ModuleMap modules_;
  RemoteMemory memory_;
  Unwinder unwinder_;
  Symbolizer symbolizer_;
  bool tasks_enabled_ = true;
  size_t max_tasks_per_loop_ = kDefaultMaxTasksPerLoop;
  std::unique_ptr<CPythonReader> python_;  // set when the target runs a supported CPython
  std::string python_warning_;             // an unsupported one
  uint32_t python_version_ = 0;            // what Py_Version said, supported or not
  // The last build's threads: a thread reused by the capture (it did not run
  // since) keeps its stack, Python frames and classification.
  std::unordered_map<pid_t, Thread> previous_;
  // The socket table, read by this build when the capture did not need it.
  std::optional<std::vector<SocketEntry>> own_sockets_;
  // Who holds the other end of each pipe waited on, found once per build.
  PipeIndex pipe_ends_;
};

// Helpers with no live process behind them, public for tests.
std::string state_name(char proc_state);
FdInfo describe_fd(const FdLink& link, const std::vector<SocketEntry>& sockets);
StopStats stop_stats(std::vector<uint64_t> stop_ns);
// Native frames with each group of Python frames inserted before the
// eval-loop call that runs it (one group per entry frame): the native frame
// whose stack holds the group's entry frame (3.12+), else the next frame
// named _PyEval_EvalFrameDefault.
// Returns false when the two did not line up (the rest is appended).
bool merge_python_frames(std::vector<Frame>& native, const std::vector<PyFrameInfo>& python,
                         bool native_truncated = false);
// A Python frame as the snapshot shows it.
Frame python_frame(const PyFrameInfo& p);
// Await cycles among the tasks (A awaits B ... awaits A), each once, in await
// order starting from the task the search met first.
std::vector<AwaitCycle> find_await_cycles(const std::vector<EventLoop>& loops);
// "legacy_bridge_3" -> "legacy_bridge", "ThreadPoolExecutor-0_1" -> "ThreadPoolExecutor-0".
std::string pool_name(const std::string& thread_name);

}  // namespace stackaudit
