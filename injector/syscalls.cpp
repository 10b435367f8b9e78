#include "injector/syscalls.h"

#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <utility>

namespace stackaudit {
namespace {

struct NameEntry {
  long nr;
  std::string_view name;
};

// Regenerate with:
//   grep -E '^#define __NR_' /usr/include/x86_64-linux-gnu/asm/unistd_64.h |
//     awk '{sub("__NR_","",$2); printf "{%s, \"%s\"},\n", $3, $2}'
constexpr NameEntry kNames[] = {
#include "injector/syscall_names_x86_64.inc"
};

struct Behaviour {
  long nr;
  StopEffect effect;
  int fd_arg;
};

// Measured on Linux 6.18 and documented in signal(7) ("Interruption of system
// calls and library functions by stop signals"). Anything blocked in a syscall
// that is not listed here is treated as kEintr.
constexpr Behaviour kBehaviour[] = {
    // Restarted transparently after a stop.
    {SYS_futex, StopEffect::kRestarts, -1},
    {SYS_futex_waitv, StopEffect::kRestarts, -1},
    {SYS_nanosleep, StopEffect::kRestarts, -1},
    {SYS_clock_nanosleep, StopEffect::kRestarts, -1},
    {SYS_restart_syscall, StopEffect::kRestarts, -1},
    {SYS_poll, StopEffect::kRestarts, -1},
    {SYS_ppoll, StopEffect::kRestarts, -1},
    {SYS_select, StopEffect::kRestarts, -1},
    {SYS_pselect6, StopEffect::kRestarts, -1},
    {SYS_wait4, StopEffect::kRestarts, -1},
    {SYS_waitid, StopEffect::kRestarts, -1},
    {SYS_pause, StopEffect::kRestarts, -1},
    {SYS_rt_sigsuspend, StopEffect::kRestarts, -1},
    {SYS_msgrcv, StopEffect::kRestarts, -1},
    {SYS_msgsnd, StopEffect::kRestarts, -1},
    {SYS_flock, StopEffect::kRestarts, 0},
    {SYS_fcntl, StopEffect::kRestarts, 0},
    {SYS_fsync, StopEffect::kRestarts, 0},
    {SYS_fdatasync, StopEffect::kRestarts, 0},
    {SYS_openat, StopEffect::kRestarts, -1},
    {SYS_open, StopEffect::kRestarts, -1},
    {SYS_sched_yield, StopEffect::kRestarts, -1},
    // The parent of a vfork sleeps uninterruptibly until the child execs or
    // exits; a stop is taken after the call returns.
    {SYS_vfork, StopEffect::kRestarts, -1},
    {SYS_pread64, StopEffect::kRestarts, 0},
    {SYS_pwrite64, StopEffect::kRestarts, 0},
    {SYS_preadv, StopEffect::kRestarts, 0},
    {SYS_pwritev, StopEffect::kRestarts, 0},
    // Restart on pipes, files, ttys, eventfds; EINTR on a socket with a timeout.
    {SYS_read, StopEffect::kEintrOnSocket, 0},
    {SYS_write, StopEffect::kEintrOnSocket, 0},
    {SYS_readv, StopEffect::kEintrOnSocket, 0},
    {SYS_writev, StopEffect::kEintrOnSocket, 0},
    {SYS_recvfrom, StopEffect::kEintrOnSocket, 0},
    {SYS_recvmsg, StopEffect::kEintrOnSocket, 0},
    {SYS_recvmmsg, StopEffect::kEintrOnSocket, 0},
    {SYS_sendto, StopEffect::kEintrOnSocket, 0},
    {SYS_sendmsg, StopEffect::kEintrOnSocket, 0},
    {SYS_sendmmsg, StopEffect::kEintrOnSocket, 0},
    {SYS_accept, StopEffect::kEintrOnSocket, 0},
    {SYS_accept4, StopEffect::kEintrOnSocket, 0},
    {SYS_connect, StopEffect::kEintrOnSocket, 0},
    {SYS_sendfile, StopEffect::kEintrOnSocket, 0},
    // What a blocked ioctl does is the driver's choice (KVM_RUN gives EINTR);
    // splice may have a socket at either end.
    {SYS_ioctl, StopEffect::kEintr, 0},
    {SYS_splice, StopEffect::kEintr, 0},
    // Always EINTR (listed for their fd argument; the default is kEintr anyway).
    {SYS_epoll_wait, StopEffect::kEintr, 0},
    {SYS_epoll_pwait, StopEffect::kEintr, 0},
    {SYS_epoll_pwait2, StopEffect::kEintr, 0},
    {SYS_rt_sigtimedwait, StopEffect::kEintr, -1},
    {SYS_semop, StopEffect::kEintr, -1},
    {SYS_semtimedop, StopEffect::kEintr, -1},
    {SYS_io_getevents, StopEffect::kEintr, -1},
    {SYS_io_pgetevents, StopEffect::kEintr, -1},
    {SYS_io_uring_enter, StopEffect::kEintr, 0},
};

const Behaviour* find_behaviour(long nr) {
  for (const auto& b : kBehaviour)
    if (b.nr == nr) return &b;
  return nullptr;
}

}  // namespace

std::string_view syscall_name(long nr) {
  for (const auto& e : kNames)
    if (e.nr == nr) return e.name;
  return {};
}

long syscall_number(std::string_view name) {
  for (const auto& e : kNames)
    if (e.name == name) return e.nr;
  return -1;
}

StopEffect stop_effect(long nr) {
  const Behaviour* b = find_behaviour(nr);
  return b ? b->effect : StopEffect::kEintr;
}

bool resumable_after_eintr(long nr) {
  switch (nr) {
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
    case SYS_rt_sigtimedwait:
    case SYS_semop:
    case SYS_semtimedop:
    case SYS_io_getevents:
    case SYS_io_pgetevents:
    case SYS_mq_timedreceive:
    case SYS_mq_timedsend:
    // Sockets (EINTR with SO_RCVTIMEO/SO_SNDTIMEO): a transfer that moved any
    // byte returns its count, not EINTR. A blocking connect that is entered
    // again waits for the connection already under way.
    case SYS_read:
    case SYS_readv:
    case SYS_write:
    case SYS_writev:
    case SYS_recvfrom:
    case SYS_recvmsg:
    case SYS_recvmmsg:
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_accept:
    case SYS_accept4:
    case SYS_connect:
    case SYS_sendfile:
      return true;
    default:
      // ioctl (the driver decides), splice, io_uring_enter and anything we do
      // not know: the EINTR stands, and is reported.
      return false;
  }
}

int fd_argument(long nr) {
  const Behaviour* b = find_behaviour(nr);
  return b ? b->fd_arg : -1;
}

}  // namespace stackaudit
