// A fixture for the wait-context tests (issue 13): threads parked on locks
// whose owners are known, three deadlocks, and waits on fds with timeouts.
//
//   waits
//
// Prints "tid NAME TID" for every thread it starts, then "ready" once they all
// run. The threads:
//   dl2_a, dl2_b         a two-thread mutex deadlock (std::mutex)
//   dl3_a, dl3_b, dl3_c  a three-thread ring of std::mutex
//   lock_holder          holds a std::recursive_mutex (twice), an error-checking
//                        pthread mutex, a std::timed_mutex and a pthread
//                        rwlock for writing; sleeps forever
//   rec_wait             std::recursive_mutex::lock, held by lock_holder
//   errchk_wait          pthread_mutex_lock on the error-checking mutex
//   timed_wait           std::timed_mutex::try_lock_for(1 h)
//   rw_reader            pthread_rwlock_rdlock, a writer (lock_holder) holds it
//   rw_writer            pthread_rwlock_wrlock, the same
//   self_lock            locks a std::mutex it already holds (a deadlock of one)
//   rd_holder            holds a second rwlock for reading; sleeps forever
//   rw_wait_readers      pthread_rwlock_wrlock on that one: readers hold it
// and threads that wait on fds, with timeouts:
//   poll_tcp             poll (no timeout) on a TCP socket whose peer never writes
//   select_pipe          select (3600 s) on the read end of a pipe
//   epoll_set            epoll_wait (no timeout) on a set of a TCP socket, an
//                        eventfd and a timerfd
//   cond_timed           pthread_cond_timedwait, deadline 3600 s after it starts
//   flock_wait           flock(LOCK_EX) on a file another open of it locks,
//                        at offset 10 (it wrote 10 bytes)
//   uring_wait           io_uring_enter waiting for a completion that never comes
//                        (or "uring unavailable" when the kernel refuses a ring)
// "port P" gives the port of the silent peer, "fd NAME FD" the fds watched.
// Lines marked @line:NAME are where each thread blocks.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

namespace {

std::mutex g_print;

void named(const char* name) {
  pthread_setname_np(pthread_self(), name);
  std::lock_guard lock(g_print);
  std::printf("tid %s %ld\n", name, static_cast<long>(syscall(SYS_gettid)));
  std::fflush(stdout);
}

[[noreturn]] void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

// Both (or all three) take their first lock, meet, then take the next one's.
struct Ring {
  explicit Ring(unsigned n) : locks(n) { pthread_barrier_init(&met, nullptr, n); }
  std::vector<std::mutex> locks;
  pthread_barrier_t met;
};

Ring g_ring2(2), g_ring3(3);

__attribute__((noinline)) void deadlock_member(Ring& ring, unsigned i, const char* name) {
  named(name);
  std::lock_guard mine(ring.locks[i]);
  pthread_barrier_wait(&ring.met);
  ring.locks[(i + 1) % ring.locks.size()].lock();  // @line:deadlock
  sleep_forever();
}

std::mutex g_self;

__attribute__((noinline)) void self_lock() {
  named("self_lock");
  g_self.lock();
  g_self.lock();  // @line:self_lock
  sleep_forever();
}

std::recursive_mutex g_recursive;
std::timed_mutex g_timed;
pthread_mutex_t g_errorcheck;
pthread_rwlock_t g_rwlock = PTHREAD_RWLOCK_INITIALIZER;
pthread_rwlock_t g_read_held = PTHREAD_RWLOCK_INITIALIZER;
pthread_barrier_t g_held;  // the holders hold; the waiters may go

__attribute__((noinline)) void lock_holder() {
  named("lock_holder");
  g_recursive.lock();
  g_recursive.lock();
  pthread_mutex_lock(&g_errorcheck);
  g_timed.lock();
  pthread_rwlock_wrlock(&g_rwlock);
  pthread_barrier_wait(&g_held);
  sleep_forever();
}

__attribute__((noinline)) void rd_holder() {
  named("rd_holder");
  pthread_rwlock_rdlock(&g_read_held);
  pthread_barrier_wait(&g_held);
  sleep_forever();
}

__attribute__((noinline)) void rec_wait() {
  named("rec_wait");
  pthread_barrier_wait(&g_held);
  g_recursive.lock();  // @line:rec_wait
  sleep_forever();
}

__attribute__((noinline)) void errchk_wait() {
  named("errchk_wait");
  pthread_barrier_wait(&g_held);
  pthread_mutex_lock(&g_errorcheck);  // @line:errchk_wait
  sleep_forever();
}

__attribute__((noinline)) void timed_wait() {
  named("timed_wait");
  pthread_barrier_wait(&g_held);
  if (g_timed.try_lock_for(std::chrono::hours(1)))  // @line:timed_wait
    sleep_forever();
}

__attribute__((noinline)) void rw_reader() {
  named("rw_reader");
  pthread_barrier_wait(&g_held);
  pthread_rwlock_rdlock(&g_rwlock);  // @line:rw_reader
  sleep_forever();
}

__attribute__((noinline)) void rw_writer() {
  named("rw_writer");
  pthread_barrier_wait(&g_held);
  pthread_rwlock_wrlock(&g_rwlock);  // @line:rw_writer
  sleep_forever();
}

__attribute__((noinline)) void rw_wait_readers() {
  named("rw_wait_readers");
  pthread_barrier_wait(&g_held);
  pthread_rwlock_wrlock(&g_read_held);  // @line:rw_wait_readers
  sleep_forever();
}

// The silent peer: a listening socket nobody accepts from; connections to it
// complete in its backlog and never see a byte.
int g_listener = -1;
sockaddr_in g_peer{};

int connect_to_peer() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&g_peer), sizeof g_peer) != 0) return -1;
  return fd;
}

void say_fd(const char* name, int fd) {
  std::lock_guard lock(g_print);
  std::printf("fd %s %d\n", name, fd);
  std::fflush(stdout);
}

__attribute__((noinline)) void poll_tcp() {
  named("poll_tcp");
  pollfd p{connect_to_peer(), POLLIN, 0};
  say_fd("poll_tcp", p.fd);
  poll(&p, 1, -1);  // @line:poll_tcp
  sleep_forever();
}

__attribute__((noinline)) void select_pipe() {
  named("select_pipe");
  int ends[2];
  if (pipe(ends) != 0) return;
  say_fd("select_pipe", ends[0]);
  fd_set readable;
  FD_ZERO(&readable);
  FD_SET(ends[0], &readable);
  timeval timeout{3600, 0};
  select(ends[0] + 1, &readable, nullptr, nullptr, &timeout);  // @line:select_pipe
  sleep_forever();
}

__attribute__((noinline)) void epoll_set() {
  named("epoll_set");
  int ep = epoll_create1(0);
  int sock = connect_to_peer();
  int event = eventfd(0, 0);
  int timer = timerfd_create(CLOCK_MONOTONIC, 0);
  itimerspec in_an_hour{{0, 0}, {3600, 0}};
  timerfd_settime(timer, 0, &in_an_hour, nullptr);
  for (int fd : {sock, event, timer}) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }
  say_fd("epoll_sock", sock);
  say_fd("epoll_event", event);
  say_fd("epoll_timer", timer);
  epoll_event got;
  epoll_wait(ep, &got, 1, -1);  // @line:epoll_set
  sleep_forever();
}

pthread_mutex_t g_cond_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;

__attribute__((noinline)) void cond_timed() {
  named("cond_timed");
  timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 3600;
  pthread_mutex_lock(&g_cond_mutex);
  pthread_cond_timedwait(&g_cond, &g_cond_mutex, &deadline);  // @line:cond_timed
  pthread_mutex_unlock(&g_cond_mutex);
  sleep_forever();
}

__attribute__((noinline)) void flock_wait() {
  named("flock_wait");
  char path[] = "/tmp/stackaudit-waits-XXXXXX";
  int holder = mkstemp(path);
  int fd = open(path, O_RDWR);
  unlink(path);
  if (holder < 0 || fd < 0 || write(fd, "0123456789", 10) != 10) return;
  flock(holder, LOCK_EX);  // another open file description: the locks conflict
  say_fd("flock_wait", fd);
  flock(fd, LOCK_EX);  // @line:flock_wait
  sleep_forever();
}

__attribute__((noinline)) void uring_wait() {
  named("uring_wait");
  io_uring_params params{};
  int ring = static_cast<int>(syscall(SYS_io_uring_setup, 4, &params));
  if (ring < 0) {
    std::lock_guard lock(g_print);
    std::printf("uring unavailable\n");
    std::fflush(stdout);
    sleep_forever();
  }
  say_fd("uring_wait", ring);
  syscall(SYS_io_uring_enter, ring, 0, 1, IORING_ENTER_GETEVENTS, nullptr, 0);  // @line:uring_wait
  sleep_forever();
}

}  // namespace

int main() {
  g_listener = socket(AF_INET, SOCK_STREAM, 0);
  g_peer.sin_family = AF_INET;
  g_peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof g_peer;
  if (bind(g_listener, reinterpret_cast<sockaddr*>(&g_peer), sizeof g_peer) != 0 ||
      listen(g_listener, 16) != 0 ||
      getsockname(g_listener, reinterpret_cast<sockaddr*>(&g_peer), &len) != 0)
    return 1;
  std::printf("port %d\n", ntohs(g_peer.sin_port));
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_init(&g_errorcheck, &attr);
  std::vector<void (*)()> waiters = {rec_wait,  errchk_wait, timed_wait,
                                     rw_reader, rw_writer,   rw_wait_readers};
  pthread_barrier_init(&g_held, nullptr, static_cast<unsigned>(waiters.size() + 2));
  std::vector<std::thread> threads;
  threads.emplace_back(lock_holder);
  threads.emplace_back(rd_holder);
  threads.emplace_back(self_lock);
  for (auto* w : waiters) threads.emplace_back(w);
  for (auto* w : {poll_tcp, select_pipe, epoll_set, cond_timed, uring_wait, flock_wait})
    threads.emplace_back(w);
  threads.emplace_back(deadlock_member, std::ref(g_ring2), 0u, "dl2_a");
  threads.emplace_back(deadlock_member, std::ref(g_ring2), 1u, "dl2_b");
  threads.emplace_back(deadlock_member, std::ref(g_ring3), 0u, "dl3_a");
  threads.emplace_back(deadlock_member, std::ref(g_ring3), 1u, "dl3_b");
  threads.emplace_back(deadlock_member, std::ref(g_ring3), 2u, "dl3_c");
  {
    std::lock_guard lock(g_print);
    std::printf("ready\n");
    std::fflush(stdout);
  }
  sleep_forever();
}
