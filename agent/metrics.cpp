#include "agent/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <functional>

#include "agent/version.h"
#include "collector/rules.h"
#include "collector/utf8.h"
#include "injector/proc.h"

namespace stackaudit {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

const Histogram::BucketBoundaries kRoundBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,   0.25,   0.5,   1,    2.5,   5};
const Histogram::BucketBoundaries kStopBuckets = {5e-6,   1e-5, 2.5e-5, 5e-5, 1e-4,
                                                  2.5e-4, 5e-4, 1e-3,   5e-3, 2e-2};
const Histogram::BucketBoundaries kEpisodeBuckets = {1,   2,   5,   10,   30,   60,
                                                     120, 300, 600, 1800, 3600, 14400};

// TaskAwait::kind: the awaiting label's values (any other folds into "other").
constexpr std::array<const char*, 15> kAwaitKinds = {
    "sleep",    "queue",  "lock", "event",  "condition", "semaphore", "stream", "subprocess",
    "executor", "future", "task", "gather", "running",   "other",     "none"};

std::string await_kind(const std::string& kind) {
  for (const char* k : kAwaitKinds)
    if (kind == k) return kind;
  return "other";
}

prometheus::MetricFamily family(const std::string& name, const std::string& help,
                                prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

prometheus::ClientMetric value(double v, std::vector<prometheus::ClientMetric::Label> labels,
                               prometheus::MetricType type) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (type == prometheus::MetricType::Counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  return m;
}

}  // namespace

std::string episode_key(const Thread& t) {
  std::string key = t.syscall ? std::to_string(t.syscall->nr) : "-";
  if (t.syscall)
    for (uint64_t a : t.syscall->args) key += ":" + std::to_string(a);
  for (const Frame& f : t.frames) key += "|" + f.function + "@" + std::to_string(f.line);
  return key;
}

const ThreadKeys& ThreadKeyCache::get(const Thread& t) {
  auto it = keys_.find(t.tid);
  if (it != keys_.end() && t.captured == "reused") return it->second;
  ThreadKeys k;
  k.site = t.blocking && t.blocking->site ? site_label(*t.blocking->site) : "-";
  for (const Frame& f : t.frames) {
    if (f.inlined) continue;
    k.stack += (k.stack.empty() ? "" : " <- ") + site_label(f);
    if (k.stack.size() > 2000) break;
  }
  k.episode = episode_key(t);
  return keys_[t.tid] = std::move(k);
}

void ThreadKeyCache::end_round(const std::vector<Snapshot>& round) {
  std::unordered_map<pid_t, ThreadKeys> kept;
  for (const Snapshot& s : round)
    for (const Thread& t : s.threads) {
      auto it = keys_.find(t.tid);
      if (it != keys_.end()) kept.emplace(t.tid, std::move(it->second));
    }
  keys_ = std::move(kept);
}

std::vector<EpisodeTracker::Ended> EpisodeTracker::update(const std::vector<Snapshot>& round,
                                                          double interval, ThreadKeyCache& keys) {
  std::vector<Ended> ended;
  std::map<pid_t, Open> next;
  for (const Snapshot& s : round)
    for (const Thread& t : s.threads) {
      if (!t.blocking || t.blocking->idle) continue;  // waiting for work is no blocking episode
      const std::string& key = keys.get(t).episode;
      auto it = open_.find(t.tid);
      if (it != open_.end() && it->second.key == key) {
        Open o = std::move(it->second);
        ++o.rounds;
        next.emplace(t.tid, std::move(o));
        open_.erase(it);
      } else {
        next.emplace(t.tid, Open{key, t.blocking->category, 1});
      }
    }
  // Whatever did not continue has ended: the thread woke, moved on or exited.
  for (auto& [tid, o] : open_) ended.push_back({o.category, o.rounds * interval});
  open_ = std::move(next);
  return ended;
}

std::vector<std::string> loop_labels(const Snapshot& s) {
  std::vector<std::string> out;
  std::map<std::string, size_t> seen;  // name -> loops of that name so far
  for (const EventLoop& l : s.event_loops) {
    if (out.size() >= kMaxLoopsPerProcess) {
      out.push_back("other");
      continue;
    }
    std::string name = l.tid == 0 || l.thread_name.empty() ? "-" : valid_utf8(l.thread_name);
    size_t n = ++seen[name];
    out.push_back(n == 1 ? name : name + " (" + std::to_string(n) + ")");
  }
  return out;
}

AsyncioTracker::Round AsyncioTracker::update(const std::vector<Snapshot>& round, double interval) {
  Round out;
  std::map<std::pair<pid_t, std::string>, int> blocked;
  std::set<std::pair<pid_t, std::string>> cycles;
  for (const Snapshot& s : round) {
    if (!s.summary.asyncio.read) continue;
    std::vector<std::string> labels = loop_labels(s);
    for (size_t i = 0; i < s.event_loops.size(); ++i) {
      const EventLoop& l = s.event_loops[i];
      Loop loop{s.target.pid, labels[i], l.ready_callbacks, l.blocked, 0};
      if (l.blocked) {
        auto key = std::make_pair(s.target.pid, l.id);
        auto it = blocked_rounds_.find(key);
        int n = (it != blocked_rounds_.end() ? it->second : 0) + 1;
        blocked[key] = n;
        loop.blocked_seconds = n * interval;
      }
      out.loops.push_back(std::move(loop));
    }
    for (const AwaitCycle& c : s.summary.asyncio.cycles) {
      std::vector<std::string> ids = c.task_ids;
      std::sort(ids.begin(), ids.end());
      std::string key;
      for (const std::string& id : ids) key += (key.empty() ? "" : ",") + id;
      auto k = std::make_pair(s.target.pid, key);
      if (!cycles.insert(k).second) continue;  // listed twice: once
      out.cycles.push_back({s.target.pid, key, c.names, !cycles_.count(k)});
    }
  }
  blocked_rounds_ = std::move(blocked);
  cycles_ = std::move(cycles);
  return out;
}

AgentMetrics::AgentMetrics(prometheus::Registry& r, size_t max_sites, bool per_process)
    : max_sites_(max_sites),
      target_info_(BuildGauge()
                       .Name("stackaudit_target_info")
                       .Help("The audited process: 1, with its pid and comm as labels")
                       .Register(r)),
      target_up_(BuildGauge()
                     .Name("stackaudit_target_up")
                     .Help("1 when a target process is being audited, 0 when there is none")
                     .Register(r)
                     .Add({})),
      target_processes_(BuildGauge()
                            .Name("stackaudit_target_processes")
                            .Help("Processes audited in the last round (a --match or --children "
                                  "tree: the matches and their descendants, at most "
                                  "--max-processes)")
                            .Register(r)
                            .Add({})),
      snapshots_(BuildCounter()
                     .Name("stackaudit_snapshots_total")
                     .Help("Sampling rounds completed")
                     .Register(r)
                     .Add({})),
      errors_(BuildCounter()
                  .Name("stackaudit_snapshot_errors_total")
                  .Help("Rounds or threads that could not be captured, by reason")
                  .Register(r)),
      snapshot_duration_(BuildHistogram()
                             .Name("stackaudit_snapshot_duration_seconds")
                             .Help("Wall time of one round's capture (listing, reads, stops)")
                             .Register(r)
                             .Add({}, kRoundBuckets)),
      thread_stop_(BuildHistogram()
                       .Name("stackaudit_thread_stop_seconds")
                       .Help("How long each stopped thread was held: from its stop to its "
                             "release; threads read without a stop are not counted")
                       .Register(r)
                       .Add({}, kStopBuckets)),
      stop_watchdog_(BuildCounter()
                         .Name("stackaudit_stop_watchdog_total")
                         .Help("Stops that outlived --max-stop and were ended by the stopper's "
                               "watchdog (the kernel let the thread go); should stay 0")
                         .Register(r)
                         .Add({})),
      stop_races_(
          BuildCounter()
              .Name("stackaudit_stop_races_total")
              .Help(
                  "Stops that landed just as a thread entered a call, by what was done: "
                  "call_reentered (an EINTR undone), restart_redirected (seccomp), "
                  "eintr_seen (a call that may have done part of its work: the program saw EINTR)")
              .Register(r)),
      thread_samples_(BuildCounter()
                          .Name("stackaudit_thread_samples_total")
                          .Help("Threads captured, summed over rounds")
                          .Register(r)
                          .Add({})),
      captures_(BuildCounter()
                    .Name("stackaudit_thread_captures_total")
                    .Help("Thread captures by how they were made: stopped, nonstop (read while "
                          "blocked, no stop), reused (unchanged since the last round), failed")
                    .Register(r)),
      blocked_samples_(BuildCounter()
                           .Name("stackaudit_blocked_thread_samples_total")
                           .Help("Blocked threads seen, summed over rounds, by category; idle "
                                 "waits are counted apart")
                           .Register(r)),
      blocked_threads_(BuildGauge()
                           .Name("stackaudit_blocked_threads")
                           .Help("Blocked threads in the last round, by category; idle waits "
                                 "are counted apart")
                           .Register(r)),
      idle_samples_(BuildCounter()
                        .Name("stackaudit_idle_thread_samples_total")
                        .Help("Threads seen waiting for work (an idle pool worker, an event "
                              "loop in its selector), summed over rounds, by category")
                        .Register(r)),
      idle_threads_(BuildGauge()
                        .Name("stackaudit_idle_threads")
                        .Help("Threads waiting for work in the last round, by category")
                        .Register(r)),
      site_samples_(BuildCounter()
                        .Name("stackaudit_blocking_site_samples_total")
                        .Help("Blocked threads seen at each call site, summed over rounds; the "
                              "first --max-sites distinct sites get a label, the rest "
                              "site=\"other\"")
                        .Register(r)),
      episodes_(BuildHistogram()
                    .Name("stackaudit_blocking_episode_seconds")
                    .Help("How long a thread stayed in one blocking call, from consecutive "
                          "rounds: resolution is the sampling interval; observed when the "
                          "episode ends")
                    .Register(r)),
      loop_blocked_samples_(BuildCounter()
                                .Name("stackaudit_event_loop_blocked_samples_total")
                                .Help("asyncio event loop threads seen blocked outside their "
                                      "selector, summed over rounds, by category and site")
                                .Register(r)),
      loop_threads_(BuildGauge()
                        .Name("stackaudit_event_loop_threads")
                        .Help("Threads running an asyncio event loop in the last round")
                        .Register(r)
                        .Add({})),
      deadlocked_threads_(BuildGauge()
                              .Name("stackaudit_deadlocked_threads")
                              .Help("Threads in a lock deadlock (a ring of threads each waiting "
                                    "for a lock the next one holds) in the last round")
                              .Register(r)
                              .Add({})),
      pool_threads_(BuildGauge()
                        .Name("stackaudit_pool_threads")
                        .Help("Threads per pool (threads named alike, the trailing number "
                              "removed) in the last round, by state: idle, blocked, running")
                        .Register(r)),
      registry_(r),
      per_process_(per_process) {
  BuildGauge()
      .Name("stackaudit_build_info")
      .Help("stackaudit's version")
      .Register(r)
      .Add({{"version", kVersion}})
      .Set(1);
  for (const std::string& c : categories()) {
    blocked_samples_.Add({{"category", c}});
    blocked_threads_.Add({{"category", c}});
  }
  for (const char* mode : {"stopped", "nonstop", "reused", "failed"})
    captures_.Add({{"mode", mode}});
}

void AgentMetrics::targets_changed(const std::vector<TargetProcess>& targets) {
  std::map<std::pair<pid_t, std::string>, prometheus::Gauge*> next;
  for (const TargetProcess& t : targets) {
    auto key = std::make_pair(t.pid, valid_utf8(t.comm));
    auto it = target_info_series_.find(key);
    if (it != target_info_series_.end()) {
      next.insert(*it);
      target_info_series_.erase(it);
      continue;
    }
    prometheus::Gauge& g =
        target_info_.Add({{"pid", std::to_string(key.first)}, {"comm", key.second}});
    g.Set(1);
    next.emplace(key, &g);
  }
  for (auto& [key, gauge] : target_info_series_) target_info_.Remove(gauge);  // gone
  target_info_series_ = std::move(next);
  target_up_.Set(targets.empty() ? 0 : 1);
  target_processes_.Set(static_cast<double>(targets.size()));
}

prometheus::Counter& AgentMetrics::site_counter(prometheus::Family<prometheus::Counter>& family,
                                                std::map<std::string, prometheus::Counter*>& known,
                                                const std::string& category,
                                                const std::string& site) {
  // Bounded labels: the first max_sites distinct sites have their own series.
  std::string name = site;
  if (!site_names_.count(site)) {
    if (site_names_.size() < max_sites_)
      site_names_.insert(site);
    else
      name = "other";
  }
  std::string key = category + '\0' + name;
  auto it = known.find(key);
  if (it == known.end())
    it = known.emplace(key, &family.Add({{"category", category}, {"site", name}})).first;
  return *it->second;
}

void AgentMetrics::observe_round(const std::vector<Snapshot>& round, double duration_seconds,
                                 ThreadKeyCache& keys) {
  snapshots_.Increment();
  snapshot_duration_.Observe(duration_seconds);
  std::map<std::string, double> blocked, idle;
  for (const std::string& c : categories()) blocked[c] = idle[c] = 0;
  size_t loop_threads = 0, deadlocked = 0;
  std::map<std::string, std::array<double, 3>> pools;  // name -> idle, blocked, running
  for (const Snapshot& s : round) {
    observe_process(s, keys, blocked, idle);
    loop_threads += s.summary.event_loop_threads;
    for (const Deadlock& d : s.summary.deadlocks) deadlocked += d.threads.size();
    for (const Pool& p : s.summary.pools) {
      auto& n = pools[p.name];
      n[0] += static_cast<double>(p.idle);
      n[1] += static_cast<double>(p.blocked);
      n[2] += static_cast<double>(p.threads - p.idle - p.blocked);
    }
  }
  for (const auto& [c, n] : blocked) {
    blocked_samples_.Add({{"category", c}}).Increment(n);
    blocked_threads_.Add({{"category", c}}).Set(n);
  }
  for (const auto& [c, n] : idle) {
    idle_samples_.Add({{"category", c}}).Increment(n);
    idle_threads_.Add({{"category", c}}).Set(n);
  }
  loop_threads_.Set(static_cast<double>(loop_threads));
  deadlocked_threads_.Set(static_cast<double>(deadlocked));
  for (auto& [key, gauge] : pools_) gauge->Set(0);  // pools that vanished read 0
  for (const auto& [name, n] : pools) {
    for (auto [state, v] :
         {std::pair<const char*, double>{"idle", n[0]}, {"blocked", n[1]}, {"running", n[2]}}) {
      std::string key = name + '\0' + state;
      auto it = pools_.find(key);
      if (it == pools_.end() && pools_.size() < 3 * max_sites_)
        it = pools_.emplace(key, &pool_threads_.Add({{"pool", name}, {"state", state}})).first;
      if (it != pools_.end()) it->second->Set(v);
    }
  }
}

void AgentMetrics::observe_process(const Snapshot& s, ThreadKeyCache& keys,
                                   std::map<std::string, double>& blocked,
                                   std::map<std::string, double>& idle) {
  thread_samples_.Increment(static_cast<double>(s.threads.size()));
  for (const Thread& t : s.threads) {
    captures_.Add({{"mode", t.captured}}).Increment();
    if (t.captured == "stopped") thread_stop_.Observe(static_cast<double>(t.stop_ns) * 1e-9);
    if (!t.blocking) continue;
    const Blocking& b = *t.blocking;
    if (b.idle) {  // waiting for work: kept apart, as `idle` is in the JSON
      ++idle[b.category];
      continue;
    }
    ++blocked[b.category];
    const std::string& site = keys.get(t).site;
    site_counter(site_samples_, sites_, b.category, site).Increment();
    if (b.blocks_event_loop)
      site_counter(loop_blocked_samples_, loop_sites_, b.category, site).Increment();
  }
  stop_watchdog_.Increment(static_cast<double>(s.capture.watchdog_ended));
  for (auto [outcome, n] :
       {std::pair<const char*, size_t>{"call_reentered", s.capture.eintr_restarted},
        {"restart_redirected", s.capture.restarts_redirected},
        {"eintr_seen", s.capture.eintr_inflicted}})
    stop_races_.Add({{"outcome", outcome}}).Increment(static_cast<double>(n));
  if (s.capture.threads_failed > 0)
    errors_.Add({{"reason", "thread_not_captured"}})
        .Increment(static_cast<double>(s.capture.threads_failed));
}

void AgentMetrics::observe_episodes(const std::vector<EpisodeTracker::Ended>& ended) {
  for (const auto& e : ended)
    episodes_.Add({{"category", e.category}}, kEpisodeBuckets).Observe(e.seconds);
}

void AgentMetrics::observe_error(const std::string& reason) {
  errors_.Add({{"reason", reason}}).Increment();
}

void AgentMetrics::register_asyncio() {
  if (asyncio_tasks_) return;
  asyncio_tasks_ = &BuildGauge()
                        .Name("stackaudit_asyncio_tasks")
                        .Help(
                            "asyncio tasks in the last round, by what they await (sleep, "
                            "queue, lock, ..., task, gather, future, none; see docs/metrics.md)")
                        .Register(registry_);
  ready_callbacks_ = &BuildGauge()
                          .Name("stackaudit_asyncio_ready_callbacks")
                          .Help(
                              "Callbacks waiting in each asyncio event loop's ready queue "
                              "(len(loop._ready)) in the last round, by loop thread")
                          .Register(registry_);
  loop_blocked_now_ = &BuildGauge()
                           .Name("stackaudit_event_loop_blocked_seconds")
                           .Help(
                               "How long each asyncio event loop has been seen blocked outside "
                               "its selector, in consecutive rounds (x interval); 0 when not "
                               "blocked in the last round")
                           .Register(registry_);
  loop_blocked_max_ = &BuildGauge()
                           .Name("stackaudit_event_loop_blocked_seconds_max")
                           .Help(
                               "The longest each asyncio event loop was seen blocked outside "
                               "its selector since the agent started (interval resolution)")
                           .Register(registry_);
  await_cycles_ = &BuildCounter()
                       .Name("stackaudit_asyncio_await_cycles_total")
                       .Help(
                           "asyncio await cycles (tasks awaiting each other in a ring: a "
                           "deadlock) newly seen; one seen in consecutive rounds counts once")
                       .Register(registry_)
                       .Add({});
  await_cycles_now_ = &BuildGauge()
                           .Name("stackaudit_asyncio_await_cycles")
                           .Help(
                               "asyncio await cycles in the last round: tasks that await each "
                               "other in a ring and can never finish")
                           .Register(registry_)
                           .Add({});
}

prometheus::Labels AgentMetrics::process_labels(pid_t pid) const {
  if (!per_process_) return {};
  return {{"pid", std::to_string(pid)}};
}

void AgentMetrics::observe_asyncio(const std::vector<Snapshot>& round,
                                   const AsyncioTracker::Round& tracked) {
  // Tasks by what they await, per process whose tasks were read; every kind
  // present (0 included), as the blocked-thread categories are.
  std::map<pid_t, std::map<std::string, double>> tasks;
  for (const Snapshot& s : round) {
    if (!s.summary.asyncio.read) continue;
    auto& n = tasks[s.target.pid];
    for (const char* k : kAwaitKinds) n[k] = 0;
    for (const EventLoop& l : s.event_loops)
      for (const AsyncTask& t : l.tasks) ++n[await_kind(t.awaiting.kind)];
  }
  if (tasks.empty() && !asyncio_tasks_) return;  // never read: no asyncio series at all
  register_asyncio();
  auto label = [](prometheus::Labels labels, const char* name, const std::string& value) {
    labels.emplace(name, value);
    return labels;
  };
  for (auto it = task_series_.begin(); it != task_series_.end();) {  // processes gone
    if (tasks.count(it->first)) {
      ++it;
      continue;
    }
    for (auto& [kind, gauge] : it->second) asyncio_tasks_->Remove(gauge);
    it = task_series_.erase(it);
  }
  for (const auto& [pid, counts] : tasks) {
    auto& series = task_series_[pid];
    for (const auto& [kind, n] : counts) {
      prometheus::Gauge*& g = series[kind];
      if (!g) g = &asyncio_tasks_->Add(label(process_labels(pid), "awaiting", kind));
      g->Set(n);
    }
  }
  // Loops, by (pid, label): the "other" loops of a process add their ready
  // callbacks and keep the longest block of any of them.
  struct Now {
    double ready = 0;
    bool readable = false;
    double blocked = 0;
  };
  std::map<std::pair<pid_t, std::string>, Now> loops;
  for (const AsyncioTracker::Loop& l : tracked.loops) {
    Now& n = loops[{l.pid, l.label}];
    if (l.ready_callbacks >= 0) {
      n.ready += static_cast<double>(l.ready_callbacks);
      n.readable = true;
    }
    n.blocked = std::max(n.blocked, l.blocked_seconds);
  }
  for (auto it = loop_series_.begin(); it != loop_series_.end();) {  // loops gone
    if (loops.count(it->first)) {
      ++it;
      continue;
    }
    LoopSeries& ls = it->second;
    if (ls.ready) ready_callbacks_->Remove(ls.ready);
    loop_blocked_now_->Remove(ls.blocked_now);
    loop_blocked_max_->Remove(ls.blocked_max);
    it = loop_series_.erase(it);
  }
  for (const auto& [key, n] : loops) {
    auto labels = label(process_labels(key.first), "loop_thread", key.second);
    LoopSeries& ls = loop_series_[key];
    if (!ls.blocked_now) {
      ls.blocked_now = &loop_blocked_now_->Add(labels);
      ls.blocked_max = &loop_blocked_max_->Add(labels);
    }
    if (n.readable) {
      if (!ls.ready) ls.ready = &ready_callbacks_->Add(labels);
      ls.ready->Set(n.ready);
    } else if (ls.ready) {  // unreadable now: no value rather than a stale one
      ready_callbacks_->Remove(ls.ready);
      ls.ready = nullptr;
    }
    // The longest first: a scrape between the two never sees it behind.
    ls.longest = std::max(ls.longest, n.blocked);
    ls.blocked_max->Set(ls.longest);
    ls.blocked_now->Set(n.blocked);
  }
  for (const AsyncioTracker::Cycle& c : tracked.cycles)
    if (c.first_seen) await_cycles_->Increment();
  await_cycles_now_->Set(static_cast<double>(tracked.cycles.size()));
}

void TargetCollectable::set_pids(std::vector<pid_t> pids, bool labeled) {
  std::lock_guard lock(mutex_);
  pids_ = std::move(pids);
  labeled_ = labeled;
}

std::vector<prometheus::MetricFamily> TargetCollectable::Collect() const {
  using prometheus::MetricType;
  std::vector<pid_t> pids;
  bool labeled;
  {
    std::lock_guard lock(mutex_);
    pids = pids_;
    labeled = labeled_;
  }
  double ticks = static_cast<double>(proc::clock_ticks_per_second());
  auto rss = family("stackaudit_target_resident_memory_bytes",
                    "Resident memory of the audited process (VmRSS), read at scrape time",
                    MetricType::Gauge);
  auto threads = family("stackaudit_target_threads",
                        "Threads of the audited process, read at scrape time", MetricType::Gauge);
  auto cpu = family("stackaudit_target_cpu_seconds_total",
                    "CPU time of the audited process by mode (user, system)", MetricType::Counter);
  auto ctx =
      family("stackaudit_target_context_switches_total",
             "Context switches of the audited process's main thread, by type", MetricType::Counter);
  for (pid_t pid : pids) {
    auto info = proc::read_process_info(pid);
    if (!info) continue;
    std::vector<prometheus::ClientMetric::Label> id;
    if (labeled) id.push_back({"pid", std::to_string(pid)});
    auto with = [&](const char* name, const char* v) {
      auto labels = id;
      labels.push_back({name, v});
      return labels;
    };
    rss.metric.push_back(value(static_cast<double>(info->rss_bytes), id, MetricType::Gauge));
    threads.metric.push_back(value(static_cast<double>(info->threads), id, MetricType::Gauge));
    cpu.metric.push_back(value(static_cast<double>(info->utime_ticks) / ticks, with("mode", "user"),
                               MetricType::Counter));
    cpu.metric.push_back(value(static_cast<double>(info->stime_ticks) / ticks,
                               with("mode", "system"), MetricType::Counter));
    ctx.metric.push_back(value(static_cast<double>(info->voluntary_ctxt_switches),
                               with("ctxswitchtype", "voluntary"), MetricType::Counter));
    ctx.metric.push_back(value(static_cast<double>(info->nonvoluntary_ctxt_switches),
                               with("ctxswitchtype", "nonvoluntary"), MetricType::Counter));
  }
  if (rss.metric.empty()) return {};
  return {rss, threads, cpu, ctx};
}

std::vector<prometheus::MetricFamily> ProcessCollectable::Collect() const {
  using prometheus::MetricType;
  pid_t self = ::getpid();
  auto info = proc::read_process_info(self);
  if (!info) return {};
  double ticks = static_cast<double>(proc::clock_ticks_per_second());
  std::vector<prometheus::MetricFamily> out;
  auto add = [&](const char* name, const char* help, MetricType type, double v) {
    auto f = family(name, help, type);
    f.metric.push_back(value(v, {}, type));
    out.push_back(std::move(f));
  };
  add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
      MetricType::Counter, static_cast<double>(info->utime_ticks + info->stime_ticks) / ticks);
  add("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
      static_cast<double>(info->rss_bytes));
  add("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge,
      static_cast<double>(info->virtual_memory_bytes));
  add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
      MetricType::Gauge,
      static_cast<double>(proc::boot_time_seconds()) +
          static_cast<double>(info->start_time_ticks) / ticks);
  add("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
      static_cast<double>(proc::count_fds(self)));
  add("process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge,
      static_cast<double>(proc::max_fds(self)));
  return out;
}

}  // namespace stackaudit
