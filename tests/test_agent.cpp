// `stackaudit agent` for real: a Prometheus server scraping it on loopback,
// promtool on its output, following a restarted service, signals, thread
// churn, and bad input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

namespace fs = std::filesystem;

std::string url_encode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '-' || c == '.') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// A Prometheus server on loopback, scraping one target every second.
class PrometheusServer {
 public:
  explicit PrometheusServer(int target_port) {
    dir_ = fs::path(testing::TempDir()) /
           ("prometheus-" + std::to_string(getpid()) + "-" + std::to_string(target_port));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "data");
    std::ofstream(dir_ / "prometheus.yml")
        << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: stackaudit\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    port_ = free_port();
    child_ = std::make_unique<Child>(std::vector<std::string>{
        "/usr/bin/prometheus", "--config.file=" + (dir_ / "prometheus.yml").string(),
        "--storage.tsdb.path=" + (dir_ / "data").string(),
        "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"});
  }
  ~PrometheusServer() {
    child_.reset();
    fs::remove_all(dir_);
  }
  bool ready() {
    return eventually(
        [&] {
          int status = 0;
          return http_get(port_, "/-/ready", &status) && status == 200;
        },
        std::chrono::seconds(30));
  }
  // The values of an instant query's result vector.
  std::vector<double> query(const std::string& promql) {
    std::vector<double> out;
    auto body = http_get(port_, "/api/v1/query?query=" + url_encode(promql));
    if (!body) return out;
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (j.is_discarded() || j["status"] != "success") return out;
    for (const auto& r : j["data"]["result"])
      out.push_back(std::stod(r["value"][1].get<std::string>()));
    return out;
  }
  // Waits until the query returns one value that satisfies pred.
  bool until(const std::string& promql, std::function<bool(double)> pred,
             std::chrono::seconds timeout = std::chrono::seconds(30)) {
    return eventually(
        [&] {
          auto v = query(promql);
          return v.size() == 1 && pred(v[0]);
        },
        timeout);
  }

 private:
  fs::path dir_;
  int port_;
  std::unique_ptr<Child> child_;
};

TEST(AgentWithPrometheus, BlockedThreadsRatesAndEpisodesReachPrometheus) {
  Child fixture({kParkThreads, "--nap-ms", "1500"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "500ms"});
  ASSERT_TRUE(agent.serving());
  PrometheusServer prometheus(agent.port());
  ASSERT_TRUE(prometheus.ready());

  ASSERT_TRUE(prometheus.until("stackaudit_target_up", [](double v) { return v == 1; }));
  ASSERT_TRUE(
      prometheus.until("stackaudit_target_info{pid=\"" + std::to_string(fixture.pid()) + "\"}",
                       [](double v) { return v == 1; }));
  // What the fixture parks, category by category (napper sleeps or is between
  // naps). Its epoll_wait thread is an event loop's idle wait: counted apart.
  const std::pair<const char*, double> expected[] = {{"lock", 1},  {"condition", 2}, {"socket", 3},
                                                     {"file", 2},  {"poll", 1},      {"process", 1},
                                                     {"other", 1}, {"sleep", 2}};
  for (const auto& [category, at_least] : expected) {
    SCOPED_TRACE(category);
    double want = at_least;
    EXPECT_TRUE(
        prometheus.until(std::string("stackaudit_blocked_threads{category=\"") + category + "\"}",
                         [&](double v) { return v >= want; }));
  }
  EXPECT_TRUE(prometheus.until("sum(rate(stackaudit_blocked_thread_samples_total[5s]))",
                               [](double v) { return v > 0; }));
  EXPECT_TRUE(prometheus.until("stackaudit_idle_threads{category=\"poll\"}",
                               [](double v) { return v == 1; }));
  EXPECT_TRUE(prometheus.until("stackaudit_blocked_threads{category=\"poll\"}",
                               [](double v) { return v == 1; }));  // poll_wait only
  EXPECT_TRUE(prometheus.until("stackaudit_target_threads", [](double v) { return v >= 15; }));
  EXPECT_TRUE(
      prometheus.until("stackaudit_target_resident_memory_bytes", [](double v) { return v > 0; }));
  // The napper's sleeps end every 1.5 s: each is a blocking episode.
  EXPECT_TRUE(prometheus.until("sum(stackaudit_blocking_episode_seconds_count{category=\"sleep\"})",
                               [](double v) { return v > 0; }));
  EXPECT_TRUE(prometheus.until("process_resident_memory_bytes", [](double v) { return v > 0; }));
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(nothing_stopped(fixture.pid()));
}

TEST(Agent, PromtoolFindsNothingToSayAboutAScrape) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "200ms"});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  ASSERT_TRUE(eventually([&] {
    scrape = agent.scrape();
    return metric_value(scrape, "stackaudit_snapshots_total").value_or(0) >= 2;
  }));
  std::string file = testing::TempDir() + "scrape.txt";
  std::ofstream(file) << scrape;
  RunResult r = run({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + file});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out + r.err, "");
  // Bounded labels: no tid or address anywhere in a label.
  EXPECT_EQ(scrape.find("tid="), std::string::npos);
  EXPECT_NE(scrape.find("stackaudit_blocking_site_samples_total{category=\"lock\",site=\""
                        "(anonymous namespace)::park_mutex_wait (park_threads.cpp:"),
            std::string::npos)
      << scrape;
  // The landing page says what is audited and what waits where.
  auto page = http_get(agent.port(), "/");
  ASSERT_TRUE(page);
  EXPECT_NE(page->find("Auditing: PID " + std::to_string(fixture.pid())), std::string::npos);
  EXPECT_NE(page->find("park_mutex_wait"), std::string::npos);
  EXPECT_NE(page->find("href=\"/metrics\""), std::string::npos);
  EXPECT_EQ(agent.stop(), 0);
}

TEST(Agent, FollowsARestartedServiceWithMatch) {
  std::string tag =
      "follow-" + std::to_string(getpid()) + "-" + std::to_string(std::random_device{}());
  auto first = std::make_unique<Child>(std::vector<std::string>{kParkThreads, "--tag", tag});
  ASSERT_TRUE(first->wait_for("ready", std::chrono::seconds(10)));
  std::string out = testing::TempDir() + "agent-follow-" + std::to_string(getpid()) + ".json";
  fs::remove(out);
  Agent agent({"--match", "park_threads --tag " + tag, "--interval", "200ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  auto info = [&](pid_t pid) {
    return "stackaudit_target_info{comm=\"park_threads\",pid=\"" + std::to_string(pid) + "\"}";
  };
  EXPECT_TRUE(eventually([&] { return metric_value(agent.scrape(), info(first->pid())) == 1.0; }));
  EXPECT_EQ(metric_value(agent.scrape(), "stackaudit_target_up"), 1.0);

  pid_t old = first->pid();
  first.reset();  // SIGKILL
  EXPECT_TRUE(
      eventually([&] { return metric_value(agent.scrape(), "stackaudit_target_up") == 0.0; }));
  EXPECT_FALSE(metric_value(agent.scrape(), info(old)).has_value());

  Child second({kParkThreads, "--tag", tag});
  ASSERT_TRUE(second.wait_for("ready", std::chrono::seconds(10)));
  EXPECT_TRUE(eventually([&] { return metric_value(agent.scrape(), info(second.pid())) == 1.0; }));
  EXPECT_EQ(metric_value(agent.scrape(), "stackaudit_target_up"), 1.0);
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(nothing_stopped(second.pid()));
  // The window counts the rounds without a target and the restart.
  std::ifstream in(out);
  ASSERT_TRUE(in.good());
  const auto target = nlohmann::json::parse(in)["window"]["target"];
  EXPECT_GT(target["rounds_down"], 0);
  EXPECT_EQ(target["restarts"], 1);
  EXPECT_FALSE(target["up_whole_window"]);
}

TEST(Agent, SigtermWritesTheRunsAuditAndLeavesNothingStopped) {
  Child fixture({kParkThreads, "--nap-ms", "300"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  std::string out = testing::TempDir() + "agent-audit.json";
  fs::remove(out);
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually([&] {
    return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0) >= 10;
  }));
  EXPECT_EQ(agent.stop(SIGTERM), 0);
  EXPECT_TRUE(nothing_stopped(fixture.pid()));
  std::ifstream in(out);
  ASSERT_TRUE(in.good());
  auto audit = nlohmann::json::parse(in);
  EXPECT_EQ(audit["schema"], "stackaudit.audit/v1");
  const auto& w = audit["window"];
  EXPECT_GE(w["rounds"], 10);
  EXPECT_GT(w["thread_samples"], 100);
  EXPECT_GT(w["by_category"]["lock"]["samples"], 0);
  EXPECT_GT(w["by_category"]["lock"]["share"], 0.0);
  EXPECT_FALSE(w["sites"].empty());
  EXPECT_FALSE(w["top_stacks"]["lock"].empty());
  EXPECT_GT(w["episodes"]["sleep"]["count"], 0);  // the napper's
  EXPECT_GE(w["episodes"]["sleep"]["max"], w["episodes"]["sleep"]["p50"]);
  EXPECT_GT(w["target"]["rss_bytes"]["max"], 0.0);
  EXPECT_GE(w["target"]["threads"]["min"], 15.0);
  EXPECT_GE(w["target"]["cpu_percent"]["max"], w["target"]["cpu_percent"]["min"]);
  EXPECT_GT(w["target"]["cpu_percent"]["avg"], 10.0);  // the fixture's busy thread
  EXPECT_TRUE(w["cost"]["stop_us"].contains("p99"));
  EXPECT_GT(w["cost"]["threads_reused"], 0);
}

TEST(Agent, Sigusr1WritesTheAuditWithoutStopping) {
  Child fixture({kParkThreads});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  std::string out = testing::TempDir() + "agent-usr1.json";
  fs::remove(out);
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually(
      [&] { return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0) >= 3; }));
  kill(agent.pid(), SIGUSR1);
  EXPECT_TRUE(eventually([&] { return fs::exists(out); }));
  EXPECT_TRUE(agent.serving());  // still running
  EXPECT_EQ(agent.stop(), 0);
}

TEST(Agent, SigkillMidRoundLeavesNothingStopped) {
  // Half of the 200 extra threads need a stop to unwind: rounds are full of
  // real ptrace stops when the kill lands.
  Child fixture({kParkThreads, "--extra", "200"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(20)));
  std::mt19937 rng(42);
  for (int i = 0; i < 10; ++i) {
    Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "10ms"});
    ASSERT_TRUE(agent.serving());
    usleep(std::uniform_int_distribution<useconds_t>(0, 200000)(rng));
    agent.stop(SIGKILL);
    EXPECT_TRUE(eventually([&] { return nothing_stopped(fixture.pid()); }, std::chrono::seconds(5)))
        << "kill " << i;
  }
}

TEST(Agent, ThreadChurnForThirtySeconds) {
  // Hundreds of threads a second come and go; the agent keeps up, its memory
  // stays flat, nothing is left stopped. (ASan's quarantine would otherwise
  // look like growth in the sanitized build.)
  Child fixture({kParkThreads, "--churn", "1", "--extra", "50"});
  ASSERT_TRUE(fixture.wait_for("ready", std::chrono::seconds(10)));
  Agent agent({"--pid", std::to_string(fixture.pid()), "--interval", "100ms", "--duration", "60s"},
              {"ASAN_OPTIONS=quarantine_size_mb=1:detect_leaks=0"});
  ASSERT_TRUE(agent.serving());
  std::this_thread::sleep_for(std::chrono::seconds(10));
  uint64_t early = rss_bytes(agent.pid());
  std::this_thread::sleep_for(std::chrono::seconds(20));
  uint64_t late = rss_bytes(agent.pid());
  ASSERT_GT(early, 0u);
  EXPECT_LT(late, early + early / 4 + (4u << 20)) << "RSS " << early << " -> " << late;
  double rounds = metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0);
  EXPECT_GT(rounds, 100);
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(eventually([&] { return nothing_stopped(fixture.pid()); }));
}

TEST(AgentErrors, PortInUse) {
  int port = free_port();
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  listen(fd.get(), 1);
  RunResult r =
      run({kStackaudit, "agent", "--pid", "1", "--listen", "127.0.0.1:" + std::to_string(port)});
  fd.reset();
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(port) +
                       ": another process already listens on that port"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(AgentErrors, AnAddressOfAnotherMachineIsNamedSo) {
  RunResult r = run({kStackaudit, "agent", "--pid", "1", "--listen", "192.0.2.1:9000"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("192.0.2.1 is not an address of this machine"), std::string::npos) << r.err;
}

TEST(AgentErrors, BadOptionsAreUsageErrors) {
  const std::vector<std::vector<std::string>> cases = {
      {"--pid", "1", "--interval", "0"},
      {"--pid", "1", "--interval", "soon"},
      {"--pid", "1", "--listen", "localhost"},
      {"--pid", "1", "--listen", "127.0.0.1:99999"},
      {"--match", "("},
      {"--pid", "1", "--match", "x"},
      {"--pid", "1", "--duration", "0s"},
      {"--pid", "1", "--interval", "99999999999999h"},
      {"--pid", "1", "--audit-json", "/nonexistent-dir/audit.json"},
      {"--pid", "1", "--audit-json", "/tmp"},
      {"--pid", "1", "--listen", "192.0.2.1:9000"},
      {"--pid", "1", "--max-stop", "0"},
      {"--pid", "1", "--max-stop", "11s"},
      {"--pid", "1", "--max-stop", "short"},
      {},
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {kStackaudit, "agent"};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = run(argv);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_EQ(r.exit_code, 2) << what << ": " << r.err;
    EXPECT_TRUE(r.err.starts_with("stackaudit: ")) << what << ": " << r.err;
  }
}

TEST(Agent, SeveralMatchesAreAllAudited) {
  std::string tag = "twice-" + std::to_string(getpid());
  Child a({kParkThreads, "--tag", tag});
  Child b({kParkThreads, "--tag", tag});
  ASSERT_TRUE(a.wait_for("ready", std::chrono::seconds(10)));
  ASSERT_TRUE(b.wait_for("ready", std::chrono::seconds(10)));
  std::string out = testing::TempDir() + "agent-follow-" + std::to_string(getpid()) + ".json";
  fs::remove(out);
  Agent agent({"--match", "park_threads --tag " + tag, "--interval", "200ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  auto info = [&](pid_t pid) {
    return "stackaudit_target_info{comm=\"park_threads\",pid=\"" + std::to_string(pid) + "\"}";
  };
  std::string scrape;
  // Each fixture and the child it forks and waits for (its descendant).
  EXPECT_TRUE(eventually([&] {
    scrape = agent.scrape();
    return metric_value(scrape, "stackaudit_target_processes") == 4.0 &&
           metric_value(scrape, info(a.pid())) == 1.0 && metric_value(scrape, info(b.pid())) == 1.0;
  })) << scrape;
  // The per-category gauges sum over both: each fixture parks one mutex waiter.
  EXPECT_TRUE(eventually([&] {
    return metric_value(agent.scrape(), "stackaudit_blocked_threads{category=\"lock\"}") == 2.0;
  }));
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(nothing_stopped(a.pid()));
  EXPECT_TRUE(nothing_stopped(b.pid()));
}

TEST(Agent, BlockedEventLoopOfAPythonServiceIsExported) {
  Child service({"/usr/bin/python3.11", PY_SERVICE_SCRIPT});
  ASSERT_TRUE(service.wait_for("ready", std::chrono::seconds(20)));
  std::string out = testing::TempDir() + "agent-loop-" + std::to_string(getpid()) + ".json";
  fs::remove(out);
  Agent agent({"--pid", std::to_string(service.pid()), "--interval", "200ms", "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  EXPECT_TRUE(eventually(
      [&] { return metric_value(agent.scrape(), "stackaudit_event_loop_threads") == 1.0; }));
  service.write_line("block");
  ASSERT_TRUE(service.wait_for("blocking", std::chrono::seconds(10)));
  std::string series =
      "stackaudit_event_loop_blocked_samples_total{category=\"sleep\",site=\"blocking_handler "
      "(py_service.py:" +
      std::to_string(tagged_line(PY_SERVICE_SCRIPT, "loop_sleep")) + ")\"}";
  EXPECT_TRUE(eventually([&] { return metric_value(agent.scrape(), series).value_or(0) > 0; },
                         std::chrono::seconds(10)))
      << agent.scrape();
  std::string pool = "stackaudit_pool_threads{pool=\"legacy_bridge\",state=\"blocked\"}";
  EXPECT_EQ(metric_value(agent.scrape(), pool), 6.0);
  EXPECT_EQ(agent.stop(), 0);

  // The run's window: the loop's blocked samples by site and coroutine, the
  // bridge pool, and that the target stayed up (what `stackaudit gate` reads).
  std::ifstream in(out);
  ASSERT_TRUE(in.good());
  const auto w = nlohmann::json::parse(in)["window"];
  EXPECT_EQ(w["ended"], "signal");
  EXPECT_TRUE(w["planned_seconds"].is_null());
  EXPECT_TRUE(w["target"]["up_whole_window"]);
  EXPECT_EQ(w["target"]["rounds_down"], 0);
  const auto& loops = w["event_loops"];
  EXPECT_EQ(loops["threads"]["max"], 1.0);
  EXPECT_GT(loops["blocked_samples"], 0);
  EXPECT_LT(loops["blocked_samples"], loops["thread_samples"]);  // idle in its selector first
  ASSERT_EQ(loops["sites"].size(), 1u) << loops;
  const auto& site = loops["sites"][0];
  EXPECT_EQ(site["site"],
            "py_service.py:" + std::to_string(tagged_line(PY_SERVICE_SCRIPT, "loop_sleep")));
  EXPECT_EQ(site["function"], "blocking_handler");
  EXPECT_EQ(site["category"], "sleep");
  EXPECT_EQ(site["coroutine"]["function"], "handle_request");
  EXPECT_EQ(site["samples"], loops["blocked_samples"]);
  const nlohmann::json* bridge = nullptr;
  for (const auto& p : w["pools"])
    if (p["name"] == "legacy_bridge") bridge = &p;
  ASSERT_NE(bridge, nullptr) << w["pools"];
  EXPECT_EQ((*bridge)["threads"]["max"], 6.0);
  EXPECT_EQ((*bridge)["last"]["blocked"], 6);
  EXPECT_EQ((*bridge)["idle_share"], 0.0);  // all six parked in their tasks
  EXPECT_GT(w["throughput"]["context_switches_per_second"], 0.0);
  EXPECT_GT(w["throughput"]["cpu_seconds_per_second"], 0.0);  // its crunching thread
}

TEST(AgentErrors, UnmatchedRegexWaitsAndServesTargetUpZero) {
  Agent agent({"--match", "no-such-process-" + std::to_string(getpid()), "--interval", "100ms"});
  ASSERT_TRUE(agent.serving());
  EXPECT_TRUE(
      eventually([&] { return metric_value(agent.scrape(), "stackaudit_target_up") == 0.0; }));
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentErrors, PidModeEndsWhenTheTargetExits) {
  auto fixture = std::make_unique<Child>(std::vector<std::string>{kParkThreads});
  ASSERT_TRUE(fixture->wait_for("ready", std::chrono::seconds(10)));
  std::string out = testing::TempDir() + "agent-exit-" + std::to_string(getpid()) + ".json";
  fs::remove(out);
  Agent agent({"--pid", std::to_string(fixture->pid()), "--interval", "100ms", "--duration", "1h",
               "--audit-json", out});
  ASSERT_TRUE(agent.serving());
  ASSERT_TRUE(eventually(
      [&] { return metric_value(agent.scrape(), "stackaudit_snapshots_total").value_or(0) >= 2; }));
  fixture.reset();
  int status = 0;
  EXPECT_TRUE(eventually([&] { return waitpid(agent.pid(), &status, WNOHANG) == agent.pid(); },
                         std::chrono::seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The window says the target did not stay up for the run it was planned for.
  std::ifstream in(out);
  ASSERT_TRUE(in.good());
  const auto w = nlohmann::json::parse(in)["window"];
  EXPECT_EQ(w["ended"], "target_exited");
  EXPECT_EQ(w["planned_seconds"], 3600.0);
  EXPECT_FALSE(w["target"]["up_whole_window"]);
}

}  // namespace
}  // namespace stackaudit::test
