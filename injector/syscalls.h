// What we know about x86-64 syscalls: names, which argument is an fd, and
// whether a ptrace stop of a thread blocked in it would make it fail with EINTR.
#pragma once

#include <cstdint>
#include <string_view>

namespace stackaudit {

// What a ptrace stop does to a thread blocked in a syscall.
enum class StopEffect {
  kRestarts,       // the kernel restarts it transparently: safe to stop
  kEintr,          // returns EINTR to the program: never stop such a thread
  kEintrOnSocket,  // EINTR when the fd is a socket with SO_RCVTIMEO/SO_SNDTIMEO,
                   // which cannot be seen from outside: treat sockets as kEintr
};

// "epoll_wait", or "" for an unknown number.
std::string_view syscall_name(long nr);
long syscall_number(std::string_view name);  // -1 when unknown

// Blocked syscalls we have not classified are treated as kEintr: the cost of
// being wrong is a shallower stack, not a broken program.
StopEffect stop_effect(long nr);

// Index of the argument that is a file descriptor, or -1.
int fd_argument(long nr);

// Whether a call that returned EINTR because of our stop can be restarted as
// if nothing happened: it waits without a time limit (a restart would
// otherwise wait its whole timeout again) and the kernel left its arguments
// as they were. Then re-executing it is what the kernel itself does for the
// calls it restarts.
bool restart_is_transparent(long nr, const uint64_t args[6]);

}  // namespace stackaudit
