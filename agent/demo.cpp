#include "agent/demo.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "agent/atomic_file.h"
#include "agent/audit_json.h"
#include "agent/dump.h"
#include "agent/exit_codes.h"
#include "agent/text_report.h"
#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

std::string demo_target_path() {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "stackaudit-demo-target";
  std::string dir(self, static_cast<size_t>(n));
  return dir.substr(0, dir.rfind('/')) + "/stackaudit-demo-target";
}

// Stops the demo target however the audit ends.
class DemoTarget {
 public:
  DemoTarget() {
    std::string path = demo_target_path();
    if (::access(path.c_str(), X_OK) != 0)
      throw UserError{kExitUsage, "the demo target " + path +
                                      " is missing; build it with 'cmake --build build'"};
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw UserError{kExitUsage, "cannot create a pipe for the demo target"};
    UniqueFd ready_end(fds[0]), child_end(fds[1]);
    pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // The demo service ends with us, however we end (a closed pipe, Ctrl-C,
      // SIGKILL): the death signal is kept across exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(0);
      ::fcntl(fds[1], F_SETFD, 0);  // the one descriptor the target keeps
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);  // do not pass our blocked SIGCHLD on
      std::string fd = std::to_string(fds[1]);
      ::execl(path.c_str(), path.c_str(), fd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    child_end.reset();
    pollfd p{ready_end.get(), POLLIN, 0};
    char buf[16] = {};
    bool ready = ::poll(&p, 1, 10000) == 1 && ::read(ready_end.get(), buf, sizeof buf) > 0;
    if (!ready) {
      stop();
      throw UserError{kExitTarget, "the demo target did not start"};
    }
  }
  ~DemoTarget() { stop(); }
  pid_t pid() const { return pid_; }

 private:
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }
  pid_t pid_ = 0;
};

}  // namespace

int run_demo() {
  DemoTarget target;
  std::printf(
      "Started the demo target, PID %d: a small threaded service with threads in a\n"
      "worker pool, a contended lock, a socket, a pipe, a sleep, an epoll loop, a\n"
      "child wait and a busy loop. Auditing it:\n\n",
      target.pid());
  Snapshot snapshot = audit_process(target.pid(), RuleSet::builtin());
  std::string report = text_report(snapshot);
  std::fwrite(report.data(), 1, report.size(), stdout);
  try {
    AtomicFile file("audit.json");
    write_audit_json(snapshot, [&](std::string_view text) { file.write(text); });
    file.commit();
  } catch (const std::runtime_error& e) {
    throw UserError{kExitUsage, e.what()};
  }
  std::printf(
      "\nWrote audit.json (schema stackaudit.audit/v1). Audit your own process with:\n"
      "  stackaudit dump --pid PID [--format json -o audit.json]\n");
  return audit_exit_code(snapshot);
}

}  // namespace stackaudit
