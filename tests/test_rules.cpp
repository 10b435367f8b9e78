// Classification on canned threads, and the rules file format.
#include <gtest/gtest.h>

#include "collector/rules.h"

namespace stackaudit {
namespace {

Frame frame(const std::string& function, const std::string& module, const std::string& file = "",
            int line = 0, bool inlined = false) {
  Frame f;
  f.function = function;
  f.module = module;
  f.file = file;
  f.line = line;
  f.inlined = inlined;
  return f;
}

Thread blocked_in(const std::string& syscall, std::vector<Frame> frames,
                  const std::string& fd_kind = "") {
  Thread t;
  t.state = "sleeping";
  t.syscall = SyscallInfo{};
  t.syscall->name = syscall;
  if (!fd_kind.empty()) t.syscall->fd = FdInfo{3, fd_kind, "", "", std::nullopt, ""};
  t.frames = std::move(frames);
  return t;
}

TEST(Rules, InnermostMatchingFrameWinsAndSiteIsUserCode) {
  Thread t = blocked_in(
      "futex",
      {frame("", "libc.so.6"), frame("__pthread_mutex_lock", "libc.so.6"),
       frame("std::mutex::lock", "app", "/usr/include/c++/12/bits/std_mutex.h", 100, true),
       frame("Cache::get", "app", "/src/cache.cpp", 42), frame("main", "app", "/src/main.cpp", 7)});
  auto b = RuleSet::builtin().classify(t);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->category, "lock");
  EXPECT_EQ(b->primitive, "pthread_mutex_lock");
  ASSERT_TRUE(b->site);
  EXPECT_EQ(b->site->function, "Cache::get");  // not the inlined system header frame
  EXPECT_EQ(b->site->line, 42);
  EXPECT_FALSE(b->idle);
  EXPECT_EQ(b->rule, "builtin: lock function *pthread_mutex_lock");
}

Frame py(const std::string& function, const std::string& module, const std::string& file,
         int line) {
  Frame f = frame(function, module, file, line);
  f.kind = Frame::Kind::kPython;
  return f;
}

// A ThreadPoolExecutor worker is idle where it waits for work, and not while
// it runs a task, even a task that is a builtin (no Python frame of its own).
TEST(Rules, APoolWorkerIsIdleOnlyWhileItWaitsForWork) {
  const std::string lib = "/usr/lib/python3.11/";
  Frame worker =
      py("_worker", "concurrent.futures.thread", lib + "concurrent/futures/thread.py", 81);
  Frame run = py("Thread.run", "threading", lib + "threading.py", 982);
  auto waiting =
      RuleSet::builtin().classify(blocked_in("futex", {frame("", "libc.so.6"), worker, run}));
  ASSERT_TRUE(waiting);
  EXPECT_EQ(waiting->category, "queue");
  EXPECT_TRUE(waiting->idle);

  Frame task =
      py("_WorkItem.run", "concurrent.futures.thread", lib + "concurrent/futures/thread.py", 58);
  worker.line = 83;
  auto busy = RuleSet::builtin().classify(
      blocked_in("clock_nanosleep", {frame("clock_nanosleep", "libc.so.6"), task, worker, run}));
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->category, "sleep");  // time.sleep submitted as the task itself
  EXPECT_FALSE(busy->idle);

  // A library call submitted directly (urllib.request.urlopen) names the wait.
  Frame urlopen = py("urlopen", "urllib.request", lib + "urllib/request.py", 216);
  auto fetch = RuleSet::builtin().classify(
      blocked_in("recvfrom", {frame("recv", "libc.so.6"), urlopen, task, worker, run}, "socket"));
  ASSERT_TRUE(fetch);
  EXPECT_EQ(fetch->category, "socket");
  EXPECT_FALSE(fetch->idle);
}

// subprocess and asyncio.create_subprocess_exec wait in vfork until the child
// has called exec: on an event loop's thread that blocks the loop.
TEST(Rules, AParentWaitingInVforkWaitsForAProcess) {
  auto b = RuleSet::builtin().classify(blocked_in("vfork", {frame("vfork", "libc.so.6")}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->category, "process");
  EXPECT_EQ(b->primitive, "vfork");
}

TEST(Rules, SyscallDecidesWhenNoFrameMatches) {
  auto rules = RuleSet::builtin();
  auto sock = rules.classify(blocked_in("read", {frame("read", "libc.so.6")}, "socket"));
  ASSERT_TRUE(sock);
  EXPECT_EQ(sock->category, "socket");
  auto pipe = rules.classify(blocked_in("read", {frame("read", "libc.so.6")}, "pipe"));
  ASSERT_TRUE(pipe);
  EXPECT_EQ(pipe->category, "file");
  auto ep = rules.classify(blocked_in("epoll_wait", {}));
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->category, "poll");
  EXPECT_TRUE(ep->idle);
  auto futex = rules.classify(blocked_in("futex", {frame("", "libc.so.6")}));
  ASSERT_TRUE(futex);
  EXPECT_EQ(futex->category, "futex");
  EXPECT_FALSE(futex->site);  // no frame of the program's own code
}

TEST(Rules, AFrameOfTheProgramWithoutASymbolIsTheSite) {
  // A stripped executable: its frames have a module and an offset, no name.
  Frame own = frame("", "mariadbd");
  own.module_offset = 0xefef8d;
  auto b = RuleSet::builtin().classify(
      blocked_in("futex", {frame("", "libc.so.6"), frame("pthread_cond_wait", "libc.so.6"), own}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->category, "condition");
  ASSERT_TRUE(b->site);
  EXPECT_EQ(frame_name(*b->site), "mariadbd+0xefef8d");
  // Without a module (JIT code, say) a frame says nothing of whose code it is.
  auto jit = RuleSet::builtin().classify(
      blocked_in("futex", {frame("pthread_cond_wait", "libc.so.6"), frame("", "")}));
  ASSERT_TRUE(jit);
  EXPECT_FALSE(jit->site);
}

TEST(Rules, UnknownSyscallFallsBackToOther) {
  auto b = RuleSet::builtin().classify(blocked_in("pause", {}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->category, "other");
  EXPECT_EQ(b->primitive, "pause");
}

TEST(Rules, RunningOrStoppedThreadsAreNotBlocked) {
  Thread t = blocked_in("futex", {});
  t.state = "running";
  EXPECT_FALSE(RuleSet::builtin().classify(t));
  t.state = "stopped";
  EXPECT_FALSE(RuleSet::builtin().classify(t));
  t.state = "sleeping";
  t.syscall.reset();
  EXPECT_FALSE(RuleSet::builtin().classify(t));
}

TEST(Rules, EveryBuiltinRuleNamesAKnownCategory) {
  RuleSet rules = RuleSet::builtin();
  for (const Rule& r : rules.rules()) EXPECT_TRUE(is_category(r.category)) << r.pattern;
}

TEST(Rules, UserRulesComeFirst) {
  auto rules = RuleSet::builtin();
  rules.add_user_rules(
      RuleSet::parse("queue function JobQueue::pop primitive=JobQueue.pop idle\n", "my.rules"));
  Thread t = blocked_in("futex", {frame("pthread_cond_wait", "libc.so.6"),
                                  frame("JobQueue::pop", "app", "/src/q.cpp", 12),
                                  frame("worker", "app", "/src/w.cpp", 30)});
  auto b = rules.classify(t);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->category, "queue");
  EXPECT_EQ(b->primitive, "JobQueue.pop");
  EXPECT_TRUE(b->idle);
  EXPECT_EQ(b->rule, "my.rules:1: queue function JobQueue::pop");
  EXPECT_EQ(b->site->function, "JobQueue::pop");
}

TEST(Rules, FileFormat) {
  auto rules = RuleSet::parse(
      "# comment line\n"
      "\n"
      "lock    function  my_spin_lock*   # trailing comment\n"
      "socket  syscall   read fd=socket primitive=rpc_read\n",
      "r");
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(rules[0].category, "lock");
  EXPECT_EQ(rules[0].pattern, "my_spin_lock*");
  EXPECT_EQ(rules[0].origin, "r:3");
  EXPECT_EQ(rules[1].match, Rule::Match::kSyscall);
  EXPECT_EQ(rules[1].fd_kind, "socket");
  EXPECT_EQ(rules[1].primitive, "rpc_read");
}

TEST(Rules, MalformedLinesNameFileAndLine) {
  auto error_of = [](const std::string& text) {
    try {
      RuleSet::parse(text, "f.rules");
    } catch (const RulesError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error_of("\nlok function x\n").substr(0, 10), "f.rules:2:");
  EXPECT_NE(error_of("lok function x").find("unknown category 'lok'"), std::string::npos);
  EXPECT_NE(error_of("lock frame x").find("unknown match kind 'frame'"), std::string::npos);
  EXPECT_NE(error_of("lock function").find("expected"), std::string::npos);
  EXPECT_NE(error_of("lock function x colour=red").find("unknown option 'colour=red'"),
            std::string::npos);
  EXPECT_NE(error_of("lock function x fd=socket").find("unknown option"), std::string::npos);
}

TEST(Rules, UserFrames) {
  EXPECT_FALSE(is_user_frame(frame("pthread_cond_wait", "libc.so.6")));
  EXPECT_FALSE(is_user_frame(frame("_PyEval_EvalFrameDefault", "python3.11")));
  EXPECT_FALSE(is_user_frame(frame("std::condition_variable::wait", "app",
                                   "/usr/include/c++/12/condition_variable", 102, true)));
  EXPECT_TRUE(is_user_frame(frame("", "app")));  // no symbol: still the app (app+0xOFFSET)
  EXPECT_FALSE(is_user_frame(frame("", "libc.so.6")));
  EXPECT_FALSE(is_user_frame(frame("", "")));  // no module: JIT code, an unknown address
  EXPECT_TRUE(is_user_frame(frame("worker", "app", "/src/w.cpp", 3)));
  EXPECT_TRUE(is_user_frame(frame("worker", "app")));  // no debug info, still the app
}

}  // namespace
}  // namespace stackaudit
