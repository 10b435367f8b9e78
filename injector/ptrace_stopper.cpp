#include "injector/ptrace_stopper.h"

#include <pthread.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>

#include "injector/clock.h"
#include "injector/proc.h"
#include "injector/syscalls.h"

namespace stackaudit {
namespace {

// Return values the kernel's signal code acts on at the end of an interrupted
// syscall (include/linux/errno.h): ERESTARTNOHAND enters the call again with
// its original number and arguments unless a signal handler is about to run,
// and then returns EINTR; ERESTART_RESTARTBLOCK resumes it through
// restart_syscall.
constexpr long kErestartNohand = 514;
constexpr long kErestartRestartblock = 516;

// The signal to hand back on detach. A PTRACE_EVENT_STOP (our interrupt, or a
// group-stop) needs none: detaching from a group-stop leaves the thread
// stopped, as it was. A signal-delivery-stop means a signal arrived just now:
// it must be delivered, or the program would lose it.
int signal_to_reinject(int status) {
  if ((status >> 16) == PTRACE_EVENT_STOP) return 0;
  return WSTOPSIG(status);
}

// Our own interrupt's stop, as opposed to a group stop (SIGSTOP) or a signal
// being delivered: only then is an EINTR or a restart ours to undo.
bool our_interrupt(int status) {
  return (status >> 16) == PTRACE_EVENT_STOP && WSTOPSIG(status) == SIGTRAP;
}

// Sets the call's return value to ERESTARTNOHAND, so that the kernel, once
// the thread runs on, does what it does for the calls it restarts itself:
// enters the call again with its original arguments, unless a signal handler
// runs first (a signal that arrived before or during our stop), in which case
// the program sees EINTR, as that signal would have made it see anyway.
bool restart_unless_handled(pid_t tid, user_regs_struct& regs) {
  long value = -kErestartNohand;
  if (::ptrace(PTRACE_POKEUSER, tid, offsetof(user_regs_struct, rax), value) != 0) return false;
  regs.rax = static_cast<uint64_t>(value);
  return true;
}

// Our interrupt raced with the thread entering a call: it landed after the
// look at /proc and found the thread inside the call. Two things can follow
// that the program would notice, and both are undone here, first thing in the
// stop window:
//  - a call that a stop breaks has returned -EINTR: it is entered again (a
//    timed wait then starts its timeout over, and lasts longer by the time it
//    had waited, which the look bounds to a few microseconds);
//  - under a seccomp filter, a sleep, timed poll or timed futex wait is about
//    to be resumed through restart_syscall, which the filter may deny (EPERM
//    to the program) or punish (SIGSYS): the original call is entered again
//    instead, which the filter allowed when the program made it.
void undo_race(pid_t tid, int status, bool seccomp, user_regs_struct& regs, StopResult& result) {
  if (!our_interrupt(status)) return;
  long nr = static_cast<long>(regs.orig_rax);
  long ret = static_cast<long>(regs.rax);
  if (nr < 0) return;  // stopped in user space, not in a syscall
  if (ret == -EINTR && stop_effect(nr) != StopEffect::kRestarts) {
    result.eintr_syscall = nr;
    if (resumable_after_eintr(nr) && restart_unless_handled(tid, regs))
      result.eintr_restarted = true;
    else
      result.eintr_inflicted = true;
  } else if (ret == -kErestartRestartblock && seccomp) {
    result.restart_redirected = restart_unless_handled(tid, regs);
  }
}

// Refuses the stop when the thread sits in a call that a stop would break
// (EINTR), or, under a seccomp filter, in any call (it would be resumed
// through the kernel's restart path). Reading /proc does not disturb it.
enum class Look { kAllows, kRefuses, kGone };

Look look_before_stop(const PtraceStopper::Request& r, long* nr) {
  // No syscall file: the thread is not (or no longer) a thread of this
  // process; a reused tid must not be stopped.
  auto sc = proc::read_syscall(r.pid, r.tid);
  if (!sc) return Look::kGone;
  if (sc->kind != SyscallState::Kind::kInSyscall) return Look::kAllows;
  *nr = sc->nr;
  if (r.seccomp) return Look::kRefuses;
  if (stop_effect(sc->nr) == StopEffect::kRestarts) return Look::kAllows;
  // The very call the capturer checked (a read on a pipe, not a socket).
  bool vetted = sc->nr == r.vetted_syscall && sc->args == r.vetted_args;
  return vetted ? Look::kAllows : Look::kRefuses;
}

}  // namespace

const char* to_string(StopOutcome outcome) {
  switch (outcome) {
    case StopOutcome::kStopped:
      return "stopped";
    case StopOutcome::kVanished:
      return "thread exited";
    case StopOutcome::kTimedOut:
      return "did not reach its stop in time";
    case StopOutcome::kRefused:
      return "entered a call that a stop must not touch";
    case StopOutcome::kPermissionDenied:
      return "permission denied";
    case StopOutcome::kAlreadyTraced:
      return "already traced by another tracer";
    case StopOutcome::kWatchdog:
      return "the stop was ended by the watchdog";
    case StopOutcome::kError:
      return "ptrace error";
  }
  return "?";
}

void block_sigchld() {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, nullptr);
}

PtraceStopper::PtraceStopper(Watchdog* watchdog, LateStops* late)
    : watchdog_(watchdog), late_(late) {
  // SIGCHLD must be blocked in this thread for sigtimedwait to see it.
  block_sigchld();
}

PtraceStopper::~PtraceStopper() {
  release_held();
  uint64_t end = monotonic_ns() + 100'000'000;
  while (count_ > 0 && monotonic_ns() < end) wait_and_collect(std::chrono::milliseconds(10));
}

PtraceStopper::Outstanding* PtraceStopper::find(pid_t tid) {
  for (size_t i = 0; i < count_; ++i)
    if (outstanding_[i].tid == tid) return &outstanding_[i];
  return nullptr;
}

uint64_t PtraceStopper::oldest_outstanding_ns() const {
  uint64_t now = monotonic_ns(), oldest = 0;
  for (size_t i = 0; i < count_; ++i)
    oldest = std::max(oldest, now - outstanding_[i].interrupted_ns);
  return oldest;
}

void PtraceStopper::forget(pid_t tid) {
  for (size_t i = 0; i < count_; ++i) {
    if (outstanding_[i].tid != tid) continue;
    outstanding_[i] = outstanding_[--count_];
    return;
  }
}

void PtraceStopper::sleep_for_sigchld(uint64_t until_ns) {
  uint64_t now = monotonic_ns();
  if (now >= until_ns) return;
  uint64_t left = until_ns - now;
  if (watchdog_) left = std::min<uint64_t>(left, watchdog_->period().count() * 1000ull);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  timespec timeout{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
  sigtimedwait(&chld, nullptr, &timeout);  // woken by any SIGCHLD; waitpid tells whose
}

void PtraceStopper::renew() {
  if (watchdog_) watchdog_->renew(count_ > 0 || !held_.empty(), holding_since_ns_);
}

size_t PtraceStopper::release_held() {
  size_t released = 0;
  for (const Held& h : held_)
    released += ::ptrace(PTRACE_DETACH, h.tid, nullptr,
                         reinterpret_cast<void*>(static_cast<uintptr_t>(h.signal))) == 0;
  held_.clear();
  holding_since_ns_ = 0;
  renew();
  return released;
}

void PtraceStopper::let_go(Outstanding& o, int status, StopWindow* window, StopResult& result,
                           bool hold) {
  uint64_t seen = monotonic_ns();
  result.reach_ns = seen - o.interrupted_ns;
  user_regs_struct regs;
  bool have_regs = ::ptrace(PTRACE_GETREGS, o.tid, nullptr, &regs) == 0;
  if (have_regs) {
    undo_race(o.tid, status, o.seccomp, regs, result);
    if (window) window->on_stopped(o.tid, regs);
  }
  result.pending_signal = signal_to_reinject(status);
  if (hold && have_regs) {
    // Stays stopped: it reports nothing more until it is let go (or dies,
    // which a later waitpid reaps as a thread we no longer know).
    // The cap counts from the interrupt: the thread may have stopped a while
    // before this process saw it.
    if (held_.empty()) holding_since_ns_ = o.interrupted_ns;
    held_.push_back(Held{o.tid, result.pending_signal});
    result.held = true;
    result.hold_ns = monotonic_ns() - seen;
    result.outcome = StopOutcome::kStopped;
    forget(o.tid);
    return;
  }
  bool detached =
      ::ptrace(PTRACE_DETACH, o.tid, nullptr,
               reinterpret_cast<void*>(static_cast<uintptr_t>(result.pending_signal))) == 0;
  result.hold_ns = monotonic_ns() - seen;
  result.outcome = have_regs && detached ? StopOutcome::kStopped : StopOutcome::kVanished;
  // Detached: it is no longer ours. Not detached: it was killed while stopped
  // and its exit is still to be reaped.
  if (detached) forget(o.tid);
}

void PtraceStopper::handle(pid_t tid, int status, const Request* current, StopWindow* window,
                           StopResult* result, bool* done) {
  Outstanding* o = find(tid);
  if (!o) {
    // A tracee we do not know under this tid: a thread that called execve
    // after our seize takes the leader's tid; a clone with CLONE_PTRACE makes
    // its child ours. Let it go as it is.
    if (WIFSTOPPED(status))
      ::ptrace(PTRACE_DETACH, tid, nullptr,
               reinterpret_cast<void*>(static_cast<uintptr_t>(signal_to_reinject(status))));
    return;
  }
  bool mine = current && current->tid == tid;
  if (!WIFSTOPPED(status)) {  // exited or killed: reaped by this waitpid
    forget(tid);
    if (mine) {
      result->outcome = StopOutcome::kVanished;
      *done = true;
    }
    return;
  }
  if (mine) {
    // Only a thread that stopped within its request's deadline is held; one
    // interrupted by an earlier attempt is let go like any late stop.
    let_go(*o, status, window, *result, current->hold && !result->late);
    *done = true;
    return;
  }
  // A thread that missed its deadline: let it go now, copied if wanted.
  Outstanding copy = *o;
  StopResult late;
  late.late = true;
  StopWindow* late_window = late_ ? late_->window_for(copy.pid, copy.tid, copy.tag) : nullptr;
  let_go(*o, status, late_window, late, false);
  if (late_ && late_window) late_->captured(copy.pid, copy.tid, copy.tag, late);
}

size_t PtraceStopper::collect() {
  for (;;) {
    int status = 0;
    pid_t tid = ::waitpid(-1, &status, __WALL | WNOHANG);
    if (tid > 0) {
      handle(tid, status, nullptr, nullptr, nullptr, nullptr);
      continue;
    }
    if (tid < 0 && errno == EINTR) continue;
    if (tid < 0 && errno == ECHILD) count_ = 0;  // nothing of ours is left
    break;
  }
  renew();
  return count_;
}

size_t PtraceStopper::wait_and_collect(std::chrono::microseconds timeout) {
  if (collect() == 0) return 0;
  sleep_for_sigchld(monotonic_ns() + static_cast<uint64_t>(timeout.count()) * 1000);
  return collect();
}

StopResult PtraceStopper::stop(const Request& request, StopWindow& window) {
  StopResult result;
  Outstanding* o = find(request.tid);
  if (!o) {
    collect();  // let go of late arrivals first
    // A new stop: look first, then seize and interrupt right away, so that
    // whatever the thread does between the look and the interrupt lasts a
    // few microseconds.
    if (full()) {
      result.error = EBUSY;
      return result;
    }
    long nr = -1;
    switch (request.look_first ? look_before_stop(request, &nr) : Look::kAllows) {
      case Look::kAllows:
        break;
      case Look::kRefuses:
        result.outcome = StopOutcome::kRefused;
        result.refused_syscall = nr;
        return result;
      case Look::kGone:
        result.outcome = StopOutcome::kVanished;
        return result;
    }
    uint64_t looked = monotonic_ns();
    if (::ptrace(PTRACE_SEIZE, request.tid, nullptr, nullptr) != 0) {
      result.error = errno;
      result.outcome = errno == ESRCH   ? StopOutcome::kVanished
                       : errno == EPERM ? StopOutcome::kPermissionDenied
                                        : StopOutcome::kError;
      return result;
    }
    // From here on the thread is ours until it is let go or exits.
    outstanding_[count_++] = Outstanding{request.pid, request.tid,     monotonic_ns(),
                                         request.tag, request.seccomp, request.hold};
    renew();  // armed before the interrupt
    if (::ptrace(PTRACE_INTERRUPT, request.tid, nullptr, nullptr) != 0) {
      result.error = errno;
      result.outcome = errno == ESRCH ? StopOutcome::kVanished : StopOutcome::kError;
      // It exited since the seize (its exit is reaped by a later waitpid), or
      // took another tid in an execve: either way there is no interrupt of
      // ours to wait for, and a stop under another tid is let go as unknown.
      forget(request.tid);
      return result;
    }
    result.look_gap_ns = monotonic_ns() - looked;
  } else {
    result.late = true;  // interrupted by an earlier attempt, still on its way
  }
  pid_t tid = request.tid;
  uint64_t deadline = monotonic_ns() + static_cast<uint64_t>(request.reach_deadline.count()) * 1000;
  for (;;) {
    bool done = false;
    for (;;) {
      int status = 0;
      pid_t who = ::waitpid(-1, &status, __WALL | WNOHANG);
      if (who > 0) {
        handle(who, status, &request, &window, &result, &done);
        if (done) break;
        continue;
      }
      if (who < 0 && errno == EINTR) continue;
      if (who < 0 && errno == ECHILD) {  // not ours any more: it exited and was reaped
        count_ = 0;
        result.outcome = StopOutcome::kVanished;
        done = true;
      }
      break;
    }
    renew();
    if (done) return result;
    if (!find(tid)) {  // let go without a report (cannot happen; be safe)
      result.outcome = StopOutcome::kVanished;
      return result;
    }
    if (monotonic_ns() >= deadline) {
      // Not stopped yet: it stays interrupted and is let go the moment it
      // stops (collect, or any later wait), copied if a late sink wants it.
      result.outcome = StopOutcome::kTimedOut;
      return result;
    }
    sleep_for_sigchld(deadline);
  }
}

}  // namespace stackaudit
