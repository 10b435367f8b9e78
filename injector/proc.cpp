#include "injector/proc.h"

#include "injector/unique_fd.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace stackaudit::proc {
namespace {

std::string task_path(pid_t pid, pid_t tid, const char* file) {
  return "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/" + file;
}

std::string pid_path(pid_t pid, const char* file) {
  return "/proc/" + std::to_string(pid) + "/" + file;
}

uint64_t parse_u64(std::string_view s, int base = 10) {
  uint64_t v = 0;
  if (base == 16 && s.starts_with("0x")) s.remove_prefix(2);
  std::from_chars(s.data(), s.data() + s.size(), v, base);
  return v;
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

std::optional<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool process_exists(pid_t pid) {
  return ::access(pid_path(pid, "stat").c_str(), F_OK) == 0;
}

namespace {

// The numeric entries of a /proc directory (processes, tasks), sorted.
std::vector<pid_t> numeric_entries(const std::string& path) {
  std::vector<pid_t> ids;
  UniqueDir dir(path.c_str());
  if (!dir) return ids;
  while (dirent* e = dir.next()) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    ids.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

std::vector<pid_t> list_tasks(pid_t pid) {
  return numeric_entries(pid_path(pid, "task"));
}

std::optional<TaskStat> parse_stat(const std::string& text) {
  // comm may contain spaces and parentheses: it ends at the *last* ')'.
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  TaskStat st;
  st.comm = text.substr(open + 1, close - open - 1);
  auto f = split_ws(std::string_view(text).substr(close + 1));
  // f[0] is field 3 (state); field N is f[N - 3].
  if (f.size() < 20) return std::nullopt;
  st.state = f[0].empty() ? '?' : f[0][0];
  st.ppid = static_cast<pid_t>(parse_u64(f[4 - 3]));
  st.flags = parse_u64(f[9 - 3]);
  st.utime_ticks = parse_u64(f[14 - 3]);
  st.stime_ticks = parse_u64(f[15 - 3]);
  st.start_time_ticks = parse_u64(f[22 - 3]);
  return st;
}

std::optional<TaskStat> read_stat(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "stat"));
  if (!text) return std::nullopt;
  return parse_stat(*text);
}

std::optional<SyscallState> parse_syscall(const std::string& text) {
  SyscallState s;
  s.line = text;
  while (!s.line.empty() && s.line.back() == '\n') s.line.pop_back();
  auto f = split_ws(s.line);
  if (f.empty()) return std::nullopt;
  if (f[0] == "running") {
    s.kind = SyscallState::Kind::kRunning;
    return s;
  }
  if (f[0] == "-1" && f.size() >= 3) {
    s.kind = SyscallState::Kind::kOutsideSyscall;
    s.sp = parse_u64(f[1], 16);
    s.pc = parse_u64(f[2], 16);
    return s;
  }
  if (f.size() < 9) return std::nullopt;
  s.kind = SyscallState::Kind::kInSyscall;
  s.nr = static_cast<long>(parse_u64(f[0]));
  for (size_t i = 0; i < 6; ++i) s.args[i] = parse_u64(f[1 + i], 16);
  s.sp = parse_u64(f[7], 16);
  s.pc = parse_u64(f[8], 16);
  return s;
}

std::optional<SyscallState> read_syscall(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "syscall"));
  if (!text) return std::nullopt;
  return parse_syscall(*text);
}

std::optional<SchedStat> parse_schedstat(const std::string& text) {
  auto f = split_ws(text);
  if (f.size() < 3) return std::nullopt;
  return SchedStat{parse_u64(f[0]), parse_u64(f[1]), parse_u64(f[2])};
}

std::optional<SchedStat> read_schedstat(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "schedstat"));
  if (!text) return std::nullopt;
  return parse_schedstat(*text);
}

std::string read_wchan(pid_t pid, pid_t tid) {
  auto text = read_file(task_path(pid, tid, "wchan"));
  if (!text || *text == "0") return {};
  return *text;
}

int parse_seccomp(const std::string& status) {
  auto at = status.find("\nSeccomp:");
  if (at == std::string::npos) return -1;
  auto f = split_ws(std::string_view(status).substr(at + 9, 16));
  return f.empty() ? -1 : static_cast<int>(parse_u64(f[0]));
}

pid_t parse_ns_pid(const std::string& status) {
  size_t at = status.starts_with("NSpid:") ? 0 : status.find("\nNSpid:");
  if (at == std::string::npos) return 0;
  at += status[at] == '\n' ? 7 : 6;
  auto f = split_ws(std::string_view(status).substr(at, status.find('\n', at) - at));
  return f.empty() ? 0 : static_cast<pid_t>(parse_u64(f.back()));
}

pid_t read_ns_tid(pid_t pid, pid_t tid) {
  auto status = read_file(task_path(pid, tid, "status"));
  return status ? parse_ns_pid(*status) : 0;
}

int read_seccomp(pid_t pid, pid_t tid) {
  auto status = read_file(task_path(pid, tid, "status"));
  if (!status) return -1;
  return parse_seccomp(*status);
}

void parse_status(const std::string& text, ProcessInfo& info) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string_view key(line.data(), colon);
    auto f = split_ws(std::string_view(line).substr(colon + 1));
    if (f.empty()) continue;
    if (key == "VmRSS")
      info.rss_bytes = parse_u64(f[0]) * 1024;
    else if (key == "VmSize")
      info.virtual_memory_bytes = parse_u64(f[0]) * 1024;
    else if (key == "Threads")
      info.threads = parse_u64(f[0]);
    else if (key == "TracerPid")
      info.tracer_pid = static_cast<pid_t>(parse_u64(f[0]));
    else if (key == "voluntary_ctxt_switches")
      info.voluntary_ctxt_switches = parse_u64(f[0]);
    else if (key == "nonvoluntary_ctxt_switches")
      info.nonvoluntary_ctxt_switches = parse_u64(f[0]);
    else if (key == "Seccomp")
      info.seccomp = static_cast<int>(parse_u64(f[0]));
    else if (key == "NSpid")
      info.ns_pid = static_cast<pid_t>(parse_u64(f.back()));
  }
}

std::vector<std::string> read_cmdline(pid_t pid) {
  auto text = read_file(pid_path(pid, "cmdline"));
  return text ? parse_cmdline(*text) : std::vector<std::string>{};
}

std::vector<std::string> parse_cmdline(const std::string& text) {
  std::vector<std::string> args;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find('\0', i);
    if (j == std::string::npos) j = text.size();
    args.push_back(text.substr(i, j - i));
    i = j + 1;
  }
  return args;
}

std::optional<ProcessInfo> read_process_info(pid_t pid) {
  auto status = read_file(pid_path(pid, "status"));
  auto stat_text = read_file(pid_path(pid, "stat"));
  if (!status || !stat_text) return std::nullopt;
  ProcessInfo info;
  info.pid = pid;
  if (auto st = parse_stat(*stat_text)) {
    info.comm = st->comm;
    info.state = st->state;
    info.ppid = st->ppid;
    info.utime_ticks = st->utime_ticks;
    info.stime_ticks = st->stime_ticks;
    info.start_time_ticks = st->start_time_ticks;
  }
  parse_status(*status, info);
  char exe[4096];
  ssize_t n = ::readlink(pid_path(pid, "exe").c_str(), exe, sizeof exe - 1);
  if (n > 0) info.exe.assign(exe, static_cast<size_t>(n));
  info.cmdline = read_cmdline(pid);
  return info;
}

std::vector<Mapping> parse_maps(const std::string& text) {
  std::vector<Mapping> maps;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    // start-end perms offset dev inode path
    auto f = split_ws(line);
    if (f.size() < 5) continue;
    Mapping m;
    auto dash = f[0].find('-');
    if (dash == std::string_view::npos) continue;
    m.start = parse_u64(f[0].substr(0, dash), 16);
    m.end = parse_u64(f[0].substr(dash + 1), 16);
    m.readable = f[1].size() > 0 && f[1][0] == 'r';
    m.writable = f[1].size() > 1 && f[1][1] == 'w';
    m.executable = f[1].size() > 2 && f[1][2] == 'x';
    m.offset = parse_u64(f[2], 16);
    if (auto colon = f[3].find(':'); colon != std::string_view::npos) {
      m.dev_major = static_cast<unsigned>(parse_u64(f[3].substr(0, colon), 16));
      m.dev_minor = static_cast<unsigned>(parse_u64(f[3].substr(colon + 1), 16));
    }
    m.inode = parse_u64(f[4]);
    if (f.size() >= 6) {
      // The path is everything after the inode field (it may contain spaces).
      size_t pos = static_cast<size_t>(f[5].data() - line.data());
      m.path = line.substr(pos);
    }
    maps.push_back(std::move(m));
  }
  return maps;
}

std::vector<Mapping> read_maps(pid_t pid) {
  auto text = read_file(pid_path(pid, "maps"));
  if (!text) return {};
  return parse_maps(*text);
}

std::optional<FdLink> read_fd_link(pid_t pid, int fd) {
  char buf[4096];
  std::string path = pid_path(pid, "fd/") + std::to_string(fd);
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  FdLink link{fd, std::string(buf, static_cast<size_t>(n)), 0};
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) link.mode = st.st_mode;
  return link;
}

namespace {

// "0100007F:1F90" (little-endian hex words as the kernel prints them).
std::string format_inet(std::string_view hex, bool v6) {
  auto colon = hex.find(':');
  if (colon == std::string_view::npos) return std::string(hex);
  std::string_view addr = hex.substr(0, colon);
  unsigned port = static_cast<unsigned>(parse_u64(hex.substr(colon + 1), 16));
  char text[INET6_ADDRSTRLEN] = "?";
  if (!v6 && addr.size() == 8) {
    in_addr a{static_cast<in_addr_t>(parse_u64(addr, 16))};
    ::inet_ntop(AF_INET, &a, text, sizeof text);
    return std::string(text) + ":" + std::to_string(port);
  }
  if (v6 && addr.size() == 32) {
    in6_addr a{};
    for (int w = 0; w < 4; ++w) {
      uint32_t word = static_cast<uint32_t>(parse_u64(addr.substr(w * 8, 8), 16));
      std::memcpy(&a.s6_addr[w * 4], &word, 4);
    }
    ::inet_ntop(AF_INET6, &a, text, sizeof text);
    return "[" + std::string(text) + "]:" + std::to_string(port);
  }
  return std::string(hex);
}

const char* tcp_state_name(unsigned st) {
  static const char* const kNames[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
                                       "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
                                       "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};
  return st < std::size(kNames) ? kNames[st] : "?";
}

}  // namespace

void parse_inet_sockets(const std::string& text, const std::string& protocol,
                        std::vector<SocketEntry>& out) {
  bool v6 = protocol.ends_with('6');
  bool tcp = protocol.starts_with("tcp");
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
    auto f = split_ws(line);
    if (f.size() < 10) continue;
    SocketEntry e;
    e.protocol = protocol;
    e.local = format_inet(f[1], v6);
    e.remote = format_inet(f[2], v6);
    unsigned st = static_cast<unsigned>(parse_u64(f[3], 16));
    e.state = tcp ? tcp_state_name(st) : (st == 1 ? "ESTABLISHED" : "UNCONN");
    e.inode = parse_u64(f[9]);
    out.push_back(std::move(e));
  }
}

void parse_unix_sockets(const std::string& text, std::vector<SocketEntry>& out) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    // Num RefCount Protocol Flags Type St Inode [Path]
    auto f = split_ws(line);
    if (f.size() < 7) continue;
    SocketEntry e;
    e.protocol = "unix";
    e.inode = parse_u64(f[6]);
    // The kernel prints the path raw after one space: it may hold spaces.
    size_t path_at = static_cast<size_t>(f[6].data() - line.data()) + f[6].size() + 1;
    if (f.size() >= 8) e.local = line.substr(path_at);
    unsigned st = static_cast<unsigned>(parse_u64(f[5], 16));
    e.state = st == 3 ? "CONNECTED" : (st == 1 ? "UNCONNECTED" : "LISTEN?");
    out.push_back(std::move(e));
  }
}

std::vector<SocketEntry> read_sockets(pid_t pid) {
  std::vector<SocketEntry> out;
  for (const char* p : {"tcp", "tcp6", "udp", "udp6"}) {
    if (auto text = read_file(pid_path(pid, "net/") + p)) parse_inet_sockets(*text, p, out);
  }
  if (auto text = read_file(pid_path(pid, "net/unix"))) parse_unix_sockets(*text, out);
  return out;
}

std::vector<pid_t> list_processes() {
  return numeric_entries("/proc");
}

size_t count_fds(pid_t pid) {
  size_t n = 0;
  UniqueDir dir(pid_path(pid, "fd").c_str());
  if (!dir) return 0;
  while (dirent* e = dir.next())
    if (e->d_name[0] != '.') ++n;
  return n;
}

uint64_t max_fds(pid_t pid) {
  auto text = read_file(pid_path(pid, "limits"));
  if (!text) return 0;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("Max open files")) continue;
    auto f = split_ws(std::string_view(line).substr(14));
    return f.empty() ? 0 : parse_u64(f[0]);
  }
  return 0;
}

uint64_t boot_time_seconds() {
  auto text = read_file("/proc/stat");
  if (!text) return 0;
  auto at = text->find("\nbtime ");
  return at == std::string::npos ? 0 : parse_u64(std::string_view(*text).substr(at + 7, 20));
}

long clock_ticks_per_second() {
  return ::sysconf(_SC_CLK_TCK);
}

int yama_ptrace_scope() {
  auto text = read_file("/proc/sys/kernel/yama/ptrace_scope");
  if (!text || text->empty()) return -1;
  return std::atoi(text->c_str());
}

}  // namespace stackaudit::proc
