// Python-aware audits of a threaded CPython 3.11 service (Debian's stripped
// /usr/bin/python3.11): Python function, file and line per thread, the call
// site, the Python thread name, the GIL holder and waiter, pools, and the
// asyncio event loop idle in its selector, then blocked by time.sleep.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>

#include "tests/python_targets.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

const char* const kService = PY_SERVICE_SCRIPT;

struct Parked {
  std::string name;
  long tid;
  std::string task;
};

// The service under each CPython the suite covers (see python_targets.h).
class PythonService : public ::testing::TestWithParam<PythonTarget> {
 protected:
  void SetUp() override {
    std::string missing;
    process_ = PythonProcess::start(GetParam(), kService, &missing);
    if (!process_) GTEST_SKIP() << missing;
    read_parked();
  }
  void read_parked() {
    parked_.clear();
    for (;;) {
      auto line = process_->io().read_line(std::chrono::seconds(30));
      ASSERT_TRUE(line) << "the Python service did not get ready under " << GetParam().name();
      if (line->starts_with("ready")) break;
      std::istringstream in(*line);
      std::string word;
      Parked p;
      in >> word >> p.name >> p.tid >> p.task;
      p.tid = process_->host_tid(p.tid);  // the service says its own namespace's tids
      if (word == "thread") parked_.push_back(p);
    }
  }
  pid_t pid() const { return process_->pid(); }
  nlohmann::json dump(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {kStackaudit,           "dump",     "--pid",
                                     std::to_string(pid()), "--format", "json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    RunResult r = run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  }
  const Parked& running(const std::string& task) {
    for (const Parked& p : parked_)
      if (p.task == task) return p;
    throw std::runtime_error("no thread runs " + task);
  }
  // The service's file as its interpreter sees it.
  std::string service_file() const { return process_->script(); }
  void check_bridge_threads();
  std::unique_ptr<PythonProcess> process_;
  std::vector<Parked> parked_;
};

const nlohmann::json* python_frame(const nlohmann::json& thread, const std::string& function) {
  for (const auto& f : thread["frames"])
    if (f["kind"] == "python" && f["function"] == function) return &f;
  return nullptr;
}

struct TaskExpect {
  const char* task;
  const char* category;
  const char* primitive;
  const char* tag;
};

const TaskExpect kTasks[] = {
    {"fetch_quote", "socket", "recv", "recv"},
    {"next_job", "queue", "queue.Queue.get", "queue"},
    {"update_cache", "lock", "", "lock"},
    {"backoff", "sleep", "clock_nanosleep", "sleep"},
    {"convert_document", "process", "subprocess.run", "subprocess"},
    {"tail_log", "file", "read", "fifo"},
};

void PythonService::check_bridge_threads() {
  auto audit = dump();
  EXPECT_EQ(audit["target"]["runtime"]["kind"], "cpython");
  std::string version = audit["target"]["runtime"]["version"];
  EXPECT_TRUE(version.starts_with(GetParam().version + ".")) << version;
  EXPECT_TRUE(audit["warnings"].empty()) << audit["warnings"].dump();
  for (const TaskExpect& e : kTasks) {
    SCOPED_TRACE(e.task);
    const Parked& p = running(e.task);
    const auto* t = thread_with_tid(audit, p.tid);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ((*t)["python"]["thread_name"], p.name);
    EXPECT_TRUE(p.name.starts_with("legacy_bridge_"));
    const auto& b = (*t)["blocking"];
    ASSERT_FALSE(b.is_null());
    EXPECT_EQ(b["category"], e.category) << t->dump(1);
    if (*e.primitive) {
      EXPECT_EQ(b["primitive"], e.primitive);
    }
    EXPECT_FALSE(b["idle"]);
    EXPECT_FALSE(b["blocks_event_loop"]);
    // The site is the task function of the service, at the blocking call.
    EXPECT_EQ(b["site"]["kind"], "python");
    EXPECT_EQ(b["site"]["function"], e.task);
    EXPECT_EQ(b["site"]["line"], tagged_line(kService, e.tag));
    EXPECT_EQ(b["site"]["file"], service_file());
    // And the same frame is in the stack, under the pool's own frames.
    const auto* f = python_frame(*t, e.task);
    ASSERT_NE(f, nullptr);
    EXPECT_EQ((*f)["line"], tagged_line(kService, e.tag));
    EXPECT_NE(python_frame(*t, "_worker"), nullptr);  // concurrent.futures.thread._worker
    EXPECT_FALSE((*t)["truncated"]) << (*t).value("note", "");
  }
}

// Other CPython 3.11 builds on this machine's PATH that use a shared
// libpython3.11.so (the runtime then lives in the library, not the executable).
std::vector<std::string> shared_libpython_interpreters() {
  std::vector<std::string> found;
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = dir + "/python3.11";
    if (candidate == "/usr/bin/python3.11" || access(candidate.c_str(), X_OK) != 0) continue;
    RunResult r = run({candidate, "-c",
                       "import sys, sysconfig; print(sys.executable); "
                       "print(sysconfig.get_config_var('Py_ENABLE_SHARED'))"},
                      std::chrono::seconds(20));
    std::istringstream out(r.out);
    std::string exe, shared;
    std::getline(out, exe);
    std::getline(out, shared);
    if (r.exit_code == 0 && shared == "1" && exe != "/usr/bin/python3.11" &&
        std::find(found.begin(), found.end(), exe) == found.end())
      found.push_back(exe);
  }
  return found;
}

TEST_P(PythonService, EveryBridgeThreadHasItsPythonCallSite) {
  check_bridge_threads();
}

// Other CPython 3.11 builds with a shared libpython3.11.so (the runtime then
// lives in the library, not the executable).
TEST(SharedLibpython311, EveryBridgeThreadHasItsPythonCallSite) {
  auto interpreters = shared_libpython_interpreters();
  if (interpreters.empty()) GTEST_SKIP() << "no other CPython 3.11 with a shared libpython on PATH";
  for (const std::string& interpreter : interpreters) {
    SCOPED_TRACE(interpreter);
    Child py({interpreter, kService});
    std::optional<std::string> ready;
    while ((ready = py.read_line(std::chrono::seconds(30))) && !ready->starts_with("ready")) {
    }
    ASSERT_TRUE(ready);
    auto audit = dump_json(py.pid());
    int sleeping = 0;
    for (const auto& t : audit["threads"]) {
      if (t["blocking"].is_null() || t["blocking"]["site"].is_null() ||
          t["blocking"]["site"]["function"] != "backoff")
        continue;
      ++sleeping;
      EXPECT_EQ(t["blocking"]["category"], "sleep");
      EXPECT_EQ(t["blocking"]["site"]["line"], tagged_line(kService, "sleep"));
      EXPECT_TRUE(std::string(t["python"]["thread_name"]).starts_with("legacy_bridge_"));
    }
    EXPECT_EQ(sleeping, 1);
  }
}

TEST_P(PythonService, LibraryFramesAreKeptAndNamedByModule) {
  auto audit = dump();
  const auto* t = thread_with_tid(audit, running("next_job").tid);
  ASSERT_NE(t, nullptr);
  // queue.get waits in Condition.wait: both frames are there, innermost first.
  const auto& frames = (*t)["frames"];
  std::vector<std::string> python;
  for (const auto& f : frames)
    if (f["kind"] == "python")
      python.push_back(f["module"].get<std::string>() + "." + f["function"].get<std::string>());
  // (3.14 runs a work item through a WorkerContext of its own.)
  std::erase(python, "concurrent.futures.thread.WorkerContext.run");
  ASSERT_GE(python.size(), 5u);
  EXPECT_EQ(python[0], "threading.Condition.wait");
  EXPECT_EQ(python[1], "queue.Queue.get");
  EXPECT_EQ(python[2], "py_service.next_job");
  EXPECT_EQ(python[3], "concurrent.futures.thread._WorkItem.run");
  EXPECT_EQ(python[4], "concurrent.futures.thread._worker");
}

TEST_P(PythonService, PythonFramesAreMergedAtEachEvalLoopEntry) {
  auto audit = dump();
  const auto* t = thread_with_tid(audit, running("backoff").tid);
  ASSERT_NE(t, nullptr);
  const auto& frames = (*t)["frames"];
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames[0]["kind"], "native");  // the libc wait
  // Every run of Python frames is followed by the C-level eval loop call that
  // ran it, and every such call ran one (how many there are depends on the
  // version: 3.12 inlines more Python-to-Python calls than 3.11). Debian
  // unstable's interpreters export no name for the part of the eval loop a
  // call returns to: there, the frame is the interpreter's own, unnamed.
  size_t runs = 0, eval_calls = 0;
  for (size_t i = 1; i < frames.size(); ++i) {
    if (frames[i]["kind"] == "native" && frames[i]["function"] == "_PyEval_EvalFrameDefault" &&
        !frames[i]["inlined"])
      ++eval_calls;
    if (frames[i - 1]["kind"] == "python" && frames[i]["kind"] == "native") {
      ++runs;
      std::string function = frames[i]["function"], module = frames[i]["module"];
      EXPECT_TRUE(function == "_PyEval_EvalFrameDefault" ||
                  (function.empty() && module.starts_with("python3.")))
          << i << ": " << frames[i].dump();
    }
  }
  EXPECT_GE(runs, 1u);
  if (eval_calls > 0) {
    EXPECT_EQ(runs, eval_calls);
  }
  EXPECT_EQ(t->value("note", std::string()), "");  // they lined up
  // --stack native drops them, and nothing else.
  auto native = dump({"--stack", "native"});
  const auto* n = thread_with_tid(native, running("backoff").tid);
  size_t python_frames = 0;
  for (const auto& f : frames) python_frames += f["kind"] == "python";
  EXPECT_EQ((*n)["frames"].size(), frames.size() - python_frames);
  for (const auto& f : (*n)["frames"]) EXPECT_EQ(f["kind"], "native");
}

TEST_P(PythonService, IdlePoolWorkerIsIdle) {
  auto audit = dump();
  const auto* t = thread_with_tid(audit, running("-").tid);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["python"]["thread_name"], "idle_pool_0");
  EXPECT_EQ((*t)["blocking"]["category"], "queue");
  EXPECT_TRUE((*t)["blocking"]["idle"]);
  EXPECT_EQ((*t)["blocking"]["primitive"], "ThreadPoolExecutor worker");
}

TEST_P(PythonService, IdleWaitsAreKeptApartInTheMetrics) {
  // An idle ThreadPoolExecutor worker (and the event loop in its selector)
  // waits for work: the metrics count it as idle, not as a blocked thread.
  auto audit = dump();
  std::map<std::string, double> idle, blocked;
  for (const auto& t : audit["threads"]) {
    if (t["blocking"].is_null()) continue;
    auto& counts = t["blocking"]["idle"].get<bool>() ? idle : blocked;
    counts[t["blocking"]["category"]] += 1;
  }
  ASSERT_GE(idle["queue"], 1);
  Agent agent({"--pid", std::to_string(pid()), "--interval", "200ms"});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  ASSERT_TRUE(eventually([&] {
    scrape = agent.scrape();
    return metric_value(scrape, "stackaudit_snapshots_total").value_or(0) >= 2;
  }));
  for (const char* category : {"queue", "poll"}) {
    SCOPED_TRACE(category);
    std::string labels = std::string("{category=\"") + category + "\"}";
    EXPECT_EQ(metric_value(scrape, "stackaudit_idle_threads" + labels), idle[category]);
    EXPECT_EQ(metric_value(scrape, "stackaudit_blocked_threads" + labels), blocked[category]);
  }
  EXPECT_EQ(agent.stop(), 0);
}

TEST_P(PythonService, OneGilHolderAndTheOtherCruncherWaitsForIt) {
  // Two threads crunch in pure Python: at most one holds the GIL; the other
  // sleeps on the GIL (unless the dump caught a hand-over). Whenever a cruncher
  // sleeps in a syscall, it waits for the GIL: in take_gil, or in drop_gil
  // until the other took it (that one was once reported as a condition wait).
  bool seen_waiter = false;
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto audit = dump();
    int holders = 0;
    for (const auto& t : audit["threads"]) {
      if (t["python"].is_null()) continue;
      if (t["python"]["holds_gil"]) {
        ++holders;
        EXPECT_TRUE(std::string(t["python"]["thread_name"]).starts_with("cruncher_"));
        EXPECT_EQ(audit["summary"]["gil_holder"], t["tid"]);
      }
      if (std::string(t["python"]["thread_name"]).starts_with("cruncher_") &&
          t["state"] == "sleeping" && !t["syscall"].is_null()) {
        EXPECT_TRUE(t["python"]["waits_for_gil"]) << t.dump();
      }
      if (t["python"]["waits_for_gil"] && t["state"] == "sleeping") {
        EXPECT_TRUE(std::string(t["python"]["thread_name"]).starts_with("cruncher_"));
        EXPECT_EQ(t["blocking"]["category"], "lock");
        EXPECT_EQ(t["blocking"]["primitive"], "GIL");
        EXPECT_EQ(t["blocking"]["site"]["function"], "crunch");
        seen_waiter = true;
      }
    }
    EXPECT_LE(holders, 1);
    if (holders == 0) {
      EXPECT_TRUE(audit["summary"]["gil_holder"].is_null());
    }
  }
  EXPECT_TRUE(seen_waiter);
}

TEST_P(PythonService, BridgePoolIsSummarized) {
  auto audit = dump();
  const nlohmann::json* bridge = nullptr;
  for (const auto& p : audit["summary"]["pools"])
    if (p["name"] == "legacy_bridge") bridge = &p;
  ASSERT_NE(bridge, nullptr) << audit["summary"].dump();
  EXPECT_EQ((*bridge)["threads"], 6);
  EXPECT_EQ((*bridge)["idle"], 0);
  EXPECT_EQ((*bridge)["blocked"], 6);
  EXPECT_EQ((*bridge)["by_category"]["socket"], 1);
  EXPECT_EQ((*bridge)["by_category"]["queue"], 1);
  EXPECT_EQ((*bridge)["by_category"]["process"], 1);
}

TEST_P(PythonService, EventLoopIsIdleInItsSelectorThenBlockedByTimeSleep) {
  long loop_tid = running("serve").tid;
  auto idle = dump();
  const auto* t = thread_with_tid(idle, loop_tid);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ((*t)["python"]["thread_name"], "event_loop");
  EXPECT_EQ((*t)["blocking"]["category"], "poll");
  EXPECT_TRUE((*t)["blocking"]["idle"]);
  EXPECT_FALSE((*t)["blocking"]["blocks_event_loop"]);
  EXPECT_EQ(idle["summary"]["event_loop_threads"], 1);
  EXPECT_EQ(idle["summary"]["event_loops_blocked"], 0);

  process_->io().write_line("block");
  ASSERT_TRUE(process_->io().wait_for("blocking", std::chrono::seconds(10)));
  nlohmann::json blocked;
  // "blocking" is printed just before the call: wait until it sleeps in it.
  ASSERT_TRUE(eventually(
      [&] {
        blocked = dump();
        const auto* b = thread_with_tid(blocked, loop_tid);
        return b && !(*b)["blocking"].is_null() && (*b)["blocking"]["category"] == "sleep";
      },
      std::chrono::seconds(10)));
  t = thread_with_tid(blocked, loop_tid);
  const auto& b = (*t)["blocking"];
  EXPECT_TRUE(b["blocks_event_loop"]);
  EXPECT_FALSE(b["idle"]);
  EXPECT_EQ(b["site"]["function"], "blocking_handler");
  EXPECT_EQ(b["site"]["line"], tagged_line(kService, "loop_sleep"));
  // The innermost coroutine of the user's code, not serve() that awaited it.
  EXPECT_EQ(b["coroutine"]["function"], "handle_request");
  EXPECT_EQ(b["coroutine"]["line"], tagged_line(kService, "loop_call"));
  EXPECT_EQ(blocked["summary"]["event_loops_blocked"], 1);
  const auto* call = python_frame(*t, "handle_request");
  ASSERT_NE(call, nullptr);
  EXPECT_EQ((*call)["line"], tagged_line(kService, "loop_call"));

  // The text report says it up front.
  RunResult text = run({kStackaudit, "dump", "--pid", std::to_string(pid())});
  EXPECT_NE(text.out.find("!!! 1 asyncio event loop(s) blocked"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("BLOCKS THE EVENT LOOP"), std::string::npos);
  EXPECT_NE(text.out.find("in handle_request ("), std::string::npos);
}

TEST_P(PythonService, TextReportShowsPythonFramesAndThreadNames) {
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(pid())});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Parked& p = running("backoff");
  // "Thread TID "NAME" ...", with " [ns TID]" after TID in a container.
  auto at = r.out.find("\nThread " + std::to_string(p.tid) + " ");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::string header = r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1);
  EXPECT_TRUE(header.ends_with("\"" + p.name + "\" sleeping | sleep: clock_nanosleep")) << header;
  EXPECT_NE(r.out.find("site: backoff (" + service_file() + ":" +
                       std::to_string(tagged_line(kService, "sleep")) + ")"),
            std::string::npos);
  // Python frames only, by default, for a Python process.
  EXPECT_EQ(r.out.find("_PyEval_EvalFrameDefault"), std::string::npos);
  EXPECT_NE(r.out.find("[python]"), std::string::npos);
  EXPECT_NE(r.out.find("pool legacy_bridge: 6 threads, 0 idle, 6 blocked"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Versions, PythonService, ::testing::ValuesIn(python_targets()),
                         [](const auto& info) { return info.param.name(); });

TEST(Python311Gil, ThreadsHandingTheGilOverWaitForTheGil) {
  // Four threads crunch with a 0.5 ms switch interval on two CPUs: the GIL
  // changes hands thousands of times a second. A thread asked to drop it
  // waits in drop_gil (switch_cond, switch_mutex) until another took it; the
  // others wait in take_gil. Every cruncher asleep in a syscall is a GIL
  // waiter; none is a condition or mutex wait of its own.
  if (access("/usr/bin/python3.11", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/python3.11";
  Child py({"/usr/bin/python3.11", "-c",
            "import os, sys, threading\n"
            "sys.setswitchinterval(0.0005)\n"
            "def crunch():\n"
            "    x = 0\n"
            "    while True:\n"
            "        x = (x * 31 + 7) % 1000003\n"
            "for i in range(4):\n"
            "    threading.Thread(target=crunch, name=f'cruncher_{i}', daemon=True).start()\n"
            "print('ready', flush=True)\n"
            "threading.Event().wait()\n"});
  ASSERT_TRUE(py.wait_for("ready", std::chrono::seconds(10)));
  int waiters = 0;
  for (int attempt = 0; attempt < 12; ++attempt) {
    nlohmann::json audit = dump_json(py.pid());
    for (const auto& t : audit["threads"]) {
      if (t["python"].is_null() ||
          !std::string(t["python"]["thread_name"]).starts_with("cruncher_") ||
          t["syscall"].is_null() || t["blocking"].is_null())
        continue;
      ++waiters;
      EXPECT_EQ(t["blocking"]["category"], "lock") << t.dump();
      EXPECT_EQ(t["blocking"]["primitive"], "GIL") << t.dump();
      EXPECT_TRUE(t["python"]["waits_for_gil"]) << t.dump();
    }
  }
  EXPECT_GT(waiters, 0);
}

}  // namespace
}  // namespace stackaudit::test
