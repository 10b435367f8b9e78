#include "agent/audit_json.h"

#include <ctime>

#include "agent/version.h"

namespace stackaudit {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string rfc3339_utc(int64_t unix_ns) {
  time_t secs = static_cast<time_t>(unix_ns / 1000000000);
  tm utc;
  gmtime_r(&secs, &utc);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%06dZ", static_cast<int>((unix_ns / 1000) % 1000000));
  return std::string(buf) + frac;
}

nlohmann::json frame_json(const Frame& f) {
  bool python = f.kind == Frame::Kind::kPython;
  return {
      {"kind", python ? "python" : "native"},
      {"function", f.function},
      {"module", f.module},
      {"file", f.file},
      {"line", f.line},
      {"inlined", f.inlined},
      {"ip", python ? nlohmann::json(nullptr) : nlohmann::json(hex(f.ip))},
      {"module_offset", python ? nlohmann::json(nullptr) : nlohmann::json(hex(f.module_offset))},
      {"interpreter", python ? nlohmann::json(f.interpreter) : nlohmann::json(nullptr)},
      {"frame_pointer", f.frame_pointer},
  };
}

nlohmann::json fd_json(const FdInfo& fd) {
  return {{"fd", fd.fd},
          {"kind", fd.kind},
          {"detail", fd.detail},
          {"target", fd.target},
          {"offset", fd.offset ? nlohmann::json(*fd.offset) : nlohmann::json(nullptr)},
          {"other_end", fd.other_end}};
}

namespace {

nlohmann::json owner_json(const std::optional<LockOwner>& o) {
  if (!o) return nullptr;
  return {{"tid", o->tid},
          {"name", o->alive ? nlohmann::json(o->name) : nlohmann::json(nullptr)},
          {"alive", o->alive}};
}

nlohmann::json consistency_json(const std::optional<Consistency>& c) {
  if (!c) return nullptr;
  return {{"achieved", c->achieved},
          {"threads_held", c->held},
          {"threads_verified", c->verified},
          {"threads_moved", c->moved},
          {"passes", c->passes},
          {"window_us", c->window_us},
          {"why_not", c->achieved ? nlohmann::json(nullptr) : nlohmann::json(c->why_not)}};
}

nlohmann::json lock_json(const LockInfo& l) {
  return {{"kind", l.kind}, {"address", hex(l.address)}, {"detail", l.detail}};
}

}  // namespace

nlohmann::json thread_json(const Thread& t) {
  using nlohmann::json;
  json syscall = nullptr;
  if (t.syscall) {
    json args = json::array();
    for (uint64_t a : t.syscall->args) args.push_back(hex(a));
    json fd = t.syscall->fd ? fd_json(*t.syscall->fd) : json(nullptr);
    json watched = json::array();
    for (const FdInfo& w : t.syscall->watched) watched.push_back(fd_json(w));
    json timeout = nullptr;
    if (const auto& to = t.syscall->timeout)
      timeout = {{"none", to->none},
                 {"requested_s", to->requested_s ? json(*to->requested_s) : json(nullptr)},
                 {"remaining_s", to->remaining_s ? json(*to->remaining_s) : json(nullptr)}};
    syscall = {{"nr", t.syscall->nr}, {"name", t.syscall->name},
               {"args", args},        {"fd", fd},
               {"watched", watched},  {"watched_more", t.syscall->watched_more},
               {"timeout", timeout}};
  }
  json blocking = nullptr;
  if (t.blocking) {
    blocking = {
        {"category", t.blocking->category},
        {"primitive", t.blocking->primitive},
        {"site", t.blocking->site ? frame_json(*t.blocking->site) : json(nullptr)},
        {"idle", t.blocking->idle},
        {"rule", t.blocking->rule},
        {"blocks_event_loop", t.blocking->blocks_event_loop},
        {"coroutine", t.blocking->coroutine ? frame_json(*t.blocking->coroutine) : json(nullptr)},
        {"detail", t.blocking->detail},
        {"lock", t.blocking->lock ? lock_json(*t.blocking->lock) : json(nullptr)},
        {"owner", t.blocking->lock ? owner_json(t.blocking->lock->owner) : json(nullptr)}};
  }
  json frames = json::array();
  for (const Frame& f : t.frames) frames.push_back(frame_json(f));
  json thread = {{"tid", t.tid},
                 {"ns_tid", t.ns_tid != 0 ? json(t.ns_tid) : json(nullptr)},
                 {"name", t.name},
                 {"state", t.state},
                 {"wchan", t.wchan},
                 {"syscall", syscall},
                 {"blocking", blocking},
                 {"frames", frames},
                 {"truncated", t.truncated},
                 {"captured", t.captured},
                 {"stop_us", (t.stop_ns + 500) / 1000}};
  if (!t.note.empty()) thread["note"] = t.note;
  thread["python"] = nullptr;
  if (t.python)
    thread["python"] = {{"thread_name", t.python->thread_name},
                        {"holds_gil", t.python->holds_gil},
                        {"waits_for_gil", t.python->waits_for_gil},
                        {"tstate", hex(t.python->tstate)},
                        {"truncated", t.python->truncated}};
  return thread;
}

nlohmann::json task_json(const AsyncTask& t) {
  using nlohmann::json;
  json coroutine = json::array();
  for (const Frame& f : t.coroutine) coroutine.push_back(frame_json(f));
  const TaskAwait& a = t.awaiting;
  json awaiting = {{"kind", a.kind},
                   {"detail", a.detail},
                   {"seconds_left", a.seconds_left ? json(*a.seconds_left) : json(nullptr)},
                   {"fd", a.fd ? fd_json(*a.fd) : json(nullptr)},
                   {"executor_tid", a.executor_tid != 0 ? json(a.executor_tid) : json(nullptr)}};
  return {{"id", t.id},
          {"name", t.name},
          {"state", t.state},
          {"coroutine", coroutine},
          {"coroutine_truncated", t.coroutine_truncated},
          {"awaiting", awaiting},
          {"awaits", t.awaits},
          {"awaited_by", t.awaited_by}};
}

namespace {

// A loop without its tasks, which are an empty array here.
nlohmann::json loop_json_without_tasks(const EventLoop& l) {
  using nlohmann::json;
  return {{"id", l.id},
          {"type", l.type},
          {"tid", l.tid != 0 ? json(l.tid) : json(nullptr)},
          {"thread_name", l.thread_name},
          {"ready_callbacks", l.ready_callbacks >= 0 ? json(l.ready_callbacks) : json(nullptr)},
          {"current_task", l.current_task.empty() ? json(nullptr) : json(l.current_task)},
          {"blocked", l.blocked},
          {"blocked_in", l.blocked_in ? frame_json(*l.blocked_in) : json(nullptr)},
          {"tasks_seen", l.tasks_seen},
          {"truncated", l.truncated},
          {"tasks", json::array()}};
}

nlohmann::json asyncio_summary_json(const AsyncioSummary& a) {
  using nlohmann::json;
  json by_awaiting = json::object();
  for (const auto& [k, v] : a.by_awaiting) by_awaiting[k] = v;
  json cycles = json::array();
  for (const AwaitCycle& c : a.cycles) {
    json tasks = json::array();
    for (size_t i = 0; i < c.task_ids.size(); ++i)
      tasks.push_back({{"id", c.task_ids[i]}, {"name", i < c.names.size() ? c.names[i] : ""}});
    cycles.push_back({{"tasks", tasks}});
  }
  return {{"read", a.read}, {"tasks", a.tasks}, {"by_awaiting", by_awaiting}, {"cycles", cycles}};
}

nlohmann::json deadlocks_json(const std::vector<Deadlock>& deadlocks) {
  using nlohmann::json;
  json out = json::array();
  for (const Deadlock& d : deadlocks) {
    json members = json::array();
    for (const Deadlock::Member& m : d.threads)
      members.push_back({{"tid", m.tid},
                         {"name", m.name},
                         {"waits_for", lock_json(m.waits_for)},
                         {"held_by", owner_json(m.waits_for.owner)},
                         {"site", m.site ? frame_json(*m.site) : json(nullptr)}});
    out.push_back({{"threads", members}});
  }
  return out;
}

// Everything but the threads and the event loops, which are empty arrays here.
nlohmann::json audit_json_without_threads(const Snapshot& s) {
  using nlohmann::json;
  json threads = json::array();
  json by_category = json::object();
  for (const auto& [k, v] : s.summary.by_category) by_category[k] = v;
  json pools = json::array();
  for (const Pool& p : s.summary.pools) {
    json cats = json::object();
    for (const auto& [k, v] : p.by_category) cats[k] = v;
    pools.push_back({{"name", p.name},
                     {"threads", p.threads},
                     {"idle", p.idle},
                     {"blocked", p.blocked},
                     {"by_category", cats}});
  }
  json runtime = {{"kind", s.target.runtime_kind}};
  runtime["version"] =
      s.target.runtime_version.empty() ? json(nullptr) : json(s.target.runtime_version);
  return {
      {"schema", kAuditSchema},
      {"tool", {{"name", "stackaudit"}, {"version", kVersion}}},
      {"captured_at", rfc3339_utc(s.captured_at_unix_ns)},
      {"target",
       {{"pid", s.target.pid},
        {"ns_pid", s.target.ns_pid != 0 ? json(s.target.ns_pid) : json(nullptr)},
        {"comm", s.target.comm},
        {"exe", s.target.exe},
        {"cmdline", s.target.cmdline},
        {"rss_bytes", s.target.rss_bytes},
        {"threads", s.target.threads},
        {"runtime", runtime},
        {"seccomp", s.target.seccomp.empty() ? json(nullptr) : json(s.target.seccomp)},
        {"exited_during_capture", s.target.exited}}},
      {"capture",
       {{"mode", s.capture.mode},
        {"duration_us", s.capture.duration_us},
        {"threads_stopped", s.capture.threads_stopped},
        {"threads_not_stopped", s.capture.threads_not_stopped},
        {"threads_failed", s.capture.threads_failed},
        {"threads_exited", s.capture.threads_exited},
        {"eintr_restarted", s.capture.eintr_restarted},
        {"eintr_inflicted", s.capture.eintr_inflicted},
        {"restarts_redirected", s.capture.restarts_redirected},
        {"stop_retries", s.capture.stop_retries},
        {"late_stops", s.capture.late_stops},
        {"watchdog_ended", s.capture.watchdog_ended},
        {"stop_us",
         {{"max", s.capture.stop_us.max_us},
          {"p50", s.capture.stop_us.p50_us},
          {"p99", s.capture.stop_us.p99_us},
          {"total", s.capture.stop_us.total_us}}},
        {"reach_stop_us",
         {{"max", s.capture.reach_us.max_us},
          {"p50", s.capture.reach_us.p50_us},
          {"p99", s.capture.reach_us.p99_us}}},
        {"race_window_us",
         {{"max", s.capture.race_window_us.max_us},
          {"p50", s.capture.race_window_us.p50_us},
          {"p99", s.capture.race_window_us.p99_us}}},
        {"stopper",
         {{"priority",
           s.capture.stopper_priority.empty() ? json(nullptr) : json(s.capture.stopper_priority)},
          {"max_stop_us", s.capture.max_stop_us}}},
        {"consistent", consistency_json(s.capture.consistent)}}},
      {"threads", threads},
      {"event_loops", json::array()},
      {"summary",
       {{"threads", s.summary.threads},
        {"blocked", s.summary.blocked},
        {"idle", s.summary.idle},
        {"by_category", by_category},
        {"pools", pools},
        {"event_loop_threads", s.summary.event_loop_threads},
        {"event_loops_blocked", s.summary.event_loops_blocked},
        {"gil_holder", s.summary.gil_holder ? json(*s.summary.gil_holder) : json(nullptr)},
        {"deadlocks", deadlocks_json(s.summary.deadlocks)},
        {"asyncio", asyncio_summary_json(s.summary.asyncio)}}},
      {"warnings", s.warnings},
  };
}

}  // namespace

nlohmann::json event_loop_json(const EventLoop& loop) {
  nlohmann::json out = loop_json_without_tasks(loop);
  nlohmann::json& tasks = out["tasks"];
  for (const AsyncTask& t : loop.tasks) tasks.push_back(task_json(t));
  return out;
}

nlohmann::json audit_json(const Snapshot& s) {
  nlohmann::json doc = audit_json_without_threads(s);
  nlohmann::json& threads = doc["threads"];
  for (const Thread& t : s.threads) threads.push_back(thread_json(t));
  nlohmann::json& loops = doc["event_loops"];
  for (const EventLoop& l : s.event_loops) loops.push_back(event_loop_json(l));
  return doc;
}

namespace {

using Out = std::function<void(std::string_view)>;

// Text as dump(2) prints it `spaces` further in: after each newline (a
// newline inside a string is escaped, \n).
std::string indented(std::string_view text, size_t spaces, bool first_line = false) {
  std::string lines;
  lines.reserve(text.size() + spaces * 8);
  if (first_line) lines.append(spaces, ' ');
  for (char c : text) {
    lines += c;
    if (c == '\n') lines.append(spaces, ' ');
  }
  return lines;
}

// Where `"key": []` sits in a dump(2) text whose keys are `spaces` in: the
// offset just past `"key": `. Only one key at that depth has that name.
size_t cut_at(const std::string& text, const char* key, size_t spaces) {
  std::string marker = "\n" + std::string(spaces, ' ') + "\"" + key + "\": ";
  size_t at = text.find(marker + "[]");
  if (at == std::string::npos)
    throw std::logic_error(std::string("audit JSON without a ") + key + " key");
  return at + marker.size();
}

// An array's items, each as dump(2) prints it, `spaces` further in than the
// array's key: "[]", or "[", the items one per line, "]".
template <typename T, typename Write>
void write_array(const std::vector<T>& items, size_t spaces, const Out& out, Write&& write_item) {
  if (items.empty()) {
    out("[]");
    return;
  }
  out("[\n");
  for (size_t i = 0; i < items.size(); ++i) {
    write_item(items[i], spaces + 2);
    out(i + 1 < items.size() ? ",\n" : "\n");
  }
  out(std::string(spaces, ' ') + "]");
}

// One loop, `spaces` in, its tasks one at a time.
void write_loop(const EventLoop& loop, size_t spaces, const Out& out) {
  std::string text = loop_json_without_tasks(loop).dump(2);
  size_t at = cut_at(text, "tasks", 2);
  std::string_view whole = text;
  out(indented(whole.substr(0, at), spaces, true));
  write_array(loop.tasks, spaces + 2, out, [&](const AsyncTask& t, size_t in) {
    out(indented(task_json(t).dump(2), in, true));
  });
  out(indented(whole.substr(at + 2), spaces));
}

}  // namespace

void write_audit_json(const Snapshot& s, const Out& out) {
  // The document without its threads and loops, cut where they go: keys are
  // printed sorted ("event_loops" before "threads"), and these are the only
  // keys at the top level's indentation with an empty array.
  std::string text = audit_json_without_threads(s).dump(2);
  size_t loops_at = cut_at(text, "event_loops", 2);
  size_t threads_at = cut_at(text, "threads", 2);
  if (loops_at > threads_at) throw std::logic_error("audit JSON keys out of order");
  std::string_view whole = text;
  out(whole.substr(0, loops_at));
  write_array(s.event_loops, 2, out,
              [&](const EventLoop& l, size_t in) { write_loop(l, in, out); });
  out(whole.substr(loops_at + 2, threads_at - loops_at - 2));
  write_array(s.threads, 2, out,
              [&](const Thread& t, size_t in) { out(indented(thread_json(t).dump(2), in, true)); });
  out(whole.substr(threads_at + 2));
  out("\n");
}

}  // namespace stackaudit
