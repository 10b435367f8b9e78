// The only place that calls ptrace. It stops one thread at a time with
// PTRACE_SEIZE + PTRACE_INTERRUPT (never PTRACE_ATTACH: a tracer that dies
// before consuming ATTACH's SIGSTOP leaves the whole process stopped), runs a
// short allocation-free callback while the thread is stopped, and detaches.
// No ptrace options are set: no EXITKILL (it would kill the target with us),
// no TRACEEXIT. If this process is SIGKILLed at any moment, the kernel detaches
// every tracee and resumes it.
//
// ptrace links belong to the tracer *thread*: use one PtraceStopper from one
// thread only.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <chrono>
#include <cstdint>
#include <vector>

namespace stackaudit {

enum class StopOutcome {
  kStopped,           // stopped, callback ran, detached
  kVanished,          // the thread exited (ESRCH, or it reported its exit)
  kTimedOut,          // did not reach the stop in time (uninterruptible sleep)
  kPermissionDenied,  // EPERM from PTRACE_SEIZE
  kAlreadyTraced,     // another tracer holds it
  kError,
};

const char* to_string(StopOutcome outcome);

// Called while the thread is stopped. Must not allocate, log, or do file I/O.
class StopWindow {
 public:
  virtual void on_stopped(const user_regs_struct& regs) = 0;

 protected:
  ~StopWindow() = default;
};

// Blocks SIGCHLD in the calling thread (threads created after inherit it).
// Call at start-up, before other threads exist, so that the stop notifications
// reach the thread that waits for them.
void block_sigchld();

class PtraceStopper {
 public:
  explicit PtraceStopper(std::chrono::microseconds stop_deadline);
  // Gives threads that timed out a last bounded chance to be detached; any
  // still pending are detached by the kernel when this process exits.
  ~PtraceStopper();
  PtraceStopper(const PtraceStopper&) = delete;
  PtraceStopper& operator=(const PtraceStopper&) = delete;

  struct Result {
    StopOutcome outcome = StopOutcome::kError;
    uint64_t stop_ns = 0;    // from PTRACE_INTERRUPT to the end of PTRACE_DETACH
    int pending_signal = 0;  // a signal that arrived during the stop, re-injected
    int error = 0;           // errno for kError
    // The thread entered a call that a stop interrupts (EINTR) just as it was
    // being stopped. When restart_is_transparent() allowed it and no signal
    // was pending, the call was rewound to run again (eintr_restarted);
    // otherwise the program saw EINTR (eintr_inflicted), and we say so.
    long eintr_syscall = -1;
    bool eintr_restarted = false;
    bool eintr_inflicted = false;
  };

  Result stop(pid_t tid, StopWindow& window);

  // Detaches threads whose stop arrived after their deadline. Returns how many
  // are still pending.
  size_t drain(std::chrono::microseconds budget);

 private:
  std::chrono::microseconds deadline_;
  std::vector<pid_t> pending_;  // seized, interrupted, not yet stopped
};

}  // namespace stackaudit
