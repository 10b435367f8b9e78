// Python reading never crashes and never makes things up: an interpreter
// starting up or finalizing, thread states created and torn down while being
// read, and binaries that look like CPython but are not one we can read.
#include <gtest/gtest.h>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

void expect_sane(const RunResult& r) {
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 3) << r.err;
  if (r.exit_code == 0 || r.exit_code == 1) {
    auto audit = nlohmann::json::parse(r.out);
    EXPECT_EQ(audit["schema"], "stackaudit.audit/v1");
  }
}

// A runtime stackaudit cannot lay out: native frames, classified as ever, and
// one warning that says which CPython and why.
void expect_native_fallback(const char* binary, const std::string& version,
                            const std::string& why) {
  SCOPED_TRACE(binary);
  Child fake({binary});
  ASSERT_TRUE(fake.wait_for("ready", std::chrono::seconds(10)));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fake.pid()), "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  ASSERT_EQ(audit["warnings"].size(), 1u) << audit["warnings"].dump();
  std::string w = audit["warnings"][0];
  EXPECT_NE(w.find("CPython " + version), std::string::npos) << w;
  EXPECT_NE(w.find(why), std::string::npos) << w;
  EXPECT_NE(w.find("showing native frames only"), std::string::npos) << w;
  EXPECT_EQ(audit["target"]["runtime"]["kind"], "cpython");
  EXPECT_EQ(audit["target"]["runtime"]["version"], version);
  for (const auto& t : audit["threads"]) {
    EXPECT_TRUE(t["python"].is_null());
    for (const auto& f : t["frames"]) EXPECT_EQ(f["kind"], "native");
  }
  // Native classification is untouched.
  bool sleeping = false;
  for (const auto& t : audit["threads"])
    sleeping |= !t["blocking"].is_null() && t["blocking"]["category"] == "sleep";
  EXPECT_TRUE(sleeping);
  EXPECT_TRUE(nothing_stopped(fake.pid()));
}

TEST(PythonRobustness, DebugOffsetsThatFailValidationFallBackToNative) {
  expect_native_fallback(FAKE_PYTHON_313_BIN, "3.13.0", "no readable _Py_DebugOffsets");
}

TEST(PythonRobustness, FreeThreadedBuildIsSaidAndFallsBackToNative) {
  expect_native_fallback(FAKE_PYTHON_314T_BIN, "3.14.0", "free-threaded build");
}

TEST(PythonRobustness, VersionOlderThan311FallsBackToNative) {
  expect_native_fallback(FAKE_PYTHON_310_BIN, "3.10.12", "is not supported");
}

TEST(PythonRobustness, A311RuntimeWithNoInterpreterSaysSo) {
  Child fake({FAKE_PYTHON_311_BIN});
  ASSERT_TRUE(fake.wait_for("ready", std::chrono::seconds(10)));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fake.pid()), "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  ASSERT_EQ(audit["warnings"].size(), 1u) << audit["warnings"].dump();
  EXPECT_NE(std::string(audit["warnings"][0]).find("starting up or finalizing"), std::string::npos);
  for (const auto& t : audit["threads"]) EXPECT_TRUE(t["python"].is_null());
}

TEST(PythonRobustness, ThreadStatesComingAndGoingWhileRead) {
  Child churn({"/usr/bin/python3.11", PY_CHURN_SCRIPT});
  ASSERT_TRUE(churn.wait_for("ready", std::chrono::seconds(10)));
  int with_python = 0;
  for (int i = 0; i < 20; ++i) {
    RunResult r =
        run({kStackaudit, "dump", "--pid", std::to_string(churn.pid()), "--format", "json"});
    expect_sane(r);
    if (r.exit_code > 1) continue;
    auto audit = nlohmann::json::parse(r.out);
    const auto* main_thread = thread_with_tid(audit, churn.pid());
    if (!main_thread || (*main_thread)["python"].is_null()) continue;
    ++with_python;
    // Whatever was read is consistent: Python frames of the churn script, or a
    // stack marked partial.
    for (const auto& f : (*main_thread)["frames"]) {
      if (f["kind"] == "python") {
        EXPECT_FALSE(std::string(f["file"]).empty());
      }
    }
  }
  EXPECT_GT(with_python, 10);
}

TEST(PythonRobustness, InterpreterStartingUpAndFinalizing) {
  // A Python process that starts 30 threads, lets them end after 50 ms, and
  // exits: dumps at moments from its first instructions to its finalization.
  for (int delay_ms : {0, 2, 5, 10, 20, 40, 60, 80, 120}) {
    SCOPED_TRACE(delay_ms);
    Child py({"/usr/bin/python3.11", "-c",
              "import threading, time\n"
              "ts = [threading.Thread(target=time.sleep, args=(0.05,)) for _ in range(30)]\n"
              "[t.start() for t in ts]\n"});
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(py.pid()), "--format", "json"});
    expect_sane(r);
  }
}

}  // namespace
}  // namespace stackaudit::test
