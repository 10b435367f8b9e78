// asyncio tasks read from outside the process (issue 12), on every CPython
// the suite covers (3.11 to 3.15, on the host and in a container; see
// python_targets.h): tests/targets/asyncio_tasks.py parks named tasks in each
// kind of await and prints what the interpreter itself says of each one (its
// state, its coroutine chain with lines); `dump` must say the same from the
// process's memory, and what each task awaits, who awaits it, and the cycle.
// On 3.14 and 3.15 the task names and awaited-by edges are also compared with
// CPython's own `python3.X -m asyncio pstree PID`, run in the same rootfs.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "tests/python_targets.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

const char* const kFixture = ASYNCIO_TASKS_SCRIPT;

int line_of(const std::string& tag) {
  return tagged_line(kFixture, tag);
}

// What the fixture printed before "ready".
struct Truth {
  std::map<std::string, long> loops;  // loop thread name -> host tid
  long executor_tid = 0;              // host tid
  std::string peer;                   // "127.0.0.1:PORT"
  struct Task {
    std::string state, awaits;
    std::vector<std::string> frames;  // "qualname:line", outermost first
  };
  std::map<std::string, Task> tasks;
};

class AsyncioTasks : public ::testing::TestWithParam<PythonTarget> {
 protected:
  // Starts the fixture; false (with the test skipped) when the interpreter is
  // missing.
  bool start(const std::vector<std::string>& args = {}) {
    std::string missing;
    py_ = PythonProcess::start(GetParam(), kFixture, &missing, args);
    if (!py_) {
      skipped_ = missing;
      return false;
    }
    for (;;) {
      auto line = py_->io().read_line(std::chrono::seconds(60));
      EXPECT_TRUE(line) << "the asyncio fixture did not get ready under " << GetParam().name();
      if (!line) return false;
      if (line->starts_with("ready")) break;
      std::istringstream in(*line);
      std::string word;
      in >> word;
      if (word == "loop") {
        std::string name;
        long tid = 0;
        in >> name >> tid;
        truth_.loops[name] = py_->host_tid(tid);
      } else if (word == "executor") {
        long tid = 0;
        in >> tid;
        truth_.executor_tid = py_->host_tid(tid);
      } else if (word == "peer") {
        in >> truth_.peer;
      } else if (word == "task") {
        std::string name, frames;
        Truth::Task t;
        in >> name >> t.state >> t.awaits >> frames;
        std::istringstream split(frames);
        for (std::string f; std::getline(split, f, ',');)
          if (f != "-") t.frames.push_back(f);
        truth_.tasks[name] = t;
      }
    }
    return true;
  }
  pid_t pid() const { return py_->pid(); }

  nlohmann::json dump(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {kStackaudit,           "dump",     "--pid",
                                     std::to_string(pid()), "--format", "json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    RunResult r = run(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    try {
      return nlohmann::json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "dump's JSON does not parse: " << e.what() << "\n" << r.err;
      return {};
    }
  }

  static const nlohmann::json* loop_on(const nlohmann::json& audit, long tid) {
    for (const auto& l : audit["event_loops"])
      if (l["tid"] == tid) return &l;
    return nullptr;
  }
  static const nlohmann::json* task_named(const nlohmann::json& loop, const std::string& name) {
    for (const auto& t : loop["tasks"])
      if (t["name"] == name) return &t;
    return nullptr;
  }
  static std::string name_of(const nlohmann::json& loop, const std::string& id) {
    for (const auto& t : loop["tasks"])
      if (t["id"] == id) return t["name"];
    return "?" + id;
  }
  static std::set<std::string> names_of(const nlohmann::json& loop, const nlohmann::json& ids) {
    std::set<std::string> out;
    for (const auto& id : ids) out.insert(name_of(loop, id));
    return out;
  }
  // The task's coroutine chain as the fixture writes it: "qualname:line",
  // outermost first.
  static std::vector<std::string> chain(const nlohmann::json& task) {
    std::vector<std::string> out;
    for (const auto& f : task["coroutine"])
      out.push_back(f["function"].get<std::string>() + ":" + std::to_string(f["line"].get<int>()));
    std::reverse(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<PythonProcess> py_;
  Truth truth_;
  std::string skipped_;
};

#define START_OR_SKIP(...)                             \
  do {                                                 \
    if (!start(__VA_ARGS__)) {                         \
      if (!skipped_.empty()) GTEST_SKIP() << skipped_; \
      return;                                          \
    }                                                  \
  } while (0)

TEST_P(AsyncioTasks, EveryNamedTaskWithItsChainWhatItAwaitsAndWhoAwaitsIt) {
  START_OR_SKIP();
  ASSERT_EQ(truth_.loops.count("event_loop"), 1u);
  auto audit = dump();
  ASSERT_TRUE(audit["summary"]["asyncio"]["read"]) << audit["warnings"].dump();
  ASSERT_EQ(audit["event_loops"].size(), 1u) << audit["event_loops"].dump();
  const auto* loop = loop_on(audit, truth_.loops["event_loop"]);
  ASSERT_NE(loop, nullptr) << audit["event_loops"].dump();
  EXPECT_EQ((*loop)["thread_name"], "event_loop");
  EXPECT_EQ((*loop)["type"], "_UnixSelectorEventLoop");
  EXPECT_FALSE((*loop)["blocked"]);
  EXPECT_FALSE((*loop)["truncated"]);
  EXPECT_GE((*loop)["ready_callbacks"], 0);
  EXPECT_TRUE((*loop)["current_task"].is_null()) << "the loop is idle in its selector";

  // Every task the fixture named, with the interpreter's own state and chain.
  ASSERT_GE(truth_.tasks.size(), 15u);
  for (const auto& [name, want] : truth_.tasks) {
    SCOPED_TRACE(name);
    const auto* t = task_named(*loop, name);
    ASSERT_NE(t, nullptr) << "task " << name << " not read";
    EXPECT_EQ((*t)["state"], want.state);
    EXPECT_EQ(chain(*t), want.frames);
    EXPECT_FALSE((*t)["coroutine_truncated"]);
    for (const auto& f : (*t)["coroutine"]) EXPECT_EQ(f["kind"], "python");
  }
  auto task = [&](const std::string& name) -> const nlohmann::json& {
    static const nlohmann::json none;
    const auto* t = task_named(*loop, name);
    return t ? *t : none;
  };
  auto awaiting = [&](const std::string& name) { return task(name)["awaiting"]; };
  auto innermost_user = [&](const std::string& name) {
    // The task's own await: the innermost frame of the fixture's file.
    for (const auto& f : task(name)["coroutine"])
      if (std::string(f["file"]).ends_with("asyncio_tasks.py")) return f;
    return nlohmann::json();
  };

  // What each awaits, and at which line of the fixture.
  EXPECT_EQ(awaiting("sleeper")["kind"], "sleep");
  EXPECT_GT(awaiting("sleeper")["seconds_left"], 3000.0);
  EXPECT_LE(awaiting("sleeper")["seconds_left"], 3600.0);
  EXPECT_EQ(innermost_user("sleeper")["line"], line_of("sleep"));
  EXPECT_EQ(awaiting("queue_getter")["kind"], "queue");
  EXPECT_EQ(innermost_user("queue_getter")["line"], line_of("queue_get"));
  EXPECT_EQ(awaiting("lock_holder")["kind"], "event");
  EXPECT_EQ(innermost_user("lock_holder")["line"], line_of("lock_hold"));
  EXPECT_EQ(awaiting("lock_waiter")["kind"], "lock");
  EXPECT_EQ(innermost_user("lock_waiter")["line"], line_of("lock_wait"));
  EXPECT_EQ(awaiting("stream_reader")["kind"], "stream");
  EXPECT_EQ(innermost_user("stream_reader")["line"], line_of("stream_read"));
  ASSERT_TRUE(awaiting("stream_reader")["fd"].is_object()) << awaiting("stream_reader");
  EXPECT_EQ(awaiting("stream_reader")["fd"]["kind"], "socket");
  EXPECT_NE(std::string(awaiting("stream_reader")["detail"]).find("-> " + truth_.peer),
            std::string::npos)
      << awaiting("stream_reader");
  EXPECT_EQ(awaiting("executor_waiter")["kind"], "executor");
  EXPECT_EQ(awaiting("executor_waiter")["executor_tid"], truth_.executor_tid);
  EXPECT_EQ(innermost_user("executor_waiter")["line"], line_of("executor"));
  // The executor's thread is the one asleep in the job.
  const auto* worker = thread_with_tid(audit, truth_.executor_tid);
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ((*worker)["blocking"]["site"]["line"], line_of("executor_sleep"));

  EXPECT_EQ(awaiting("gather_parent")["kind"], "gather");
  EXPECT_EQ(innermost_user("gather_parent")["line"], line_of("gather"));
  EXPECT_EQ(names_of(*loop, task("gather_parent")["awaits"]),
            (std::set<std::string>{"gather_child_1", "gather_child_2"}));
  EXPECT_EQ(awaiting("taskgroup_parent")["kind"], "task");
  EXPECT_EQ(innermost_user("taskgroup_parent")["line"], line_of("taskgroup"));
  EXPECT_EQ(names_of(*loop, task("taskgroup_parent")["awaits"]),
            (std::set<std::string>{"tg_child_1", "tg_child_2"}));
  for (const char* child : {"gather_child_1", "gather_child_2", "tg_child_1", "tg_child_2"}) {
    EXPECT_EQ(awaiting(child)["kind"], "sleep") << child;
    EXPECT_EQ(names_of(*loop, task(child)["awaited_by"]).size(), 1u) << child;
  }
  EXPECT_EQ(names_of(*loop, task("gather_child_1")["awaited_by"]),
            std::set<std::string>{"gather_parent"});
  EXPECT_EQ(names_of(*loop, task("tg_child_2")["awaited_by"]),
            std::set<std::string>{"taskgroup_parent"});
  // An async generator's frame is in the chain, between the consumer and the
  // sleep.
  EXPECT_EQ(awaiting("agen_consumer")["kind"], "sleep");
  EXPECT_EQ(innermost_user("agen_consumer")["function"], "ticker");
  EXPECT_EQ(innermost_user("agen_consumer")["line"], line_of("agen_sleep"));
  if (truth_.tasks.count("eager_sleeper")) {
    EXPECT_EQ(awaiting("eager_sleeper")["kind"], "sleep");
  }
  EXPECT_EQ(awaiting("main")["kind"], "future");
  EXPECT_EQ(innermost_user("main")["line"], line_of("main_wait"));

  // The cycle: each awaits the other, by name, and the summary says so.
  EXPECT_EQ(awaiting("cycle_a")["kind"], "task");
  EXPECT_EQ(awaiting("cycle_a")["detail"], "cycle_b");
  EXPECT_EQ(awaiting("cycle_b")["detail"], "cycle_a");
  EXPECT_EQ(innermost_user("cycle_a")["line"], line_of("cycle_a"));
  EXPECT_EQ(names_of(*loop, task("cycle_a")["awaits"]), std::set<std::string>{"cycle_b"});
  EXPECT_EQ(names_of(*loop, task("cycle_a")["awaited_by"]), std::set<std::string>{"cycle_b"});
  const auto& summary = audit["summary"]["asyncio"];
  ASSERT_EQ(summary["cycles"].size(), 1u) << summary.dump();
  std::set<std::string> ring;
  for (const auto& t : summary["cycles"][0]["tasks"]) ring.insert(t["name"]);
  EXPECT_EQ(ring, (std::set<std::string>{"cycle_a", "cycle_b"}));
  EXPECT_EQ(summary["tasks"], (*loop)["tasks"].size());
  EXPECT_GE(summary["by_awaiting"]["sleep"], 6);
  EXPECT_EQ(summary["by_awaiting"]["queue"], 1);
  EXPECT_EQ(summary["by_awaiting"]["lock"], 1);

  // The text report: the deadlock first, then the tree under the loop.
  RunResult text = run({kStackaudit, "dump", "--pid", std::to_string(pid())});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  auto alert = text.out.find("!!! 1 await cycle among asyncio tasks");
  EXPECT_NE(alert, std::string::npos) << text.out;
  EXPECT_TRUE(
      text.out.find("DEADLOCK: await cycle: cycle_a -> cycle_b -> cycle_a") != std::string::npos ||
      text.out.find("DEADLOCK: await cycle: cycle_b -> cycle_a -> cycle_b") != std::string::npos)
      << text.out;
  auto parent = text.out.find("task \"gather_parent\" pending | gather");
  ASSERT_NE(parent, std::string::npos) << text.out;
  EXPECT_NE(text.out.find("task \"gather_child_1\" pending | sleep", parent), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("task \"lock_waiter\" pending | lock"), std::string::npos) << text.out;
  EXPECT_TRUE(nothing_stopped(pid()));
}

TEST_P(AsyncioTasks, ABlockedLoopNamesTheCallAndItsTaskRunningNow) {
  START_OR_SKIP({"--block"});
  long loop_tid = truth_.loops["event_loop"];
  nlohmann::json audit;
  // "blocker" starts 0.1 s after "ready": wait until it sleeps.
  ASSERT_TRUE(eventually(
      [&] {
        audit = dump();
        const auto* loop = loop_on(audit, loop_tid);
        return loop && (*loop)["blocked"] == true;
      },
      std::chrono::seconds(10)));
  const auto* loop = loop_on(audit, loop_tid);
  ASSERT_NE(loop, nullptr);
  ASSERT_TRUE((*loop)["blocked_in"].is_object());
  // The innermost coroutine of the user's code: the one that made the call.
  EXPECT_EQ((*loop)["blocked_in"]["function"], "blocker");
  EXPECT_EQ((*loop)["blocked_in"]["line"], line_of("block_call"));
  const auto* blocker = task_named(*loop, "blocker");
  ASSERT_NE(blocker, nullptr);
  EXPECT_EQ((*blocker)["state"], "running");
  EXPECT_EQ((*blocker)["awaiting"]["kind"], "running");
  EXPECT_EQ((*loop)["current_task"], (*blocker)["id"]);
  // The thread's record names the user's coroutine that made the call.
  const auto* t = thread_with_tid(audit, loop_tid);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE((*t)["blocking"]["blocks_event_loop"]);
  EXPECT_EQ((*t)["blocking"]["coroutine"]["function"], "blocker");
  EXPECT_EQ((*t)["blocking"]["coroutine"]["line"], line_of("block_call"));
  // The other tasks are still read, parked where they were.
  const auto* sleeper = task_named(*loop, "sleeper");
  ASSERT_NE(sleeper, nullptr);
  EXPECT_EQ((*sleeper)["awaiting"]["kind"], "sleep");
  RunResult text = run({kStackaudit, "dump", "--pid", std::to_string(pid())});
  EXPECT_NE(text.out.find("!!! BLOCKED: its thread is blocked outside the selector in blocker"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("task \"blocker\" running"), std::string::npos) << text.out;
  EXPECT_TRUE(nothing_stopped(pid()));
}

// asyncio.tasks._PyTask (what runs when the _asyncio module is missing, or
// a task factory asks for it) keeps its state in instance attributes, and a
// pending one has no _state of its own: the class's is read.
TEST_P(AsyncioTasks, APurePythonTaskIsReadLikeACOne) {
  START_OR_SKIP({"--py-task"});
  ASSERT_EQ(truth_.tasks.count("py_sleeper"), 1u);
  auto audit = dump();
  const auto* loop = loop_on(audit, truth_.loops["event_loop"]);
  ASSERT_NE(loop, nullptr);
  const auto* t = task_named(*loop, "py_sleeper");
  ASSERT_NE(t, nullptr) << audit["warnings"].dump();
  EXPECT_EQ((*t)["state"], truth_.tasks["py_sleeper"].state);
  EXPECT_EQ(chain(*t), truth_.tasks["py_sleeper"].frames);
  EXPECT_EQ((*t)["awaiting"]["kind"], "sleep");
  EXPECT_NE(task_named(*loop, "sleeper"), nullptr);  // the C tasks beside it
  EXPECT_EQ(audit["warnings"].dump().find("skipped"), std::string::npos) << audit["warnings"];
}

// Two loops, neither in the main thread, ten thousand more tasks, and tasks
// created and finished without pause while dump reads them.
TEST_P(AsyncioTasks, TwoLoopsInThreadsTenThousandTasksAndChurn) {
  START_OR_SKIP({"--loop-thread", "--second-loop", "--tasks", "10000", "--churn", "--no-cycle"});
  ASSERT_EQ(truth_.loops.size(), 2u);
  {
    // Above the default cap: the fixture has 10,000 idle tasks and a few more.
    auto audit = dump({"--max-tasks", "20000"});
    ASSERT_EQ(audit["event_loops"].size(), 2u) << audit["warnings"].dump();
    const auto* first = loop_on(audit, truth_.loops["event_loop"]);
    const auto* second = loop_on(audit, truth_.loops["second_loop"]);
    ASSERT_NE(first, nullptr);
    ASSERT_NE(second, nullptr);
    EXPECT_EQ((*first)["thread_name"], "event_loop");
    EXPECT_EQ((*second)["thread_name"], "second_loop");
    // Each loop has its own tasks, and only those.
    EXPECT_NE(task_named(*second, "second_sleeper"), nullptr);
    EXPECT_NE(task_named(*second, "second_queue_getter"), nullptr);
    EXPECT_EQ(task_named(*first, "second_sleeper"), nullptr);
    EXPECT_EQ(task_named(*second, "sleeper"), nullptr);
    EXPECT_LT((*second)["tasks"].size(), 10u);
    // The named tasks of the busy loop are there, in their awaits.
    for (const char* name : {"sleeper", "queue_getter", "lock_waiter", "gather_parent"})
      EXPECT_NE(task_named(*first, name), nullptr) << name;
    const auto* sleeper = task_named(*first, "sleeper");
    if (sleeper) {
      EXPECT_EQ((*sleeper)["awaiting"]["kind"], "sleep");
    }
    size_t idle = 0;
    for (const auto& t : (*first)["tasks"])
      if (std::string(t["name"]).starts_with("idle_")) {
        ++idle;
        if (idle == 1) {
          EXPECT_EQ(t["awaiting"]["kind"], "event");
          EXPECT_EQ(t["coroutine"].back()["function"], "idle");
        }
      }
    // Tasks come and go while the registry is read: every idle task is
    // there unless the reader says the registry changed under it.
    if (!(*first)["truncated"]) {
      EXPECT_EQ(idle, 10000u);
    }
    EXPECT_GE((*first)["tasks_seen"], 10000);
    EXPECT_TRUE(audit["summary"]["asyncio"]["cycles"].empty());
  }
  // The cap: said, and kept.
  auto capped = dump({"--max-tasks", "100"});
  const auto* first = loop_on(capped, truth_.loops["event_loop"]);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE((*first)["truncated"]);
  EXPECT_EQ((*first)["tasks"].size(), 100u);
  EXPECT_GT((*first)["tasks_seen"], 10000);
  std::string warnings = capped["warnings"].dump();
  EXPECT_NE(warnings.find("--max-tasks"), std::string::npos) << warnings;
  // Turned off: no task is read.
  auto none = dump({"--no-tasks"});
  EXPECT_TRUE(none["event_loops"].empty());
  EXPECT_FALSE(none["summary"]["asyncio"]["read"]);
  EXPECT_TRUE(nothing_stopped(pid()));
}

// CPython 3.14+ ships its own reader of a process's tasks; in the same rootfs,
// on the same process, it must see the tasks and edges dump sees.
TEST_P(AsyncioTasks, NamesAndEdgesAgreeWithCPythonsOwnPstree) {
  const PythonTarget& target = GetParam();
  if (target.version < "3.14")
    GTEST_SKIP() << "python -m asyncio pstree exists from CPython 3.14 on";
  START_OR_SKIP({"--no-cycle"});
  std::string why;
  std::string rootfs;
  if (target.container) {
    auto fs = sid_rootfs(&why);
    if (!fs) GTEST_SKIP() << why;
    rootfs = *fs;
  }
  // The oracle runs in the target's own mount and PID namespaces, with a
  // /proc of that namespace, chrooted to the same root: the fixture is PID 1.
  std::vector<std::string> argv;
  if (target.container)
    argv = {"/usr/bin/nsenter",
            "--target",
            std::to_string(pid()),
            "--mount",
            "--pid",
            "--",
            "/bin/sh",
            "-c",
            "mount -t proc proc \"$1/proc\" && exec chroot \"$1\" \"$2\" -m asyncio pstree 1",
            "sh",
            rootfs,
            "python" + target.version};
  else
    argv = {py_->interpreter(), "-m", "asyncio", "pstree", std::to_string(pid())};
  RunResult oracle = run(argv);
  ASSERT_EQ(oracle.exit_code, 0) << oracle.out << oracle.err;
  // "└── (T) name": a task; its parent is the nearest task line above it at a
  // smaller depth (coroutine lines sit in between).
  std::set<std::string> oracle_names;
  std::set<std::pair<std::string, std::string>> oracle_edges;  // (task, awaited by)
  std::vector<std::pair<size_t, std::string>> open;            // depth, task name
  std::istringstream lines(oracle.out);
  for (std::string line; std::getline(lines, line);) {
    auto mark = line.find("(T) ");
    if (mark == std::string::npos) continue;
    std::string name = line.substr(mark + 4);
    while (!open.empty() && open.back().first >= mark) open.pop_back();
    if (!open.empty()) oracle_edges.insert({name, open.back().second});
    open.push_back({mark, name});
    oracle_names.insert(name);
  }
  ASSERT_GE(oracle_names.size(), 10u) << oracle.out;

  auto audit = dump();
  std::set<std::string> names;
  std::set<std::pair<std::string, std::string>> edges;
  for (const auto& loop : audit["event_loops"])
    for (const auto& t : loop["tasks"]) {
      if (t["state"] != "pending" && t["state"] != "running") continue;
      names.insert(t["name"]);
      for (const auto& by : t["awaited_by"]) edges.insert({t["name"], name_of(loop, by)});
    }
  EXPECT_EQ(names, oracle_names) << oracle.out;
  EXPECT_EQ(edges, oracle_edges) << oracle.out;
}

// uvloop's loop keeps its ready queue in C: out of scope, and said so; the
// tasks (asyncio's own) are still read.
TEST(AsyncioTasksUvloop, IsSaidUnsupportedAndItsTasksAreStillRead) {
  RunResult probe = run({"/usr/bin/python3.11", "-c", "import uvloop"});
  if (probe.exit_code != 0)
    GTEST_SKIP() << "uvloop is missing for /usr/bin/python3.11 (Debian package python3-uvloop)";
  Child py({"/usr/bin/python3.11", kFixture, "--uvloop"});
  auto ready = py.wait_for("ready", std::chrono::seconds(60));
  ASSERT_TRUE(ready) << "the asyncio fixture did not start on uvloop";
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(py.pid()), "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto audit = nlohmann::json::parse(r.out);
  ASSERT_EQ(audit["event_loops"].size(), 1u);
  const auto& loop = audit["event_loops"][0];
  EXPECT_EQ(loop["type"], "uvloop.Loop");
  EXPECT_TRUE(loop["ready_callbacks"].is_null());
  std::set<std::string> names;
  for (const auto& t : loop["tasks"]) names.insert(t["name"]);
  EXPECT_TRUE(names.count("sleeper") && names.count("queue_getter")) << loop.dump();
  EXPECT_NE(audit["warnings"].dump().find("uvloop is not supported"), std::string::npos)
      << audit["warnings"];
  EXPECT_TRUE(nothing_stopped(py.pid()));
}

INSTANTIATE_TEST_SUITE_P(Versions, AsyncioTasks, ::testing::ValuesIn(python_targets()),
                         [](const auto& info) { return info.param.name(); });

}  // namespace
}  // namespace stackaudit::test
