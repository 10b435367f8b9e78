// Symbols and lines from separate debug info: a .gnu_debuglink file next to a
// stripped binary, MiniDebugInfo (.gnu_debugdata) in a fully stripped one, and
// libc's debug info found by build-id under /usr/lib/debug.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

nlohmann::json dump_with(const std::vector<std::string>& env, pid_t pid,
                         const std::vector<std::string>& options = {}) {
  std::vector<std::string> argv = {"/usr/bin/env"};
  argv.insert(argv.end(), env.begin(), env.end());
  argv.insert(argv.end(), {kStackaudit, "dump", "--pid", std::to_string(pid), "--format", "json"});
  argv.insert(argv.end(), options.begin(), options.end());
  RunResult r = run(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

std::string empty_debug_dir() {
  std::string dir = testing::TempDir() + "no-debuginfo";
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(DebugInfo, GnuDebuglinkNextToTheBinary) {
  Child fixture({PARK_THREADS_DEBUGLINK_BIN});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = dump_with({}, fixture.pid());
  const auto* t = thread_named(audit, "mutex_wait");
  ASSERT_NE(t, nullptr);
  const auto* f = frame_named(*t, "park_mutex_wait");
  ASSERT_NE(f, nullptr) << t->dump(1);
  EXPECT_EQ((*f)["module"], "park_threads_debuglink");
  EXPECT_TRUE(std::string((*f)["file"]).ends_with("park_threads.cpp"));
  EXPECT_EQ((*f)["line"], tagged_line(kParkThreadsSource, "mutex_wait"));
  EXPECT_NE(frame_named(*t, "std::mutex::lock"), nullptr);  // inlined frames from DWARF too
  EXPECT_EQ((*t)["blocking"]["category"], "lock");
}

TEST(DebugInfo, MiniDebugInfoNamesFunctionsOfAFullyStrippedBinary) {
  Child fixture({PARK_THREADS_MINIDEBUG_BIN});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = dump_with({"STACKAUDIT_DEBUGINFO_PATH=" + empty_debug_dir()}, fixture.pid());
  for (const char* name : {"mutex_wait", "tcp_recv", "epoll_wait"}) {
    SCOPED_TRACE(name);
    const auto* t = thread_named(audit, name);
    ASSERT_NE(t, nullptr);
    std::string fn = std::string("park_") + (std::string(name) == "epoll_wait" ? "epoll" : name);
    const auto* f = frame_named(*t, fn);
    ASSERT_NE(f, nullptr) << t->dump(1);
    EXPECT_EQ((*f)["file"], "");  // symbols only, no lines
    EXPECT_FALSE((*t)["truncated"]);
    EXPECT_TRUE(function_is((*t)["blocking"]["site"], fn));
  }
}

TEST(DebugInfo, AStrippedProgramsOwnFrameIsTheSiteByItsOffset) {
  // No symbol, no line, no debug link: the program's frames are still its
  // own code, and the site is named module+0xOFFSET (as mariadbd's are).
  Child fixture({PARK_THREADS_BARE_BIN});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto audit = dump_with({"STACKAUDIT_DEBUGINFO_PATH=" + empty_debug_dir()}, fixture.pid());
  const auto* t = thread_named(audit, "mutex_wait");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["blocking"]["category"], "lock");
  const auto& site = (*t)["blocking"]["site"];
  ASSERT_TRUE(site.is_object()) << t->dump(1);
  EXPECT_EQ(site["module"], "park_threads_bare");
  EXPECT_EQ(site["function"], "");
  RunResult r = run({"/usr/bin/env", "STACKAUDIT_DEBUGINFO_PATH=" + empty_debug_dir(), kStackaudit,
                     "dump", "--pid", std::to_string(fixture.pid())});
  EXPECT_NE(r.out.find("    site: park_threads_bare+0x"), std::string::npos) << r.out;
}

TEST(DebugInfo, LibcDebugInfoByBuildId) {
  if (!std::filesystem::exists("/usr/lib/debug/.build-id"))
    GTEST_SKIP() << "no /usr/lib/debug/.build-id (libc6-dbg is installed by setup.sh)";
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  auto with = dump_with({}, fixture.pid(), {"--source-lines", "all"});
  auto by_default = dump_with({}, fixture.pid());
  auto without = dump_with({"STACKAUDIT_DEBUGINFO_PATH=" + empty_debug_dir()}, fixture.pid());
  const auto* cond_with = thread_named(with, "cond_wait");
  const auto* cond_default = thread_named(by_default, "cond_wait");
  const auto* cond_without = thread_named(without, "cond_wait");
  const auto* mutex_without = thread_named(without, "mutex_wait");
  ASSERT_TRUE(cond_with && cond_default && cond_without && mutex_without);
  auto libc_files = [](const nlohmann::json& thread) {
    size_t n = 0;
    for (const auto& f : thread["frames"])
      if (f["module"] == "libc.so.6" && f["file"] != "") ++n;
    return n;
  };
  // libc's internal functions are named only in its debug file's symbol
  // table (.dynsym lacks them).
  auto internal_names = [](const nlohmann::json& thread) {
    for (const auto& f : thread["frames"])
      if (f["module"] == "libc.so.6" && f["function"] == "__futex_abstimed_wait_common")
        return true;
    return false;
  };
  EXPECT_GT(libc_files(*cond_with), 0u);
  EXPECT_TRUE(internal_names(*cond_with));
  // By default a system library keeps its names, not its lines: inflating
  // libc's debug info would cost more than the rest of the dump.
  EXPECT_EQ(libc_files(*cond_default), 0u);
  EXPECT_TRUE(internal_names(*cond_default)) << cond_default->dump(1);
  EXPECT_EQ(libc_files(*cond_without), 0u);
  EXPECT_FALSE(internal_names(*cond_without));
  // The program's own frames keep their lines either way.
  const auto* site = &(*cond_default)["blocking"]["site"];
  EXPECT_TRUE((*site)["file"].get<std::string>().ends_with("park_threads.cpp")) << site->dump();
  EXPECT_GT((*site)["line"].get<int>(), 0);
  // The classification does not depend on it.
  EXPECT_EQ((*cond_with)["blocking"]["primitive"], "pthread_cond_wait");
  EXPECT_EQ((*cond_without)["blocking"]["primitive"], "pthread_cond_wait");
  EXPECT_EQ((*mutex_without)["blocking"]["primitive"], "pthread_mutex_lock");
}

TEST(DebugInfo, NoDebuginfodClientWhenNoFileIsLocal) {
  // With no separate debug info anywhere, libdw 0.188 would load its
  // debuginfod client (curl, gnutls: milliseconds and megabytes) for every
  // module, to find no server configured.
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  RunResult r =
      run({"/usr/bin/env", "LD_DEBUG=files", "STACKAUDIT_DEBUGINFO_PATH=" + empty_debug_dir(),
           kStackaudit, "dump", "--pid", std::to_string(fixture.pid())});
  EXPECT_EQ(r.exit_code, 0) << r.err.substr(0, 2000);
  EXPECT_NE(r.err.find("libdw.so"), std::string::npos) << "LD_DEBUG output missing";
  EXPECT_EQ(r.err.find("libdebuginfod"), std::string::npos);
}

}  // namespace
}  // namespace stackaudit::test
