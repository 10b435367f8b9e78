// Services that fork worker processes: Debian's gunicorn (-k gthread -w 2)
// serving a Flask app whose handlers block, audited with `dump --children`
// and `agent --match`; a worker that exits mid-capture; many descendants and
// --max-processes; a --match that matches the agent itself.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "tests/support.h"

namespace stackaudit::test {
namespace {

namespace fs = std::filesystem;

#ifdef STACKAUDIT_TEST_HOOKS
constexpr bool kHooks = true;
#else
constexpr bool kHooks = false;
#endif

const char* const kForkSleepers = FORK_SLEEPERS_BIN;
const char* const kGunicornApp = GUNICORN_APP_SCRIPT;

std::string unique_tag(const char* what) {
  return std::string(what) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(std::random_device{}());
}

// A loopback port that accepts connections and never answers: the silent
// upstream of the app's /upstream handler.
class SilentUpstream {
 public:
  SilentUpstream() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd_.get(), 16) != 0)
      return;
    getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (!done_) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (poll(&p, 1, 100) == 1)
          accepted_.emplace_back(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      }
    });
  }
  ~SilentUpstream() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }

 private:
  UniqueFd fd_;
  int port_ = 0;
  std::atomic<bool> done_{false};
  std::vector<UniqueFd> accepted_;
  std::thread thread_;
};

// A request sent and left waiting: the handler blocks, nobody reads the
// answer. Closed when destroyed.
UniqueFd send_request(int port, const std::string& path) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd.get(), req.data(), req.size()) < 0) return UniqueFd();
  return fd;
}

// gunicorn -k gthread -w 2 serving tests/targets/gunicorn_app.py. Its
// workers are killed with the master: handlers blocked for a minute would
// otherwise keep an orphaned worker alive that long.
class Gunicorn {
 public:
  Gunicorn(int upstream_port, const std::string& database) : port_(free_port()) {
    std::string dir = fs::path(kGunicornApp).parent_path();
    master_ = std::make_unique<Child>(std::vector<std::string>{
        "/usr/bin/env", "UPSTREAM_PORT=" + std::to_string(upstream_port), "SQLITE_DB=" + database,
        "/usr/bin/gunicorn", "-k", "gthread", "-w", "2", "--threads", "4", "--log-level", "warning",
        "--chdir", dir, "-b", "127.0.0.1:" + std::to_string(port_), "gunicorn_app:app"});
  }
  ~Gunicorn() {
    auto workers = children_of(master_->pid());
    master_->kill_and_reap();
    for (pid_t w : workers) kill(w, SIGKILL);
  }
  // The app answers and both workers run.
  bool ready() {
    return eventually(
        [&] { return http_get(port_, "/ping") == "pong\n" && children_of(pid()).size() == 2; },
        std::chrono::seconds(30));
  }
  pid_t pid() const { return master_->pid(); }
  int port() const { return port_; }

 private:
  int port_;
  std::unique_ptr<Child> master_;
};

// The thread of a worker whose blocking site is `function`, or nullptr.
const nlohmann::json* blocked_in(const nlohmann::json& process, const std::string& function) {
  for (const auto& t : process["threads"])
    if (!t["blocking"].is_null() && !t["blocking"]["site"].is_null() &&
        t["blocking"]["site"]["function"] == function)
      return &t;
  return nullptr;
}

struct Site {
  const char* function;
  const char* category;
  const char* tag;
};
const Site kSites[] = {{"sleep_handler", "sleep", "app_sleep"},
                       {"upstream_handler", "socket", "app_upstream"},
                       // SQLite's busy handler sleeps: a lock wait, named by the library
                       {"write_handler", "lock", "app_write"}};

TEST(Workers, GunicornHandlersBlockedInWorkersShowInDumpChildrenAndAgentMetrics) {
  std::string dir = testing::TempDir() + unique_tag("gunicorn");
  fs::create_directories(dir);
  std::string database = dir + "/app.sqlite";
  // Another connection holds the database: the app's write waits for it.
  Child locker({"/usr/bin/python3", "-c",
                "import sqlite3, sys\n"
                "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                "db.execute('CREATE TABLE events (what TEXT)')\n"
                "db.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                "sys.stdin.read()\n",
                database});
  ASSERT_TRUE(locker.wait_for("locked", std::chrono::seconds(20)));
  SilentUpstream upstream;
  ASSERT_GT(upstream.port(), 0);
  Gunicorn gunicorn(upstream.port(), database);
  ASSERT_TRUE(gunicorn.ready());
  std::vector<UniqueFd> requests;
  for (const char* path : {"/sleep", "/upstream", "/write"})
    requests.push_back(send_request(gunicorn.port(), path));

  // dump --children: each site under a worker, the master as its parent.
  nlohmann::json audit;
  RunResult r;
  ASSERT_TRUE(eventually(
      [&] {
        r = run({kStackaudit, "dump", "--pid", std::to_string(gunicorn.pid()), "--children",
                 "--format", "json"});
        audit = nlohmann::json::parse(r.out, nullptr, false);
        if (audit.is_discarded() || !audit.contains("processes")) return false;
        int found = 0;
        for (const auto& p : audit["processes"])
          for (const Site& s : kSites) found += blocked_in(p, s.function) != nullptr;
        return found == 3;
      },
      std::chrono::seconds(30)))
      << r.err << r.out;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(audit["schema"], "stackaudit.audit/v1");
  ASSERT_EQ(audit["processes"].size(), 3u);
  EXPECT_EQ(audit["summary"]["processes"], 3);
  const auto& master = audit["processes"][0];
  EXPECT_EQ(master["target"]["pid"], gunicorn.pid());
  EXPECT_EQ(master["process_tree"]["depth"], 0);
  for (const Site& s : kSites) {
    SCOPED_TRACE(s.function);
    bool seen = false;
    for (const auto& p : audit["processes"]) {
      const nlohmann::json* t = blocked_in(p, s.function);
      if (!t) continue;
      seen = true;
      EXPECT_EQ(p["process_tree"]["parent_pid"], gunicorn.pid());  // a worker
      EXPECT_EQ(p["process_tree"]["depth"], 1);
      EXPECT_EQ((*t)["blocking"]["category"], s.category);
      const auto& site = (*t)["blocking"]["site"];
      EXPECT_EQ(site["file"], kGunicornApp);
      EXPECT_EQ(site["line"], tagged_line(kGunicornApp, s.tag));
    }
    EXPECT_TRUE(seen);
  }
  EXPECT_EQ(audit["summary"]["by_category"]["socket"], 1);
  EXPECT_GE(audit["summary"]["by_category"]["sleep"], 1);
  EXPECT_GE(audit["summary"]["by_category"]["lock"], 1);

  // The same as text: a section per process, the worker's under its parent.
  r = run({kStackaudit, "dump", "--pid", std::to_string(gunicorn.pid()), "-c"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string master_section =
      "=== process 1 of 3: PID " + std::to_string(gunicorn.pid()) + " (gunicorn), parent PID ";
  EXPECT_NE(r.out.find(master_section), std::string::npos) << r.out;
  for (pid_t worker : children_of(gunicorn.pid())) {
    std::string section = "PID " + std::to_string(worker) + " (gunicorn), parent PID " +
                          std::to_string(gunicorn.pid());
    EXPECT_NE(r.out.find(section + ": /usr/bin/python3 /usr/bin/gunicorn -k gthread"),
              std::string::npos)
        << r.out;
  }
  for (const Site& s : kSites) {
    std::string site = std::string("site: ") + s.function + " (" + kGunicornApp + ":" +
                       std::to_string(tagged_line(kGunicornApp, s.tag)) + ")";
    size_t at = r.out.find(site);
    ASSERT_NE(at, std::string::npos) << site << "\n" << r.out;
    // Under a worker's section, not the master's.
    size_t section = r.out.rfind("=== process ", at);
    EXPECT_EQ(r.out.find("=== process 1 of", section), std::string::npos) << site;
  }
  EXPECT_NE(r.out.find("Total: 3 processes audited;"), std::string::npos) << r.out;

  // The agent: the master and its workers, sites summed over the workers.
  std::string port = std::to_string(gunicorn.port());
  Agent agent({"--match", "gunicorn .*127\\.0\\.0\\.1:" + port, "--interval", "200ms"});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  auto site_series = [](const Site& s) {
    return std::string("stackaudit_blocking_site_samples_total{category=\"") + s.category +
           "\",site=\"" + s.function +
           " (gunicorn_app.py:" + std::to_string(tagged_line(kGunicornApp, s.tag)) + ")\"}";
  };
  EXPECT_TRUE(eventually(
      [&] {
        scrape = agent.scrape();
        for (const Site& s : kSites)
          if (metric_value(scrape, site_series(s)).value_or(0) <= 0) return false;
        return metric_value(scrape, "stackaudit_target_processes") == 3.0;
      },
      std::chrono::seconds(20)))
      << scrape;
  EXPECT_EQ(metric_value(scrape, "stackaudit_blocked_threads{category=\"socket\"}"), 1.0);
  EXPECT_GE(metric_value(scrape, "stackaudit_blocked_threads{category=\"sleep\"}").value_or(0),
            1.0);
  EXPECT_GE(metric_value(scrape, "stackaudit_blocked_threads{category=\"lock\"}").value_or(0),
            1.0);
  std::string master_pid = std::to_string(gunicorn.pid());
  EXPECT_EQ(
      metric_value(scrape, "stackaudit_target_info{comm=\"gunicorn\",pid=\"" + master_pid + "\"}"),
      1.0)
      << scrape;
  EXPECT_EQ(metric_value(scrape, "stackaudit_target_threads{pid=\"" + master_pid + "\"}"), 1.0);
  for (pid_t worker : children_of(gunicorn.pid()))
    EXPECT_GT(metric_value(scrape, "stackaudit_target_resident_memory_bytes{pid=\"" +
                                       std::to_string(worker) + "\"}")
                  .value_or(0),
              0.0)
        << scrape;

  // A worker killed is replaced by the master; the agent follows the new one.
  auto workers = children_of(gunicorn.pid());
  ASSERT_EQ(workers.size(), 2u);
  pid_t killed = workers[0];
  kill(killed, SIGKILL);
  auto info = [](pid_t pid) {
    return "stackaudit_target_info{comm=\"gunicorn\",pid=\"" + std::to_string(pid) + "\"}";
  };
  pid_t replacement = 0;
  EXPECT_TRUE(eventually(
      [&] {
        for (pid_t w : children_of(gunicorn.pid()))
          if (w != workers[0] && w != workers[1]) replacement = w;
        scrape = agent.scrape();
        return replacement > 0 && metric_value(scrape, info(replacement)) == 1.0 &&
               !metric_value(scrape, info(killed)).has_value();
      },
      std::chrono::seconds(30)))
      << scrape;
  EXPECT_EQ(metric_value(scrape, "stackaudit_target_processes"), 3.0);
  EXPECT_EQ(agent.stop(), 0);
  EXPECT_TRUE(nothing_stopped(gunicorn.pid()));
  for (pid_t w : children_of(gunicorn.pid())) EXPECT_TRUE(nothing_stopped(w));
  fs::remove_all(dir);
}

TEST(Workers, AWorkerThatExitsMidCaptureIsReportedAsGone) {
  if (!kHooks) GTEST_SKIP() << "stackaudit was built without -DSTACKAUDIT_TEST_HOOKS=ON";
  Child master({kForkSleepers, "3"});
  auto line = master.read_line(std::chrono::seconds(10));
  ASSERT_TRUE(line && line->starts_with("children ")) << line.value_or("");
  ASSERT_TRUE(master.wait_for("ready", std::chrono::seconds(10)));
  std::istringstream pids(line->substr(9));
  std::vector<pid_t> children;
  for (pid_t p; pids >> p;) children.push_back(p);
  ASSERT_EQ(children.size(), 3u);

  // dump --children lists the tree, then waits on the hook's file while the
  // last child is killed (and reaped by its parent).
  std::string hook = testing::TempDir() + unique_tag("listed");
  RunResult r;
  std::thread dump([&] {
    r = run({"/usr/bin/env", "STACKAUDIT_TEST_HOOK=pause-after-listing:" + hook, kStackaudit,
             "dump", "--pid", std::to_string(master.pid()), "--children"});
  });
  bool listed = eventually([&] { return fs::exists(hook); }, std::chrono::seconds(30));
  pid_t gone = children.back();
  kill(gone, SIGKILL);
  bool reaped = eventually([&] { return process_state(gone) == '?'; });
  fs::remove(hook);
  dump.join();
  ASSERT_TRUE(listed);
  ASSERT_TRUE(reaped);
  EXPECT_EQ(r.exit_code, 1) << r.err;  // done, but a process was gone
  EXPECT_EQ(r.err, "");
  std::string who = "PID " + std::to_string(gone) + " (fork_sleepers)";
  EXPECT_NE(r.out.find("warning: " + who + " is gone: exited before its capture"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(who + ", parent PID " + std::to_string(master.pid()) +
                       ": gone (exited before its capture)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Total: 3 processes audited, 1 gone;"), std::string::npos) << r.out;
  for (pid_t p : children) {
    if (p != gone) {
      EXPECT_TRUE(nothing_stopped(p));
    }
  }
}

TEST(Workers, ManyDescendantsStopAtMaxProcessesAndSaySo) {
  Child master({kForkSleepers, "120"});
  ASSERT_TRUE(master.wait_for("ready", std::chrono::seconds(30)));
  std::string pid = std::to_string(master.pid());

  RunResult r = run({kStackaudit, "dump", "--pid", pid, "--children", "--max-processes", "10"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("warning: PID " + pid +
                       " has 120 descendants; audited 10 processes (--max-processes 10), 111 "
                       "not audited"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("Total: 10 processes audited, 111 not audited (--max-processes);"),
            std::string::npos)
      << r.out;

  // The default cap, 64, in JSON.
  r = run({kStackaudit, "dump", "--pid", pid, "--children", "--format", "json"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto audit = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(audit.is_discarded()) << r.out.substr(0, 2000);
  EXPECT_EQ(audit["processes"].size(), 64u);
  EXPECT_EQ(audit["summary"]["processes"], 64);
  EXPECT_EQ(audit["summary"]["processes_not_audited"], 57);
  EXPECT_EQ(audit["processes"][0]["target"]["pid"], master.pid());
  EXPECT_EQ(audit["processes"][1]["process_tree"]["parent_pid"], master.pid());
  EXPECT_EQ(audit["summary"]["threads"], 64);
  EXPECT_EQ(audit["processes"][0]["summary"]["by_category"]["process"], 1);  // wait()
  EXPECT_TRUE(nothing_stopped(master.pid()));
  for (pid_t c : children_of(master.pid())) EXPECT_TRUE(nothing_stopped(c));
}

TEST(Workers, AMatchOnTheAgentItselfAuditsNeitherItNorItsStopper) {
  std::string tag = unique_tag("audit-me-not");
  RunResult r = run({kStackaudit, "agent", "--match", tag, "--listen",
                     "127.0.0.1:" + std::to_string(free_port()), "--interval", "100ms",
                     "--duration", "1500ms"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string said = "matches stackaudit itself or its stopper";
  size_t at = r.err.find(said);
  EXPECT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(said, at + 1), std::string::npos) << "said once\n" << r.err;
  EXPECT_EQ(r.err.find("auditing PID"), std::string::npos) << r.err;

  Agent agent({"--match", tag, "--interval", "100ms"});
  ASSERT_TRUE(agent.serving());
  std::string scrape;
  EXPECT_TRUE(eventually([&] {
    scrape = agent.scrape();
    return metric_value(scrape, "stackaudit_snapshots_total").value_or(0) == 0 &&
           metric_value(scrape, "stackaudit_target_processes") == 0.0 &&
           metric_value(scrape, "stackaudit_target_up") == 0.0;
  })) << scrape;
  EXPECT_EQ(agent.stop(), 0);
}

TEST(WorkersErrors, BadOptionsAreUsageErrors) {
  const std::vector<std::vector<std::string>> cases = {
      {"dump", "--pid", "1", "--children", "--max-processes", "0"},
      {"dump", "--pid", "1", "--children", "--max-processes", "5000"},
      {"dump", "--pid", "1", "--max-processes", "many"},
      {"agent", "--match", "x", "--children"},
      {"agent", "--pid", "1", "--max-processes", "0"},
  };
  for (const auto& args : cases) {
    std::vector<std::string> argv = {kStackaudit};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = run(argv);
    std::string what;
    for (const auto& a : args) what += a + " ";
    EXPECT_EQ(r.exit_code, 2) << what << ": " << r.err;
    EXPECT_TRUE(r.err.starts_with("stackaudit: ")) << what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
  }
  // --children on a PID that does not exist: target not found.
  RunResult r = run({kStackaudit, "dump", "--pid", "999999999", "--children"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
}

}  // namespace
}  // namespace stackaudit::test
