// `stackaudit agent` on a real asyncio service (tests/targets/asyncio_tasks.py
// under Debian's python3.11): its tasks by what they await, each loop's ready
// callbacks and blocks, the await cycle counted once, the series of a process
// that is gone removed, the run window's task stacks, and --no-tasks.
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>

#include "tests/python_targets.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

namespace fs = std::filesystem;

const PythonTarget kPython311{"3.11", false};

// The fixture under python3.11, started and settled ("ready PID"); null with
// *missing saying why when it cannot run here.
std::unique_ptr<PythonProcess> start_fixture(std::string* missing,
                                             const std::vector<std::string>& args = {}) {
  auto p = PythonProcess::start(kPython311, ASYNCIO_TASKS_SCRIPT, missing, args);
  if (p && !p->io().wait_for("ready", std::chrono::seconds(30))) {
    *missing = "";  // started but never ready: a failure, not a skip
    p.reset();
  }
  return p;
}

std::string audit_file(const char* name) {
  std::string out =
      testing::TempDir() + "agent-asyncio-" + name + "-" + std::to_string(getpid()) + ".json";
  fs::remove(out);
  return out;
}

nlohmann::json read_json(const std::string& file) {
  std::ifstream in(file);
  if (!in.good()) return nullptr;
  return nlohmann::json::parse(in, nullptr, false);
}

double rounds(Agent& agent) {
  return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0);
}

// A scrape taken after two more rounds have begun: the round that was being
// exported when a condition was seen has been exported whole (a scrape is not
// atomic with a round's updates).
std::string scrape_after_two_rounds(Agent& agent) {
  double now = rounds(agent);
  EXPECT_TRUE(eventually([&] { return rounds(agent) >= now + 2; }, std::chrono::seconds(20)));
  return agent.scrape();
}

std::string tasks_series(const std::string& kind, const std::string& pid = "") {
  return "stackaudit_asyncio_tasks{awaiting=\"" + kind + "\"" +
         (pid.empty() ? "" : ",pid=\"" + pid + "\"") + "}";
}

// The fixture on 3.11 (no eager task), as the collector classifies its tasks:
// sleeper, the two gather and the two TaskGroup children, and agen_consumer
// (its async generator sleeps) in asyncio.sleep; lock_holder waits on an
// Event; taskgroup_parent, cycle_a and cycle_b await tasks; main awaits a bare
// future. With --second-loop: second_sleeper, second_queue_getter and
// second_main besides.
const std::map<std::string, double> kMainLoopTasks = {{"sleep", 6},  {"queue", 1},  {"lock", 1},
                                                      {"event", 1},  {"stream", 1}, {"executor", 1},
                                                      {"gather", 1}, {"task", 3},   {"future", 1}};

TEST(AgentAsyncio, TasksLoopsAndTheAwaitCycleReachMetricsAndTheWindow) {
  std::string missing;
  auto fixture = start_fixture(&missing, {"--second-loop"});
  if (!fixture && !missing.empty()) GTEST_SKIP() << missing;
  ASSERT_TRUE(fixture) << "asyncio_tasks.py did not print ready";
  std::string out = audit_file("main");
  Agent agent(
      {"--pid", std::to_string(fixture->pid()), "--interval", "200ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  ASSERT_TRUE(eventually(
      [&] {
        scrape = agent.scrape();
        return metric_value(scrape, "stackaudit_asyncio_await_cycles_total").has_value();
      },
      std::chrono::seconds(20)))
      << scrape;
  scrape = scrape_after_two_rounds(agent);

  // Every awaiting kind has a series (0 included); the fixture's are exact.
  std::map<std::string, double> want = kMainLoopTasks;
  want["sleep"] += 1;   // second_sleeper
  want["queue"] += 1;   // second_queue_getter
  want["future"] += 1;  // second_main
  for (const char* kind :
       {"sleep", "queue", "lock", "event", "condition", "semaphore", "stream", "subprocess",
        "executor", "future", "task", "gather", "running", "other", "none"}) {
    SCOPED_TRACE(kind);
    double expected = want.count(kind) ? want.at(kind) : 0;
    EXPECT_EQ(metric_value(scrape, tasks_series(kind)), expected) << scrape;
  }
  // Each loop by its thread's name: both idle in their selectors, nothing
  // ready, never blocked.
  for (const char* loop : {"event_loop", "second_loop"}) {
    SCOPED_TRACE(loop);
    std::string labels = std::string("{loop_thread=\"") + loop + "\"}";
    EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_ready_callbacks" + labels), 0.0);
    EXPECT_EQ(metric_value(scrape, "stackaudit_event_loop_blocked_seconds" + labels), 0.0);
    EXPECT_EQ(metric_value(scrape, "stackaudit_event_loop_blocked_seconds_max" + labels), 0.0);
  }
  EXPECT_EQ(scrape.find("loop_thread=\"other\""), std::string::npos);
  // cycle_a and cycle_b: one cycle, counted once however many rounds see it.
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles_total"), 1.0);
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles"), 1.0);
  double seen = rounds(agent);
  ASSERT_TRUE(eventually([&] { return rounds(agent) >= seen + 5; }, std::chrono::seconds(20)));
  scrape = agent.scrape();
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles_total"), 1.0);
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles"), 1.0);

  // promtool accepts the scrape; no label carries a tid or an address.
  std::string file = testing::TempDir() + "asyncio-scrape-" + std::to_string(getpid()) + ".txt";
  std::ofstream(file) << scrape;
  RunResult r = run({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;  // setup.sh installs promtool (prometheus)
  EXPECT_EQ(r.out + r.err, "");
  fs::remove(file);
  // Loops are labelled by thread name, never by tid (no run of 3 digits).
  for (size_t at = scrape.find("loop_thread=\""); at != std::string::npos;
       at = scrape.find("loop_thread=\"", at + 1)) {
    std::string label = scrape.substr(at, scrape.find('"', at + 13) - at);
    size_t run = 0, longest = 0;
    for (char c : label) longest = std::max(longest, run = std::isdigit(c) ? run + 1 : 0);
    EXPECT_LT(longest, 3u) << label;
  }
  EXPECT_EQ(scrape.find("0x"), std::string::npos);
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(nothing_stopped(fixture->pid()));

  // The run's window: task stacks, loops, the cycle.
  const nlohmann::json audit = read_json(out);
  ASSERT_TRUE(audit.is_object());
  const nlohmann::json& a = audit["window"]["asyncio"];
  ASSERT_TRUE(a.is_object()) << audit["window"];
  const size_t n = a["rounds"];
  EXPECT_EQ(n, audit["window"]["rounds"]);
  EXPECT_EQ(a["tasks"]["min"], 19.0);
  EXPECT_EQ(a["tasks"]["max"], 19.0);
  EXPECT_EQ(a["task_samples"], 19 * n);
  EXPECT_EQ(a["by_awaiting"]["queue"]["samples"], 2 * n);
  EXPECT_EQ(a["by_awaiting"]["sleep"]["samples"], 7 * n);
  // Tasks grouped by coroutine stack and what they await: the two gather
  // children share one stack, so do sleeper and second_sleeper.
  auto stack_at = [&](const std::string& tag) -> const nlohmann::json* {
    for (const auto& s : a["top_stacks"])
      if (s["site"].get<std::string>().ends_with(
              "(asyncio_tasks.py:" + std::to_string(tagged_line(ASYNCIO_TASKS_SCRIPT, tag)) + ")"))
        return &s;
    return nullptr;
  };
  const nlohmann::json* sleepers = stack_at("sleep");
  ASSERT_NE(sleepers, nullptr) << a["top_stacks"].dump(2);
  EXPECT_EQ((*sleepers)["awaiting"], "sleep");
  EXPECT_TRUE((*sleepers)["site"].get<std::string>().starts_with("sleeper ("));
  EXPECT_EQ((*sleepers)["max_tasks"], 2);
  EXPECT_EQ((*sleepers)["samples"], 2 * n);
  EXPECT_NE((*sleepers)["stack"].get<std::string>().find("sleep (tasks.py:"), std::string::npos)
      << (*sleepers)["stack"];
  const nlohmann::json* children = stack_at("gather_child");
  ASSERT_NE(children, nullptr) << a["top_stacks"].dump(2);
  EXPECT_EQ((*children)["max_tasks"], 2);
  EXPECT_TRUE((*children)["example"] == "gather_child_1" ||
              (*children)["example"] == "gather_child_2");
  const nlohmann::json* queue = stack_at("queue_get");
  ASSERT_NE(queue, nullptr) << a["top_stacks"].dump(2);
  EXPECT_EQ((*queue)["awaiting"], "queue");
  EXPECT_EQ((*queue)["site"], "queue_getter (asyncio_tasks.py:" +
                                  std::to_string(tagged_line(ASYNCIO_TASKS_SCRIPT, "queue_get")) +
                                  ")");
  // The top stacks are the most frequent first.
  for (size_t i = 1; i < a["top_stacks"].size(); ++i)
    EXPECT_GE(a["top_stacks"][i - 1]["samples"], a["top_stacks"][i]["samples"]);

  ASSERT_EQ(a["loops"].size(), 2u) << a["loops"];
  for (const auto& l : a["loops"]) {
    EXPECT_EQ(l["pid"], fixture->pid());
    EXPECT_TRUE(l["thread"] == "event_loop" || l["thread"] == "second_loop") << l;
    EXPECT_EQ(l["rounds"], n);
    EXPECT_EQ(l["ready_callbacks"]["max"], 0.0);
    EXPECT_EQ(l["blocked_rounds"], 0);
    EXPECT_EQ(l["longest_block_seconds"], 0.0);
    EXPECT_FALSE(l["gone"]);
  }
  EXPECT_EQ(a["longest_block_seconds"], 0.0);
  ASSERT_EQ(a["cycles"].size(), 1u) << a["cycles"];
  std::vector<std::string> names = a["cycles"][0]["tasks"];
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"cycle_a", "cycle_b"}));
  EXPECT_EQ(a["cycles"][0]["rounds"], n);
  EXPECT_EQ(a["cycles"][0]["pid"], fixture->pid());
}

TEST(AgentAsyncio, ALoopBlockedOutsideItsSelectorIsTimedInRounds) {
  std::string missing;
  auto fixture = start_fixture(&missing, {"--block"});
  if (!fixture && !missing.empty()) GTEST_SKIP() << missing;
  ASSERT_TRUE(fixture) << "asyncio_tasks.py did not print ready";
  std::string out = audit_file("block");
  Agent agent(
      {"--pid", std::to_string(fixture->pid()), "--interval", "200ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  // blocker calls time.sleep() on the loop: consecutive rounds see the loop
  // blocked, 0.2 s each.
  const std::string now = "stackaudit_event_loop_blocked_seconds{loop_thread=\"event_loop\"}";
  const std::string max = "stackaudit_event_loop_blocked_seconds_max{loop_thread=\"event_loop\"}";
  std::string scrape;
  ASSERT_TRUE(eventually(
      [&] {
        scrape = agent.scrape();
        return metric_value(scrape, now).value_or(0) >= 1.0;
      },
      std::chrono::seconds(30)))
      << scrape;
  // The block goes on: it is the longest (the longest is set first, so a
  // scrape between the two sees it ahead, never behind).
  double blocked = *metric_value(scrape, now);
  double longest = metric_value(scrape, max).value_or(-1);
  EXPECT_GE(longest, blocked);
  for (double v : {blocked, longest})
    EXPECT_NEAR(v / 0.2, std::round(v / 0.2), 1e-6) << v;  // whole rounds
  // The loop does not run: the cycle is still one, and blocker runs its step.
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles_total"), 1.0);
  EXPECT_EQ(metric_value(scrape, tasks_series("running")), 1.0) << scrape;
  EXPECT_EQ(agent.stop(), 0);

  const nlohmann::json audit = read_json(out);
  ASSERT_TRUE(audit.is_object());
  const nlohmann::json& a = audit["window"]["asyncio"];
  ASSERT_TRUE(a.is_object());
  ASSERT_EQ(a["loops"].size(), 1u) << a["loops"];
  const auto& loop = a["loops"][0];
  EXPECT_EQ(loop["thread"], "event_loop");
  EXPECT_GE(loop["longest_block_seconds"], blocked);
  EXPECT_EQ(a["longest_block_seconds"], loop["longest_block_seconds"]);
  // Blocked from some round to the last, without a break: the longest block
  // is those rounds.
  EXPECT_GT(loop["blocked_rounds"], 0);
  EXPECT_NEAR(loop["longest_block_seconds"].get<double>(),
              loop["blocked_rounds"].get<double>() * 0.2, 1e-6);
}

TEST(AgentAsyncio, TreeModeLabelsByPidAndRemovesTheSeriesOfAProcessGone) {
  std::string missing;
  // Two fixtures told apart from the rest of the machine by their number of
  // idle tasks (idle_0 ..), which --match selects.
  const int idle = 20 + getpid() % 50;
  const std::vector<std::string> args = {"--tasks", std::to_string(idle)};
  auto first = start_fixture(&missing, args);
  if (!first && !missing.empty()) GTEST_SKIP() << missing;
  ASSERT_TRUE(first) << "asyncio_tasks.py did not print ready";
  auto second = start_fixture(&missing, args);
  ASSERT_TRUE(second) << "asyncio_tasks.py did not print ready";
  Agent agent({"--match", "asyncio_tasks\\.py --tasks " + std::to_string(idle) + "$", "--interval",
               "200ms"});
  ASSERT_TRUE(agent.serving());
  const std::string a = std::to_string(first->pid()), b = std::to_string(second->pid());
  auto loop = [](const std::string& pid) {
    return "stackaudit_asyncio_ready_callbacks{loop_thread=\"event_loop\",pid=\"" + pid + "\"}";
  };
  std::string scrape;
  ASSERT_TRUE(eventually(
      [&] {
        scrape = agent.scrape();
        return metric_value(scrape, tasks_series("event", a)).has_value() &&
               metric_value(scrape, tasks_series("event", b)).has_value();
      },
      std::chrono::seconds(30)))
      << scrape;
  scrape = scrape_after_two_rounds(agent);
  for (const std::string& pid : {a, b}) {
    SCOPED_TRACE(pid);
    EXPECT_EQ(metric_value(scrape, tasks_series("event", pid)), 1.0 + idle);  // + lock_holder
    EXPECT_EQ(metric_value(scrape, tasks_series("queue", pid)), 1.0);
    EXPECT_EQ(metric_value(scrape, loop(pid)), 0.0);
  }
  // Two processes, a cycle each.
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles_total"), 2.0);
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles"), 2.0);

  pid_t gone = first->pid();
  first.reset();  // SIGKILL
  ASSERT_TRUE(eventually(
      [&] {
        scrape = agent.scrape();
        return metric_value(scrape, "stackaudit_target_processes") == 1.0 &&
               !metric_value(scrape, tasks_series("event", a)).has_value();
      },
      std::chrono::seconds(20)))
      << scrape;
  scrape = scrape_after_two_rounds(agent);
  EXPECT_EQ(scrape.find("pid=\"" + std::to_string(gone) + "\""), std::string::npos) << scrape;
  EXPECT_EQ(metric_value(scrape, tasks_series("event", b)), 1.0 + idle);
  EXPECT_EQ(metric_value(scrape, loop(b)), 0.0);
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles_total"), 2.0);  // a counter
  EXPECT_EQ(metric_value(scrape, "stackaudit_asyncio_await_cycles"), 1.0);
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentAsyncio, NoTasksLeavesTasksOut) {
  std::string missing;
  auto fixture = start_fixture(&missing);
  if (!fixture && !missing.empty()) GTEST_SKIP() << missing;
  ASSERT_TRUE(fixture) << "asyncio_tasks.py did not print ready";
  std::string out = audit_file("notasks");
  Agent agent({"--pid", std::to_string(fixture->pid()), "--interval", "200ms", "--no-tasks",
               "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually([&] { return rounds(agent) >= 3; }, std::chrono::seconds(20)));
  std::string scrape = agent.scrape();
  // The loop's thread is still seen (from its stack); its tasks are not read.
  EXPECT_EQ(metric_value(scrape, "stackaudit_event_loop_threads"), 1.0) << scrape;
  for (const char* name : {"stackaudit_asyncio_", "stackaudit_event_loop_blocked_seconds"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(scrape.find(name), std::string::npos) << scrape;
  }
  EXPECT_EQ(agent.stop(), 0);
  const nlohmann::json audit = read_json(out);
  ASSERT_TRUE(audit.is_object());
  EXPECT_TRUE(audit["window"].contains("asyncio"));
  EXPECT_TRUE(audit["window"]["asyncio"].is_null());
  EXPECT_EQ(audit["event_loops"], nlohmann::json::array());
  EXPECT_FALSE(audit["summary"]["asyncio"]["read"]);
}

}  // namespace
}  // namespace stackaudit::test
