#include "agent/gate.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>
#include <stdexcept>

#include "agent/atomic_file.h"
#include "agent/exit_codes.h"

namespace stackaudit {

using ojson = nlohmann::ordered_json;

namespace {

std::string printf_string(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string percent(double ratio) {
  double p = ratio * 100;
  return printf_string(p != 0 && std::fabs(p) < 1 ? "%.2f %%" : "%.1f %%", p);
}

// A value for people: ms, MiB, %, ...
std::string human(double v, GateUnit unit) {
  switch (unit) {
    case GateUnit::kSeconds:
      if (v >= 1) return printf_string("%.2f s", v);
      return printf_string(v * 1000 >= 1 || v == 0 ? "%.1f ms" : "%.2f ms", v * 1000);
    case GateUnit::kRatio:
      return percent(v);
    case GateUnit::kBytes:
      return printf_string("%.1f MiB", v / (1024.0 * 1024.0));
    case GateUnit::kThreads:
      return printf_string(v == std::floor(v) ? "%.0f" : "%.1f", v);
    case GateUnit::kRequestsPerSecond:
      return printf_string("%.1f/s", v);
    case GateUnit::kSites:
      return printf_string("%.0f", v);
    case GateUnit::kUp:
      return v >= 0.5 ? "up" : "down";
  }
  return "";
}

// "+50.0 %" / "-3.1 %": the change from baseline to current.
std::string change(double baseline, double current) {
  if (baseline == 0) return "from 0";
  double r = (current - baseline) / baseline * 100;
  return printf_string("%+.1f %%", r);
}

std::string ratio_text(double r) {
  return printf_string("x%.2f", r);
}

// Holds, with room for floating-point rounding (1.1 x 100 is 110.00000000000001).
bool holds(double value, double limit, GateBound bound) {
  double slack = 1e-9 * std::max(1.0, std::fabs(limit));
  return bound == GateBound::kAtMost ? value <= limit + slack : value >= limit - slack;
}

const char* unit_name(GateUnit unit) {
  switch (unit) {
    case GateUnit::kSeconds:
      return "seconds";
    case GateUnit::kRatio:
      return "ratio";
    case GateUnit::kBytes:
      return "bytes";
    case GateUnit::kThreads:
      return "threads";
    case GateUnit::kRequestsPerSecond:
      return "requests_per_second";
    case GateUnit::kSites:
      return "sites";
    case GateUnit::kUp:
      return "up";
  }
  return "";
}

const char* verdict_name(GateVerdict v) {
  switch (v) {
    case GateVerdict::kPass:
      return "pass";
    case GateVerdict::kFail:
      return "fail";
    case GateVerdict::kSkipped:
      return "skipped";
  }
  return "";
}

std::string coroutine_text(const LoopSite& site) {
  if (!site.coroutine) return "outside any coroutine step";
  std::string where = site_key(site.coroutine->file, site.coroutine->line, "");
  std::string name = site.coroutine->function.empty() ? "?" : site.coroutine->function;
  return "in coroutine " + name + (where.empty() ? "" : " (" + where + ")");
}

std::string site_label(const LoopSite& site) {
  std::string detail = site.function;
  if (!site.category.empty()) detail += (detail.empty() ? "" : ", ") + site.category;
  return site.site + (detail.empty() || detail == site.site ? "" : " (" + detail + ")");
}

// What a blocked share means: of the window's event-loop samples, or of the
// dump's event-loop threads.
std::string share_text(const LoopSite& site, const EventLoopFigures& loops, AuditKind kind) {
  if (kind == AuditKind::kDump)
    return std::to_string(site.samples) + " of its " + std::to_string(loops.samples) +
           " event-loop thread" + (loops.samples == 1 ? "" : "s") + " at the capture";
  return percent(site.share) + " of its samples (" + std::to_string(site.samples) + " of " +
         std::to_string(loops.samples) + ")";
}

std::string join(const std::vector<std::string>& sentences) {
  std::string out;
  for (const std::string& s : sentences) out += (out.empty() ? "" : " ") + s;
  return out;
}

// Each gate's unit and which side of its limit holds.
struct GateShape {
  std::string_view gate;
  GateUnit unit;
  GateBound bound;
};

constexpr std::array<GateShape, kGateIds.size()> kShapes = {{
    {"probe_p95", GateUnit::kSeconds, GateBound::kAtMost},
    {"probe_p99", GateUnit::kSeconds, GateBound::kAtMost},
    {"probe_error_rate", GateUnit::kRatio, GateBound::kAtMost},
    {"rss", GateUnit::kBytes, GateBound::kAtMost},
    {"threads", GateUnit::kThreads, GateBound::kAtMost},
    {"event_loop_blocked", GateUnit::kRatio, GateBound::kAtMost},
    {"event_loop_new_sites", GateUnit::kSites, GateBound::kAtMost},
    {"pool_threads", GateUnit::kThreads, GateBound::kAtMost},
    {"pool_idle", GateUnit::kRatio, GateBound::kAtLeast},
    {"target_up", GateUnit::kUp, GateBound::kAtLeast},
    {"throughput", GateUnit::kRequestsPerSecond, GateBound::kAtLeast},
}};

const GateShape& shape_of(std::string_view gate) {
  for (const GateShape& s : kShapes)
    if (s.gate == gate) return s;
  throw std::logic_error("no such gate: " + std::string(gate));
}

constexpr const char* kMoveIt =
    "move the call to the bridge pool (run_in_executor) or an async client";

class Evaluator {
 public:
  Evaluator(const AuditFigures& base, const AuditFigures& cur, const GateThresholds& t)
      : base_(base), cur_(cur), t_(t) {}

  std::vector<GateResult> run() {
    probes();
    ratio_gate("rss", base_.rss_bytes, cur_.rss_bytes, t_.rss_max_ratio, GateUnit::kBytes,
               "average RSS");
    ratio_gate("threads", base_.threads, cur_.threads, t_.threads_max_ratio, GateUnit::kThreads,
               "average thread count");
    event_loop_blocked();
    event_loop_new_sites();
    pools();
    target_up();
    throughput();
    return std::move(out_);
  }

 private:
  GateResult& add(const std::string& gate, std::optional<std::string> subject) {
    GateResult r;
    r.gate = gate;
    r.subject = std::move(subject);
    const GateShape& shape = shape_of(gate);
    r.unit = shape.unit;
    r.bound = shape.bound;
    out_.push_back(std::move(r));
    return out_.back();
  }

  void skip(const std::string& gate, std::optional<std::string> subject, std::string why) {
    GateResult& r = add(gate, std::move(subject));
    r.verdict = GateVerdict::kSkipped;
    r.message = std::move(why);
  }

  // Why a figure is missing from one side or both.
  template <class T>
  static std::string missing(const Known<T>& base, const Known<T>& cur) {
    if (!base && !cur && base.missing == cur.missing) return base.missing;
    if (!base) return "baseline: " + base.missing;
    return "current: " + cur.missing;
  }

  void judge(GateResult& r, const std::string& pass, const std::string& fail) {
    bool ok = holds(*r.current, *r.limit, r.bound);
    r.verdict = ok ? GateVerdict::kPass : GateVerdict::kFail;
    r.message = ok ? pass : fail;
  }

  // probe_p95, probe_p99, probe_error_rate: per probe name in both runs.
  void probes() {
    const std::array<std::string, 3> gates = {"probe_p95", "probe_p99", "probe_error_rate"};
    for (const std::string& gate : gates) {
      if (!t_.enabled(gate)) continue;
      GateUnit unit = gate == "probe_error_rate" ? GateUnit::kRatio : GateUnit::kSeconds;
      if (!base_.probes || !cur_.probes) {
        skip(gate, std::nullopt, missing(base_.probes, cur_.probes));
        continue;
      }
      if (base_.probes->empty()) {
        skip(gate, std::nullopt, "no probe in the baseline (run its agent with --probe)");
        continue;
      }
      if (cur_.probes->empty()) {
        skip(gate, std::nullopt,
             "no probe in the current run (run its agent with the baseline's --probe)");
        continue;
      }
      std::vector<std::string> names;
      for (const ProbeFigures& p : *base_.probes) names.push_back(p.name);
      for (const ProbeFigures& p : *cur_.probes)
        if (std::find(names.begin(), names.end(), p.name) == names.end()) names.push_back(p.name);
      for (const std::string& name : names) probe_gate(gate, unit, name);
    }
  }

  static const ProbeFigures* find_probe(const std::vector<ProbeFigures>& list,
                                        const std::string& name) {
    for (const ProbeFigures& p : list)
      if (p.name == name) return &p;
    return nullptr;
  }

  void probe_gate(const std::string& gate, GateUnit unit, const std::string& name) {
    const ProbeFigures* b = find_probe(*base_.probes, name);
    const ProbeFigures* c = find_probe(*cur_.probes, name);
    if (!b || !c) {
      skip(gate, name,
           "probe " + name + " is only in the " + (b ? "baseline" : "current run") +
               ": compare runs whose agents had the same --probe NAME=URL");
      return;
    }
    auto no_requests = [&](const ProbeFigures& p, const char* side) {
      if (p.requests > 0) return false;
      skip(gate, name, "probe " + name + " completed no request in the " + side);
      return true;
    };
    if (no_requests(*b, "baseline") || no_requests(*c, "current run")) return;

    if (gate == "probe_error_rate") {
      if (!b->error_rate || !c->error_rate) {
        skip(gate, name,
             "probe " + name + " has no error_rate in the " +
                 (b->error_rate ? "current run" : "baseline"));
        return;
      }
      GateResult& r = add(gate, name);
      r.baseline = *b->error_rate;
      r.current = *c->error_rate;
      r.limit = *r.baseline + t_.probe_error_rate_max_increase;
      std::string kinds;
      for (const auto& [kind, n] : c->errors_by_kind)
        kinds += (kinds.empty() ? "" : ", ") + kind + " " + std::to_string(n);
      judge(r,
            "error rate " + percent(*r.current) + " within baseline " + percent(*r.baseline) +
                " + " + percent(t_.probe_error_rate_max_increase),
            "probe " + name + "'s error rate rose from " + percent(*r.baseline) + " to " +
                percent(*r.current) + ", over the limit of " + percent(*r.limit) +
                (kinds.empty() ? "" : " (current errors: " + kinds + ")") +
                ": look at the service's log for the failed requests and at the probe's "
                "timeout against the new latency");
      return;
    }

    bool p95 = gate == "probe_p95";
    const char* which = p95 ? "p95" : "p99";
    std::optional<double> bv = p95 ? b->p95 : b->p99, cv = p95 ? c->p95 : c->p99;
    if (!bv || !cv) {
      skip(gate, name,
           "probe " + name + " has no " + which + " in the " + (bv ? "current run" : "baseline"));
      return;
    }
    double ratio = p95 ? t_.probe_p95_max_ratio : t_.probe_p99_max_ratio;
    GateResult& r = add(gate, name);
    r.baseline = *bv;
    r.current = *cv;
    r.limit = *bv * ratio;
    judge(r,
          std::string(which) + " " + human(*cv, unit) + " (" + change(*bv, *cv) + ") within " +
              ratio_text(ratio) + " of " + human(*bv, unit),
          "probe " + name + "'s " + which + " latency rose from " + human(*bv, unit) + " to " +
              human(*cv, unit) + " (" + change(*bv, *cv) + "), over the limit of " +
              human(*r.limit, unit) + " (" + ratio_text(ratio) +
              "): look at what the current run waits on (the audit's window.sites and "
              "episodes) and at the event-loop and pool gates");
  }

  // rss, threads: the current average at most baseline x max_ratio.
  void ratio_gate(const std::string& gate, const Known<double>& base, const Known<double>& cur,
                  double ratio, GateUnit unit, const std::string& what) {
    if (!t_.enabled(gate)) return;
    if (!base || !cur) {
      skip(gate, std::nullopt, missing(base, cur));
      return;
    }
    GateResult& r = add(gate, std::nullopt);
    r.baseline = *base;
    r.current = *cur;
    r.limit = *base * ratio;
    std::string look =
        gate == "rss"
            ? "look at what the new path keeps (caches, per-request buffers) and for a bridge "
              "pool that never drained"
            : "after a cutover the thread count must fall; look at the current audit's pools "
              "(a bridge pool that never drained, an executor without max_workers)";
    std::string verb = *cur > *base ? "rose" : "went";
    judge(r,
          what + " " + human(*cur, unit) + " (" + change(*base, *cur) + ") within " +
              ratio_text(ratio) + " of " + human(*base, unit),
          what + " " + verb + " from " + human(*base, unit) + " to " + human(*cur, unit) + " (" +
              change(*base, *cur) + "), over the limit of " + human(*r.limit, unit) + " (" +
              ratio_text(ratio) + "): " + look);
  }

  // Whether the current run has event loops to gate; skips gate otherwise.
  bool has_event_loops(const std::string& gate, bool needs_baseline) {
    if (!cur_.event_loops || (needs_baseline && !base_.event_loops)) {
      skip(gate, std::nullopt, missing(base_.event_loops, cur_.event_loops));
      return false;
    }
    if (cur_.event_loops->samples == 0) {
      skip(gate, std::nullopt,
           cur_.kind == AuditKind::kWindow
               ? "no thread ran an asyncio event loop in the current window"
               : "no thread runs an asyncio event loop in the current audit");
      return false;
    }
    return true;
  }

  void event_loop_blocked() {
    const std::string gate = "event_loop_blocked";
    if (!t_.enabled(gate) || !has_event_loops(gate, false)) return;
    const EventLoopFigures& loops = *cur_.event_loops;
    GateResult& r = add(gate, std::nullopt);
    if (base_.event_loops && base_.event_loops->samples > 0)
      r.baseline = base_.event_loops->blocked_share;
    r.current = loops.blocked_share;
    r.limit = t_.event_loop_blocked_max_share;
    r.sites = loops.sites;
    bool ok = loops.blocked == 0 || holds(*r.current, *r.limit, r.bound);
    r.verdict = ok ? GateVerdict::kPass : GateVerdict::kFail;
    if (ok) {
      r.message = loops.blocked == 0
                      ? "no event loop was blocked outside its selector"
                      : "event loops blocked in " + percent(*r.current) +
                            " of their samples, within the " + percent(*r.limit) + " allowed";
      return;
    }
    for (const LoopSite& site : loops.sites)
      r.sentences.push_back(site_label(site) + " " + coroutine_text(site) +
                            " blocked the loop in " + share_text(site, loops, cur_.kind) + ": " +
                            kMoveIt + ".");
    r.message = join(r.sentences);
    if (r.message.empty())
      r.message = "the event loop was blocked outside its selector in " + percent(*r.current) +
                  " of its samples (the audit names no site)";
  }

  void event_loop_new_sites() {
    const std::string gate = "event_loop_new_sites";
    if (!t_.enabled(gate) || !has_event_loops(gate, true)) return;
    std::set<std::string, std::less<>> before;
    for (const LoopSite& s : base_.event_loops->sites) before.insert(s.site);
    // New sites over the allowed share fail; those within it are named.
    double allowed = t_.event_loop_new_sites_max_share;
    std::vector<LoopSite> fresh, tolerated;
    for (const LoopSite& s : cur_.event_loops->sites)
      if (!before.contains(s.site)) (s.share > allowed ? fresh : tolerated).push_back(s);
    GateResult& r = add(gate, std::nullopt);
    r.baseline = static_cast<double>(before.size());
    r.current = static_cast<double>(fresh.size());
    r.limit = 0;
    for (const LoopSite& site : fresh)
      r.sentences.push_back(site_label(site) + " " + coroutine_text(site) +
                            " blocks an event loop in the current run and did not in the "
                            "baseline" +
                            (allowed > 0 ? " (" + share_text(site, *cur_.event_loops, cur_.kind) +
                                               ", over the " + percent(allowed) + " allowed)"
                                         : "") +
                            ": " + kMoveIt + ".");
    r.message = join(r.sentences);
    r.sites = std::move(fresh);
    r.verdict = r.sites->empty() ? GateVerdict::kPass : GateVerdict::kFail;
    if (!r.sites->empty()) return;
    if (!tolerated.empty()) {
      std::string names;
      for (const LoopSite& site : tolerated)
        names += (names.empty() ? "" : ", ") + site.site + " (" + percent(site.share) + ")";
      r.message = "new sites within the " + percent(allowed) + " allowed: " + names;
    } else {
      r.message = cur_.event_loops->sites.empty()
                      ? "no site blocked an event loop in the current run"
                      : "every site blocking an event loop was already in the baseline";
    }
  }

  static const PoolFigures* find_pool(const Known<std::vector<PoolFigures>>& pools,
                                      const std::string& name) {
    if (!pools) return nullptr;
    for (const PoolFigures& p : *pools)
      if (p.name == name) return &p;
    return nullptr;
  }

  void pools() {
    bool threads_on = t_.enabled("pool_threads"), idle_on = t_.enabled("pool_idle");
    if (!threads_on && !idle_on) return;
    if (t_.pools.empty()) {
      const char* why = "no pool named (--pool NAME, or names in the thresholds file's [pool])";
      if (threads_on) skip("pool_threads", std::nullopt, why);
      if (idle_on) skip("pool_idle", std::nullopt, why);
      return;
    }
    for (const std::string& name : t_.pools) {
      if (!cur_.pools) {
        std::string why = "current: " + cur_.pools.missing;
        if (threads_on) skip("pool_threads", name, why);
        if (idle_on) skip("pool_idle", name, why);
        continue;
      }
      const PoolFigures* b = find_pool(base_.pools, name);
      const PoolFigures* c = find_pool(cur_.pools, name);
      if (!b && !c) {  // in neither run: more likely a typo than a pool that never existed
        std::set<std::string> names;
        for (const auto* figures : {&base_.pools, &cur_.pools})
          if (*figures)
            for (const PoolFigures& p : **figures) names.insert(p.name);
        std::string seen;
        for (const std::string& n : names) seen += (seen.empty() ? "" : ", ") + n;
        std::string why = "pool " + name +
                          " is in neither audit (pools seen: " + (seen.empty() ? "none" : seen) +
                          ")";
        if (threads_on) skip("pool_threads", name, why);
        if (idle_on) skip("pool_idle", name, why);
        continue;
      }
      const char* over = cur_.kind == AuditKind::kWindow ? "at most" : "at the capture";
      if (threads_on) {
        GateResult& r = add("pool_threads", name);
        if (b) r.baseline = b->max_threads;
        r.current = c ? c->max_threads : 0;
        r.limit = static_cast<double>(t_.pool_max_threads);
        judge(r,
              c ? "pool " + name + " had " + human(*r.current, r.unit) + " threads " + over +
                      ", within " + human(*r.limit, r.unit)
                : "pool " + name + " was not seen in the current run: 0 threads",
              "pool " + name + " had " + human(*r.current, r.unit) + " threads " + over +
                  ", over the limit of " + human(*r.limit, r.unit) +
                  ": a bridge pool must stay bounded (ThreadPoolExecutor(max_workers=N)); look "
                  "for a second executor with the same thread name prefix");
      }
      if (!idle_on) continue;
      if (!c) {
        skip("pool_idle", name,
             "pool " + name + " was not seen in the current run (0 threads): nothing to be idle");
        continue;
      }
      if (!c->idle_share) {
        skip("pool_idle", name, "pool " + name + " has no thread sample in the current run");
        continue;
      }
      GateResult& r = add("pool_idle", name);
      if (b && b->idle_share) r.baseline = *b->idle_share;
      r.current = *c->idle_share;
      r.limit = t_.pool_min_idle_share;
      std::string of = cur_.kind == AuditKind::kWindow ? " of its samples" : " of its threads";
      judge(r, "pool " + name + " idle in " + percent(*r.current) + of,
            "pool " + name + " was idle in only " + percent(*r.current) + of + ", under the " +
                percent(*r.limit) +
                " asked: it still carries work; see what its threads wait on in the current "
                "audit, and move those calls off the bridge (or finish the ramp) before the "
                "cutover");
    }
  }

  void target_up() {
    const std::string gate = "target_up";
    if (!t_.enabled(gate)) return;
    if (!cur_.target_up) {
      skip(gate, std::nullopt,
           cur_.kind == AuditKind::kDump ? cur_.target_up.missing
                                         : "current: " + cur_.target_up.missing);
      return;
    }
    GateResult& r = add(gate, std::nullopt);
    if (base_.target_up) r.baseline = base_.target_up->up ? 1 : 0;
    const TargetUpFigures& up = *cur_.target_up;
    r.current = up.up ? 1 : 0;
    r.limit = 1;
    judge(r, "the target was up for the whole current window",
          "the target was not up for the whole current window (" + std::to_string(up.rounds_down) +
              " rounds without it, " + std::to_string(up.restarts) +
              " restarts, ended: " + (up.ended.empty() ? "?" : up.ended) +
              "): its figures cover a crash or a restart; look at the service's log and record "
              "the window again");
  }

  void throughput() {
    const std::string gate = "throughput";
    if (!t_.enabled(gate)) return;
    const auto& b = base_.service_requests_per_second;
    const auto& c = cur_.service_requests_per_second;
    if (!b || !c) {
      skip(gate, std::nullopt, missing(b, c));
      return;
    }
    GateResult& r = add(gate, std::nullopt);
    r.baseline = *b;
    r.current = *c;
    r.limit = *b * t_.throughput_min_ratio;
    judge(r,
          "service throughput " + human(*c, r.unit) + " (" + change(*b, *c) + ") within " +
              ratio_text(t_.throughput_min_ratio) + " of " + human(*b, r.unit),
          "service throughput fell from " + human(*b, r.unit) + " to " + human(*c, r.unit) + " (" +
              change(*b, *c) + "), under the limit of " + human(*r.limit, r.unit) + " (" +
              ratio_text(t_.throughput_min_ratio) +
              "): check the load was the same, then look at the current run's CPU and "
              "blocking sites");
  }

  const AuditFigures& base_;
  const AuditFigures& cur_;
  const GateThresholds& t_;
  std::vector<GateResult> out_;
};

GateSide side_of(const AuditFigures& f) {
  return GateSide{f.file, f.kind, f.captured_at};
}

const char* kind_source(AuditKind kind) {
  return kind == AuditKind::kWindow ? "agent --audit-json" : "dump --format json";
}

ojson value_json(const std::optional<double>& v, GateUnit unit) {
  if (!v) return nullptr;
  if (unit == GateUnit::kUp) return *v >= 0.5;
  return *v;
}

ojson site_json(const LoopSite& s) {
  ojson coroutine = nullptr;
  if (s.coroutine)
    coroutine = {{"function", s.coroutine->function},
                 {"file", s.coroutine->file},
                 {"line", s.coroutine->line}};
  return {{"site", s.site},         {"function", s.function}, {"file", s.file},
          {"line", s.line},         {"category", s.category}, {"primitive", s.primitive},
          {"coroutine", coroutine}, {"samples", s.samples},   {"share", s.share}};
}

std::string limit_text(const GateResult& r) {
  if (!r.limit) return "-";
  if (r.unit == GateUnit::kUp) return "up";
  return std::string(r.bound == GateBound::kAtMost ? "<= " : ">= ") + human(*r.limit, r.unit);
}

std::string side_text(const GateSide& s) {
  return s.file + " (" + audit_kind_name(s.kind) + " audit" +
         (s.captured_at ? ", " + *s.captured_at : "") + ")";
}

std::string gate_name(const GateResult& r) {
  return r.gate + (r.subject ? " " + *r.subject : "");
}

}  // namespace

bool GateReport::failed() const {
  return count(GateVerdict::kFail) > 0;
}

size_t GateReport::count(GateVerdict verdict) const {
  return static_cast<size_t>(std::count_if(
      gates.begin(), gates.end(), [&](const GateResult& r) { return r.verdict == verdict; }));
}

GateReport evaluate_gates(const AuditFigures& baseline, const AuditFigures& current,
                          const GateThresholds& thresholds) {
  if (baseline.kind != current.kind)
    throw UserError{kExitUsage,
                    "the baseline " + baseline.file + " is a " + audit_kind_name(baseline.kind) +
                        " audit (" + kind_source(baseline.kind) + ") and the current " +
                        current.file + " a " + audit_kind_name(current.kind) + " audit (" +
                        kind_source(current.kind) + "): gate compares two audits of the same kind"};
  GateReport report;
  report.baseline = side_of(baseline);
  report.current = side_of(current);
  report.gates = Evaluator(baseline, current, thresholds).run();
  return report;
}

std::string render_gate_text(const GateReport& report) {
  std::string out = "stackaudit gate\n  baseline: " + side_text(report.baseline) +
                    "\n  current:  " + side_text(report.current) + "\n\n";

  std::vector<const GateResult*> rows;
  for (GateVerdict v : {GateVerdict::kFail, GateVerdict::kPass})
    for (const GateResult& r : report.gates)
      if (r.verdict == v) rows.push_back(&r);

  if (!rows.empty()) {
    std::vector<std::array<std::string, 6>> table = {
        {"GATE", "SUBJECT", "BASELINE", "CURRENT", "LIMIT", "VERDICT"}};
    for (const GateResult* r : rows)
      table.push_back({r->gate, r->subject.value_or("-"),
                       r->baseline ? human(*r->baseline, r->unit) : "-",
                       r->current ? human(*r->current, r->unit) : "-", limit_text(*r),
                       r->verdict == GateVerdict::kFail ? "FAIL" : "pass"});
    std::array<size_t, 6> width{};
    for (const auto& row : table)
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    for (const auto& row : table) {
      std::string line;
      for (size_t i = 0; i < row.size(); ++i) {
        line += row[i];
        if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
      }
      out += line + "\n";
    }
  }

  if (report.failed()) {
    out += "\nWhat to look at:\n";
    for (const GateResult* r : rows) {
      if (r->verdict != GateVerdict::kFail) continue;
      if (!r->sentences.empty()) {
        out += "  " + gate_name(*r) + ":\n";
        for (const std::string& sentence : r->sentences) out += "    " + sentence + "\n";
      } else {
        out += "  " + gate_name(*r) + ": " + r->message + "\n";
      }
    }
  }

  size_t skipped = report.count(GateVerdict::kSkipped);
  if (skipped > 0) {
    out += "\nSkipped (not evaluated: neither passed nor failed):\n";
    for (const GateResult& r : report.gates)
      if (r.verdict == GateVerdict::kSkipped) out += "  " + gate_name(r) + ": " + r.message + "\n";
  }

  size_t failed = report.count(GateVerdict::kFail);
  size_t evaluated = report.gates.size() - skipped;
  std::string tail = skipped > 0 ? " (" + std::to_string(skipped) + " skipped)" : "";
  out += "\n";
  if (failed > 0)
    out += "verdict: FAIL: " + std::to_string(failed) + " of " + std::to_string(evaluated) +
           " evaluated gates failed" + tail + "\n";
  else if (evaluated == 0)
    out += "verdict: PASS, but no gate could be evaluated" + tail + "\n";
  else
    out +=
        "verdict: PASS: all " + std::to_string(evaluated) + " evaluated gates hold" + tail + "\n";
  return out;
}

nlohmann::ordered_json render_gate_json(const GateReport& report) {
  auto side = [](const GateSide& s) {
    return ojson{{"file", s.file},
                 {"kind", audit_kind_name(s.kind)},
                 {"captured_at", s.captured_at ? ojson(*s.captured_at) : ojson(nullptr)}};
  };
  ojson gates = ojson::array();
  for (const GateResult& r : report.gates) {
    ojson g = {{"gate", r.gate},
               {"subject", r.subject ? ojson(*r.subject) : ojson(nullptr)},
               {"verdict", verdict_name(r.verdict)},
               {"baseline", value_json(r.baseline, r.unit)},
               {"current", value_json(r.current, r.unit)},
               {"limit", value_json(r.limit, r.unit)},
               {"bound", r.bound == GateBound::kAtMost ? "at_most" : "at_least"},
               {"unit", unit_name(r.unit)},
               {"message", r.message}};
    if (r.gate == "event_loop_blocked" || r.gate == "event_loop_new_sites") {
      ojson sites = ojson::array();
      if (r.sites)
        for (const LoopSite& s : *r.sites) sites.push_back(site_json(s));
      g["sites"] = sites;
    }
    gates.push_back(std::move(g));
  }
  return {{"schema", "stackaudit.gate/v1"},
          {"verdict", report.failed() ? "fail" : "pass"},
          {"baseline", side(report.baseline)},
          {"current", side(report.current)},
          {"counts",
           {{"pass", report.count(GateVerdict::kPass)},
            {"fail", report.count(GateVerdict::kFail)},
            {"skipped", report.count(GateVerdict::kSkipped)}}},
          {"gates", gates}};
}

int run_gate(const GateOptions& options) {
  GateThresholds thresholds;
  if (!options.thresholds.empty()) thresholds = load_gate_thresholds(options.thresholds);
  for (const std::string& pool : options.pools) thresholds.add_pool(pool);
  bool to_file = !options.output.empty() && options.output != "-";
  if (to_file) {
    try {
      check_writable(options.output);
    } catch (const std::runtime_error& e) {
      throw UserError{kExitUsage, e.what()};
    }
  }
  AuditFigures baseline = load_audit(options.baseline, "baseline");
  AuditFigures current = load_audit(options.current, "current");
  GateReport report = evaluate_gates(baseline, current, thresholds);
  std::string text =
      options.format == "json" ? render_gate_json(report).dump(2) + "\n" : render_gate_text(report);
  if (to_file) {
    try {
      write_file_atomically(options.output, text);
    } catch (const std::runtime_error& e) {
      throw UserError{kExitUsage, e.what()};
    }
  } else {
    std::cout << text << std::flush;
  }
  return report.failed() ? kExitGateFailed : kExitOk;
}

}  // namespace stackaudit
