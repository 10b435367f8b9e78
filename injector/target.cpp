#include "injector/target.h"

#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "injector/proc.h"
#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

constexpr uint64_t kPfKthread = 0x00200000;  // include/linux/sched.h

std::string pid_text(pid_t pid) {
  return "PID " + std::to_string(pid);
}

// ELFCLASS32 or ELFCLASS64 from the executable's header; 0 when unreadable.
int elf_class(pid_t pid) {
  std::string path = "/proc/" + std::to_string(pid) + "/exe";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  unsigned char ident[EI_NIDENT] = {};
  ssize_t n = ::read(fd.get(), ident, sizeof ident);
  if (n != static_cast<ssize_t>(sizeof ident) || ident[EI_MAG0] != ELFMAG0 ||
      ident[EI_MAG1] != ELFMAG1 || ident[EI_MAG2] != ELFMAG2 || ident[EI_MAG3] != ELFMAG3)
    return 0;
  return ident[EI_CLASS];
}

}  // namespace

std::string permission_hint() {
  std::string hint = "run as root or give stackaudit CAP_SYS_PTRACE";
  int scope = proc::yama_ptrace_scope();
  if (scope == 1)
    hint +=
        " (Yama ptrace_scope is 1: only ancestors may trace; CAP_SYS_PTRACE or "
        "'sysctl kernel.yama.ptrace_scope=0' lifts that)";
  else if (scope == 2)
    hint += " (Yama ptrace_scope is 2: only CAP_SYS_PTRACE may trace)";
  else if (scope == 3)
    hint += " (Yama ptrace_scope is 3: ptrace is disabled until reboot)";
  hint += "; in a container, add --cap-add SYS_PTRACE";
  return hint;
}

ProcessInfo check_target(pid_t pid) {
  using R = TargetError::Reason;
  if (pid <= 0 || !proc::process_exists(pid))
    throw TargetError(R::kNotFound, "no process with " + pid_text(pid) + " exists");
  if (pid == ::getpid())
    throw TargetError(R::kSelf, "stackaudit cannot audit its own process (" + pid_text(pid) + ")");
  auto info = proc::read_process_info(pid);
  auto stat = proc::read_stat(pid, pid);
  if (!info || !stat) throw TargetError(R::kNotFound, pid_text(pid) + " exited");
  if (stat->flags & kPfKthread)
    throw TargetError(R::kKernelThread, pid_text(pid) + " (" + info->comm +
                                            ") is a kernel thread: it has no user-space stack");
  if (stat->state == 'Z' || stat->state == 'X')
    throw TargetError(R::kZombie, pid_text(pid) + " (" + info->comm +
                                      ") is a zombie: it has exited and has no threads left");
  if (info->tracer_pid != 0 && info->tracer_pid != ::getpid()) {
    std::string tracer = pid_text(info->tracer_pid);
    if (auto t = proc::read_process_info(info->tracer_pid)) tracer += " (" + t->comm + ")";
    throw TargetError(R::kAlreadyTraced, pid_text(pid) + " is already traced by " + tracer +
                                             "; detach that tracer first");
  }
  // Syscall numbers, registers and the rules for stopping safely are x86-64's:
  // a 32-bit (i386) process has other numbers for the same calls.
  if (elf_class(pid) == ELFCLASS32)
    throw TargetError(R::kNot64Bit, pid_text(pid) + " (" + info->comm +
                                        ") is a 32-bit process: stackaudit reads x86-64 "
                                        "processes only");
  // /proc/PID/syscall needs the same permission as ptrace (PTRACE_MODE_ATTACH).
  std::string path = "/proc/" + std::to_string(pid) + "/syscall";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd && (errno == EACCES || errno == EPERM))
    throw TargetError(R::kPermission,
                      "permission denied to trace " + pid_text(pid) + ": " + permission_hint());
  if (fd) {
    char buf[256];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    int err = errno;
    if (n < 0 && (err == EACCES || err == EPERM))
      throw TargetError(R::kPermission,
                        "permission denied to trace " + pid_text(pid) + ": " + permission_hint());
  }
  return *info;
}

}  // namespace stackaudit
