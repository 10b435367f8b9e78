// The stopper's own safety net, on a real process: when a stop lands on a
// thread blocked in a call that a stop breaks (the capture never aims at one,
// but a thread can enter such a call in the microseconds between our look at
// /proc and the interrupt), the call is rewound when that is invisible to the
// program, and reported when it is not.
#include <dirent.h>
#include <sys/syscall.h>

#include <gtest/gtest.h>

#include <fstream>

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
  void on_stopped(const user_regs_struct& r) override { regs = r; }
  user_regs_struct regs{};
};

class StopperOnBlockedThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ = std::make_unique<Child>(std::vector<std::string>{kParkThreads});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
  }
  PtraceStopper::Result stop(const std::string& thread) {
    pid_t tid = tid_named(fixture_->pid(), thread);
    EXPECT_NE(tid, 0) << thread;
    PtraceStopper stopper(std::chrono::milliseconds(100));
    KeepRegs window;
    return stopper.stop(tid, window);
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

TEST_F(StopperOnBlockedThreads, InfiniteEpollWaitIsRewoundAndSeesNothing) {
  auto r = stop("epoll_wait");
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_EQ(r.eintr_syscall, SYS_epoll_wait);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_FALSE(r.eintr_inflicted);
  EXPECT_TRUE(back_in("epoll_wait", SYS_epoll_wait));
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

TEST_F(StopperOnBlockedThreads, SigwaitinfoIsRewoundAndSeesNothing) {
  auto r = stop("sigwait");
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_TRUE(r.eintr_restarted);
  EXPECT_TRUE(back_in("sigwait", SYS_rt_sigtimedwait));
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

TEST_F(StopperOnBlockedThreads, RecvWithATimeoutCannotBeRewoundAndIsReported) {
  // A restart would wait the whole SO_RCVTIMEO again: the EINTR stands, and
  // the result says so (the capture never stops such a thread on purpose).
  auto r = stop("recv_timeo");
  EXPECT_EQ(r.outcome, StopOutcome::kStopped);
  EXPECT_EQ(r.eintr_syscall, SYS_recvfrom);
  EXPECT_FALSE(r.eintr_restarted);
  EXPECT_TRUE(r.eintr_inflicted);
  // The thread counts it once it runs again.
  EXPECT_TRUE(eventually([&] { return eintr_count(*fixture_) == 1; }));
}

TEST_F(StopperOnBlockedThreads, RestartableWaitsNeedNothing) {
  for (const char* thread : {"cond_wait", "sleeper", "pipe_read"}) {
    SCOPED_TRACE(thread);
    auto r = stop(thread);
    EXPECT_EQ(r.outcome, StopOutcome::kStopped);
    EXPECT_EQ(r.eintr_syscall, -1);
    EXPECT_FALSE(r.eintr_restarted);
    EXPECT_FALSE(r.eintr_inflicted);
  }
  EXPECT_EQ(eintr_count(*fixture_), 0);
}

}  // namespace
}  // namespace stackaudit::test
