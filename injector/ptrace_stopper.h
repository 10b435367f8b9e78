// The ptrace core: stops one thread with PTRACE_SEIZE + PTRACE_INTERRUPT
// (never PTRACE_ATTACH: a tracer that dies before consuming ATTACH's SIGSTOP
// leaves the whole process stopped), runs a short allocation-free callback
// while it is stopped, and lets it go. No ptrace options are set: no EXITKILL
// (it would kill the target with us), no TRACEEXIT. When the tracer dies, the
// kernel detaches every tracee, resumes it, and cancels interrupts that have
// not been delivered yet.
//
// stackaudit runs this core in its stopper process (injector/stopper_process.h),
// whose watchdog timer bounds every stop; tests run it in-process.
//
// ptrace links belong to the tracer *thread*: use one PtraceStopper from one
// thread only, with SIGCHLD blocked in it.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <vector>

namespace stackaudit {

enum class StopOutcome {
  kStopped,           // stopped, callback ran, let go
  kVanished,          // the thread exited (ESRCH, or it reported its exit)
  kTimedOut,          // did not reach its stop by the deadline; it is let go when it does
  kRefused,           // a look just before the stop found it in a call a stop must not touch
  kPermissionDenied,  // EPERM from PTRACE_SEIZE
  kAlreadyTraced,     // another tracer holds it
  kWatchdog,          // the stopper process was ended mid-stop; the kernel let the thread go
  kError,
};

const char* to_string(StopOutcome outcome);

// What happened to one stop. Plain data: it crosses from the stopper process
// to the capturer as it is.
struct StopResult {
  StopOutcome outcome = StopOutcome::kError;
  int error = 0;              // errno for kError
  uint64_t hold_ns = 0;       // from seeing the thread stopped to letting it go
  uint64_t reach_ns = 0;      // from the interrupt to seeing it stopped
  uint64_t look_gap_ns = 0;   // from the last look at /proc to the interrupt
  int pending_signal = 0;     // a signal that arrived during the stop, handed back
  long refused_syscall = -1;  // kRefused: the call it was in
  // The thread entered a call that a stop breaks (EINTR) in the microseconds
  // between our look and the interrupt. The call was set to be entered again
  // with its original arguments, unless a signal handler runs first, which
  // then sees EINTR as it would have (eintr_restarted); a call whose EINTR may
  // follow partial work is left to return it (eintr_inflicted), and we say so.
  long eintr_syscall = -1;
  bool eintr_restarted = false;
  bool eintr_inflicted = false;
  // Under a seccomp filter: a wait the kernel would have resumed through
  // restart_syscall (which a filter may deny) was re-entered as the original
  // call instead.
  bool restart_redirected = false;
  bool late = false;  // it reached its stop after an earlier deadline had passed
  bool held = false;  // kept stopped after its window, until release_held()
};

// Called while the thread is stopped. Must not allocate, log, or do file I/O.
class StopWindow {
 public:
  virtual void on_stopped(pid_t tid, const user_regs_struct& regs) = 0;

 protected:
  ~StopWindow() = default;
};

// Blocks SIGCHLD in the calling thread (threads created after inherit it).
// Call at start-up, before other threads exist, so that the stop notifications
// reach the thread that waits for them.
void block_sigchld();

class PtraceStopper {
 public:
  struct Request {
    pid_t pid = 0;
    pid_t tid = 0;
    // The thread runs under a seccomp filter: never let the kernel resume it
    // through restart_syscall, and never stop it inside a syscall.
    bool seccomp = false;
    // A call the capturer saw the thread blocked in and checked (a read on a
    // pipe, say): the look may find it in that call, with those very
    // arguments, without refusing.
    long vetted_syscall = -1;
    std::array<uint64_t, 6> vetted_args{};
    std::chrono::microseconds reach_deadline{20'000};
    uint64_t tag = 0;  // the caller's, handed back with a late stop
    // Look at /proc right before the stop and refuse as above. Only tests turn
    // it off, to aim a stop at a waiting thread as a race would.
    bool look_first = true;
    // Keep the thread stopped after its window, until release_held() (a
    // consistent snapshot). A thread that reaches its stop late is let go
    // as always, not held.
    bool hold = false;
  };

  // The stopper process's dead-man switch. The core calls renew() each time it
  // has just let go of every stopped thread it can see, saying whether any
  // interrupt is still outstanding (a thread interrupted and not yet let go);
  // while one is, it never goes longer than period() without a renew. The
  // stopper process keeps a SIGKILL timer armed max-stop ahead of the last
  // renew: if this core stops answering (the process is stopped, starved or
  // hung inside a window), the kernel kills it and lets every thread go.
  // While threads are held (Request::hold), renewing cannot push the timer
  // past max-stop after the first of them was held: holding_since_ns is that
  // moment (monotonic), 0 when nothing is held.
  class Watchdog {
   public:
    virtual void renew(bool outstanding, uint64_t holding_since_ns) = 0;
    virtual std::chrono::microseconds period() const = 0;

   protected:
    ~Watchdog() = default;
  };

  // A thread that missed its deadline and stops later is let go at once; when
  // the sink gives a window for it, it is copied first (a late capture).
  class LateStops {
   public:
    virtual StopWindow* window_for(pid_t pid, pid_t tid, uint64_t tag) = 0;
    virtual void captured(pid_t pid, pid_t tid, uint64_t tag, const StopResult& result) = 0;

   protected:
    ~LateStops() = default;
  };

  explicit PtraceStopper(Watchdog* watchdog = nullptr, LateStops* late = nullptr);
  // Gives threads that have not reached their stop a last bounded chance to be
  // let go; any still outstanding are let go by the kernel when this process
  // exits.
  ~PtraceStopper();
  PtraceStopper(const PtraceStopper&) = delete;
  PtraceStopper& operator=(const PtraceStopper&) = delete;

  StopResult stop(const Request& request, StopWindow& window);

  // Lets go (or late-captures) every outstanding thread that has stopped by
  // now, without waiting. Returns how many are still outstanding.
  size_t collect();
  // Waits for SIGCHLD up to `timeout` and collects; returns collect()'s count.
  size_t wait_and_collect(std::chrono::microseconds timeout);
  size_t outstanding() const { return count_; }
  // How long ago the oldest outstanding thread was interrupted (0: none).
  uint64_t oldest_outstanding_ns() const;
  // Lets go of every held thread (Request::hold), handing back any signal
  // that arrived as it stopped. Returns how many were let go.
  size_t release_held();
  size_t held() const { return held_.size(); }
  // When the first thread still held was held (monotonic ns; 0: none).
  uint64_t holding_since_ns() const { return holding_since_ns_; }
  bool full() const { return count_ == outstanding_.size(); }

 private:
  struct Outstanding {
    pid_t pid = 0;
    pid_t tid = 0;
    uint64_t interrupted_ns = 0;
    uint64_t tag = 0;
    bool seccomp = false;
    bool hold = false;
  };
  struct Held {
    pid_t tid = 0;
    int signal = 0;  // to hand back when it is let go
  };
  Outstanding* find(pid_t tid);
  void forget(pid_t tid);
  // Handles one wait status of an outstanding thread. The current request's
  // thread is copied through `window`; others through the late sink.
  void handle(pid_t tid, int status, const Request* current, StopWindow* window, StopResult* result,
              bool* done);
  // hold: keep it stopped after the window (into held_) instead.
  void let_go(Outstanding& o, int status, StopWindow* window, StopResult& result, bool hold);
  void renew();
  // Sleeps until SIGCHLD arrives or `until_ns` (bounded by the watchdog's period).
  void sleep_for_sigchld(uint64_t until_ns);

  Watchdog* watchdog_;
  LateStops* late_;
  std::array<Outstanding, 64> outstanding_{};
  size_t count_ = 0;
  // Threads held stopped (not outstanding: they will not report again until
  // they are let go, unless they die).
  std::vector<Held> held_;
  uint64_t holding_since_ns_ = 0;
};

}  // namespace stackaudit
