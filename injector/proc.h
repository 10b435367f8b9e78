// Readers for /proc. Every function here reads exactly one /proc file; none
// stops or signals the target. Missing files (a thread that exited) give
// std::nullopt or an empty result, never an exception.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "injector/capture_types.h"

namespace stackaudit::proc {

// Reads a small /proc file whole with plain open/read (no iostreams).
std::optional<std::string> read_file(const std::string& path);

bool process_exists(pid_t pid);
std::vector<pid_t> list_tasks(pid_t pid);

std::optional<TaskStat> read_stat(pid_t pid, pid_t tid);
std::optional<SyscallState> read_syscall(pid_t pid, pid_t tid);
std::optional<SchedStat> read_schedstat(pid_t pid, pid_t tid);
std::string read_wchan(pid_t pid, pid_t tid);
std::optional<ProcessInfo> read_process_info(pid_t pid);
// The thread's id in the innermost PID namespace it belongs to (the last field
// of NSpid: in its status); 0 when unknown.
pid_t read_ns_tid(pid_t pid, pid_t tid);
// A thread's seccomp mode (Seccomp: in its status): 0 none, 1 strict, 2 filter; -1 unknown.
int read_seccomp(pid_t pid, pid_t tid);
std::vector<Mapping> read_maps(pid_t pid);
std::optional<FdLink> read_fd_link(pid_t pid, int fd);
std::vector<SocketEntry> read_sockets(pid_t pid);

// Parsers, public so the tests and the fuzzers (fuzz/) can feed canned text.
std::optional<TaskStat> parse_stat(const std::string& text);
std::optional<SyscallState> parse_syscall(const std::string& text);
std::optional<SchedStat> parse_schedstat(const std::string& text);
std::vector<Mapping> parse_maps(const std::string& text);
void parse_inet_sockets(const std::string& text, const std::string& protocol,
                        std::vector<SocketEntry>& out);
void parse_unix_sockets(const std::string& text, std::vector<SocketEntry>& out);
// /proc/PID/status: the memory, thread, tracer, context-switch, seccomp and
// namespace PID fields of `info` (the others are left as they are).
void parse_status(const std::string& text, ProcessInfo& info);
// The last id of the NSpid: field of a status file, as read_ns_tid returns it.
pid_t parse_ns_pid(const std::string& status);
// The Seccomp: field of a status file, as read_seccomp returns it.
int parse_seccomp(const std::string& status);
// /proc/PID/cmdline: the NUL-separated arguments.
std::vector<std::string> parse_cmdline(const std::string& text);
// A process's arguments; empty when it is gone (or a kernel thread).
std::vector<std::string> read_cmdline(pid_t pid);

// Every process on the machine (the numeric entries of /proc).
std::vector<pid_t> list_processes();
// Open file descriptors of a process, and its RLIMIT_NOFILE soft limit (0 if unknown).
size_t count_fds(pid_t pid);
uint64_t max_fds(pid_t pid);
// Boot time, seconds since the epoch (btime in /proc/stat), and clock ticks per second.
uint64_t boot_time_seconds();
long clock_ticks_per_second();

// /proc/sys/kernel/yama/ptrace_scope, or -1 when Yama is not there.
int yama_ptrace_scope();

}  // namespace stackaudit::proc
