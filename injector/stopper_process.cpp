#include "injector/stopper_process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "injector/clock.h"
#include "injector/remote_memory.h"
#include "injector/test_hooks.h"

extern char** environ;

namespace stackaudit {
namespace {

constexpr const char* kStopperArgument = "--internal-stopper";
constexpr int kSocketFd = 3;             // where the stopper finds its end of the socket pair
constexpr int kSharedFd = 4;             // ... and the shared memory file
constexpr uint32_t kMagic = 0x53544f50;  // "STOP"
constexpr size_t kMaxMaps = 16384;
constexpr uint32_t kLateSlots = 4;
constexpr uint64_t kRedZone = 128;  // the x86-64 ABI lets leaf code use 128 bytes below rsp
constexpr uint64_t kRetireAfterNs = 2'000'000'000;
constexpr int kRetired = 3;  // the stopper's exit status when it retires on its own

// The shared memory file: a header, the table of mappings that may hold a
// stack (sorted, written by the capturer under a sequence lock), then one
// buffer for the current stop's copy and one per late copy.
struct SharedHeader {
  std::atomic<uint32_t> maps_seq;  // odd while the capturer rewrites the table
  uint32_t map_count;
  char priority[64];
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct MapRange {
  uint64_t start;
  uint64_t end;
};

constexpr size_t kMapsOffset = (sizeof(SharedHeader) + 63) / 64 * 64;
constexpr size_t kBuffersOffset = kMapsOffset + kMaxMaps * sizeof(MapRange);

size_t shared_size(size_t max_stack) {
  return kBuffersOffset + (1 + kLateSlots) * max_stack;
}

enum WireKind : uint32_t { kStopThread, kHoldThread, kReleaseHeld };

struct WireRequest {
  uint32_t magic;
  uint32_t kind;  // WireKind
  pid_t pid;
  pid_t tid;
  uint32_t seccomp;
  int64_t vetted_syscall;
  uint64_t vetted_args[6];
  int64_t reach_deadline_us;
  uint64_t round;
};

struct WireReply {
  uint32_t magic;
  uint32_t buffer;  // 0: the current stop's buffer; 1 + i: late slot i
  StopResult result;
  user_regs_struct regs;
  uint64_t stack_start;
  uint64_t stack_bytes;
  uint64_t released;  // kReleaseHeld: threads let go
};

struct WireHello {
  uint32_t magic;
};

SharedHeader* header(uint8_t* shared) {
  return reinterpret_cast<SharedHeader*>(shared);
}

MapRange* map_table(uint8_t* shared) {
  return reinterpret_cast<MapRange*>(shared + kMapsOffset);
}

uint8_t* buffer(uint8_t* shared, size_t max_stack, uint32_t index) {
  return shared + kBuffersOffset + index * max_stack;
}

// ---------------------------------------------------------------------------
// The stopper process.

// The dead-man switch: a CLOCK_MONOTONIC timer whose signal is SIGKILL. The
// kernel delivers it whatever this process is doing, stopped included.
class KillTimer final : public PtraceStopper::Watchdog {
 public:
  explicit KillTimer(uint64_t max_stop_ns) : max_stop_ns_(max_stop_ns) {
    sigevent ev{};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGKILL;
    ok_ = timer_create(CLOCK_MONOTONIC, &ev, &timer_) == 0;
  }
  bool ok() const { return ok_; }
  void renew(bool outstanding, uint64_t holding_since_ns) override {
    if (!outstanding && !armed_) return;
    itimerspec when{};  // zero: disarmed
    if (outstanding) {
      uint64_t fire = monotonic_ns() + max_stop_ns_;
      if (holding_since_ns != 0) fire = std::min(fire, holding_since_ns + max_stop_ns_);
      when.it_value = {static_cast<time_t>(fire / 1000000000),
                       static_cast<long>(fire % 1000000000)};
    }
    timer_settime(timer_, TIMER_ABSTIME, &when, nullptr);
    armed_ = outstanding;
  }
  // Renewed four times per max-stop (at least 10 ms, so at least every
  // 2.5 ms), so that a healthy stopper is never anywhere near its deadline.
  std::chrono::microseconds period() const override {
    return std::chrono::microseconds(max_stop_ns_ / 4000);
  }

 private:
  uint64_t max_stop_ns_;
  timer_t timer_{};
  bool ok_ = false;
  bool armed_ = false;
};

class Stopper final : public PtraceStopper::LateStops {
 public:
  Stopper(uint8_t* shared, size_t max_stack, KillTimer& timer)
      : shared_(shared),
        max_stack_(max_stack),
        core_(&timer, this),
        window_(*this),
        late_window_(*this) {}

  PtraceStopper& core() { return core_; }

  WireReply serve(const WireRequest& r) {
    if (r.kind == kReleaseHeld) {
      WireReply w{};
      w.magic = kMagic;
      uint64_t since = core_.holding_since_ns();
      w.released = core_.release_held();
      w.result.outcome = StopOutcome::kStopped;
      w.result.hold_ns = since ? monotonic_ns() - since : 0;
      return w;
    }
    // The slot given in the last reply has been copied by now (the capturer
    // asks again only after it has): it may take a new late copy.
    for (auto& s : slots_) s.used &= !s.handed_out;
    if (r.round != round_) {
      round_ = r.round;
      for (auto& s : slots_) s.used = false;
    }
    for (uint32_t i = 0; i < kLateSlots; ++i) {
      if (slots_[i].used && !slots_[i].handed_out && slots_[i].pid == r.pid &&
          slots_[i].tid == r.tid) {
        slots_[i].handed_out = true;
        return slots_[i].reply;
      }
    }
    use_target(r.pid);
    window_.aim(0);
    PtraceStopper::Request request;
    request.pid = r.pid;
    request.tid = r.tid;
    request.seccomp = r.seccomp != 0;
    request.vetted_syscall = r.vetted_syscall;
    std::copy(std::begin(r.vetted_args), std::end(r.vetted_args), request.vetted_args.begin());
    request.reach_deadline = std::chrono::microseconds(r.reach_deadline_us);
    request.tag = r.round;
    request.hold = r.kind == kHoldThread;
    return window_.reply(core_.stop(request, window_));
  }

  StopWindow* window_for(pid_t pid, pid_t tid, uint64_t tag) override {
    if (tag != round_ || pid != target_ || !memory_) return nullptr;
    for (uint32_t i = 0; i < kLateSlots; ++i) {
      if (slots_[i].used) continue;
      late_slot_ = i;
      slots_[i].handed_out = false;
      slots_[i].pid = pid;
      slots_[i].tid = tid;
      late_window_.aim(1 + i);
      return &late_window_;
    }
    return nullptr;  // let it go without a copy
  }

  void captured(pid_t, pid_t, uint64_t, const StopResult& result) override {
    slots_[late_slot_].reply = late_window_.reply(result);
    slots_[late_slot_].used = result.outcome == StopOutcome::kStopped;
  }

 private:
  // Copies registers and the top of the stack into a shared buffer. Runs in
  // the stop window: no allocation, no file I/O.
  class CopyWindow final : public StopWindow {
   public:
    explicit CopyWindow(Stopper& owner) : owner_(owner) {}
    void aim(uint32_t index) {
      index_ = index;
      regs_ = {};
      start_ = bytes_ = 0;
    }
    void on_stopped(pid_t, const user_regs_struct& regs) override {
      regs_ = regs;
      uint64_t lo = regs.rsp > kRedZone ? regs.rsp - kRedZone : 0;
      uint64_t hi = lo + owner_.max_stack_;
      owner_.bound_by_mapping(regs.rsp, &lo, &hi);
      start_ = lo;
      ssize_t n =
          owner_.memory_
              ? owner_.memory_->read(lo, buffer(owner_.shared_, owner_.max_stack_, index_), hi - lo)
              : -1;
      bytes_ = n > 0 ? static_cast<uint64_t>(n) : 0;
      if (long ms = test_hooks().hang_in_stop_ms; ms > 0) {
        timespec nap{ms / 1000, (ms % 1000) * 1000000};
        while (nanosleep(&nap, &nap) != 0 && errno == EINTR) {
        }
      }
    }
    WireReply reply(const StopResult& result) const {
      WireReply w{};
      w.magic = kMagic;
      w.buffer = index_;
      w.result = result;
      if (result.outcome == StopOutcome::kStopped) {
        w.regs = regs_;
        w.stack_start = start_;
        w.stack_bytes = bytes_;
      }
      return w;
    }

   private:
    Stopper& owner_;
    uint32_t index_ = 0;
    user_regs_struct regs_{};
    uint64_t start_ = 0;
    uint64_t bytes_ = 0;
  };

  // Narrows [lo, hi) to the mapping that holds sp, when the capturer's table
  // has it and was not being rewritten meanwhile.
  void bound_by_mapping(uint64_t sp, uint64_t* lo, uint64_t* hi) const {
    SharedHeader* h = header(shared_);
    uint32_t seq = h->maps_seq.load(std::memory_order_acquire);
    if (seq & 1) return;
    const MapRange* maps = map_table(shared_);
    size_t n = std::min<size_t>(h->map_count, kMaxMaps);
    const MapRange* it = std::upper_bound(
        maps, maps + n, sp, [](uint64_t a, const MapRange& m) { return a < m.start; });
    if (it == maps) return;
    --it;
    uint64_t start = it->start, end = it->end;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (h->maps_seq.load(std::memory_order_relaxed) != seq || sp >= end) return;
    *lo = std::max(*lo, start);
    *hi = std::min(*hi, end);
  }

  // A new target: open its memory and read it once, so that a fallback to
  // /proc/PID/mem opens its file now rather than inside a stop window.
  void use_target(pid_t pid) {
    if (pid == target_ && memory_) return;
    target_ = pid;
    memory_ = std::make_unique<RemoteMemory>(pid);
    SharedHeader* h = header(shared_);
    uint8_t probe;
    if (h->map_count > 0) memory_->read(map_table(shared_)[0].start, &probe, 1);
  }

  struct LateSlot {
    bool used = false;
    bool handed_out = false;  // in the last reply: the capturer may still be copying it
    pid_t pid = 0;
    pid_t tid = 0;
    WireReply reply{};
  };

  uint8_t* shared_;
  size_t max_stack_;
  PtraceStopper core_;
  CopyWindow window_;       // the requested thread's
  CopyWindow late_window_;  // a thread that stopped after its deadline
  pid_t target_ = 0;
  std::unique_ptr<RemoteMemory> memory_;
  uint64_t round_ = 0;
  LateSlot slots_[kLateSlots];
  uint32_t late_slot_ = 0;
};

// Runs the stopper where it cannot wait for a CPU behind the target's busy
// threads: SCHED_FIFO 1 (the lowest real-time priority, above every normal
// thread), else the highest nice, else as it is. It only ever runs for the
// few microseconds of a stop or a wake-up; SCHED_RESET_ON_FORK keeps the
// priority from spreading.
void raise_priority(char* said, size_t size) {
  sched_param param{};
  param.sched_priority = 1;
  if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &param) == 0) {
    std::snprintf(said, size, "realtime (SCHED_FIFO 1)");
  } else if (setpriority(PRIO_PROCESS, 0, -20) == 0) {
    std::snprintf(said, size, "nice -20 (SCHED_FIFO refused)");
  } else {
    std::snprintf(said, size, "normal (no CAP_SYS_NICE)");
  }
}

// Moves fd above the numbers the stopper's descriptors are given, so that
// placing one there cannot overwrite the other.
UniqueFd above_spawn_fds(UniqueFd fd) {
  if (!fd || fd.get() > kSharedFd) return fd;
  return UniqueFd(fcntl(fd.get(), F_DUPFD_CLOEXEC, kSharedFd + 1));
}

}  // namespace

bool is_stopper_invocation(int argc, char** argv) {
  return argc >= 2 && std::strcmp(argv[1], kStopperArgument) == 0;
}

// argv: NAME --internal-stopper MAX_STOP_NS MAX_STACK PARENT_PID
int stopper_main(int argc, char** argv) {
  if (argc != 5) return 2;
  uint64_t max_stop_ns = std::strtoull(argv[2], nullptr, 10);
  size_t max_stack = std::strtoull(argv[3], nullptr, 10);
  pid_t parent = static_cast<pid_t>(std::atol(argv[4]));
  // Die with the capturer; it may have died before this line.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) return 0;
  prctl(PR_SET_NAME, "stackaudit-stop");
  // A terminal's job control (Ctrl-Z) must not stop us mid-window, nor Ctrl-C
  // or a service manager's SIGTERM end us there: we end when the capturer
  // does (the death signal above, or the end of our socket).
  for (int sig : {SIGTSTP, SIGTTIN, SIGTTOU, SIGINT, SIGQUIT, SIGTERM, SIGHUP})
    signal(sig, SIG_IGN);

  size_t size = shared_size(max_stack);
  // Populated now, so that no copy in a stop window waits for a page.
  void* map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, kSharedFd, 0);
  if (map == MAP_FAILED) return 1;
  auto* shared = static_cast<uint8_t*>(map);
  raise_priority(header(shared)->priority, sizeof header(shared)->priority);
#ifndef __SANITIZE_ADDRESS__
  // Pages we touch stay in memory: no stop window waits for one to come back
  // from swap. Best effort (RLIMIT_MEMLOCK may refuse); the watchdog bounds
  // the rest.
  mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT);
#endif

  KillTimer timer(max_stop_ns);
  if (!timer.ok()) return 1;  // no stop without a watchdog
  block_sigchld();
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) return 1;

  auto stopper = std::make_unique<Stopper>(shared, max_stack, timer);
  WireHello hello{kMagic};
  if (send(kSocketFd, &hello, sizeof hello, MSG_NOSIGNAL) != sizeof hello) return 1;

  for (;;) {
    PtraceStopper& core = stopper->core();
    pollfd fds[2] = {{kSocketFd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    int timeout_ms = core.outstanding() > 0 || core.held() > 0
                         ? static_cast<int>(timer.period().count() / 1000)
                         : 1000;
    poll(fds, 2, timeout_ms);
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info[8];
      while (read(sigfd, info, sizeof info) > 0) {
      }
    }
    core.collect();  // late stops are let go here, and the watchdog renewed
    if (fds[0].revents & POLLIN) {
      WireRequest request{};
      ssize_t n = recv(kSocketFd, &request, sizeof request, 0);
      if (n == 0) break;  // the capturer is done
      if (n == sizeof request && request.magic == kMagic) {
        WireReply reply = stopper->serve(request);
        if (send(kSocketFd, &reply, sizeof reply, MSG_NOSIGNAL) != sizeof reply) break;
      }
    } else if (fds[0].revents & (POLLHUP | POLLERR)) {
      break;
    }
    if (getppid() != parent) break;
    // A thread interrupted long ago that has still not stopped (in
    // uninterruptible sleep for seconds, say) is not ours to keep waiting
    // for: exiting cancels its interrupt, and the capturer starts a new
    // stopper when it needs one.
    if (core.oldest_outstanding_ns() > kRetireAfterNs) _exit(kRetired);
  }
  // Exiting lets go of every thread still outstanding.
  _exit(0);
}

// ---------------------------------------------------------------------------
// The capturer's side.

StopperProcess::StopperProcess(StopperOptions options) : options_(std::move(options)) {}

StopperProcess::~StopperProcess() {
  end();
}

void StopperProcess::launch_early() {
  std::string ignored;
  if (child_ < 0) launch(&ignored);
}

bool StopperProcess::start(std::string* why) {
  if (child_ < 0 && !launch(why)) return false;
  if (ready_) return true;
  // A sanitized build takes a while to start: be patient once.
  pollfd p{socket_.get(), POLLIN, 0};
  WireHello hello{};
  if (poll(&p, 1, 10'000) != 1 || recv(socket_.get(), &hello, sizeof hello, 0) != sizeof hello ||
      hello.magic != kMagic) {
    *why = "cannot start the stopper process: " + reap().how;
    end();
    return false;
  }
  priority_ = header(shared_)->priority;
  ready_ = true;
  return true;
}

bool StopperProcess::launch(std::string* why) {
  auto fail = [&](const char* what) {
    *why = std::string("cannot start the stopper process: ") + what + ": " + std::strerror(errno);
    end();
    return false;
  };
  shared_size_ = shared_size(options_.max_stack_bytes);
  memfd_ = above_spawn_fds(UniqueFd(memfd_create("stackaudit-stopper", MFD_CLOEXEC)));
  if (!memfd_) return fail("memfd_create");
  if (ftruncate(memfd_.get(), static_cast<off_t>(shared_size_)) != 0) return fail("ftruncate");
  void* map = mmap(nullptr, shared_size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
  if (map == MAP_FAILED) return fail("mmap");
  shared_ = static_cast<uint8_t*>(map);
  write_maps();

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return fail("socketpair");
  socket_.reset(pair[0]);
  UniqueFd child_end = above_spawn_fds(UniqueFd(pair[1]));
  if (!child_end) return fail("fcntl");

  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&files, child_end.get(), kSocketFd);
  posix_spawn_file_actions_adddup2(&files, memfd_.get(), kSharedFd);
  posix_spawn_file_actions_addclosefrom_np(&files, kSharedFd + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGCHLD, SIGPIPE, SIGINT, SIGTERM, SIGUSR1, SIGHUP}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::string max_stop = std::to_string(options_.max_stop.count() * 1000);
  std::string max_stack = std::to_string(options_.max_stack_bytes);
  std::string parent = std::to_string(getpid());
  char name[] = "stackaudit-stopper";
  char* argv[] = {
      name,   const_cast<char*>(kStopperArgument), max_stop.data(), max_stack.data(), parent.data(),
      nullptr};
  int rc = posix_spawn(&child_, options_.executable.c_str(), &files, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  child_end.reset();
  if (rc != 0) {
    child_ = -1;
    errno = rc;
    return fail(("posix_spawn " + options_.executable).c_str());
  }
  return true;
}

void StopperProcess::end() {
  ready_ = false;
  if (holding_ > 0) hold_lost_ = true;  // the kernel lets them go with the stopper
  holding_ = 0;
  socket_.reset();  // the stopper sees the end of its socket and exits
  if (child_ > 0) {
    uint64_t deadline = monotonic_ns() + 200'000'000;
    int status = 0;
    while (waitpid(child_, &status, WNOHANG) == 0) {
      if (monotonic_ns() > deadline) {
        kill(child_, SIGKILL);
        waitpid(child_, &status, 0);
        break;
      }
      usleep(1000);
    }
    child_ = -1;
  }
  if (shared_) munmap(shared_, shared_size_);
  shared_ = nullptr;
  memfd_.reset();
}

StopperProcess::Ended StopperProcess::reap() {
  Ended ended;
  if (child_ <= 0) {
    ended.how = "it is not running";
    return ended;
  }
  // Its socket closes a moment before its exit can be reaped: give a dying
  // stopper that moment before ending it.
  int status = 0;
  pid_t r = 0;
  for (uint64_t end = monotonic_ns() + 200'000'000; r == 0 && monotonic_ns() < end;) {
    r = waitpid(child_, &status, WNOHANG);
    if (r == 0) usleep(1000);
  }
  if (r == 0) {
    kill(child_, SIGKILL);
    waitpid(child_, &status, 0);
    child_ = -1;
    ended.killed = true;
    ended.how = "it did not answer, and was ended";
    return ended;
  }
  child_ = -1;
  if (r < 0) {
    ended.how = "it is gone";
  } else if (WIFSIGNALED(status)) {
    ended.killed = WTERMSIG(status) == SIGKILL;
    ended.how = ended.killed ? "it was killed by its watchdog (or by SIGKILL from outside)"
                             : std::string("it died of signal ") + strsignal(WTERMSIG(status));
  } else {
    ended.retired = WEXITSTATUS(status) == kRetired;
    ended.how = ended.retired ? "it retired, cancelling interrupts older than 2 s"
                              : "it exited with status " + std::to_string(WEXITSTATUS(status));
  }
  return ended;
}

void StopperProcess::set_maps(const std::vector<Mapping>& maps) {
  maps_.clear();
  for (const Mapping& m : maps)
    if (m.readable && m.writable && maps_.size() < kMaxMaps) maps_.emplace_back(m.start, m.end);
  write_maps();
}

void StopperProcess::write_maps() {
  if (!shared_) return;
  SharedHeader* h = header(shared_);
  uint32_t seq = h->maps_seq.load(std::memory_order_relaxed);
  h->maps_seq.store(seq + 1, std::memory_order_relaxed);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  MapRange* table = map_table(shared_);
  for (size_t i = 0; i < maps_.size(); ++i) table[i] = {maps_[i].first, maps_[i].second};
  h->map_count = static_cast<uint32_t>(maps_.size());
  h->maps_seq.store(seq + 2, std::memory_order_release);
}

StopCopy StopperProcess::stop(const PtraceStopper::Request& request) {
  StopCopy copy;
  WireRequest wire{};
  wire.magic = kMagic;
  wire.kind = request.hold ? kHoldThread : kStopThread;
  wire.pid = request.pid;
  wire.tid = request.tid;
  wire.seccomp = request.seccomp ? 1u : 0u;
  wire.vetted_syscall = request.vetted_syscall;
  std::copy(request.vetted_args.begin(), request.vetted_args.end(), wire.vetted_args);
  wire.reach_deadline_us = request.reach_deadline.count();
  wire.round = round_;
  // A stopper that died between two stops (its watchdog fired while it was
  // stopped with a thread still on its way to a stop), or that holds too many
  // such threads, is replaced once.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string why;
    if (!ready_ && !start(&why)) {
      // One launched early may have died before its first use (killed, or
      // out of memory): start another once.
      if (attempt == 0) continue;
      copy.result.outcome = StopOutcome::kError;
      copy.problem = why;
      return copy;
    }
    if (send(socket_.get(), &wire, sizeof wire, MSG_NOSIGNAL) != sizeof wire) {
      // It ended since the last stop: retired, or killed by its watchdog
      // while stopped with a thread still on its way to a stop.
      if (reap().killed) ++watchdog_ended_;
      end();
      continue;
    }
    // Bounded: the stopper answers within the reach deadline, or its watchdog
    // ends it within max-stop; the rest is slack for a loaded machine.
    auto timeout = request.reach_deadline + options_.max_stop + std::chrono::seconds(2);
    pollfd p{socket_.get(), POLLIN, 0};
    WireReply reply{};
    ssize_t n = -1;
    if (poll(&p, 1, static_cast<int>(timeout.count() / 1000)) == 1)
      n = recv(socket_.get(), &reply, sizeof reply, 0);
    if (n != sizeof reply || reply.magic != kMagic || reply.buffer > kLateSlots) {
      // No answer in time, or its end: either way a dead stopper holds
      // nothing, and the kernel has let the thread go.
      ++watchdog_ended_;
      copy.result.outcome = StopOutcome::kWatchdog;
      copy.problem = "the stop was ended by the watchdog after at most --max-stop: " + reap().how +
                     "; the kernel let the thread go";
      end();
      return copy;
    }
    if (reply.result.outcome == StopOutcome::kError && reply.result.error == EBUSY) {
      // Too many threads interrupted and still on their way to a stop (stuck
      // in uninterruptible sleep, say): a new stopper cancels them all.
      end();
      continue;
    }
    copy.result = reply.result;
    copy.regs = reply.regs;
    copy.stack_start = reply.stack_start;
    copy.stack_bytes = std::min<size_t>(reply.stack_bytes, options_.max_stack_bytes);
    copy.stack = buffer(shared_, options_.max_stack_bytes, reply.buffer);
    if (reply.result.held) ++holding_;
    return copy;
  }
  copy.result.outcome = StopOutcome::kError;
  copy.problem = "the stopper process could not take this stop (it was replaced twice)";
  return copy;
}

StopperProcess::Released StopperProcess::release_held() {
  Released r;
  r.lost = hold_lost_;
  hold_lost_ = false;
  if (holding_ == 0) return r;
  WireRequest wire{};
  wire.magic = kMagic;
  wire.kind = kReleaseHeld;
  pollfd p{socket_.get(), POLLIN, 0};
  WireReply reply{};
  ssize_t n = -1;
  auto timeout = options_.max_stop + std::chrono::seconds(2);
  if (send(socket_.get(), &wire, sizeof wire, MSG_NOSIGNAL) == sizeof wire &&
      poll(&p, 1, static_cast<int>(timeout.count() / 1000)) == 1)
    n = recv(socket_.get(), &reply, sizeof reply, 0);
  if (n != sizeof reply || reply.magic != kMagic) {
    // Its watchdog ended it mid-hold: the kernel let every held thread go.
    if (reap().killed) ++watchdog_ended_;
    end();
    hold_lost_ = false;
    r.lost = true;
    return r;
  }
  holding_ = 0;
  r.released = reply.released;
  r.window_ns = reply.result.hold_ns;
  return r;
}

}  // namespace stackaudit
