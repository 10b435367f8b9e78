#include "injector/ptrace_stopper.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

#include <cerrno>

#include "injector/clock.h"
#include "injector/syscalls.h"

namespace stackaudit {
namespace {

enum class WaitResult { kStopped, kGone, kTimedOut, kError };

// Waits for tid to report a stop, without blocking past deadline_ns. The
// kernel sends the tracer SIGCHLD when a tracee stops; with SIGCHLD blocked
// (PtraceStopper's constructor) we sleep in sigtimedwait until it comes rather
// than spin: spinning competes with the very thread we wait for on small
// machines.
WaitResult wait_for_stop(pid_t tid, uint64_t deadline_ns, int* status) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    pid_t r = ::waitpid(tid, status, __WALL | WNOHANG);
    if (r == tid) {
      if (WIFSTOPPED(*status)) return WaitResult::kStopped;
      return WaitResult::kGone;  // exited or killed
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno == ECHILD ? WaitResult::kGone : WaitResult::kError;
    }
    uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return WaitResult::kTimedOut;
    uint64_t left = deadline_ns - now;
    timespec timeout{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    sigtimedwait(&chld, nullptr, &timeout);  // woken by any SIGCHLD; waitpid tells whose
  }
}

// The signal to hand back on detach. A PTRACE_EVENT_STOP (our interrupt, or a
// group-stop) needs none: detaching from a group-stop leaves the thread
// stopped, as it was. A signal-delivery-stop means a signal arrived just now:
// it must be delivered, or the program would lose it.
int signal_to_reinject(int status) {
  if ((status >> 16) == PTRACE_EVENT_STOP) return 0;
  return WSTOPSIG(status);
}

}  // namespace

const char* to_string(StopOutcome outcome) {
  switch (outcome) {
    case StopOutcome::kStopped:
      return "stopped";
    case StopOutcome::kVanished:
      return "thread exited";
    case StopOutcome::kTimedOut:
      return "did not reach a stop in time (uninterruptible sleep?)";
    case StopOutcome::kPermissionDenied:
      return "permission denied";
    case StopOutcome::kAlreadyTraced:
      return "already traced by another tracer";
    case StopOutcome::kError:
      return "ptrace error";
  }
  return "?";
}

PtraceStopper::PtraceStopper(std::chrono::microseconds stop_deadline) : deadline_(stop_deadline) {
  // SIGCHLD must be blocked in this thread for sigtimedwait to see it. Block
  // it process-wide early (block_sigchld) so no other thread swallows it.
  block_sigchld();
  pending_.reserve(16);
}

void block_sigchld() {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, nullptr);
}

PtraceStopper::~PtraceStopper() {
  drain(std::chrono::milliseconds(100));
}

namespace {

// True when a signal is queued for the thread or its process: then an EINTR
// may be what the program is meant to see, and we must not hide it.
bool signal_pending(pid_t tid) {
  siginfo_t info;
  for (unsigned flags : {0u, unsigned{PTRACE_PEEKSIGINFO_SHARED}}) {
    __ptrace_peeksiginfo_args args{0, flags, 1};
    long n = ::ptrace(PTRACE_PEEKSIGINFO, tid, &args, &info);
    if (n != 0) return true;  // one queued, or cannot tell
  }
  return false;
}

// Our interrupt raced with the thread entering a call that a stop breaks:
// the call has returned -EINTR and the thread is in its trace stop before
// going back to user space. Re-executing the syscall instruction with the
// original number is what the kernel does itself for the calls it restarts.
void undo_eintr(pid_t tid, user_regs_struct& regs, PtraceStopper::Result& result) {
  if (static_cast<long>(regs.rax) != -EINTR) return;
  long nr = static_cast<long>(regs.orig_rax);
  if (nr < 0 || stop_effect(nr) == StopEffect::kRestarts) return;
  result.eintr_syscall = nr;
  const uint64_t args[6] = {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9};
  if (restart_is_transparent(nr, args) && !signal_pending(tid)) {
    user_regs_struct rewound = regs;
    rewound.rax = regs.orig_rax;
    rewound.rip -= 2;  // the syscall instruction is two bytes (0f 05)
    if (::ptrace(PTRACE_SETREGS, tid, nullptr, &rewound) == 0) {
      result.eintr_restarted = true;
      regs = rewound;
      return;
    }
  }
  result.eintr_inflicted = true;
}

}  // namespace

PtraceStopper::Result PtraceStopper::stop(pid_t tid, StopWindow& window) {
  Result result;
  if (!pending_.empty()) drain(std::chrono::microseconds(0));
  if (::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
    result.error = errno;
    if (errno == ESRCH)
      result.outcome = StopOutcome::kVanished;
    else if (errno == EPERM)
      result.outcome = StopOutcome::kPermissionDenied;
    else
      result.outcome = StopOutcome::kError;
    return result;
  }
  // From here on the thread is ours until we detach it or it exits: any path
  // that cannot detach now leaves it on pending_, which detaches or reaps it.
  uint64_t start = monotonic_ns();
  if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
    result.error = errno;
    result.outcome = result.error == ESRCH ? StopOutcome::kVanished : StopOutcome::kError;
    pending_.push_back(tid);
    return result;
  }
  int status = 0;
  switch (wait_for_stop(tid, start + static_cast<uint64_t>(deadline_.count()) * 1000, &status)) {
    case WaitResult::kStopped:
      break;
    case WaitResult::kGone:
      result.outcome = StopOutcome::kVanished;  // reaped by waitpid already
      return result;
    case WaitResult::kTimedOut:
      // It will stop when it leaves its uninterruptible wait; detach it then.
      pending_.push_back(tid);  // not in a stop window: the thread is not stopped
      result.outcome = StopOutcome::kTimedOut;
      return result;
    case WaitResult::kError:
      result.error = errno;
      result.outcome = StopOutcome::kError;
      pending_.push_back(tid);
      return result;
  }

  user_regs_struct regs;
  bool have_regs = ::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) == 0;
  if (have_regs) {
    undo_eintr(tid, regs, result);
    window.on_stopped(regs);
  }
  result.pending_signal = signal_to_reinject(status);
  bool detached =
      ::ptrace(PTRACE_DETACH, tid, nullptr,
               reinterpret_cast<void*>(static_cast<uintptr_t>(result.pending_signal))) == 0;
  result.stop_ns = monotonic_ns() - start;
  if (!detached) pending_.push_back(tid);  // killed while stopped: reap it
  result.outcome = have_regs && detached ? StopOutcome::kStopped : StopOutcome::kVanished;
  return result;
}

size_t PtraceStopper::drain(std::chrono::microseconds budget) {
  uint64_t deadline = monotonic_ns() + static_cast<uint64_t>(budget.count()) * 1000;
  while (!pending_.empty()) {
    for (size_t i = 0; i < pending_.size();) {
      int status = 0;
      pid_t r = ::waitpid(pending_[i], &status, __WALL | WNOHANG);
      if (r == pending_[i] || (r < 0 && errno == ECHILD)) {
        if (r > 0 && WIFSTOPPED(status))
          ::ptrace(PTRACE_DETACH, pending_[i], nullptr,
                   reinterpret_cast<void*>(static_cast<uintptr_t>(signal_to_reinject(status))));
        pending_[i] = pending_.back();
        pending_.pop_back();
      } else {
        ++i;
      }
    }
    if (pending_.empty() || monotonic_ns() >= deadline) break;
    timespec pause{0, 200 * 1000};
    nanosleep(&pause, nullptr);
  }
  return pending_.size();
}

}  // namespace stackaudit
