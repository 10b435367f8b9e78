// The floor of a thread stop: the least any ptrace-based tool can hold a
// running thread, measured on the same thread and in the same run as the
// tools (bench/run_dump_bench.py --floor). For each of N rounds:
// PTRACE_SEIZE, PTRACE_INTERRUPT, waitpid until it stops, PTRACE_GETREGS,
// PTRACE_DETACH; the hold is from waitpid's return to the detach's, which is
// what stackaudit reports as a thread's stop (capture.stop_us). Nothing else:
// no look at /proc, no stack copy, no watchdog, no second process.
//
//   stop_floor TID N [COPY]   prints "floor p50_us=... p99_us=... max_us=... n=..."
//
// With COPY (bytes), the window also copies that much of the stack from
// rsp - 128 with process_vm_readv, as stackaudit's does (bounded there by
// the stack's mapping): the floor of a stop that copies.
//
// Run it only on a thread of a process you own for benchmarking: it stops
// the thread N times.
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

double percentile(std::vector<uint64_t> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[i]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: stop_floor TID N [COPY]\n");
    return 2;
  }
  pid_t tid = static_cast<pid_t>(std::atol(argv[1]));
  int rounds = std::atoi(argv[2]);
  size_t copy = argc == 4 ? static_cast<size_t>(std::atol(argv[3])) : 0;
  std::vector<char> buffer(copy + 1);
  if (tid <= 0 || rounds <= 0) {
    std::fprintf(stderr, "stop_floor: TID and N must be positive\n");
    return 2;
  }
  std::vector<uint64_t> holds;
  for (int i = 0; i < rounds; ++i) {
    if (ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
      std::perror("stop_floor: PTRACE_SEIZE");
      return 1;
    }
    if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
      std::perror("stop_floor: PTRACE_INTERRUPT");
      return 1;
    }
    int status = 0;
    while (waitpid(tid, &status, __WALL) < 0 && errno == EINTR) {
    }
    uint64_t seen = now_ns();
    user_regs_struct regs;
    ptrace(PTRACE_GETREGS, tid, nullptr, &regs);
    if (copy > 0) {
      iovec local{buffer.data(), copy};
      iovec remote{reinterpret_cast<void*>(regs.rsp - 128), copy};
      process_vm_readv(tid, &local, 1, &remote, 1, 0);
    }
    // A signal that arrived meanwhile is handed back, as a tool must.
    int sig = (status >> 16) == PTRACE_EVENT_STOP ? 0 : WSTOPSIG(status);
    ptrace(PTRACE_DETACH, tid, nullptr, reinterpret_cast<void*>(static_cast<uintptr_t>(sig)));
    holds.push_back(now_ns() - seen);
    usleep(2000);  // let it run between stops
  }
  std::printf("floor p50_us=%.1f p99_us=%.1f max_us=%.1f n=%zu\n", percentile(holds, 0.5),
              percentile(holds, 0.99), percentile(holds, 1.0), holds.size());
  return 0;
}
