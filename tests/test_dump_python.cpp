// `stackaudit dump` on Debian's stripped /usr/bin/python3.11 (symbols only in
// .dynsym): every thread classified without CPython's static function names,
// from native frames, the syscall and the interpreter's own Python frames.
// Run twice: with the machine's separate debug info, and with none at all (as
// on a production host without -dbg packages).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

struct PyExpect {
  const char* thread;
  const char* category;
  const char* primitive;  // "" when it depends on which libc symbol is visible
  const char* fd_kind;    // "" when no fd
};

const PyExpect kPyExpected[] = {
    {"py_sleep", "sleep", "clock_nanosleep", ""},
    {"py_lock", "lock", "PyThread_acquire_lock_timed", ""},
    {"py_recv", "socket", "recv", "socket"},
    // Natively a lock acquisition (Condition.wait's waiter lock); the Python
    // frames say which library call it is.
    {"py_queue", "queue", "queue.Queue.get", ""},
    {"py_subprocess", "process", "subprocess.run", ""},
    {"py_fifo", "file", "read", "fifo"},
    {"py_fifo_writer", "sleep", "clock_nanosleep", ""},
};

class DumpPython : public ::testing::TestWithParam<bool> {};

TEST_P(DumpPython, ThreadsAreClassifiedFromNativeFramesAndSyscalls) {
  bool with_debug_info = GetParam();
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/python3.11"));
  Child py({"/usr/bin/python3.11", kPyPark});
  std::map<std::string, long> tids;
  for (;;) {
    auto line = py.read_line(std::chrono::seconds(20));
    ASSERT_TRUE(line) << "the Python fixture did not get ready";
    if (line->starts_with("ready")) break;
    std::istringstream in(*line);
    std::string word, name;
    long tid;
    in >> word >> name >> tid;
    if (word == "thread") tids[name] = tid;
  }
  ASSERT_EQ(tids.size(), std::size(kPyExpected));

  std::string empty_dir = testing::TempDir() + "no-debuginfo";
  std::filesystem::create_directories(empty_dir);
  std::vector<std::string> argv = {kStackaudit, "dump", "--pid", std::to_string(py.pid()),
                                   "--format",  "json"};
  if (!with_debug_info)
    argv.insert(argv.begin(), {"/usr/bin/env", "STACKAUDIT_DEBUGINFO_PATH=" + empty_dir});
  RunResult r = run(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);

  EXPECT_EQ(audit["target"]["runtime"]["kind"], "cpython");
  EXPECT_EQ(audit["target"]["runtime"]["version"].get<std::string>().substr(0, 5), "3.11.");
  for (const PyExpect& e : kPyExpected) {
    SCOPED_TRACE(e.thread);
    const nlohmann::json* t = thread_with_tid(audit, tids[e.thread]);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ((*t)["python"]["thread_name"], e.thread);
    ASSERT_FALSE((*t)["blocking"].is_null()) << t->dump(1);
    EXPECT_EQ((*t)["blocking"]["category"], e.category) << t->dump(1);
    if (*e.primitive) {
      EXPECT_EQ((*t)["blocking"]["primitive"], e.primitive);
    }
    if (*e.fd_kind) {
      EXPECT_EQ((*t)["syscall"]["fd"]["kind"], e.fd_kind);
    }
    EXPECT_FALSE((*t)["truncated"]) << (*t).value("note", "");
    // The unwinder went through the stripped interpreter to the thread's start.
    bool in_eval_loop = false;
    for (const auto& f : (*t)["frames"])
      in_eval_loop |= f["module"] == "python3.11" && f["function"] == "_PyEval_EvalFrameDefault";
    EXPECT_TRUE(in_eval_loop) << t->dump(1);
  }
  // The main thread reads stdin, a pipe.
  const nlohmann::json* main_thread = thread_with_tid(audit, py.pid());
  ASSERT_NE(main_thread, nullptr);
  EXPECT_EQ((*main_thread)["blocking"]["category"], "file");
}

INSTANTIATE_TEST_SUITE_P(Stripped, DumpPython, ::testing::Values(true, false),
                         [](const auto& info) {
                           return info.param ? "WithDebugInfo" : "WithoutDebugInfo";
                         });

}  // namespace
}  // namespace stackaudit::test

namespace stackaudit::test {
namespace {

TEST(PythonRules, AUserPythonRuleNamesALibraryCall) {
  // docs/rules.md: `<category> python <glob>` over module.qualname of a
  // library frame, tried before the built-in rules.
  Child py({"/usr/bin/python3.11", kPyPark});
  ASSERT_TRUE(py.wait_for("ready", std::chrono::seconds(20)));
  std::string rules = testing::TempDir() + "python.rules";
  std::ofstream(rules) << "# our jobs queue is a lock-step handoff\n"
                          "lock python queue.Queue.get primitive=jobs-handoff\n";
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(py.pid()), "--format", "json",
                     "--rules", rules});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  const nlohmann::json* queue = nullptr;
  for (const auto& t : audit["threads"])
    if (t["python"].is_object() && t["python"]["thread_name"] == "py_queue") queue = &t;
  ASSERT_NE(queue, nullptr);
  EXPECT_EQ((*queue)["blocking"]["category"], "lock");
  EXPECT_EQ((*queue)["blocking"]["primitive"], "jobs-handoff");
  EXPECT_EQ((*queue)["blocking"]["rule"], rules + ":2: lock python queue.Queue.get");
}

}  // namespace
}  // namespace stackaudit::test
