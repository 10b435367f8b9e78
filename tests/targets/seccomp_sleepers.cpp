// Test fixture: a sandboxed process whose seccomp filter denies
// restart_syscall, the call through which the kernel resumes a thread that a
// ptrace stop took out of nanosleep, clock_nanosleep, a timed poll or a timed
// futex wait.
//
//   seccomp_sleepers --deny eperm|kill
//
// eperm: restart_syscall fails with EPERM (the program sees its sleep fail);
// kill: the whole process is killed with SIGSYS (SECCOMP_RET_KILL_PROCESS).
// Threads: one of each kind that waits for an hour in frame-pointer code (its
// stack cannot be unwound from sp and pc alone, so a stop would be tempting),
// and one of each kind that waits 1 ms at a time between short bursts of work
// (so that a stop aimed at it while it runs can land as it enters the wait).
// Every wait checks its result; "eperm" on stdin prints how many failed.
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

std::atomic<long> g_failed{0};
std::atomic<int> g_parked{0};
std::atomic<long> g_sink{0};
pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;  // never signalled
int g_pipe[2];                                     // never written

void named(const char* name) {
  pthread_setname_np(pthread_self(), name);
  ++g_parked;
}

void count(int result) {
  if (result != 0 && (result == EPERM || errno == EPERM)) ++g_failed;
}

timespec in_ms(long ms) {
  return timespec{ms / 1000, (ms % 1000) * 1000000};
}

int do_nanosleep(long ms) {
  timespec t = in_ms(ms);
  return nanosleep(&t, nullptr);
}

int do_clock_nanosleep(long ms) {
  timespec t = in_ms(ms);
  return clock_nanosleep(CLOCK_MONOTONIC, 0, &t, nullptr);  // returns the error
}

int do_poll(long ms) {
  pollfd p{g_pipe[0], POLLIN, 0};
  return poll(&p, 1, static_cast<int>(ms)) < 0 ? -1 : 0;
}

int do_cond_timedwait(long ms) {
  timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += ms / 1000;
  deadline.tv_nsec += (ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec += 1;
    deadline.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&g_mutex);
  int r = pthread_cond_timedwait(&g_cond, &g_mutex, &deadline);  // a timed futex wait
  pthread_mutex_unlock(&g_mutex);
  return r == ETIMEDOUT ? 0 : r;
}

struct Kind {
  const char* name;
  int (*wait)(long ms);
};
const Kind kKinds[] = {{"nanosleep", do_nanosleep},
                       {"clock_nsleep", do_clock_nanosleep},
                       {"poll", do_poll},
                       {"cond_timed", do_cond_timedwait}};

// Frame-pointer code: the caller's frame is found through rbp, which sp and
// pc alone do not give.
__attribute__((noinline, optimize("no-omit-frame-pointer"))) void wait_long(const Kind& k) {
  volatile char frame_user[64];
  frame_user[0] = 1;
  for (;;) count(k.wait(3600 * 1000));  // @line:seccomp_long
  g_sink += frame_user[0];
}

void long_waiter(const Kind& k) {
  char name[16];
  std::snprintf(name, sizeof name, "long_%s", k.name);
  named(name);
  wait_long(k);
}

void short_waiter(const Kind& k) {
  char name[16];
  std::snprintf(name, sizeof name, "short_%s", k.name);
  named(name);
  uint64_t seed = reinterpret_cast<uintptr_t>(&k);
  for (;;) {
    timespec now, until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    until.tv_nsec += 50000 + static_cast<long>((seed >> 33) % 100000);
    do clock_gettime(CLOCK_MONOTONIC, &now);
    while (now.tv_sec < until.tv_sec ||
           (now.tv_sec == until.tv_sec && now.tv_nsec < until.tv_nsec));
    count(k.wait(1));  // @line:seccomp_short
  }
}

// Denies restart_syscall with `action`; allows everything else.
bool install_filter(unsigned action) {
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_restart_syscall, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, action),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return false;
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned action = 0;
  if (argc == 3 && std::strcmp(argv[1], "--deny") == 0) {
    if (std::strcmp(argv[2], "eperm") == 0) action = SECCOMP_RET_ERRNO | EPERM;
    if (std::strcmp(argv[2], "kill") == 0) action = SECCOMP_RET_KILL_PROCESS;
  }
  if (action == 0) {
    std::fprintf(stderr, "usage: seccomp_sleepers --deny eperm|kill\n");
    return 2;
  }
  if (pipe(g_pipe) != 0) return 1;
  // Installed before any thread exists: every thread inherits the filter.
  if (!install_filter(action)) {
    std::perror("seccomp");
    return 1;
  }
  std::vector<std::thread> threads;
  for (const Kind& k : kKinds) {
    threads.emplace_back(long_waiter, std::cref(k));
    threads.emplace_back(short_waiter, std::cref(k));
  }
  while (g_parked.load() < static_cast<int>(threads.size())) usleep(1000);
  usleep(100 * 1000);
  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  char line[64];
  while (std::fgets(line, sizeof line, stdin)) {
    if (std::strncmp(line, "eperm", 5) == 0) std::printf("eperm %ld\n", g_failed.load());
    std::fflush(stdout);
  }
  std::_Exit(0);
}
