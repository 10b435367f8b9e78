// The agent's page at /: one self-contained HTML document (inline CSS, SVG
// and a few lines of JavaScript; nothing fetched from elsewhere) that shows
// the targets, blocked threads per category over the last rounds, the top
// blocking sites, pools and event loops, an icicle flame graph of the
// window's blocked stacks and what the agent itself costs. Rendered on the
// agent's thread once per round; the HTTP thread only copies the string.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/flame.h"
#include "collector/snapshot.h"

namespace stackaudit {

// Text made safe inside HTML and SVG, in element content and in quoted
// attribute values: & < > " ' escaped, control characters shown as U+FFFD.
std::string escape_html(std::string_view text);

// The colour the page gives a category (the chart's area, the sites' swatch,
// the flame graph's frames): "#rrggbb". "idle" and "running" have theirs.
std::string category_colour(std::string_view category);

class StatusPage {
 public:
  // max_rounds: how many rounds the chart and the sites table look back over.
  explicit StatusPage(double interval_seconds, size_t max_rounds = 120);

  // One round: a snapshot per audited process, and what they are (the
  // headline). Reads the targets' and the agent's own CPU time and RSS from
  // /proc (one stat and status file each).
  void add_round(const std::vector<Snapshot>& round, const std::string& targets);
  // A round with nothing to audit: the chart shows a gap, the headline why.
  void no_target(const std::string& why);

  // The whole page; `flame` is the window's stacks (RunWindow::flame()).
  std::string render(const FlameStacks& flame) const;

  // Frames narrower than this share of the flame graph are not drawn, nor
  // more than this many frames: a 10k-thread target's page stays small.
  static constexpr double kFlameWidth = 1200;  // SVG units
  static constexpr size_t kMaxFlameFrames = 2500;

 private:
  // What the chart and the sites table keep of a round.
  struct RoundFigures {
    int64_t at_ns = 0;
    bool target = false;                    // a round with a target to audit
    std::map<std::string, size_t> blocked;  // category -> threads, idle ones not counted
    size_t threads = 0, idle = 0;
    size_t loop_threads = 0, loops_blocked = 0;
    uint64_t stop_p99_us = 0, capture_us = 0;  // the round's highest p99; its captures' sum
    std::vector<std::pair<std::string, size_t>> sites;  // "category\tsite" -> threads
  };
  struct TargetRow {
    pid_t pid = 0;
    std::string comm, cmdline;
    uint64_t rss_bytes = 0, threads = 0;
    size_t blocked = 0, idle = 0;
    double cpu_percent = -1;  // of one core since the last round; -1 unknown
  };
  struct LoopSite {
    std::string site, coroutine, category;
    size_t threads = 0;
  };
  struct CpuMark {
    uint64_t ticks = 0;
    int64_t at_ns = 0;
  };

  void push(RoundFigures figures);
  std::string render_header() const;
  std::string render_targets() const;
  std::string render_chart() const;
  std::string render_sites() const;
  std::string render_pools() const;
  std::string render_flame(const FlameStacks& flame) const;
  std::string render_cost() const;

  double interval_;
  size_t max_rounds_;
  int64_t started_ns_;
  size_t rounds_ = 0;  // with a target
  std::string headline_ = "no target yet";
  bool has_target_ = false;
  std::deque<RoundFigures> ring_;
  std::map<std::string, size_t> site_totals_;  // over the ring
  size_t ring_thread_samples_ = 0, ring_loop_samples_ = 0, ring_loop_blocked_ = 0;
  // The latest round.
  std::vector<TargetRow> targets_;
  std::vector<Pool> pools_;
  std::vector<LoopSite> loop_sites_;
  std::map<std::string, std::vector<std::string>> site_threads_;  // a few names per site
  StopStats stop_us_;
  uint64_t capture_us_ = 0;
  size_t stopped_ = 0, not_stopped_ = 0;
  std::map<pid_t, CpuMark> cpu_marks_;
  CpuMark self_mark_;
  double self_cpu_percent_ = -1;
  uint64_t self_rss_bytes_ = 0;
  mutable double last_render_ms_ = -1;
};

}  // namespace stackaudit
