// asyncio tasks (issue 12) as dump shows them, from hand-made snapshots: the
// audit JSON's event_loops and summary.asyncio, and the text report's task
// trees, groups, await cycles and caps.
#include <gtest/gtest.h>

#include <algorithm>

#include "agent/audit_json.h"
#include "agent/task_report.h"
#include "agent/text_report.h"
#include "agent/tree_report.h"

namespace stackaudit {
namespace {

Frame py(const std::string& function, const std::string& file, int line) {
  Frame f;
  f.kind = Frame::Kind::kPython;
  f.function = function;
  f.module = file.substr(file.rfind('/') + 1, file.rfind('.') - file.rfind('/') - 1);
  f.file = file;
  f.line = line;
  return f;
}

AsyncTask task(const std::string& id, const std::string& name, const std::string& kind,
               const std::string& detail, std::vector<Frame> coroutine) {
  AsyncTask t;
  t.id = id;
  t.name = name;
  t.state = "pending";
  t.awaiting.kind = kind;
  t.awaiting.detail = detail;
  t.coroutine = std::move(coroutine);
  return t;
}

void edge(EventLoop& loop, const std::string& waiter, const std::string& awaited) {
  for (AsyncTask& t : loop.tasks) {
    if (t.id == waiter) t.awaits.push_back(awaited);
    if (t.id == awaited) t.awaited_by.push_back(waiter);
  }
}

// One loop as a service after its cutover might have it: a gather, a
// sleeper, a stream reader, an executor job, an await cycle, 500 workers on a
// queue; and a second loop, blocked, whose tasks were cut at the cap.
Snapshot service() {
  Snapshot s;
  s.target.pid = 1234;
  s.target.comm = "python3";
  s.target.runtime_kind = "cpython";
  s.target.runtime_version = "3.11.2";
  Thread main;
  main.tid = 1234;
  main.name = "python3";
  main.state = "sleeping";
  main.captured = "nonstop";
  main.syscall = SyscallInfo{};
  main.syscall->nr = 232;
  main.syscall->name = "epoll_wait";
  s.threads = {main};

  EventLoop loop;
  loop.id = "0x7f0000000100";
  loop.type = "_UnixSelectorEventLoop";
  loop.tid = 1234;
  loop.thread_name = "MainThread";
  loop.ready_callbacks = 2;
  Frame queue_get = py("Queue.get", "/usr/lib/python3.11/asyncio/queues.py", 158);
  Frame sleep = py("sleep", "/usr/lib/python3.11/asyncio/tasks.py", 649);
  loop.tasks.push_back(task("0xa1", "gather_parent", "gather", "2 tasks",
                            {py("parent", "/srv/app.py", 50), py("main", "/srv/app.py", 60)}));
  loop.tasks.push_back(task("0xa2", "gather_child_1", "sleep", "3599.2 s left",
                            {sleep, py("child", "/srv/app.py", 20)}));
  loop.tasks.back().awaiting.seconds_left = 3599.2;
  loop.tasks.push_back(task("0xa3", "gather_child_2", "sleep", "12.5 s left",
                            {sleep, py("child", "/srv/app.py", 21)}));
  loop.tasks.back().awaiting.seconds_left = 12.5;
  loop.tasks.push_back(task("0xb1", "cycle_a", "task", "cycle_b", {py("a", "/srv/app.py", 30)}));
  loop.tasks.push_back(task("0xb2", "cycle_b", "task", "cycle_a", {py("b", "/srv/app.py", 35)}));
  loop.tasks.push_back(task("0xc1", "reader", "stream",
                            "tcp 127.0.0.1:43210 -> 127.0.0.1:8080 ESTABLISHED",
                            {py("StreamReader.read", "/usr/lib/python3.11/asyncio/streams.py", 689),
                             py("read_reply", "/srv/app.py", 70)}));
  loop.tasks.back().awaiting.fd = FdInfo{7,
                                         "socket",
                                         "socket:[4242]",
                                         "tcp 127.0.0.1:43210 -> 127.0.0.1:8080 ESTABLISHED",
                                         std::nullopt,
                                         ""};
  loop.tasks.push_back(
      task("0xc2", "offload", "executor", "run_in_executor", {py("offload", "/srv/app.py", 80)}));
  loop.tasks.back().awaiting.executor_tid = 1240;
  for (int i = 0; i < 500; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "0xd%04d", i);
    loop.tasks.push_back(task(id, "worker-" + std::to_string(i), "queue", "queue empty",
                              {queue_get, py("worker", "/srv/svc.py", 40)}));
  }
  edge(loop, "0xa1", "0xa2");
  edge(loop, "0xa1", "0xa3");
  edge(loop, "0xb1", "0xb2");
  edge(loop, "0xb2", "0xb1");
  loop.tasks_seen = loop.tasks.size();

  EventLoop blocked;
  blocked.id = "0x7f0000000200";
  blocked.type = "_UnixSelectorEventLoop";
  blocked.tid = 1300;
  blocked.thread_name = "loop-2";
  blocked.ready_callbacks = -1;
  blocked.blocked = true;
  blocked.blocked_in = py("bad", "/srv/handlers.py", 12);
  blocked.current_task = "0xe1";
  blocked.tasks_seen = 12000;
  blocked.truncated = true;
  blocked.tasks.push_back(
      task("0xe1", "handler", "running", "", {py("bad", "/srv/handlers.py", 12)}));
  blocked.tasks.back().state = "running";
  blocked.tasks.push_back(task("0xe2", "idle_1", "sleep", "1.0 s left", {sleep}));
  blocked.tasks.push_back(task("0xe3", "idle_2", "none", "", {py("later", "/srv/x.py", 3)}));

  s.event_loops = {loop, blocked};
  AsyncioSummary& a = s.summary.asyncio;
  a.read = true;
  for (const EventLoop& l : s.event_loops)
    for (const AsyncTask& t : l.tasks) {
      ++a.tasks;
      ++a.by_awaiting[t.awaiting.kind];
    }
  a.cycles = {AwaitCycle{{"0xb1", "0xb2"}, {"cycle_a", "cycle_b"}}};
  s.summary.threads = 1;
  return s;
}

std::string streamed(const Snapshot& s) {
  std::string out;
  write_audit_json(s, [&](std::string_view piece) { out += piece; });
  return out;
}

size_t count_lines(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

TEST(TaskJson, LoopsAndTheirTasks) {
  auto j = audit_json(service());
  ASSERT_EQ(j["event_loops"].size(), 2u);
  const auto& loop = j["event_loops"][0];
  EXPECT_EQ(loop["id"], "0x7f0000000100");
  EXPECT_EQ(loop["type"], "_UnixSelectorEventLoop");
  EXPECT_EQ(loop["tid"], 1234);
  EXPECT_EQ(loop["thread_name"], "MainThread");
  EXPECT_EQ(loop["ready_callbacks"], 2);
  EXPECT_TRUE(loop["current_task"].is_null());
  EXPECT_EQ(loop["blocked"], false);
  EXPECT_TRUE(loop["blocked_in"].is_null());
  EXPECT_EQ(loop["tasks_seen"], 507);
  EXPECT_EQ(loop["truncated"], false);
  ASSERT_EQ(loop["tasks"].size(), 507u);

  const auto& parent = loop["tasks"][0];
  EXPECT_EQ(parent["id"], "0xa1");
  EXPECT_EQ(parent["name"], "gather_parent");
  EXPECT_EQ(parent["state"], "pending");
  EXPECT_EQ(parent["awaiting"]["kind"], "gather");
  EXPECT_EQ(parent["awaits"], nlohmann::json({"0xa2", "0xa3"}));
  EXPECT_EQ(parent["awaited_by"], nlohmann::json::array());
  // Innermost first, each as a thread's frame is written.
  EXPECT_EQ(parent["coroutine"][0], frame_json(py("parent", "/srv/app.py", 50)));
  EXPECT_EQ(parent["coroutine"][0]["kind"], "python");
  EXPECT_EQ(parent["coroutine"][1]["function"], "main");
  EXPECT_EQ(parent["coroutine_truncated"], false);

  const auto& child = loop["tasks"][1];
  EXPECT_EQ(child["awaited_by"], nlohmann::json({"0xa1"}));
  EXPECT_EQ(child["awaiting"]["kind"], "sleep");
  EXPECT_EQ(child["awaiting"]["detail"], "3599.2 s left");
  EXPECT_DOUBLE_EQ(child["awaiting"]["seconds_left"].get<double>(), 3599.2);
  EXPECT_TRUE(child["awaiting"]["fd"].is_null());
  EXPECT_TRUE(child["awaiting"]["executor_tid"].is_null());

  const auto& reader = loop["tasks"][5];
  EXPECT_EQ(reader["name"], "reader");
  EXPECT_TRUE(reader["awaiting"]["seconds_left"].is_null());
  // The fd object of a thread's syscall, field for field.
  EXPECT_EQ(reader["awaiting"]["fd"],
            nlohmann::json({{"fd", 7},
                            {"kind", "socket"},
                            {"detail", "tcp 127.0.0.1:43210 -> 127.0.0.1:8080 ESTABLISHED"},
                            {"target", "socket:[4242]"},
                            {"offset", nullptr},
                            {"other_end", ""}}));
  EXPECT_EQ(loop["tasks"][6]["awaiting"]["executor_tid"], 1240);

  const auto& blocked = j["event_loops"][1];
  EXPECT_TRUE(blocked["ready_callbacks"].is_null());  // -1: unreadable
  EXPECT_EQ(blocked["current_task"], "0xe1");
  EXPECT_EQ(blocked["blocked"], true);
  EXPECT_EQ(blocked["blocked_in"]["function"], "bad");
  EXPECT_EQ(blocked["blocked_in"]["line"], 12);
  EXPECT_EQ(blocked["tasks_seen"], 12000);
  EXPECT_EQ(blocked["truncated"], true);
  EXPECT_EQ(blocked["tasks"].size(), 3u);
  EXPECT_EQ(blocked["tasks"][0]["state"], "running");
}

TEST(TaskJson, TheAsyncioSummary) {
  auto j = audit_json(service());
  const auto& a = j["summary"]["asyncio"];
  EXPECT_EQ(a["read"], true);
  EXPECT_EQ(a["tasks"], 510);
  EXPECT_EQ(a["by_awaiting"]["queue"], 500);
  EXPECT_EQ(a["by_awaiting"]["sleep"], 3);
  EXPECT_EQ(a["by_awaiting"]["task"], 2);
  ASSERT_EQ(a["cycles"].size(), 1u);
  EXPECT_EQ(a["cycles"][0]["tasks"],
            nlohmann::json::parse(
                R"([{"id": "0xb1", "name": "cycle_a"}, {"id": "0xb2", "name": "cycle_b"}])"));
}

TEST(TaskJson, NoLoopIsAnEmptyArrayAndALoopWithoutThreadHasNoTid) {
  Snapshot s;
  auto j = audit_json(s);
  EXPECT_EQ(j["event_loops"], nlohmann::json::array());
  EXPECT_EQ(j["summary"]["asyncio"]["read"], false);
  EXPECT_EQ(j["summary"]["asyncio"]["cycles"], nlohmann::json::array());
  EventLoop idle;
  idle.id = "0x10";
  s.event_loops = {idle};
  j = audit_json(s);
  EXPECT_TRUE(j["event_loops"][0]["tid"].is_null());
  EXPECT_EQ(j["event_loops"][0]["tasks"], nlohmann::json::array());
}

TEST(TaskJson, StreamedAsTheWholeDocumentPrints) {
  // dump writes the loops task by task: the very text of the whole document.
  Snapshot s = service();
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.event_loops[0].tasks[0].name = "odd\n  \"tasks\": [] name";
  s.event_loops[1].tasks.clear();  // a loop with no task
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.threads.clear();
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  s.event_loops.clear();
  EXPECT_EQ(streamed(s), audit_json(s).dump(2) + "\n");
  EXPECT_TRUE(nlohmann::json::accept(streamed(service())));
}

TEST(TaskReport, ACycleIsADeadlockNamedBeforeTheTrees) {
  std::string text = text_report(service());
  auto alert = text.find("!!! 1 await cycle among asyncio tasks");
  auto deadlock = text.find("DEADLOCK: await cycle: cycle_a -> cycle_b -> cycle_a\n");
  auto first_loop = text.find("asyncio event loop 0x7f0000000100");
  ASSERT_NE(alert, std::string::npos) << text;
  ASSERT_NE(deadlock, std::string::npos) << text;
  ASSERT_NE(first_loop, std::string::npos) << text;
  EXPECT_LT(alert, text.find("Thread 1234"));
  EXPECT_LT(deadlock, first_loop);
  // Each task's await site.
  EXPECT_NE(text.find("    cycle_a (0xb1) awaits cycle_b at a (app.py:30)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("    cycle_b (0xb2) awaits cycle_a at b (app.py:35)\n"), std::string::npos)
      << text;
  // A cycle has no root, yet its tasks are in the tree.
  auto a =
      text.find("task \"cycle_a\" pending | task: cycle_b [DEADLOCK: await cycle]", first_loop);
  ASSERT_NE(a, std::string::npos) << text;
  auto b = text.find("└── task \"cycle_b\" pending | task: cycle_a [DEADLOCK: await cycle]", a);
  ASSERT_NE(b, std::string::npos) << text;
  EXPECT_NE(text.find("└── task \"cycle_a\" (drawn above: await cycle)", b), std::string::npos)
      << text;
  EXPECT_NE(text.find("  asyncio: 510 tasks in 2 event loops: queue 500, sleep 3, task 2, executor "
                      "1, gather 1, none 1, running 1, stream 1; 1 await cycle (DEADLOCK)\n"),
            std::string::npos)
      << text;
}

TEST(TaskReport, AGatherDrawsItsChildrenUnderIt) {
  std::string text = text_report(service());
  std::string expected =
      "  task \"gather_parent\" pending | gather: 2 tasks\n"
      "  │ main (/srv/app.py:60)\n"
      "  │ parent (/srv/app.py:50)\n"
      "  ├── task \"gather_child_1\" pending | sleep: 3599.2 s left\n"
      "  │     child (/srv/app.py:20)\n"
      "  │     sleep (/usr/lib/python3.11/asyncio/tasks.py:649)\n"
      "  └── task \"gather_child_2\" pending | sleep: 12.5 s left\n"
      "        child (/srv/app.py:21)\n"
      "        sleep (/usr/lib/python3.11/asyncio/tasks.py:649)\n";
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_NE(text.find("task \"reader\" pending | stream: tcp 127.0.0.1:43210 -> 127.0.0.1:8080 "
                      "ESTABLISHED (fd 7)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("task \"offload\" pending | executor: run_in_executor (run by thread 1240)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("asyncio event loop 0x7f0000000100 (_UnixSelectorEventLoop), thread 1234 "
                      "\"MainThread\": 507 tasks, 2 ready callbacks\n"),
            std::string::npos)
      << text;
}

TEST(TaskReport, FiveHundredWorkersOnOneStackAreOneLine) {
  std::string text = text_report(service());
  std::string expected =
      "  500 tasks awaiting queue (queue empty) in worker (svc.py:40), all pending: "
      "\"worker-0\", \"worker-1\", \"worker-2\" and 497 more\n"
      "    worker (/srv/svc.py:40)\n"
      "    Queue.get (/usr/lib/python3.11/asyncio/queues.py:158)\n";
  EXPECT_NE(text.find(expected), std::string::npos) << text;
  EXPECT_EQ(text.find("\"worker-3\""), std::string::npos);
  EXPECT_LT(count_lines(text), 80u) << text;
  EXPECT_EQ(text.find("more tasks not shown"), std::string::npos) << text;
}

TEST(TaskReport, ABlockedLoopAndATruncatedOneSaySo) {
  std::string text = text_report(service());
  auto header = text.find(
      "asyncio event loop 0x7f0000000200 (_UnixSelectorEventLoop), thread 1300 \"loop-2\": 3 "
      "tasks, ready callbacks unknown\n");
  ASSERT_NE(header, std::string::npos) << text;
  EXPECT_NE(text.find("  !!! BLOCKED: its thread is blocked outside the selector in bad "
                      "(/srv/handlers.py:12), running task \"handler\": no other task of this "
                      "loop runs until it returns\n",
                      header),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  read 3 of 12000 tasks; --max-tasks raises the cap\n", header),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("task \"handler\" running | running its step now [the loop's current task]",
                      header),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("task \"idle_2\" pending | ready to run\n", header), std::string::npos)
      << text;
}

TEST(TaskReport, TenThousandDistinctTasksAreCut) {
  Snapshot s = service();
  EventLoop& loop = s.event_loops[0];
  loop.tasks.clear();
  for (int i = 0; i < 10000; ++i)  // no two alike: each at a line of its own
    loop.tasks.push_back(task("0x" + std::to_string(i), "t" + std::to_string(i), "sleep", "",
                              {py("step", "/srv/gen.py", i + 1)}));
  s.summary.asyncio.cycles.clear();
  TaskTreeLimits limits;
  std::string text = asyncio_report(s, limits);
  auto more = text.find("  ... 9800 more tasks not shown (dump --format json lists every task)\n");
  EXPECT_NE(more, std::string::npos) << text.substr(text.size() - 2000);
  EXPECT_LT(count_lines(text), 2 * limits.max_lines + 50);
}

TEST(TaskReport, ALongAwaitChainIsCutAtTheDepthLimit) {
  Snapshot s;
  EventLoop loop;
  loop.id = "0x1";
  for (int i = 0; i < 5000; ++i)
    loop.tasks.push_back(task("0x" + std::to_string(i), "link" + std::to_string(i), "task", "",
                              {py("hop", "/srv/chain.py", 9)}));
  for (size_t i = 0; i + 1 < loop.tasks.size(); ++i) {
    loop.tasks[i].awaits = {loop.tasks[i + 1].id};
    loop.tasks[i + 1].awaited_by = {loop.tasks[i].id};
  }
  s.event_loops = {loop};
  TaskTreeLimits limits;
  std::string text = asyncio_report(s, limits);
  EXPECT_NE(text.find("└── ... 1 awaited task nested too deep to draw\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("task \"link" + std::to_string(limits.max_depth - 1) + "\""),
            std::string::npos);
  EXPECT_EQ(text.find("task \"link" + std::to_string(limits.max_depth) + "\""), std::string::npos);
  EXPECT_NE(text.find("  ... " + std::to_string(5000 - limits.max_depth) + " more tasks not shown"),
            std::string::npos)
      << text;
}

TEST(TaskReport, ControlBytesInANameAreEscaped) {
  Snapshot s = service();
  s.event_loops[0].tasks[0].name = "evil\x1b[2J\nx";
  std::string text = text_report(s);
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_NE(text.find("task \"evil\\x1b[2J\\x0ax\" pending"), std::string::npos) << text;
}

TEST(TaskReport, NoLoopNoSection) {
  Snapshot s;
  s.target.runtime_kind = "cpython";
  std::string text = text_report(s);
  EXPECT_EQ(text.find("asyncio tasks"), std::string::npos);
  EXPECT_EQ(text.find("asyncio:"), std::string::npos);
  s.summary.asyncio.read = true;
  EXPECT_NE(text_report(s).find("  asyncio: 0 tasks in 0 event loops\n"), std::string::npos);
}

TEST(TaskTree, EachProcessOfATreeHasItsLoops) {
  TreeAudit tree;
  tree.processes.push_back(
      {TreeProcess{1234, 1, 0, "python3", {"python3", "app.py"}}, service(), ""});
  tree.processes.push_back({TreeProcess{1240, 1234, 1, "python3", {}}, std::nullopt, "exited"});
  auto j = tree_audit_json(tree);
  EXPECT_EQ(j["processes"][0]["event_loops"][0]["tasks"][0]["name"], "gather_parent");
  EXPECT_EQ(j["processes"][0]["summary"]["asyncio"]["tasks"], 510);
  std::string out;
  write_tree_audit_json(tree, [&](std::string_view piece) { out += piece; });
  // The same document (written with "process_tree" first, one thread and
  // one task at a time).
  EXPECT_TRUE(nlohmann::json::parse(out) == j);
  std::string text = tree_text_report(tree);
  EXPECT_NE(text.find("DEADLOCK: await cycle: cycle_a -> cycle_b -> cycle_a"), std::string::npos);
  EXPECT_NE(text.find("0 idle); 510 asyncio tasks (1 await cycle(s): DEADLOCK)\n"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace stackaudit
