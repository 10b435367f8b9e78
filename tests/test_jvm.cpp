// A real JVM (Debian's OpenJDK 17), read from outside (issue 13): its waits
// named by the library they are in (Thread.sleep, a contended synchronized,
// a socket read), stacks that cross the JIT's code without unwind tables
// along the frame-pointer chain, and that code named from the JVM's perf map.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "collector/perf_map.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

using std::chrono::seconds;

constexpr const char* kJava = "/usr/bin/java";
constexpr const char* kJavac = "/usr/bin/javac";
constexpr const char* kJcmd = "/usr/bin/jcmd";

class Jvm : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* tool : {kJava, kJavac, kJcmd})
      if (::access(tool, X_OK) != 0)
        GTEST_SKIP() << tool << " is missing (Debian package openjdk-17-jdk-headless; ./setup.sh "
                     << "installs it)";
    classes_ = std::make_unique<TempDir>("stackaudit-jvm");
    RunResult javac = run({kJavac, "-d", classes_->path(), JAVA_WAITS_SOURCE}, seconds(120));
    ASSERT_EQ(javac.exit_code, 0) << javac.err;
    jvm_ = std::make_unique<Child>(std::vector<std::string>{kJava, "-Xmx64m", "-XX:+UseSerialGC",
                                                            "-cp", classes_->path(), "JavaWaits"});
    auto ready = jvm_->wait_for("ready ", seconds(60));
    ASSERT_TRUE(ready) << "the JVM fixture did not start";
    ASSERT_EQ(std::sscanf(ready->c_str(), "ready %*d port %d", &port_), 1) << *ready;
    perf_map_ = "/tmp/perf-" + std::to_string(jvm_->pid()) + ".map";
    std::filesystem::remove(perf_map_);
  }
  void TearDown() override {
    if (!perf_map_.empty()) std::filesystem::remove(perf_map_);
  }

  // The frames between the native method and the Java call stub's caller.
  static std::vector<nlohmann::json> frames_until(const nlohmann::json& t,
                                                  const std::string& function) {
    std::vector<nlohmann::json> out;
    for (const auto& f : t["frames"]) {
      if (function_is(f, function)) break;
      out.push_back(f);
    }
    return out;
  }

  std::unique_ptr<TempDir> classes_;
  std::unique_ptr<Child> jvm_;
  int port_ = 0;
  std::string perf_map_;
};

TEST_F(Jvm, ThreadSleepIsASleepAndAContendedMonitorALock) {
  auto audit = dump_json(jvm_->pid());
  const auto* sleeper = thread_named(audit, "java_sleeper");
  ASSERT_NE(sleeper, nullptr);
  EXPECT_EQ((*sleeper)["blocking"]["category"], "sleep") << (*sleeper)["blocking"];
  EXPECT_NE(frame_named(*sleeper, "JVM_Sleep"), nullptr);
  EXPECT_NE(frame_named(*sleeper, "JavaCalls::call_helper"), nullptr);
  // The JVM parks it in pthread_cond_timedwait: an hour's deadline.
  ASSERT_FALSE((*sleeper)["syscall"]["timeout"].is_null());
  EXPECT_GT((*sleeper)["syscall"]["timeout"]["remaining_s"].get<double>(), 3000);

  const auto* waiter = thread_named(audit, "monitor_waiter");
  ASSERT_NE(waiter, nullptr);
  EXPECT_EQ((*waiter)["blocking"]["category"], "lock") << (*waiter)["blocking"];
  EXPECT_NE(frame_named(*waiter, "ObjectMonitor::enter"), nullptr);
  EXPECT_NE(frame_named(*waiter, "JavaCalls::call_helper"), nullptr);
}

TEST_F(Jvm, ASocketReadWithoutAStopCrossesTheJitCodeByItsFramePointers) {
  auto audit = dump_json(jvm_->pid());
  const auto* reader = thread_named(audit, "socket_reader");
  ASSERT_NE(reader, nullptr);
  // A socket read: a stop would break it, so it is copied where it waits,
  // with sp and pc only.
  EXPECT_EQ((*reader)["captured"], "nonstop");
  EXPECT_EQ((*reader)["blocking"]["category"], "socket");
  EXPECT_NE(
      (*reader)["syscall"]["fd"]["detail"].get<std::string>().find(":" + std::to_string(port_)),
      std::string::npos)
      << (*reader)["syscall"]["fd"];
  EXPECT_FALSE((*reader)["truncated"].get<bool>()) << (*reader)["note"];
  ASSERT_NE(frame_named(*reader, "Java_sun_nio_ch_SocketDispatcher_read0"), nullptr);
  ASSERT_NE(frame_named(*reader, "JavaCalls::call_helper"), nullptr);
  // Between the native method and the call stub's caller: the interpreter's
  // frames (the reader's Java calls), found along the frame-pointer chain.
  size_t jit = 0;
  bool past_native = false;
  for (const auto& f : frames_until(*reader, "JavaCalls::call_helper")) {
    if (past_native) {
      EXPECT_TRUE(f["frame_pointer"].get<bool>()) << f;
      EXPECT_EQ(f["module"], "") << f;  // anonymous memory, no perf map yet
      ++jit;
    }
    past_native |= function_is(f, "Java_sun_nio_ch_SocketDispatcher_read0");
  }
  // reader -> InputStream.read -> NioSocketImpl.read ... -> read0: several.
  EXPECT_GE(jit, 5u);
  EXPECT_TRUE((*frame_named(*reader, "JavaCalls::call_helper"))["frame_pointer"].get<bool>());
}

TEST_F(Jvm, JitCodeIsNamedFromThePerfMap) {
  // A FIFO where the map should be is not waited on.
  ASSERT_EQ(::mkfifo(perf_map_.c_str(), 0600), 0);
  RunResult fifo;
  auto audit = dump_json(jvm_->pid(), &fifo);
  EXPECT_EQ(fifo.exit_code, 0) << fifo.err;
  std::filesystem::remove(perf_map_);

  // The JVM writes its perf map when asked.
  RunResult jcmd = run({kJcmd, std::to_string(jvm_->pid()), "Compiler.perfmap"}, seconds(60));
  ASSERT_EQ(jcmd.exit_code, 0) << jcmd.out << jcmd.err;
  ASSERT_TRUE(std::filesystem::exists(perf_map_));
  audit = dump_json(jvm_->pid());
  const auto* reader = thread_named(audit, "socket_reader");
  ASSERT_NE(reader, nullptr);
  size_t interpreter = 0, stub = 0;
  std::string map_name = std::filesystem::path(perf_map_).filename();
  for (const auto& f : frames_until(*reader, "JavaCalls::call_helper")) {
    if (!f["frame_pointer"].get<bool>()) continue;
    EXPECT_EQ(f["module"], map_name) << f;
    interpreter += f["function"] == "Interpreter";
    stub += f["function"].get<std::string>().starts_with("StubRoutines");
  }
  EXPECT_GE(interpreter, 5u) << (*reader)["frames"];
  EXPECT_EQ(stub, 1u) << (*reader)["frames"];

  RunResult text = run({kStackaudit, "dump", "--pid", std::to_string(jvm_->pid())});
  EXPECT_NE(text.out.find("Interpreter (" + map_name + "+0x"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("[frame pointer]"), std::string::npos);
}

TEST(PerfMapParsing, LinesAreReadAsTheJitsWriteThemAndTheRestIsSkipped) {
  auto map = parse_perf_map(
      "0x00007fa204ec71c0 0x0000000000000270 java.lang.Object Unsafe.get(java.lang.Object, long)\n"
      "7fa204ec7620 1f0 int java.lang.Object.hashCode()\r\n"
      "garbage line\n"
      "1000 0 zero size\n"
      "ffffffffffffff00 1000 wraps around\n"
      "2000\n"
      "2000 10\n"
      "3000 10 first\n"
      "3000 20 LazyCompile:*loop app.js:3\n"
      "4000 10 no newline at the end",
      100);
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map.at(0x7fa204ec71c0).end, 0x7fa204ec71c0u + 0x270);
  EXPECT_EQ(map.at(0x7fa204ec71c0).name, "java.lang.Object Unsafe.get(java.lang.Object, long)");
  EXPECT_EQ(map.at(0x7fa204ec7620).name, "int java.lang.Object.hashCode()");
  EXPECT_EQ(map.at(0x3000).name, "LazyCompile:*loop app.js:3");  // the later line wins
  EXPECT_EQ(map.at(0x3000).end, 0x3020u);
  EXPECT_EQ(map.at(0x4000).name, "no newline at the end");
  EXPECT_EQ(parse_perf_map("1 1 a\n2 1 b\n3 1 c\n", 2).size(), 2u);  // the cap holds
  EXPECT_TRUE(parse_perf_map("", 10).empty());
}

}  // namespace
}  // namespace stackaudit::test
