// The audit JSON contract (ARCHITECTURE §6) on a canned snapshot.
#include <gtest/gtest.h>

#include "agent/audit_json.h"
#include "agent/text_report.h"

namespace stackaudit {
namespace {

Snapshot canned() {
  Snapshot s;
  s.captured_at_unix_ns = 1'700'000'000'123'456'789;
  s.target = Target{123, "svc",  "/usr/bin/svc", {"svc", "--port", "80"}, 50 << 20, 2, "native",
                    "",  "none", false};
  s.capture.duration_us = 900;
  s.capture.threads_stopped = 1;
  s.capture.threads_not_stopped = 1;
  s.capture.stop_us = {30, 20, 30, 50};
  Thread a;
  a.tid = 123;
  a.name = "svc";
  a.state = "sleeping";
  a.captured = "nonstop";
  a.syscall = SyscallInfo{};
  a.syscall->nr = 232;
  a.syscall->name = "epoll_wait";
  a.syscall->args = {3, 0x7ffd, 8, ~0ull, 0, 0};
  a.syscall->fd =
      FdInfo{3, "epoll", "anon_inode:[eventpoll]", "anon_inode:[eventpoll]", std::nullopt, ""};
  Frame inner;
  inner.function = "epoll_wait";
  inner.module = "libc.so.6";
  inner.ip = 0x7f0000001000;
  Frame outer;
  outer.function = "Loop::run";
  outer.module = "svc";
  outer.file = "/src/loop.cpp";
  outer.line = 88;
  outer.ip = 0x401234;
  a.frames = {inner, outer};
  a.blocking = Blocking{};
  a.blocking->category = "poll";
  a.blocking->primitive = "epoll_wait";
  a.blocking->site = outer;
  a.blocking->idle = true;
  a.blocking->rule = "builtin: poll syscall epoll_wait";
  Thread b;
  b.tid = 124;
  b.name = "crunch";
  b.state = "running";
  b.captured = "stopped";
  b.stop_ns = 20'000;
  s.threads = {a, b};
  s.summary.threads = 2;
  s.summary.blocked = 1;
  s.summary.idle = 1;
  s.summary.by_category = {{"poll", 1}, {"lock", 0}};
  return s;
}

TEST(AuditJson, FollowsTheV1Contract) {
  auto j = audit_json(canned());
  EXPECT_EQ(j["schema"], "stackaudit.audit/v1");
  EXPECT_EQ(j["tool"]["name"], "stackaudit");
  EXPECT_TRUE(j["tool"]["version"].is_string());
  EXPECT_EQ(j["captured_at"], "2023-11-14T22:13:20.123456Z");
  EXPECT_EQ(j["target"]["pid"], 123);
  EXPECT_EQ(j["target"]["cmdline"][1], "--port");
  EXPECT_EQ(j["target"]["rss_bytes"], 50 << 20);
  EXPECT_EQ(j["target"]["runtime"]["kind"], "native");
  for (const char* k : {"mode", "duration_us", "threads_stopped", "threads_not_stopped"})
    EXPECT_TRUE(j["capture"].contains(k)) << k;
  for (const char* k : {"max", "p50", "p99", "total"})
    EXPECT_TRUE(j["capture"]["stop_us"][k].is_number()) << k;

  const auto& t0 = j["threads"][0];
  EXPECT_EQ(t0["syscall"]["nr"], 232);
  EXPECT_EQ(t0["syscall"]["name"], "epoll_wait");
  EXPECT_EQ(t0["syscall"]["args"][3], "0xffffffffffffffff");
  EXPECT_EQ(t0["syscall"]["fd"]["kind"], "epoll");
  EXPECT_EQ(t0["blocking"]["category"], "poll");
  EXPECT_EQ(t0["blocking"]["site"]["function"], "Loop::run");
  EXPECT_EQ(t0["blocking"]["site"]["line"], 88);
  EXPECT_TRUE(t0["blocking"]["idle"]);
  EXPECT_EQ(t0["frames"][0]["function"], "epoll_wait");  // innermost first
  EXPECT_EQ(t0["frames"][0]["kind"], "native");
  EXPECT_EQ(t0["frames"][1]["ip"], "0x401234");
  EXPECT_FALSE(t0["truncated"]);
  EXPECT_EQ(t0["captured"], "nonstop");

  const auto& t1 = j["threads"][1];
  EXPECT_TRUE(t1["syscall"].is_null());
  EXPECT_TRUE(t1["blocking"].is_null());
  EXPECT_EQ(t1["stop_us"], 20);
  EXPECT_EQ(j["summary"]["blocked"], 1);
  EXPECT_EQ(j["summary"]["by_category"]["poll"], 1);
}

std::string streamed(const Snapshot& s) {
  std::string out;
  write_audit_json(s, [&](std::string_view piece) { out += piece; });
  return out;
}

TEST(AuditJson, StreamedAsTheWholeDocumentPrints) {
  // dump writes the JSON thread by thread; it must be the very text of the
  // whole document, whatever the threads hold.
  Snapshot s = canned();
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.threads[1].name = "odd\n  \"threads\": [] name";  // escapes, and text like the cut
  s.threads[1].note = "two\nlines";
  s.warnings = {"a warning"};
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.threads.resize(1);
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.threads.clear();
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  EXPECT_TRUE(nlohmann::json::accept(streamed(canned())));
}

TEST(TextReport, SaysWhatEachThreadWaitsOnSiteFirst) {
  std::string text = text_report(canned());
  auto header = text.find("Thread 123 \"svc\" sleeping | poll: epoll_wait (idle)");
  auto site = text.find("site: Loop::run (/src/loop.cpp:88)");
  auto frame0 = text.find("#0");
  ASSERT_NE(header, std::string::npos) << text;
  ASSERT_NE(site, std::string::npos) << text;
  EXPECT_LT(header, site);
  EXPECT_LT(site, frame0);
  EXPECT_NE(text.find("syscall: epoll_wait on fd 3 (epoll"), std::string::npos);
  EXPECT_NE(text.find("Thread 124 \"crunch\" running | on CPU"), std::string::npos);
  EXPECT_NE(text.find("Summary: 2 threads, 1 blocked (1 idle)"), std::string::npos);
  // The summary names sites as the metrics' site label does.
  EXPECT_NE(text.find("  poll      1   at Loop::run (loop.cpp:88)\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace stackaudit
