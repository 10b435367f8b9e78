// bench_target: a victim process for the stack-dump benchmark.
//
// It starts N threads parked the way a typical threaded service parks them,
// plus one "stall probe" that spins on the clock, and then answers commands on
// stdin so a harness can measure what a stack-dumping tool did to it:
//
//   * the longest pause the probe saw between two consecutive clock reads
//     (what a tool that stops a *running* thread costs that thread), and
//   * how many times an EINTR-prone wait (epoll_wait, recv with SO_RCVTIMEO)
//     came back with EINTR (what stopping a *blocked* thread costs a program
//     that does not retry).
//
// No signal handlers are installed on purpose: a handler would change which
// syscalls the kernel restarts, and the point is to see the default behaviour.
//
// Build: g++ -std=c++20 -O2 -g -pthread -Wall -Wextra bench_target.cpp
// Usage: bench_target --threads N [--spinners S]
//   --spinners S adds S threads that compute without ever waiting ("spinner"),
//   to make a busy target: with S + 1 >= the number of CPUs, every thread that
//   is interrupted waits for a CPU to reach its stop.
// Protocol (stdin -> stdout, one line each):
//   reset  -> "ok"            zero the stall maximum and the EINTR counters
//   report -> "eintr=<n> max_stall_us=<m>"
//   stats  -> "stats key=value ..." (breakdown of the same figures, see below)
//   mix    -> "mix key=value ..." (how many threads of each kind)
//   quit / EOF -> exit

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "target_common.h"

using namespace fixture;

namespace {

// ---------------------------------------------------------------------------
// The thread mix.

enum class Kind { Condvar, Sleep, Epoll, Recv, Mutex, Probe, Spin };
using Slot = ThreadSlot<Kind>;

struct KindInfo {
  Kind kind;
  const char* name;  // thread name (comm) and key in the "mix" answer
  int percent;       // share of N; the condition-variable pool takes the rest
};

// Shares of the requested thread count: the condition-variable pool takes
// whatever the others leave (~54 %), and there is exactly one probe.
constexpr KindInfo kKinds[] = {
    {Kind::Condvar, "cv_idle", 0},  // the remainder
    {Kind::Sleep, "sleeper", 15},   // long sleep_for
    {Kind::Epoll, "epoll", 10},     // EINTR-prone
    {Kind::Recv, "recv_tmo", 10},   // EINTR-prone
    {Kind::Mutex, "mutex", 10},     // lock held forever by main
    {Kind::Probe, "probe", 0},      // exactly one
    {Kind::Spin, "spinner", 0},     // --spinners, on top of N
};

struct Mix {
  int count[std::size(kKinds)] = {};
  int total = 0;

  int& of(Kind kind) {
    for (std::size_t i = 0; i < std::size(kKinds); ++i)
      if (kKinds[i].kind == kind) return count[i];
    std::abort();
  }
};

Mix plan_mix(int n, int spinners) {
  Mix mix;
  for (std::size_t i = 0; i < std::size(kKinds); ++i) mix.count[i] = n * kKinds[i].percent / 100;
  mix.of(Kind::Probe) = 1;
  int assigned = 0;
  for (int c : mix.count) assigned += c;
  mix.of(Kind::Condvar) += std::max(0, n - assigned);  // tiny N may leave nothing
  mix.of(Kind::Spin) = spinners;
  mix.total = 0;
  for (int c : mix.count) mix.total += c;
  return mix;
}

std::unique_ptr<Slot[]> g_slots;  // one per thread started, grouped by kind

// ---------------------------------------------------------------------------
// Threads that never park: the stall probe and the spinners. (The parked
// kinds, and the counters they keep, are in target_common.h.)

// The probe publishes what it saw; all in nanoseconds.
struct ProbeFigures {
  std::atomic<std::uint64_t> max_gap{0};        // any gap, whatever the cause
  std::atomic<std::uint64_t> max_stopped{0};    // gaps with a voluntary switch
  std::atomic<std::uint64_t> max_preempted{0};  // gaps with only preemption
  std::atomic<std::uint64_t> max_other{0};      // no switch at all (irq, steal)
  std::atomic<std::uint64_t> stops{0};          // voluntary switches seen
  std::atomic<std::uint64_t> stopped_total{0};  // sum of stopped gaps
  std::atomic<std::uint64_t> iterations{0};
  std::atomic<std::uint64_t> reset_request{0};
  std::atomic<std::uint64_t> reset_done{0};
};
ProbeFigures g_probe;

[[gnu::noinline]] void run_spinner(std::atomic<pid_t>& tid) {
  announce(tid, "spinner");
  volatile std::uint64_t x = 1;
  for (;;) x = x * 6364136223846793005ull + 1442695040888963407ull;
}

void raise_to(std::atomic<std::uint64_t>& slot, std::uint64_t v) {
  if (v > slot.load(std::memory_order_relaxed)) slot.store(v, std::memory_order_relaxed);
}

// The stall probe: a thread that is always running. The gap between two
// consecutive clock reads is normally tens of nanoseconds; any longer gap is
// time this thread was not executing.
//
// To tell a tool's stop from ordinary CPU contention, every gap longer than
// kLookThreshold is checked against this thread's context-switch counters: a
// spinning thread never blocks on its own, so a voluntary switch during the gap
// means it was stopped (ptrace / job control); an involuntary one alone means
// the scheduler preempted it (on 2 vCPUs the tool itself competes for CPU);
// neither means interrupts or the hypervisor. getrusage is only called on
// such gaps, and the clock is re-read after it so its cost is not counted.
constexpr std::uint64_t kLookThreshold = 2000;  // ns

[[gnu::noinline]] void run_probe(std::atomic<pid_t>& tid) {
  announce(tid, "probe");
  long voluntary = 0, involuntary = 0;
  auto switches = [](long& v, long& iv) {
    rusage ru{};
    getrusage(RUSAGE_THREAD, &ru);
    v = ru.ru_nvcsw;
    iv = ru.ru_nivcsw;
  };
  switches(voluntary, involuntary);
  std::uint64_t seen_reset = 0;
  std::uint64_t max_gap = 0;
  std::uint64_t prev = now_ns();
  for (std::uint64_t iter = 1;; ++iter) {
    std::uint64_t now = now_ns();
    std::uint64_t gap = now - prev;
    if (gap > max_gap) {
      max_gap = gap;
      g_probe.max_gap.store(gap, std::memory_order_relaxed);
    }
    if (gap > kLookThreshold) {
      long v = 0, iv = 0;
      switches(v, iv);
      if (v != voluntary) {
        raise_to(g_probe.max_stopped, gap);
        g_probe.stops.fetch_add(static_cast<std::uint64_t>(v - voluntary),
                                std::memory_order_relaxed);
        g_probe.stopped_total.fetch_add(gap, std::memory_order_relaxed);
      } else if (iv != involuntary) {
        raise_to(g_probe.max_preempted, gap);
      } else {
        raise_to(g_probe.max_other, gap);
      }
      voluntary = v;
      involuntary = iv;
      now = now_ns();
    }
    prev = now;
    g_probe.iterations.store(iter, std::memory_order_release);

    std::uint64_t want = g_probe.reset_request.load(std::memory_order_acquire);
    if (want != seen_reset) {
      seen_reset = want;
      max_gap = 0;
      for (auto* f : {&g_probe.max_gap, &g_probe.max_stopped, &g_probe.max_preempted,
                      &g_probe.max_other, &g_probe.stops, &g_probe.stopped_total})
        f->store(0, std::memory_order_relaxed);
      switches(voluntary, involuntary);
      prev = now_ns();
      g_probe.reset_done.store(want, std::memory_order_release);
    }
  }
}

// ---------------------------------------------------------------------------
// Main thread: start everyone, wait until they sleep, then serve commands.

// Let the probe run at least one full loop after a request, so a gap that
// ended just before the request is included in what we report.
void let_probe_catch_up() {
  auto start = g_probe.iterations.load(std::memory_order_acquire);
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (g_probe.iterations.load(std::memory_order_acquire) < start + 2 &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

bool probe_reset(bool have_probe) {
  auto req = g_probe.reset_request.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (!have_probe) return true;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (g_probe.reset_done.load(std::memory_order_acquire) != req) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

double us(const std::atomic<std::uint64_t>& ns) {
  return static_cast<double>(ns.load(std::memory_order_relaxed)) / 1000.0;
}

// --threads N (required) and --spinners S (default 0).
struct Args {
  int threads = 0;
  int spinners = 0;
};

Args parse_args(int argc, char** argv) {
  auto usage = [&](int code) {
    std::fprintf(stderr, "usage: %s --threads N [--spinners S]\n", argv[0]);
    std::exit(code);
  };
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") usage(0);
    int* into = arg == "--threads" ? &args.threads : arg == "--spinners" ? &args.spinners : nullptr;
    if (!into || i + 1 >= argc) usage(64);
    std::string value = argv[++i];
    char* end = nullptr;
    long n = std::strtol(value.c_str(), &end, 10);
    if (end == value.c_str() || *end != '\0' || n < 0 || n > 100000) {
      std::fprintf(stderr, "bench_target: bad %s '%s'\n", arg.c_str(), value.c_str());
      std::exit(64);
    }
    *into = static_cast<int>(n);
  }
  if (args.threads < 1) usage(64);
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  Mix mix = plan_mix(args.threads, args.spinners);

  // Main owns the mutex for the life of the process.
  g_forever.lock();

  g_slots = std::make_unique<Slot[]>(static_cast<std::size_t>(mix.total));
  {
    int next = 0;
    for (std::size_t k = 0; k < std::size(kKinds); ++k)
      for (int j = 0; j < mix.count[k]; ++j) g_slots[next++].kind = kKinds[k].kind;
  }

  for (int i = 0; i < mix.total; ++i) {
    Slot& slot = g_slots[i];
    std::thread worker;
    try {
      switch (slot.kind) {
        case Kind::Condvar:
          worker = std::thread(park_condvar, std::ref(slot.tid));
          break;
        case Kind::Sleep:
          worker = std::thread(park_sleep, std::ref(slot.tid));
          break;
        case Kind::Epoll:
          worker = std::thread(park_epoll, std::ref(slot.tid));
          break;
        case Kind::Recv:
          worker = std::thread(park_recv, std::ref(slot.tid));
          break;
        case Kind::Mutex:
          worker = std::thread(park_mutex, std::ref(slot.tid));
          break;
        case Kind::Probe:
          worker = std::thread(run_probe, std::ref(slot.tid));
          break;
        case Kind::Spin:
          worker = std::thread(run_spinner, std::ref(slot.tid));
          break;
      }
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "bench_target: cannot start thread %d: %s\n", i, e.what());
      leave(3);
    }
    worker.detach();
  }

  const bool have_probe = mix.of(Kind::Probe) > 0;
  auto keeps_running = [](Kind kind) { return kind == Kind::Probe || kind == Kind::Spin; };
  std::span<const Slot> slots(g_slots.get(), static_cast<std::size_t>(mix.total));
  if (!wait_until_parked(slots, keeps_running, std::chrono::seconds(60))) {
    std::fprintf(stderr, "bench_target: threads did not all park within 60 s\n");
    leave(4);
  }
  probe_reset(have_probe);

  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);

  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "reset") {
      g_eintr_epoll.store(0);
      g_eintr_recv.store(0);
      g_unexpected.store(0);
      std::puts(probe_reset(have_probe) ? "ok" : "error probe not answering");
    } else if (line == "report") {
      if (have_probe) let_probe_catch_up();
      std::printf("eintr=%llu max_stall_us=%.1f\n",
                  static_cast<unsigned long long>(g_eintr_epoll.load() + g_eintr_recv.load()),
                  us(g_probe.max_gap));
    } else if (line == "stats") {
      if (have_probe) let_probe_catch_up();
      std::printf(
          "stats eintr_epoll=%llu eintr_recv=%llu unexpected=%llu "
          "max_stall_us=%.1f max_stopped_us=%.1f max_preempted_us=%.1f "
          "max_other_us=%.1f probe_stops=%llu probe_stopped_total_us=%.1f\n",
          static_cast<unsigned long long>(g_eintr_epoll.load()),
          static_cast<unsigned long long>(g_eintr_recv.load()),
          static_cast<unsigned long long>(g_unexpected.load()), us(g_probe.max_gap),
          us(g_probe.max_stopped), us(g_probe.max_preempted), us(g_probe.max_other),
          static_cast<unsigned long long>(g_probe.stops.load()), us(g_probe.stopped_total));
    } else if (line == "mix") {
      std::ostringstream out;
      out << "mix";
      for (std::size_t k = 0; k < std::size(kKinds); ++k)
        out << ' ' << kKinds[k].name << '=' << mix.count[k];
      // +1: the main thread (command loop, owner of the held mutex)
      out << " main=1 total=" << mix.total + 1;
      std::puts(out.str().c_str());
    } else if (line == "quit") {
      break;
    } else if (!line.empty()) {
      std::printf("error unknown command '%s'\n", line.c_str());
    }
    std::fflush(stdout);
  }
  leave(0);
}
