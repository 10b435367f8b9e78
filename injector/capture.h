// Captures every thread of a process per the capture policy (ARCHITECTURE §3):
// one thread at a time, registers plus a copy of the top of its stack; a
// thread blocked in a call that a stop would break with EINTR is copied
// without being stopped, and so is any blocked thread whose copy is enough
// (CaptureOptions::nonstop_sufficient); a thread that did not run since the
// previous capture is reused without being touched.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <unordered_map>

#include "injector/capture_types.h"
#include "injector/ptrace_stopper.h"
#include "injector/remote_memory.h"

namespace stackaudit {

struct CaptureOptions {
  // When set, a thread blocked in a syscall that a stop would not break is
  // first copied without a stop too, and kept that way when this says the copy
  // is enough (in practice: it unwinds to the end from sp and pc alone). Called
  // while no thread is stopped. When unset, such threads are stopped.
  std::function<bool(const RawThread&)> nonstop_sufficient;
  size_t max_stack_bytes = 64 * 1024;
  std::chrono::microseconds stop_deadline{20'000};
  int list_rounds = 8;       // re-list tasks until no new thread shows up
  int nonstop_attempts = 3;  // copies of a blocked thread's stack to get a stable one
};

class ProcessCapturer {
 public:
  ProcessCapturer(pid_t pid, CaptureOptions options);
  ~ProcessCapturer();
  ProcessCapturer(const ProcessCapturer&) = delete;
  ProcessCapturer& operator=(const ProcessCapturer&) = delete;

  // previous: the last capture of the same process, for reuse (may be null).
  // The stacks of threads reused from it are moved out of it.
  RawCapture capture(RawCapture* previous = nullptr);

  pid_t pid() const { return pid_; }

 private:
  class CopyWindow;
  RawThread capture_thread(pid_t tid, RawThread* previous);
  enum class NonStop { kCopied, kUnstable, kVanished };
  NonStop capture_nonstop(RawThread& t);
  void capture_stopped(RawThread& t);
  // A thread that was blocked in a syscall last time and has not been
  // scheduled since (same schedstat: no CPU time, no timeslice) is in the same
  // state: one /proc read instead of six, and no copy.
  bool try_reuse(pid_t tid, RawThread* previous, RawThread& out);
  // Copies [sp - 128, sp - 128 + max) bounded by the stack's mapping into
  // scratch_; returns the start address and the byte count. Allocation-free.
  size_t copy_stack(uint64_t sp, uint64_t* start, uint64_t* map_start, uint64_t* map_end);
  void read_fds(RawThread& t);

  pid_t pid_;
  CaptureOptions options_;
  RemoteMemory memory_;
  PtraceStopper stopper_;
  std::vector<Mapping> maps_;
  bool maps_stale_ = false;
  // Open /proc/PID/task/TID/schedstat files, read again with pread at offset 0
  // each round: the reuse check is one pread per unchanged thread instead of
  // an open (a path walk through /proc), a read and a close.
  std::unordered_map<pid_t, int> schedstat_fds_;
  size_t schedstat_fd_budget_ = 0;
  std::optional<SchedStat> schedstat(pid_t tid);
  void close_schedstat_fds(const std::set<pid_t>& keep);
  std::unique_ptr<uint8_t[]> scratch_;
};

// A thread is "blocked in a syscall that a stop would interrupt" (EINTR).
bool stop_would_interrupt(const SyscallState& sc, const std::vector<FdLink>& fds);

}  // namespace stackaudit
