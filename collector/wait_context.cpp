#include "collector/wait_context.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>
#include <string_view>

#include "injector/proc.h"
#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

constexpr int kMaxSelectFds = 1024;  // FD_SETSIZE: what glibc's select can pass
constexpr uint64_t kMaxPollFds = 4096;

struct Timespec64 {
  int64_t sec;
  int64_t nsec;
};

std::optional<double> read_timespec(Memory& memory, uint64_t addr) {
  Timespec64 ts;
  if (!memory.read_exact(addr, &ts, sizeof ts) || ts.sec < 0 || ts.nsec < 0 ||
      ts.nsec >= 1000000000)
    return std::nullopt;
  return static_cast<double>(ts.sec) + static_cast<double>(ts.nsec) / 1e9;
}

// A relative timeout in a timespec (or timeval, `micro`) at addr; 0: none.
std::optional<WaitTimeout> relative(Memory& memory, uint64_t addr, bool micro = false) {
  WaitTimeout t;
  if (addr == 0) {
    t.none = true;
    return t;
  }
  Timespec64 ts;
  if (!memory.read_exact(addr, &ts, sizeof ts) || ts.sec < 0 || ts.nsec < 0 ||
      ts.nsec >= (micro ? 1000000 : 1000000000))
    return std::nullopt;
  t.requested_s = static_cast<double>(ts.sec) + static_cast<double>(ts.nsec) / (micro ? 1e6 : 1e9);
  return t;
}

// An int timeout in milliseconds (poll, epoll_wait): negative waits forever.
WaitTimeout milliseconds(uint64_t arg) {
  WaitTimeout t;
  auto ms = static_cast<int32_t>(arg);
  if (ms < 0)
    t.none = true;
  else
    t.requested_s = ms / 1000.0;
  return t;
}

std::optional<WaitTimeout> absolute(Memory& memory, uint64_t addr, int clock,
                                    const std::function<int64_t(int)>& now_ns) {
  WaitTimeout t;
  if (addr == 0) {
    t.none = true;
    return t;
  }
  auto deadline = read_timespec(memory, addr);
  if (!deadline) return std::nullopt;
  t.remaining_s = *deadline - static_cast<double>(now_ns(clock)) / 1e9;
  return t;
}

void add_link(pid_t pid, int fd, std::vector<FdLink>& out, size_t cap, size_t* more) {
  if (out.size() >= cap) {
    ++*more;
    return;
  }
  if (auto link = proc::read_fd_link(pid, fd)) out.push_back(std::move(*link));
}

}  // namespace

std::optional<uint64_t> parse_fdinfo_field(const std::string& text, const char* field, int base) {
  std::istringstream in(text);
  std::string line;
  size_t len = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, len, field) != 0) continue;
    const char* start = line.c_str() + len;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(start, &end, base);
    if (end == start || errno != 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

namespace {

std::optional<std::string> fd_link(pid_t pid, const char* fd) {
  char buf[512];
  std::string path = "/proc/" + std::to_string(pid) + "/fd/" + fd;
  ssize_t n = readlink(path.c_str(), buf, sizeof buf);
  if (n <= 0 || static_cast<size_t>(n) == sizeof buf) return std::nullopt;
  return std::string(buf, static_cast<size_t>(n));
}

std::optional<uint64_t> access_mode(pid_t pid, const std::string& fd) {
  auto info = proc::read_file("/proc/" + std::to_string(pid) + "/fdinfo/" + fd);
  if (!info) return std::nullopt;
  auto flags = parse_fdinfo_field(*info, "flags:", 8);
  if (!flags) return std::nullopt;
  return *flags & O_ACCMODE;
}

// Every link of every process's fds that `keep` wants, into the index; stops
// at kMaxFdsScanned links.
template <class Keep>
void scan_fds(PipeIndex& pipes, Keep keep) {
  size_t scanned = 0;
  for (pid_t p : proc::list_processes()) {
    UniqueDir dir(("/proc/" + std::to_string(p) + "/fd").c_str());
    if (!dir) continue;
    while (dirent* e = dir.next()) {
      if (e->d_name[0] == '.') continue;
      if (++scanned > kMaxFdsScanned) {
        pipes.cut = true;
        return;
      }
      auto link = fd_link(p, e->d_name);
      if (link && keep(*link)) pipes.holders.emplace(*link, std::make_pair(p, e->d_name));
    }
  }
}

// "written by PID 4242 (producer), PID 4243 (producer)": the processes whose
// fds open `target` the other way from `mode`.
std::string other_end(const PipeIndex& pipes, const std::string& target, uint64_t mode) {
  constexpr size_t kMaxNamed = 4;
  std::vector<std::string> holders;
  std::set<pid_t> named;
  auto [from, to] = pipes.holders.equal_range(target);
  for (auto it = from; it != to; ++it) {
    auto [p, fd] = it->second;
    auto other = access_mode(p, fd);
    if (!other || (*other != O_RDWR && *other == mode) || !named.insert(p).second) continue;
    std::string comm = proc::read_file("/proc/" + std::to_string(p) + "/comm").value_or("");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    holders.push_back("PID " + std::to_string(p) + " (" + comm + ")");
  }
  if (holders.empty()) return pipes.cut ? "not found among the processes looked at" : "";
  std::string text = mode == O_RDONLY ? "written by " : "read by ";
  for (size_t i = 0; i < holders.size() && i < kMaxNamed; ++i) text += (i ? ", " : "") + holders[i];
  if (holders.size() > kMaxNamed)
    text += " and " + std::to_string(holders.size() - kMaxNamed) + " more";
  return text;
}

}  // namespace

void add_fd_facts(pid_t pid, FdInfo& fd, PipeIndex& pipes) {
  if (fd.kind == "file") {
    auto info =
        proc::read_file("/proc/" + std::to_string(pid) + "/fdinfo/" + std::to_string(fd.fd));
    if (info) fd.offset = parse_fdinfo_field(*info, "pos:", 10);
    return;
  }
  if (fd.kind != "pipe" && fd.kind != "fifo") return;
  auto mode = access_mode(pid, std::to_string(fd.fd));
  if (!mode || *mode == O_RDWR) return;
  std::string key = fd.target + '\0' + (*mode == O_RDONLY ? 'r' : 'w');
  auto it = pipes.answers.find(key);
  if (it == pipes.answers.end()) {
    if (fd.kind == "pipe" && !pipes.built) {
      pipes.built = true;
      scan_fds(pipes, [](const std::string& link) { return link.starts_with("pipe:"); });
    } else if (fd.kind == "fifo" && !pipes.holders.count(fd.target)) {
      scan_fds(pipes, [&](const std::string& link) { return link == fd.target; });
    }
    it = pipes.answers.emplace(key, other_end(pipes, fd.target, *mode)).first;
  }
  fd.other_end = it->second;
}

std::vector<int> parse_epoll_fdinfo(const std::string& text) {
  std::vector<int> fds;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("tfd:")) continue;
    int fd = -1;
    if (std::sscanf(line.c_str() + 4, "%d", &fd) == 1 && fd >= 0) fds.push_back(fd);
  }
  return fds;
}

std::vector<FdLink> watched_fds(pid_t pid, const SyscallInfo& call, Memory& memory, size_t cap,
                                size_t* more) {
  std::vector<FdLink> out;
  *more = 0;
  const std::string& n = call.name;
  if (n == "poll" || n == "ppoll") {
    uint64_t count = call.args[1];
    if (count > kMaxPollFds) {
      *more = count;  // too many to read: said, not shown
      return out;
    }
    std::vector<pollfd> fds(count);
    if (count == 0 || !memory.read_exact(call.args[0], fds.data(), count * sizeof(pollfd)))
      return out;
    for (const pollfd& p : fds)
      if (p.fd >= 0) add_link(pid, p.fd, out, cap, more);
  } else if (n == "select" || n == "pselect6") {
    auto nfds = static_cast<int>(call.args[0]);
    if (nfds <= 0 || nfds > kMaxSelectFds) return out;
    std::vector<bool> watched(static_cast<size_t>(nfds));
    size_t bytes = (static_cast<size_t>(nfds) + 63) / 64 * 8;
    for (int set = 1; set <= 3; ++set) {
      if (call.args[set] == 0) continue;
      std::vector<uint8_t> bits(bytes);
      if (!memory.read_exact(call.args[set], bits.data(), bytes)) return {};
      for (int fd = 0; fd < nfds; ++fd)
        if (bits[static_cast<size_t>(fd) / 8] & (1u << (fd % 8)))
          watched[static_cast<size_t>(fd)] = true;
    }
    for (int fd = 0; fd < nfds; ++fd)
      if (watched[static_cast<size_t>(fd)]) add_link(pid, fd, out, cap, more);
  } else if (n == "epoll_wait" || n == "epoll_pwait" || n == "epoll_pwait2") {
    auto text = proc::read_file("/proc/" + std::to_string(pid) + "/fdinfo/" +
                                std::to_string(static_cast<int>(call.args[0])));
    if (!text) return out;
    for (int fd : parse_epoll_fdinfo(*text)) add_link(pid, fd, out, cap, more);
  }
  return out;
}

std::optional<WaitTimeout> wait_timeout(const SyscallInfo& call, Memory& memory,
                                        const std::function<int64_t(int)>& now_ns) {
  const std::string& n = call.name;
  const auto& a = call.args;
  if (n == "poll" || n == "epoll_wait" || n == "epoll_pwait")
    return milliseconds(n == "poll" ? a[2] : a[3]);
  if (n == "ppoll") return relative(memory, a[2]);
  if (n == "epoll_pwait2") return relative(memory, a[3]);
  if (n == "select") return relative(memory, a[4], /*micro=*/true);
  if (n == "pselect6") return relative(memory, a[4]);
  if (n == "nanosleep") return relative(memory, a[0]);
  if (n == "clock_nanosleep") {
    if (a[1] & TIMER_ABSTIME) return absolute(memory, a[2], static_cast<int>(a[0]), now_ns);
    return relative(memory, a[2]);
  }
  if (n == "futex") {
    uint64_t op = a[1] & FUTEX_CMD_MASK;
    int clock = (a[1] & FUTEX_CLOCK_REALTIME) ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    if (op == FUTEX_WAIT) return relative(memory, a[3]);
    if (op == FUTEX_WAIT_BITSET || op == FUTEX_WAIT_REQUEUE_PI)
      return absolute(memory, a[3], clock, now_ns);
    if (op == FUTEX_LOCK_PI) return absolute(memory, a[3], CLOCK_REALTIME, now_ns);
    if (op == FUTEX_LOCK_PI2) return absolute(memory, a[3], clock, now_ns);
  }
  return std::nullopt;
}

}  // namespace stackaudit
