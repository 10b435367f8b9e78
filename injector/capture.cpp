#include "injector/capture.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <thread>
#include <unordered_map>

#include "injector/clock.h"
#include "injector/proc.h"
#include "injector/syscalls.h"
#include "injector/test_hooks.h"

namespace stackaudit {
namespace {

// The x86-64 ABI lets leaf code use 128 bytes below rsp (the red zone).
constexpr uint64_t kRedZone = 128;

class RealtimeWhileHolding {
 public:
  RealtimeWhileHolding() {
    policy_ = sched_getscheduler(0);
    sched_getparam(0, &param_);
    sched_param fifo{};
    fifo.sched_priority = 1;
    raised_ = policy_ >= 0 && sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &fifo) == 0;
  }
  ~RealtimeWhileHolding() {
    if (raised_) sched_setscheduler(0, policy_, &param_);
  }
  RealtimeWhileHolding(const RealtimeWhileHolding&) = delete;
  RealtimeWhileHolding& operator=(const RealtimeWhileHolding&) = delete;

 private:
  int policy_ = -1;
  sched_param param_{};
  bool raised_ = false;
};

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

ProcessCapturer::ProcessCapturer(pid_t pid, CaptureOptions options)
    : pid_(pid),
      options_(options),
      memory_(pid),
      stopper_(options.stopper ? options.stopper
                               : std::make_shared<StopperProcess>(
                                     StopperOptions{options.max_stop, options.max_stack_bytes})),
      scratch_(new uint8_t[options.max_stack_bytes]) {
  rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur > 512)
    schedstat_fd_budget_ = std::min<size_t>(files.rlim_cur - 256, 65536);
  // The stopper starts while the caller loads modules and reads /proc; the
  // first stop waits for it only if it is not ready by then. (The capturer
  // is created by the thread that captures: dump's and agent's main thread.)
  stopper_->launch_early();
}

std::optional<SchedStat> ProcessCapturer::schedstat(pid_t tid) {
  auto it = schedstat_fds_.find(tid);
  if (it == schedstat_fds_.end()) {
    if (schedstat_fds_.size() >= schedstat_fd_budget_) return proc::read_schedstat(pid_, tid);
    std::string path =
        "/proc/" + std::to_string(pid_) + "/task/" + std::to_string(tid) + "/schedstat";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    it = schedstat_fds_.emplace(tid, std::move(fd)).first;
  }
  char buf[128];
  ssize_t n = ::pread(it->second.get(), buf, sizeof buf - 1, 0);
  if (n <= 0) {  // the thread is gone
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

bool ProcessCapturer::sandboxed(pid_t tid) {
  if (process_seccomp_ > 0 || sandboxed_.count(tid)) return true;
  if (proc::read_seccomp(pid_, tid) <= 0) return false;
  sandboxed_.insert(tid);  // a filter is never removed
  return true;
}

std::string ProcessCapturer::why_not_stopped(pid_t tid, int attempts) const {
  uint64_t waited_ms = 0;
  for (int a = 0; a < attempts; ++a) waited_ms += (options_.stop_deadline.count() << a) / 1000;
  std::string why = "did not reach its stop in " + std::to_string(attempts) + " attempt(s) over " +
                    std::to_string(waited_ms) + " ms: ";
  auto st = proc::read_stat(pid_, tid);
  char state = st ? st->state : '?';
  if (state == 'D')
    why += "it is in uninterruptible sleep (D)";
  else if (state == 'R')
    why += "it is running but was not given a CPU in time (the machine is busy)";
  else
    why += std::string("its state is '") + state + "'";
  return why + "; it is let go the moment it stops";
}

ProcessCapturer::Stop ProcessCapturer::capture_stopped(RawThread& t, int attempt) {
  PtraceStopper::Request request;
  request.pid = pid_;
  request.tid = t.tid;
  request.seccomp = sandboxed(t.tid);
  bool blocked = t.syscall.kind == SyscallState::Kind::kInSyscall;
  if (blocked && !stop_would_interrupt(t.syscall, t.fds)) {
    request.vetted_syscall = t.syscall.nr;
    request.vetted_args = t.syscall.args;
  }
  request.reach_deadline = options_.stop_deadline * (1 << attempt);
  request.hold = hold_open();
  if (request.hold && first_hold_ns_ != 0) {
    // While threads are held, no wait may outlast the window's budget.
    uint64_t elapsed = monotonic_ns() - first_hold_ns_;
    uint64_t left = elapsed < hold_budget_ns() ? hold_budget_ns() - elapsed : 0;
    request.reach_deadline =
        std::min(request.reach_deadline, std::chrono::microseconds(left / 1000 + 1));
  }
  StopCopy copy = stopper_->stop(request);
  const StopResult& r = copy.result;
  t.stop_attempts = attempt + 1;
  switch (r.outcome) {
    case StopOutcome::kStopped: {
      t.regs = copy.regs;
      t.full_registers = true;
      t.stack_start = copy.stack_start;
      t.stack.assign(copy.stack, copy.stack + copy.stack_bytes);
      t.stack_map_start = t.stack_map_end = 0;
      if (const Mapping* m = find_mapping(maps_, copy.regs.rsp)) {
        t.stack_map_start = m->start;
        t.stack_map_end = m->end;
      } else {
        maps_stale_ = true;  // a stack mapped after we read the maps
      }
      t.stop_ns = r.hold_ns;
      t.reach_ns = r.reach_ns;
      if (!r.late) t.look_gap_ns = r.look_gap_ns;  // a late stop's look was an earlier reply's
      t.late = r.late;
      t.eintr_restarted = r.eintr_restarted;
      t.eintr_inflicted = r.eintr_inflicted;
      t.restart_redirected = r.restart_redirected;
      t.failure.clear();
      std::string call(syscall_name(r.eintr_syscall));
      if (r.eintr_inflicted)
        t.failure = "it entered " + call +
                    " as it was being stopped and saw EINTR (a call that may have done part of its "
                    "work is not entered again)";
      else if (r.eintr_restarted)
        t.failure = "it entered " + call +
                    " as it was being stopped; the call was entered again, the program saw nothing";
      else if (r.restart_redirected)
        t.failure =
            "it entered a wait as it was being stopped; under its seccomp filter the wait was "
            "entered again as the original call, not through restart_syscall";
      t.mode = CaptureMode::kStopped;
      t.held = r.held;
      if (r.held) {
        uint64_t now = monotonic_ns();
        if (first_hold_ns_ == 0) first_hold_ns_ = now - r.hold_ns;
        held_at_[t.tid] = now;
      }
      return Stop::kDone;
    }
    case StopOutcome::kRefused:
      return Stop::kRefused;
    case StopOutcome::kTimedOut:
      t.mode = CaptureMode::kFailed;
      t.failure = why_not_stopped(t.tid, attempt + 1);
      return Stop::kTimedOut;
    case StopOutcome::kVanished:
      t.vanished = true;
      break;
    default:
      break;
  }
  t.mode = CaptureMode::kFailed;
  t.failure = copy.problem.empty() ? to_string(r.outcome) : copy.problem;
  if (r.outcome == StopOutcome::kError && r.error != 0)
    t.failure += std::string(": ") + std::strerror(r.error);
  if (r.outcome == StopOutcome::kPermissionDenied) {
    t.permission_denied = true;
    // PTRACE_SEIZE says EPERM for a thread someone else traces, too.
    auto status = proc::read_process_info(pid_);
    if (status && status->tracer_pid != 0)
      t.failure = "already traced by PID " + std::to_string(status->tracer_pid);
  }
  return Stop::kDone;
}

void ProcessCapturer::read_fds(RawThread& t) {
  t.fds.clear();
  if (t.syscall.kind != SyscallState::Kind::kInSyscall) return;
  int idx = fd_argument(t.syscall.nr);
  if (idx < 0) return;
  if (auto link = proc::read_fd_link(pid_, static_cast<int>(t.syscall.args[idx])))
    t.fds.push_back(std::move(*link));
}

bool ProcessCapturer::read_thread(RawThread& t) {
  auto stat = proc::read_stat(pid_, t.tid);
  auto sc = proc::read_syscall(pid_, t.tid);
  auto sched = schedstat(t.tid);
  if (stat) t.stat = *stat;
  if (!stat || !sc || !sched || stat->state == 'Z' || stat->state == 'X') return false;
  t.syscall = *sc;
  t.schedstat = *sched;
  t.wchan = proc::read_wchan(pid_, t.tid);
  read_fds(t);
  return true;
}

RawThread ProcessCapturer::capture_thread(pid_t tid, RawThread* previous, int attempt) {
  RawThread t;
  if (try_reuse(tid, previous, t)) return t;
  t.tid = tid;
  long eintr_call = -1;  // an EINTR-prone call the thread was seen in
  for (int look = 0; look < options_.looks; ++look) {
    if (!read_thread(t)) {
      t.vanished = true;
      t.mode = CaptureMode::kFailed;
      t.failure = "thread exited";
      return t;
    }
    // A thread blocked in the kernel has a still user stack: copy it without a
    // stop. That is a must for a call that a stop would break with EINTR, and
    // for uninterruptible sleep (it would not reach a stop until it wakes);
    // for any other wait it is kept when it unwinds completely from sp and pc
    // alone (options_.nonstop_sufficient), or when the thread runs under a
    // seccomp filter (a stop would resume its call through restart_syscall),
    // so that only running threads, and code whose unwinding needs more
    // registers, pay for a stop.
    bool blocked = t.syscall.kind == SyscallState::Kind::kInSyscall;
    bool in_kernel = blocked || t.syscall.kind == SyscallState::Kind::kOutsideSyscall;
    bool eintr_prone = stop_would_interrupt(t.syscall, t.fds);
    if (eintr_prone) eintr_call = t.syscall.nr;
    bool d_state = in_kernel && t.stat.state == 'D';
    bool stop_d_state = d_state && test_hooks().stop_d_state;  // test-only: a late stop
    bool must_not_stop = eintr_prone || (d_state && !stop_d_state);
    if (!stop_d_state && (must_not_stop || (blocked && options_.nonstop_sufficient))) {
      NonStop copied = capture_nonstop(t);
      if (copied == NonStop::kVanished) {
        t.vanished = true;
        t.mode = CaptureMode::kFailed;
        t.failure = "thread exited";
        return t;
      }
      if (copied == NonStop::kCopied) {
        bool complete = options_.nonstop_sufficient && options_.nonstop_sufficient(t);
        if (must_not_stop || complete) return t;
        if (sandboxed(t.tid)) {
          t.failure =
              "not stopped: the process runs under a seccomp filter, and a stop would resume "
              "this call through restart_syscall, which a filter may deny; the stack ends "
              "where it cannot be unwound without registers";
          return t;
        }
        t.stack.clear();  // incomplete without registers: take them with a stop
      }
      // kUnstable: it runs now, or moves from wait to wait. The stopper
      // looks again just before its stop and refuses a call a stop must
      // not touch.
    }
    if (defer_stops_) {
      // --consistent: threads read without a stop first, then the ones to
      // hold, one right after the other, so that the window is short.
      deferred_.push_back(tid);
      t.mode = CaptureMode::kFailed;
      return t;
    }
    switch (capture_stopped(t, attempt)) {
      case Stop::kDone:
        return t;
      case Stop::kTimedOut:
        slow_.push_back(tid);
        return t;
      case Stop::kRefused:
        continue;  // it is in such a call now: read it where it is
    }
  }
  t.mode = CaptureMode::kFailed;
  if (eintr_call >= 0)
    t.failure = "busy in a wait that a stop would break with EINTR (" +
                std::string(syscall_name(eintr_call)) + "); not stopped";
  else
    t.failure = "busy entering and leaving system calls under a seccomp filter; not stopped";
  return t;
}

uint64_t ProcessCapturer::hold_budget_ns() const {
  return static_cast<uint64_t>(options_.max_stop.count()) * 750;  // 3/4 of max-stop, in ns
}

bool ProcessCapturer::hold_open() const {
  if (!options_.consistent) return false;
  return first_hold_ns_ == 0 || monotonic_ns() - first_hold_ns_ < hold_budget_ns();
}

void ProcessCapturer::pin_unheld(RawCapture& cap, std::set<pid_t>& seen) {
  constexpr int kPasses = 3;
  ConsistentCapture& c = cap.consistent;
  auto out_of_time = [&] {
    c.why_not = "the window reached 3/4 of --max-stop (" +
                std::to_string(options_.max_stop.count() / 1000) +
                " ms) before every thread was pinned; raise --max-stop";
  };
  for (c.passes = 1;; ++c.passes) {
    if (!hold_open()) return out_of_time();
    // Threads started meanwhile are captured too.
    for (pid_t tid : proc::list_tasks(pid_))
      if (seen.insert(tid).second) cap.threads.push_back(capture_thread(tid, nullptr, 0));
    std::vector<RawThread*> moved;
    size_t checked = 0;
    for (RawThread& t : cap.threads) {
      if (t.held || t.vanished || t.mode == CaptureMode::kFailed) continue;
      if (++checked % 256 == 0 && !hold_open()) return out_of_time();
      // Kernels without schedstat accounting read zeros: that proves nothing.
      if (t.schedstat.timeslices == 0) {
        c.why_not =
            "this kernel does not account schedstat, so unstopped threads cannot be "
            "checked not to have run";
        return;
      }
      // A late copy was taken before the look it would be checked against.
      auto now = schedstat(t.tid);
      if (t.late || !now || !(*now == t.schedstat)) moved.push_back(&t);
    }
    c.moved = moved.size();
    if (moved.empty()) {
      c.achieved = true;
      return;
    }
    if (c.passes == kPasses) {
      c.why_not = std::to_string(moved.size()) + " thread(s) ran again each time they were read (" +
                  std::to_string(kPasses) + " passes) without being stopped";
      return;
    }
    for (RawThread* t : moved) *t = capture_thread(t->tid, nullptr, 0);
  }
}

void ProcessCapturer::end_hold(RawCapture& cap) {
  ConsistentCapture& c = cap.consistent;
  StopperProcess::Released released = stopper_->release_held();
  uint64_t now = monotonic_ns();
  c.window_ns = released.window_ns;
  uint64_t bound_ns = static_cast<uint64_t>(options_.max_stop.count()) * 1000;
  for (RawThread& t : cap.threads) {
    if (t.held) {
      ++c.held;
      if (auto it = held_at_.find(t.tid); it != held_at_.end()) t.stop_ns += now - it->second;
      // A lost hold ended when the stopper's timer fired, at the latest.
      if (released.lost) t.stop_ns = std::min(t.stop_ns, bound_ns);
      c.window_ns = std::max(c.window_ns, t.stop_ns);
    } else if (!t.vanished && t.mode != CaptureMode::kFailed) {
      ++c.verified;
    } else if (!t.vanished && c.achieved) {
      c.achieved = false;
      c.why_not = "some threads could not be captured within the window";
    }
  }
  c.verified -= std::min(c.verified, c.moved);
  if (released.lost) {
    c.achieved = false;
    c.why_not = "the stopper's watchdog let the held threads go at --max-stop (" +
                std::to_string(options_.max_stop.count() / 1000) +
                " ms) before the capture was done";
  }
  first_hold_ns_ = 0;
  held_at_.clear();
}

void ProcessCapturer::read_maps() {
  maps_ = proc::read_maps(pid_);
  maps_stale_ = false;
  stopper_->set_maps(maps_);
}

RawCapture ProcessCapturer::capture(RawCapture* previous) {
  RawCapture cap;
  cap.started_unix_ns = wall_ns();
  uint64_t start = monotonic_ns();
  auto info = proc::read_process_info(pid_);
  if (info) cap.process = *info;
  process_seccomp_ = info ? info->seccomp : -1;
  if (maps_.empty() || maps_stale_)
    read_maps();
  else if (options_.stopper)
    stopper_->set_maps(maps_);  // a shared stopper holds the last capturer's table
  stopper_->new_round();
  slow_.clear();
  size_t ended_before = stopper_->watchdog_ended();

  defer_stops_ = options_.consistent;
  deferred_.clear();
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
      cap.threads.push_back(capture_thread(p.tid, &p, 0));
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
      cap.threads.push_back(capture_thread(tid, it == before.end() ? nullptr : it->second, 0));
    }
    if (!found_new) break;
  }
  // While threads are held, this thread runs at the stopper's real-time
  // priority too (when it may), so that the window does not wait for a CPU
  // behind the target's running threads; the window bounds it.
  std::optional<RealtimeWhileHolding> realtime;
  if (defer_stops_ && !deferred_.empty()) realtime.emplace();
  if (defer_stops_) {
    defer_stops_ = false;
    std::sort(deferred_.begin(), deferred_.end());
    for (RawThread& t : cap.threads)
      if (std::binary_search(deferred_.begin(), deferred_.end(), t.tid))
        t = capture_thread(t.tid, nullptr, 0);
  }
  // --consistent: pinned and let go before slow threads are asked again
  // (they were not held, so they are not pinned either: the snapshot says so).
  if (options_.consistent) {
    cap.consistent.requested = true;
    pin_unheld(cap, seen);
    if (long ms = test_hooks().hang_while_holding_ms; ms > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    end_hold(cap);
    realtime.reset();
  }
  // Threads that did not reach their stop in time were not held: their
  // interrupt stands, and the stopper lets them go the moment they stop,
  // keeping a copy if they do so before we ask again. Ask again, waiting
  // longer each time.
  for (int attempt = 1; attempt < options_.stop_attempts && !slow_.empty(); ++attempt) {
    std::vector<pid_t> again;
    again.swap(slow_);
    cap.stopper.retries += again.size();
    for (pid_t tid : again)
      for (RawThread& t : cap.threads)
        if (t.tid == tid) t = capture_thread(tid, nullptr, attempt);
  }
  if (!proc::process_exists(pid_)) cap.target_exited = true;
  close_schedstat_fds(seen);  // threads that exited
  // A target in a PID namespace of its own: each thread's id there, read
  // after every stop (one more /proc read per thread that moved; a reused
  // thread keeps its own). In our namespace it is the tid itself.
  for (RawThread& t : cap.threads) {
    if (t.vanished || t.mode == CaptureMode::kReused) continue;
    if (!info || info->ns_pid == 0)
      t.ns_tid = 0;
    else if (info->ns_pid == pid_)
      t.ns_tid = t.tid;
    else
      t.ns_tid = proc::read_ns_tid(pid_, t.tid);
  }

  if (maps_stale_) read_maps();
  cap.maps = maps_;
  cap.stopper.priority = stopper_->priority();
  cap.stopper.max_stop_us = static_cast<uint64_t>(stopper_->max_stop().count());
  cap.stopper.watchdog_ended = stopper_->watchdog_ended() - ended_before;
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
  cap.duration_ns = monotonic_ns() - start;
  return cap;
}

}  // namespace stackaudit
