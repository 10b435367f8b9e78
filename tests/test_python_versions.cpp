// What only some versions have: sub-interpreters, each with its own thread
// states and frames, read on every CPython the suite covers (3.11 to 3.15, on
// the host and inside a container; see python_targets.h).
#include <gtest/gtest.h>

#include <sstream>

#include "tests/python_targets.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

const char* const kSubinterp = PY_SUBINTERP_SCRIPT;
const char* const kSubinterpWork = PY_SUBINTERP_WORK_SCRIPT;

class SubInterpreters : public ::testing::TestWithParam<PythonTarget> {};

TEST_P(SubInterpreters, EachInterpretersFramesSitAtTheirOwnEvalLoopEntry) {
  std::string missing;
  auto py = PythonProcess::start(GetParam(), kSubinterp, &missing);
  if (!py) GTEST_SKIP() << missing;
  std::map<std::string, long> tids;
  for (;;) {
    auto line = py->io().read_line(std::chrono::seconds(30));
    ASSERT_TRUE(line) << "the sub-interpreter fixture did not get ready";
    if (line->starts_with("ready")) break;
    std::istringstream in(*line);
    std::string word, name, task;
    long tid = 0;
    in >> word >> name >> tid >> task;
    tids[task] = py->host_tid(tid);
  }
  ASSERT_GT(tids["park"], 0);
  RunResult r;
  auto audit = dump_json(py->pid(), &r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(audit["warnings"].empty()) << audit["warnings"].dump();
  const auto* t = thread_with_tid(audit, tids["park"]);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["python"]["thread_name"], "bridge");
  EXPECT_FALSE((*t)["truncated"]) << (*t).value("note", "");
  EXPECT_EQ(t->value("note", std::string()), "") << "the Python frames must line up";
  // The wait is in the sub-interpreter's code.
  const auto& b = (*t)["blocking"];
  ASSERT_FALSE(b.is_null());
  EXPECT_EQ(b["category"], "sleep");
  EXPECT_EQ(b["site"]["function"], "park");
  EXPECT_TRUE(std::string(b["site"]["file"]).ends_with("/py_subinterp_work.py"));
  EXPECT_EQ(b["site"]["line"], tagged_line(kSubinterpWork, "sub_sleep"));
  // Every Python frame: the sub-interpreter's first, then the main one's, and
  // each run of Python frames right before the eval-loop call that runs it.
  std::vector<std::pair<std::string, int64_t>> python;
  const auto& frames = (*t)["frames"];
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i]["kind"] != "python") continue;
    python.emplace_back(frames[i]["function"], frames[i]["interpreter"].get<int64_t>());
    // (Debian unstable's interpreters export no name for the part of the
    // eval loop a call returns to: there it is the interpreter's, unnamed.)
    if (i + 1 < frames.size() && frames[i + 1]["kind"] == "native") {
      std::string function = frames[i + 1]["function"], module = frames[i + 1]["module"];
      EXPECT_TRUE(function == "_PyEval_EvalFrameDefault" ||
                  (function.empty() && module.starts_with("python3.")))
          << i << ": " << frames[i + 1].dump();
    }
  }
  ASSERT_GE(python.size(), 3u);
  EXPECT_EQ(python[0].first, "park");
  EXPECT_NE(python[0].second, 0) << "park runs in a sub-interpreter";
  size_t first_main = 0;
  while (first_main < python.size() && python[first_main].second != 0) ++first_main;
  ASSERT_LT(first_main, python.size());
  for (size_t i = first_main; i < python.size(); ++i) EXPECT_EQ(python[i].second, 0) << i;
  bool bridge = false;
  for (const auto& f : frames)
    if (f["kind"] == "python" && f["function"] == "bridge") {
      bridge = true;
      EXPECT_EQ(f["line"], tagged_line(kSubinterp, "bridge"));
      EXPECT_EQ(f["interpreter"], 0);
    }
  EXPECT_TRUE(bridge);
  // The text report names the interpreter of such frames.
  RunResult text = run({kStackaudit, "dump", "--pid", std::to_string(py->pid())});
  EXPECT_NE(text.out.find("[py interp " + std::to_string(python[0].second) + "]"),
            std::string::npos)
      << text.out;
  EXPECT_TRUE(nothing_stopped(py->pid()));
}

INSTANTIATE_TEST_SUITE_P(Versions, SubInterpreters, ::testing::ValuesIn(python_targets()),
                         [](const auto& info) { return info.param.name(); });

}  // namespace
}  // namespace stackaudit::test
