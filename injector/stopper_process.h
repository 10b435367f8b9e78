// The stopper: a small process of its own that holds every ptrace link of a
// capture, so that nothing that happens to the capturer can keep a thread of
// the target stopped.
//
// - It sleeps until asked to stop a thread, or until a thread it interrupted
//   earlier reaches its stop late; it lets such a thread go the moment it
//   stops (copied first, when the capturer may still ask for it).
// - It runs at real-time priority (SCHED_FIFO 1) when it may, so that a stop
//   window never waits for a CPU behind the target's own busy threads.
// - While any thread it interrupted has not been let go, it keeps a kernel
//   timer armed that kills it with SIGKILL --max-stop after it last answered.
//   If it is stopped (SIGSTOP, a debugger), starved or hung mid-window, the
//   kernel kills it, which lets every thread go and cancels interrupts not yet
//   delivered.
// - It dies with the capturer (PR_SET_PDEATHSIG), and the capturer starts a
//   new one when it needs one.
//
// It is the stackaudit binary itself, started again with an internal argument
// (is_stopper_invocation). Requests and replies are plain structs on a
// SOCK_SEQPACKET socket pair; stack copies and the capturer's table of stack
// mappings live in a shared memory file.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "injector/capture_types.h"
#include "injector/ptrace_stopper.h"
#include "injector/unique_fd.h"

namespace stackaudit {

struct StopperOptions {
  // The longest any thread may stay stopped, whatever happens to stackaudit.
  std::chrono::microseconds max_stop{50'000};
  size_t max_stack_bytes = 64 * 1024;
  std::string executable = "/proc/self/exe";
};

// What one stop gave: registers and a copy of the top of the stack.
struct StopCopy {
  StopResult result;
  user_regs_struct regs{};
  uint64_t stack_start = 0;        // target address of stack[0]
  const uint8_t* stack = nullptr;  // shared memory: valid until the next call
  size_t stack_bytes = 0;
  std::string problem;  // kError / kWatchdog: what happened, in words
};

class StopperProcess {
 public:
  explicit StopperProcess(StopperOptions options);
  // Ends the stopper process; the kernel lets go of anything still outstanding.
  ~StopperProcess();
  StopperProcess(const StopperProcess&) = delete;
  StopperProcess& operator=(const StopperProcess&) = delete;

  // Starts the stopper process without waiting for it to be ready, so that
  // its start-up overlaps the caller's own work; stop() waits for it. Errors
  // are left for stop() to report. Call it from the thread that will call
  // stop(): the stopper's death signal follows the thread that started it.
  void launch_early();
  // Starts the stopper process if none is running, asks it to stop one
  // thread, and waits (bounded) for its reply.
  StopCopy stop(const PtraceStopper::Request& request);
  // Lets go of every thread held by stops asked with Request::hold. The
  // stopper's watchdog lets them go by itself max-stop after the first was
  // held; lost says it did (or the stopper ended otherwise) before this call.
  struct Released {
    size_t released = 0;
    uint64_t window_ns = 0;  // from the first held thread's interrupt to the last let go
    bool lost = false;
  };
  Released release_held();
  // Where stacks may live, to bound copies: the writable mappings of the target.
  void set_maps(const std::vector<Mapping>& maps);
  // A new pass over the threads: late copies from an earlier one are stale.
  void new_round() { ++round_; }

  // How the stopper runs, e.g. "realtime (SCHED_FIFO 1)"; empty before the
  // first stop.
  const std::string& priority() const { return priority_; }
  // Stopper processes that ended mid-stop (their watchdog, or anything else
  // that killed them): the kernel let the thread go.
  size_t watchdog_ended() const { return watchdog_ended_; }
  std::chrono::microseconds max_stop() const { return options_.max_stop; }

 private:
  // Launches the stopper if none runs, then waits (bounded) until it is ready.
  bool start(std::string* why);
  bool launch(std::string* why);
  void end();
  // The stopper ended, or must: reap it (ending it if it lingers).
  struct Ended {
    bool killed = false;   // SIGKILL: its watchdog, or someone else
    bool retired = false;  // it exited on its own to cancel stale interrupts
    std::string how;
  };
  Ended reap();
  void write_maps();

  StopperOptions options_;
  pid_t child_ = -1;
  UniqueFd socket_;
  UniqueFd memfd_;
  uint8_t* shared_ = nullptr;
  size_t shared_size_ = 0;
  uint64_t round_ = 1;
  std::vector<std::pair<uint64_t, uint64_t>> maps_;
  bool ready_ = false;  // the running stopper said hello
  std::string priority_;
  size_t watchdog_ended_ = 0;
  size_t holding_ = 0;      // threads the stopper holds for us
  bool hold_lost_ = false;  // a stopper holding threads ended before release_held()
};

// The stopper process's entry point (argv as StopperProcess builds it).
bool is_stopper_invocation(int argc, char** argv);
int stopper_main(int argc, char** argv);

}  // namespace stackaudit
