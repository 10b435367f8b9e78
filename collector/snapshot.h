// The understood snapshot: what the collector makes of a raw capture, and what
// the agent prints, exports and compares. Plain data.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace stackaudit {

struct Frame {
  enum class Kind { kNative, kPython };
  Kind kind = Kind::kNative;
  std::string function;  // demangled, without the parameter list; "" when unknown
  std::string module;    // basename of the ELF module
  std::string module_path;
  std::string file;  // source file, when debug info has it
  int line = 0;
  bool inlined = false;  // an inlined call; the next frame is the function it was inlined into
  uint64_t ip = 0;
  uint64_t module_offset = 0;  // ip relative to the module's load address
  int64_t interpreter = 0;     // a Python frame's interpreter id (0: the main interpreter)
  uint64_t sp = 0;             // a native frame's stack pointer, 0 when unknown (not reported)
  bool coroutine = false;      // a Python frame of a coroutine or generator (not reported)
  bool frame_pointer = false;  // found along the frame-pointer chain (code without unwind tables)
};

struct FdInfo {
  int fd = -1;
  std::string kind;                // socket, pipe, fifo, file, tty, epoll, eventfd, ...
  std::string target;              // the readlink text
  std::string detail;              // "tcp 127.0.0.1:40312 -> 127.0.0.1:5432 ESTABLISHED", a path...
  std::optional<uint64_t> offset;  // a regular file's position (/proc/PID/fdinfo pos)
  // A pipe or FIFO: the processes that hold its other end, "written by PID
  // 4242 (producer)"; "" when none is visible or not looked for.
  std::string other_end;
};

// The timeout of a blocked call: none (it waits until woken), a relative one
// asked for (poll's 100 ms, nanosleep's 3600 s), or an absolute deadline, of
// which what is left is known (a timed condition wait, clock_nanosleep with
// TIMER_ABSTIME).
struct WaitTimeout {
  bool none = false;                  // no timeout: it waits until woken
  std::optional<double> requested_s;  // a relative timeout, as asked for
  std::optional<double> remaining_s;  // an absolute deadline: seconds left (< 0: overdue)
};

struct SyscallInfo {
  long nr = -1;
  std::string name;
  std::array<uint64_t, 6> args{};
  std::optional<FdInfo> fd;
  // poll, ppoll, select, pselect6: the fds of its array or sets; epoll_wait:
  // the epoll set's (/proc/PID/fdinfo). At most kMaxWatched; watched_more
  // says how many more.
  static constexpr size_t kMaxWatched = 16;
  std::vector<FdInfo> watched;
  size_t watched_more = 0;
  std::optional<WaitTimeout> timeout;
};

// The thread that holds a lock.
struct LockOwner {
  pid_t tid = 0;      // ours (Thread::tid); the target's own when it is not a thread of it now
  std::string name;   // its name as the report shows it; "" when it is gone
  bool alive = true;  // false: no thread of the process has that id (it ended holding the lock)
};

// The lock a blocked thread waits for, read from the target's memory.
struct LockInfo {
  std::string kind;                // pthread_mutex pthread_rwlock python_rlock python_lock
  uint64_t address = 0;            // the lock's address in the target
  std::optional<LockOwner> owner;  // unset when no owner is recorded or readable
  std::string detail;  // "held by \"lock_holder\" (tid 4242), locked 2 times", "held for reading
                       // by 2 threads (readers are not recorded)"
};

struct Blocking {
  std::string category;       // lock condition queue sleep socket file io poll process futex other
  std::string primitive;      // the matched frame's function or the syscall
  std::optional<Frame> site;  // innermost frame of the user's own code
  bool idle = false;          // a known "waiting for work" pattern
  std::string rule;           // which rule matched: "builtin:<pattern>" or "FILE:LINE"
  bool blocks_event_loop = false;  // an asyncio loop's thread, blocked outside its selector
  std::optional<Frame> coroutine;  // then: the coroutine (or callback) the loop was running
  std::optional<LockInfo> lock;    // a lock waiter: the lock and who holds it, when readable
  std::string detail;  // what the library waited in says it is: "sqlite database is locked..."
};

// What the interpreter says about a thread of a Python process.
struct PythonThread {
  std::string thread_name;  // threading.Thread.name; "" when not a threading.Thread
  bool holds_gil = false;
  bool waits_for_gil = false;
  uint64_t tstate = 0;
  bool truncated = false;  // its Python frames could not all be read
};

struct Thread {
  pid_t tid = 0;
  pid_t ns_tid = 0;   // the tid in the target's own PID namespace; 0 when unknown
  std::string name;   // OS thread name (comm)
  std::string state;  // running sleeping disk_sleep stopped zombie
  std::string wchan;  // kernel wait function
  std::optional<SyscallInfo> syscall;
  std::optional<Blocking> blocking;
  std::optional<PythonThread> python;  // set for threads with a Python thread state
  std::vector<Frame> frames;           // frames[0] is innermost
  bool truncated = false;
  std::string captured;  // stopped nonstop reused failed
  std::string note;      // why failed / truncated
  uint64_t stop_ns = 0;  // how long it was held stopped (0 if not stopped)
  uint64_t timeslices =
      0;  // times it was switched onto a CPU since it started (schedstat); 0 unknown
};

// What an asyncio task is parked on (issue 12). kind is one of: sleep, queue,
// lock, event, condition, semaphore, stream, subprocess, executor (a
// run_in_executor future), future (any other future), task (another task),
// gather, running (the loop is running its step now), other (an awaitable we
// do not know: detail names its type), none (no waiter, not running: ready to
// run, or done).
struct TaskAwait {
  std::string kind;
  std::string detail;  // "3599.2 s left", "queue empty, 1 getter", "tcp 127.0.0.1:43210 ->
                       // 127.0.0.1:8080 ESTABLISHED"
  std::optional<double> seconds_left;  // sleep: the timer's time left
  std::optional<FdInfo> fd;            // stream, subprocess pipe: the transport's fd
  pid_t executor_tid = 0;              // executor: the pool thread running the job; 0 unknown
};

// One asyncio task, read from the interpreter's memory without stopping it.
struct AsyncTask {
  std::string id;     // the task object's address, "0x7f3a2c1e4b80": unique in the snapshot
  std::string name;   // Task.get_name(): "sleeper", "Task-12"
  std::string state;  // pending running done cancelled
  std::vector<Frame> coroutine;  // its suspended coroutine chain, innermost first (Python frames)
  bool coroutine_truncated = false;
  TaskAwait awaiting;
  std::vector<std::string> awaits;      // ids of the tasks it waits on directly
  std::vector<std::string> awaited_by;  // ids of the tasks waiting on it
};

// One asyncio event loop and its tasks.
struct EventLoop {
  std::string id;                // the loop object's address
  std::string type;              // its class: "_UnixSelectorEventLoop"
  pid_t tid = 0;                 // the thread running it; 0 when no thread runs it now
  std::string thread_name;       // that thread's name (Python's, else the OS's)
  int64_t ready_callbacks = -1;  // len(loop._ready); -1 when unreadable
  std::string current_task;      // id of the task whose step runs now; "" none
  bool blocked = false;          // its thread is blocked outside the selector (blocks_event_loop)
  std::optional<Frame> blocked_in;  // then: the innermost frame of the user's own code in the step
  size_t tasks_seen = 0;            // tasks found, including those past the cap
  bool truncated = false;  // the cap was hit, or the registry changed under us: some tasks missing
  std::vector<AsyncTask> tasks;  // in the order found
};

// Tasks that await each other in a ring: none can ever finish (asyncio does
// not detect it).
struct AwaitCycle {
  std::vector<std::string> task_ids;  // in await order: [0] awaits [1] ... awaits [0]
  std::vector<std::string> names;
};

struct AsyncioSummary {
  bool read = false;  // tasks were read (a CPython target with asyncio, tasks not turned off)
  size_t tasks = 0;   // tasks reported, every loop
  std::map<std::string, size_t> by_awaiting;  // TaskAwait::kind -> tasks
  std::vector<AwaitCycle> cycles;
};

struct StopStats {
  uint64_t max_us = 0, p50_us = 0, p99_us = 0, total_us = 0;
};

// dump --consistent: whether every thread was captured as it was at one
// instant (injector/capture_types.h, ConsistentCapture).
struct Consistency {
  bool achieved = false;
  size_t held = 0;      // threads held stopped until all were captured
  size_t verified = 0;  // threads not stopped, checked not to have run since their copy
  size_t moved = 0;     // threads that ran during the window and could not be pinned
  int passes = 0;
  uint64_t window_us = 0;  // the longest a thread was held
  std::string why_not;
};

struct CaptureSummary {
  std::string mode = "seize-per-thread";  // or "consistent"
  std::optional<Consistency> consistent;  // dump --consistent only
  uint64_t duration_us = 0;
  size_t threads_stopped = 0;
  size_t threads_not_stopped = 0;  // captured without a stop (nonstop or reused)
  size_t threads_failed = 0;
  size_t threads_exited = 0;
  size_t eintr_restarted = 0;      // stops that interrupted an EINTR-prone call, rewound unseen
  size_t eintr_inflicted = 0;      // ... that could not be rewound: the program saw EINTR
  size_t restarts_redirected = 0;  // seccomp: resumed by the original call, not restart_syscall
  size_t stop_retries = 0;         // stops asked for again: the thread was slow to reach its stop
  size_t late_stops = 0;           // threads captured after a first deadline had passed
  size_t watchdog_ended = 0;       // stopper processes ended mid-stop; the kernel let the thread go
  StopStats stop_us;               // how long each stopped thread was held: stop seen -> let go
  StopStats reach_us;              // from the interrupt to the stop (the thread was not held)
  StopStats race_window_us;        // from the stopper's last look to the interrupt
  std::string stopper_priority;    // how the stopper process ran; "" when nothing was stopped
  uint64_t max_stop_us = 0;        // the bound its watchdog enforced
};

struct Target {
  pid_t pid = 0;
  std::string comm;
  std::string exe;
  std::vector<std::string> cmdline;
  uint64_t rss_bytes = 0;
  uint64_t threads = 0;
  std::string runtime_kind = "native";
  std::string runtime_version;
  std::string seccomp;     // the main thread's: none, strict, filter; "" unknown
  bool exited = false;     // the process ended during the capture
  pid_t ns_pid = 0;        // the PID in its own PID namespace (a container's); 0 when unknown
  uint64_t cpu_ticks = 0;  // user + system CPU time so far, in clock ticks (not reported)
};

// Threads grouped by name prefix ("legacy_bridge_3" -> "legacy_bridge",
// "ThreadPoolExecutor-0_1" -> "ThreadPoolExecutor-0"): a pool. One thread
// named PREFIX_N (ThreadPoolExecutor's naming) is a pool that has grown to one.
struct Pool {
  std::string name;
  size_t threads = 0;
  size_t idle = 0;
  size_t blocked = 0;                         // blocked and not idle
  std::map<std::string, size_t> by_category;  // of the blocked, idle ones included
};

// Threads that wait for each other's locks in a ring: none of them can go on.
struct Deadlock {
  struct Member {
    pid_t tid = 0;
    std::string name;
    LockInfo waits_for;         // held by the next member (the last's by the first)
    std::optional<Frame> site;  // where it waits
  };
  std::vector<Member> threads;  // in wait order: [0] waits for [1] ... waits for [0]
};

struct Summary {
  size_t threads = 0;
  size_t blocked = 0;
  size_t idle = 0;
  std::map<std::string, size_t> by_category;
  std::vector<Pool> pools;          // groups of two threads or more, or one PREFIX_N
  size_t event_loop_threads = 0;    // threads running an asyncio event loop
  size_t event_loops_blocked = 0;   // of those, blocked outside their selector
  std::optional<pid_t> gil_holder;  // tid of the thread holding the GIL
  std::vector<Deadlock> deadlocks;
  AsyncioSummary asyncio;
};

struct Snapshot {
  int64_t captured_at_unix_ns = 0;
  Target target;
  CaptureSummary capture;
  std::vector<Thread> threads;
  std::vector<EventLoop> event_loops;  // asyncio loops with their tasks (CPython targets)
  Summary summary;
  std::vector<std::string> warnings;
};

}  // namespace stackaudit
