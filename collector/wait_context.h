// What a blocked thread's syscall waits on beyond its fd argument, read from
// its arguments, the target's memory and /proc without stopping anything: the
// fds of a poll, ppoll, select or pselect6 array and of an epoll set, and the
// timeout it asked for (with what is left of it when the deadline is
// absolute).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "collector/snapshot.h"
#include "injector/capture_types.h"
#include "injector/memory.h"

namespace stackaudit {

// The fds a poll/select/epoll call watches, as links (at most `cap`; the
// number left out in *more). Empty for other calls.
std::vector<FdLink> watched_fds(pid_t pid, const SyscallInfo& call, Memory& memory, size_t cap,
                                size_t* more);

// The call's timeout; nullopt when it takes none or it cannot be read.
// now_ns(clockid) gives a clock's time for absolute deadlines.
std::optional<WaitTimeout> wait_timeout(const SyscallInfo& call, Memory& memory,
                                        const std::function<int64_t(int)>& now_ns);

// The epoll set of "/proc/PID/fdinfo/EPFD" text: the watched fds, in order.
std::vector<int> parse_epoll_fdinfo(const std::string& text);

// The "pos:" and "flags:" (octal) lines of a /proc/PID/fdinfo/FD text.
std::optional<uint64_t> parse_fdinfo_field(const std::string& text, const char* field, int base);

// Which process holds which pipe: one scan of /proc/*/fd per snapshot (at most
// kMaxFdsScanned links), made when a thread first waits on a pipe. A FIFO,
// known by its path, costs a scan of its own within the same bound.
struct PipeIndex {
  bool built = false;
  bool cut = false;  // the bound was reached: some processes were not looked at
  std::multimap<std::string, std::pair<pid_t, std::string>> holders;  // link -> (pid, fd)
  std::map<std::string, std::string> answers;                         // (link, end) -> text
};
constexpr size_t kMaxFdsScanned = 50000;

// Adds what /proc says about an fd beyond its link: a regular file's
// offset; for a pipe or FIFO, the processes (the target among them) that
// hold it open the other way.
void add_fd_facts(pid_t pid, FdInfo& fd, PipeIndex& pipes);

}  // namespace stackaudit
