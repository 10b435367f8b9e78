#include "agent/window.h"

#include <algorithm>

#include "agent/audit_json.h"
#include "agent/metrics.h"
#include "collector/percentile.h"
#include "collector/rules.h"
#include "collector/snapshot_builder.h"
#include "collector/utf8.h"
#include "injector/proc.h"

namespace stackaudit {
namespace {

// "async_service.py:57": where a frame is, in the words a gate names it; its
// function when it has no file.
std::string file_and_line(const Frame& f) {
  if (f.file.empty()) return frame_name(f);
  std::string out = f.file.substr(f.file.rfind('/') + 1);
  if (f.line > 0) out += ":" + std::to_string(f.line);
  return out;
}

// Where a task waits, in a few words: its innermost coroutine of the user's
// own code (not asyncio's Queue.get under it), else its innermost one.
std::string task_site(const AsyncTask& t) {
  for (const Frame& f : t.coroutine)
    if (is_user_frame(f)) return site_label(f);
  return t.coroutine.empty() ? "-" : site_label(t.coroutine.front());
}

}  // namespace

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return percentile_of_sorted(v, p);
}

template <class T>
void RunWindow::keep_sample(std::vector<T>& samples, size_t& seen, T value) {
  ++seen;
  if (samples.size() < kMaxSamples) {
    samples.push_back(value);
    return;
  }
  rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;  // LCG: uniform enough here
  size_t slot = static_cast<size_t>((rng_ >> 16) % seen);
  if (slot < kMaxSamples) samples[slot] = value;
}

void RunWindow::MinAvgMax::add(double v) {
  min = n == 0 ? v : std::min(min, v);
  max = n == 0 ? v : std::max(max, v);
  sum += v;
  ++n;
}

nlohmann::json RunWindow::MinAvgMax::json() const {
  return {{"min", min}, {"avg", n ? sum / static_cast<double>(n) : 0.0}, {"max", max}};
}

void RunWindow::add_round(const std::vector<Snapshot>& round, double agent_cpu_seconds,
                          ThreadKeyCache& keys) {
  if (round.empty()) return;
  int64_t at = round.front().captured_at_unix_ns;
  if (rounds_ == 0) first_ns_ = at;
  last_ns_ = at;
  ++rounds_;
  double rss = 0, threads = 0, cpu_percent = 0;
  bool cpu_known = false;
  size_t loop_threads = 0;
  std::map<std::string, Pool> pools;  // this round's, summed over processes
  for (const Snapshot& s : round) {
    add_switches(s);
    loop_threads += s.summary.event_loop_threads;
    for (const Pool& p : s.summary.pools) {
      Pool& sum = pools[p.name];
      sum.threads += p.threads;
      sum.idle += p.idle;
      sum.blocked += p.blocked;
    }
    samples_ += s.threads.size();
    flame_.add(s, flame_by_process_);
    watchdog_ended_ += s.capture.watchdog_ended;
    eintr_restarted_ += s.capture.eintr_restarted;
    eintr_inflicted_ += s.capture.eintr_inflicted;
    stop_retries_ += s.capture.stop_retries;
    for (const Thread& t : s.threads) {
      if (t.captured == "stopped") {
        ++stopped_;
        keep_sample(stop_ns_, stops_seen_, t.stop_ns);
      } else if (t.captured == "reused") {
        ++reused_;
      } else if (t.captured == "nonstop") {
        ++not_stopped_;
      }
      bool loop = s.summary.event_loop_threads > 0 && runs_event_loop(t);
      if (loop) ++loop_samples_;
      if (!t.blocking) continue;
      const Blocking& b = *t.blocking;
      if (loop && b.blocks_event_loop) add_loop_site(b);
      if (b.idle) {  // waiting for work: kept apart from blocking
        ++idle_by_category_[b.category];
        continue;
      }
      const ThreadKeys& k = keys.get(t);
      ++by_category_[b.category];
      ++by_site_[{b.category, k.site}];
      ++stacks_[b.category][k.stack];
    }
    ProcessFigures& p = processes_[s.target.pid];
    if (p.rounds++ == 0) {
      p.first_ns = s.captured_at_unix_ns;
      p.comm = s.target.comm;
      p.cmdline = s.target.cmdline;
      if (auto stat = proc::read_stat(s.target.pid, s.target.pid)) p.ppid = stat->ppid;
    }
    p.last_ns = s.captured_at_unix_ns;
    p.rss.add(static_cast<double>(s.target.rss_bytes));
    p.threads.add(static_cast<double>(s.target.threads));
    rss += static_cast<double>(s.target.rss_bytes);
    threads += static_cast<double>(s.target.threads);
    if (auto info = proc::read_process_info(s.target.pid)) {
      std::pair<uint64_t, uint64_t> now{info->utime_ticks, info->stime_ticks};
      if (!p.first_cpu) p.first_cpu = now;
      if (p.last_cpu && s.captured_at_unix_ns > p.last_cpu_ns) {
        double ticks =
            static_cast<double>(now.first + now.second - p.last_cpu->first - p.last_cpu->second);
        double seconds = static_cast<double>(s.captured_at_unix_ns - p.last_cpu_ns) * 1e-9;
        double percent =
            100.0 * ticks / static_cast<double>(proc::clock_ticks_per_second()) / seconds;
        p.cpu_percent.add(percent);
        cpu_percent += percent;
        cpu_known = true;
      }
      p.last_cpu = now;
      p.last_cpu_ns = s.captured_at_unix_ns;
    }
  }
  rss_.add(rss);
  threads_.add(threads);
  if (cpu_known) cpu_percent_.add(cpu_percent);
  loop_threads_.add(static_cast<double>(loop_threads));
  for (auto& [name, p] : pools_)  // pools seen before and absent now: none of their threads left
    if (!pools.count(name)) p.threads.add(0);
  for (const auto& [name, now] : pools) {
    PoolFigures& p = pools_[name];
    p.threads.add(static_cast<double>(now.threads));
    p.samples += now.threads;
    p.idle += now.idle;
    p.blocked += now.blocked;
    p.last_threads = now.threads;
    p.last_idle = now.idle;
    p.last_blocked = now.blocked;
    p.last_round = rounds_;
  }
  // Bounded for runs of days with recycled workers: the processes gone
  // longest are forgotten first.
  std::vector<std::pair<int64_t, pid_t>> gone;
  for (const auto& [pid, p] : processes_)
    if (p.last_ns < at) gone.emplace_back(p.last_ns, pid);
  if (gone.size() > max_gone_) {
    std::sort(gone.begin(), gone.end());
    for (size_t i = 0; i < gone.size() - max_gone_; ++i) processes_.erase(gone[i].second);
  }
  if (first_agent_cpu_ < 0) first_agent_cpu_ = agent_cpu_seconds;
  last_agent_cpu_ = agent_cpu_seconds;
}

void RunWindow::add_switches(const Snapshot& s) {
  // A thread seen in the last round adds what it did since; a thread born
  // since then adds all it did, in a process already audited (it was born in
  // the window), and nothing in a new one (its past is not this window's).
  bool known = timeslices_.count(s.target.pid) > 0;
  std::map<pid_t, uint64_t>& last = timeslices_[s.target.pid];
  std::map<pid_t, uint64_t> now;
  for (const Thread& t : s.threads) {
    if (t.timeslices == 0) continue;  // unknown (no schedstat)
    now[t.tid] = t.timeslices;
    auto it = last.find(t.tid);
    if (it != last.end())
      switches_ += t.timeslices >= it->second ? t.timeslices - it->second : 0;
    else if (known)
      switches_ += t.timeslices;
  }
  last = std::move(now);
}

void RunWindow::add_loop_site(const Blocking& b) {
  ++loop_blocked_;
  Frame site = b.site ? *b.site : Frame{};
  if (!b.site) site.function = b.primitive;
  std::string where = file_and_line(site);
  std::string coroutine = b.coroutine ? site_label(*b.coroutine) : "";
  LoopSite& l = loop_sites_[{where, coroutine, b.category}];
  if (l.samples++ == 0) {
    l.site = site;
    l.coroutine = b.coroutine;
    l.category = b.category;
    l.primitive = b.primitive;
  }
}

void RunWindow::add_asyncio(const std::vector<Snapshot>& round,
                            const AsyncioTracker::Round& tracked) {
  size_t tasks = 0;
  bool read = false;
  std::map<std::string, size_t> this_round;  // task stack -> tasks this round
  for (const Snapshot& s : round) {
    if (!s.summary.asyncio.read) continue;
    read = true;
    for (const EventLoop& l : s.event_loops)
      for (const AsyncTask& t : l.tasks) {
        ++tasks;
        std::string awaiting = t.awaiting.kind.empty() ? "none" : t.awaiting.kind;
        ++tasks_by_awaiting_[awaiting];
        std::string stack;
        for (const Frame& f : t.coroutine) {
          stack += (stack.empty() ? "" : " <- ") + site_label(f);
          if (stack.size() > 2000) break;
        }
        std::string key = awaiting + '\0' + stack;
        auto it = task_stacks_.find(key);
        if (it == task_stacks_.end()) {
          if (task_stacks_.size() >= kMaxTaskStacks) {  // bounded for runs of days
            ++task_stacks_dropped_;
            continue;
          }
          it = task_stacks_.emplace(key, TaskStack{awaiting, task_site(t), stack, t.name}).first;
        }
        ++it->second.samples;
        ++this_round[key];
      }
  }
  if (!read) return;
  ++asyncio_rounds_;
  task_samples_ += tasks;
  tasks_.add(static_cast<double>(tasks));
  for (const auto& [key, n] : this_round) {
    TaskStack& t = task_stacks_[key];
    t.max_tasks = std::max(t.max_tasks, n);
  }
  // Loops by label: the "other" loops of a process add their ready
  // callbacks, as in the metrics.
  std::map<std::pair<pid_t, std::string>, std::pair<int64_t, double>> loops;  // ready, block
  std::map<std::pair<pid_t, std::string>, bool> blocked;
  for (const AsyncioTracker::Loop& l : tracked.loops) {
    auto key = std::make_pair(l.pid, l.label);
    auto& [ready, block] = loops.try_emplace(key, -1, 0.0).first->second;
    if (l.ready_callbacks >= 0) ready = std::max<int64_t>(ready, 0) + l.ready_callbacks;
    block = std::max(block, l.blocked_seconds);
    blocked[key] = blocked[key] || l.blocked;
  }
  for (const auto& [key, now] : loops) {
    LoopFigures& f = loops_[key];
    ++f.rounds;
    f.last_round = asyncio_rounds_;
    if (now.first >= 0) f.ready_callbacks.add(static_cast<double>(now.first));
    if (blocked[key]) ++f.blocked_rounds;
    f.longest_block = std::max(f.longest_block, now.second);
    longest_block_ = std::max(longest_block_, now.second);
  }
  // The loops of processes no longer kept (see add_round) go with them.
  std::erase_if(loops_, [&](const auto& l) { return !processes_.count(l.first.first); });
  int64_t at = round.front().captured_at_unix_ns;
  for (const AsyncioTracker::Cycle& c : tracked.cycles) {
    auto key = std::make_pair(c.pid, c.key);
    auto it = cycles_.find(key);
    if (it == cycles_.end()) {
      if (cycles_.size() >= kMaxCycles) {
        cycles_dropped_ += c.first_seen ? 1 : 0;
        continue;
      }
      it = cycles_.emplace(key, CycleSeen{c.names, 0, at, at}).first;
    }
    ++it->second.rounds;
    it->second.last_ns = at;
  }
}

void RunWindow::set_roots(const std::set<pid_t>& roots) {
  bool lost = false, gained = false;
  for (pid_t p : roots_) lost |= !roots.count(p);
  for (pid_t p : roots) gained |= !roots_.count(p);
  if (lost && gained) ++restarts_;
  if (!roots.empty()) roots_ = roots;
}

void RunWindow::add_episode(const std::string& category, double seconds) {
  keep_sample(episodes_[category], episodes_seen_[category], seconds);
}

nlohmann::json RunWindow::window_json(bool per_process, const std::string& ended) const {
  using nlohmann::json;
  if (rounds_ == 0) return nullptr;
  double total = static_cast<double>(samples_);
  auto shares = [&](const std::map<std::string, size_t>& counts) {
    json out = json::object();
    for (const auto& [c, n] : counts)
      out[c] = {{"samples", n}, {"share", total > 0 ? static_cast<double>(n) / total : 0.0}};
    return out;
  };
  json cats = shares(by_category_);
  std::vector<std::pair<std::pair<std::string, std::string>, size_t>> sites(by_site_.begin(),
                                                                            by_site_.end());
  std::stable_sort(sites.begin(), sites.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  json site_list = json::array();
  for (size_t i = 0; i < sites.size() && i < 100; ++i)
    site_list.push_back(
        {{"category", sites[i].first.first},
         {"site", sites[i].first.second},
         {"samples", sites[i].second},
         {"share", total > 0 ? static_cast<double>(sites[i].second) / total : 0.0}});
  json top_stacks = json::object();
  for (const auto& [c, stacks] : stacks_) {
    std::vector<std::pair<std::string, size_t>> v(stacks.begin(), stacks.end());
    std::stable_sort(v.begin(), v.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    json list = json::array();
    for (size_t i = 0; i < v.size() && i < 5; ++i)
      list.push_back({{"samples", v[i].second}, {"stack", v[i].first}});
    top_stacks[c] = list;
  }
  json episodes = json::object();
  for (const auto& [c, v] : episodes_)
    episodes[c] = {{"count", episodes_seen_.at(c)},
                   {"p50", percentile(v, 0.50)},
                   {"p95", percentile(v, 0.95)},
                   {"p99", percentile(v, 0.99)},
                   {"max", percentile(v, 1.0)}};
  StopStats stops = stop_stats(stop_ns_);
  double ticks = static_cast<double>(proc::clock_ticks_per_second());
  auto cpu_seconds = [&](const ProcessFigures& p) -> std::pair<double, double> {
    if (!p.first_cpu || !p.last_cpu) return {0, 0};
    return {static_cast<double>(p.last_cpu->first - p.first_cpu->first) / ticks,
            static_cast<double>(p.last_cpu->second - p.first_cpu->second) / ticks};
  };
  json cpu = nullptr;
  double user = 0, system = 0;
  bool cpu_known = false;
  json processes = json::array();
  for (const auto& [pid, p] : processes_) {
    auto [u, s] = cpu_seconds(p);
    user += u;
    system += s;
    cpu_known |= p.first_cpu.has_value();
    std::vector<std::string> cmdline;
    for (const auto& a : p.cmdline) cmdline.push_back(valid_utf8(a));
    processes.push_back(
        {{"pid", pid},
         {"parent_pid", p.ppid},
         {"comm", valid_utf8(p.comm)},
         {"cmdline", cmdline},
         {"first_round_at", rfc3339_utc(p.first_ns)},
         {"last_round_at", rfc3339_utc(p.last_ns)},
         {"rounds", p.rounds},
         {"gone", p.last_ns < last_ns_},
         {"rss_bytes", p.rss.json()},
         {"threads", p.threads.json()},
         {"cpu_percent", p.cpu_percent.json()},
         {"cpu_seconds", p.first_cpu ? json{{"user", u}, {"system", s}} : json(nullptr)}});
  }
  if (cpu_known) cpu = {{"user", user}, {"system", system}};
  double seconds = static_cast<double>(last_ns_ - first_ns_) * 1e-9;
  auto per_second = [&](double value) -> json {
    if (!(seconds > 0)) return nullptr;
    return value / seconds;
  };
  std::vector<const LoopSite*> loop_sites;
  for (const auto& [key, site] : loop_sites_) loop_sites.push_back(&site);
  std::stable_sort(loop_sites.begin(), loop_sites.end(),
                   [](const LoopSite* a, const LoopSite* b) { return a->samples > b->samples; });
  json loop_site_list = json::array();
  auto loop_share = [&](size_t n) {
    return loop_samples_ > 0 ? static_cast<double>(n) / static_cast<double>(loop_samples_) : 0.0;
  };
  for (size_t i = 0; i < loop_sites.size() && i < 100; ++i) {
    const LoopSite& l = *loop_sites[i];
    json coroutine = nullptr;
    if (l.coroutine)
      coroutine = {{"function", valid_utf8(l.coroutine->function)},
                   {"file", valid_utf8(l.coroutine->file)},
                   {"line", l.coroutine->line}};
    loop_site_list.push_back({{"site", valid_utf8(file_and_line(l.site))},
                              {"function", valid_utf8(frame_name(l.site))},
                              {"file", valid_utf8(l.site.file)},
                              {"line", l.site.line},
                              {"category", l.category},
                              {"primitive", valid_utf8(l.primitive)},
                              {"coroutine", coroutine},
                              {"samples", l.samples},
                              {"share", loop_share(l.samples)}});
  }
  json pools = json::array();
  for (const auto& [name, p] : pools_) {
    bool now = p.last_round == rounds_;
    pools.push_back(
        {{"name", valid_utf8(name)},
         {"threads", p.threads.json()},
         {"thread_samples", p.samples},
         {"idle_samples", p.idle},
         {"blocked_samples", p.blocked},
         {"idle_share",
          p.samples > 0 ? static_cast<double>(p.idle) / static_cast<double>(p.samples) : 0.0},
         {"last",
          {{"threads", now ? p.last_threads : 0},
           {"idle", now ? p.last_idle : 0},
           {"blocked", now ? p.last_blocked : 0}}}});
  }
  json asyncio = nullptr;
  if (asyncio_rounds_ > 0) {
    auto task_share = [&](size_t n) {
      return task_samples_ > 0 ? static_cast<double>(n) / static_cast<double>(task_samples_) : 0.0;
    };
    json by_awaiting = json::object();
    for (const auto& [kind, n] : tasks_by_awaiting_)
      by_awaiting[valid_utf8(kind)] = {{"samples", n}, {"share", task_share(n)}};
    std::vector<const TaskStack*> stacks;
    for (const auto& [key, t] : task_stacks_) stacks.push_back(&t);
    std::stable_sort(stacks.begin(), stacks.end(), [](const TaskStack* a, const TaskStack* b) {
      return a->samples > b->samples;
    });
    json top = json::array();
    for (size_t i = 0; i < stacks.size() && i < 20; ++i)
      top.push_back({{"awaiting", valid_utf8(stacks[i]->awaiting)},
                     {"site", valid_utf8(stacks[i]->site)},
                     {"stack", valid_utf8(stacks[i]->stack)},
                     {"example", valid_utf8(stacks[i]->example)},
                     {"samples", stacks[i]->samples},
                     {"share", task_share(stacks[i]->samples)},
                     {"max_tasks", stacks[i]->max_tasks}});
    json loops = json::array();
    for (const auto& [key, l] : loops_)
      loops.push_back(
          {{"pid", key.first},
           {"thread", valid_utf8(key.second)},
           {"rounds", l.rounds},
           {"gone", l.last_round < asyncio_rounds_},
           {"ready_callbacks", l.ready_callbacks.n ? l.ready_callbacks.json() : json(nullptr)},
           {"blocked_rounds", l.blocked_rounds},
           {"longest_block_seconds", l.longest_block}});
    json cycles = json::array();
    std::vector<const std::pair<const std::pair<pid_t, std::string>, CycleSeen>*> seen;
    for (const auto& c : cycles_) seen.push_back(&c);
    std::stable_sort(seen.begin(), seen.end(), [](const auto* a, const auto* b) {
      return a->second.first_ns < b->second.first_ns;
    });
    for (const auto* c : seen) {
      std::vector<std::string> names;
      for (const auto& n : c->second.names) names.push_back(valid_utf8(n));
      cycles.push_back({{"pid", c->first.first},
                        {"tasks", names},
                        {"rounds", c->second.rounds},
                        {"first_seen_at", rfc3339_utc(c->second.first_ns)},
                        {"last_seen_at", rfc3339_utc(c->second.last_ns)}});
    }
    asyncio = {{"rounds", asyncio_rounds_},
               {"task_samples", task_samples_},
               {"tasks", tasks_.json()},
               {"by_awaiting", by_awaiting},
               {"top_stacks", top},
               {"stacks_not_kept_samples", task_stacks_dropped_},
               {"loops", loops},
               {"longest_block_seconds", longest_block_},
               {"cycles", cycles},
               {"cycles_not_kept", cycles_dropped_}};
  }
  bool up = rounds_down_ == 0 && restarts_ == 0 && ended != "target_exited";
  json out = {
      {"started_at", rfc3339_utc(first_ns_)},
      {"last_round_at", rfc3339_utc(last_ns_)},
      {"seconds", seconds},
      {"planned_seconds", planned_seconds_ ? json(*planned_seconds_) : json(nullptr)},
      {"ended", ended},
      {"interval_seconds", interval_},
      {"rounds", rounds_},
      {"rounds_failed", rounds_failed_},
      {"thread_samples", samples_},
      {"by_category", cats},
      {"idle_by_category", shares(idle_by_category_)},
      {"sites", site_list},
      {"top_stacks", top_stacks},
      {"episodes", episodes},
      {"target",
       {{"rss_bytes", rss_.json()},
        {"threads", threads_.json()},
        {"cpu_percent", cpu_percent_.json()},
        {"cpu_seconds", cpu},
        {"rounds_up", rounds_},
        {"rounds_down", rounds_down_},
        {"restarts", restarts_},
        {"up_whole_window", up}}},
      {"throughput",
       {{"cpu_seconds_per_second", cpu_known ? per_second(user + system) : json(nullptr)},
        {"context_switches_per_second", per_second(static_cast<double>(switches_))},
        {"probe_requests_per_second", nullptr},
        {"service_requests_per_second", nullptr}}},
      {"event_loops",
       {{"threads", loop_threads_.json()},
        {"thread_samples", loop_samples_},
        {"blocked_samples", loop_blocked_},
        {"blocked_share", loop_share(loop_blocked_)},
        {"sites", loop_site_list}}},
      {"asyncio", asyncio},
      {"pools", pools},
      {"cost",
       {{"threads_stopped", stopped_},
        {"threads_not_stopped", not_stopped_},
        {"threads_reused", reused_},
        {"stop_retries", stop_retries_},
        {"watchdog_ended", watchdog_ended_},
        {"eintr_restarted", eintr_restarted_},
        {"eintr_inflicted", eintr_inflicted_},
        {"stop_us", {{"p50", stops.p50_us}, {"p99", stops.p99_us}, {"max", stops.max_us}}},
        {"agent_cpu_seconds", last_agent_cpu_ - std::max(0.0, first_agent_cpu_)}}},
  };
  if (per_process) out["processes"] = processes;
  return out;
}

}  // namespace stackaudit
