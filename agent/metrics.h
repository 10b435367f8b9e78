// The Prometheus metrics of the continuous agent (ARCHITECTURE §7,
// docs/metrics.md). Sampling rounds feed AgentMetrics; figures about the
// target and about the agent itself are read from /proc at scrape time by
// collectables, never with ptrace and never from a scrape thread's capture.
#pragma once

#include <sys/types.h>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "collector/snapshot.h"

namespace stackaudit {

// Strings derived from a blocked thread (its site label, its stack as text,
// its episode key). A thread reused by the capture has not changed, so they
// are computed once and kept while it stays that way: with a thousand
// unchanged threads, this is most of a round's work.
struct ThreadKeys {
  std::string site;
  std::string stack;
  std::string episode;
};

class ThreadKeyCache {
 public:
  const ThreadKeys& get(const Thread& t);
  // Forgets threads that are gone (tids are unique across processes: one
  // cache serves every process of a round).
  void end_round(const std::vector<Snapshot>& round);

 private:
  std::unordered_map<pid_t, ThreadKeys> keys_;
};

// Threads that stay in one blocking call (same syscall line and stack) over
// consecutive rounds are one episode; when it ends, its length is observed.
class EpisodeTracker {
 public:
  struct Ended {
    std::string category;
    double seconds;
  };
  // Feeds one round (every audited process); returns the episodes that ended
  // with it.
  std::vector<Ended> update(const std::vector<Snapshot>& round, double interval_seconds,
                            ThreadKeyCache& keys);
  void clear() { open_.clear(); }

 private:
  struct Open {
    std::string key;
    std::string category;
    int rounds = 0;
  };
  std::map<pid_t, Open> open_;
};

// The key that says "the same blocking call": syscall and stack.
std::string episode_key(const Thread& t);

// asyncio (issue 12). An event loop is named in metrics and in the run's
// window by its thread's name ("-" when no thread runs it); a second loop of
// one process on a thread of the same name is "NAME (2)", and loops past the
// first kMaxLoopsPerProcess of a process are all "other". One label per loop
// of s.event_loops, in order.
constexpr size_t kMaxLoopsPerProcess = 8;
std::vector<std::string> loop_labels(const Snapshot& s);

// What the agent follows of asyncio from round to round: how long each event
// loop has been seen blocked outside its selector (consecutive rounds, so the
// resolution is the interval), and which await cycles are new.
class AsyncioTracker {
 public:
  struct Loop {
    pid_t pid = 0;
    std::string label;             // loop_labels()
    int64_t ready_callbacks = -1;  // len(loop._ready); -1 unreadable
    bool blocked = false;
    double blocked_seconds = 0;  // the block going on: rounds seen blocked in a row x interval
  };
  struct Cycle {
    pid_t pid = 0;
    std::string key;                 // its task ids, sorted: the same cycle in every round
    std::vector<std::string> names;  // in await order
    bool first_seen = false;         // not in the previous round
  };
  struct Round {
    std::vector<Loop> loops;  // every loop of every process whose tasks were read
    std::vector<Cycle> cycles;
  };
  Round update(const std::vector<Snapshot>& round, double interval_seconds);

 private:
  std::map<std::pair<pid_t, std::string>, int> blocked_rounds_;  // (pid, loop id) -> in a row
  std::set<std::pair<pid_t, std::string>> cycles_;               // (pid, key), last round
};

class AgentMetrics {
 public:
  // per_process: the asyncio series carry a pid label (an audit over a tree
  // or a --match), as the stackaudit_target_* series do.
  AgentMetrics(prometheus::Registry& registry, size_t max_sites, bool per_process = false);

  // The processes audited now (none: stackaudit_target_up 0).
  struct TargetProcess {
    pid_t pid;
    std::string comm;
  };
  void targets_changed(const std::vector<TargetProcess>& targets);
  // One round: a snapshot per audited process. Counters add every process's
  // threads; gauges are the sums over the processes.
  void observe_round(const std::vector<Snapshot>& round, double duration_seconds,
                     ThreadKeyCache& keys);
  void observe_episodes(const std::vector<EpisodeTracker::Ended>& ended);
  void observe_error(const std::string& reason);
  // The round's asyncio tasks and loops (processes whose tasks were read);
  // series of processes and loops no longer there are removed.
  void observe_asyncio(const std::vector<Snapshot>& round, const AsyncioTracker::Round& tracked);

 private:
  prometheus::Counter& site_counter(prometheus::Family<prometheus::Counter>& family,
                                    std::map<std::string, prometheus::Counter*>& known,
                                    const std::string& category, const std::string& site);
  // One process's share of a round: its counters, and its blocked and idle
  // threads added to the round's sums.
  void observe_process(const Snapshot& s, ThreadKeyCache& keys,
                       std::map<std::string, double>& blocked, std::map<std::string, double>& idle);

  size_t max_sites_;
  prometheus::Family<prometheus::Gauge>& target_info_;
  prometheus::Gauge& target_up_;
  prometheus::Gauge& target_processes_;
  std::map<std::pair<pid_t, std::string>, prometheus::Gauge*> target_info_series_;
  prometheus::Counter& snapshots_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Histogram& snapshot_duration_;
  prometheus::Histogram& thread_stop_;
  prometheus::Counter& stop_watchdog_;
  prometheus::Family<prometheus::Counter>& stop_races_;
  prometheus::Counter& thread_samples_;
  prometheus::Family<prometheus::Counter>& captures_;
  prometheus::Family<prometheus::Counter>& blocked_samples_;
  prometheus::Family<prometheus::Gauge>& blocked_threads_;
  prometheus::Family<prometheus::Counter>& idle_samples_;
  prometheus::Family<prometheus::Gauge>& idle_threads_;
  prometheus::Family<prometheus::Counter>& site_samples_;
  prometheus::Family<prometheus::Histogram>& episodes_;
  prometheus::Family<prometheus::Counter>& loop_blocked_samples_;
  prometheus::Gauge& loop_threads_;
  prometheus::Gauge& deadlocked_threads_;
  prometheus::Family<prometheus::Gauge>& pool_threads_;
  std::map<std::string, prometheus::Counter*> sites_;  // "category\0site" -> series
  std::map<std::string, prometheus::Counter*> loop_sites_;
  std::set<std::string> site_names_;  // distinct sites given a label
  std::map<std::string, prometheus::Gauge*> pools_;
  // asyncio: families registered with the first round that read tasks.
  void register_asyncio();
  prometheus::Labels process_labels(pid_t pid) const;
  prometheus::Registry& registry_;
  bool per_process_;
  prometheus::Family<prometheus::Gauge>* asyncio_tasks_ = nullptr;
  prometheus::Family<prometheus::Gauge>* ready_callbacks_ = nullptr;
  prometheus::Family<prometheus::Gauge>* loop_blocked_now_ = nullptr;
  prometheus::Family<prometheus::Gauge>* loop_blocked_max_ = nullptr;
  prometheus::Counter* await_cycles_ = nullptr;
  prometheus::Gauge* await_cycles_now_ = nullptr;
  std::map<pid_t, std::map<std::string, prometheus::Gauge*>> task_series_;  // pid -> kind -> series
  struct LoopSeries {
    prometheus::Gauge* ready = nullptr;  // null while unreadable
    prometheus::Gauge* blocked_now = nullptr;
    prometheus::Gauge* blocked_max = nullptr;
    double longest = 0;
  };
  std::map<std::pair<pid_t, std::string>, LoopSeries> loop_series_;  // (pid, label)
};

// stackaudit_target_* figures of the audited processes, read at scrape time:
// one series per process, with a pid label when `labeled` (an audit over a
// tree or a --match; the list is bounded by --max-processes), without one
// for a single --pid.
class TargetCollectable : public prometheus::Collectable {
 public:
  void set_pids(std::vector<pid_t> pids, bool labeled);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable std::mutex mutex_;
  std::vector<pid_t> pids_;
  bool labeled_ = false;
};

// The agent's own process_* figures (prometheus-cpp has no process collector).
class ProcessCollectable : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace stackaudit
