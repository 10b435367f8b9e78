#include "collector/snapshot_builder.h"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <set>
#include <string_view>

#include "collector/lock_owners.h"
#include "collector/percentile.h"
#include "collector/utf8.h"
#include "collector/wait_context.h"
#include "injector/proc.h"
#include "injector/syscalls.h"

namespace stackaudit {
namespace {

// A thread's id as the interpreter knows it (gettid() inside the target): the
// one of the target's own PID namespace, which is not ours in a container.
long python_tid(const RawThread& t) {
  return t.ns_tid > 0 ? t.ns_tid : t.tid;
}

const char* capture_mode_name(CaptureMode m) {
  switch (m) {
    case CaptureMode::kStopped:
      return "stopped";
    case CaptureMode::kNonStop:
      return "nonstop";
    case CaptureMode::kReused:
      return "reused";
    case CaptureMode::kFailed:
      return "failed";
  }
  return "failed";
}

uint64_t inode_in(const std::string& link) {
  auto open = link.find('[');
  if (open == std::string::npos) return 0;
  return std::strtoull(link.c_str() + open + 1, nullptr, 10);
}

// "python3.11" or a mapped "libpython3.11.so.1.0" -> "3.11".
std::string python_version(const std::string& name) {
  std::string_view n = name;
  if (n.starts_with("lib")) n.remove_prefix(3);
  if (!n.starts_with("python3.")) return "";
  size_t end = 8;
  while (end < n.size() && std::isdigit(static_cast<unsigned char>(n[end]))) ++end;
  return end > 8 ? std::string(n.substr(6, end - 6)) : "";
}

}  // namespace

std::string state_name(char s) {
  switch (s) {
    case 'R':
      return "running";
    case 'S':
    case 'I':
      return "sleeping";
    case 'D':
      return "disk_sleep";
    case 'T':
    case 't':
      return "stopped";
    case 'Z':
    case 'X':
      return "zombie";
    default:
      return "unknown";
  }
}

FdInfo describe_fd(const FdLink& link, const std::vector<SocketEntry>& sockets) {
  FdInfo info;
  info.fd = link.fd;
  info.target = link.target;
  const std::string& t = link.target;
  if (t.starts_with("socket:")) {
    info.kind = "socket";
    uint64_t ino = inode_in(t);
    for (const SocketEntry& s : sockets) {
      if (s.inode != ino) continue;
      info.detail = s.protocol + " " + s.local;
      // A listening socket has no peer (its remote address reads 0.0.0.0:0).
      if (!s.remote.empty() && s.protocol != "unix" && s.state != "LISTEN")
        info.detail += " -> " + s.remote;
      if (s.protocol == "unix" && s.local.empty()) info.detail += "(unnamed)";
      info.detail += " " + s.state;
      break;
    }
    if (info.detail.empty()) info.detail = t;
  } else if (t.starts_with("pipe:")) {
    info.kind = "pipe";
    info.detail = t;
  } else if (t.starts_with("anon_inode:")) {
    std::string what = t.substr(11);
    what.erase(std::remove(what.begin(), what.end(), '['), what.end());
    what.erase(std::remove(what.begin(), what.end(), ']'), what.end());
    info.kind = what == "eventpoll" ? "epoll" : what;
    info.detail = t;
  } else {
    if (S_ISFIFO(link.mode))
      info.kind = "fifo";
    else if (S_ISCHR(link.mode))
      info.kind = "chr";
    else if (S_ISBLK(link.mode))
      info.kind = "block";
    else if (S_ISDIR(link.mode))
      info.kind = "dir";
    else
      info.kind = "file";
    info.detail = t;
  }
  return info;
}

namespace {

// Every text of a thread that came from the target, made valid UTF-8
// (collector/utf8.h) before anything reads it.
void make_text_valid(Thread& t) {
  for (std::string* text : {&t.name, &t.wchan, &t.note}) make_valid_utf8(*text);
  if (t.syscall) {
    std::vector<FdInfo*> fds;
    if (t.syscall->fd) fds.push_back(&*t.syscall->fd);
    for (FdInfo& w : t.syscall->watched) fds.push_back(&w);
    for (FdInfo* fd : fds)
      for (std::string* text : {&fd->target, &fd->detail}) make_valid_utf8(*text);
  }
  if (t.python) make_valid_utf8(t.python->thread_name);
  for (Frame& f : t.frames)
    for (std::string* text : {&f.function, &f.module, &f.module_path, &f.file})
      make_valid_utf8(*text);
}

}  // namespace

StopStats stop_stats(std::vector<uint64_t> ns) {
  StopStats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto us = [](uint64_t v) { return (v + 500) / 1000; };
  s.max_us = us(ns.back());
  s.p50_us = us(percentile_of_sorted(ns, 0.50));
  s.p99_us = us(percentile_of_sorted(ns, 0.99));
  uint64_t total = 0;
  for (uint64_t v : ns) total += v;
  s.total_us = us(total);
  return s;
}

SnapshotBuilder::SnapshotBuilder(pid_t pid, RuleSet rules, SourceLines lines)
    : rules_(std::move(rules)),
      modules_(pid),
      memory_(pid),
      unwinder_(modules_, memory_),
      symbolizer_(modules_, lines) {}

Thread SnapshotBuilder::build_thread(const RawThread& raw, const RawCapture& capture,
                                     const PyProcessInfo* python) {
  if (raw.mode == CaptureMode::kReused) {
    auto it = previous_.find(raw.tid);
    if (it != previous_.end()) {
      Thread t = std::move(it->second);  // same syscall line, no CPU time since: same stack
      previous_.erase(it);
      t.captured = "reused";
      t.stop_ns = 0;
      t.timeslices = raw.schedstat.timeslices;
      t.note.clear();
      if (t.python && python)
        for (const PyThreadInfo& p : python->threads)
          if (p.native_tid == python_tid(raw))
            t.python->holds_gil = p.holds_gil && !t.python->waits_for_gil;
      return t;
    }
  }
  Thread t;
  t.tid = raw.tid;
  t.ns_tid = raw.ns_tid;
  t.name = raw.stat.comm;
  t.state = state_name(raw.stat.state);
  t.wchan = raw.wchan;
  t.captured = capture_mode_name(raw.mode);
  t.note = raw.failure;
  t.stop_ns = raw.stop_ns;
  t.timeslices = raw.schedstat.timeslices;
  if (raw.syscall.kind == SyscallState::Kind::kInSyscall) {
    SyscallInfo sc;
    sc.nr = raw.syscall.nr;
    sc.name = std::string(syscall_name(raw.syscall.nr));
    sc.args = raw.syscall.args;
    if (!raw.fds.empty()) sc.fd = describe_fd(raw.fds.front(), capture.sockets);
    add_wait_context(sc, capture);
    t.syscall = std::move(sc);
  }
  if (raw.mode != CaptureMode::kFailed) {
    UnwindResult u = unwinder_.unwind(raw);
    t.truncated = u.truncated;
    if (u.truncated && t.note.empty()) t.note = u.reason;
    for (size_t i = 0; i < u.ips.size(); ++i) {
      const auto& frames = symbolizer_.symbolize(u.ips[i], i > 0);
      size_t first = t.frames.size();
      t.frames.insert(t.frames.end(), frames.begin(), frames.end());
      if (i < u.frame_pointer.size() && u.frame_pointer[i])
        for (size_t f = first; f < t.frames.size(); ++f) t.frames[f].frame_pointer = true;
      if (i < u.sps.size()) t.frames.back().sp = u.sps[i];  // the physical frame
    }
  } else {
    t.truncated = true;
  }
  const PyThreadInfo* py = nullptr;
  if (python)
    for (const PyThreadInfo& p : python->threads)
      if (p.native_tid == python_tid(raw)) py = &p;
  if (py) {
    PythonThread pt;
    pt.thread_name = py->name;
    pt.holds_gil = py->holds_gil;
    pt.tstate = py->tstate;
    pt.truncated = py->truncated;
    // A thread that wants the GIL sleeps in a futex on the GIL's condition
    // variable or mutex: its address says so, with or without symbols.
    if (t.syscall && t.syscall->name == "futex") {
      uint64_t addr = t.syscall->args[0];
      for (const auto& [begin, end] : python->gil_waits)
        pt.waits_for_gil |= addr >= begin && addr < end;
    }
    // The interpreter's idea of the holder is read after the capture and may
    // be a moment late: a thread captured waiting for the GIL does not hold it.
    if (pt.waits_for_gil) pt.holds_gil = false;
    if (!merge_python_frames(t.frames, py->frames, t.truncated) && t.note.empty())
      t.note = "Python frames did not line up with the native stack; the rest are at its end";
    t.python = std::move(pt);
  }
  make_text_valid(t);
  t.blocking = rules_.classify(t);
  return t;
}

void SnapshotBuilder::add_wait_context(SyscallInfo& sc, const RawCapture& capture) {
  std::vector<FdLink> links =
      watched_fds(memory_.pid(), sc, memory_, SyscallInfo::kMaxWatched, &sc.watched_more);
  // The capture reads the socket table only for a socket in a call's own fd
  // argument; a socket in a poll set needs it too.
  bool socket = std::any_of(links.begin(), links.end(),
                            [](const FdLink& l) { return l.target.starts_with("socket:"); });
  if (socket && capture.sockets.empty() && !own_sockets_)
    own_sockets_ = proc::read_sockets(memory_.pid());
  const std::vector<SocketEntry>& sockets =
      capture.sockets.empty() && own_sockets_ ? *own_sockets_ : capture.sockets;
  for (const FdLink& l : links) sc.watched.push_back(describe_fd(l, sockets));
  if (sc.fd) add_fd_facts(memory_.pid(), *sc.fd, pipe_ends_);
  for (FdInfo& w : sc.watched) add_fd_facts(memory_.pid(), w, pipe_ends_);
  sc.timeout = wait_timeout(sc, memory_, [](int clock) {
    timespec ts{};
    clock_gettime(clock, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  });
}

void SnapshotBuilder::update_modules(const std::vector<Mapping>& maps) {
  if (modules_.update(maps, &memory_)) {
    unwinder_.flush();
    symbolizer_.reload();
    python_warning_.clear();
    python_version_ = 0;
    python_ = CPythonReader::detect(modules_, memory_, &python_warning_, &python_version_);
  }
}

Frame python_frame(const PyFrameInfo& p) {
  Frame f;
  f.kind = Frame::Kind::kPython;
  f.function = p.qualname;
  f.file = p.file;
  f.line = p.line;
  f.module = python_module_name(p.file);
  f.interpreter = p.interpreter;
  f.coroutine = p.generator;
  return f;
}

bool merge_python_frames(std::vector<Frame>& native, const std::vector<PyFrameInfo>& python,
                         bool native_truncated) {
  // The Python frames of one C-level eval-loop call each, innermost first,
  // with where that call keeps its entry frame (3.12+; 0 when not known).
  struct Group {
    std::vector<Frame> frames;
    uint64_t entry_at = 0;
  };
  std::vector<Group> groups(1);
  for (const PyFrameInfo& p : python) {
    if (!p.incomplete) groups.back().frames.push_back(python_frame(p));
    if (p.is_entry) {
      groups.back().entry_at = p.entry_at;
      groups.emplace_back();
    }
  }
  if (groups.back().frames.empty()) groups.pop_back();
  // Each physical native frame's stack range, [sp, next physical frame's sp);
  // the last one reached ends nowhere known when the unwinding stopped early.
  std::vector<uint64_t> ends(native.size(), UINT64_MAX);
  uint64_t next_sp = native_truncated ? 0 : UINT64_MAX;
  for (size_t i = native.size(); i-- > 0;) {
    if (native[i].inlined) continue;
    ends[i] = next_sp;
    if (native[i].sp) next_sp = native[i].sp;
  }
  // A group goes right before the eval-loop call that runs it: the native
  // frame whose stack holds its entry frame, which needs no symbols; else
  // (3.11, or no stack pointers) the next _PyEval_EvalFrameDefault by name.
  std::vector<Frame> merged;
  size_t g = 0;
  for (size_t i = 0; i < native.size(); ++i) {
    Frame& f = native[i];
    // By where the entry frame is, several groups may land in one frame (when
    // the unwinder missed a frame between them); by name, one a call.
    for (bool by_name = false; !f.inlined && g < groups.size() && !by_name; ++g) {
      uint64_t at = groups[g].entry_at;
      if (at && f.sp) {
        if (at < f.sp || at >= ends[i]) break;
      } else if (f.function == "_PyEval_EvalFrameDefault") {
        by_name = true;
      } else {
        break;
      }
      merged.insert(merged.end(), groups[g].frames.begin(), groups[g].frames.end());
    }
    merged.push_back(std::move(f));
  }
  bool lined_up = g == groups.size();
  for (; g < groups.size(); ++g)
    merged.insert(merged.end(), groups[g].frames.begin(), groups[g].frames.end());
  native = std::move(merged);
  return lined_up;
}

std::string pool_name(const std::string& name) {
  size_t end = name.size();
  while (end > 0 && std::isdigit(static_cast<unsigned char>(name[end - 1]))) --end;
  if (end == name.size() || end == 0) return name;  // no number: not a pool member
  while (end > 0 && (name[end - 1] == '_' || name[end - 1] == '-' || name[end - 1] == ' ')) --end;
  return end == 0 ? name : name.substr(0, end);
}

namespace {

std::string hex_id(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

void SnapshotBuilder::add_tasks(Snapshot& s, const RawCapture& raw, const PyProcessInfo& python) {
  PyAsyncioInfo info = python_->read_tasks(modules_, python.threads, max_tasks_per_loop_);
  s.summary.asyncio.read = true;
  s.warnings.insert(s.warnings.end(), info.notes.begin(), info.notes.end());
  std::map<long, pid_t> host_tid;  // the interpreter's thread ids are its namespace's
  for (const RawThread& r : raw.threads) host_tid[python_tid(r)] = r.tid;
  auto host = [&](long tid) -> pid_t {
    auto it = host_tid.find(tid);
    return it == host_tid.end() ? 0 : it->second;
  };
  std::vector<SocketEntry> sockets = raw.sockets;
  bool sockets_read = !sockets.empty();
  std::map<uint64_t, AsyncTask*> by_address;
  for (PyLoopInfo& l : info.loops) {
    EventLoop e;
    e.id = hex_id(l.address);
    e.type = l.type;
    e.tid = host(l.native_tid);
    e.ready_callbacks = l.ready;
    e.current_task = l.current_task ? hex_id(l.current_task) : "";
    e.tasks_seen = l.seen;
    e.truncated = l.truncated;
    for (const Thread& t : s.threads) {
      if (!e.tid || t.tid != e.tid) continue;
      e.thread_name = t.python && !t.python->thread_name.empty() ? t.python->thread_name : t.name;
      if (t.blocking && t.blocking->blocks_event_loop) {
        e.blocked = true;
        e.blocked_in = t.blocking->coroutine;
      }
    }
    for (PyTaskInfo& p : l.tasks) {
      AsyncTask a;
      a.id = hex_id(p.address);
      a.name = std::move(p.name);
      bool running = p.address == l.current_task;
      a.state = p.state == 1   ? "cancelled"
                : p.state == 2 ? "done"
                : running      ? "running"
                               : "pending";
      for (const PyFrameInfo& f : p.coroutine) a.coroutine.push_back(python_frame(f));
      a.coroutine_truncated = p.coroutine_truncated;
      a.awaiting.kind = p.kind.empty() ? "none" : p.kind;
      if (running && a.awaiting.kind == "none") a.awaiting.kind = "running";
      a.awaiting.detail = std::move(p.detail);
      a.awaiting.seconds_left = p.seconds_left;
      a.awaiting.executor_tid = host(p.executor_tid);
      if (p.fd >= 0) {
        if (auto link = proc::read_fd_link(s.target.pid, p.fd)) {
          if (!sockets_read && link->target.starts_with("socket:")) {
            sockets = proc::read_sockets(s.target.pid);
            sockets_read = true;
          }
          a.awaiting.fd = describe_fd(*link, sockets);
          std::string what =
              a.awaiting.fd->detail.empty() ? a.awaiting.fd->target : a.awaiting.fd->detail;
          a.awaiting.detail += (a.awaiting.detail.empty() ? "" : " ") + what;
        }
      }
      for (uint64_t t : p.awaits) a.awaits.push_back(hex_id(t));
      e.tasks.push_back(std::move(a));
    }
    s.event_loops.push_back(std::move(e));
  }
  for (EventLoop& e : s.event_loops)
    for (AsyncTask& a : e.tasks) by_address.emplace(std::strtoull(a.id.c_str(), nullptr, 16), &a);
  // Edges both ways; the names of awaited tasks in the detail.
  for (EventLoop& e : s.event_loops)
    for (AsyncTask& a : e.tasks) {
      std::string names;
      for (const std::string& id : a.awaits) {
        auto it = by_address.find(std::strtoull(id.c_str(), nullptr, 16));
        if (it == by_address.end()) continue;
        it->second->awaited_by.push_back(a.id);
        names += (names.empty() ? "" : ", ") + it->second->name;
      }
      if (!names.empty())
        a.awaiting.detail = a.awaiting.detail.empty() ? names : a.awaiting.detail + ": " + names;
      ++s.summary.asyncio.tasks;
      ++s.summary.asyncio.by_awaiting[a.awaiting.kind];
    }
  s.summary.asyncio.cycles = find_await_cycles(s.event_loops);
}

std::vector<AwaitCycle> find_await_cycles(const std::vector<EventLoop>& loops) {
  std::map<std::string, const AsyncTask*> tasks;
  for (const EventLoop& e : loops)
    for (const AsyncTask& a : e.tasks) tasks.emplace(a.id, &a);
  // Depth-first, with colours: a back edge to a task on the current path
  // closes a cycle, reported from that task along the path.
  enum Colour { kWhite, kGrey, kBlack };
  std::map<std::string, Colour> colour;
  std::vector<const AsyncTask*> path;
  std::vector<AwaitCycle> cycles;
  std::function<void(const AsyncTask*)> visit = [&](const AsyncTask* a) {
    colour[a->id] = kGrey;
    path.push_back(a);
    for (const std::string& next : a->awaits) {
      auto it = tasks.find(next);
      if (it == tasks.end()) continue;
      Colour c = colour[next];
      if (c == kGrey) {
        AwaitCycle cycle;
        auto from = std::find_if(path.begin(), path.end(),
                                 [&](const AsyncTask* p) { return p->id == next; });
        for (auto p = from; p != path.end(); ++p) {
          cycle.task_ids.push_back((*p)->id);
          cycle.names.push_back((*p)->name);
        }
        cycles.push_back(std::move(cycle));
      } else if (c == kWhite) {
        visit(it->second);
      }
    }
    path.pop_back();
    colour[a->id] = kBlack;
  };
  for (const EventLoop& e : loops)
    for (const AsyncTask& a : e.tasks)
      if (colour[a.id] == kWhite) visit(&a);
  return cycles;
}

void SnapshotBuilder::set_tasks(bool enabled, size_t max_per_loop) {
  tasks_enabled_ = enabled;
  max_tasks_per_loop_ = max_per_loop;
}

void SnapshotBuilder::prepare(const std::vector<Mapping>& maps) {
  update_modules(maps);
}

bool SnapshotBuilder::complete_without_stop(const RawThread& thread) {
  UnwindResult u = unwinder_.unwind(thread);
  return !u.truncated && !u.ips.empty();
}

Snapshot SnapshotBuilder::build(const RawCapture& raw) {
  return build(raw, nullptr);
}

Snapshot SnapshotBuilder::build_once(RawCapture& raw) {
  return build(raw, &raw);
}

Snapshot SnapshotBuilder::build(const RawCapture& raw, RawCapture* release) {
  update_modules(raw.maps);
  symbolizer_.new_snapshot();
  own_sockets_.reset();
  pipe_ends_ = PipeIndex{};
  Snapshot s;
  s.captured_at_unix_ns = raw.started_unix_ns;
  const ProcessInfo& p = raw.process;
  s.target =
      Target{p.pid, p.comm, p.exe, p.cmdline, p.rss_bytes, p.threads, "native", "", "", false};
  s.target.cpu_ticks = p.utime_ticks + p.stime_ticks;
  s.target.ns_pid = p.ns_pid;
  s.target.exited = raw.target_exited;
  for (std::string* text : {&s.target.comm, &s.target.exe}) make_valid_utf8(*text);
  for (std::string& arg : s.target.cmdline) make_valid_utf8(arg);
  static const char* const kSeccompModes[] = {"none", "strict", "filter"};
  if (p.seccomp >= 0 && p.seccomp <= 2) s.target.seccomp = kSeccompModes[p.seccomp];
  std::optional<PyProcessInfo> python;
  if (python_) {
    // Python frames only for threads that may have moved since the last build.
    std::set<long> moved;
    for (const RawThread& r : raw.threads)
      if (r.mode != CaptureMode::kReused || !previous_.count(r.tid)) moved.insert(python_tid(r));
    python = python_->read(&moved);
    s.target.runtime_kind = "cpython";
    s.target.runtime_version = cpython_version_text(python->version);
    s.warnings.insert(s.warnings.end(), python->notes.begin(), python->notes.end());
  } else if (python_version_ != 0) {
    s.target.runtime_kind = "cpython";
    s.target.runtime_version = cpython_version_text(python_version_);
    s.warnings.push_back(python_warning_);
  } else {
    for (const Module& m : modules_.modules()) {
      std::string v = python_version(m.name);
      if (!v.empty()) {
        s.target.runtime_kind = "cpython";
        s.target.runtime_version = v;
        break;
      }
    }
    if (!python_warning_.empty()) s.warnings.push_back(python_warning_);
  }

  std::vector<uint64_t> stops, reaches, looks;
  s.threads.reserve(raw.threads.size());
  for (size_t i = 0; i < raw.threads.size(); ++i) {
    const RawThread& r = raw.threads[i];
    if (r.vanished) {
      ++s.capture.threads_exited;
      continue;  // said in the summary; nothing to show for it
    }
    switch (r.mode) {
      case CaptureMode::kStopped:
        ++s.capture.threads_stopped;
        stops.push_back(r.stop_ns);
        reaches.push_back(r.reach_ns);
        if (!r.late) looks.push_back(r.look_gap_ns);
        s.capture.eintr_restarted += r.eintr_restarted;
        s.capture.eintr_inflicted += r.eintr_inflicted;
        s.capture.restarts_redirected += r.restart_redirected;
        s.capture.late_stops += r.late;
        break;
      case CaptureMode::kNonStop:
      case CaptureMode::kReused:
        ++s.capture.threads_not_stopped;
        break;
      case CaptureMode::kFailed:
        ++s.capture.threads_failed;
        break;
    }
    s.threads.push_back(build_thread(r, raw, python ? &*python : nullptr));
    // Unwound: a one-shot build lets go of the copy now, so that a process
    // with thousands of threads never has all copies and all stacks at once.
    if (release) std::vector<uint8_t>().swap(release->threads[i].stack);
  }
  previous_.clear();
  if (!release)  // the next round reuses what did not change
    for (const Thread& t : s.threads) previous_.emplace(t.tid, t);
  s.capture.duration_us = raw.duration_ns / 1000;
  s.capture.stop_us = stop_stats(std::move(stops));
  s.capture.reach_us = stop_stats(std::move(reaches));
  s.capture.race_window_us = stop_stats(std::move(looks));
  s.capture.stop_retries = raw.stopper.retries;
  s.capture.watchdog_ended = raw.stopper.watchdog_ended;
  s.capture.stopper_priority = raw.stopper.priority;
  s.capture.max_stop_us = raw.stopper.max_stop_us;
  if (const ConsistentCapture& c = raw.consistent; c.requested) {
    s.capture.mode = "consistent";
    s.capture.consistent = Consistency{c.achieved,         c.held,   c.verified, c.moved, c.passes,
                                       c.window_ns / 1000, c.why_not};
    if (!c.achieved) s.warnings.push_back("the snapshot is not consistent: " + c.why_not);
  }

  s.summary.threads = s.threads.size();
  for (const auto& c : categories()) s.summary.by_category[c] = 0;
  std::map<std::string, Pool> pools;
  // Pools whose members are named PREFIX_N, as ThreadPoolExecutor names its
  // threads: one such thread is a pool that has grown to one.
  std::set<std::string> executors;
  for (const Thread& t : s.threads) {
    if (t.python && t.python->holds_gil) s.summary.gil_holder = t.tid;
    if (runs_event_loop(t)) {
      ++s.summary.event_loop_threads;
      if (t.blocking && t.blocking->blocks_event_loop) ++s.summary.event_loops_blocked;
    }
    // A thread that was never named keeps the process's name: threads alike
    // in that are not a pool (the JVM's "java" threads, mariadbd's).
    bool python_named = t.python && !t.python->thread_name.empty();
    Pool* pool = nullptr;
    if (python_named || t.name != s.target.comm) {
      const std::string& member = python_named ? t.python->thread_name : t.name;
      std::string name = pool_name(member);
      if (name.size() < member.size() && member[name.size()] == '_') executors.insert(name);
      pool = &pools[name];
      pool->name = name;
      ++pool->threads;
    }
    if (!t.blocking) continue;
    ++s.summary.blocked;
    ++s.summary.by_category[t.blocking->category];
    if (pool) ++pool->by_category[t.blocking->category];
    if (t.blocking->idle) {
      ++s.summary.idle;
      if (pool) ++pool->idle;
    } else if (pool) {
      ++pool->blocked;
    }
  }
  for (auto& [name, pool] : pools)
    if (pool.threads >= 2 || executors.count(name)) s.summary.pools.push_back(std::move(pool));
  read_lock_owners(s.threads, memory_);
  if (python_ && python) read_python_locks(s.threads, *python, *python_);
  s.summary.deadlocks = find_deadlocks(s.threads);
  confirm_deadlocks(s.summary.deadlocks, memory_.pid(), s.threads, memory_);
  if (python_ && tasks_enabled_) add_tasks(s, raw, *python);
  s.warnings.insert(s.warnings.end(), modules_.warnings().begin(), modules_.warnings().end());
  if (raw.target_exited) s.warnings.push_back("the target exited during the capture");
  if (s.capture.threads_exited > 0)
    s.warnings.push_back(std::to_string(s.capture.threads_exited) +
                         " thread(s) exited during the capture and are not shown");
  if (s.capture.eintr_inflicted > 0)
    s.warnings.push_back(std::to_string(s.capture.eintr_inflicted) +
                         " thread(s) entered a call that a stop interrupts just as they were "
                         "stopped and saw EINTR (see their note)");
  if (s.capture.threads_failed > 0)
    s.warnings.push_back(std::to_string(s.capture.threads_failed) +
                         " thread(s) could not be captured (see their note)");
  if (s.capture.watchdog_ended > 0)
    s.warnings.push_back(std::to_string(s.capture.watchdog_ended) +
                         " stop(s) outlived the stop bound (the stopper was stopped, starved or "
                         "hung) and were ended by its watchdog; the kernel let the threads go");
  if (s.capture.threads_stopped > 0 && !s.capture.stopper_priority.starts_with("realtime"))
    s.warnings.push_back("stops ran at " + s.capture.stopper_priority +
                         " priority: on a busy machine a stop can wait for a CPU; give "
                         "stackaudit CAP_SYS_NICE for real-time stops");
  return s;
}

}  // namespace stackaudit
