// Test fixture: parks named threads in known primitives and says "ready".
//
//   park_threads [--extra N] [--exit-after-ms MS] [--churn 1] [--nap-ms MS] [--tag ANY]
//                [--race N] [--spin N] [--vfork-ms MS]
//
// Every blocking call sits on a line tagged "@line:TAG" so tests can look the
// expected line up in this file. Threads in calls that a ptrace stop would
// break (epoll_wait, recv with SO_RCVTIMEO, sigwaitinfo) count the EINTRs
// they see; "eintr" on stdin prints the total. --extra N adds N more threads
// (condition waits and sleeps) for tests that need a crowd. --exit-after-ms
// makes the process exit on its own, for "target exits mid-capture" tests.
// --churn 1 starts and ends short-lived threads without pause. --nap-ms MS
// adds a thread "napper" that sleeps MS at a time, again and again: blocking
// episodes that end. --tag is ignored (it marks the command line for --match).
//
// For the safety tests: --race N adds N threads of each of three kinds that
// compute for 50-150 us and then enter a *timed* EINTR-prone wait (epoll_wait,
// recv with SO_RCVTIMEO, sigtimedwait; 2 ms each), again and again, so that a
// stop aimed at a running thread often lands just as it enters the wait; they
// count EINTRs with the others, and "race" on stdin prints how many waits they
// made and the longest time a wait overran its timeout. --spin N adds N threads
// that never wait ("spinner_I"). --vfork-ms MS adds "vforker", which vforks a
// child that sleeps MS and exits, again and again: the thread spends that time
// in uninterruptible sleep (D); "vfork" prints the longest time it took to run
// again after its child exited. "stall" prints the longest gap "busy" or a
// spinner saw between two turns of its loop since the last "stall", which is
// how long it was kept from running (stopped, or not given a CPU).
// --signal-waiter 1 adds "epoll_signal", which waits in epoll_wait with a
// SIGUSR1 handler installed: an EINTR there is the handler's, expected, and
// counted apart ("signal_eintr" prints it), not with the others.
// --unnamed N adds N threads that never name themselves (they keep the
// process's name) and wait on the condition variable.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<int> g_parked{0};
std::atomic<long> g_eintr{0};
std::atomic<long> g_sink{0};
std::atomic<long> g_race_waits{0};
std::atomic<long> g_race_overrun_ns{0};  // the longest a timed wait overran its timeout
std::atomic<long> g_busy_gap_ns{0};      // the longest gap in the busy thread's loop
std::atomic<long> g_vfork_late_ns{0};    // the longest the vforker took to run after its child
std::atomic<long> g_signal_eintr{0};     // EINTRs of epoll_signal, with its handler run
std::mutex g_held;                       // held forever by the holder thread
std::mutex g_cv_mutex;
std::condition_variable g_cv;  // never notified

void named(const char* name) {
  pthread_setname_np(pthread_self(), name);
  ++g_parked;
}

__attribute__((noinline)) void park_mutex_holder() {
  named("mutex_holder");
  std::lock_guard hold(g_held);
  std::unique_lock lock(g_cv_mutex);
  g_cv.wait(lock);  // @line:mutex_holder
}

__attribute__((noinline)) void park_mutex_wait() {
  named("mutex_wait");
  while (g_parked.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the holder has it by now
  g_held.lock();                                               // @line:mutex_wait
  g_sink++;
}

__attribute__((noinline)) void park_cond_wait() {
  named("cond_wait");
  std::unique_lock lock(g_cv_mutex);
  g_cv.wait(lock);  // @line:cond_wait
  g_sink++;
}

// Always inlined into park_sleep: the test expects it as a frame of its own.
__attribute__((always_inline)) inline void inlined_nap() {
  std::this_thread::sleep_for(std::chrono::hours(1));  // @line:inlined_nap
}

__attribute__((noinline)) void park_sleep() {
  named("sleeper");
  inlined_nap();  // @line:sleep_call
  g_sink++;
}

// Built with a frame pointer: its caller's frame is found through rbp, which a
// copy taken without a stop does not have. stackaudit must stop this thread.
__attribute__((noinline, optimize("no-omit-frame-pointer"))) void fp_nap() {
  volatile char frame_user[64];
  frame_user[0] = 1;
  std::this_thread::sleep_for(std::chrono::hours(1));  // @line:fp_sleep
  g_sink += frame_user[0];
}

__attribute__((noinline)) void park_fp_sleep() {
  named("fp_sleeper");
  fp_nap();  // @line:fp_call
  g_sink++;
}

__attribute__((noinline)) void park_tcp_recv(int fd) {
  named("tcp_recv");
  char buf[64];
  ssize_t n = recv(fd, buf, sizeof buf, 0);  // @line:tcp_recv
  g_sink += n;
}

__attribute__((noinline)) void park_pipe_read(int fd) {
  named("pipe_read");
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);  // @line:pipe_read
  g_sink += n;
}

// An epoll instance that watches fd for input.
int epoll_watching(int fd) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return ep;
}

__attribute__((noinline)) void park_epoll(int fd) {
  named("epoll_wait");
  int ep = epoll_watching(fd);
  for (;;) {
    epoll_event out[4];
    int n = epoll_wait(ep, out, 4, -1);  // @line:epoll_wait
    if (n < 0 && errno == EINTR) ++g_eintr;
  }
}

__attribute__((noinline)) void park_poll(int fd) {
  named("poll_wait");
  pollfd p{fd, POLLIN, 0};
  int n = poll(&p, 1, -1);  // @line:poll_wait
  g_sink += n;
}

__attribute__((noinline)) void park_child_wait(pid_t child) {
  named("child_wait");
  int status = 0;
  waitpid(child, &status, 0);  // @line:child_wait
  g_sink++;
}

__attribute__((noinline)) void park_accept(int listener) {
  named("acceptor");
  int c = accept(listener, nullptr, nullptr);  // @line:acceptor
  g_sink += c;
}

__attribute__((noinline)) void park_recv_timeout(int fd) {
  named("recv_timeo");
  timeval tv{3600, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (;;) {
    char buf[64];
    ssize_t n = recv(fd, buf, sizeof buf, 0);  // @line:recv_timeo
    if (n < 0 && errno == EINTR) ++g_eintr;
  }
}

__attribute__((noinline)) void park_sigwait() {
  named("sigwait");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  for (;;) {
    siginfo_t info;
    int r = sigwaitinfo(&set, &info);  // @line:sigwait
    if (r < 0 && errno == EINTR) ++g_eintr;
  }
}

long now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

void raise_to(std::atomic<long>& max, long value) {
  long seen = max.load(std::memory_order_relaxed);
  while (value > seen && !max.compare_exchange_weak(seen, value)) {
  }
}

__attribute__((noinline)) void park_busy() {
  named("busy");
  volatile uint64_t x = 1;
  long last = now_ns();
  for (;;) {
    for (int i = 0; i < 64; ++i) x = x * 2862933555777941757ull + 3037000493ull;  // @line:busy
    long now = now_ns();
    raise_to(g_busy_gap_ns, now - last);
    last = now;
  }
}

__attribute__((noinline)) void park_spinner(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "spinner_%d", i);
  named(name);
  volatile uint64_t x = 1;
  long last = now_ns();
  for (;;) {
    for (int j = 0; j < 64; ++j) x = x * 2862933555777941757ull + 3037000493ull;  // @line:spinner
    long now = now_ns();
    raise_to(g_busy_gap_ns, now - last);
    last = now;
  }
}

// Computes for 50-150 us (a different length each time).
void compute_a_little(uint64_t& seed) {
  seed = seed * 6364136223846793005ull + 1442695040888963407ull;
  long until = now_ns() + 50'000 + static_cast<long>((seed >> 33) % 100'000);
  volatile uint64_t x = seed;
  while (now_ns() < until) x = x * 3 + 1;
}

// Runs one timed wait of 2 ms and counts what a stop did to it.
template <class Wait>
void race_loop(const char* name, int i, Wait wait) {
  char full[16];
  std::snprintf(full, sizeof full, "%s_%d", name, i);
  named(full);
  uint64_t seed = static_cast<uint64_t>(i + 1) * 0x9e3779b97f4a7c15ull;
  for (;;) {
    compute_a_little(seed);
    long start = now_ns();
    int r = wait();
    long took = now_ns() - start;
    if (r < 0 && errno == EINTR) ++g_eintr;
    ++g_race_waits;
    raise_to(g_race_overrun_ns, took - 2'000'000);
  }
}

__attribute__((noinline)) void race_epoll(int i) {
  int ep = epoll_watching(eventfd(0, EFD_CLOEXEC));  // never written
  race_loop("race_epoll", i, [&] {
    epoll_event out[1];
    return epoll_wait(ep, out, 1, 2);  // @line:race_epoll
  });
}

__attribute__((noinline)) void race_recv(int i, int fd) {
  timeval tv{0, 2000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  race_loop("race_recv", i, [&] {
    char buf[16];
    return static_cast<int>(recv(fd, buf, sizeof buf, 0));  // @line:race_recv
  });
}

__attribute__((noinline)) void race_sigtimedwait(int i) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN + 1);  // blocked in main, never sent
  race_loop("race_sigwait", i, [&] {
    timespec timeout{0, 2'000'000};
    return sigtimedwait(&set, nullptr, &timeout) < 0 && errno == EAGAIN ? 0 : -1;
  });
}

// vfork leaves the parent thread in uninterruptible sleep until the child
// exits: a thread that cannot reach a ptrace stop for that long. The child
// shares our memory and notes when it exits; the gap between that and vfork
// returning here is how long the thread was kept from running afterwards.
std::atomic<long> g_vfork_child_exit_ns{0};

__attribute__((noinline)) void park_vforker(long ms) {
  named("vforker");
  for (;;) {
    pid_t child = vfork();
    if (child == 0) {
      timespec nap{ms / 1000, (ms % 1000) * 1000000};
      nanosleep(&nap, nullptr);
      g_vfork_child_exit_ns.store(now_ns());
      _exit(0);
    }
    raise_to(g_vfork_late_ns, now_ns() - g_vfork_child_exit_ns.load());  // @line:vforker
    waitpid(child, nullptr, 0);
  }
}

void park_extra(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "extra_%d", i);
  named(name);
  if (i % 2 == 0) {
    std::unique_lock lock(g_cv_mutex);
    g_cv.wait(lock);
  } else {
    fp_nap();  // these need a stop to unwind: a crowd of real ptrace stops
  }
}

void on_usr1(int) {}

__attribute__((noinline)) void park_epoll_signal(int fd) {
  named("epoll_signal");
  int ep = epoll_watching(fd);
  for (;;) {
    epoll_event out[4];
    int n = epoll_wait(ep, out, 4, -1);  // @line:epoll_signal
    if (n < 0 && errno == EINTR) ++g_signal_eintr;
  }
}

void napper(long ms) {
  pthread_setname_np(pthread_self(), "napper");
  for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

void churn() {
  pthread_setname_np(pthread_self(), "churn");
  for (;;) {
    std::thread t([] { std::this_thread::sleep_for(std::chrono::microseconds(200)); });
    t.detach();
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// A connected loopback TCP pair: returns the client side; the server side is
// kept open and never written.
int silent_tcp_peer(int listener, const sockaddr_in& addr) {
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int s = accept(listener, nullptr, nullptr);
  (void)s;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  int extra = 0;
  long exit_after_ms = -1;
  bool with_churn = false;
  long nap_ms = 0;
  int race = 0, spin = 0;
  bool signal_waiter = false;
  int unnamed = 0;
  long vfork_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--race") == 0) race = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--unnamed") == 0) unnamed = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--signal-waiter") == 0) signal_waiter = std::atoi(argv[i + 1]) != 0;
    if (std::strcmp(argv[i], "--spin") == 0) spin = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--vfork-ms") == 0) vfork_ms = std::atol(argv[i + 1]);
    if (std::strcmp(argv[i], "--extra") == 0) extra = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--exit-after-ms") == 0) exit_after_ms = std::atol(argv[i + 1]);
    if (std::strcmp(argv[i], "--churn") == 0) with_churn = std::atoi(argv[i + 1]) != 0;
    if (std::strcmp(argv[i], "--nap-ms") == 0) nap_ms = std::atol(argv[i + 1]);
  }
  // sigwaitinfo and sigtimedwait need their signals blocked everywhere.
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGUSR2);
  sigaddset(&waited, SIGRTMIN + 1);
  pthread_sigmask(SIG_BLOCK, &waited, nullptr);

  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;) pause();
  }

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  listen(listener, 64);
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  int tcp_client = silent_tcp_peer(listener, addr);
  int timeo_client = silent_tcp_peer(listener, addr);
  std::vector<int> race_sockets;
  for (int i = 0; i < race; ++i) race_sockets.push_back(silent_tcp_peer(listener, addr));
  int pipe_a[2], pipe_b[2];
  if (pipe(pipe_a) != 0 || pipe(pipe_b) != 0) return 1;

  std::vector<std::thread> threads;
  threads.emplace_back(park_mutex_holder);
  threads.emplace_back(park_mutex_wait);
  threads.emplace_back(park_cond_wait);
  threads.emplace_back(park_sleep);
  threads.emplace_back(park_fp_sleep);
  threads.emplace_back(park_tcp_recv, tcp_client);
  threads.emplace_back(park_pipe_read, pipe_a[0]);
  threads.emplace_back(park_epoll, pipe_a[0]);
  threads.emplace_back(park_poll, pipe_b[0]);
  threads.emplace_back(park_child_wait, child);
  threads.emplace_back(park_accept, listener);
  threads.emplace_back(park_recv_timeout, timeo_client);
  threads.emplace_back(park_sigwait);
  threads.emplace_back(park_busy);
  for (int i = 0; i < extra; ++i) threads.emplace_back(park_extra, i);
  for (int i = 0; i < race; ++i) {
    threads.emplace_back(race_epoll, i);
    threads.emplace_back(race_recv, i, race_sockets[static_cast<size_t>(i)]);
    threads.emplace_back(race_sigtimedwait, i);
  }
  for (int i = 0; i < spin; ++i) threads.emplace_back(park_spinner, i);
  for (int i = 0; i < unnamed; ++i)
    threads.emplace_back([] {
      ++g_parked;  // no name of its own
      std::unique_lock lock(g_cv_mutex);
      g_cv.wait(lock);
    });
  if (vfork_ms > 0) threads.emplace_back(park_vforker, vfork_ms);
  if (signal_waiter) {
    struct sigaction sa {};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, nullptr);
    threads.emplace_back(park_epoll_signal, pipe_b[0]);
  }
  const int expected = static_cast<int>(threads.size());
  while (g_parked.load() < expected) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let them reach their waits
  if (with_churn) std::thread(churn).detach();
  if (nap_ms > 0) std::thread(napper, nap_ms).detach();
  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);

  if (exit_after_ms >= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(exit_after_ms));
    std::_Exit(0);
  }
  char line[64];
  while (std::fgets(line, sizeof line, stdin)) {
    if (std::strncmp(line, "eintr", 5) == 0) std::printf("eintr %ld\n", g_eintr.load());
    if (std::strncmp(line, "race", 4) == 0)
      std::printf("race waits=%ld max_overrun_us=%ld\n", g_race_waits.load(),
                  g_race_overrun_ns.load() / 1000);
    if (std::strncmp(line, "stall", 5) == 0)
      std::printf("stall max_gap_us=%ld\n", g_busy_gap_ns.exchange(0) / 1000);
    if (std::strncmp(line, "signal_eintr", 12) == 0)
      std::printf("signal_eintr %ld\n", g_signal_eintr.load());
    if (std::strncmp(line, "vfork", 5) == 0)
      std::printf("vfork max_late_us=%ld\n", g_vfork_late_ns.exchange(0) / 1000);
    std::fflush(stdout);
  }
  std::_Exit(0);
}
