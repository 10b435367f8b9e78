#include "collector/rules.h"

#include "collector/cpython_reader.h"

#include <fnmatch.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string_view>

namespace stackaudit {
namespace {

struct BuiltinRule {
  const char* category;
  Rule::Match match;
  const char* pattern;
  const char* fd_kind;
  const char* primitive;
  bool idle;
};

constexpr auto F = Rule::Match::kFunction;
constexpr auto S = Rule::Match::kSyscall;
constexpr auto P = Rule::Match::kPython;

// Function names are as the symbolizer prints them: demangled, without
// parameters. glibc exports some functions under several names
// (__pthread_mutex_lock and pthread_mutex_lock), hence the leading '*'.
constexpr BuiltinRule kBuiltinRules[] = {
    // Python: "module.qualname" of the library call the user's code made.
    {"lock", P, "threading.Semaphore.acquire", "", "", false},
    {"lock", P, "threading.BoundedSemaphore.acquire", "", "", false},
    {"lock", P, "threading._RLock.acquire", "", "", false},
    {"condition", P, "threading.Condition.wait", "", "", false},
    {"condition", P, "threading.Condition.wait_for", "", "", false},
    {"condition", P, "threading.Event.wait", "", "", false},
    {"condition", P, "threading.Barrier.wait", "", "", false},
    {"condition", P, "threading.Thread.join", "", "", false},
    {"queue", P, "queue.Queue.get", "", "", false},
    {"queue", P, "queue.Queue.put", "", "", false},
    {"queue", P, "queue.Queue.join", "", "", false},
    {"queue", P, "multiprocessing.queues.*.get", "", "", false},
    {"queue", P, "multiprocessing.queues.*.put", "", "", false},
    {"queue", P, "concurrent.futures.thread._worker", "", "ThreadPoolExecutor worker", true},
    {"condition", P, "concurrent.futures._base.Future.result", "", "", false},
    {"condition", P, "concurrent.futures._base.wait", "", "", false},
    {"socket", P, "socket.socket.accept", "", "", false},
    {"socket", P, "socket.create_connection", "", "", false},
    {"socket", P, "socket.SocketIO.readinto", "", "", false},
    {"socket", P, "ssl.SSLSocket.*", "", "", false},
    {"socket", P, "http.client.*", "", "", false},
    {"socket", P, "urllib.request.*", "", "", false},
    {"socket", P, "urllib3.*", "", "", false},
    {"socket", P, "requests.*", "", "", false},
    {"process", P, "subprocess.run", "", "", false},
    {"process", P, "subprocess.call", "", "", false},
    {"process", P, "subprocess.check_call", "", "", false},
    {"process", P, "subprocess.check_output", "", "", false},
    {"process", P, "subprocess.getoutput", "", "", false},
    {"process", P, "subprocess.getstatusoutput", "", "", false},
    {"process", P, "subprocess.Popen.wait", "", "", false},
    {"process", P, "subprocess.Popen.communicate", "", "", false},
    {"process", P, "multiprocessing.popen_fork.Popen.wait", "", "", false},
    {"poll", P, "selectors.*.select", "", "", true},
    {"poll", P, "socketserver.BaseServer.serve_forever", "", "", true},
    // lock
    {"lock", F, "*pthread_mutex_lock", "", "pthread_mutex_lock", false},
    {"lock", F, "*pthread_mutex_timedlock", "", "pthread_mutex_timedlock", false},
    {"lock", F, "*pthread_mutex_clocklock", "", "pthread_mutex_clocklock", false},
    {"lock", F, "*__lll_lock_wait*", "", "pthread_mutex_lock", false},
    {"lock", F, "*pthread_rwlock_*lock", "", "", false},
    {"lock", F, "*pthread_rwlock_timed*lock", "", "", false},
    {"lock", F, "*pthread_rwlock_clock*lock", "", "", false},
    {"lock", F, "std::mutex::lock", "", "", false},
    {"lock", F, "std::recursive_mutex::lock", "", "", false},
    {"lock", F, "std::timed_mutex::*lock*", "", "", false},
    {"lock", F, "std::shared_mutex::lock*", "", "", false},
    {"lock", F, "std::shared_timed_mutex::*lock*", "", "", false},
    {"lock", F, "std::sys::*::locks::*::lock*", "", "", false},  // Rust std
    {"lock", F, "sem_wait", "", "", false},
    {"lock", F, "sem_timedwait", "", "", false},
    {"lock", F, "sem_clockwait", "", "", false},
    {"lock", F, "PyThread_acquire_lock_timed", "", "", false},
    {"lock", F, "_PySemaphore_Wait", "", "", false},  // 3.13+: PyMutex, threading.Lock
    {"lock", F, "_PyParkingLot_Park", "", "", false},
    {"lock", F, "take_gil", "", "GIL", false},
    {"lock", S, "semop", "", "", false},
    {"lock", S, "semtimedop", "", "", false},
    {"lock", S, "flock", "", "", false},
    // condition
    {"condition", F, "*pthread_cond_wait*", "", "pthread_cond_wait", false},
    {"condition", F, "*pthread_cond_timedwait*", "", "pthread_cond_timedwait", false},
    {"condition", F, "*pthread_cond_clockwait*", "", "pthread_cond_clockwait", false},
    {"condition", F, "std::condition_variable::wait*", "", "", false},
    {"condition", F, "std::_V2::condition_variable_any::wait*", "", "", false},
    {"condition", F, "std::condition_variable_any::wait*", "", "", false},
    {"condition", F, "std::sys::*::condvar::*::wait*", "", "", false},  // Rust std
    // queue
    {"queue", S, "msgrcv", "", "", false},
    {"queue", S, "mq_timedreceive", "", "", false},
    // sleep
    {"sleep", F, "std::this_thread::sleep_for*", "", "", false},
    {"sleep", F, "std::this_thread::sleep_until*", "", "", false},
    {"sleep", F, "std::thread::sleep*", "", "", false},  // Rust std
    {"sleep", F, "usleep", "", "", false},
    // libc's own names: they also cover a wait the kernel restarted after a
    // stop, which shows as the restart_syscall syscall.
    {"sleep", F, "*clock_nanosleep*", "", "clock_nanosleep", false},
    {"sleep", F, "*nanosleep", "", "nanosleep", false},
    {"poll", F, "poll", "", "", false},
    {"poll", F, "__poll*", "", "poll", false},
    {"poll", F, "*ppoll*", "", "ppoll", false},
    {"sleep", F, "sleep", "", "", false},
    {"sleep", S, "nanosleep", "", "", false},
    {"sleep", S, "clock_nanosleep", "", "", false},
    // socket
    {"socket", S, "recvfrom", "", "recv", false},
    {"socket", S, "recvmsg", "", "", false},
    {"socket", S, "recvmmsg", "", "", false},
    {"socket", S, "sendto", "", "send", false},
    {"socket", S, "sendmsg", "", "", false},
    {"socket", S, "sendmmsg", "", "", false},
    {"socket", S, "accept", "", "", false},
    {"socket", S, "accept4", "", "accept", false},
    {"socket", S, "connect", "", "", false},
    {"socket", S, "read", "socket", "", false},
    {"socket", S, "readv", "socket", "", false},
    {"socket", S, "write", "socket", "", false},
    {"socket", S, "writev", "socket", "", false},
    // file (pipes, FIFOs, ttys, regular files)
    {"file", S, "read", "!socket", "", false},
    {"file", S, "readv", "!socket", "", false},
    {"file", S, "write", "!socket", "", false},
    {"file", S, "writev", "!socket", "", false},
    {"file", S, "pread64", "", "pread", false},
    {"file", S, "pwrite64", "", "pwrite", false},
    {"file", S, "preadv", "", "", false},
    {"file", S, "pwritev", "", "", false},
    {"file", S, "fsync", "", "", false},
    {"file", S, "fdatasync", "", "", false},
    {"file", S, "fcntl", "", "", false},
    {"file", S, "openat", "", "open", false},
    {"file", S, "open", "", "", false},
    {"file", S, "splice", "", "", false},
    {"file", S, "sendfile", "", "", false},
    // io: waiting for asynchronous I/O to complete, whatever the files
    {"io", S, "io_getevents", "", "", false},
    {"io", S, "io_pgetevents", "", "io_getevents", false},
    {"io", S, "io_uring_enter", "", "", false},
    // poll: an event loop's own wait
    {"poll", S, "epoll_wait", "", "", true},
    {"poll", S, "epoll_pwait", "", "", true},
    {"poll", S, "epoll_pwait2", "", "", true},
    {"poll", S, "poll", "", "", false},
    {"poll", S, "ppoll", "", "", false},
    {"poll", S, "select", "", "", false},
    {"poll", S, "pselect6", "", "pselect", false},
    // process
    {"process", F, "waitpid", "", "", false},
    {"process", F, "__waitpid", "", "waitpid", false},
    {"process", F, "waitid", "", "", false},
    {"process", S, "wait4", "", "", false},
    {"process", S, "waitid", "", "", false},
    {"process", S, "vfork", "", "", false},  // the parent waits until its child has exec'd
    // futex
    {"futex", F, "*pthread_*join*", "", "pthread_join", false},
    {"futex", S, "futex", "", "", false},
    {"futex", S, "futex_waitv", "", "", false},
};

// Waits named by the library the thread waits in, beside the syscall: a
// sleep inside sqlite is its busy handler retrying a locked database, a poll
// inside libpq is a postgres query. Applied when the thread's stack has a
// frame of `module` (and, when given, `function`) below the site, and the
// rule's syscall category is one of `from` ('|' separated; "*" any). The
// detail names the peer of the wait's socket where it has one.
struct LibraryWait {
  const char* module;    // glob on the frame's module
  const char* function;  // glob on a frame's function in it; "" any frame of it
  const char* from;      // categories it applies to
  const char* category;
  const char* primitive;
  const char* detail;
  const char* unless = "";  // not when a frame has this function (the program's own call)
};

constexpr LibraryWait kLibraryWaits[] = {
    {"libsqlite3.so*", "", "sleep", "lock", "sqlite3 busy handler",
     "sqlite database is locked: its busy handler sleeps and retries", "sqlite3_sleep"},
    {"libpq.so*", "", "poll|socket", "socket", "libpq", "postgres query"},
    {"libmariadb.so*", "", "poll|socket", "socket", "mariadb client", "mysql query"},
    {"libmysqlclient.so*", "", "poll|socket", "socket", "mysql client", "mysql query"},
    {"libcurl*.so*", "", "poll|socket", "socket", "libcurl", "HTTP transfer (libcurl)"},
    {"libssl.so*", "SSL_read*", "poll|socket", "socket", "SSL_read", "TLS read"},
    {"libssl.so*", "SSL_write*", "poll|socket", "socket", "SSL_write", "TLS write"},
    {"libssl.so*", "SSL_do_handshake", "poll|socket", "socket", "SSL_do_handshake",
     "TLS handshake"},
    {"libssl.so*", "SSL_connect", "poll|socket", "socket", "SSL_connect", "TLS handshake"},
    {"libssl.so*", "SSL_accept", "poll|socket", "socket", "SSL_accept", "TLS handshake"},
    {"libgrpc*.so*", "*completion_queue*", "*", "queue", "grpc completion queue",
     "gRPC completion queue"},
    {"libjvm.so", "JVM_Sleep", "*", "sleep", "Thread.sleep", "java.lang.Thread.sleep"},
    {"libjvm.so", "ObjectMonitor::enter*", "*", "lock", "monitor enter",
     "a contended synchronized block or method"},
    {"libjvm.so", "ObjectMonitor::EnterI*", "*", "lock", "monitor enter",
     "a contended synchronized block or method"},
    {"libjvm.so", "Unsafe_Park", "*", "condition", "LockSupport.park",
     "parked (java.util.concurrent lock or condition)"},
};

bool glob(const std::string& pattern, const std::string& text) {
  return ::fnmatch(pattern.c_str(), text.c_str(), FNM_NOESCAPE) == 0;
}

bool fd_matches(const std::string& want, const std::optional<FdInfo>& fd) {
  if (want.empty()) return true;
  std::string kind = fd ? fd->kind : "";
  if (want[0] == '!') return kind != want.substr(1);
  return kind == want;
}

std::string rule_name(const Rule& r) {
  std::string kind = r.match == Rule::Match::kFunction  ? "function"
                     : r.match == Rule::Match::kSyscall ? "syscall"
                                                        : "python";
  std::string name = r.origin + ": " + r.category + " " + kind + " " + r.pattern;
  if (!r.fd_kind.empty()) name += " fd=" + r.fd_kind;
  return name;
}

// Runtime libraries and interpreters: never the "site" of a wait.
constexpr const char* kRuntimeModules[] = {
    "libc.so*",
    "libpthread.so*",
    "libstdc++.so*",
    "libc++.so*",
    "libc++abi.so*",
    "libgcc_s.so*",
    "ld-linux*",
    "libm.so*",
    "libdl.so*",
    "librt.so*",
    "libpython*.so*",
    "python[0-9]*",
    "libunwind*.so*",
    "libuv.so*",
    "libevent*.so*",
    "libssl.so*",
    "libcrypto.so*",
    "libglib-*.so*",
    "libffi.so*",
    "libz.so*",
    // client libraries whose waits are named by kLibraryWaits: the site is
    // the code that called them
    "libsqlite3.so*",
    "libpq.so*",
    "libmariadb.so*",
    "libmysqlclient.so*",
    "libcurl*.so*",
    "libgrpc*.so*",
    "libjvm.so",
};
constexpr const char* kSystemSourcePrefixes[] = {"/usr/include/", "/usr/lib/gcc/",
                                                 "/usr/local/include/", "/rustc/"};

}  // namespace

const std::vector<std::string>& categories() {
  static const std::vector<std::string> kCategories = {"lock",    "condition", "queue", "sleep",
                                                       "socket",  "file",      "io",    "poll",
                                                       "process", "futex",     "other"};
  return kCategories;
}

bool is_category(std::string_view name) {
  const auto& c = categories();
  return std::find(c.begin(), c.end(), name) != c.end();
}

bool is_user_frame(const Frame& f) {
  if (f.kind == Frame::Kind::kPython) return !f.file.empty() && !is_python_library_file(f.file);
  // A frame with no symbol is still the program's own code when it lies in a
  // module that is not a runtime library (a stripped executable): it is named
  // module+0xOFFSET. Without a module (JIT code, an unmapped address) it says
  // nothing.
  if (f.function.empty() && f.file.empty() && f.module.empty()) return false;
  for (const char* p : kRuntimeModules)
    if (glob(p, f.module)) return false;
  for (const char* prefix : kSystemSourcePrefixes)
    if (f.file.starts_with(prefix)) return false;
  return true;
}

RuleSet RuleSet::builtin() {
  RuleSet set;
  for (const auto& b : kBuiltinRules)
    set.rules_.push_back(
        Rule{b.category, b.match, b.pattern, b.fd_kind, b.primitive, b.idle, "builtin"});
  return set;
}

void RuleSet::add_user_rules(std::vector<Rule> rules) {
  rules.insert(rules.end(), rules_.begin(), rules_.end());
  rules_ = std::move(rules);
}

std::vector<Rule> RuleSet::parse(const std::string& text, const std::string& file_name) {
  std::vector<Rule> out;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.empty()) continue;
    std::string where = file_name + ":" + std::to_string(number);
    auto fail = [&](const std::string& why) { throw RulesError(where + ": " + why); };
    if (w.size() < 3) fail("expected '<category> function|syscall|python <pattern> [options]'");
    Rule r;
    r.origin = where;
    r.category = w[0];
    if (!is_category(r.category))
      fail("unknown category '" + r.category +
           "' (one of lock, condition, queue, sleep, socket, file, io, poll, process, futex, "
           "other)");
    if (w[1] == "function")
      r.match = Rule::Match::kFunction;
    else if (w[1] == "syscall")
      r.match = Rule::Match::kSyscall;
    else if (w[1] == "python")
      r.match = Rule::Match::kPython;
    else
      fail("unknown match kind '" + w[1] + "' (function, syscall or python)");
    r.pattern = w[2];
    for (size_t i = 3; i < w.size(); ++i) {
      const std::string& opt = w[i];
      if (opt == "idle")
        r.idle = true;
      else if (opt.starts_with("primitive=") && opt.size() > 10)
        r.primitive = opt.substr(10);
      else if (opt.starts_with("fd=") && opt.size() > 3 && r.match == Rule::Match::kSyscall)
        r.fd_kind = opt.substr(3);
      else
        fail("unknown option '" + opt + "' (idle, primitive=NAME, fd=KIND for syscall rules)");
    }
    out.push_back(std::move(r));
  }
  return out;
}

namespace {

bool is_python(const Frame& f) {
  return f.kind == Frame::Kind::kPython;
}

// The innermost frame of the user's own code: a Python one first, for a Python
// thread (its native frames are the interpreter's), else a native one.
// The remote end of the socket a thread waits on: its own fd argument's, else
// the first in its poll set; "" when none.
std::string socket_peer(const Thread& t) {
  std::vector<const FdInfo*> fds;
  if (t.syscall->fd) fds.push_back(&*t.syscall->fd);
  for (const FdInfo& w : t.syscall->watched) fds.push_back(&w);
  for (const FdInfo* fd : fds) {
    size_t arrow = fd->detail.find(" -> ");
    if (fd->kind != "socket" || arrow == std::string::npos) continue;
    std::string peer = fd->detail.substr(arrow + 4);
    return peer.substr(0, peer.find(' '));
  }
  return "";
}

bool in_categories(const std::string& category, const char* list) {
  if (std::string_view(list) == "*") return true;
  std::istringstream in(list);
  std::string one;
  while (std::getline(in, one, '|'))
    if (one == category) return true;
  return false;
}

// kLibraryWaits, from the innermost frame out to the site (a library the
// program's own code called, not one that called the program back).
void name_library_wait(const Thread& t, Blocking& b) {
  for (const Frame& f : t.frames) {
    if (f.kind != Frame::Kind::kPython && !f.module.empty()) {
      for (const LibraryWait& w : kLibraryWaits) {
        if (!glob(w.module, f.module) || !in_categories(b.category, w.from)) continue;
        if (*w.function && (f.function.empty() || !glob(w.function, f.function))) continue;
        if (*w.unless && std::any_of(t.frames.begin(), t.frames.end(),
                                     [&](const Frame& g) { return g.function == w.unless; }))
          continue;
        b.category = w.category;
        b.primitive = w.primitive;
        b.detail = w.detail;
        if (std::string peer = socket_peer(t); !peer.empty() && b.category == "socket")
          b.detail += " with " + peer;
        b.rule = std::string("builtin library: ") + w.module +
                 (*w.function ? std::string(" ") + w.function : std::string());
        return;
      }
    }
    if (b.site && f.ip == b.site->ip && f.function == b.site->function) return;
  }
}

std::optional<Frame> find_site(const std::vector<Frame>& frames, size_t from) {
  for (const Frame& f : frames)
    if (is_python(f) && is_user_frame(f)) return f;
  for (size_t i = from; i < frames.size(); ++i)
    if (!is_python(frames[i]) && is_user_frame(frames[i])) return frames[i];
  return std::nullopt;
}

}  // namespace

std::string frame_name(const Frame& f) {
  if (!f.function.empty()) return f.function;
  if (f.module.empty()) return "??";
  char offset[32];
  std::snprintf(offset, sizeof offset, "+0x%llx", static_cast<unsigned long long>(f.module_offset));
  return f.module + offset;
}

std::string site_label(const Frame& f) {
  std::string label = frame_name(f);
  if (!f.file.empty()) {
    label += " (" + f.file.substr(f.file.rfind('/') + 1);
    if (f.line > 0) label += ":" + std::to_string(f.line);
    label += ")";
  }
  return label;
}

std::string python_name(const Frame& f) {
  return f.module + "." + f.function;
}

bool runs_event_loop(const Thread& t) {
  for (const Frame& f : t.frames)
    if (is_python(f) && f.module == "asyncio.base_events" &&
        (f.function == "BaseEventLoop.run_forever" || f.function == "BaseEventLoop._run_once"))
      return true;
  return false;
}

std::optional<Blocking> RuleSet::classify(const Thread& t) const {
  // Only a thread that waits in the kernel is blocked; a running thread, or a
  // stopped one, is not.
  if (t.state != "sleeping" && t.state != "disk_sleep") return std::nullopt;
  if (!t.syscall) return std::nullopt;

  Blocking b;
  if (t.python && t.python->waits_for_gil) {
    // Not the user's blocking call: it wants to run Python code again.
    b.category = "lock";
    b.primitive = "GIL";
    b.rule = "builtin: waiting for the GIL (futex on the interpreter's GIL)";
    b.site = find_site(t.frames, 0);
    return b;
  }

  // The library call the user's Python code made: the Python frames from the
  // innermost one outward, up to the first frame of the user's own code.
  size_t library_end = 0;  // one past the last library frame of that run
  bool in_run = false;
  for (size_t i = 0; i < t.frames.size(); ++i) {
    if (!is_python(t.frames[i])) continue;
    if (is_user_frame(t.frames[i])) break;
    in_run = true;
    library_end = i + 1;
  }

  size_t innermost_python = t.frames.size();
  for (size_t i = 0; i < t.frames.size() && innermost_python == t.frames.size(); ++i)
    if (is_python(t.frames[i])) innermost_python = i;

  const Rule* matched = nullptr;
  size_t matched_frame = 0;
  for (bool user_tier : {true, false}) {
    // Python rules: the outermost match in the run names the call the user made
    // (queue.Queue.get, not the Condition.wait inside it). A "waiting for work"
    // rule holds only where the thread waits: its innermost Python frame (a
    // pool worker running a task has the task's frames inside _worker).
    for (size_t i = library_end; in_run && i-- > 0 && !matched;) {
      if (!is_python(t.frames[i])) continue;
      std::string name = python_name(t.frames[i]);
      for (const Rule& r : rules_) {
        if (r.match != Rule::Match::kPython || r.is_user() != user_tier) continue;
        if (r.idle && i != innermost_python) continue;
        if (glob(r.pattern, name)) {
          matched = &r;
          matched_frame = i;
          b.primitive = r.primitive.empty() ? name : r.primitive;
          break;
        }
      }
    }
    for (size_t i = 0; i < t.frames.size() && !matched; ++i) {
      if (is_python(t.frames[i]) || t.frames[i].function.empty()) continue;
      for (const Rule& r : rules_) {
        if (r.match != Rule::Match::kFunction || r.is_user() != user_tier) continue;
        if (glob(r.pattern, t.frames[i].function)) {
          matched = &r;
          matched_frame = i;
          b.primitive = r.primitive.empty() ? t.frames[i].function : r.primitive;
          break;
        }
      }
    }
    for (const Rule& r : rules_) {
      if (matched) break;
      if (r.match != Rule::Match::kSyscall || r.is_user() != user_tier) continue;
      if (glob(r.pattern, t.syscall->name) && fd_matches(r.fd_kind, t.syscall->fd)) {
        matched = &r;
        b.primitive = r.primitive.empty() ? t.syscall->name : r.primitive;
      }
    }
    if (matched) break;
  }
  if (matched) {
    b.category = matched->category;
    b.idle = matched->idle;
    b.rule = rule_name(*matched);
  } else {
    b.category = "other";
    b.primitive =
        t.syscall->name.empty() ? "syscall " + std::to_string(t.syscall->nr) : t.syscall->name;
    b.rule = "fallback: blocked in a syscall no rule names";
  }
  b.site = find_site(t.frames, matched_frame);
  if (!matched || !matched->is_user()) name_library_wait(t, b);
  // An event loop's thread is idle in its selector; anywhere else it blocks
  // every coroutine of that loop.
  if (runs_event_loop(t) && !b.idle) {
    b.blocks_event_loop = true;
    // The loop runs each ready callback from Handle._run: the frames inside
    // it are the coroutine step (or callback) that blocked. Name the
    // innermost coroutine of the user's own code (the handler that called
    // urlopen, not the framework's coroutine that awaited it); else the
    // innermost user frame; else the step itself.
    for (size_t i = 0; i < t.frames.size(); ++i) {
      if (!is_python(t.frames[i]) || t.frames[i].module != "asyncio.events" ||
          t.frames[i].function != "Handle._run")
        continue;
      const Frame *step = nullptr, *user = nullptr, *user_coroutine = nullptr;
      for (size_t j = i; j-- > 0;) {
        const Frame& f = t.frames[j];
        if (!is_python(f)) continue;
        if (!step) step = &f;
        if (is_python_library_file(f.file)) continue;
        user = &f;
        if (f.coroutine) user_coroutine = &f;
      }
      if (const Frame* pick = user_coroutine ? user_coroutine : user ? user : step)
        b.coroutine = *pick;
      break;
    }
  }
  return b;
}

}  // namespace stackaudit
