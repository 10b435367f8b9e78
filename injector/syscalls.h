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

// Whether a call that returned EINTR because a stop hit it can be entered
// again with the same arguments as if nothing had happened: its EINTR means it
// did nothing (no byte moved, no event or signal consumed). A timed wait then
// starts its timeout over; the capture only lets that happen to a thread that
// entered the call microseconds before (see PtraceStopper).
bool resumable_after_eintr(long nr);

}  // namespace stackaudit
