// Bad input gets one clear sentence on stderr and a documented exit code.
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "injector/proc.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

// One sentence: a single line, no stack trace, says "stackaudit: ...".
void expect_one_sentence(const RunResult& r) {
  EXPECT_TRUE(r.err.starts_with("stackaudit: ")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.signal, 0);
}

TEST(Errors, NoSuchPid) {
  RunResult r = run({kStackaudit, "dump", "--pid", "999999999"});
  EXPECT_EQ(r.exit_code, 3);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("no process with PID 999999999"), std::string::npos);
}

TEST(Errors, MissingPidIsAUsageError) {
  RunResult r = run({kStackaudit, "dump"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--pid"), std::string::npos) << r.err;
}

TEST(Errors, BadFormatIsAUsageError) {
  RunResult r = run({kStackaudit, "dump", "--pid", "1", "--format", "xml"});
  EXPECT_EQ(r.exit_code, 2);
  expect_one_sentence(r);
}

TEST(Errors, HelpNamesTheStackViewsPlainly) {
  RunResult r = run({kStackaudit, "dump", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--stack python|merged|native"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("ENUM"), std::string::npos) << r.out;
}

TEST(Errors, BadMaxStopIsAUsageError) {
  for (const char* bad : {"0", "5ms", "20s", "fast"}) {
    RunResult r = run({kStackaudit, "dump", "--pid", "1", "--max-stop", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_NE(r.err.find("--max-stop"), std::string::npos) << r.err;
    expect_one_sentence(r);
  }
}

TEST(Errors, BadMaxTasksIsAUsageError) {
  for (const char* command : {"dump", "agent"}) {
    for (const char* bad : {"0", "abc", "-1", "2.5"}) {
      RunResult r = run({kStackaudit, command, "--pid", "1", "--max-tasks", bad});
      EXPECT_EQ(r.exit_code, 2) << command << " --max-tasks " << bad << ": " << r.err;
      EXPECT_NE(r.err.find("--max-tasks"), std::string::npos) << r.err;
      expect_one_sentence(r);
    }
  }
  RunResult r = run({kStackaudit, "dump", "--pid", "1", "--max-tasks", "0"});
  EXPECT_EQ(r.err,
            "stackaudit: --max-tasks must be at least 1 (default 10000; --no-tasks reads none)\n");
}

TEST(Errors, HelpNamesTheTaskOptions) {
  for (const char* command : {"dump", "agent"}) {
    RunResult r = run({kStackaudit, command, "--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("--tasks"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--no-tasks"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--max-tasks N"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("(default 10000, at least 1)"), std::string::npos) << r.out;
  }
  RunResult both = run({kStackaudit, "dump", "--pid", "1", "--tasks", "--no-tasks"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  expect_one_sentence(both);
}

TEST(Errors, ThirtyTwoBitProcessIsRefused) {
  // Its syscall numbers are i386's: the rules for stopping it safely do not apply.
  if (std::string(IA32_SPIN_BIN).empty())
    GTEST_SKIP() << "the compiler cannot build a -m32 -nostdlib program here";
  Child spin({IA32_SPIN_BIN});
  // A kernel without IA32 emulation refuses to run it (ENOEXEC): the child
  // never becomes the program.
  std::error_code ec;
  auto exe = [&] {
    return std::filesystem::read_symlink("/proc/" + std::to_string(spin.pid()) + "/exe", ec);
  };
  ASSERT_TRUE(eventually([&] {
    return exe() == std::filesystem::path(IA32_SPIN_BIN) || process_state(spin.pid()) == 'Z';
  }));
  if (exe() != std::filesystem::path(IA32_SPIN_BIN))
    GTEST_SKIP() << "this kernel does not run 32-bit x86 programs (no IA32 emulation)";
  ASSERT_TRUE(eventually([&] { return process_state(spin.pid()) == 'R'; }));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(spin.pid())});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("32-bit process"), std::string::npos) << r.err;
  expect_one_sentence(r);
  EXPECT_TRUE(nothing_stopped(spin.pid()));
}

TEST(Errors, KernelThread) {
  RunResult r = run({kStackaudit, "dump", "--pid", "2"});  // kthreadd
  EXPECT_EQ(r.exit_code, 3);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("kernel thread"), std::string::npos) << r.err;
}

TEST(Errors, OwnPid) {
  // The shell's PID becomes stackaudit's on exec.
  RunResult r = run({"/bin/sh", "-c", std::string("exec ") + kStackaudit + " dump --pid $$"});
  EXPECT_EQ(r.exit_code, 3);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("its own process"), std::string::npos) << r.err;
}

TEST(Errors, Zombie) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_TRUE(eventually([&] {
    auto states = thread_states(child);
    return !states.empty() && states.begin()->second == 'Z';
  }));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(child)});
  waitpid(child, nullptr, 0);
  EXPECT_EQ(r.exit_code, 3);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("zombie"), std::string::npos) << r.err;
}

TEST(Errors, PermissionDeniedNamesTheFix) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  // Run stackaudit as nobody against a root process.
  RunResult r =
      run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
           "--inh-caps=-all", kStackaudit, "dump", "--pid", std::to_string(fixture.pid())});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("permission denied"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("CAP_SYS_PTRACE"), std::string::npos);
  EXPECT_NE(r.err.find("--cap-add SYS_PTRACE"), std::string::npos);
}

TEST(Errors, AnotherTracerIsNamed) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t tracer = fork();
  if (tracer == 0) {
    ptrace(PTRACE_SEIZE, fixture.pid(), nullptr, nullptr);
    char c = 'x';
    if (write(ready[1], &c, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid())});
  kill(tracer, SIGKILL);
  waitpid(tracer, nullptr, 0);
  EXPECT_EQ(r.exit_code, 3);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find("already traced by PID " + std::to_string(tracer)), std::string::npos)
      << r.err;
}

TEST(Errors, TargetExitingMidCaptureNeverCrashes) {
  // Exit at different moments around the capture: stackaudit reports what it
  // got (0 or 1) or that the target is gone (3); never a crash or a hang.
  for (int delay_ms : {0, 1, 2, 3, 5, 8, 12, 20}) {
    SCOPED_TRACE(delay_ms);
    Child fixture({kParkThreads, "--extra", "200", "--exit-after-ms", std::to_string(delay_ms)});
    auto ready = fixture.wait_for("ready", std::chrono::seconds(20));
    ASSERT_TRUE(ready);
    RunResult r =
        run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "--format", "json"});
    EXPECT_EQ(r.signal, 0) << r.err;
    EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 3) << r.exit_code;
    if (r.exit_code == 0 || r.exit_code == 1) {
      auto audit = nlohmann::json::parse(r.out);
      EXPECT_EQ(audit["schema"], "stackaudit.audit/v1");
      if (r.exit_code == 1) {
        EXPECT_TRUE(audit["target"]["exited_during_capture"]);
      }
    } else {
      expect_one_sentence(r);
    }
  }
}

TEST(Errors, MalformedRulesFileNamesFileAndLine) {
  std::string path = testing::TempDir() + "bad.rules";
  std::ofstream(path) << "# my rules\nlock function my_lock\nsleeep syscall nanosleep\n";
  RunResult r = run({kStackaudit, "dump", "--pid", "1", "--rules", path});
  EXPECT_EQ(r.exit_code, 2);
  expect_one_sentence(r);
  EXPECT_NE(r.err.find(path + ":3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("sleeep"), std::string::npos) << r.err;
}

TEST(Errors, UnreadableRulesFile) {
  RunResult r = run({kStackaudit, "dump", "--pid", "1", "--rules", "/nonexistent/x.rules"});
  EXPECT_EQ(r.exit_code, 2);
  expect_one_sentence(r);
}

TEST(Output, FileIsWrittenAtomicallyAndCompletely) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "out_atomic";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string out = (dir / "audit.json").string();
  RunResult r = run(
      {kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "--format", "json", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  std::ifstream in(out);
  auto audit = nlohmann::json::parse(in);
  EXPECT_EQ(audit["target"]["pid"], fixture.pid());
  // Only the final file: no temporary left behind.
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(Output, UnwritableOutputIsAUsageError) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "-o",
                     "/nonexistent-dir/audit.json"});
  EXPECT_EQ(r.exit_code, 2);
  expect_one_sentence(r);
}

TEST(Output, UserRulesWinOverBuiltinRules) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  std::string path = testing::TempDir() + "good.rules";
  std::ofstream(path) << "# a queue implemented with a condition variable\n"
                         "queue function *::park_cond_wait primitive=job_queue.pop idle\n";
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid()), "--format",
                     "json", "--rules", path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  // The rule names a frame outer to pthread_cond_wait, which a built-in rule
  // matches: the user's rule wins all the same.
  const auto* t = thread_named(audit, "cond_wait");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["blocking"]["category"], "queue");
  EXPECT_EQ((*t)["blocking"]["primitive"], "job_queue.pop");
  EXPECT_TRUE((*t)["blocking"]["idle"]);
  EXPECT_EQ((*t)["blocking"]["rule"], path + ":2: queue function *::park_cond_wait");
  // Other threads keep their built-in classification.
  const auto* holder = thread_named(audit, "mutex_holder");
  ASSERT_NE(holder, nullptr);
  EXPECT_EQ((*holder)["blocking"]["category"], "condition");
}

}  // namespace
}  // namespace stackaudit::test

namespace stackaudit::test {
namespace {

// Processes running the demo target, by PID.
std::vector<pid_t> demo_targets() {
  std::vector<pid_t> out;
  for (pid_t p : proc::list_processes())
    if (auto info = proc::read_process_info(p);
        info && info->exe.ends_with("/stackaudit-demo-target"))
      out.push_back(p);
  return out;
}

TEST(Demo, AuditsTheBundledServiceAndStopsIt) {
  std::string dir = testing::TempDir() + "demo-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  RunResult r = run({"/bin/sh", "-c", "cd '" + dir + "' && exec " + kStackaudit + " demo"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("site: "), std::string::npos) << r.out;
  auto audit = nlohmann::json::parse(std::ifstream(dir + "/audit.json"));
  EXPECT_EQ(audit["schema"], "stackaudit.audit/v1");
  EXPECT_TRUE(eventually([] { return demo_targets().empty(); }));
  std::filesystem::remove_all(dir);
}

TEST(Demo, ItsServiceEndsWithItHoweverItEnds) {
  // `stackaudit demo | head` (a closed pipe), Ctrl-C, SIGKILL: the demo
  // service must not live on. SIGKILL is the hardest of them.
  std::string dir = testing::TempDir() + "demo-killed-" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  Child demo({"/bin/sh", "-c", "cd '" + dir + "' && exec " + std::string(kStackaudit) + " demo"});
  // Mid-audit: the service said it was ready and stackaudit started its
  // stopper process to stop the busy thread.
  ASSERT_TRUE(eventually(
      [&] {
        for (pid_t child : children_of(demo.pid()))
          if (auto st = proc::read_stat(child, child); st && st->comm == "stackaudit-stop")
            return true;
        return false;
      },
      std::chrono::seconds(20)));
  ASSERT_FALSE(demo_targets().empty());
  demo.kill_and_reap();
  EXPECT_TRUE(eventually([] { return demo_targets().empty(); }))
      << "a demo service outlived stackaudit";
  for (pid_t p : demo_targets()) kill(p, SIGKILL);  // do not leave it to spin
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace stackaudit::test
