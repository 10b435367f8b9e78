#include "agent/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/registry.h>
#include <regex.h>
#include <algorithm>
#include <cmath>
#include <mutex>
#include <optional>
#include <random>

#include <cctype>
#include <map>
#include <memory>
#include <set>

#include "agent/atomic_file.h"
#include "agent/audit_json.h"
#include "agent/dump.h"
#include "agent/exit_codes.h"
#include "agent/exporter.h"
#include "agent/metrics.h"
#include "agent/page.h"
#include "agent/pipeline.h"
#include "agent/probe.h"
#include "agent/service_metrics.h"
#include "agent/speedscope.h"
#include "agent/tree_report.h"
#include "agent/window.h"
#include "injector/clock.h"
#include "injector/proc.h"
#include "injector/target.h"

namespace stackaudit {
namespace {

std::string describe(const TreeProcess& p) {
  std::string cmdline;
  for (const auto& a : p.cmdline) cmdline += (cmdline.empty() ? "" : " ") + a;
  return "PID " + std::to_string(p.pid) + " (" + p.comm + ") " + cmdline;
}

// A POSIX extended regular expression (regcomp), owned.
class CmdlineRegex {
 public:
  explicit CmdlineRegex(const std::string& pattern) {
    int rc = regcomp(&re_, pattern.c_str(), REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
      char why[256];
      regerror(rc, &re_, why, sizeof why);
      throw UserError{kExitUsage, "malformed --match regex '" + pattern + "': " + why};
    }
  }
  ~CmdlineRegex() { regfree(&re_); }
  CmdlineRegex(const CmdlineRegex&) = delete;
  CmdlineRegex& operator=(const CmdlineRegex&) = delete;
  bool search(const std::string& text) const {
    return regexec(&re_, text.c_str(), 0, nullptr, 0) == 0;
  }

 private:
  regex_t re_;
};

// What the agent audits this round: the --pid (and with --children its
// descendants), or every --match and its descendants; stackaudit's own
// processes never. Re-scanned every round, so that recycled workers and a
// restarted service are followed.
class TargetFinder {
 public:
  TargetFinder(const AgentOptions& o, const CmdlineRegex* match) : o_(o), match_(match) {}

  // Empty: nothing to audit now (for --pid: the process is gone).
  std::vector<TreeProcess> find() {
    if (o_.pid > 0 && !o_.children) {  // a single --pid: no scan of every process
      auto info = proc::read_process_info(o_.pid);
      if (!info) return {};
      return {{info->pid, info->ppid, 0, info->comm, info->cmdline}};
    }
    ProcessTable table = ProcessTable::scan();
    std::set<pid_t> own = own_processes(table);
    std::vector<TreeProcess> tree =
        process_tree(table, o_.pid > 0 ? std::vector<pid_t>{o_.pid} : matches(table, own), own);
    if (tree.size() > o_.max_processes) {
      if (!capped_)
        spdlog::warn(
            "{} processes to audit (matches and their descendants); auditing the first "
            "{} (--max-processes), {} left out",
            tree.size(), o_.max_processes, tree.size() - o_.max_processes);
      capped_ = true;
      tree.resize(o_.max_processes);
    } else {
      capped_ = false;
    }
    return tree;
  }

 private:
  // The matching processes whose parent does not match (the rest are in
  // their trees).
  std::vector<pid_t> matches(const ProcessTable& table, const std::set<pid_t>& own) {
    std::map<pid_t, Cached> seen;
    std::set<pid_t> matched;
    for (const TreeProcess& p : table.processes) {
      // A command line is read once per process, and again after an exec
      // (its comm changes): a round does not open every /proc/PID/cmdline.
      auto it = cache_.find(p.pid);
      Cached c;
      if (it != cache_.end() && it->second.comm == p.comm) {
        c = it->second;
      } else {
        c.comm = p.comm;
        std::string joined;
        for (const auto& a : proc::read_cmdline(p.pid)) joined += (joined.empty() ? "" : " ") + a;
        c.matches = !joined.empty() && match_->search(joined);
      }
      seen.emplace(p.pid, c);
      if (!c.matches) continue;
      if (own.count(p.pid)) {
        if (!said_own_)
          spdlog::info(
              "--match '{}' matches stackaudit itself or its stopper (PID {}): they are "
              "never audited",
              o_.match, p.pid);
        said_own_ = true;
        continue;
      }
      matched.insert(p.pid);
    }
    cache_ = std::move(seen);
    std::vector<pid_t> roots;
    for (const TreeProcess& p : table.processes)
      if (matched.count(p.pid) && !matched.count(p.ppid)) roots.push_back(p.pid);
    return roots;
  }

  struct Cached {
    std::string comm;
    bool matches = false;
  };
  const AgentOptions& o_;
  const CmdlineRegex* match_;
  std::map<pid_t, Cached> cache_;
  bool capped_ = false;
  bool said_own_ = false;
};

double self_cpu_seconds() {
  auto info = proc::read_process_info(::getpid());
  if (!info) return 0;
  return static_cast<double>(info->utime_ticks + info->stime_ticks) /
         static_cast<double>(proc::clock_ticks_per_second());
}

// Signals are handled synchronously by the sampling thread between rounds:
// blocked everywhere (before any other thread exists) and taken with
// sigtimedwait, which is also how the agent sleeps between rounds.
sigset_t control_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

enum class Wake { kTimeout, kStop, kWriteAudit };

Wake wait_for(std::chrono::milliseconds ms) {
  sigset_t set = control_signals();
  timespec ts{static_cast<time_t>(ms.count() / 1000),
              static_cast<long>(ms.count() % 1000) * 1000000};
  int sig = sigtimedwait(&set, nullptr, &ts);
  if (sig == SIGINT || sig == SIGTERM) return Wake::kStop;
  if (sig == SIGUSR1) return Wake::kWriteAudit;
  return Wake::kTimeout;
}

// window.probes[], window.service and the two throughput figures they give
// (docs/audit-json.md).
void add_probe_figures(nlohmann::json& window, const Prober& prober,
                       const ServiceScraper* service) {
  nlohmann::json probes = nlohmann::json::array();
  std::optional<double> probe_rate;
  for (const ProbeStats& s : prober.results()) {
    probes.push_back(probe_json(s));
    probe_rate = probe_rate.value_or(0) + achieved_rate(s);
  }
  window["probes"] = std::move(probes);
  window["service"] = service ? service->json() : nlohmann::json(nullptr);
  nlohmann::json& throughput = window["throughput"];
  if (!throughput.is_object()) throughput = nlohmann::json::object();
  throughput["probe_requests_per_second"] =
      probe_rate ? nlohmann::json(*probe_rate) : nlohmann::json(nullptr);
  throughput["service_requests_per_second"] =
      service ? window["service"]["requests_per_second"] : nlohmann::json(nullptr);
}

}  // namespace

std::chrono::milliseconds parse_duration(const std::string& text, const char* option) {
  auto bad = [&] {
    return UserError{kExitUsage, std::string("malformed ") + option + " '" + text +
                                     "': expected a duration like 500ms, 1s, 2m or 1h"};
  };
  size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  std::string number = text.substr(0, digits), unit = text.substr(digits);
  if (number.empty() || number.front() == '.' || std::count(number.begin(), number.end(), '.') > 1)
    throw bad();
  double scale = unit == "ms"                  ? 1
                 : unit == "s" || unit.empty() ? 1e3
                 : unit == "m"                 ? 6e4
                 : unit == "h"                 ? 3.6e6
                                               : -1;
  if (scale < 0) throw bad();
  double ms = std::stod(number) * scale;
  // A year is more than any interval, duration or bound needs, and far from
  // what a long long of milliseconds holds.
  constexpr double kLongest = 365.0 * 24 * 3.6e6;
  if (!(ms <= kLongest))
    throw UserError{kExitUsage,
                    std::string(option) + " '" + text + "' is too long (a year at most)"};
  return std::chrono::milliseconds(static_cast<long long>(ms));
}

int run_agent(const AgentOptions& o) {
  if (o.interval.count() <= 0)
    throw UserError{kExitUsage, "--interval must be longer than 0 (e.g. 1s or 100ms)"};
  if ((o.pid > 0) == !o.match.empty())
    throw UserError{kExitUsage, "give exactly one of --pid PID or --match REGEX"};
  if (o.children && o.pid <= 0)
    throw UserError{kExitUsage, "--children goes with --pid (--match audits descendants already)"};
  check_max_processes(o.max_processes);
  check_max_tasks(static_cast<long long>(o.tasks.max_per_loop));
  std::unique_ptr<CmdlineRegex> match;
  if (!o.match.empty()) match = std::make_unique<CmdlineRegex>(o.match);
  check_max_stop(o.max_stop);
  ProbeOptions probe_options =
      make_probe_options(o.probes, o.probe_rate, o.probe_timeout, o.probe_cacert);
  ServiceMetricsOptions service_options{o.service_metrics, o.throughput_metric, o.interval,
                                        o.probe_timeout, o.probe_cacert};
  check_service_metrics(service_options);
  civetweb_listen(o.listen);  // validate before touching anything
  for (const auto& [file, option] : {std::pair{&o.audit_json, "--audit-json"},
                                     {&o.folded, "--folded"},
                                     {&o.speedscope, "--speedscope"}}) {
    if (file->empty()) continue;
    try {
      check_writable(*file);  // not only at exit, hours from now
    } catch (const std::exception& e) {
      throw UserError{kExitUsage, std::string(e.what()) + " (" + option + ")"};
    }
  }
  RuleSet rules = load_rules(o.rules_file);

  sigset_t signals = control_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before the HTTP threads start
  // One open /proc file per target thread makes rounds cheap (injector/capture.h):
  // allow as many files as the hard limit does.
  rlimit files;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  prometheus::Registry registry_storage;
  auto registry = std::shared_ptr<prometheus::Registry>(&registry_storage, [](auto*) {});
  auto target_figures = std::make_shared<TargetCollectable>();
  auto self_figures = std::make_shared<ProcessCollectable>();
  // One audit over a tree (--match, --children): series per process carry a
  // pid label, and the audit JSON has a section per process.
  const bool tree_mode = !o.pid || o.children;
  AgentMetrics metrics(registry_storage, o.max_sites, tree_mode);
  Exporter exporter(o.listen, {registry, target_figures, self_figures});

  if (o.pid > 0) check_auditable(o.pid);

  spdlog::info("serving metrics on http://{}/metrics", o.listen);
  // The probe and the scrape of the service's counter run on threads of their
  // own for the agent's whole life, target or not; they inherit the blocked
  // control signals, so only this thread takes them.
  Prober prober(probe_options, &registry_storage);
  prober.start();
  ServiceScraper service(service_options);
  service.start();

  double interval = static_cast<double>(o.interval.count()) / 1000.0;
  RunWindow window(interval, o.max_processes);
  window.set_flame_by_process(tree_mode);
  // /folded reads the window's stacks on civetweb's thread, built on request:
  // this thread holds window_mutex while a round changes them. The source is
  // cleared (waiting for a request in progress) before the window goes.
  std::mutex window_mutex;
  exporter.set_folded_source([&] {
    std::lock_guard lock(window_mutex);
    return window.flame().folded();
  });
  struct ClearFoldedSource {
    Exporter& exporter;
    ~ClearFoldedSource() { exporter.set_folded_source(nullptr); }
  } clear_folded_source{exporter};
  StatusPage page(interval);  // the page at /, rendered once per round
  if (o.duration.count() > 0)
    window.set_planned_seconds(static_cast<double>(o.duration.count()) / 1e3);
  std::string end_reason = "running";  // why the audit is written: see RunWindow::window_json
  EpisodeTracker episodes;
  AsyncioTracker asyncio;  // loop blocks and await cycles, round to round
  ThreadKeyCache keys;
  std::optional<std::vector<Snapshot>> latest;  // the last round
  std::vector<TreeProcess> latest_tree;
  // --folded and --speedscope: the window's stacks (this thread alone
  // changes them, so no lock is needed to read them here).
  auto write_flame = [&] {
    auto write = [](const std::string& file, const std::string& text) {
      try {
        write_file_atomically(file, text);
        spdlog::info("wrote the run's flame stacks to {}", file);
      } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
      }
    };
    if (o.folded.empty() && o.speedscope.empty()) return;
    if (!latest || latest->empty()) {
      spdlog::warn("no round completed yet: {}{}{} not written", o.folded,
                   o.folded.empty() || o.speedscope.empty() ? "" : " and ", o.speedscope);
      return;
    }
    if (!o.folded.empty()) write(o.folded, window.flame().folded());
    if (o.speedscope.empty()) return;
    std::string name = "stackaudit agent: ";
    if (o.pid > 0)
      name += "PID " + std::to_string(o.pid) + " (" + latest->front().target.comm + ")" +
              (o.children ? " and its descendants" : "");
    else
      name += "--match '" + o.match + "'";
    write(o.speedscope, speedscope_json(window.flame(), name, "thread-samples").dump() + "\n");
  };
  auto write_audit = [&] {
    write_flame();
    if (o.audit_json.empty()) return;
    nlohmann::json audit = window.window_json(tree_mode, end_reason);
    if (audit.is_null() || !latest || latest->empty()) {
      spdlog::warn("no round completed yet: {} not written", o.audit_json);
      return;
    }
    nlohmann::json window_section = std::move(audit);
    if (tree_mode) {
      TreeAudit tree;
      for (const Snapshot& s : *latest) {
        ProcessAudit p;
        p.snapshot = s;
        p.process.pid = s.target.pid;
        for (const TreeProcess& t : latest_tree)
          if (t.pid == s.target.pid) p.process = t;
        tree.processes.push_back(std::move(p));
      }
      audit = tree_audit_json(tree);
    } else {
      audit = audit_json(latest->front());
    }
    add_probe_figures(window_section, prober, o.service_metrics.empty() ? nullptr : &service);
    audit["window"] = std::move(window_section);
    try {
      write_file_atomically(o.audit_json, audit.dump(2) + "\n");
      spdlog::info("wrote the run's audit to {}", o.audit_json);
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
  };

  uint64_t start = monotonic_ns();
  auto time_left = [&]() -> std::optional<std::chrono::milliseconds> {
    if (o.duration.count() == 0) return std::nullopt;
    auto elapsed = std::chrono::milliseconds((monotonic_ns() - start) / 1000000);
    return std::max(std::chrono::milliseconds(0), o.duration - elapsed);
  };
  bool stop = false;
  // Sleeps up to `ms` (bounded by --duration); handles signals meanwhile.
  auto pause = [&](std::chrono::milliseconds ms) {
    for (;;) {
      if (auto left = time_left()) {
        if (left->count() == 0) {
          end_reason = "duration";
          stop = true;
          return;
        }
        ms = std::min(ms, *left);
      }
      uint64_t before = monotonic_ns();
      Wake w = wait_for(ms);
      if (w == Wake::kStop) {
        spdlog::info("stopping on signal");
        end_reason = "signal";
        stop = true;
        return;
      }
      if (w == Wake::kWriteAudit) {
        write_audit();
        auto spent = std::chrono::milliseconds((monotonic_ns() - before) / 1000000);
        ms = ms > spent ? ms - spent : std::chrono::milliseconds(0);
        continue;
      }
      return;
    }
  };

  // The processes audited, each with its own pipeline (module caches, the
  // previous capture for reuse) and one stopper process for all of them.
  struct Audited {
    TreeProcess process;
    std::unique_ptr<AuditPipeline> pipeline;
  };
  std::map<pid_t, Audited> audited;
  std::set<pid_t> refused;  // not traceable: said once, not tried again while it lives
  auto stopper = shared_stopper(o.max_stop);
  TargetFinder finder(o, match.get());

  auto describe_targets = [&](const std::vector<TreeProcess>& tree) {
    if (!tree_mode) return describe(tree.front());
    std::string out = std::to_string(tree.size()) + " process" + (tree.size() == 1 ? "" : "es");
    for (const TreeProcess& p : tree)
      out += "; " + describe(p) + (p.depth > 0 ? ", parent PID " + std::to_string(p.ppid) : "");
    return out;
  };

  // Rounds start --interval apart on average, each from 0.8 to 1.2 of it at
  // random: a fixed period would alias with whatever the target does
  // periodically (a timer, a router that picks a path by the time of day's
  // fraction of a second) and see it always or never.
  std::mt19937_64 jitter(std::random_device{}());
  std::uniform_real_distribution<double> spread(0.8, 1.2);
  int exit_code = kExitOk;
  while (!stop) {
    uint64_t round_start = monotonic_ns();
    auto next_round = std::chrono::milliseconds(std::max<long long>(
        1, std::llround(static_cast<double>(o.interval.count()) * spread(jitter))));
    std::vector<TreeProcess> tree = finder.find();
    if (o.pid > 0 && tree.empty()) {
      spdlog::info("PID {} exited; stopping", o.pid);
      end_reason = "target_exited";
      break;
    }
    // Forget what is gone, start on what is new.
    std::set<pid_t> wanted;
    for (const TreeProcess& p : tree) wanted.insert(p.pid);
    for (auto it = audited.begin(); it != audited.end();) {
      if (wanted.count(it->first)) {
        ++it;
        continue;
      }
      spdlog::info("{} exited", describe(it->second.process));
      it = audited.erase(it);
    }
    std::erase_if(refused, [&](pid_t pid) { return !wanted.count(pid); });
    std::vector<Audited*> order;
    for (const TreeProcess& p : tree) {
      auto it = audited.find(p.pid);
      if (it == audited.end()) {
        if (refused.count(p.pid)) continue;
        try {
          check_target(p.pid);
        } catch (const TargetError& e) {
          if (o.pid == p.pid) throw UserError{kExitTarget, e.what()};
          // A worker that just exited (or is a zombie until its master reaps
          // it) is routine; anything else is worth a warning.
          bool routine = e.reason() == TargetError::Reason::kNotFound ||
                         e.reason() == TargetError::Reason::kZombie;
          if (!routine) spdlog::warn("{}; not audited", e.what());
          refused.insert(p.pid);
          continue;
        }
        spdlog::info(
            "auditing {}",
            describe(p) + (p.depth > 0 ? ", parent PID " + std::to_string(p.ppid) : std::string()));
        it = audited
                 .emplace(p.pid, Audited{p, std::make_unique<AuditPipeline>(
                                                p.pid, rules, o.max_stop, o.source_lines, o.tasks,
                                                stopper)})
                 .first;
      }
      order.push_back(&it->second);
    }

    // Capture them one at a time.
    std::vector<Snapshot> round;
    std::vector<TreeProcess> round_tree;
    double capture_seconds = 0;
    for (Audited* a : order) {
      const RawCapture& raw = a->pipeline->capture();
      capture_seconds += static_cast<double>(raw.duration_ns) * 1e-9;
      bool gone = raw.target_exited || !proc::process_exists(a->process.pid);
      if (raw.threads.empty() || gone) {
        if (!raw.threads.empty()) metrics.observe_error("target_exited");
        spdlog::info("{} exited", describe(a->process));
        audited.erase(a->process.pid);
        continue;
      }
      round.push_back(a->pipeline->build());
      round_tree.push_back(a->process);
    }

    std::vector<AgentMetrics::TargetProcess> targets;
    std::vector<pid_t> pids;
    for (const Snapshot& s : round) {
      targets.push_back({s.target.pid, s.target.comm});
      pids.push_back(s.target.pid);
    }
    metrics.targets_changed(targets);
    target_figures->set_pids(pids, tree_mode);
    if (round.empty()) {
      window.round_without_target();
      page.no_target(o.pid > 0 ? "PID " + std::to_string(o.pid) + " (not audited)"
                               : "nothing matches '" + o.match + "' yet");
      exporter.set_page(page.render(window.flame()));
      if (o.pid > 0 && !proc::process_exists(o.pid)) {
        spdlog::info("PID {} exited; stopping", o.pid);
        end_reason = "target_exited";
        break;
      }
      auto spent = std::chrono::milliseconds((monotonic_ns() - round_start) / 1000000);
      pause(next_round > spent ? next_round - spent : std::chrono::milliseconds(0));
      continue;
    }
    metrics.observe_round(round, capture_seconds, keys);
    auto ended = episodes.update(round, interval, keys);
    metrics.observe_episodes(ended);
    for (const auto& e : ended) window.add_episode(e.category, e.seconds);
    AsyncioTracker::Round tasks = asyncio.update(round, interval);
    metrics.observe_asyncio(round, tasks);
    {
      std::lock_guard lock(window_mutex);
      window.add_round(round, self_cpu_seconds(), keys);
      window.add_asyncio(round, tasks);
    }
    std::set<pid_t> roots;
    for (const TreeProcess& p : round_tree)
      if (p.depth == 0) roots.insert(p.pid);
    window.set_roots(roots);
    keys.end_round(round);
    page.add_round(round, describe_targets(round_tree));
    exporter.set_page(page.render(window.flame()));
    size_t eintr = 0;
    for (const Snapshot& s : round) eintr += s.capture.eintr_inflicted;
    if (eintr > 0)
      spdlog::warn(
          "{} thread(s) saw EINTR: they entered an interruptible wait as they were "
          "being stopped",
          eintr);
    latest = std::move(round);
    latest_tree = std::move(round_tree);
    auto spent = std::chrono::milliseconds((monotonic_ns() - round_start) / 1000000);
    pause(next_round > spent ? next_round - spent : std::chrono::milliseconds(0));
  }
  prober.stop();
  service.stop();
  write_audit();
  return exit_code;
}

}  // namespace stackaudit
