// The capture policy (ARCHITECTURE §3) on real processes: no EINTR inflicted,
// not even when a stop lands as a thread enters a timed wait; a seccomp filter
// that denies restart_syscall never sees one; no thread left stopped even when
// stackaudit is SIGKILLed mid-capture; a target found stopped is left stopped.
// The bounds on every stop are in test_stop_bounds.cpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

long eintr_count(Child& fixture) {
  return fixture.ask("eintr", "eintr ");
}

TEST(Safety, TwentyDumpsInflictNoEintr) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  ASSERT_EQ(eintr_count(fixture), 0);
  for (int i = 0; i < 20; ++i) {
    RunResult r =
        run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "--format", "json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // epoll_wait, recv with SO_RCVTIMEO and sigwaitinfo each count every EINTR.
  EXPECT_EQ(eintr_count(fixture), 0);
}

TEST(Safety, TimedWaitsEnteredAsTheStopLandsSeeNoEintr) {
  // Nine threads compute for 50-150 us, then wait 2 ms in epoll_wait, in recv
  // with SO_RCVTIMEO or in sigtimedwait, again and again. stackaudit sees them
  // running and stops them, and a stop that lands just after such a thread
  // entered its wait breaks the wait with EINTR unless it is resumed unseen.
  Child fixture({kParkThreads, "--race", "3"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  ASSERT_EQ(eintr_count(fixture), 0);
  long resumed = 0;
  for (int i = 0; i < 30; ++i) {
    RunResult r;
    auto audit = dump_json(fixture.pid(), &r);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(audit["capture"]["eintr_inflicted"], 0);
    resumed += audit["capture"]["eintr_restarted"].get<long>();
  }
  {
    Agent agent(
        {"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--duration", "5s"});
    EXPECT_EQ(agent.wait(std::chrono::seconds(30)), 0);
  }
  // Every EINTR the racers saw is counted by them; there must be none.
  EXPECT_EQ(eintr_count(fixture), 0);
  long waits = fixture.ask("race", "race waits=");
  EXPECT_GT(waits, 1000) << "the racers did not run";
  RecordProperty("waits_resumed_unseen", static_cast<int>(resumed));
}

// Reads "eperm N" from a seccomp_sleepers fixture.
long failed_waits(Child& fixture) {
  return fixture.ask("eperm", "eperm ");
}

// Dumps and samples a process whose seccomp filter denies restart_syscall
// with `action`; returns the last dump.
nlohmann::json audit_sandboxed(Child& fixture) {
  nlohmann::json audit;
  for (int i = 0; i < 20; ++i) {
    RunResult r;
    audit = dump_json(fixture.pid(), &r);
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--duration", "3s"});
  EXPECT_EQ(agent.wait(std::chrono::seconds(30)), 0);
  return audit;
}

void expect_sandbox_respected(const nlohmann::json& audit) {
  EXPECT_EQ(audit["target"]["seccomp"], "filter");
  // Threads parked in their waits are read where they are, never stopped; the
  // frame-pointer ones whose callers cannot be found from sp and pc alone end
  // their stack there, and say why.
  int truncated = 0;
  for (const char* name : {"long_nanosleep", "long_clock_nsle", "long_poll", "long_cond_timed"}) {
    SCOPED_TRACE(name);
    const auto* t = thread_named(audit, name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ((*t)["captured"], "nonstop");
    EXPECT_NE(frame_named(*t, "wait_long"), nullptr);
    if (!(*t)["truncated"].get<bool>()) continue;
    ++truncated;
    ASSERT_TRUE((*t)["note"].is_string());
    EXPECT_NE((*t)["note"].get<std::string>().find("seccomp filter"), std::string::npos);
  }
  EXPECT_GE(truncated, 2) << "the fixture no longer needs a stop to unwind its waits";
}

TEST(Safety, SeccompFilterThatDeniesRestartSyscallSeesNoFailedWait) {
  // A stopped nanosleep, clock_nanosleep, timed poll or timed futex wait is
  // resumed by the kernel through restart_syscall; this filter answers EPERM.
  Child fixture({kSeccompSleepers, "--deny", "eperm"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = audit_sandboxed(fixture);
  EXPECT_EQ(failed_waits(fixture), 0);
  expect_sandbox_respected(audit);
}

TEST(Safety, SeccompFilterThatKillsOnRestartSyscallSurvives) {
  Child fixture({kSeccompSleepers, "--deny", "kill"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = audit_sandboxed(fixture);
  EXPECT_NE(process_state(fixture.pid()), 'Z') << "killed by its own seccomp filter";
  EXPECT_EQ(failed_waits(fixture), 0);
  expect_sandbox_respected(audit);
}

TEST(Safety, SigkillAtAnyMomentLeavesNoThreadStopped) {
  Child fixture({kParkThreads, "--extra", "300"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(20)));
  pid_t target = fixture.pid();

  // How long one full capture takes here, to spread the kills over it.
  auto t0 = std::chrono::steady_clock::now();
  RunResult full = run({kStackaudit, "dump", "--pid", std::to_string(target), "--format", "json"});
  auto full_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  ASSERT_EQ(full.exit_code, 0) << full.err;
  // Half the extra threads need a stop to unwind: the kills land among real
  // ptrace stops, not only among non-stop reads.
  EXPECT_GE(nlohmann::json::parse(full.out)["capture"]["threads_stopped"], 150);

  const int kKills = 25;
  int killed_mid_run = 0;
  for (int i = 0; i < kKills; ++i) {
    long delay_us = full_us * i / kKills;  // from exec to the end of the capture
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execl(kStackaudit, kStackaudit, "dump", "--pid", std::to_string(target).c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    usleep(static_cast<useconds_t>(delay_us));
    std::vector<pid_t> stoppers = children_of(pid);  // its stopper process, once started
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed_mid_run;
    // The kernel detaches a dead tracer's tracees and resumes them; give the
    // woken threads a moment to leave the stop state.
    EXPECT_TRUE(eventually([&] { return nothing_stopped(target); }, std::chrono::seconds(5)))
        << "a thread was left stopped after killing stackaudit " << delay_us << " us in";
    // The stopper dies with it.
    for (pid_t s : stoppers)
      EXPECT_TRUE(eventually([&] { return process_state(s) == '?'; }, std::chrono::seconds(5)))
          << "stopper " << s << " outlived stackaudit";
  }
  // Most kills landed while stackaudit was running (the rest after it ended).
  EXPECT_GE(killed_mid_run, kKills / 3) << "one dump took " << full_us << " us";
  // And the target still works: every thread is there and answers.
  fixture.write_line("eintr");
  EXPECT_TRUE(fixture.wait_for("eintr ", std::chrono::seconds(5)));
}

TEST(Safety, StoppedTargetStaysStoppedAndRunningStaysRunning) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  pid_t target = fixture.pid();

  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(target), "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nothing_stopped(target));

  kill(target, SIGSTOP);
  auto all_stopped = [&] {
    for (const auto& [tid, state] : thread_states(target))
      if (state != 'T') return false;
    return true;
  };
  ASSERT_TRUE(eventually(all_stopped));
  r = run({kStackaudit, "dump", "--pid", std::to_string(target), "--format", "json"});
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  EXPECT_EQ(audit["threads"].size(), 15u);
  for (const auto& t : audit["threads"]) EXPECT_EQ(t["state"], "stopped") << t["name"];
  // Still stopped, each thread, a while after the dump.
  usleep(200 * 1000);
  EXPECT_TRUE(all_stopped());
  EXPECT_EQ(tracer_of(target), 0);

  kill(target, SIGCONT);
  EXPECT_TRUE(eventually([&] { return nothing_stopped(target); }));
  // It runs again (SIGSTOP itself interrupts epoll_wait, so no EINTR count here).
  fixture.write_line("eintr");
  EXPECT_TRUE(fixture.wait_for("eintr ", std::chrono::seconds(5)));
}

TEST(Safety, ThreadsComingAndGoingDuringTheCapture) {
  // Thousands of short-lived threads a second: some exit between being listed
  // and being captured, new ones appear. Every dump completes, says what it
  // missed, and leaves nothing stopped.
  Child fixture({kParkThreads, "--churn", "1", "--extra", "50"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  size_t exited_total = 0;
  for (int i = 0; i < 10; ++i) {
    RunResult r =
        run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "--format", "json"});
    ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.err;
    auto audit = nlohmann::json::parse(r.out);
    EXPECT_GE(audit["threads"].size(), 65u);  // the parked ones are all there
    EXPECT_NE(thread_named(audit, "mutex_wait"), nullptr);
    size_t exited = audit["capture"]["threads_exited"];
    exited_total += exited;
    if (exited > 0) {
      bool said = false;
      for (const auto& w : audit["warnings"])
        said |= std::string(w).find("exited during the capture") != std::string::npos;
      EXPECT_TRUE(said);
    }
    EXPECT_TRUE(eventually([&] { return nothing_stopped(fixture.pid()); }));
  }
  RecordProperty("threads_exited_mid_capture", static_cast<int>(exited_total));
}

}  // namespace
}  // namespace stackaudit::test
