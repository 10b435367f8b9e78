// Flame-graph output: `dump --format folded|speedscope`, the agent's
// --folded, --speedscope and /folded, on the park_threads fixture (threads
// parked in known primitives). The speedscope files are checked against the
// facts of speedscope's published file format (its schema,
// https://www.speedscope.app/file-format-schema.json, is generated from
// src/lib/file-format-spec.ts), checked here by hand.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "agent/flame.h"
#include "agent/speedscope.h"
#include "agent/version.h"
#include "tests/support.h"

namespace fs = std::filesystem;

namespace stackaudit::test {
namespace {

using nlohmann::json;

const char* const kForkSleepersBin = FORK_SLEEPERS_BIN;

// ---------------------------------------------------------------------------
// Collapsed stacks as flamegraph.pl, inferno and speedscope read them: one
// stack per line, frames separated by ';', a space, then a whole count.

struct FoldedLine {
  std::vector<std::string> frames;  // root first
  uint64_t count = 0;
};

std::vector<FoldedLine> parse_folded(const std::string& text) {
  std::vector<FoldedLine> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    size_t space = line.rfind(' ');
    std::string stack = space == std::string::npos ? "" : line.substr(0, space);
    std::string count = space == std::string::npos ? "" : line.substr(space + 1);
    if (stack.empty() || stack.back() == ' ' || count.empty() ||
        count.find_first_not_of("0123456789") != std::string::npos) {
      ADD_FAILURE() << "not 'stack COUNT': '" << line << "'";
      continue;
    }
    FoldedLine f;
    f.count = std::stoull(count);
    size_t start = 0;
    for (;;) {
      size_t semi = stack.find(';', start);
      f.frames.push_back(stack.substr(start, semi - start));
      if (semi == std::string::npos) break;
      start = semi + 1;
    }
    for (const std::string& frame : f.frames) EXPECT_FALSE(frame.empty()) << "in '" << line << "'";
    EXPECT_GT(f.count, 0u) << line;
    lines.push_back(std::move(f));
  }
  EXPECT_TRUE(text.empty() || text.back() == '\n');
  return lines;
}

uint64_t total(const std::vector<FoldedLine>& lines) {
  uint64_t n = 0;
  for (const FoldedLine& l : lines) n += l.count;
  return n;
}

std::map<std::string, uint64_t> by_root(const std::vector<FoldedLine>& lines) {
  std::map<std::string, uint64_t> out;
  for (const FoldedLine& l : lines) out[l.frames.front()] += l.count;
  return out;
}

// The root frame a thread of an audit JSON belongs under.
std::string expected_root(const json& thread) {
  const json& b = thread["blocking"];
  if (b.is_null()) return "running";
  return (b["idle"].get<bool>() ? "idle: " : "") + b["category"].get<std::string>();
}

// ---------------------------------------------------------------------------
// speedscope's file format, from its spec (FileFormat.File): every problem
// found, empty when the file is valid.

class SpeedscopeCheck {
 public:
  std::vector<std::string> problems(const json& file) {
    problems_.clear();
    if (!file.is_object()) return fail("the file is not a JSON object"), problems_;
    allow_only(file, {"$schema", "shared", "profiles", "name", "activeProfileIndex", "exporter"},
               "file");
    if (file.value("$schema", "") != "https://www.speedscope.app/file-format-schema.json")
      fail("$schema is not speedscope's schema URL");
    size_t frames = 0;
    if (!file.contains("shared") || !file["shared"].is_object() ||
        !file["shared"].contains("frames") || !file["shared"]["frames"].is_array()) {
      fail("shared.frames is missing or not an array");
    } else {
      allow_only(file["shared"], {"frames"}, "shared");
      frames = file["shared"]["frames"].size();
      for (const json& f : file["shared"]["frames"]) check_frame(f);
    }
    if (!file.contains("profiles") || !file["profiles"].is_array())
      return fail("profiles is missing or not an array"), problems_;
    for (const json& p : file["profiles"]) check_profile(p, frames);
    if (file.contains("name") && !file["name"].is_string()) fail("name is not a string");
    if (file.contains("exporter") && !file["exporter"].is_string())
      fail("exporter is not a string");
    if (file.contains("activeProfileIndex")) {
      const json& i = file["activeProfileIndex"];
      if (!i.is_number_integer() || i.get<int64_t>() < 0 ||
          i.get<size_t>() >= file["profiles"].size())
        fail("activeProfileIndex is not the index of a profile");
    }
    return problems_;
  }

 private:
  void fail(const std::string& why) { problems_.push_back(why); }

  void allow_only(const json& object, const std::set<std::string>& keys, const std::string& what) {
    for (const auto& [key, value] : object.items())
      if (!keys.count(key)) fail(what + " has a key the format does not have: " + key);
  }

  void check_frame(const json& f) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string())
      return fail("a frame without a string name: " + f.dump());
    allow_only(f, {"name", "file", "line", "col"}, "a frame");
    if (f.contains("file") && !f["file"].is_string()) fail("a frame's file is not a string");
    for (const char* k : {"line", "col"})
      if (f.contains(k) && !f[k].is_number()) fail(std::string("a frame's ") + k + " not a number");
  }

  bool frame_index(const json& i, size_t frames) {
    return i.is_number_integer() && i.get<int64_t>() >= 0 && i.get<size_t>() < frames;
  }

  void check_profile(const json& p, size_t frames) {
    if (!p.is_object()) return fail("a profile is not an object");
    std::string type = p.value("type", "");
    std::string name = p.value("name", "?");
    if (type != "sampled" && type != "evented")
      return fail("profile '" + name + "': type is neither sampled nor evented");
    allow_only(p,
               type == "sampled" ? std::set<std::string>{"type", "name", "unit", "startValue",
                                                         "endValue", "samples", "weights"}
                                 : std::set<std::string>{"type", "name", "unit", "startValue",
                                                         "endValue", "events"},
               "profile '" + name + "'");
    if (!p.contains("name") || !p["name"].is_string()) fail("a profile without a string name");
    static const std::set<std::string> kUnits = {"none",         "nanoseconds", "microseconds",
                                                 "milliseconds", "seconds",     "bytes"};
    if (!p.contains("unit") || !p["unit"].is_string() || !kUnits.count(p["unit"]))
      fail("profile '" + name + "': unit is not one the format allows");
    if (!p.contains("startValue") || !p["startValue"].is_number() || !p.contains("endValue") ||
        !p["endValue"].is_number())
      return fail("profile '" + name + "': startValue or endValue is missing or not a number");
    if (p["endValue"].get<double>() < p["startValue"].get<double>())
      fail("profile '" + name + "': endValue is less than startValue");
    if (type == "evented") {
      if (!p.contains("events") || !p["events"].is_array())
        return fail("profile '" + name + "': events is not an array");
      double at = p["startValue"].get<double>();
      for (const json& e : p["events"]) {
        if (!e.is_object() || (e.value("type", "") != "O" && e.value("type", "") != "C") ||
            !e.contains("at") || !e["at"].is_number() || !e.contains("frame") ||
            !frame_index(e["frame"], frames))
          return fail("profile '" + name + "': a malformed event " + e.dump());
        if (e["at"].get<double>() < at) fail("profile '" + name + "': events go back in time");
        at = e["at"].get<double>();
      }
      return;
    }
    if (!p.contains("samples") || !p["samples"].is_array() || !p.contains("weights") ||
        !p["weights"].is_array())
      return fail("profile '" + name + "': samples or weights is missing or not an array");
    if (p["samples"].size() != p["weights"].size())
      fail("profile '" + name + "': samples and weights differ in length");
    for (const json& s : p["samples"]) {
      if (!s.is_array()) return fail("profile '" + name + "': a sample is not an array");
      for (const json& i : s)
        if (!frame_index(i, frames))
          return fail("profile '" + name +
                      "': a sample's frame index is out of range: " + s.dump());
    }
    for (const json& w : p["weights"])
      if (!w.is_number() || w.get<double>() < 0)
        return fail("profile '" + name + "': a weight is not a number >= 0");
  }

  std::vector<std::string> problems_;
};

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += s + "\n";
  return out;
}

// A sampled profile's stacks (frame names, root first) with their weights.
std::map<std::vector<std::string>, uint64_t> profile_stacks(const json& file, size_t profile) {
  std::map<std::vector<std::string>, uint64_t> out;
  const json& frames = file["shared"]["frames"];
  const json& p = file["profiles"][profile];
  for (size_t i = 0; i < p["samples"].size(); ++i) {
    std::vector<std::string> stack;
    for (const json& f : p["samples"][i]) stack.push_back(frames[f.get<size_t>()]["name"]);
    out[stack] += p["weights"][i].get<uint64_t>();
  }
  return out;
}

std::map<std::vector<std::string>, uint64_t> as_map(const std::vector<FoldedLine>& lines) {
  std::map<std::vector<std::string>, uint64_t> out;
  for (const FoldedLine& l : lines) out[l.frames] += l.count;
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---------------------------------------------------------------------------
// FlameStacks and speedscope_json on made-up threads.

Thread thread_in(const std::string& category, bool idle, std::vector<std::string> functions) {
  Thread t;
  t.state = "sleeping";
  Blocking b;
  b.category = category;
  b.idle = idle;
  t.blocking = b;
  for (auto f = functions.rbegin(); f != functions.rend(); ++f) {  // innermost first
    Frame frame;
    frame.function = *f;
    t.frames.push_back(frame);
  }
  return t;
}

TEST(FlameStacks, RootFirstUnderTheCategoryCountedPerDistinctStack) {
  FlameStacks stacks;
  stacks.add(thread_in("lock", false, {"main", "worker", "pthread_mutex_lock"}));
  stacks.add(thread_in("lock", false, {"main", "worker", "pthread_mutex_lock"}));
  stacks.add(thread_in("queue", true, {"main", "pool_wait"}));
  Thread running;
  running.state = "running";
  stacks.add(running, 3);
  EXPECT_EQ(stacks.folded(),
            "idle: queue;main;pool_wait 1\n"
            "lock;main;worker;pthread_mutex_lock 2\n"
            "running;[no frames] 3\n");
  EXPECT_EQ(stacks.total(), 6u);
  EXPECT_EQ(stacks.root_totals(),
            (std::map<std::string, uint64_t>{{"idle: queue", 1}, {"lock", 2}, {"running", 3}}));
}

TEST(FlameStacks, SeparatorsInNamesAndTheProcessFrame) {
  FlameStacks stacks;
  Snapshot s;
  s.target.pid = 42;
  s.target.comm = "odd;name";
  s.threads.push_back(thread_in("sleep", false, {"a;b", "line\nbreak"}));
  stacks.add(s, true);
  EXPECT_EQ(stacks.folded(), "sleep;odd:name (PID 42);a:b;line break 1\n");
  auto lines = parse_folded(stacks.folded());
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].frames.size(), 4u);
}

TEST(FlameStacks, PastTheBoundNewStacksCountUnderOtherStacks) {
  FlameStacks stacks(2);
  stacks.add(thread_in("lock", false, {"a"}));
  stacks.add(thread_in("lock", false, {"b"}));
  stacks.add(thread_in("lock", false, {"c"}));
  stacks.add(thread_in("lock", false, {"a"}));
  EXPECT_EQ(stacks.folded(), "lock;[other stacks] 1\nlock;a 2\nlock;b 1\n");
  EXPECT_EQ(stacks.total(), 4u);
}

TEST(Speedscope, AllThreadsFirstThenOneProfilePerRootMostCountedFirst) {
  FlameStacks stacks;
  stacks.add(thread_in("lock", false, {"main", "worker"}), 2);
  stacks.add(thread_in("socket", false, {"main", "recv"}), 5);
  stacks.add(thread_in("socket", false, {"main", "send"}), 1);
  json file = speedscope_json(stacks, "a test", "thread-samples");
  EXPECT_EQ(joined(SpeedscopeCheck().problems(file)), "");
  EXPECT_EQ(file["name"], "a test");
  EXPECT_EQ(file["exporter"], std::string("stackaudit@") + kVersion);
  EXPECT_EQ(file["activeProfileIndex"], 0);
  ASSERT_EQ(file["profiles"].size(), 3u);
  EXPECT_EQ(file["profiles"][0]["name"], "all threads: 8 thread-samples");
  EXPECT_EQ(file["profiles"][1]["name"], "socket: 6 thread-samples");
  EXPECT_EQ(file["profiles"][2]["name"], "lock: 2 thread-samples");
  EXPECT_EQ(file["profiles"][0]["endValue"], 8);
  using Stacks = std::map<std::vector<std::string>, uint64_t>;
  EXPECT_EQ(profile_stacks(file, 0), (Stacks{{{"lock", "main", "worker"}, 2},
                                             {{"socket", "main", "recv"}, 5},
                                             {{"socket", "main", "send"}, 1}}));
  // A category's own profile leaves its root out.
  EXPECT_EQ(profile_stacks(file, 1), (Stacks{{{"main", "recv"}, 5}, {{"main", "send"}, 1}}));
  // Frames are shared: each name once.
  std::set<std::string> names;
  for (const json& f : file["shared"]["frames"]) EXPECT_TRUE(names.insert(f["name"]).second);
}

TEST(Speedscope, TheCheckFindsWhatTheFormatForbids) {
  FlameStacks stacks;
  stacks.add(thread_in("lock", false, {"main"}));
  json good = speedscope_json(stacks, "x", "threads");
  ASSERT_EQ(joined(SpeedscopeCheck().problems(good)), "");
  EXPECT_EQ(good["profiles"][1]["name"], "lock: 1 thread");
  auto broken = [&](auto change) {
    json f = good;
    change(f);
    return SpeedscopeCheck().problems(f).size();
  };
  EXPECT_GT(broken([](json& f) { f.erase("$schema"); }), 0u);
  EXPECT_GT(broken([](json& f) { f["profiles"][0]["unit"] = "threads"; }), 0u);
  EXPECT_GT(broken([](json& f) { f["profiles"][0]["samples"][0][0] = 99; }), 0u);
  EXPECT_GT(broken([](json& f) { f["profiles"][0]["weights"].push_back(1); }), 0u);
  EXPECT_GT(broken([](json& f) { f["profiles"][0]["endValue"] = -1; }), 0u);
  EXPECT_GT(broken([](json& f) { f["profiles"][0].erase("startValue"); }), 0u);
  EXPECT_GT(broken([](json& f) { f["activeProfileIndex"] = 5; }), 0u);
  EXPECT_GT(broken([](json& f) { f["shared"]["frames"][0].erase("name"); }), 0u);
}

// ---------------------------------------------------------------------------
// dump --format folded|speedscope on the fixture.

struct Parked {
  const char* function;  // the fixture's function on the thread's stack
  const char* line_tag;  // @line tag of its blocking call
  const char* category;  // its root frame is this, or "idle: " this
};

const Parked kParked[] = {
    {"park_mutex_wait", "mutex_wait", "lock"},    {"park_cond_wait", "cond_wait", "condition"},
    {"park_sleep", "sleep_call", "sleep"},        {"park_tcp_recv", "tcp_recv", "socket"},
    {"park_pipe_read", "pipe_read", "file"},      {"park_epoll", "epoll_wait", "poll"},
    {"park_child_wait", "child_wait", "process"}, {"park_accept", "acceptor", "socket"},
};

class DumpFlame : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new Child({kParkThreads});
    ASSERT_TRUE(fixture_->wait_for("ready", std::chrono::seconds(10)));
    std::string pid = std::to_string(fixture_->pid());
    audit_ = new json(dump_json(fixture_->pid()));
    folded_ = new RunResult(run({kStackaudit, "dump", "--pid", pid, "--format", "folded"}));
    speedscope_ = new RunResult(run({kStackaudit, "dump", "--pid", pid, "--format", "speedscope"}));
  }
  static void TearDownTestSuite() {
    delete fixture_;
    delete audit_;
    delete folded_;
    delete speedscope_;
  }
  static Child* fixture_;
  static json* audit_;
  static RunResult* folded_;
  static RunResult* speedscope_;
};

Child* DumpFlame::fixture_ = nullptr;
json* DumpFlame::audit_ = nullptr;
RunResult* DumpFlame::folded_ = nullptr;
RunResult* DumpFlame::speedscope_ = nullptr;

TEST_F(DumpFlame, FoldedCountsEveryThreadOnceUnderItsCategory) {
  ASSERT_EQ(folded_->exit_code, 0) << folded_->err;
  auto lines = parse_folded(folded_->out);
  const json& threads = (*audit_)["threads"];
  EXPECT_EQ(total(lines), threads.size());
  EXPECT_EQ(total(lines), 15u);  // main + 14 parked threads
  std::map<std::string, uint64_t> expected;
  for (const json& t : threads) ++expected[expected_root(t)];
  EXPECT_EQ(by_root(lines), expected);
  EXPECT_EQ(by_root(lines)["lock"], 1u);
  EXPECT_EQ(by_root(lines)["running"], 1u);  // the busy thread
}

TEST_F(DumpFlame, FoldedHasTheFixturesFunctionsRootFirst) {
  auto lines = parse_folded(folded_->out);
  for (const Parked& p : kParked) {
    SCOPED_TRACE(p.function);
    std::string frame =
        std::string("(anonymous namespace)::") + p.function +
        " (park_threads.cpp:" + std::to_string(tagged_line(kParkThreadsSource, p.line_tag)) + ")";
    const FoldedLine* found = nullptr;
    size_t at = 0;
    for (const FoldedLine& l : lines)
      for (size_t i = 0; i < l.frames.size(); ++i)
        if (l.frames[i] == frame) found = &l, at = i;
    ASSERT_NE(found, nullptr) << "no line has '" << frame << "' in\n" << folded_->out;
    const std::string& root = found->frames.front();
    EXPECT_TRUE(root == p.category || root == std::string("idle: ") + p.category) << root;
    // Root first: the thread's start is outside it, the library call it
    // waits in inside it.
    auto start = std::find(found->frames.begin(), found->frames.end(), "start_thread");
    ASSERT_NE(start, found->frames.end());
    EXPECT_LT(static_cast<size_t>(start - found->frames.begin()), at);
    EXPECT_LT(at + 1, found->frames.size()) << "nothing inside " << frame;
  }
}

TEST_F(DumpFlame, SpeedscopeIsValidAndHoldsTheSameStacks) {
  ASSERT_EQ(speedscope_->exit_code, 0) << speedscope_->err;
  json file = json::parse(speedscope_->out);
  EXPECT_EQ(joined(SpeedscopeCheck().problems(file)), "");
  EXPECT_EQ(file["exporter"], std::string("stackaudit@") + kVersion);
  EXPECT_EQ(file["name"],
            "stackaudit dump: PID " + std::to_string(fixture_->pid()) + " (park_threads)");
  EXPECT_EQ(file["profiles"][0]["name"], "all threads: 15 threads");
  EXPECT_EQ(file["profiles"][0]["unit"], "none");
  // The first profile holds the folded output's stacks (another dump of the
  // same parked threads; the busy thread is elsewhere each time).
  auto blocked = [](std::map<std::vector<std::string>, uint64_t> stacks) {
    std::erase_if(stacks, [](const auto& s) { return s.first.front() == "running"; });
    return stacks;
  };
  EXPECT_EQ(blocked(profile_stacks(file, 0)), blocked(as_map(parse_folded(folded_->out))));
  // Then one per root, which its stacks leave out.
  std::map<std::string, uint64_t> roots = by_root(parse_folded(folded_->out));
  ASSERT_EQ(file["profiles"].size(), 1 + roots.size());
  for (size_t i = 1; i < file["profiles"].size(); ++i) {
    std::string name = file["profiles"][i]["name"];
    std::string root = name.substr(0, name.rfind(": "));
    ASSERT_TRUE(roots.count(root)) << name;
    EXPECT_EQ(name, root + ": " + std::to_string(roots[root]) +
                        (roots[root] == 1 ? " thread" : " threads"));
    uint64_t weights = 0;
    for (const json& w : file["profiles"][i]["weights"]) weights += w.get<uint64_t>();
    EXPECT_EQ(weights, roots[root]);
    EXPECT_EQ(file["profiles"][i]["endValue"], roots[root]);
  }
}

TEST_F(DumpFlame, OutputFileIsWrittenWhole) {
  TempDir dir("flame");
  std::string out = dir.path() + "/park.folded";
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(fixture_->pid()), "--format",
                     "folded", "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(total(parse_folded(read_file(out))), 15u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST_F(DumpFlame, FlamegraphRendersTheFoldedOutput) {
  // No Debian package ships flamegraph.pl or inferno (bookworm): this runs
  // where one is on PATH.
  std::string tool;
  for (const char* name : {"flamegraph.pl", "flamegraph", "inferno-flamegraph"})
    if (run({"sh", "-c", std::string("command -v ") + name}).exit_code == 0) {
      tool = name;
      break;
    }
  if (tool.empty())
    GTEST_SKIP() << "flamegraph.pl, flamegraph or inferno-flamegraph is not on PATH";
  TempDir dir("flame");
  std::string folded = dir.path() + "/park.folded";
  { std::ofstream(folded) << folded_->out; }
  RunResult r = run({"sh", "-c", tool + " '" + folded + "'"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("<svg"), std::string::npos);
  EXPECT_NE(r.out.find("park_mutex_wait"), std::string::npos);
  EXPECT_NE(r.out.find(">lock"), std::string::npos);
}

TEST(DumpFlameChildren, EachProcessIsAFrameUnderTheCategory) {
  Child master({kForkSleepersBin, "2"});
  auto children = master.wait_for("children", std::chrono::seconds(10));
  ASSERT_TRUE(children);
  ASSERT_TRUE(master.wait_for("ready", std::chrono::seconds(10)));
  RunResult r = run({kStackaudit, "dump", "--pid", std::to_string(master.pid()), "--children",
                     "--format", "folded"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = parse_folded(r.out);
  EXPECT_EQ(total(lines), 3u);  // three single-threaded processes
  std::set<std::string> processes;
  for (const FoldedLine& l : lines) {
    ASSERT_GE(l.frames.size(), 3u);
    processes.insert(l.frames[1]);
  }
  std::set<std::string> expected = {"fork_sleepers (PID " + std::to_string(master.pid()) + ")"};
  std::istringstream pids(children->substr(std::string("children").size()));
  for (pid_t pid; pids >> pid;) expected.insert("fork_sleepers (PID " + std::to_string(pid) + ")");
  EXPECT_EQ(processes, expected);

  r = run({kStackaudit, "dump", "--pid", std::to_string(master.pid()), "--children", "--format",
           "speedscope"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json file = json::parse(r.out);
  EXPECT_EQ(joined(SpeedscopeCheck().problems(file)), "");
  EXPECT_EQ(file["name"], "stackaudit dump: PID " + std::to_string(master.pid()) +
                              " (fork_sleepers) and its descendants, 3 processes");
}

TEST(DumpFlameErrors, UnknownFormatIsAUsageError) {
  RunResult r = run({kStackaudit, "dump", "--pid", "1", "--format", "svg"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("folded"), std::string::npos) << r.err;
}

// ---------------------------------------------------------------------------
// The agent: --folded, --speedscope and /folded over its window.

TEST(AgentFlame, FilesAndFoldedCountEveryThreadOfEveryRound) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  TempDir dir("agent-flame");
  std::string folded = dir.path() + "/window.folded", speedscope = dir.path() + "/window.json",
              audit = dir.path() + "/audit.json";
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--folded", folded,
               "--speedscope", speedscope, "--audit-json", audit});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually(
      [&] { return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0) >= 3; }));

  // /folded: whole rounds of the fixture's 15 threads.
  int status = 0;
  auto body = http_get(agent.port(), "/folded", &status);
  ASSERT_TRUE(body);
  EXPECT_EQ(status, 200);
  auto served = parse_folded(*body);
  EXPECT_GE(total(served), 3u * 15u);
  EXPECT_EQ(total(served) % 15, 0u) << *body;
  EXPECT_EQ(by_root(served)["lock"] * 15, total(served));  // one lock waiter a round

  // SIGUSR1 writes the files without stopping the agent.
  kill(agent.pid(), SIGUSR1);
  EXPECT_TRUE(eventually([&] { return fs::exists(folded) && fs::exists(speedscope); }));
  EXPECT_TRUE(agent.serving());
  EXPECT_EQ(agent.stop(SIGTERM), 0);

  // At exit: counts are thread-samples, the same as the audit's window.
  json window = json::parse(read_file(audit))["window"];
  uint64_t samples = window["thread_samples"];
  EXPECT_EQ(samples, 15u * window["rounds"].get<uint64_t>());
  auto lines = parse_folded(read_file(folded));
  EXPECT_EQ(total(lines), samples);
  for (const auto& [root, n] : by_root(lines)) EXPECT_EQ(n % window["rounds"].get<uint64_t>(), 0u);

  json file = json::parse(read_file(speedscope));
  EXPECT_EQ(joined(SpeedscopeCheck().problems(file)), "");
  EXPECT_EQ(file["name"],
            "stackaudit agent: PID " + std::to_string(fixture.pid()) + " (park_threads)");
  EXPECT_EQ(file["profiles"][0]["name"],
            "all threads: " + std::to_string(samples) + " thread-samples");
  EXPECT_EQ(profile_stacks(file, 0), as_map(lines));
}

TEST(AgentFlame, OverSeveralProcessesEachIsAFrame) {
  Child master({kForkSleepersBin, "2"});
  ASSERT_TRUE(master.wait_for("ready", std::chrono::seconds(10)));
  Agent agent({"--pid", std::to_string(master.pid()), "--children", "--interval", "100ms"});
  ASSERT_TRUE(agent.serving());
  std::vector<FoldedLine> lines;
  ASSERT_TRUE(eventually([&] {
    auto body = http_get(agent.port(), "/folded");
    lines = body ? parse_folded(*body) : std::vector<FoldedLine>{};
    return total(lines) >= 3;
  })) << "no round of three processes";
  std::string master_frame = "fork_sleepers (PID " + std::to_string(master.pid()) + ")";
  std::set<std::string> processes;
  for (const FoldedLine& l : lines) processes.insert(l.frames.at(1));
  EXPECT_EQ(processes.size(), 3u);
  EXPECT_TRUE(processes.count(master_frame));
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentFlame, UnwritableFilesAreRefusedAtStart) {
  for (const char* option : {"--folded", "--speedscope"}) {
    RunResult r = run({kStackaudit, "agent", "--pid", "1", option, "/nonexistent-dir/x"});
    EXPECT_EQ(r.exit_code, 2) << option;
    EXPECT_NE(r.err.find(std::string("(") + option + ")"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace stackaudit::test
