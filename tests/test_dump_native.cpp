// `stackaudit dump` on a real native process whose threads are parked in known
// primitives: category, primitive, the fixture's own function with its file
// and line from debug info, inlined frames, fd details, capture mode.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

struct Expect {
  const char* thread;    // OS thread name set by the fixture
  const char* category;  // expected blocking category
  const char* primitive;
  const char* function;  // the fixture function that must be on the stack
  const char* line_tag;  // @line tag of the blocking call in that function
  const char* captured;  // stopped / nonstop
};

// A blocked thread is captured without a stop ("nonstop") when its stack
// unwinds from sp and pc alone; the frame-pointer function needs rbp, so that
// thread is stopped for its registers. EINTR-prone waits are never stopped.
const Expect kExpected[] = {
    {"mutex_holder", "condition", "pthread_cond_wait", "park_mutex_holder", "mutex_holder",
     "nonstop"},
    {"mutex_wait", "lock", "pthread_mutex_lock", "park_mutex_wait", "mutex_wait", "nonstop"},
    {"cond_wait", "condition", "pthread_cond_wait", "park_cond_wait", "cond_wait", "nonstop"},
    {"sleeper", "sleep", "clock_nanosleep", "park_sleep", "sleep_call", "nonstop"},
    {"fp_sleeper", "sleep", "clock_nanosleep", "park_fp_sleep", "fp_call", "stopped"},
    {"tcp_recv", "socket", "recv", "park_tcp_recv", "tcp_recv", "nonstop"},
    {"pipe_read", "file", "read", "park_pipe_read", "pipe_read", "nonstop"},
    {"epoll_wait", "poll", "epoll_wait", "park_epoll", "epoll_wait", "nonstop"},
    {"poll_wait", "poll", "poll", "park_poll", "poll_wait", "nonstop"},
    {"child_wait", "process", "wait4", "park_child_wait", "child_wait", "nonstop"},
    {"acceptor", "socket", "accept", "park_accept", "acceptor", "nonstop"},
    {"recv_timeo", "socket", "recv", "park_recv_timeout", "recv_timeo", "nonstop"},
    {"sigwait", "other", "rt_sigtimedwait", "park_sigwait", "sigwait", "nonstop"},
};

class DumpNative : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new Child({kParkThreads});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
    RunResult r;
    audit_ = new nlohmann::json(dump_json(fixture_->pid(), &r));
    exit_code_ = r.exit_code;
    text_ = new RunResult(run({kStackaudit, "dump", "--pid", std::to_string(fixture_->pid())}));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete audit_;
    delete text_;
  }
  static Child* fixture_;
  static nlohmann::json* audit_;
  static RunResult* text_;
  static int exit_code_;
};

Child* DumpNative::fixture_ = nullptr;
nlohmann::json* DumpNative::audit_ = nullptr;
RunResult* DumpNative::text_ = nullptr;
int DumpNative::exit_code_ = -1;

TEST_F(DumpNative, ExitsZeroWithEveryThread) {
  EXPECT_EQ(exit_code_, 0);
  const auto& a = *audit_;
  EXPECT_EQ(a["schema"], "stackaudit.audit/v1");
  EXPECT_EQ(a["target"]["pid"], fixture_->pid());
  EXPECT_EQ(a["target"]["runtime"]["kind"], "native");
  // main + 14 parked threads.
  EXPECT_EQ(a["threads"].size(), 15u);
  EXPECT_EQ(a["summary"]["threads"], 15);
  EXPECT_EQ(a["capture"]["threads_failed"], 0);
  // Stopped: the busy thread and the frame-pointer sleeper; the rest not.
  EXPECT_EQ(a["capture"]["threads_stopped"], 2);
  EXPECT_EQ(a["capture"]["threads_not_stopped"], 13);
}

TEST_F(DumpNative, EachParkedThreadIsClassifiedWithItsCallSite) {
  for (const Expect& e : kExpected) {
    SCOPED_TRACE(e.thread);
    const nlohmann::json* t = thread_named(*audit_, e.thread);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ((*t)["state"], "sleeping");
    EXPECT_EQ((*t)["captured"], e.captured);
    EXPECT_FALSE((*t)["truncated"]) << (*t).value("note", "");
    ASSERT_FALSE((*t)["blocking"].is_null());
    EXPECT_EQ((*t)["blocking"]["category"], e.category);
    EXPECT_EQ((*t)["blocking"]["primitive"], e.primitive);

    const nlohmann::json* f = frame_named(*t, e.function);
    ASSERT_NE(f, nullptr) << t->dump(1);
    EXPECT_TRUE(std::string((*f)["file"]).ends_with("tests/targets/park_threads.cpp"));
    EXPECT_EQ((*f)["line"], tagged_line(kParkThreadsSource, e.line_tag));
    EXPECT_EQ((*f)["module"], "park_threads");
  }
}

TEST_F(DumpNative, SiteIsTheInnermostFrameOfTheProgramsOwnCode) {
  for (const Expect& e : kExpected) {
    SCOPED_TRACE(e.thread);
    const nlohmann::json* t = thread_named(*audit_, e.thread);
    ASSERT_NE(t, nullptr);
    const auto& site = (*t)["blocking"]["site"];
    ASSERT_FALSE(site.is_null());
    if (std::string(e.thread) == "fp_sleeper") {
      EXPECT_TRUE(function_is(site, "fp_nap"));
      EXPECT_EQ(site["line"], tagged_line(kParkThreadsSource, "fp_sleep"));
    } else if (std::string(e.thread) == "sleeper") {
      // The sleep is inside an always-inlined helper of the program: that is the site.
      EXPECT_TRUE(function_is(site, "inlined_nap"));
      EXPECT_EQ(site["line"], tagged_line(kParkThreadsSource, "inlined_nap"));
    } else {
      EXPECT_TRUE(function_is(site, e.function)) << site.dump();
      EXPECT_EQ(site["line"], tagged_line(kParkThreadsSource, e.line_tag));
    }
  }
}

TEST_F(DumpNative, AlwaysInlinedFunctionIsAFrameOfItsOwn) {
  const nlohmann::json* t = thread_named(*audit_, "sleeper");
  ASSERT_NE(t, nullptr);
  const auto& frames = (*t)["frames"];
  size_t inlined = frames.size(), outer = frames.size();
  for (size_t i = 0; i < frames.size(); ++i) {
    if (function_is(frames[i], "inlined_nap")) inlined = i;
    if (function_is(frames[i], "park_sleep")) outer = i;
  }
  ASSERT_LT(inlined, frames.size());
  ASSERT_LT(outer, frames.size());
  EXPECT_EQ(outer, inlined + 1);  // inlined_nap is called by park_sleep
  EXPECT_TRUE(frames[inlined]["inlined"]);
  EXPECT_FALSE(frames[outer]["inlined"]);
  EXPECT_EQ(frames[inlined]["line"], tagged_line(kParkThreadsSource, "inlined_nap"));
  EXPECT_EQ(frames[outer]["line"], tagged_line(kParkThreadsSource, "sleep_call"));
  // Both come from one return address.
  EXPECT_EQ(frames[inlined]["ip"], frames[outer]["ip"]);
}

TEST_F(DumpNative, StdMutexLockIsShownAsAnInlinedFrame) {
  const nlohmann::json* t = thread_named(*audit_, "mutex_wait");
  ASSERT_NE(t, nullptr);
  const nlohmann::json* lock = frame_named(*t, "std::mutex::lock");
  ASSERT_NE(lock, nullptr) << t->dump(1);
  EXPECT_TRUE((*lock)["inlined"]);
}

TEST_F(DumpNative, FdOfTheBlockedCallIsDescribed) {
  const nlohmann::json* tcp = thread_named(*audit_, "tcp_recv");
  ASSERT_NE(tcp, nullptr);
  const auto& fd = (*tcp)["syscall"]["fd"];
  ASSERT_FALSE(fd.is_null());
  EXPECT_EQ(fd["kind"], "socket");
  EXPECT_TRUE(std::string(fd["detail"]).starts_with("tcp 127.0.0.1:")) << fd.dump();
  EXPECT_NE(std::string(fd["detail"]).find("-> 127.0.0.1:"), std::string::npos);
  EXPECT_NE(std::string(fd["detail"]).find("ESTABLISHED"), std::string::npos);

  const nlohmann::json* pipe = thread_named(*audit_, "pipe_read");
  ASSERT_NE(pipe, nullptr);
  EXPECT_EQ((*pipe)["syscall"]["fd"]["kind"], "pipe");
  EXPECT_EQ((*pipe)["syscall"]["name"], "read");

  const nlohmann::json* acceptor = thread_named(*audit_, "acceptor");
  ASSERT_NE(acceptor, nullptr);
  std::string listening = (*acceptor)["syscall"]["fd"]["detail"];
  EXPECT_TRUE(listening.ends_with(" LISTEN")) << listening;
  EXPECT_EQ(listening.find(" -> "), std::string::npos) << "a listening socket has no peer";
}

TEST_F(DumpNative, BusyThreadIsNotBlocked) {
  const nlohmann::json* t = thread_named(*audit_, "busy");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["state"], "running");
  EXPECT_TRUE((*t)["blocking"].is_null());
  EXPECT_EQ((*t)["captured"], "stopped");
  EXPECT_NE(frame_named(*t, "park_busy"), nullptr);
}

TEST_F(DumpNative, StopTimesAreReported) {
  const auto& stop = (*audit_)["capture"]["stop_us"];
  EXPECT_GT(stop["total"], 0);
  EXPECT_LE(stop["p50"], stop["p99"]);
  EXPECT_LE(stop["p99"], stop["max"]);
  for (const auto& t : (*audit_)["threads"])
    if (t["captured"] == "nonstop") {
      EXPECT_EQ(t["stop_us"], 0) << t["name"];
    }
}

TEST_F(DumpNative, SummaryCountsCategories) {
  const auto& by = (*audit_)["summary"]["by_category"];
  EXPECT_EQ(by["lock"], 1);
  EXPECT_EQ(by["condition"], 2);
  EXPECT_EQ(by["sleep"], 2);
  EXPECT_EQ(by["socket"], 3);
  EXPECT_EQ(by["file"], 2);  // the pipe reader and the main thread reading stdin
  EXPECT_EQ(by["poll"], 2);
  EXPECT_EQ(by["process"], 1);
  EXPECT_EQ(by["other"], 1);
  EXPECT_EQ((*audit_)["summary"]["blocked"], 14);
}

TEST_F(DumpNative, TextReportShowsCategorySiteAndStack) {
  ASSERT_EQ(text_->exit_code, 0) << text_->err;
  const std::string& out = text_->out;
  EXPECT_NE(out.find("\"mutex_wait\" sleeping | lock: pthread_mutex_lock"), std::string::npos)
      << out;
  EXPECT_NE(
      out.find("site: (anonymous namespace)::park_mutex_wait (" + std::string(kParkThreadsSource) +
               ":" + std::to_string(tagged_line(kParkThreadsSource, "mutex_wait")) + ")"),
      std::string::npos)
      << out;
  EXPECT_NE(out.find("\"epoll_wait\" sleeping | poll: epoll_wait (idle)"), std::string::npos);
  EXPECT_NE(out.find("Summary: 15 threads, 14 blocked"), std::string::npos);
}

}  // namespace
}  // namespace stackaudit::test

namespace stackaudit::test {
namespace {

TEST(Pools, ThreadsNamedAlikeAreAPoolThreadsNeverNamedAreNot) {
  Child fixture({kParkThreads, "--extra", "4", "--unnamed", "3"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = dump_json(fixture.pid());
  std::map<std::string, nlohmann::json> pools;
  for (const auto& p : audit["summary"]["pools"]) pools[p["name"]] = p;
  ASSERT_TRUE(pools.count("extra")) << audit["summary"]["pools"];
  EXPECT_EQ(pools["extra"]["threads"], 4);
  // The main thread and the three unnamed ones all read "park_threads".
  EXPECT_FALSE(pools.count("park_threads")) << audit["summary"]["pools"];
  EXPECT_GE(audit["summary"]["by_category"]["condition"].get<int>(), 3 + 2);
}

TEST(DumpCrowd, ThreadsInTheSameStackAreShownOnceWithTheOthersListed) {
  // Forty more threads: twenty in one condition wait, twenty in one sleep.
  Child fixture({kParkThreads, "--extra", "40"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture.pid())});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  size_t entries = 0, groups = 0;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("Thread ") && line.find("\"extra_") != std::string::npos) ++entries;
    if (line.starts_with("    and 19 more threads in the same stack: ")) {
      ++groups;
      // Twelve listed by tid and name, the rest counted.
      EXPECT_TRUE(line.ends_with(" and 7 more")) << line;
      size_t listed = 0;
      for (size_t at = line.find("\"extra_"); at != std::string::npos;
           at = line.find("\"extra_", at + 1))
        ++listed;
      EXPECT_EQ(listed, 12u) << line;
    }
  }
  EXPECT_EQ(entries, 2u) << r.out;
  EXPECT_EQ(groups, 2u) << r.out;
  // The JSON keeps every thread.
  auto audit = dump_json(fixture.pid());
  size_t extra = 0;
  for (const auto& t : audit["threads"])
    if (std::string(t["name"]).starts_with("extra_")) ++extra;
  EXPECT_EQ(extra, 40u);
}

}  // namespace
}  // namespace stackaudit::test
