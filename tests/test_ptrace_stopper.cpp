// The ptrace core on a real process: its look before each stop refuses a
// call that a stop must not touch, and when a stop does land on a call that a
// stop breaks (the capture never aims at one, but a thread can enter such a
// call in the microseconds between the look and the interrupt), the call is
// entered again, unseen by the program.
#include <dirent.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "injector/proc.h"
#include "injector/ptrace_stopper.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

pid_t tid_named(pid_t pid, const std::string& name) {
  for (pid_t tid : proc::list_tasks(pid)) {
    auto st = proc::read_stat(pid, tid);
    if (st && st->comm == name) return tid;
  }
  return 0;
}

long eintr_count(Child& fixture) {
  fixture.write_line("eintr");
  auto line = fixture.wait_for("eintr ", std::chrono::seconds(5));
  return line ? std::stol(line->substr(6)) : -1;
}

struct KeepRegs final : StopWindow {
  void on_stopped(pid_t, const user_regs_struct& r) override { regs = r; }
  user_regs_struct regs{};
};

// Stops a thread of pid once, from this process, with the request adjusted
// by `adjust`, and lets it go.
StopResult stop_once(pid_t pid, const std::string& thread,
                     const std::function<void(PtraceStopper::Request&)>& adjust,
                     StopWindow* window = nullptr) {
  pid_t tid = tid_named(pid, thread);
  EXPECT_NE(tid, 0) << thread;
  PtraceStopper stopper;
  KeepRegs keep;
  PtraceStopper::Request request;
  request.pid = pid;
  request.tid = tid;
  request.reach_deadline = std::chrono::milliseconds(100);
  adjust(request);
  return stopper.stop(request, window ? *window : keep);
}

class StopperOnBlockedThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ = std::make_unique<Child>(std::vector<std::string>{kParkThreads});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
  }
  // Stops the thread. `vetted`: a call the caller saw it in and allows, as the
  // capture does for a read on a pipe; here it makes the stop land on a call
  // that a stop breaks, which the capture only ever does by accident (a
  // thread entering the call between the look and the interrupt).
  StopResult stop(const std::string& thread, long vetted = -1, bool seccomp = false) {
    return stop_once(fixture_->pid(), thread, [&](PtraceStopper::Request& r) {
      r.vetted_syscall = vetted;
      if (auto sc = proc::read_syscall(r.pid, r.tid)) r.vetted_args = sc->args;
      r.seccomp = seccomp;
    });
  }
  bool back_in(const std::string& thread, long nr) {
    pid_t tid = tid_named(fixture_->pid(), thread);
    return eventually([&] {
      auto sc = proc::read_syscall(fixture_->pid(), tid);
      return sc && sc->kind == SyscallState::Kind::kInSyscall && sc->nr == nr;
    });
  }
  std::unique_ptr<Child> fixture_;
};

TEST_F(StopperOnBlockedThreads, ALookRefusesAThreadInACallAStopWouldBreak) {
  auto r = stop("epoll_wait");
  EXPECT_EQ(r.outcome, StopOutcome::kRefused);
  EXPECT_EQ(r.refused_syscall, SYS_epoll_wait);
  EXPECT_TRUE(nothing_stopped(fixture_->pid()));
}

TEST_F(StopperOnBlockedThreads, AVettedCallWithOtherArgumentsIsRefused) {
  // The capturer checked a read on a pipe; the thread now reads a socket
  // (which may have SO_RCVTIMEO): not the call that was checked.
  auto r = stop_once(fixture_->pid(), "tcp_recv", [](PtraceStopper::Request& r) {
    r.vetted_syscall = SYS_recvfrom;  // same call, other arguments
    r.vetted_args = {12345, 0, 0, 0, 0, 0};
  });
  EXPECT_EQ(r.outcome, StopOutcome::kRefused);
  EXPECT_EQ(r.refused_syscall, SYS_recvfrom);
}

TEST_F(StopperOnBlockedThreads, UnderSeccompALookRefusesAnyCall) {
  // A stopped nanosleep would be resumed through restart_syscall.
  auto r = stop("sleeper", -1, true);
  EXPECT_EQ(r.outcome, StopOutcome::kRefused);
  EXPECT_EQ(r.refused_syscall, SYS_clock_nanosleep);
}

TEST_F(StopperOnBlockedThreads, EpollWaitIsEnteredAgainAndSeesNothing) {
  auto r = stop("epoll_wait", SYS_epoll_wait);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_EQ(r.eintr_syscall, SYS_epoll_wait);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_FALSE(r.eintr_inflicted);
  EXPECT_TRUE(back_in("epoll_wait", SYS_epoll_wait));
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

TEST_F(StopperOnBlockedThreads, SigwaitinfoIsEnteredAgainAndSeesNothing) {
  auto r = stop("sigwait", SYS_rt_sigtimedwait);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_TRUE(back_in("sigwait", SYS_rt_sigtimedwait));
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

TEST_F(StopperOnBlockedThreads, RecvWithATimeoutIsEnteredAgainAndSeesNothing) {
  // SO_RCVTIMEO: the kernel answers a stop with EINTR. Entered again, the
  // call waits its timeout anew, which is why the capture never stops a
  // thread seen in it: only one that entered it microseconds ago.
  auto r = stop("recv_timeo", SYS_recvfrom);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_EQ(r.eintr_syscall, SYS_recvfrom);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_FALSE(r.eintr_inflicted);
  EXPECT_TRUE(back_in("recv_timeo", SYS_recvfrom));
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

// A sandboxed process whose filter answers restart_syscall with EPERM.
class StopperUnderSeccomp : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ =
        std::make_unique<Child>(std::vector<std::string>{kSeccompSleepers, "--deny", "eperm"});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
  }
  // Stops the sleeping thread as a racing stop would: no look first.
  StopResult stop_sleeper(bool seccomp) {
    return stop_once(fixture_->pid(), "long_nanosleep", [&](PtraceStopper::Request& r) {
      r.seccomp = seccomp;
      r.look_first = false;
    });
  }
  long failed_waits() { return fixture_->ask("eperm", "eperm "); }
  std::unique_ptr<Child> fixture_;
};

TEST_F(StopperUnderSeccomp, ASleepIsEnteredAgainRatherThanThroughRestartSyscall) {
  auto r = stop_sleeper(true);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_TRUE(r.restart_redirected);
  usleep(100 * 1000);
  EXPECT_EQ(failed_waits(), 0);
}

TEST_F(StopperUnderSeccomp, WithoutTheRedirectTheFilterFailsTheSleep) {
  // The control: resumed the kernel's way, the sleep fails with EPERM.
  auto r = stop_sleeper(false);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_FALSE(r.restart_redirected);
  EXPECT_TRUE(eventually([&] { return failed_waits() == 1; }));
}

// Sends the stopped thread a signal while it is held, as a signal may arrive.
struct SignalInTheWindow final : StopWindow {
  explicit SignalInTheWindow(pid_t pid) : pid(pid) {}
  void on_stopped(pid_t tid, const user_regs_struct&) override {
    syscall(SYS_tgkill, pid, tid, SIGUSR1);
  }
  pid_t pid;
};

TEST(StopperAndSignals, ASignalThatArrivesDuringTheStopStillInterruptsTheWait) {
  // The interrupted epoll_wait is set to be entered again unless a handler
  // runs: here one does, and the program sees the EINTR that signal brings,
  // as it would have without us.
  Child fixture({kParkThreads, "--signal-waiter", "1"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  SignalInTheWindow window(fixture.pid());
  auto r = stop_once(
      fixture.pid(), "epoll_signal",
      [](PtraceStopper::Request& r) { r.look_first = false; },  // as a racing stop lands
      &window);
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_TRUE(eventually([&] { return fixture.ask("signal_eintr", "signal_eintr ") == 1; }));
  EXPECT_EQ(eintr_count(fixture), 0);
}

TEST_F(StopperOnBlockedThreads, RestartableWaitsNeedNothing) {
  for (const char* thread : {"cond_wait", "sleeper", "pipe_read"}) {
    SCOPED_TRACE(thread);
    auto r = stop(thread, SYS_read);  // a read on a pipe restarts by itself
    EXPECT_EQ(r.outcome, StopOutcome::kStopped);
    EXPECT_EQ(r.eintr_syscall, -1);
    EXPECT_FALSE(r.eintr_restarted);
    EXPECT_FALSE(r.eintr_inflicted);
    EXPECT_FALSE(r.restart_redirected);
  }
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

}  // namespace
}  // namespace stackaudit::test
