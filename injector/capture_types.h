// Plain data produced by the injector: what the OS told us about a process and
// its threads at capture time. No behaviour here; the collector interprets it.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace stackaudit {

// One line of /proc/PID/maps.
struct Mapping {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t offset = 0;
  bool readable = false;
  bool writable = false;
  bool executable = false;
  unsigned dev_major = 0;  // the device of the mapped file, as the kernel printed it
  unsigned dev_minor = 0;
  uint64_t inode = 0;
  // Empty for anonymous mappings; "[stack]", "[vdso]"... A file's path as the
  // kernel resolves it for the reader: a target in a container may name it
  // from its own root or from its mount namespace's, and a file unlinked or
  // replaced since it was mapped ends in " (deleted)".
  std::string path;

  bool contains(uint64_t addr) const { return addr >= start && addr < end; }
};

// /proc/PID/task/TID/syscall, parsed.
struct SyscallState {
  enum class Kind { kUnknown, kRunning, kOutsideSyscall, kInSyscall };
  Kind kind = Kind::kUnknown;
  long nr = -1;
  std::array<uint64_t, 6> args{};
  uint64_t sp = 0;
  uint64_t pc = 0;
  std::string line;  // raw text, compared to detect that a thread did not move
};

// The few fields of /proc/PID/task/TID/stat that we use.
struct TaskStat {
  char state = '?';  // R S D T t Z X I
  std::string comm;
  pid_t ppid = 0;
  uint64_t flags = 0;
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_time_ticks = 0;
};

// /proc/PID/task/TID/schedstat: cpu ns, run-queue wait ns, timeslices.
struct SchedStat {
  uint64_t cpu_ns = 0;
  uint64_t wait_ns = 0;
  uint64_t timeslices = 0;
  bool operator==(const SchedStat&) const = default;
};

// What an fd argument of a blocked syscall points at, from readlink.
struct FdLink {
  int fd = -1;
  std::string target;  // "socket:[123]", "pipe:[45]", "anon_inode:[eventpoll]", "/path"
  uint32_t mode = 0;   // st_mode of what it points at (S_IFIFO for a FIFO, ...)
};

// One socket from /proc/PID/net/{tcp,tcp6,udp,udp6,unix}.
struct SocketEntry {
  uint64_t inode = 0;
  std::string protocol;  // tcp, tcp6, udp, udp6, unix
  std::string local;     // "127.0.0.1:5432", or a unix path
  std::string remote;
  std::string state;  // "ESTABLISHED", "LISTEN", ...
};

enum class CaptureMode {
  kStopped,  // ptrace-stopped for a few microseconds: full registers
  kNonStop,  // never stopped: sp/pc from /proc syscall, stack copied while blocked
  kReused,   // unchanged since a previous capture; its stack was reused
  kFailed,   // could not be captured (reason in RawThread::failure)
};

// Everything captured about one thread.
struct RawThread {
  pid_t tid = 0;
  pid_t ns_tid = 0;  // the tid in the target's own PID namespace; 0 when unknown
  TaskStat stat;
  SyscallState syscall;
  SchedStat schedstat;
  std::string wchan;
  std::vector<FdLink> fds;  // fd arguments of the current syscall, if any

  CaptureMode mode = CaptureMode::kFailed;
  std::string failure;             // why mode == kFailed, or a note (e.g. "exited")
  bool permission_denied = false;  // kFailed because ptrace was refused (EPERM)
  bool vanished = false;           // the thread exited during the capture
  user_regs_struct regs{};         // valid when full_registers, else only rip/rsp
  bool full_registers = false;
  uint64_t stack_start = 0;  // target address of stack[0]
  std::vector<uint8_t> stack;
  // The mapping the stack lives in: memory there beyond the copy belongs to a
  // thread that has run on since, so the unwinder must not read it live.
  uint64_t stack_map_start = 0;
  uint64_t stack_map_end = 0;
  bool eintr_restarted = false;     // our stop interrupted an EINTR-prone wait; it was rewound
  bool eintr_inflicted = false;     // ... and could not be: the program saw EINTR
  bool restart_redirected = false;  // seccomp: resumed by the original call, not restart_syscall
  uint64_t stop_ns = 0;             // how long this thread was held stopped (0 if never)
  uint64_t reach_ns = 0;            // from our interrupt to its stop
  uint64_t look_gap_ns = 0;         // from the stopper's last look at /proc to the interrupt
  int stop_attempts = 0;            // interrupts asked for (more than one: it was slow to stop)
  bool late = false;                // it reached its stop after a first deadline had passed
  bool held = false;                // --consistent: kept stopped until the end of the window
};

// Process-wide facts read around the capture.
struct ProcessInfo {
  pid_t pid = 0;
  // The PID in the target's own PID namespace (the last of NSpid: in its
  // status): the PID a container's tools print. Equal to pid when it shares
  // our namespace; 0 when the kernel does not say.
  pid_t ns_pid = 0;
  pid_t ppid = 0;
  std::string comm;
  std::string exe;
  std::vector<std::string> cmdline;
  char state = '?';
  uint64_t rss_bytes = 0;
  uint64_t threads = 0;
  pid_t tracer_pid = 0;
  uint64_t voluntary_ctxt_switches = 0;
  uint64_t nonvoluntary_ctxt_switches = 0;
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_time_ticks = 0;  // since boot
  uint64_t virtual_memory_bytes = 0;
  int seccomp = -1;  // the main thread's Seccomp: 0 none, 1 strict, 2 filter; -1 unknown
};

// How the stops of one capture were made.
struct StopperInfo {
  std::string priority;       // how the stopper process ran; "" when none was needed
  uint64_t max_stop_us = 0;   // the bound its watchdog enforces
  size_t watchdog_ended = 0;  // stopper processes ended mid-stop during this capture
  size_t retries = 0;         // stops asked for again (a thread slow to reach its stop)
};

// A consistent capture (--consistent): every thread as it was at one instant.
// Threads that run are held stopped until the end of the window; threads
// blocked in the kernel are copied without a stop and checked, while the
// others are held, not to have run since (their CPU time and timeslices).
struct ConsistentCapture {
  bool requested = false;
  bool achieved = false;   // every captured thread is pinned to one instant
  size_t held = 0;         // threads held stopped to the end of the window
  size_t verified = 0;     // threads not stopped, seen not to have run since their copy
  size_t moved = 0;        // threads that ran during the window and could not be pinned
  int passes = 0;          // checks of the unstopped threads (each re-captures those that ran)
  uint64_t window_ns = 0;  // from the first held thread's interrupt to the last let go
  std::string why_not;     // when not achieved
};

struct RawCapture {
  ProcessInfo process;
  std::vector<Mapping> maps;
  std::vector<RawThread> threads;
  std::vector<SocketEntry> sockets;
  int64_t started_unix_ns = 0;  // wall clock, for captured_at
  uint64_t duration_ns = 0;     // monotonic, whole capture
  bool target_exited = false;   // the process went away during the capture
  StopperInfo stopper;
  ConsistentCapture consistent;
};

}  // namespace stackaudit
