#include "agent/window.h"

#include <algorithm>

#include "agent/audit_json.h"
#include "agent/metrics.h"
#include "collector/percentile.h"
#include "collector/snapshot_builder.h"
#include "collector/utf8.h"
#include "injector/proc.h"

namespace stackaudit {

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
  for (const Snapshot& s : round) {
    samples_ += s.threads.size();
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
      if (!t.blocking) continue;
      const Blocking& b = *t.blocking;
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

void RunWindow::add_episode(const std::string& category, double seconds) {
  keep_sample(episodes_[category], episodes_seen_[category], seconds);
}

nlohmann::json RunWindow::window_json(bool per_process) const {
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
  json out = {
      {"started_at", rfc3339_utc(first_ns_)},
      {"last_round_at", rfc3339_utc(last_ns_)},
      {"seconds", seconds},
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
        {"cpu_seconds", cpu}}},
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
