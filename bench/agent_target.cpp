// agent_target: a victim process for the continuous-agent benchmark
// (bench/run_agent_bench.py).
//
// Like bench_target, it parks most of its threads the way a threaded service
// does (condition variable, sleep, epoll, recv with a timeout, a mutex that is
// never released). Unlike bench_target, a few threads never park: "workers"
// that repeat a fixed small unit of CPU work and count how many units they
// finished. The count over a window of wall time is the target's throughput,
// measured inside the target, so the harness can compare a window with the
// agent running against a window without it.
//
// No signal handlers, on purpose (see bench_target.cpp): the kernel's default
// restart behaviour is part of what is measured (EINTRs are counted).
//
// Build: g++ -std=c++20 -O2 -g -pthread -Wall -Wextra agent_target.cpp
// Usage: agent_target --threads N [--workers W]
//   N threads besides main: W workers and N - W parked threads. W defaults to
//   $AGENT_TARGET_WORKERS if set, else 2 (the environment lets a harness that
//   only knows --threads choose it).
// Protocol (stdin -> stdout, one line each):
//   reset  -> "ok"      start a new window: counters are taken as zero now
//   report -> "iterations=<n> elapsed_ns=<t>"
//             units of work finished by all workers together since reset, and
//             the wall time since reset
//   stats  -> "stats key=value ..." (per-window detail, see below)
//   mix    -> "mix key=value ..." (how many threads of each kind)
//   pause  -> "ok"      workers sleep (10 ms naps) instead of working, so the
//                       process leaves the CPUs alone while the harness waits
//                       for a quiet machine
//   resume -> "ok"      workers work again
//   quit / EOF -> exit

#include <unistd.h>

#include <pthread.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "target_common.h"

using namespace fixture;

namespace {

// ---------------------------------------------------------------------------
// Thread kinds and how many of each. The parked kinds are those of
// bench_target (target_common.h); the workers are this target's own.

enum class Kind { Condvar, Sleep, Epoll, Recv, Mutex, Worker };
using Slot = ThreadSlot<Kind>;

struct KindInfo {
  Kind kind;
  const char* name;  // thread name (comm) and key in the "mix" answer
  int percent;       // share of the parked threads; Condvar takes the rest
};

// The same shares as bench_target, so the two fixtures look alike to a tool.
constexpr KindInfo kKinds[] = {
    {Kind::Condvar, "cv_idle", 0},                               // the remainder
    {Kind::Sleep, "sleeper", 15},  {Kind::Epoll, "epoll", 10},   // a stop would break it with EINTR
    {Kind::Recv, "recv_tmo", 10},                                // likewise (SO_RCVTIMEO)
    {Kind::Mutex, "mutex", 10},    {Kind::Worker, "worker", 0},  // set from --workers
};
constexpr std::size_t kKindCount = std::size(kKinds);

std::size_t kind_index(Kind k) {
  for (std::size_t i = 0; i < kKindCount; ++i)
    if (kKinds[i].kind == k) return i;
  std::abort();
}

struct Plan {
  int count[kKindCount] = {};
  int total = 0;
};

Plan make_plan(int threads, int workers) {
  Plan p;
  int parked = threads - workers;
  int assigned = 0;
  for (std::size_t i = 0; i < kKindCount; ++i) {
    p.count[i] = parked * kKinds[i].percent / 100;
    assigned += p.count[i];
  }
  p.count[kind_index(Kind::Condvar)] += parked - assigned;
  p.count[kind_index(Kind::Worker)] = workers;
  for (int c : p.count) p.total += c;
  return p;
}

// ---------------------------------------------------------------------------
// Shared state.

std::unique_ptr<Slot[]> g_slots;

// One per worker, on its own cache line so the counters do not bounce.
struct alignas(64) WorkerState {
  std::atomic<std::uint64_t> done{0};  // units finished since start
  clockid_t cpu_clock{};               // this thread's CPU-time clock
  pid_t tid = 0;
};
std::unique_ptr<WorkerState[]> g_workers;
int g_worker_count = 0;

std::atomic<std::uint64_t> g_sink{0};  // keeps the work observable
std::atomic<bool> g_paused{false};     // read once per unit, written by main only

// ---------------------------------------------------------------------------
// Workers.

// One unit of work: a chain of dependent multiply-adds over a small private
// table (2 KiB, stays in L1), a few hundred nanoseconds. Dependent, so the
// compiler cannot vectorise it away and its cost does not depend on how much
// memory-level parallelism the machine offers; the table makes the unit touch
// memory a little, so a neighbour that evicts the cache shows up too.
constexpr int kTableWords = 256;

[[gnu::noinline]] std::uint64_t unit_of_work(std::uint64_t* table, std::uint64_t x) {
  for (int i = 0; i < 256; ++i) {
    std::uint64_t& cell = table[(x >> 56) & (kTableWords - 1)];
    x = x * 6364136223846793005ull + (cell | 1);
    cell ^= x >> 17;
  }
  return x;
}

[[gnu::noinline]] void run_worker(std::atomic<pid_t>& tid, WorkerState& me) {
  me.tid = current_tid();
  if (int err = pthread_getcpuclockid(pthread_self(), &me.cpu_clock)) {
    errno = err;  // it returns its error rather than setting errno
    fail("pthread_getcpuclockid");
  }
  announce(tid, "worker");  // after the clock: main reads it once this is seen
  std::uint64_t table[kTableWords];
  for (int i = 0; i < kTableWords; ++i) table[i] = 0x9e3779b97f4a7c15ull * (i + 1);
  std::uint64_t x = static_cast<std::uint64_t>(me.tid) | 1;
  for (std::uint64_t n = 1;; ++n) {
    x = unit_of_work(table, x);
    // A plain store on x86: the counter costs nothing next to the unit.
    me.done.store(n, std::memory_order_relaxed);
    if ((n & 0xffff) == 0) g_sink.store(x, std::memory_order_relaxed);
    while (g_paused.load(std::memory_order_relaxed))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// ---------------------------------------------------------------------------
// Windows: reset remembers where every counter stood; report subtracts.

// Context switches of one thread, from /proc (a worker never blocks on its
// own, so its voluntary switches are stops done to it from outside).
struct Switches {
  std::uint64_t voluntary = 0, involuntary = 0;
};

Switches read_switches(pid_t tid) {
  Switches s;
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    auto value = [&](const char* key) -> std::uint64_t {
      return std::strtoull(line.c_str() + std::strlen(key), nullptr, 10);
    };
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
      s.voluntary = value("voluntary_ctxt_switches:");
    else if (line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
      s.involuntary = value("nonvoluntary_ctxt_switches:");
  }
  return s;
}

struct Mark {
  std::uint64_t wall = 0;
  std::vector<std::uint64_t> done, cpu;
  std::vector<Switches> switches;
  std::uint64_t eintr_epoll = 0, eintr_recv = 0, unexpected = 0;
};

Mark take_mark() {
  Mark m;
  m.wall = now_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < g_worker_count; ++i) {
    WorkerState& w = g_workers[i];
    m.done.push_back(w.done.load(std::memory_order_relaxed));
    m.cpu.push_back(now_ns(w.cpu_clock));
    m.switches.push_back(read_switches(w.tid));
  }
  m.eintr_epoll = g_eintr_epoll.load();
  m.eintr_recv = g_eintr_recv.load();
  m.unexpected = g_unexpected.load();
  return m;
}

// ---------------------------------------------------------------------------
// Start-up.

long parse_int(const std::string& text, const char* what, long lo, long hi) {
  char* end = nullptr;
  long n = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n < lo || n > hi) {
    std::fprintf(stderr, "agent_target: bad %s '%s'\n", what, text.c_str());
    std::exit(64);
  }
  return n;
}

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout, "usage: agent_target --threads N [--workers W]\n");
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  long threads = -1, workers = 2;
  if (const char* env = std::getenv("AGENT_TARGET_WORKERS"))
    workers = parse_int(env, "AGENT_TARGET_WORKERS", 0, 64);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> std::string {
      std::string eq = std::string(name) + "=";
      if (arg == name && i + 1 < argc) return argv[++i];
      if (arg.rfind(eq, 0) == 0) return arg.substr(eq.size());
      return {};
    };
    if (arg == "-h" || arg == "--help") usage(0);
    if (arg.rfind("--threads", 0) == 0)
      threads = parse_int(value("--threads"), "--threads", 1, 100000);
    else if (arg.rfind("--workers", 0) == 0)
      workers = parse_int(value("--workers"), "--workers", 0, 64);
    else
      usage(64);
  }
  if (threads < 0) usage(64);
  if (workers > threads) {
    std::fprintf(stderr, "agent_target: --workers is larger than --threads\n");
    return 64;
  }

  Plan plan = make_plan(static_cast<int>(threads), static_cast<int>(workers));
  g_forever.lock();
  g_worker_count = static_cast<int>(workers);
  g_workers = std::make_unique<WorkerState[]>(static_cast<std::size_t>(std::max(1L, workers)));
  g_slots = std::make_unique<Slot[]>(static_cast<std::size_t>(plan.total));
  {
    int next = 0;
    for (std::size_t k = 0; k < kKindCount; ++k)
      for (int j = 0; j < plan.count[k]; ++j) g_slots[next++].kind = kKinds[k].kind;
  }

  int next_worker = 0;
  for (int i = 0; i < plan.total; ++i) {
    Slot& slot = g_slots[i];
    try {
      std::thread t;
      switch (slot.kind) {
        case Kind::Condvar:
          t = std::thread(park_condvar, std::ref(slot.tid));
          break;
        case Kind::Sleep:
          t = std::thread(park_sleep, std::ref(slot.tid));
          break;
        case Kind::Epoll:
          t = std::thread(park_epoll, std::ref(slot.tid));
          break;
        case Kind::Recv:
          t = std::thread(park_recv, std::ref(slot.tid));
          break;
        case Kind::Mutex:
          t = std::thread(park_mutex, std::ref(slot.tid));
          break;
        case Kind::Worker:
          t = std::thread(run_worker, std::ref(slot.tid), std::ref(g_workers[next_worker++]));
          break;
      }
      t.detach();
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "agent_target: cannot start thread %d: %s\n", i, e.what());
      leave(3);
    }
  }
  // A worker announces itself only once its CPU clock is published, so this
  // also waits for the clocks take_mark reads.
  auto keeps_running = [](Kind kind) { return kind == Kind::Worker; };
  std::span<const Slot> slots(g_slots.get(), static_cast<std::size_t>(plan.total));
  if (!wait_until_parked(slots, keeps_running, std::chrono::seconds(60))) {
    std::fprintf(stderr, "agent_target: threads did not settle within 60 s\n");
    leave(4);
  }

  Mark since = take_mark();
  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "reset") {
      since = take_mark();
      std::puts("ok");
    } else if (line == "report" || line == "stats") {
      Mark now = take_mark();
      std::uint64_t iterations = 0, cpu = 0, vol = 0, invol = 0, slowest = UINT64_MAX, fastest = 0;
      for (int i = 0; i < g_worker_count; ++i) {
        std::uint64_t d = now.done[i] - since.done[i];
        iterations += d;
        slowest = std::min(slowest, d);
        fastest = std::max(fastest, d);
        cpu += now.cpu[i] - since.cpu[i];
        vol += now.switches[i].voluntary - since.switches[i].voluntary;
        invol += now.switches[i].involuntary - since.switches[i].involuntary;
      }
      if (g_worker_count == 0) slowest = 0;
      std::uint64_t elapsed = now.wall - since.wall;
      if (line == "report") {
        std::printf("iterations=%llu elapsed_ns=%llu\n",
                    static_cast<unsigned long long>(iterations),
                    static_cast<unsigned long long>(elapsed));
      } else {
        // worker_cpu_ns: CPU time the workers got (sum); worker_stops: their
        // voluntary switches (a spinning worker only has them when stopped);
        // worker_preempted: involuntary switches (lost the CPU to someone).
        std::printf(
            "stats iterations=%llu elapsed_ns=%llu workers=%d worker_cpu_ns=%llu "
            "worker_min=%llu worker_max=%llu worker_stops=%llu worker_preempted=%llu "
            "eintr_epoll=%llu eintr_recv=%llu unexpected=%llu\n",
            static_cast<unsigned long long>(iterations), static_cast<unsigned long long>(elapsed),
            g_worker_count, static_cast<unsigned long long>(cpu),
            static_cast<unsigned long long>(slowest), static_cast<unsigned long long>(fastest),
            static_cast<unsigned long long>(vol), static_cast<unsigned long long>(invol),
            static_cast<unsigned long long>(now.eintr_epoll - since.eintr_epoll),
            static_cast<unsigned long long>(now.eintr_recv - since.eintr_recv),
            static_cast<unsigned long long>(now.unexpected - since.unexpected));
      }
    } else if (line == "mix") {
      std::ostringstream out;
      out << "mix";
      for (std::size_t k = 0; k < kKindCount; ++k)
        out << ' ' << kKinds[k].name << '=' << plan.count[k];
      out << " main=1 total=" << plan.total + 1;
      std::puts(out.str().c_str());
    } else if (line == "pause" || line == "resume") {
      g_paused.store(line == "pause", std::memory_order_relaxed);
      std::puts("ok");
    } else if (line == "quit") {
      break;
    } else if (!line.empty()) {
      std::printf("error unknown command '%s'\n", line.c_str());
    }
    std::fflush(stdout);
  }
  leave(0);
}
