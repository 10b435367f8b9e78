// What the agent saw over its whole run, for --audit-json: the same audit
// (stackaudit.audit/v1, last round in the usual fields) plus a "window"
// section of aggregates (docs/audit-json.md).
#pragma once

#include <sys/types.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "agent/flame.h"
#include "agent/metrics.h"
#include "collector/snapshot.h"

namespace stackaudit {

class RunWindow {
 public:
  // max_processes: figures are kept for the processes audited now and for at
  // most this many that are gone (recycled workers, over days).
  explicit RunWindow(double interval_seconds, size_t max_processes = 64)
      : interval_(interval_seconds), max_gone_(max_processes) {}

  // One round: a snapshot per audited process.
  void add_round(const std::vector<Snapshot>& round, double agent_cpu_seconds,
                 ThreadKeyCache& keys);
  void add_episode(const std::string& category, double seconds);
  // The round's asyncio tasks and event loops, with what `tracked` (the
  // AsyncioTracker's update for the same round) says of blocks and cycles.
  void add_asyncio(const std::vector<Snapshot>& round, const AsyncioTracker::Round& tracked);
  void round_failed() { ++rounds_failed_; }
  // A round in which no target process was there to audit.
  void round_without_target() { ++rounds_down_; }
  // The top-level target processes of this round (a --pid, or each --match
  // that has no matching parent): one that is gone while another has come
  // counts as a restart.
  void set_roots(const std::set<pid_t>& roots);
  // How long the run was asked to last (--duration); unset: until stopped.
  void set_planned_seconds(double seconds) { planned_seconds_ = seconds; }

  // The "window" section: aggregates over every process, and with
  // per_process, "processes": each one's own figures. `ended` says why it is
  // written: "duration", "signal", "target_exited", or "running" (SIGUSR1).
  // Null json when no round ran.
  nlohmann::json window_json(bool per_process, const std::string& ended = "running") const;

  // Every thread of every round, root first under its category: for
  // --folded, --speedscope, /folded and the page's flame graph.
  const FlameStacks& flame() const { return flame_; }
  // Whether flame() puts each thread under a frame naming its process (an
  // agent over several processes: --children, --match). Set before any round.
  void set_flame_by_process(bool by_process) { flame_by_process_ = by_process; }

 private:
  struct MinAvgMax {
    double min = 0, max = 0, sum = 0;
    size_t n = 0;
    void add(double v);
    nlohmann::json json() const;
  };
  double interval_;
  int64_t first_ns_ = 0, last_ns_ = 0;
  size_t rounds_ = 0, rounds_failed_ = 0, samples_ = 0;
  std::map<std::string, size_t> by_category_;
  std::map<std::string, size_t> idle_by_category_;                 // waiting for work, kept apart
  std::map<std::pair<std::string, std::string>, size_t> by_site_;  // (category, site)
  std::map<std::string, std::map<std::string, size_t>> stacks_;    // category -> stack -> count
  std::map<std::string, std::vector<double>> episodes_;
  // Bounded for runs of days: past kMaxSamples, a uniform reservoir sample.
  static constexpr size_t kMaxSamples = 100000;
  std::vector<uint64_t> stop_ns_;
  size_t stops_seen_ = 0;
  std::map<std::string, size_t> episodes_seen_;
  uint64_t rng_ = 0x9e3779b97f4a7c15ull;
  void add_switches(const Snapshot& s);
  void add_loop_site(const Blocking& b);
  template <class T>
  void keep_sample(std::vector<T>& samples, size_t& seen, T value);
  size_t stopped_ = 0, not_stopped_ = 0, reused_ = 0;
  size_t stop_retries_ = 0, watchdog_ended_ = 0, eintr_restarted_ = 0, eintr_inflicted_ = 0;
  // The target's figures per round: summed over the processes audited then.
  MinAvgMax rss_, threads_, cpu_percent_;  // cpu_percent_: target CPU between rounds, % of a core
  // Each process's own figures.
  struct ProcessFigures {
    pid_t ppid = 0;
    std::string comm;
    std::vector<std::string> cmdline;
    int64_t first_ns = 0, last_ns = 0;
    size_t rounds = 0;
    MinAvgMax rss, threads, cpu_percent;
    std::optional<std::pair<uint64_t, uint64_t>> first_cpu, last_cpu;  // ticks (user, sys)
    int64_t last_cpu_ns = 0;                                           // when last_cpu was read
  };
  std::map<pid_t, ProcessFigures> processes_;
  size_t max_gone_;
  // Whether the target stayed up.
  size_t rounds_down_ = 0, restarts_ = 0;
  std::set<pid_t> roots_;
  std::optional<double> planned_seconds_;
  // Context switches: each thread's schedstat timeslices at the last round
  // (per process), and the switches counted between rounds.
  std::map<pid_t, std::map<pid_t, uint64_t>> timeslices_;
  uint64_t switches_ = 0;
  // Event-loop threads: samples, and the blocked ones by (site, coroutine).
  struct LoopSite {
    Frame site;
    std::optional<Frame> coroutine;
    std::string category, primitive;
    size_t samples = 0;
  };
  MinAvgMax loop_threads_;
  size_t loop_samples_ = 0, loop_blocked_ = 0;
  std::map<std::tuple<std::string, std::string, std::string>, LoopSite> loop_sites_;
  // Thread pools by name, summed over processes, from the round each was first seen.
  struct PoolFigures {
    MinAvgMax threads;
    size_t samples = 0, idle = 0, blocked = 0;
    size_t last_threads = 0, last_idle = 0, last_blocked = 0;
    size_t last_round = 0;  // the round it was last seen in
  };
  std::map<std::string, PoolFigures> pools_;
  // asyncio, over the rounds that read tasks ("asyncio" in the JSON).
  struct TaskStack {
    std::string awaiting, site, stack, example;
    size_t samples = 0, max_tasks = 0;  // max_tasks: the most in one round
  };
  struct LoopFigures {
    size_t rounds = 0, blocked_rounds = 0;
    MinAvgMax ready_callbacks;  // rounds it was readable
    double longest_block = 0;
    size_t last_round = 0;
  };
  struct CycleSeen {
    std::vector<std::string> names;
    size_t rounds = 0;
    int64_t first_ns = 0, last_ns = 0;
  };
  static constexpr size_t kMaxTaskStacks = 10000, kMaxCycles = 100;
  size_t asyncio_rounds_ = 0, task_samples_ = 0, task_stacks_dropped_ = 0, cycles_dropped_ = 0;
  MinAvgMax tasks_;
  std::map<std::string, size_t> tasks_by_awaiting_;
  std::map<std::string, TaskStack> task_stacks_;                // awaiting + '\0' + stack
  std::map<std::pair<pid_t, std::string>, LoopFigures> loops_;  // (pid, loop_labels())
  std::map<std::pair<pid_t, std::string>, CycleSeen> cycles_;   // (pid, sorted task ids)
  double longest_block_ = 0;
  double first_agent_cpu_ = -1, last_agent_cpu_ = 0;
  FlameStacks flame_;
  bool flame_by_process_ = false;
};

// Percentile by nearest rank (p in [0, 1]); 0 for an empty set.
double percentile(std::vector<double> values, double p);

}  // namespace stackaudit
