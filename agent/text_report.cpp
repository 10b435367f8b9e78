#include "agent/text_report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>
#include <string_view>

#include "agent/audit_json.h"
#include "agent/task_report.h"
#include "agent/version.h"
#include "collector/lock_owners.h"
#include "collector/rules.h"

namespace stackaudit {
namespace {

// Text from the target as the report shows it: control bytes (an escape
// sequence in a thread name could drive the reader's terminal; a newline
// would fake a line of the report) become \xNN. The snapshot's text is valid
// UTF-8 already (collector/utf8.h).
std::string shown(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7F) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", b);
      out += esc;
    } else {
      out += c;
    }
  }
  return out;
}

std::string where(const Frame& f) {
  if (f.function.empty() && f.file.empty()) return shown(frame_name(f));  // module+0xOFFSET
  std::string out = f.function.empty() ? "??" : shown(f.function);
  if (f.inlined) out += " [inlined]";
  if (!f.file.empty()) {
    out += " (" + shown(f.file);
    if (f.line > 0) out += ":" + std::to_string(f.line);
    out += ")";
  } else if (!f.module.empty()) {
    char off[32];
    std::snprintf(off, sizeof off, "+0x%llx", static_cast<unsigned long long>(f.module_offset));
    out += " (" + shown(f.module) + off + ")";
  }
  if (f.frame_pointer) out += " [frame pointer]";
  return out;
}

// "5 (pipe pipe:[4242], written by PID 77 (producer))".
std::string fd_text(const FdInfo& fd) {
  std::string out = std::to_string(fd.fd) + " (" + fd.kind + " " + shown(fd.detail);
  if (fd.offset) out += " at offset " + std::to_string(*fd.offset);
  if (!fd.other_end.empty()) out += ", " + shown(fd.other_end);
  return out + ")";
}

std::string seconds_text(double s) {
  char buf[48];
  if (s < 1)
    std::snprintf(buf, sizeof buf, "%.0f ms", s * 1000);
  else
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

std::string timeout_text(const WaitTimeout& t) {
  if (t.none) return "no timeout";
  if (t.remaining_s)
    return *t.remaining_s < 0 ? "deadline passed " + seconds_text(-*t.remaining_s) + " ago"
                              : "deadline in " + seconds_text(*t.remaining_s);
  if (t.requested_s) return "timeout " + seconds_text(*t.requested_s);
  return "timeout unknown";
}

constexpr size_t kMaxListedAlike = 12;

// What makes two threads "the same" for the report: everything it shows of
// them but their ids and names: state, how they are blocked (category,
// primitive, detail, the lock), the syscall with its fds and timeout asked
// for, the GIL, the note, and every frame. (A deadline's time left is left
// out: it differs by the moment each was read.)
std::string stack_key(const Thread& t) {
  std::string key = t.state + '\0' + t.captured + '\0' + std::to_string(t.truncated) + '\0' +
                    t.note + '\0' + std::to_string(t.python && t.python->holds_gil);
  if (t.blocking) {
    const Blocking& b = *t.blocking;
    key += '\0' + b.category + '\0' + b.primitive + '\0' + b.detail + '\0' +
           std::to_string(b.idle) + std::to_string(b.blocks_event_loop);
    if (b.lock) key += '\0' + hex(b.lock->address);
  }
  if (t.syscall) {
    key += '\0' + t.syscall->name;
    if (t.syscall->fd) key += '\0' + fd_text(*t.syscall->fd);
    for (const FdInfo& w : t.syscall->watched) key += '\0' + fd_text(w);
    if (const auto& to = t.syscall->timeout)
      key +=
          '\0' + std::to_string(to->none) + (to->requested_s ? seconds_text(*to->requested_s) : "");
  }
  for (const Frame& f : t.frames)
    key += '\0' + f.function + '\0' + f.file + '\0' + std::to_string(f.line) + '\0' + hex(f.ip) +
           '\0' + std::to_string(f.interpreter);
  return key;
}

std::string join(const std::vector<std::string>& v, const char* sep = " ") {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

}  // namespace

std::string text_report(const Snapshot& s) {
  std::ostringstream out;
  out << "stackaudit " << kVersion << " | PID " << s.target.pid;
  // A container's process: the PID its own tools (ps, logs) print, too.
  if (s.target.ns_pid != 0 && s.target.ns_pid != s.target.pid)
    out << " [ns PID " << s.target.ns_pid << "]";
  out << " (" << shown(s.target.comm) << ") " << shown(join(s.target.cmdline)) << "\n";
  out << "runtime " << s.target.runtime_kind
      << (s.target.runtime_version.empty() ? "" : " " + s.target.runtime_version) << ", RSS "
      << s.target.rss_bytes / (1024 * 1024) << " MiB, " << s.threads.size() << " threads, captured "
      << rfc3339_utc(s.captured_at_unix_ns) << " in " << s.capture.duration_us / 1000.0 << " ms\n";
  out << "pause: " << s.capture.threads_not_stopped << " threads read without a stop, "
      << s.capture.threads_stopped
      << (s.capture.consistent && s.capture.consistent->held > 0 ? " stopped (held together)"
                                                                 : " stopped one at a time");
  if (s.capture.threads_stopped > 0)
    out << " (held p50 " << s.capture.stop_us.p50_us << " us, p99 " << s.capture.stop_us.p99_us
        << " us, max " << s.capture.stop_us.max_us << " us; bound " << s.capture.max_stop_us / 1000
        << " ms)";
  out << "\n";
  if (const auto& c = s.capture.consistent; c && c->achieved)
    out << "consistent: every thread as it was at one instant (" << c->held << " held for at most "
        << c->window_us << " us, " << c->verified << " checked not to have run meanwhile)\n";
  for (const auto& w : s.warnings) out << "warning: " << shown(w) << "\n";

  if (s.summary.event_loops_blocked > 0)
    out << "\n!!! " << s.summary.event_loops_blocked
        << " asyncio event loop(s) blocked outside their selector: every coroutine of that loop "
           "waits (see BLOCKS THE EVENT LOOP below)\n";
  out << asyncio_alerts(s);
  for (const Deadlock& d : s.summary.deadlocks) {
    out << "\n!!! DEADLOCK: "
        << (d.threads.size() == 1 ? std::string("a thread waits for a lock it holds itself")
                                  : std::to_string(d.threads.size()) +
                                        " threads wait for each other's locks; none can go on")
        << "\n";
    for (size_t i = 0; i < d.threads.size(); ++i) {
      const Deadlock::Member& m = d.threads[i];
      const Deadlock::Member& next = d.threads[(i + 1) % d.threads.size()];
      out << "    \"" << shown(m.name) << "\" (tid " << m.tid << ") waits for " << m.waits_for.kind
          << " " << hex(m.waits_for.address) << ", held by \"" << shown(next.name) << "\" (tid "
          << next.tid << ")";
      if (m.site) out << ", at " << where(*m.site);
      out << "\n";
    }
  }

  // Threads in the same stack, waiting the same way, are shown once: a pool
  // of 200 idle workers is one entry that lists them.
  std::map<std::string, std::vector<const Thread*>> alike;
  for (const Thread& t : s.threads) alike[stack_key(t)].push_back(&t);
  for (const Thread& t : s.threads) {
    const std::vector<const Thread*>& same = alike[stack_key(t)];
    if (same.front() != &t) continue;  // shown with the first of them
    bool named_by_python = t.python && !t.python->thread_name.empty();
    out << "\nThread " << t.tid;
    if (t.ns_tid != 0 && t.ns_tid != t.tid) out << " [ns " << t.ns_tid << "]";
    out << " \"" << shown(named_by_python ? t.python->thread_name : t.name) << "\"";
    if (t.python && t.python->holds_gil) out << " [holds the GIL]";
    out << " " << t.state;
    if (t.blocking) {
      out << " | " << t.blocking->category << ": " << shown(t.blocking->primitive);
      if (!t.blocking->detail.empty()) out << " (" << shown(t.blocking->detail) << ")";
      if (t.blocking->idle) out << " (idle)";
    } else if (t.state == "running") {
      out << " | on CPU";
    }
    out << "\n";
    if (same.size() > 1) {
      out << "    and " << same.size() - 1 << " more thread" << (same.size() > 2 ? "s" : "")
          << " in the same stack:";
      size_t listed = 0;
      for (size_t i = 1; i < same.size() && listed < kMaxListedAlike; ++i, ++listed)
        out << (i > 1 ? ", " : " ") << same[i]->tid << " \"" << shown(thread_label(*same[i]))
            << "\"";
      if (same.size() - 1 > listed) out << " and " << same.size() - 1 - listed << " more";
      out << "\n";
    }
    if (t.blocking && t.blocking->blocks_event_loop) {
      out << "    !!! BLOCKS THE EVENT LOOP: this thread runs an asyncio loop and is blocked in "
          << shown(t.blocking->primitive);
      if (t.blocking->coroutine) out << ", in " << where(*t.blocking->coroutine);
      out << "\n";
    }
    if (t.blocking) {
      if (t.blocking->site)
        out << "    site: " << where(*t.blocking->site) << "\n";
      else
        out << "    site: (no frame of the program's own code)\n";
    }
    if (t.blocking && t.blocking->lock) {
      const LockInfo& l = *t.blocking->lock;
      out << "    lock: " << l.kind << " " << hex(l.address) << " " << shown(l.detail) << "\n";
    }
    if (t.syscall) {
      out << "    syscall: " << (t.syscall->name.empty() ? "?" : t.syscall->name);
      if (t.syscall->fd) {
        out << " on fd " << fd_text(*t.syscall->fd);
      }
      if (const auto& to = t.syscall->timeout) out << ", " << timeout_text(*to);
      out << "\n";
      for (const FdInfo& w : t.syscall->watched) out << "      watches fd " << fd_text(w) << "\n";
      if (t.syscall->watched_more > 0)
        out << "      watches " << t.syscall->watched_more << " more fd(s)\n";
    }
    if (t.captured == "failed") {
      out << "    not captured: " << shown(t.note) << "\n";
      continue;
    }
    for (size_t i = 0; i < t.frames.size(); ++i) {
      char ip[32];
      if (t.frames[i].kind == Frame::Kind::kPython && t.frames[i].interpreter != 0)
        std::snprintf(ip, sizeof ip, "%-14s",
                      ("[py interp " + std::to_string(t.frames[i].interpreter) + "]").c_str());
      else if (t.frames[i].kind == Frame::Kind::kPython)
        std::snprintf(ip, sizeof ip, "%-14s", "[python]");
      else
        std::snprintf(ip, sizeof ip, "0x%012llx", static_cast<unsigned long long>(t.frames[i].ip));
      out << "    #" << i << (i < 10 ? "  " : " ") << ip << " " << where(t.frames[i]) << "\n";
    }
    if (t.truncated) out << "    ... stack truncated: " << shown(t.note) << "\n";
  }
  out << asyncio_report(s);

  out << "\nSummary: " << s.summary.threads << " threads, " << s.summary.blocked << " blocked ("
      << s.summary.idle << " idle), " << s.summary.threads - s.summary.blocked << " not blocked\n";
  if (s.target.runtime_kind == "cpython") {
    out << "  GIL: "
        << (s.summary.gil_holder ? "held by thread " + std::to_string(*s.summary.gil_holder)
                                 : std::string("not held"))
        << "; asyncio event loops: " << s.summary.event_loop_threads << " ("
        << s.summary.event_loops_blocked << " blocked)\n";
  }
  out << asyncio_summary_line(s);
  for (const Pool& p : s.summary.pools) {
    out << "  pool " << shown(p.name) << ": " << p.threads << " threads, " << p.idle << " idle, "
        << p.blocked << " blocked";
    std::string cats;
    for (const auto& [c, n] : p.by_category)
      cats += (cats.empty() ? " (" : ", ") + c + " " + std::to_string(n);
    out << (cats.empty() ? "" : cats + ")") << "\n";
  }
  std::vector<std::pair<std::string, size_t>> cats(s.summary.by_category.begin(),
                                                   s.summary.by_category.end());
  std::stable_sort(cats.begin(), cats.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  for (const auto& [cat, n] : cats) {
    if (n == 0) continue;
    out << "  " << cat << std::string(cat.size() < 10 ? 10 - cat.size() : 1, ' ') << n;
    std::vector<std::string> sites;
    for (const Thread& t : s.threads) {
      if (!t.blocking || t.blocking->category != cat) continue;
      std::string site = t.blocking->site ? shown(site_label(*t.blocking->site)) : "-";
      if (std::find(sites.begin(), sites.end(), site) == sites.end()) sites.push_back(site);
    }
    out << "   at " << join(sites, ", ") << "\n";
  }
  return out.str();
}

}  // namespace stackaudit

namespace stackaudit {

std::string shown_text(std::string_view text) {
  return shown(text);
}

std::string shown_frame(const Frame& frame) {
  return where(frame);
}

}  // namespace stackaudit
