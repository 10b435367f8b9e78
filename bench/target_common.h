// What bench_target and agent_target share: the threads both park the way a
// threaded service does, the counters those threads keep, and what main needs
// to see them asleep before it says "ready".
//
// Header-only (inline functions and variables), so each target stays one
// translation unit that g++ builds from the source alone:
//   g++ -std=c++20 -O2 -g -pthread -Wall -Wextra bench/bench_target.cpp
// A program that includes it must lock fixture::g_forever before it starts a
// park_mutex thread.

#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <pthread.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <span>
#include <string>
#include <thread>

namespace fixture {

// ---------------------------------------------------------------------------
// Counters the harness reads (through each target's "stats" answer).

inline std::atomic<std::uint64_t> g_eintr_epoll{0};
inline std::atomic<std::uint64_t> g_eintr_recv{0};
inline std::atomic<std::uint64_t> g_unexpected{0};  // wakeups that should never happen

// ---------------------------------------------------------------------------
// Small helpers.

inline pid_t current_tid() {
  return static_cast<pid_t>(syscall(SYS_gettid));
}

inline std::uint64_t now_ns(clockid_t clock = CLOCK_MONOTONIC) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Prefixed with the program's own name, so a harness running both targets
// can tell which one failed.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, std::strerror(errno));
  std::fflush(stdout);
  std::_Exit(3);
}

[[noreturn]] inline void leave(int code) {
  std::fflush(stdout);
  // The parked threads can never be joined; skip destructors entirely.
  std::_Exit(code);
}

// ---------------------------------------------------------------------------
// Parking: every thread says who it is before it blocks, so main can check
// with /proc that it really is asleep before announcing "ready".

// One per started thread; Kind is the target's own enumeration of kinds.
template <typename Kind>
struct ThreadSlot {
  std::atomic<pid_t> tid{0};
  Kind kind{};
};

// The release store is what main's acquire load pairs with: whatever a thread
// wrote before announcing (a worker's CPU clock) is visible once its tid is.
inline void announce(std::atomic<pid_t>& tid, const char* name) {
  pthread_setname_np(pthread_self(), name);
  tid.store(current_tid(), std::memory_order_release);
}

// Each parking function is noinline so that a stack dump shows one frame with
// a recognisable name per kind.

// Idle pool: the predicate is never true, like workers waiting for a job.
inline std::mutex g_pool_mutex;
inline std::condition_variable g_pool_cv;
inline bool g_pool_has_work = false;

[[gnu::noinline]] inline void park_condvar(std::atomic<pid_t>& tid) {
  announce(tid, "cv_idle");
  std::unique_lock lock(g_pool_mutex);
  g_pool_cv.wait(lock, [] { return g_pool_has_work; });
  g_unexpected.fetch_add(1);
}

[[gnu::noinline]] inline void park_sleep(std::atomic<pid_t>& tid) {
  announce(tid, "sleeper");
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// An event loop with nothing to do: an eventfd that is never written, and an
// infinite timeout. A retry on EINTR is what a careful loop does; we count it.
[[gnu::noinline]] inline void park_epoll(std::atomic<pid_t>& tid) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ep < 0 || ev < 0) fail("epoll_create1/eventfd");
  epoll_event want{};
  want.events = EPOLLIN;
  want.data.fd = ev;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &want) != 0) fail("epoll_ctl");
  announce(tid, "epoll");
  for (;;) {
    epoll_event got[4];
    int n = epoll_wait(ep, got, 4, -1);
    if (n < 0 && errno == EINTR) {
      g_eintr_epoll.fetch_add(1, std::memory_order_relaxed);
    } else {
      g_unexpected.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// A client waiting for a reply that never comes, with a receive timeout. The
// timeout matters: with SO_RCVTIMEO the kernel returns EINTR after a stop
// instead of restarting the call.
[[gnu::noinline]] inline void park_recv(std::atomic<pid_t>& tid) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
  timeval one_hour{3600, 0};
  if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &one_hour, sizeof one_hour) != 0)
    fail("setsockopt(SO_RCVTIMEO)");
  announce(tid, "recv_tmo");
  // sv[1] stays open and silent for the life of the process.
  for (;;) {
    char byte;
    ssize_t n = recv(sv[0], &byte, 1, 0);
    if (n < 0 && errno == EINTR) {
      g_eintr_recv.fetch_add(1, std::memory_order_relaxed);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // the hour is up; wait again
    } else {
      g_unexpected.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// Locked by main before any waiter starts and never released.
inline std::mutex g_forever;

[[gnu::noinline]] inline void park_mutex(std::atomic<pid_t>& tid) {
  announce(tid, "mutex");
  g_forever.lock();
  g_unexpected.fetch_add(1);
}

// ---------------------------------------------------------------------------
// Main thread: wait until everyone is parked.

// State letter of a task from /proc/self/task/TID/stat. The comm field may
// contain spaces or parentheses, so look after the last ')'.
inline char task_state(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return '?';
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return '?';
  return line[close + 2];
}

// True once every thread has announced itself and every one that does not
// keep_running(kind) sleeps, seen twice in a row: a thread that has announced
// may not have reached its wait yet at the first look.
template <typename Kind, typename KeepsRunning>
bool wait_until_parked(std::span<const ThreadSlot<Kind>> slots, KeepsRunning keeps_running,
                       std::chrono::seconds deadline) {
  auto give_up = std::chrono::steady_clock::now() + deadline;
  int calm_rounds = 0;
  while (std::chrono::steady_clock::now() < give_up) {
    bool all = true;
    for (std::size_t i = 0; i < slots.size() && all; ++i) {
      pid_t tid = slots[i].tid.load(std::memory_order_acquire);
      if (tid == 0) {
        all = false;
      } else if (!keeps_running(slots[i].kind)) {
        all = task_state(tid) == 'S';
      }
    }
    calm_rounds = all ? calm_rounds + 1 : 0;
    if (calm_rounds >= 2) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace fixture
