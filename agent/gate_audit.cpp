#include "agent/gate_audit.h"

#include <algorithm>
#include <initializer_list>
#include <map>
#include <string_view>

#include "agent/exit_codes.h"
#include "agent/input_file.h"

namespace stackaudit {

using nlohmann::json;

namespace {

constexpr std::string_view kSchema = "stackaudit.audit/v1";

// Readers that never throw: a field of the wrong type reads as absent.
const json* at(const json* j, std::initializer_list<std::string_view> path) {
  for (std::string_view key : path) {
    if (!j || !j->is_object()) return nullptr;
    auto it = j->find(key);
    if (it == j->end()) return nullptr;
    j = &*it;
  }
  return j;
}

std::optional<double> number(const json* j) {
  if (!j || !j->is_number()) return std::nullopt;
  return j->get<double>();
}

std::optional<long> integer(const json* j) {
  if (!j || !j->is_number()) return std::nullopt;
  if (j->is_number_float()) {
    double v = j->get<double>();
    if (!(v >= -9e18 && v <= 9e18)) return std::nullopt;  // no long holds it
    return static_cast<long>(v);
  }
  return j->get<long>();
}

std::string text(const json* j) {
  return j && j->is_string() ? j->get<std::string>() : "";
}

std::optional<CodePlace> code_place(const json* j) {
  if (!j || !j->is_object()) return std::nullopt;
  return CodePlace{text(at(j, {"function"})), text(at(j, {"file"})),
                   integer(at(j, {"line"})).value_or(0)};
}

std::string basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// ---- a window audit (agent --audit-json) ----

Known<std::vector<ProbeFigures>> window_probes(const json& w) {
  const json* list = at(&w, {"probes"});
  if (!list || !list->is_array())
    return Known<std::vector<ProbeFigures>>::absent(
        "the audit has no window.probes (written by a stackaudit without the probe)");
  std::vector<ProbeFigures> probes;
  for (const json& p : *list) {
    if (!p.is_object() || text(at(&p, {"name"})).empty()) continue;
    ProbeFigures f;
    f.name = text(at(&p, {"name"}));
    f.requests = integer(at(&p, {"requests"})).value_or(0);
    f.p95 = number(at(&p, {"p95"}));
    f.p99 = number(at(&p, {"p99"}));
    if (f.requests > 0) f.error_rate = number(at(&p, {"error_rate"}));
    if (const json* kinds = at(&p, {"errors_by_kind"}); kinds && kinds->is_object())
      for (const auto& [kind, n] : kinds->items())
        if (long count = integer(&n).value_or(0); count > 0)
          f.errors_by_kind.emplace_back(kind, count);
    probes.push_back(std::move(f));
  }
  return {std::move(probes), ""};
}

Known<EventLoopFigures> window_event_loops(const json& w) {
  const json* loops = at(&w, {"event_loops"});
  if (!loops || !loops->is_object())
    return Known<EventLoopFigures>::absent(
        "the audit has no window.event_loops (written by a stackaudit without it)");
  EventLoopFigures f;
  f.samples = integer(at(loops, {"thread_samples"})).value_or(0);
  f.blocked = integer(at(loops, {"blocked_samples"})).value_or(0);
  f.blocked_share = number(at(loops, {"blocked_share"}))
                        .value_or(f.samples > 0 ? static_cast<double>(f.blocked) / f.samples : 0);
  if (const json* sites = at(loops, {"sites"}); sites && sites->is_array()) {
    for (const json& s : *sites) {
      if (!s.is_object()) continue;
      LoopSite site;
      site.function = text(at(&s, {"function"}));
      site.file = text(at(&s, {"file"}));
      site.line = integer(at(&s, {"line"})).value_or(0);
      site.site = text(at(&s, {"site"}));
      if (site.site.empty()) site.site = site_key(site.file, site.line, site.function);
      site.category = text(at(&s, {"category"}));
      site.primitive = text(at(&s, {"primitive"}));
      site.coroutine = code_place(at(&s, {"coroutine"}));
      site.samples = integer(at(&s, {"samples"})).value_or(0);
      site.share = number(at(&s, {"share"}))
                       .value_or(f.samples > 0 ? static_cast<double>(site.samples) / f.samples : 0);
      f.sites.push_back(std::move(site));
    }
  }
  return {std::move(f), ""};
}

Known<std::vector<PoolFigures>> window_pools(const json& w) {
  const json* list = at(&w, {"pools"});
  if (!list || !list->is_array())
    return Known<std::vector<PoolFigures>>::absent(
        "the audit has no window.pools (written by a stackaudit without it)");
  std::vector<PoolFigures> pools;
  for (const json& p : *list) {
    if (!p.is_object() || text(at(&p, {"name"})).empty()) continue;
    PoolFigures f;
    f.name = text(at(&p, {"name"}));
    f.max_threads = number(at(&p, {"threads", "max"})).value_or(0);
    f.samples = integer(at(&p, {"thread_samples"})).value_or(0);
    if (f.samples > 0) {
      f.idle_share = number(at(&p, {"idle_share"}));
      if (!f.idle_share)
        if (auto idle = integer(at(&p, {"idle_samples"})))
          f.idle_share = static_cast<double>(*idle) / f.samples;
    }
    pools.push_back(std::move(f));
  }
  return {std::move(pools), ""};
}

void read_window(const json& w, AuditFigures& out) {
  std::optional<long> rounds = integer(at(&w, {"rounds"}));
  auto average = [&](std::string_view field) -> Known<double> {
    std::string name = "window.target." + std::string(field) + ".avg";
    if (rounds && *rounds == 0)
      return Known<double>::absent("the window has no completed round (no " + name + ")");
    if (auto v = number(at(&w, {"target", field, "avg"}))) return {v, ""};
    return Known<double>::absent("the audit has no " + name);
  };
  out.rss_bytes = average("rss_bytes");
  out.threads = average("threads");
  out.probes = window_probes(w);
  out.event_loops = window_event_loops(w);
  out.pools = window_pools(w);

  const json* up = at(&w, {"target", "up_whole_window"});
  if (up && up->is_boolean()) {
    out.target_up = {
        TargetUpFigures{up->get<bool>(), integer(at(&w, {"target", "rounds_down"})).value_or(0),
                        integer(at(&w, {"target", "restarts"})).value_or(0),
                        text(at(&w, {"ended"}))},
        ""};
  } else {
    out.target_up = Known<TargetUpFigures>::absent(
        "the audit has no window.target.up_whole_window (written by a stackaudit without it)");
  }

  const json* throughput = at(&w, {"throughput"});
  if (!throughput || !throughput->is_object())
    out.service_requests_per_second = Known<double>::absent(
        "the audit has no window.throughput (written by a stackaudit without it)");
  else if (auto rps = number(at(throughput, {"service_requests_per_second"})))
    out.service_requests_per_second = {rps, ""};
  else
    out.service_requests_per_second = Known<double>::absent(
        "no service throughput was recorded (the agent ran without --service-metrics)");
}

// ---- a dump audit (dump --format json, single process or --children) ----

void read_dump(const json& doc, AuditFigures& out) {
  std::vector<const json*> processes;
  if (const json* list = at(&doc, {"processes"}); list && list->is_array()) {
    for (const json& p : *list)
      if (p.is_object()) processes.push_back(&p);
  } else {
    processes.push_back(&doc);
  }

  auto sum = [&](std::string_view field) -> Known<double> {
    if (processes.empty()) return Known<double>::absent("the audit has no process in it");
    double total = 0;
    for (const json* p : processes) {
      auto v = number(at(p, {"target", field}));
      if (!v) return Known<double>::absent("the audit has no target." + std::string(field));
      total += *v;
    }
    return {total, ""};
  };
  out.rss_bytes = sum("rss_bytes");
  out.threads = sum("threads");

  constexpr const char* kNoWindow = "a dump audit is one capture, not a window: ";
  out.probes = Known<std::vector<ProbeFigures>>::absent(
      std::string(kNoWindow) + "probe latency is recorded by agent --probe");
  out.target_up =
      Known<TargetUpFigures>::absent(std::string(kNoWindow) + "it cannot say the target stayed up");
  out.service_requests_per_second = Known<double>::absent(
      std::string(kNoWindow) + "throughput is recorded by agent --service-metrics");

  // Event loops: the threads running one, and those blocked outside their selector.
  EventLoopFigures loops;
  std::map<std::string, LoopSite> sites;
  bool known = !processes.empty();
  for (const json* p : processes) {
    auto n = integer(at(p, {"summary", "event_loop_threads"}));
    if (!n) known = false;
    loops.samples += n.value_or(0);
    const json* threads = at(p, {"threads"});
    if (!threads || !threads->is_array()) continue;
    for (const json& t : *threads) {
      const json* blocking = at(&t, {"blocking"});
      const json* blocks = at(blocking, {"blocks_event_loop"});
      if (!blocks || !blocks->is_boolean() || !blocks->get<bool>()) continue;
      ++loops.blocked;
      const json* s = at(blocking, {"site"});
      std::string function = text(at(s, {"function"})), file = text(at(s, {"file"}));
      long line = integer(at(s, {"line"})).value_or(0);
      std::string key = site_key(file, line, function);
      if (key.empty()) key = text(at(blocking, {"primitive"}));
      LoopSite& site = sites[key];
      if (site.samples == 0) {
        site.site = key;
        site.function = function;
        site.file = file;
        site.line = line;
        site.category = text(at(blocking, {"category"}));
        site.primitive = text(at(blocking, {"primitive"}));
        site.coroutine = code_place(at(blocking, {"coroutine"}));
      }
      ++site.samples;
    }
  }
  if (!known) {
    out.event_loops = Known<EventLoopFigures>::absent(
        "the audit has no summary.event_loop_threads (written by a stackaudit without it)");
  } else {
    // A blocked event-loop thread is an event-loop thread, whatever the count says.
    loops.samples = std::max(loops.samples, loops.blocked);
    loops.blocked_share =
        loops.samples > 0 ? static_cast<double>(loops.blocked) / loops.samples : 0;
    for (auto& [key, site] : sites) {
      site.share = static_cast<double>(site.samples) / loops.samples;
      loops.sites.push_back(std::move(site));
    }
    std::stable_sort(loops.sites.begin(), loops.sites.end(),
                     [](const LoopSite& a, const LoopSite& b) { return a.samples > b.samples; });
    out.event_loops = {std::move(loops), ""};
  }

  // Pools, by name, summed over the processes (as the window sums a tree).
  std::vector<std::string> order;
  std::map<std::string, std::pair<long, long>> by_name;  // threads, idle
  bool pools_known = !processes.empty();
  for (const json* p : processes) {
    const json* list = at(p, {"summary", "pools"});
    if (!list || !list->is_array()) {
      pools_known = false;
      continue;
    }
    for (const json& pool : *list) {
      std::string name = text(at(&pool, {"name"}));
      if (name.empty()) continue;
      if (!by_name.contains(name)) order.push_back(name);
      auto& [threads, idle] = by_name[name];
      threads += integer(at(&pool, {"threads"})).value_or(0);
      idle += integer(at(&pool, {"idle"})).value_or(0);
    }
  }
  if (!pools_known) {
    out.pools = Known<std::vector<PoolFigures>>::absent(
        "the audit has no summary.pools (written by a stackaudit without it)");
  } else {
    std::vector<PoolFigures> pools;
    for (const std::string& name : order) {
      auto [threads, idle] = by_name[name];
      PoolFigures f{name, static_cast<double>(threads), threads, std::nullopt};
      if (threads > 0) f.idle_share = static_cast<double>(idle) / threads;
      pools.push_back(std::move(f));
    }
    out.pools = {std::move(pools), ""};
  }
}

}  // namespace

const char* audit_kind_name(AuditKind kind) {
  return kind == AuditKind::kWindow ? "window" : "dump";
}

std::string site_key(const std::string& file, long line, const std::string& function) {
  if (!file.empty()) return line > 0 ? basename(file) + ":" + std::to_string(line) : basename(file);
  return function;
}

AuditFigures read_audit_figures(const json& doc, const std::string& file) {
  if (!doc.is_object())
    throw UserError{kExitUsage, file + " is not a stackaudit audit (its JSON is not an object)"};
  const json* schema = at(&doc, {"schema"});
  if (!schema || !schema->is_string())
    throw UserError{kExitUsage, file +
                                    " is not a stackaudit audit (it has no \"schema\"; gate "
                                    "reads what dump --format json and agent --audit-json write)"};
  if (schema->get<std::string>() != kSchema)
    throw UserError{kExitUsage, file + " has schema \"" + schema->get<std::string>() + "\", not " +
                                    std::string(kSchema)};
  AuditFigures out;
  out.file = file;
  if (const json* when = at(&doc, {"captured_at"}); when && when->is_string())
    out.captured_at = when->get<std::string>();
  const json* window = at(&doc, {"window"});
  if (window && window->is_object()) {
    out.kind = AuditKind::kWindow;
    read_window(*window, out);
  } else {
    // What dump --format json writes: a target and its threads, or (with
    // --children) its processes. Anything less is not an audit to judge.
    const json* target = at(&doc, {"target"});
    const json* threads = at(&doc, {"threads"});
    const json* processes = at(&doc, {"processes"});
    bool single = target && target->is_object() && threads && threads->is_array();
    if (!single && !(processes && processes->is_array()))
      throw UserError{kExitUsage, file +
                                      " is not a complete audit: it has neither a \"window\" "
                                      "(agent --audit-json) nor a \"target\" with \"threads\" "
                                      "or \"processes\" (dump --format json)"};
    out.kind = AuditKind::kDump;
    read_dump(doc, out);
  }
  return out;
}

AuditFigures load_audit(const std::string& path, const std::string& role) {
  std::string label = "the " + role + " audit " + path;
  std::string content = read_input_file(path, "the " + role + " audit");
  json doc;
  try {
    doc = json::parse(content);
  } catch (const json::parse_error& e) {
    // nlohmann says where in its message: "... parse error at line 3, column 7: ..."
    std::string what = e.what(), where;
    size_t at = what.find("line ");
    if (at != std::string::npos) where = " (at " + what.substr(at, what.find(':', at) - at) + ")";
    throw UserError{kExitUsage, label + " is not valid JSON" + where};
  }
  try {
    return read_audit_figures(doc, path);
  } catch (const UserError& e) {
    throw UserError{kExitUsage, "the " + role + " audit " + e.message};
  }
}

}  // namespace stackaudit
