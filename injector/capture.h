// Captures every thread of a process per the capture policy (ARCHITECTURE §3,
// docs/capture-policy.md): one thread at a time, registers plus a copy of the
// top of its stack; a thread blocked in a call that a stop would break with
// EINTR is copied without being stopped, and so is any blocked thread whose
// copy is enough (CaptureOptions::nonstop_sufficient) or whose process runs
// under a seccomp filter; a thread that did not run since the previous capture
// is reused without being touched. Stops are made by the stopper process
// (injector/stopper_process.h), which bounds each one.
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
#include "injector/remote_memory.h"
#include "injector/stopper_process.h"
#include "injector/unique_fd.h"

namespace stackaudit {

struct CaptureOptions {
  // When set, a thread blocked in a syscall that a stop would not break is
  // first copied without a stop too, and kept that way when this says the copy
  // is enough (in practice: it unwinds to the end from sp and pc alone). Called
  // while no thread is stopped. When unset, such threads are stopped.
  std::function<bool(const RawThread&)> nonstop_sufficient;
  size_t max_stack_bytes = 64 * 1024;
  // How long to wait for a thread to reach its stop before going on to the
  // others; each later attempt waits twice as long. A thread that has not
  // stopped yet is not held: it is let go the moment it stops.
  std::chrono::microseconds stop_deadline{20'000};
  int stop_attempts = 3;
  // The longest any thread may stay stopped, enforced by the stopper's watchdog.
  std::chrono::microseconds max_stop{50'000};
  int list_rounds = 8;       // re-list tasks until no new thread shows up
  int nonstop_attempts = 3;  // copies of a blocked thread's stack to get a stable one
  int looks = 3;             // times a thread may be looked at again after a refused stop
  // A consistent capture (ConsistentCapture): threads that must be stopped
  // are held until every thread is captured, within 3/4 of max_stop from the
  // first one held (the stopper's watchdog lets them all go at max_stop);
  // threads that were not stopped are checked, while they are held, not to
  // have run since their copy. Never a stop of a call a stop would break.
  bool consistent = false;
  // A stopper process shared with other capturers that capture one after the
  // other from the same thread (the processes of a tree): one stopper for all
  // of them instead of one each. Null: the capturer starts its own.
  std::shared_ptr<StopperProcess> stopper;
};

class ProcessCapturer {
 public:
  ProcessCapturer(pid_t pid, CaptureOptions options);
  ProcessCapturer(const ProcessCapturer&) = delete;
  ProcessCapturer& operator=(const ProcessCapturer&) = delete;

  // previous: the last capture of the same process, for reuse (may be null).
  // The stacks of threads reused from it are moved out of it.
  RawCapture capture(RawCapture* previous = nullptr);

  pid_t pid() const { return pid_; }

 private:
  // attempt: how many times this thread was already asked to stop this round.
  RawThread capture_thread(pid_t tid, RawThread* previous, int attempt);
  bool read_thread(RawThread& t);
  enum class NonStop { kCopied, kUnstable, kVanished };
  NonStop capture_nonstop(RawThread& t);
  enum class Stop { kDone, kRefused, kTimedOut };
  Stop capture_stopped(RawThread& t, int attempt);
  // Whether the thread runs under a seccomp filter (or strict mode).
  bool sandboxed(pid_t tid);
  std::string why_not_stopped(pid_t tid, int attempts) const;
  // A thread that was blocked in a syscall last time and has not been
  // scheduled since (same schedstat: no CPU time, no timeslice) is in the same
  // state: one /proc read instead of six, and no copy.
  bool try_reuse(pid_t tid, RawThread* previous, RawThread& out);
  // Copies [sp - 128, sp - 128 + max) bounded by the stack's mapping into
  // scratch_; returns the start address and the byte count.
  size_t copy_stack(uint64_t sp, uint64_t* start, uint64_t* map_start, uint64_t* map_end);
  void read_maps();
  void read_fds(RawThread& t);
  // --consistent: whether a stop may still hold its thread.
  bool hold_open() const;
  uint64_t hold_budget_ns() const;
  // Checks the threads that were not held, captures again those that ran
  // (and new ones), until none ran or the passes or the window run out.
  void pin_unheld(RawCapture& cap, std::set<pid_t>& seen);
  // Lets the held threads go and accounts for the window.
  void end_hold(RawCapture& cap);

  pid_t pid_;
  CaptureOptions options_;
  RemoteMemory memory_;
  std::shared_ptr<StopperProcess> stopper_;
  std::vector<Mapping> maps_;
  bool maps_stale_ = false;
  // Open /proc/PID/task/TID/schedstat files, read again with pread at offset 0
  // each round: the reuse check is one pread per unchanged thread instead of
  // an open (a path walk through /proc), a read and a close.
  std::unordered_map<pid_t, UniqueFd> schedstat_fds_;
  size_t schedstat_fd_budget_ = 0;
  std::optional<SchedStat> schedstat(pid_t tid);
  void close_schedstat_fds(const std::set<pid_t>& keep);
  std::unique_ptr<uint8_t[]> scratch_;
  int process_seccomp_ = -1;     // the main thread's, read once per capture
  std::set<pid_t> sandboxed_;    // threads seen under a filter (it is never removed)
  std::vector<pid_t> slow_;      // threads that did not reach their stop in time this round
  bool defer_stops_ = false;     // --consistent, first pass: stops are left for later
  std::vector<pid_t> deferred_;  // ... these
  uint64_t first_hold_ns_ = 0;   // --consistent: when the first thread was held
  std::unordered_map<pid_t, uint64_t> held_at_;  // ... and when each held thread's copy came
};

// A thread is "blocked in a syscall that a stop would interrupt" (EINTR).
bool stop_would_interrupt(const SyscallState& sc, const std::vector<FdLink>& fds);

}  // namespace stackaudit
