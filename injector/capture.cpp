#include "injector/capture.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <unordered_map>

#include "injector/clock.h"
#include "injector/proc.h"
#include "injector/syscalls.h"

namespace stackaudit {
namespace {

// The x86-64 ABI lets leaf code use 128 bytes below rsp (the red zone).
constexpr uint64_t kRedZone = 128;

const Mapping* find_mapping(const std::vector<Mapping>& maps, uint64_t addr) {
  auto it = std::upper_bound(maps.begin(), maps.end(), addr,
                             [](uint64_t a, const Mapping& m) { return a < m.start; });
  if (it == maps.begin()) return nullptr;
  --it;
  return it->contains(addr) ? &*it : nullptr;
}

// An fd we could not look at may be a socket: assume it is.
bool may_be_socket(const std::vector<FdLink>& fds) {
  return fds.empty() || std::any_of(fds.begin(), fds.end(), [](const FdLink& f) {
           return f.target.starts_with("socket:");
         });
}

bool is_socket(const std::vector<FdLink>& fds) {
  return std::any_of(fds.begin(), fds.end(),
                     [](const FdLink& f) { return f.target.starts_with("socket:"); });
}

}  // namespace

bool stop_would_interrupt(const SyscallState& sc, const std::vector<FdLink>& fds) {
  if (sc.kind != SyscallState::Kind::kInSyscall) return false;
  switch (stop_effect(sc.nr)) {
    case StopEffect::kRestarts:
      return false;
    case StopEffect::kEintr:
      return true;
    case StopEffect::kEintrOnSocket:
      return may_be_socket(fds);
  }
  return true;
}

// Runs inside the stop window: copies registers and the stack into memory
// allocated beforehand.
class ProcessCapturer::CopyWindow final : public StopWindow {
 public:
  explicit CopyWindow(ProcessCapturer& owner) : owner_(owner) {}
  void on_stopped(const user_regs_struct& regs) override {
    regs_ = regs;
    bytes_ = owner_.copy_stack(regs.rsp, &start_, &map_start_, &map_end_);
  }
  user_regs_struct regs_{};
  uint64_t start_ = 0, map_start_ = 0, map_end_ = 0;
  size_t bytes_ = 0;

 private:
  ProcessCapturer& owner_;
};

ProcessCapturer::ProcessCapturer(pid_t pid, CaptureOptions options)
    : pid_(pid),
      options_(options),
      memory_(pid),
      stopper_(options.stop_deadline),
      scratch_(new uint8_t[options.max_stack_bytes]) {
  rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur > 512)
    schedstat_fd_budget_ = std::min<size_t>(files.rlim_cur - 256, 65536);
}

ProcessCapturer::~ProcessCapturer() {
  close_schedstat_fds({});
}

std::optional<SchedStat> ProcessCapturer::schedstat(pid_t tid) {
  auto it = schedstat_fds_.find(tid);
  if (it == schedstat_fds_.end()) {
    if (schedstat_fds_.size() >= schedstat_fd_budget_) return proc::read_schedstat(pid_, tid);
    std::string path =
        "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(tid) + "/schedstat";
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    it = schedstat_fds_.emplace(tid, fd).first;
  }
  char buf[128];
  ssize_t n = ::pread(it->second, buf, sizeof buf - 1, 0);
  if (n <= 0) {  // the thread is gone
    ::close(it->second);
    schedstat_fds_.erase(it);
    return std::nullopt;
  }
  return proc::parse_schedstat(std::string(buf, static_cast<size_t>(n)));
}

void ProcessCapturer::close_schedstat_fds(const std::set<pid_t>& keep) {
  for (auto it = schedstat_fds_.begin(); it != schedstat_fds_.end();) {
    if (keep.count(it->first)) {
      ++it;
    } else {
      ::close(it->second);
      it = schedstat_fds_.erase(it);
    }
  }
}

size_t ProcessCapturer::copy_stack(uint64_t sp, uint64_t* start, uint64_t* map_start,
                                   uint64_t* map_end) {
  uint64_t lo = sp > kRedZone ? sp - kRedZone : 0;
  uint64_t hi = lo + options_.max_stack_bytes;
  *map_start = *map_end = 0;
  if (const Mapping* m = find_mapping(maps_, sp)) {
    lo = std::max(lo, m->start);
    hi = std::min(hi, m->end);
    *map_start = m->start;
    *map_end = m->end;
  } else {
    maps_stale_ = true;  // a stack mapped after we read the maps
  }
  *start = lo;
  ssize_t n = memory_.read(lo, scratch_.get(), hi - lo);
  return n > 0 ? static_cast<size_t>(n) : 0;
}

bool ProcessCapturer::try_reuse(pid_t tid, RawThread* p, RawThread& out) {
  if (!p || p->mode == CaptureMode::kFailed || p->stack.empty() ||
      p->syscall.kind != SyscallState::Kind::kInSyscall)
    return false;
  // Kernels without schedstat accounting report zeros: then this proves nothing.
  if (p->schedstat.timeslices == 0) return false;
  auto sched = schedstat(tid);
  if (!sched || !(*sched == p->schedstat)) return false;
  out = std::move(*p);
  out.mode = CaptureMode::kReused;
  out.stop_ns = 0;
  out.eintr_restarted = out.eintr_inflicted = false;
  out.failure.clear();
  return true;
}

ProcessCapturer::NonStop ProcessCapturer::capture_nonstop(RawThread& t) {
  for (int attempt = 0; attempt < options_.nonstop_attempts; ++attempt) {
    uint64_t start = 0, map_start = 0, map_end = 0;
    size_t bytes = copy_stack(t.syscall.sp, &start, &map_start, &map_end);
    auto after = proc::read_syscall(pid_, t.tid);
    auto sched_after = schedstat(t.tid);
    if (!after || !sched_after) return NonStop::kVanished;
    // Same syscall line (number, arguments, sp, pc) and no CPU time used: the
    // thread did not run while we copied, so the copy is one consistent stack.
    if (after->line == t.syscall.line && *sched_after == t.schedstat && bytes > 0) {
      t.regs = user_regs_struct{};
      t.regs.rip = t.syscall.pc;
      t.regs.rsp = t.syscall.sp;
      t.full_registers = false;
      t.stack_start = start;
      t.stack.assign(scratch_.get(), scratch_.get() + bytes);
      t.stack_map_start = map_start;
      t.stack_map_end = map_end;
      t.mode = CaptureMode::kNonStop;
      return NonStop::kCopied;
    }
    bool moved_call = after->nr != t.syscall.nr || after->args != t.syscall.args;
    t.syscall = *after;
    t.schedstat = *sched_after;
    if (moved_call) read_fds(t);
    if (t.syscall.kind == SyscallState::Kind::kRunning) break;
  }
  return NonStop::kUnstable;
}

void ProcessCapturer::capture_stopped(RawThread& t) {
  CopyWindow window(*this);
  auto r = stopper_.stop(t.tid, window);
  t.stop_ns = r.stop_ns;
  switch (r.outcome) {
    case StopOutcome::kStopped:
      t.regs = window.regs_;
      t.full_registers = true;
      t.stack_start = window.start_;
      t.stack.assign(scratch_.get(), scratch_.get() + window.bytes_);
      t.stack_map_start = window.map_start_;
      t.stack_map_end = window.map_end_;
      t.eintr_restarted = r.eintr_restarted;
      t.eintr_inflicted = r.eintr_inflicted;
      if (r.eintr_inflicted)
        t.failure = "it entered " + std::string(syscall_name(r.eintr_syscall)) +
                    " as it was being stopped and saw EINTR";
      else if (r.eintr_restarted)
        t.failure = "it entered " + std::string(syscall_name(r.eintr_syscall)) +
                    " as it was being stopped; the call was restarted, the program saw nothing";
      t.mode = CaptureMode::kStopped;
      return;
    case StopOutcome::kVanished:
      t.vanished = true;
      break;
    default:
      break;
  }
  t.mode = CaptureMode::kFailed;
  t.failure = to_string(r.outcome);
  if (r.outcome == StopOutcome::kError) t.failure += std::string(": ") + std::strerror(r.error);
  if (r.outcome == StopOutcome::kPermissionDenied) {
    // PTRACE_SEIZE says EPERM for a thread someone else traces, too.
    auto status = proc::read_process_info(pid_);
    if (status && status->tracer_pid != 0)
      t.failure = "already traced by PID " + std::to_string(status->tracer_pid);
  }
}

void ProcessCapturer::read_fds(RawThread& t) {
  t.fds.clear();
  if (t.syscall.kind != SyscallState::Kind::kInSyscall) return;
  int idx = fd_argument(t.syscall.nr);
  if (idx < 0) return;
  if (auto link = proc::read_fd_link(pid_, static_cast<int>(t.syscall.args[idx])))
    t.fds.push_back(std::move(*link));
}

RawThread ProcessCapturer::capture_thread(pid_t tid, RawThread* previous) {
  RawThread t;
  if (try_reuse(tid, previous, t)) return t;
  t.tid = tid;
  auto stat = proc::read_stat(pid_, tid);
  auto sc = proc::read_syscall(pid_, tid);
  auto sched = schedstat(tid);
  if (!stat || !sc || !sched || stat->state == 'Z' || stat->state == 'X') {
    t.vanished = true;
    t.failure = "thread exited";
    if (stat) t.stat = *stat;
    return t;
  }
  t.stat = *stat;
  t.syscall = *sc;
  t.schedstat = *sched;
  t.wchan = proc::read_wchan(pid_, tid);
  read_fds(t);

  // A thread blocked in the kernel has a still user stack: copy it without a
  // stop. That is a must for a call that a stop would break with EINTR, and
  // for uninterruptible sleep (it would not reach a stop until it wakes); for
  // any other wait it is kept when it unwinds completely from sp and pc alone
  // (options_.nonstop_sufficient), so that only running threads, and code
  // whose unwinding needs more registers, pay for a stop.
  bool blocked = sc->kind == SyscallState::Kind::kInSyscall;
  bool in_kernel = blocked || sc->kind == SyscallState::Kind::kOutsideSyscall;
  bool eintr_prone = stop_would_interrupt(t.syscall, t.fds);
  long eintr_call = eintr_prone ? t.syscall.nr : -1;
  bool must_not_stop = eintr_prone || (in_kernel && t.stat.state == 'D');
  if (must_not_stop || (blocked && options_.nonstop_sufficient)) {
    NonStop copied = capture_nonstop(t);
    // A thread seen in an EINTR-prone call during this capture is never
    // stopped, even if it runs now: it is likely back in that call by the
    // time a stop would land (an event loop between two events).
    if (!eintr_prone && stop_would_interrupt(t.syscall, t.fds)) {
      eintr_prone = true;
      eintr_call = t.syscall.nr;
    }
    switch (copied) {
      case NonStop::kVanished:
        t.vanished = true;
        t.mode = CaptureMode::kFailed;
        t.failure = "thread exited";
        return t;
      case NonStop::kCopied:
        if (must_not_stop || options_.nonstop_sufficient(t)) return t;
        t.stack.clear();  // incomplete without registers: take them with a stop
        break;
      case NonStop::kUnstable:
        if (eintr_prone) {
          t.mode = CaptureMode::kFailed;
          t.failure = "busy in a wait that a stop would break with EINTR (" +
                      std::string(syscall_name(eintr_call)) + "); not stopped";
          return t;
        }
        break;  // it runs, or waits in a call that a stop does not break
    }
  }
  capture_stopped(t);
  if (t.vanished) t.failure = "thread exited";
  return t;
}

RawCapture ProcessCapturer::capture(RawCapture* previous) {
  RawCapture cap;
  cap.started_unix_ns = wall_ns();
  uint64_t start = monotonic_ns();
  auto info = proc::read_process_info(pid_);
  if (info) cap.process = *info;
  if (maps_.empty() || maps_stale_) {
    maps_ = proc::read_maps(pid_);
    maps_stale_ = false;
  }
  // One read before any stop, so that a fallback to /proc/PID/mem (when
  // process_vm_readv is refused) opens its file now, not in a stop window.
  if (!maps_.empty()) {
    uint8_t probe;
    memory_.read(maps_.front().start, &probe, 1);
  }

  std::unordered_map<pid_t, RawThread*> before;
  if (previous)
    for (RawThread& p : previous->threads) before.emplace(p.tid, &p);
  std::set<pid_t> seen;
  // Listing /proc/PID/task costs a dentry per thread. When the process has as
  // many threads as last time and every one of them is still there (checked by
  // capturing it), nothing was created: skip the listing.
  bool listed = false;
  if (previous && info && info->threads == previous->threads.size()) {
    listed = true;
    for (RawThread& p : previous->threads) {
      seen.insert(p.tid);
      cap.threads.push_back(capture_thread(p.tid, &p));
      listed &= !cap.threads.back().vanished;
    }
  }
  for (int round = 0; !listed && round < options_.list_rounds; ++round) {
    auto tids = proc::list_tasks(pid_);
    if (tids.empty()) break;
    bool found_new = false;
    for (pid_t tid : tids) {
      if (!seen.insert(tid).second) continue;
      found_new = true;
      auto it = before.find(tid);
      cap.threads.push_back(capture_thread(tid, it == before.end() ? nullptr : it->second));
    }
    if (!found_new) break;
  }
  if (!proc::process_exists(pid_)) cap.target_exited = true;
  close_schedstat_fds(seen);  // threads that exited
  // Threads that did not reach their stop in time are still seized: give them
  // a bounded moment now, before the (slower) unwinding and symbolization.
  stopper_.drain(std::chrono::milliseconds(50));

  if (maps_stale_) {
    maps_ = proc::read_maps(pid_);
    maps_stale_ = false;
  }
  cap.maps = maps_;
  // /proc/PID/net/tcp walks the kernel's whole connection table: read it only
  // when a thread that moved waits on a socket; reused threads' sockets are
  // described by the previous table.
  bool new_socket_wait = std::any_of(
      cap.threads.begin(), cap.threads.end(),
      [](const RawThread& t) { return t.mode != CaptureMode::kReused && is_socket(t.fds); });
  if (new_socket_wait) {
    cap.sockets = proc::read_sockets(pid_);
  } else if (previous) {
    cap.sockets = std::move(previous->sockets);
  }
  // RSS and thread count as of the start of the round (read once per round).
  cap.duration_ns = monotonic_ns() - start;
  return cap;
}

}  // namespace stackaudit
