// `stackaudit gate` on hand-made audit pairs: the real binary on files (what a
// user and a CI job read: the table, the sentences, the JSON, exit codes), and
// the evaluation itself as a function of two parsed audits and thresholds.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/exit_codes.h"
#include "agent/gate.h"
#include "tests/python_targets.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

using nlohmann::json;

constexpr double kMiB = 1024.0 * 1024.0;

// An agent window audit (docs/audit-json.md and the window fields of issue
// 10): one probe "api", one event-loop thread never blocked, a drained
// legacy_bridge pool, up the whole window, service throughput known.
json window_audit() {
  return {
      {"schema", "stackaudit.audit/v1"},
      {"tool", {{"name", "stackaudit"}, {"version", "0.1.0"}}},
      {"captured_at", "2026-12-01T10:00:10.000000Z"},
      {"target", {{"pid", 100}, {"comm", "python3"}, {"rss_bytes", 100 * kMiB}, {"threads", 12}}},
      {"threads", json::array()},
      {"summary", {{"threads", 12}, {"blocked", 0}, {"pools", json::array()}}},
      {"window",
       {{"seconds", 10.0},
        {"rounds", 10},
        {"rounds_failed", 0},
        {"planned_seconds", 10.0},
        {"ended", "duration"},
        {"target",
         {{"rss_bytes", {{"min", 99 * kMiB}, {"avg", 100 * kMiB}, {"max", 101 * kMiB}}},
          {"threads", {{"min", 12}, {"avg", 12.0}, {"max", 12}}},
          {"rounds_up", 10},
          {"rounds_down", 0},
          {"restarts", 0},
          {"up_whole_window", true}}},
        {"throughput",
         {{"cpu_seconds_per_second", 0.12},
          {"voluntary_context_switches_per_second", 850.0},
          {"involuntary_context_switches_per_second", 12.0},
          {"probe_requests_per_second", 5.0},
          {"service_requests_per_second", 40.0}}},
        {"event_loops",
         {{"threads", {{"min", 1}, {"avg", 1.0}, {"max", 1}}},
          {"thread_samples", 20},
          {"blocked_samples", 0},
          {"blocked_share", 0.0},
          {"sites", json::array()}}},
        {"pools",
         {{{"name", "legacy_bridge"},
           {"threads", {{"min", 0}, {"avg", 3.2}, {"max", 4}}},
           {"thread_samples", 64},
           {"idle_samples", 60},
           {"blocked_samples", 4},
           {"idle_share", 0.9375},
           {"last", {{"threads", 4}, {"idle", 4}, {"blocked", 0}}}}}},
        {"probes",
         {{{"name", "api"},
           {"url", "http://127.0.0.1:8080/work"},
           {"kind", "http"},
           {"requests", 50},
           {"ok", 50},
           {"errors", 0},
           {"errors_by_kind",
            {{"http_4xx", 0}, {"http_5xx", 0}, {"timeout", 0}, {"connect_error", 0}}},
           {"error_rate", 0.0},
           {"p50", 0.101},
           {"p95", 0.120},
           {"p99", 0.180},
           {"max", 0.200},
           {"requests_per_second", 4.98},
           {"rate_per_second", 5.0},
           {"late_starts", 0}}}},
        {"service", nullptr}}}};
}

// An event-loop site, as the window lists it.
json loop_site(const std::string& file, int line, const std::string& coroutine, int samples,
               int of) {
  return {{"site", file + ":" + std::to_string(line)},
          {"function", "fetch_upstream"},
          {"file", "/srv/app/" + file},
          {"line", line},
          {"category", "socket"},
          {"primitive", "recv"},
          {"coroutine", {{"function", coroutine}, {"file", "/srv/app/" + file}, {"line", 80}}},
          {"samples", samples},
          {"share", static_cast<double>(samples) / of}};
}

// The window's event loop blocked at one site in 3 of its 20 samples.
void block_loop(json& audit, const std::string& file = "async_service.py", int line = 57) {
  json& loops = audit["window"]["event_loops"];
  loops["blocked_samples"] = 3;
  loops["blocked_share"] = 0.15;
  loops["sites"] = json::array({loop_site(file, line, "handle", 3, 20)});
}

// A thread of a dump audit.
json dump_thread(const std::string& name, const json& blocking) {
  return {{"tid", 1}, {"name", name}, {"state", "sleeping"}, {"blocking", blocking}};
}

json idle_blocking(const std::string& category) {
  return {{"category", category}, {"primitive", "x"},           {"site", nullptr},
          {"idle", true},         {"blocks_event_loop", false}, {"coroutine", nullptr}};
}

// A single-process dump audit: an event-loop thread in its selector, and a
// drained legacy_bridge pool of 4 threads.
json dump_audit() {
  json threads = json::array({dump_thread("MainThread", idle_blocking("poll"))});
  for (int i = 0; i < 4; ++i)
    threads.push_back(dump_thread("legacy_bridge_" + std::to_string(i), idle_blocking("queue")));
  return {{"schema", "stackaudit.audit/v1"},
          {"tool", {{"name", "stackaudit"}, {"version", "0.1.0"}}},
          {"captured_at", "2026-12-01T09:00:00.000000Z"},
          {"target", {{"pid", 100}, {"comm", "python3"}, {"rss_bytes", 50 * kMiB}, {"threads", 5}}},
          {"capture", json::object()},
          {"threads", threads},
          {"summary",
           {{"threads", 5},
            {"blocked", 5},
            {"idle", 5},
            {"by_category", json::object()},
            {"pools",
             {{{"name", "legacy_bridge"},
               {"threads", 4},
               {"idle", 4},
               {"blocked", 0},
               {"by_category", json::object()}}}},
            {"event_loop_threads", 1},
            {"event_loops_blocked", 0},
            {"gil_holder", nullptr}}},
          {"warnings", json::array()}};
}

// The dump's event-loop thread blocked in a socket read, in coroutine handle.
void block_dump_loop(json& audit) {
  audit["threads"][0]["blocking"] = {{"category", "socket"},
                                     {"primitive", "recv"},
                                     {"site",
                                      {{"kind", "python"},
                                       {"function", "fetch_upstream"},
                                       {"file", "/srv/app/async_service.py"},
                                       {"line", 57}}},
                                     {"idle", false},
                                     {"blocks_event_loop", true},
                                     {"coroutine",
                                      {{"kind", "python"},
                                       {"function", "handle"},
                                       {"file", "/srv/app/async_service.py"},
                                       {"line", 80}}}};
  audit["summary"]["event_loops_blocked"] = 1;
}

class GateFiles {
 public:
  GateFiles() : dir_("gate-test") {}
  std::string write(const std::string& name, const std::string& text) {
    std::string path = dir_.path() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string write_json(const std::string& name, const json& doc) {
    return write(name, doc.dump(1));
  }
  const std::string& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
};

RunResult gate(const std::string& baseline, const std::string& current,
               std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {kStackaudit, "gate",      "--baseline",
                                   baseline,    "--current", current};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run(argv);
}

RunResult gate_pair(GateFiles& files, const json& baseline, const json& current,
                    std::vector<std::string> extra = {}) {
  return gate(files.write_json("baseline.json", baseline),
              files.write_json("current.json", current), std::move(extra));
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The table rows (GATE SUBJECT BASELINE CURRENT LIMIT VERDICT) that end in FAIL.
std::vector<std::string> failing_rows(const std::string& out) {
  std::vector<std::string> rows;
  for (const std::string& line : lines_of(out))
    if (line.ends_with("  FAIL")) rows.push_back(line);
  return rows;
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// A usage error: exit 2, one line on stderr that starts "stackaudit: ".
void expect_usage_error(const RunResult& r, const std::string& phrase) {
  EXPECT_EQ(r.exit_code, kExitUsage) << r.out << r.err;
  EXPECT_TRUE(r.err.starts_with("stackaudit: ")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_TRUE(contains(r.err, phrase)) << "no \"" << phrase << "\" in: " << r.err;
  EXPECT_EQ(r.out, "");
}

const json* gate_entry(const json& report, const std::string& id,
                       const std::optional<std::string>& subject = std::nullopt) {
  for (const json& g : report["gates"])
    if (g["gate"] == id && (!subject || g["subject"] == *subject)) return &g;
  return nullptr;
}

// ---------------------------------------------------------------- the binary

TEST(Gate, EveryGatePasses) {
  GateFiles files;
  RunResult r = gate_pair(files, window_audit(), window_audit(), {"--pool", "legacy_bridge"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(failing_rows(r.out).empty()) << r.out;
  for (const char* id :
       {"probe_p95", "probe_p99", "probe_error_rate", "rss", "threads", "event_loop_blocked",
        "event_loop_new_sites", "pool_threads", "pool_idle", "target_up", "throughput"}) {
    bool row = false;
    for (const std::string& line : lines_of(r.out))
      row |= line.starts_with(std::string(id) + " ") && line.ends_with("  pass");
    EXPECT_TRUE(row) << id << " has no passing row in:\n" << r.out;
  }
  EXPECT_FALSE(contains(r.out, "Skipped")) << r.out;
  EXPECT_TRUE(lines_of(r.out).back().starts_with("verdict: PASS: all 11 evaluated gates hold"))
      << r.out;
  // Human units in the table.
  EXPECT_TRUE(contains(r.out, "120.0 ms")) << r.out;
  EXPECT_TRUE(contains(r.out, "100.0 MiB")) << r.out;
  EXPECT_TRUE(contains(r.out, "93.8 %")) << r.out;
  EXPECT_TRUE(contains(r.out, "40.0/s")) << r.out;
}

struct FailAlone {
  std::string gate;
  std::function<void(json&)> mutate;
  std::vector<std::string> look_for;  // in the "What to look at" sentence
};

TEST(Gate, EachGateFailsAlone) {
  std::vector<FailAlone> cases = {
      {"probe_p95",
       [](json& a) { a["window"]["probes"][0]["p95"] = 0.140; },
       {"probe_p95 api: probe api's p95 latency rose from 120.0 ms to 140.0 ms", "132.0 ms"}},
      {"probe_p99",
       [](json& a) { a["window"]["probes"][0]["p99"] = 0.250; },
       {"probe api's p99 latency rose from 180.0 ms to 250.0 ms"}},
      {"probe_error_rate",
       [](json& a) {
         json& p = a["window"]["probes"][0];
         p["errors"] = 2;
         p["ok"] = 48;
         p["error_rate"] = 0.04;
         p["errors_by_kind"]["http_5xx"] = 1;
         p["errors_by_kind"]["timeout"] = 1;
       },
       {"error rate rose from 0.0 % to 4.0 %", "http_5xx 1, timeout 1"}},
      {"rss",
       [](json& a) { a["window"]["target"]["rss_bytes"]["avg"] = 110 * kMiB; },
       {"average RSS rose from 100.0 MiB to 110.0 MiB (+10.0 %)", "105.0 MiB"}},
      {"threads",
       [](json& a) { a["window"]["target"]["threads"]["avg"] = 13.0; },
       {"average thread count rose from 12 to 13", "must fall"}},
      {"event_loop_blocked",
       [](json& a) { block_loop(a); },
       {"async_service.py:57 (fetch_upstream, socket) in coroutine handle (async_service.py:80) "
        "blocked the loop in 15.0 % of its samples (3 of 20): move the call to the bridge pool"}},
      {"pool_threads",
       [](json& a) { a["window"]["pools"][0]["threads"]["max"] = 14; },
       {"pool legacy_bridge had 14 threads at most, over the limit of 10"}},
      {"pool_idle",
       [](json& a) { a["window"]["pools"][0]["idle_share"] = 0.3; },
       {"pool legacy_bridge was idle in only 30.0 % of its samples, under the 50.0 % asked"}},
      {"target_up",
       [](json& a) {
         json& t = a["window"]["target"];
         t["up_whole_window"] = false;
         t["rounds_down"] = 2;
         t["restarts"] = 1;
       },
       {"not up for the whole current window (2 rounds without it, 1 restarts"}},
      {"throughput",
       [](json& a) { a["window"]["throughput"]["service_requests_per_second"] = 30.0; },
       {"service throughput fell from 40.0/s to 30.0/s (-25.0 %), under the limit of 36.0/s"}},
  };
  GateFiles files;
  for (const FailAlone& c : cases) {
    SCOPED_TRACE(c.gate);
    json baseline = window_audit(), current = window_audit();
    // The event-loop site is in the baseline too, so that only the blocked gate fails.
    if (c.gate == "event_loop_blocked") block_loop(baseline);
    c.mutate(current);
    RunResult r = gate_pair(files, baseline, current, {"--pool", "legacy_bridge"});
    EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
    std::vector<std::string> rows = failing_rows(r.out);
    ASSERT_EQ(rows.size(), 1u) << r.out;
    EXPECT_TRUE(rows[0].starts_with(c.gate + " ")) << r.out;
    // Failing rows come first: the first row under the header.
    std::vector<std::string> lines = lines_of(r.out);
    auto header = std::find_if(lines.begin(), lines.end(),
                               [](const std::string& l) { return l.starts_with("GATE "); });
    ASSERT_NE(header, lines.end()) << r.out;
    EXPECT_EQ(*(header + 1), rows[0]) << r.out;
    EXPECT_TRUE(contains(r.out, "What to look at:\n  " + c.gate)) << r.out;
    for (const std::string& phrase : c.look_for)
      EXPECT_TRUE(contains(r.out, phrase)) << "no \"" << phrase << "\" in:\n" << r.out;
    EXPECT_TRUE(lines.back().starts_with("verdict: FAIL: 1 of 11 evaluated gates failed")) << r.out;
  }
}

TEST(Gate, EventLoopNewSiteFailsAloneUnderAWiderShare) {
  // The blocked gate allows 20 % here; the site is new all the same.
  GateFiles files;
  json current = window_audit();
  block_loop(current);
  std::string thresholds = files.write("t.toml", "[event_loop_blocked]\nmax_share = 0.2\n");
  RunResult r = gate_pair(files, window_audit(), current, {"--thresholds", thresholds});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  std::vector<std::string> rows = failing_rows(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("event_loop_new_sites ")) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "async_service.py:57 (fetch_upstream, socket) in coroutine handle "
                       "(async_service.py:80) blocks an event loop in the current run "
                       "and did not in the baseline"))
      << r.out;
}

TEST(Gate, NewSiteWithinItsAllowedShareHoldsAndIsNamed) {
  // The site blocks the loop in 15 % of its samples (3 of 20).
  GateFiles files;
  json current = window_audit();
  block_loop(current);
  std::string wide = files.write("wide.toml",
                                 "[event_loop_blocked]\nmax_share = 0.2\n"
                                 "[event_loop_new_sites]\nmax_share = 0.2\n");
  RunResult r =
      gate_pair(files, window_audit(), current, {"--thresholds", wide, "--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  json report = json::parse(r.out);
  const json* fresh = gate_entry(report, "event_loop_new_sites");
  ASSERT_TRUE(fresh) << r.out;
  EXPECT_EQ((*fresh)["verdict"], "pass");
  EXPECT_EQ((*fresh)["message"],
            "new sites within the 20.0 % allowed: async_service.py:57 (15.0 %)");

  std::string narrow = files.write("narrow.toml",
                                   "[event_loop_blocked]\nmax_share = 0.2\n"
                                   "[event_loop_new_sites]\nmax_share = 0.1\n");
  r = gate_pair(files, window_audit(), current, {"--thresholds", narrow});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  EXPECT_TRUE(contains(r.out,
                       "did not in the baseline (15.0 % of its samples (3 of 20), over the "
                       "10.0 % allowed)"))
      << r.out;

  std::string bad = files.write("bad.toml", "[event_loop_new_sites]\nmax_share = 2\n");
  r = gate_pair(files, window_audit(), current, {"--thresholds", bad});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "a fraction from 0 to 1")) << r.err;
}

TEST(Gate, EventLoopFailureNamesEverySite) {
  GateFiles files;
  json current = window_audit();
  json& loops = current["window"]["event_loops"];
  loops["blocked_samples"] = 5;
  loops["blocked_share"] = 0.25;
  loops["sites"] = {loop_site("async_service.py", 57, "handle", 3, 20),
                    loop_site("store.py", 12, "save", 2, 20)};
  RunResult r = gate_pair(files, window_audit(), current, {"--format", "json"});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  json report = json::parse(r.out);
  const json* blocked = gate_entry(report, "event_loop_blocked");
  ASSERT_TRUE(blocked);
  EXPECT_EQ((*blocked)["verdict"], "fail");
  ASSERT_EQ((*blocked)["sites"].size(), 2u);
  EXPECT_EQ((*blocked)["sites"][1]["site"], "store.py:12");
  EXPECT_EQ((*blocked)["sites"][1]["coroutine"]["function"], "save");
  EXPECT_DOUBLE_EQ((*blocked)["sites"][1]["share"].get<double>(), 0.1);
  std::string message = (*blocked)["message"];
  EXPECT_TRUE(contains(message, "async_service.py:57")) << message;
  EXPECT_TRUE(contains(message, "store.py:12 (fetch_upstream, socket) in coroutine save"))
      << message;

  r = gate_pair(files, window_audit(), current);
  EXPECT_TRUE(contains(r.out,
                       "\n    async_service.py:57 (fetch_upstream, socket) in coroutine "
                       "handle (async_service.py:80) blocked the loop in 15.0 %"))
      << r.out;
  EXPECT_TRUE(contains(r.out,
                       "\n    store.py:12 (fetch_upstream, socket) in coroutine save "
                       "(store.py:80) blocked the loop in 10.0 %"))
      << r.out;
}

TEST(Gate, NoProbeInTheBaselineIsSkippedNotPassed) {
  GateFiles files;
  json baseline = window_audit();
  baseline["window"]["probes"] = json::array();
  RunResult r = gate_pair(files, baseline, window_audit());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out,
                       "Skipped (not evaluated: neither passed nor failed):\n"
                       "  probe_p95: no probe in the baseline (run its agent with --probe)"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "  probe_p99: no probe in the baseline")) << r.out;
  EXPECT_TRUE(contains(r.out, "  probe_error_rate: no probe in the baseline")) << r.out;
  for (const std::string& line : lines_of(r.out))
    EXPECT_FALSE(line.starts_with("probe_") && line.ends_with("pass")) << line;
  // Skipped: the pool gates too, as no pool is named.
  EXPECT_TRUE(contains(r.out, "  pool_threads: no pool named")) << r.out;
  EXPECT_TRUE(
      lines_of(r.out).back().starts_with("verdict: PASS: all 6 evaluated gates hold (5 "
                                         "skipped)"))
      << r.out;

  r = gate_pair(files, baseline, window_audit(), {"--format", "json"});
  json report = json::parse(r.out);
  EXPECT_EQ(report["verdict"], "pass");
  EXPECT_EQ((*gate_entry(report, "probe_p95"))["verdict"], "skipped");
  EXPECT_EQ((*gate_entry(report, "probe_p95"))["message"],
            "no probe in the baseline (run its agent with --probe)");
  EXPECT_EQ(report["counts"]["skipped"], 5);
  EXPECT_EQ((*gate_entry(report, "probe_p95"))["unit"], "seconds");  // skipped keeps its unit
  EXPECT_EQ((*gate_entry(report, "pool_idle"))["bound"], "at_least");
}

TEST(Gate, ProbeOnlyInTheCurrentRunIsSkipped) {
  GateFiles files;
  json current = window_audit();
  json admin = current["window"]["probes"][0];
  admin["name"] = "admin";
  admin["p95"] = 9.0;  // would fail, were it compared with anything
  current["window"]["probes"].push_back(admin);
  RunResult r = gate_pair(files, window_audit(), current);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "  probe_p95 admin: probe admin is only in the current run"))
      << r.out;
  bool api_passes = false;
  for (const std::string& line : lines_of(r.out))
    api_passes |=
        line.starts_with("probe_p95 ") && contains(line, " api ") && line.ends_with("pass");
  EXPECT_TRUE(api_passes) << r.out;
}

TEST(Gate, JsonForCi) {
  GateFiles files;
  json current = window_audit();
  block_loop(current);
  // A pool the baseline had and the current run has not (a retired fan-out pool).
  json baseline = window_audit();
  json retired = baseline["window"]["pools"][0];
  retired["name"] = "absent";
  baseline["window"]["pools"].push_back(retired);
  RunResult r = gate_pair(files, baseline, current,
                          {"--format", "json", "--pool", "legacy_bridge", "--pool", "absent"});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  json report = json::parse(r.out);
  EXPECT_EQ(report["schema"], "stackaudit.gate/v1");
  EXPECT_EQ(report["verdict"], "fail");
  EXPECT_EQ(report["baseline"]["file"], files.dir() + "/baseline.json");
  EXPECT_EQ(report["baseline"]["kind"], "window");
  EXPECT_EQ(report["current"]["captured_at"], "2026-12-01T10:00:10.000000Z");
  for (const json& g : report["gates"]) {
    for (const char* key :
         {"gate", "subject", "verdict", "baseline", "current", "limit", "unit", "message"})
      EXPECT_TRUE(g.contains(key)) << key << " missing in " << g.dump();
    bool loop_gate = g["gate"] == "event_loop_blocked" || g["gate"] == "event_loop_new_sites";
    EXPECT_EQ(g.contains("sites"), loop_gate) << g.dump();
  }
  const json* p95 = gate_entry(report, "probe_p95", "api");
  ASSERT_TRUE(p95);
  EXPECT_EQ((*p95)["unit"], "seconds");
  EXPECT_DOUBLE_EQ((*p95)["baseline"].get<double>(), 0.120);
  EXPECT_NEAR((*p95)["limit"].get<double>(), 0.132, 1e-12);
  const json* rss = gate_entry(report, "rss");
  EXPECT_EQ((*rss)["unit"], "bytes");
  EXPECT_EQ((*rss)["subject"], nullptr);
  EXPECT_DOUBLE_EQ((*rss)["current"].get<double>(), 100 * kMiB);
  const json* blocked = gate_entry(report, "event_loop_blocked");
  EXPECT_EQ((*blocked)["verdict"], "fail");
  EXPECT_EQ((*blocked)["sites"][0]["site"], "async_service.py:57");
  EXPECT_EQ((*blocked)["sites"][0]["coroutine"]["function"], "handle");
  EXPECT_EQ((*blocked)["sites"][0]["line"], 57);
  EXPECT_EQ((*gate_entry(report, "throughput"))["bound"], "at_least");
  EXPECT_EQ((*gate_entry(report, "throughput"))["unit"], "requests_per_second");
  const json* up = gate_entry(report, "target_up");
  EXPECT_EQ((*up)["current"], true);
  EXPECT_EQ((*up)["unit"], "up");
  // A pool absent from the current run: 0 threads holds; idle cannot be judged.
  const json* absent_threads = gate_entry(report, "pool_threads", "absent");
  EXPECT_EQ((*absent_threads)["verdict"], "pass");
  EXPECT_EQ((*absent_threads)["current"], 0.0);
  const json* absent_idle = gate_entry(report, "pool_idle", "absent");
  EXPECT_EQ((*absent_idle)["verdict"], "skipped");
  EXPECT_TRUE(contains((*absent_idle)["message"], "not seen in the current run"));
}

TEST(Gate, OutputFileIsWrittenAndStdoutStaysEmpty) {
  GateFiles files;
  std::string out = files.dir() + "/report.json";
  RunResult r = gate_pair(files, window_audit(), window_audit(), {"--format", "json", "-o", out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "");
  std::ifstream in(out);
  json report = json::parse(in);
  EXPECT_EQ(report["verdict"], "pass");
  expect_usage_error(gate_pair(files, window_audit(), window_audit(),
                               {"-o", files.dir() + "/no/such/dir/report.txt"}),
                     "no/such/dir");
}

// ------------------------------------------------------------- dump audits

TEST(Gate, DumpPairGatesWhatADumpHas) {
  GateFiles files;
  RunResult r = gate_pair(files, dump_audit(), dump_audit(), {"--pool", "legacy_bridge"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* id : {"rss", "threads", "event_loop_blocked", "event_loop_new_sites",
                         "pool_threads", "pool_idle"}) {
    bool row = false;
    for (const std::string& line : lines_of(r.out))
      row |= line.starts_with(std::string(id) + " ") && line.ends_with("  pass");
    EXPECT_TRUE(row) << id << " has no passing row in:\n" << r.out;
  }
  for (const char* skipped :
       {"  probe_p95: a dump audit is one capture, not a window: probe latency is recorded by "
        "agent --probe",
        "  target_up: a dump audit is one capture, not a window: it cannot say the target "
        "stayed up",
        "  throughput: a dump audit is one capture, not a window"})
    EXPECT_TRUE(contains(r.out, skipped)) << skipped << "\n" << r.out;
  EXPECT_TRUE(contains(r.out, "dump audit, 2026-12-01T09:00:00.000000Z")) << r.out;
}

TEST(Gate, DumpPairEventLoopBlockedNamesSiteAndCoroutine) {
  GateFiles files;
  json current = dump_audit();
  block_dump_loop(current);
  RunResult r = gate_pair(files, dump_audit(), current);
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  std::vector<std::string> rows = failing_rows(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;  // blocked, and a site the baseline did not have
  EXPECT_TRUE(rows[0].starts_with("event_loop_blocked ")) << r.out;
  EXPECT_TRUE(rows[1].starts_with("event_loop_new_sites ")) << r.out;
  EXPECT_TRUE(contains(r.out,
                       "async_service.py:57 (fetch_upstream, socket) in coroutine handle "
                       "(async_service.py:80) blocked the loop in 1 of its 1 event-loop "
                       "thread at the capture"))
      << r.out;
}

TEST(Gate, DumpOfATreeSumsItsProcesses) {
  GateFiles files;
  auto tree = [](double rss_each, int bridge_threads) {
    json p1 = dump_audit(), p2 = dump_audit();
    p1["target"]["rss_bytes"] = rss_each;
    p2["target"]["rss_bytes"] = rss_each;
    p2["summary"]["pools"][0]["threads"] = bridge_threads;
    p2["summary"]["pools"][0]["idle"] = 0;
    return json{{"schema", "stackaudit.audit/v1"},
                {"captured_at", "2026-12-01T09:00:00.000000Z"},
                {"processes", {p1, p2}},
                {"summary", {{"processes", 2}}}};
  };
  RunResult r = gate_pair(files, tree(50 * kMiB, 4), tree(60 * kMiB, 7),
                          {"--format", "json", "--pool", "legacy_bridge"});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  json report = json::parse(r.out);
  const json* rss = gate_entry(report, "rss");
  EXPECT_DOUBLE_EQ((*rss)["baseline"].get<double>(), 100 * kMiB);
  EXPECT_DOUBLE_EQ((*rss)["current"].get<double>(), 120 * kMiB);
  EXPECT_EQ((*rss)["verdict"], "fail");
  const json* pool = gate_entry(report, "pool_threads", "legacy_bridge");
  EXPECT_DOUBLE_EQ((*pool)["current"].get<double>(), 11.0);  // 4 + 7
  EXPECT_EQ((*pool)["verdict"], "fail");
  const json* idle = gate_entry(report, "pool_idle", "legacy_bridge");
  EXPECT_NEAR((*idle)["current"].get<double>(), 4.0 / 11.0, 1e-12);
  EXPECT_EQ((*idle)["verdict"], "fail");
}

TEST(Gate, RealServiceDumpsBeforeAndAfterItsLoopBlocks) {
  // tests/targets/py_service.py: an asyncio loop and a busy legacy_bridge pool;
  // "block" makes a coroutine call time.sleep() on the loop.
  std::string missing;
  auto service = PythonProcess::start(PythonTarget{"3.11", false}, PY_SERVICE_SCRIPT, &missing);
  if (!service) GTEST_SKIP() << missing;
  ASSERT_TRUE(service->io().wait_for("ready", std::chrono::seconds(30)));
  GateFiles files;
  RunResult r;
  json before = dump_json(service->pid(), &r);
  ASSERT_EQ(before["summary"]["event_loop_threads"], 1) << r.err;
  std::string baseline = files.write_json("before.json", before);
  service->io().write_line("block");
  ASSERT_TRUE(service->io().wait_for("blocking", std::chrono::seconds(10)));
  json after;
  ASSERT_TRUE(eventually(
      [&] {
        after = dump_json(service->pid());
        return after["summary"]["event_loops_blocked"] == 1;
      },
      std::chrono::seconds(10)));
  std::string current = files.write_json("after.json", after);

  r = gate(baseline, current, {"--pool", "legacy_bridge"});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  std::vector<std::string> rows = failing_rows(r.out);
  ASSERT_EQ(rows.size(), 3u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("event_loop_blocked ")) << r.out;
  EXPECT_TRUE(rows[1].starts_with("event_loop_new_sites ")) << r.out;
  EXPECT_TRUE(rows[2].starts_with("pool_idle ")) << r.out;  // the bridge is busy: not drained
  std::string site =
      "py_service.py:" + std::to_string(tagged_line(PY_SERVICE_SCRIPT, "loop_sleep"));
  EXPECT_TRUE(
      contains(r.out, "    " + site + " (blocking_handler, sleep) in coroutine handle_request ("))
      << r.out;
  EXPECT_TRUE(contains(r.out, "blocked the loop in 1 of its 1 event-loop thread at the capture"))
      << r.out;
}

// ------------------------------------------------------------- thresholds

TEST(GateThresholdsFile, AChangedDefaultFlipsAVerdict) {
  GateFiles files;
  json current = window_audit();
  current["window"]["probes"][0]["p95"] = 0.125;  // +4 %: within the default x1.10
  EXPECT_EQ(gate_pair(files, window_audit(), current).exit_code, 0);
  std::string t = files.write("t.toml", "# tighter\n[probe_p95]\nmax_ratio = 1.02\n");
  RunResult r = gate_pair(files, window_audit(), current, {"--thresholds", t});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  std::vector<std::string> rows = failing_rows(r.out);
  ASSERT_EQ(rows.size(), 1u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("probe_p95 ")) << r.out;
  EXPECT_TRUE(contains(rows[0], "<= 122.4 ms")) << rows[0];
}

TEST(GateThresholdsFile, DisabledGateIsGone) {
  GateFiles files;
  json current = window_audit();
  current["window"]["target"]["rss_bytes"]["avg"] = 200 * kMiB;
  EXPECT_EQ(gate_pair(files, window_audit(), current).exit_code, kExitGateFailed);
  std::string t = files.write("t.toml", "[rss]\nenabled = false\n");
  RunResult r = gate_pair(files, window_audit(), current, {"--thresholds", t, "--format", "json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  json report = json::parse(r.out);
  EXPECT_EQ(gate_entry(report, "rss"), nullptr) << r.out;
  EXPECT_NE(gate_entry(report, "threads"), nullptr) << r.out;
}

TEST(GateThresholdsFile, PoolNamesComeFromTheFile) {
  GateFiles files;
  json current = window_audit();
  current["window"]["pools"][0]["threads"]["max"] = 7;
  std::string t = files.write("t.toml",
                              "[pool]\nnames = [\"legacy_bridge\"]\n\n"
                              "[pool_threads]\nmax_threads = 6\n\n"
                              "[pool_idle]\nmin_idle_share = 0.99\n");
  RunResult r = gate_pair(files, window_audit(), current, {"--thresholds", t});
  EXPECT_EQ(r.exit_code, kExitGateFailed) << r.out << r.err;
  std::vector<std::string> rows = failing_rows(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_TRUE(rows[0].starts_with("pool_threads ") && contains(rows[0], "<= 6")) << r.out;
  EXPECT_TRUE(rows[1].starts_with("pool_idle ") && contains(rows[1], ">= 99.0 %")) << r.out;
}

TEST(GateThresholdsFile, ErrorsNameFileAndLine) {
  GateFiles files;
  std::string a = files.write_json("a.json", window_audit());
  struct Bad {
    std::string toml;
    std::string expect;  // after "FILE:"
  };
  std::vector<Bad> bad = {
      {"[rss]\nmax_ratio = 1.1\n\n[latency]\nmax = 2\n", "4: unknown gate \"latency\""},
      {"[rss]\nmax_ratio = = 1.1\n", "2:"},  // a TOML syntax error: line and column
      {"[probe_p99]\nmax_ratio = \"big\"\n",
       "2: [probe_p99] max_ratio must be a number greater than 0, not a string"},
      {"[threads]\nenabled = 1\n", "2: [threads] enabled must be true or false, not an integer"},
      {"\n[rss]\nmax_raito = 1.1\n",
       "3: unknown key \"max_raito\" in [rss] (its keys: enabled, "
       "max_ratio)"},
      {"[pool_threads]\nmax_threads = 2.5\n",
       "2: [pool_threads] max_threads must be a whole number from 0 to 1000000, not 2.5"},
      {"[pool_idle]\nmin_idle_share = 1.5\n",
       "2: [pool_idle] min_idle_share must be a fraction from 0 to 1, not 1.5"},
      {"[pool]\nnames = \"legacy_bridge\"\n", "2: [pool] names must be an array of pool names"},
      {"rss = 1.05\n", "1: rss must be a table"},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.toml);
    std::string t = files.write("thresholds.toml", b.toml);
    RunResult r = gate(a, a, {"--thresholds", t});
    expect_usage_error(r, t + ":" + b.expect);
  }
  // The syntax error also says the column.
  std::string t = files.write("syntax.toml", "[rss]\nmax_ratio = = 1.1\n");
  RunResult r = gate(a, a, {"--thresholds", t});
  EXPECT_TRUE(contains(r.err, t + ":2:13: not valid TOML")) << r.err;
  expect_usage_error(gate(a, a, {"--thresholds", files.dir() + "/none.toml"}),
                     "cannot read the thresholds file " + files.dir() + "/none.toml");
}

// ------------------------------------------------------------- bad input

TEST(Gate, MalformedInputsAreUsageErrors) {
  GateFiles files;
  std::string good = files.write_json("good.json", window_audit());
  std::string missing = files.dir() + "/missing.json";
  expect_usage_error(gate(missing, good),
                     "cannot read the baseline audit " + missing + ": No such file or directory");
  expect_usage_error(gate(good, files.dir()),
                     "cannot read the current audit " + files.dir() + ": Is a directory");
  std::string text = files.write("text.json", "not json at all\n");
  expect_usage_error(gate(good, text),
                     "the current audit " + text + " is not valid JSON (at line 1");
  json other = window_audit();
  other["schema"] = "someone.else/v2";
  std::string wrong = files.write_json("wrong.json", other);
  expect_usage_error(gate(wrong, good), "the baseline audit " + wrong +
                                            " has schema \"someone.else/v2\", not "
                                            "stackaudit.audit/v1");
  std::string array = files.write("array.json", "[1, 2]");
  expect_usage_error(gate(good, array),
                     "the current audit " + array + " is not a stackaudit audit");
  std::string dump = files.write_json("dump.json", dump_audit());
  expect_usage_error(gate(good, dump), "the baseline " + good +
                                           " is a window audit (agent "
                                           "--audit-json) and the current " +
                                           dump +
                                           " a dump audit (dump --format json): gate compares two "
                                           "audits of the same kind");
  RunResult r = run({kStackaudit, "gate", "--baseline", good});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(contains(r.err, "--current")) << r.err;
  r = run({kStackaudit, "gate", "--baseline", good, "--current", good, "--format", "xml"});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(contains(r.err, "see 'stackaudit gate --help'")) << r.err;
  // A schema line alone is not an audit: it would pass with every gate skipped.
  std::string bare = files.write_json("bare.json", json{{"schema", "stackaudit.audit/v1"}});
  expect_usage_error(gate(bare, bare), "the baseline audit " + bare + " is not a complete audit");
  r = run({kStackaudit, "gate", "--baseline", good, "--current", good, "--pool", ""});
  EXPECT_EQ(r.exit_code, kExitUsage);
  EXPECT_TRUE(contains(r.err, "--pool needs a pool name")) << r.err;
}

// A misspelt --pool would hold pool_threads with "0 threads" at the cutover:
// a pool in neither audit is skipped, naming the pools there are.
TEST(Gate, APoolInNeitherAuditIsSkippedNamingThePoolsThereAre) {
  GateFiles files;
  RunResult r = gate_pair(files, window_audit(), window_audit(), {"--pool", "legacy_brigde"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "pool legacy_brigde is in neither audit (pools seen: legacy_bridge"))
      << r.out;
  EXPECT_FALSE(contains(r.out, "legacy_brigde  -")) << r.out;  // no row judged it
}

TEST(Gate, HelpSaysWhatEachGateProves) {
  RunResult r = run({kStackaudit, "gate", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* id : {"probe_p95", "probe_error_rate", "rss", "threads", "event_loop_blocked",
                         "event_loop_new_sites", "pool_threads", "pool_idle", "target_up",
                         "throughput", "skipped", "Exit codes"})
    EXPECT_TRUE(contains(r.out, id)) << id << "\n" << r.out;
}

// ------------------------------------------------------------- the evaluation itself

GateReport evaluate(const json& baseline, const json& current,
                    const GateThresholds& thresholds = {}) {
  return evaluate_gates(read_audit_figures(baseline, "a.json"),
                        read_audit_figures(current, "b.json"), thresholds);
}

const GateResult* result(const GateReport& report, const std::string& id,
                         const std::optional<std::string>& subject = std::nullopt) {
  for (const GateResult& r : report.gates)
    if (r.gate == id && (!subject || r.subject == subject)) return &r;
  return nullptr;
}

TEST(GateEvaluation, EveryGateHoldsOnTheSameRun) {
  GateThresholds t;
  t.add_pool("legacy_bridge");
  GateReport report = evaluate(window_audit(), window_audit(), t);
  ASSERT_EQ(report.gates.size(), 11u);
  for (const GateResult& r : report.gates)
    EXPECT_EQ(r.verdict, GateVerdict::kPass) << r.gate << ": " << r.message;
  EXPECT_FALSE(report.failed());
}

TEST(GateEvaluation, LimitsAreTheDefaults) {
  json current = window_audit();
  current["window"]["probes"][0]["p99"] = 0.180 * 1.10;  // exactly at the limit: holds
  current["window"]["probes"][0]["error_rate"] = 0.001;  // exactly + 0.1 point: holds
  current["window"]["target"]["rss_bytes"]["avg"] = 105 * kMiB;
  current["window"]["throughput"]["service_requests_per_second"] = 36.0;
  GateReport report = evaluate(window_audit(), current);
  for (const char* id : {"probe_p99", "probe_error_rate", "rss", "throughput"})
    EXPECT_EQ(result(report, id)->verdict, GateVerdict::kPass) << id;
  EXPECT_DOUBLE_EQ(*result(report, "rss")->limit, 105 * kMiB);
  EXPECT_DOUBLE_EQ(*result(report, "threads")->limit, 12.0);
  EXPECT_DOUBLE_EQ(*result(report, "probe_error_rate")->limit, 0.001);
  EXPECT_DOUBLE_EQ(*result(report, "throughput")->limit, 36.0);
  current["window"]["throughput"]["service_requests_per_second"] = 35.9;
  current["window"]["target"]["rss_bytes"]["avg"] = 105.1 * kMiB;
  report = evaluate(window_audit(), current);
  EXPECT_EQ(result(report, "throughput")->verdict, GateVerdict::kFail);
  EXPECT_EQ(result(report, "rss")->verdict, GateVerdict::kFail);
}

TEST(GateEvaluation, ThreadsMustFallOrHold) {
  json current = window_audit();
  current["window"]["target"]["threads"]["avg"] = 4.0;  // the cutover: 12 -> 4
  EXPECT_EQ(result(evaluate(window_audit(), current), "threads")->verdict, GateVerdict::kPass);
  current["window"]["target"]["threads"]["avg"] = 12.1;
  EXPECT_EQ(result(evaluate(window_audit(), current), "threads")->verdict, GateVerdict::kFail);
}

TEST(GateEvaluation, WhatCannotBeEvaluatedIsSkippedWithWhy) {
  json baseline = window_audit(), current = window_audit();
  current["window"]["probes"][0]["requests"] = 0;
  current["window"]["probes"][0]["p95"] = nullptr;
  current["window"]["probes"][0]["p99"] = nullptr;
  current["window"]["event_loops"]["thread_samples"] = 0;
  current["window"]["throughput"]["service_requests_per_second"] = nullptr;
  baseline["window"].erase("pools");
  baseline["window"]["target"].erase("up_whole_window");  // only the current run counts
  GateThresholds t;
  t.add_pool("legacy_bridge");
  GateReport report = evaluate(baseline, current, t);
  auto skipped = [&](const char* id, const std::string& why) {
    const GateResult* r = result(report, id);
    ASSERT_TRUE(r) << id;
    EXPECT_EQ(r->verdict, GateVerdict::kSkipped) << id;
    EXPECT_TRUE(contains(r->message, why)) << id << ": " << r->message;
  };
  skipped("probe_p95", "probe api completed no request in the current run");
  skipped("probe_error_rate", "probe api completed no request in the current run");
  skipped("event_loop_blocked", "no thread ran an asyncio event loop in the current window");
  skipped("throughput",
          "current: no service throughput was recorded (the agent ran without --service-metrics)");
  EXPECT_EQ(result(report, "pool_threads")->verdict, GateVerdict::kPass);  // current has it
  EXPECT_FALSE(result(report, "pool_threads")->baseline);
  EXPECT_EQ(result(report, "target_up")->verdict, GateVerdict::kPass);
  EXPECT_FALSE(report.failed());

  // A window without a round has no averages.
  current = window_audit();
  current["window"]["rounds"] = 0;
  report = evaluate(window_audit(), current);
  skipped("rss", "current: the window has no completed round");
  skipped("threads", "current: the window has no completed round");

  // An older agent's window: no probes, no event loops.
  baseline = window_audit();
  baseline["window"].erase("probes");
  baseline["window"].erase("event_loops");
  report = evaluate(baseline, window_audit());
  skipped("probe_p99", "baseline: the audit has no window.probes");
  skipped("event_loop_new_sites", "baseline: the audit has no window.event_loops");
  EXPECT_EQ(result(report, "event_loop_blocked")->verdict, GateVerdict::kPass);
}

TEST(GateEvaluation, WrongTypesInsideAnAuditAreMissingFiguresNotCrashes) {
  json current = window_audit();
  current["window"]["target"]["rss_bytes"] = "a lot";
  current["window"]["probes"][0]["p95"] = json::array();
  current["window"]["event_loops"]["sites"] = 7;
  current["window"]["pools"] = json::object();
  GateThresholds t;
  t.add_pool("legacy_bridge");
  GateReport report = evaluate(window_audit(), current, t);
  EXPECT_EQ(result(report, "rss")->verdict, GateVerdict::kSkipped);
  EXPECT_EQ(result(report, "probe_p95")->verdict, GateVerdict::kSkipped);
  EXPECT_EQ(result(report, "event_loop_blocked")->verdict, GateVerdict::kPass);
  EXPECT_EQ(result(report, "pool_threads")->verdict, GateVerdict::kSkipped);
  EXPECT_EQ(result(report, "probe_p99")->verdict, GateVerdict::kPass);

  // A count too large for any integer reads as absent (no undefined conversion).
  current = window_audit();
  current["window"]["event_loops"]["thread_samples"] = 1e300;
  current["window"]["probes"][0]["requests"] = -1e300;
  report = evaluate(window_audit(), current, t);
  EXPECT_EQ(result(report, "event_loop_blocked")->verdict, GateVerdict::kSkipped);
  EXPECT_EQ(result(report, "probe_p95")->verdict, GateVerdict::kSkipped);
}

TEST(GateEvaluation, MixedKindsAreAUsageError) {
  try {
    evaluate(window_audit(), dump_audit());
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_EQ(e.code, kExitUsage);
  }
}

TEST(GateEvaluation, BlockedShareUnderAWiderLimitHolds) {
  json current = window_audit();
  block_loop(current);
  GateThresholds t;
  t.event_loop_blocked_max_share = 0.15;
  GateReport report = evaluate(window_audit(), current, t);
  const GateResult* r = result(report, "event_loop_blocked");
  EXPECT_EQ(r->verdict, GateVerdict::kPass) << r->message;
  t.event_loop_blocked_max_share = 0.1;
  report = evaluate(window_audit(), current, t);
  r = result(report, "event_loop_blocked");
  EXPECT_EQ(r->verdict, GateVerdict::kFail);
  EXPECT_EQ(r->sentences.size(), 1u);
}

TEST(GateEvaluation, TextListsFailuresFirstThenSkippedThenVerdict) {
  json current = window_audit();
  current["window"]["target"]["threads"]["avg"] = 20.0;
  GateReport report = evaluate(window_audit(), current);
  std::string text = render_gate_text(report);
  size_t header = text.find("GATE ");
  size_t threads = text.find("\nthreads ");
  size_t rss = text.find("\nrss ");
  size_t look = text.find("What to look at:");
  size_t skipped = text.find("Skipped");
  size_t verdict = text.find("verdict: FAIL");
  ASSERT_NE(header, std::string::npos) << text;
  EXPECT_LT(header, threads);
  EXPECT_LT(threads, rss);
  EXPECT_LT(rss, look);
  EXPECT_LT(look, skipped);
  EXPECT_LT(skipped, verdict);
}

TEST(GateThresholdsParse, ValuesAndDefaults) {
  GateThresholds t = parse_gate_thresholds(
      "[probe_p95]\nmax_ratio = 2\n[threads]\nmax_ratio = 0.5\nenabled = true\n"
      "[target_up]\nenabled = false\n[pool]\nnames = [\"a\", \"b\", \"a\"]\n",
      "t.toml");
  EXPECT_DOUBLE_EQ(t.probe_p95_max_ratio, 2.0);  // an integer is a number
  EXPECT_DOUBLE_EQ(t.threads_max_ratio, 0.5);
  EXPECT_DOUBLE_EQ(t.probe_p99_max_ratio, 1.10);
  EXPECT_DOUBLE_EQ(t.rss_max_ratio, 1.05);
  EXPECT_DOUBLE_EQ(t.probe_error_rate_max_increase, 0.001);
  EXPECT_DOUBLE_EQ(t.event_loop_blocked_max_share, 0.0);
  EXPECT_EQ(t.pool_max_threads, 10);
  EXPECT_DOUBLE_EQ(t.pool_min_idle_share, 0.5);
  EXPECT_DOUBLE_EQ(t.throughput_min_ratio, 0.90);
  EXPECT_FALSE(t.enabled("target_up"));
  EXPECT_TRUE(t.enabled("threads"));
  EXPECT_EQ(t.pools, (std::vector<std::string>{"a", "b"}));
  EXPECT_THROW(parse_gate_thresholds("[rss]\nmax_ratio = 0\n", "t.toml"), UserError);
  EXPECT_THROW(parse_gate_thresholds("[pool]\nenabled = false\n", "t.toml"), UserError);
  EXPECT_THROW(parse_gate_thresholds("[pool]\nnames = [\"\"]\n", "t.toml"), UserError);
}

}  // namespace
}  // namespace stackaudit::test
