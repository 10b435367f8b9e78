// Helpers for tests that start real processes: fixtures and the stackaudit
// binary itself.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "injector/unique_fd.h"

namespace stackaudit::test {

// A child process with its stdin and stdout connected to pipes. Killed with
// SIGKILL (and reaped) when destroyed.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Next line from the child's stdout, without the newline; nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Reads lines until one starts with prefix; returns it.
  std::optional<std::string> wait_for(const std::string& prefix, std::chrono::milliseconds timeout);
  void write_line(const std::string& line);
  // Writes `command`, waits for a line starting with `prefix`, and returns the
  // number right after the prefix, or -1.
  long ask(const std::string& command, const std::string& prefix);
  void kill_and_reap();
  // The process was reaped elsewhere: do not signal its (now reusable) PID.
  void forget() { pid_ = -1; }

 private:
  pid_t pid_ = -1;
  UniqueFd in_;
  UniqueFd out_;
  std::string buffer_;
};

// `stackaudit agent --listen 127.0.0.1:<free port> ARGS...` as a child
// process, with extra environment variables (NAME=VALUE) before it.
class Agent {
 public:
  explicit Agent(std::vector<std::string> args, std::vector<std::string> env = {});
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string scrape();
  // /metrics answers (bounded wait).
  bool serving();
  // Sends a signal and waits (bounded, 15 s) for the exit code: the exit
  // status, -signal when killed, -1000 when it did not end.
  int stop(int sig = SIGTERM);
  // Waits (bounded) for it to end on its own; same codes as stop().
  int wait(std::chrono::milliseconds timeout);
  // Lines it wrote to stdout (its log goes to stderr, which is not kept).
  Child& child() { return *child_; }

 private:
  int port_;
  pid_t pid_;
  std::unique_ptr<Child> child_;
};

struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs a command to completion (bounded by timeout: killed after it).
RunResult run(const std::vector<std::string>& argv,
              std::chrono::milliseconds timeout = std::chrono::seconds(60));

// `stackaudit dump --pid PID --format json`, parsed.
nlohmann::json dump_json(pid_t pid, RunResult* result = nullptr);

// The line of `// @line:TAG` in a source file.
int tagged_line(const std::string& source, const std::string& tag);

// A plain HTTP GET on loopback; nullopt when nothing answers. Status in *status.
std::optional<std::string> http_get(int port, const std::string& path, int* status = nullptr);
// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();
// The value of a metric line "name{labels} value" in a Prometheus text scrape.
std::optional<double> metric_value(const std::string& scrape, const std::string& series);
// The processes whose parent is pid.
std::vector<pid_t> children_of(pid_t pid);
// A process's /proc state letter ('?' when it is gone).
char process_state(pid_t pid);
// TracerPid of a process (0: none; -1: gone).
pid_t tracer_of(pid_t pid);
// No thread of pid in a job stop (T) or ptrace stop (t), and no tracer.
bool nothing_stopped(pid_t pid);
// A process's resident memory, bytes.
uint64_t rss_bytes(pid_t pid);

// The /proc state letter of every thread of pid, by tid.
std::map<pid_t, char> thread_states(pid_t pid);

// Waits until pred() holds or the timeout passes; returns pred().
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(5));

// The thread with this OS name in an audit JSON, or null json.
const nlohmann::json* thread_named(const nlohmann::json& audit, const std::string& name);
const nlohmann::json* thread_with_tid(const nlohmann::json& audit, long tid);
// Whether a frame's function is `function`, possibly qualified ("ns::function").
bool function_is(const nlohmann::json& frame, const std::string& function);
// The first frame whose function is `function` (see function_is), or nullptr.
const nlohmann::json* frame_named(const nlohmann::json& thread, const std::string& function);

// Why commands cannot be started in new mount and PID namespaces here (no
// unshare or chroot, or no right to: it needs CAP_SYS_ADMIN), or "" when they
// can. Tried once, with /bin/true.
std::string namespaces_unavailable();

// The Debian unstable root file system setup.sh makes (make_sid_rootfs):
// $STACKAUDIT_SID_ROOTFS, else /var/cache/stackaudit/sid-rootfs. It has
// python3.13, 3.14 and 3.15 and its own glibc, and doubles as a container's
// root. nullopt when it is missing or commands cannot be started in it
// (namespaces_unavailable()); then *why_missing says what is missing, for
// GTEST_SKIP().
std::optional<std::string> sid_rootfs(std::string* why_missing);

// A command started the way a container runtime starts one: in new mount and
// PID namespaces (`unshare --mount --pid --fork --kill-child`), chrooted into
// `rootfs`; argv names files as the rootfs sees them. Each bind (a host folder,
// then an existing folder inside the rootfs, e.g. /mnt) is bind-mounted first,
// in the new mount namespace only: the rootfs is never written. The target's
// stdin and stdout are io()'s pipes. Target and unshare are killed when this
// is destroyed.
class RootfsChild {
 public:
  RootfsChild(const std::string& rootfs, const std::vector<std::string>& argv,
              const std::vector<std::pair<std::string, std::string>>& binds = {});
  ~RootfsChild();
  RootfsChild(const RootfsChild&) = delete;
  RootfsChild& operator=(const RootfsChild&) = delete;

  // The target's PID as we see it (the host's); -1 when it did not start
  // within 10 s. It is PID 1 of its own namespace.
  pid_t pid();
  Child& io() { return launcher_; }

 private:
  Child launcher_;  // unshare, the target's parent
  pid_t pid_ = 0;
};

// A fresh folder under /tmp, removed with what it holds when destroyed.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Copies a file (mode included); throws on failure.
void copy_file(const std::string& from, const std::string& to);

extern const char* const kStackaudit;
extern const char* const kParkThreads;
extern const char* const kParkThreadsSource;
extern const char* const kPyPark;
extern const char* const kSeccompSleepers;

}  // namespace stackaudit::test

#include <thread>

template <class Pred>
bool stackaudit::test::eventually(Pred pred, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}
