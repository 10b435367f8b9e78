#include "agent/audit_json.h"

#include <ctime>

#include "agent/version.h"

namespace stackaudit {
namespace {

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

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
  };
}

nlohmann::json thread_json(const Thread& t) {
  using nlohmann::json;
  json syscall = nullptr;
  if (t.syscall) {
    json args = json::array();
    for (uint64_t a : t.syscall->args) args.push_back(hex(a));
    json fd = nullptr;
    if (t.syscall->fd)
      fd = {{"fd", t.syscall->fd->fd},
            {"kind", t.syscall->fd->kind},
            {"detail", t.syscall->fd->detail},
            {"target", t.syscall->fd->target}};
    syscall = {{"nr", t.syscall->nr}, {"name", t.syscall->name}, {"args", args}, {"fd", fd}};
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
        {"coroutine", t.blocking->coroutine ? frame_json(*t.blocking->coroutine) : json(nullptr)}};
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

namespace {

// Everything but the threads, which are an empty array here.
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
          {"max_stop_us", s.capture.max_stop_us}}}}},
      {"threads", threads},
      {"summary",
       {{"threads", s.summary.threads},
        {"blocked", s.summary.blocked},
        {"idle", s.summary.idle},
        {"by_category", by_category},
        {"pools", pools},
        {"event_loop_threads", s.summary.event_loop_threads},
        {"event_loops_blocked", s.summary.event_loops_blocked},
        {"gil_holder", s.summary.gil_holder ? json(*s.summary.gil_holder) : json(nullptr)}}},
      {"warnings", s.warnings},
  };
}

}  // namespace

nlohmann::json audit_json(const Snapshot& s) {
  nlohmann::json doc = audit_json_without_threads(s);
  nlohmann::json& threads = doc["threads"];
  for (const Thread& t : s.threads) threads.push_back(thread_json(t));
  return doc;
}

void write_audit_json(const Snapshot& s, const std::function<void(std::string_view)>& out) {
  // The document without its threads, cut where they go: keys are printed
  // sorted, and "threads" is the only key at the top level's indentation
  // with an empty array.
  std::string text = audit_json_without_threads(s).dump(2);
  const std::string_view key = "\n  \"threads\": ";
  size_t at = text.find(std::string(key) + "[]");
  if (at == std::string::npos) throw std::logic_error("audit JSON without a threads key");
  std::string_view whole = text;
  out(whole.substr(0, at + key.size()));
  if (s.threads.empty()) {
    out("[]");
  } else {
    out("[\n");
    std::string lines;
    for (size_t i = 0; i < s.threads.size(); ++i) {
      // Each thread as dump(2) prints it two levels down: every line four
      // spaces further in (a newline inside a string is escaped, \n).
      std::string one = thread_json(s.threads[i]).dump(2);
      lines.clear();
      lines += "    ";
      for (char c : one) {
        lines += c;
        if (c == '\n') lines += "    ";
      }
      lines += i + 1 < s.threads.size() ? ",\n" : "\n";
      out(lines);
    }
    out("  ]");
  }
  out(whole.substr(at + key.size() + 2));
  out("\n");
}

}  // namespace stackaudit
