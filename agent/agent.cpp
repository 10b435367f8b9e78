#include "agent/agent.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <prometheus/registry.h>
#include <regex.h>
#include <algorithm>
#include <optional>

#include <cctype>
#include <memory>

#include "agent/atomic_file.h"
#include "agent/dump.h"
#include "agent/exit_codes.h"
#include "agent/exporter.h"
#include "agent/metrics.h"
#include "agent/pipeline.h"
#include "agent/window.h"
#include "injector/clock.h"
#include "injector/proc.h"
#include "injector/target.h"

namespace stackaudit {
namespace {

std::string joined_cmdline(const ProcessInfo& p) {
  std::string s;
  for (const auto& a : p.cmdline) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string describe(const ProcessInfo& p) {
  return "PID " + std::to_string(p.pid) + " (" + p.comm + ") " + joined_cmdline(p);
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

// Processes whose command line matches (like process-exporter's cmdline
// matching), other than ourselves. A match whose parent matches too is a
// forked helper of the same program (a worker, a child it waits for), not a
// second candidate: only the top of each matching tree counts.
std::vector<ProcessInfo> find_matches(const CmdlineRegex& re) {
  std::vector<ProcessInfo> all;
  for (pid_t pid : proc::list_processes()) {
    if (pid == ::getpid()) continue;
    auto info = proc::read_process_info(pid);
    if (!info || info->cmdline.empty()) continue;
    if (re.search(joined_cmdline(*info))) all.push_back(*info);
  }
  std::vector<ProcessInfo> out;
  for (const ProcessInfo& p : all) {
    bool parent_matches =
        std::any_of(all.begin(), all.end(), [&](const ProcessInfo& q) { return q.pid == p.ppid; });
    if (!parent_matches) out.push_back(p);
  }
  return out;
}

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
  std::unique_ptr<CmdlineRegex> match;
  if (!o.match.empty()) match = std::make_unique<CmdlineRegex>(o.match);
  check_max_stop(o.max_stop);
  civetweb_listen(o.listen);  // validate before touching anything
  if (!o.audit_json.empty()) {
    try {
      check_writable(o.audit_json);  // not only at exit, hours from now
    } catch (const std::exception& e) {
      throw UserError{kExitUsage, std::string(e.what()) + " (--audit-json)"};
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
  AgentMetrics metrics(registry_storage, o.max_sites);
  Exporter exporter(o.listen, {registry, target_figures, self_figures});

  if (o.pid > 0) check_auditable(o.pid);
  if (match) {
    auto found = find_matches(*match);
    if (found.size() > 1) {
      std::string list;
      for (const auto& p : found) list += (list.empty() ? "" : "; ") + describe(p);
      throw UserError{kExitTarget, "--match '" + o.match + "' matches " +
                                       std::to_string(found.size()) +
                                       " processes, make it match one: " + list};
    }
  }

  spdlog::info("serving metrics on http://{}/metrics", o.listen);

  double interval = static_cast<double>(o.interval.count()) / 1000.0;
  RunWindow window(interval);
  EpisodeTracker episodes;
  ThreadKeyCache keys;
  std::optional<Snapshot> latest;
  auto write_audit = [&] {
    if (o.audit_json.empty()) return;
    auto audit = window.audit(latest ? &*latest : nullptr);
    if (audit.is_null()) {
      spdlog::warn("no round completed yet: {} not written", o.audit_json);
      return;
    }
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
          stop = true;
          return;
        }
        ms = std::min(ms, *left);
      }
      uint64_t before = monotonic_ns();
      Wake w = wait_for(ms);
      if (w == Wake::kStop) {
        spdlog::info("stopping on signal");
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

  int exit_code = kExitOk;
  while (!stop) {
    // Find the target.
    std::optional<ProcessInfo> target;
    if (o.pid > 0) {
      target = proc::read_process_info(o.pid);
      if (!target) {
        spdlog::info("PID {} exited; stopping", o.pid);
        break;
      }
    } else {
      auto found = find_matches(*match);
      if (found.size() == 1) target = found.front();
      if (found.size() > 1)
        spdlog::warn("--match '{}' matches {} processes; waiting for one", o.match, found.size());
    }
    if (!target) {
      metrics.target_changed(std::nullopt, "");
      target_figures->set_pid(0);
      exporter.set_latest(nullptr, "nothing matches '" + o.match + "' yet");
      pause(o.interval);
      continue;
    }
    try {
      check_target(target->pid);
    } catch (const TargetError& e) {
      if (o.pid > 0) throw UserError{kExitTarget, e.what()};
      spdlog::warn("{}; waiting", e.what());
      pause(o.interval);
      continue;
    }

    // Audit it, round after round, until it exits or we stop.
    spdlog::info("auditing {}", describe(*target));
    metrics.target_changed(target->pid, target->comm);
    target_figures->set_pid(target->pid);
    episodes.clear();
    AuditPipeline pipeline(target->pid, rules, o.max_stop, o.source_lines);
    while (!stop) {
      uint64_t round_start = monotonic_ns();
      const RawCapture& raw = pipeline.capture();
      bool gone = raw.target_exited || !proc::process_exists(target->pid);
      if (raw.threads.empty() || gone) {
        if (!raw.threads.empty()) metrics.observe_error("target_exited");
        break;
      }
      double seconds = static_cast<double>(raw.duration_ns) * 1e-9;
      Snapshot s = pipeline.build();
      metrics.observe_round(s, seconds, keys);
      auto ended = episodes.update(s, interval, keys);
      metrics.observe_episodes(ended);
      for (const auto& e : ended) window.add_episode(e.category, e.seconds);
      window.add_round(s, self_cpu_seconds(), keys);
      keys.end_round(s);
      exporter.set_latest(&s, describe(*target));
      if (s.capture.eintr_inflicted > 0)
        spdlog::warn(
            "{} thread(s) saw EINTR: they entered an interruptible wait as they were "
            "being stopped",
            s.capture.eintr_inflicted);
      latest = std::move(s);
      auto spent = std::chrono::milliseconds((monotonic_ns() - round_start) / 1000000);
      pause(o.interval > spent ? o.interval - spent : std::chrono::milliseconds(0));
    }
    if (stop) break;
    spdlog::info("{} exited", describe(*target));
    metrics.target_changed(std::nullopt, "");
    target_figures->set_pid(0);
    if (o.pid > 0) break;  // --match follows the next matching process
  }
  write_audit();
  return exit_code;
}

}  // namespace stackaudit
