// The bundled demo "service" that `stackaudit demo` audits: a small native
// program whose threads sit in each kind of wait, the way a real threaded
// service does. Usage: stackaudit-demo-target READY_FD
// It writes "ready\n" to READY_FD once every thread is parked, then runs until
// killed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace {

std::atomic<int> g_parked{0};
std::mutex g_jobs_mutex;
std::condition_variable g_jobs_ready;
std::deque<std::function<void()>> g_jobs;
std::mutex g_cache_mutex;  // held forever by the cache refresher

void name_thread(const char* name) {
  pthread_setname_np(pthread_self(), name);
}

void pool_worker(int index) {
  char name[16];
  std::snprintf(name, sizeof name, "pool-worker-%d", index);
  name_thread(name);
  std::unique_lock lock(g_jobs_mutex);
  ++g_parked;
  g_jobs_ready.wait(lock, [] { return !g_jobs.empty(); });  // an idle pool worker
}

void cache_refresher() {
  name_thread("cache-refresh");
  std::lock_guard hold(g_cache_mutex);
  ++g_parked;
  std::this_thread::sleep_for(std::chrono::hours(24));  // sleeps holding the lock
}

void cache_reader() {
  name_thread("cache-reader");
  while (g_parked.load() < 4) std::this_thread::yield();  // let the refresher take it
  ++g_parked;
  std::lock_guard wait(g_cache_mutex);  // waits for the refresher forever
}

void db_client(int fd) {
  name_thread("db-client");
  char buf[512];
  ++g_parked;
  recv(fd, buf, sizeof buf, 0);  // the "database" never answers
}

void log_tailer(int fd) {
  name_thread("log-tailer");
  char buf[512];
  ++g_parked;
  read(fd, buf, sizeof buf);  // nobody writes to the pipe
}

void retry_backoff() {
  name_thread("retry-backoff");
  ++g_parked;
  std::this_thread::sleep_for(std::chrono::hours(1));
}

void event_loop(int listen_fd) {
  name_thread("event-loop");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd;
  epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev);
  epoll_event out[8];
  ++g_parked;
  for (;;) {
    int n = epoll_wait(ep, out, 8, -1);
    if (n > 0) {
      int c = accept(listen_fd, nullptr, nullptr);
      if (c >= 0) close(c);
    }
  }
}

void child_reaper(pid_t child) {
  name_thread("child-reaper");
  ++g_parked;
  int status;
  waitpid(child, &status, 0);
}

void cruncher() {
  name_thread("cruncher");
  ++g_parked;
  volatile uint64_t x = 0;
  for (;;) x = x * 6364136223846793005ull + 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s READY_FD\n", argv[0]);
    return 2;
  }
  int ready_fd = std::atoi(argv[1]);
  // The child to wait for: forked before any thread exists, gone with us.
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
  listen(listener, 16);
  socklen_t len = sizeof addr;
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int server_side = accept(listener, nullptr, nullptr);  // kept open, never written
  (void)server_side;
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return 1;

  std::vector<std::thread> threads;
  for (int i = 1; i <= 3; ++i) threads.emplace_back(pool_worker, i);
  threads.emplace_back(cache_refresher);
  threads.emplace_back(cache_reader);
  threads.emplace_back(db_client, client);
  threads.emplace_back(log_tailer, pipe_fds[0]);
  threads.emplace_back(retry_backoff);
  threads.emplace_back(event_loop, listener);
  threads.emplace_back(child_reaper, child);
  threads.emplace_back(cruncher);
  const int expected = static_cast<int>(threads.size());
  while (g_parked.load() < expected) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // into their waits
  if (write(ready_fd, "ready\n", 6) != 6) return 1;
  close(ready_fd);
  for (auto& t : threads) t.join();  // the main thread waits on its workers
  return 0;
}
