// Reads a CPython interpreter's threads and frames out of process, from memory
// only (process_vm_readv), never stopping anything: the interpreter keeps
// running while we read, so every pointer is checked, every walk is bounded,
// and a read that tears is retried or reported partial, never trusted blindly.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "collector/cpython_layout.h"
#include "collector/module_map.h"
#include "injector/memory.h"

namespace stackaudit {

struct PyFrameInfo {
  std::string qualname;     // co_qualname: "Queue.get", "worker.<locals>.run"
  std::string file;         // co_filename
  int line = 0;             // 0 when unknown
  bool is_entry = false;    // the outermost frame of one C-level _PyEval_EvalFrameDefault call
  bool incomplete = false;  // pushed but not started: not shown
  int64_t interpreter = 0;  // the id of the interpreter that runs it (0: the main one)
  // 3.12+, on an is_entry frame: where the eval-loop call's own entry frame
  // is. It is a local of that C call, so on the native stack inside its frame.
  uint64_t entry_at = 0;
  uint64_t address = 0;    // the _PyInterpreterFrame, to read its locals
  bool generator = false;  // owned by a generator or coroutine (a coroutine step)
};

// One OS thread's Python state. A thread that entered a sub-interpreter has a
// thread state in each interpreter it runs in; they come back as one, with the
// frames of every chain, innermost interpreter first.
struct PyThreadInfo {
  uint64_t tstate = 0;  // the innermost interpreter's thread state
  int64_t interpreter = 0;
  long native_tid = 0;     // Linux TID
  uint64_t thread_id = 0;  // pthread_t, the key of threading._active
  std::string name;        // threading.Thread.name, "" when not a threading.Thread
  bool holds_gil = false;
  std::vector<PyFrameInfo> frames;  // innermost first
  bool truncated = false;           // the frame chain could not be read to its end
};

struct PyProcessInfo {
  uint32_t version = 0;
  std::vector<PyThreadInfo> threads;
  // Futex address ranges, [begin, end), a thread waiting for a GIL sleeps on:
  // each GIL's condition variable and mutex (one GIL per interpreter that has
  // its own, 3.12+).
  std::vector<std::pair<uint64_t, uint64_t>> gil_waits;
  int interpreters = 0;
  std::vector<std::string> notes;  // partial reads, a starting or finalizing interpreter
};

// One asyncio task, read from the interpreter's memory.
struct PyTaskInfo {
  uint64_t address = 0;
  uint64_t loop = 0;
  std::string name;
  int state = 0;                       // 0 pending, 1 cancelled, 2 finished (fut_state)
  std::vector<PyFrameInfo> coroutine;  // the suspended chain, innermost first
  bool coroutine_truncated = false;
  // What it waits on (TaskAwait::kind and detail; see collector/snapshot.h).
  std::string kind, detail;
  std::optional<double> seconds_left;
  int fd = -1;                   // stream: the transport's socket
  long executor_tid = 0;         // executor: the worker thread running the job
  std::vector<uint64_t> awaits;  // tasks it waits on directly
};

struct PyLoopInfo {
  uint64_t address = 0;
  std::string type;     // the loop's class name
  long native_tid = 0;  // the thread running it; 0: none now
  int64_t ready = -1;   // len(loop._ready)
  uint64_t current_task = 0;
  size_t seen = 0;  // tasks found, those past the cap included
  bool truncated = false;
  std::vector<PyTaskInfo> tasks;
};

struct PyAsyncioInfo {
  bool imported = false;  // the process has imported asyncio
  std::vector<PyLoopInfo> loops;
  std::vector<std::string> notes;
};

class CPythonReader {
 public:
  // Looks for a CPython runtime (a module exporting _PyRuntime, or with a
  // .PyRuntime section), 3.11 and later: 3.11 and 3.12 from a table, 3.13 and
  // later from the _Py_DebugOffsets the interpreter publishes. Returns null
  // when there is none, or when it is a version or build we cannot read: then
  // *warning says so, once, in one sentence, and *version holds what
  // Py_Version said (0 when it could not be read).
  static std::unique_ptr<CPythonReader> detect(const ModuleMap& modules, Memory& memory,
                                               std::string* warning, uint32_t* version);

  // A reader of the runtime at `runtime` laid out as `layout`. code_type and
  // unicode_type (&PyCode_Type, &PyUnicode_Type in the target; 0 when
  // unknown) let it reject objects that are not what a pointer promised.
  CPythonReader(Memory& memory, const CPythonLayout& layout, uint64_t runtime, uint32_t version,
                uint64_t code_type, uint64_t unicode_type);

  const CPythonLayout& layout() const { return L_; }

  uint32_t version() const { return version_; }
  // Reads every thread state; frames only for the threads in `frames_for`
  // (native tids), or for all when it is null. The others come back with no
  // frames: the caller still has them from an earlier read.
  PyProcessInfo read(const std::set<long>* frames_for = nullptr);

  // Every asyncio task of the main interpreter, by event loop: from the task
  // registry (3.11-3.13: asyncio.tasks' WeakSet and eager set) or the
  // per-thread task lists (3.14+, laid out by the _asyncio module's
  // .AsyncioDebug section, found in `modules`). `threads` is what read() gave:
  // their thread states say which loop runs where, their frames which thread
  // runs an executor job. At most max_per_loop tasks are read per loop.
  // The threading lock a thread blocked in acquire() sleeps on (3.11, 3.12):
  // an object on the value stack of the Python frame that called acquire()
  // or entered `with lock:` (`frame`, its PyFrameInfo::address) whose
  // underlying lock is the futex the thread sleeps on. nullopt when none is
  // found, or on another version (3.13+ locks are PyMutexes, whose waiters
  // sleep on a semaphore of their own).
  struct LockWait {
    bool reentrant = false;    // threading.RLock; else threading.Lock
    uint64_t address = 0;      // the lock object
    uint64_t owner_ident = 0;  // RLock: its owner's threading.get_ident(); 0: none
    uint64_t count = 0;        // RLock: how many times its owner holds it
  };
  std::optional<LockWait> lock_waited_on(uint64_t frame, uint64_t futex);

  PyAsyncioInfo read_tasks(const ModuleMap& modules, const std::vector<PyThreadInfo>& threads,
                           size_t max_per_loop);

 private:
  struct CodeInfo {
    std::string qualname, file, linetable;
    int firstlineno = 0;
    int firsttraceable = 0;
    std::vector<std::string> locals;  // co_localsplusnames, read when first asked for
    bool locals_read = false;
  };
  struct AsyncioOffsets;
  struct TaskRead;
  bool read_once(PyProcessInfo& out, const std::set<long>* frames_for);
  bool read_thread(uint64_t tstate, PyThreadInfo& t, const std::set<long>* frames_for);
  bool read_frames(uint64_t frame, PyThreadInfo& t);
  // Where the GIL an interpreter runs under is, 0 when unknown.
  uint64_t gil_of(uint64_t interp);
  const CodeInfo* code_info(uint64_t code);
  bool read_string(uint64_t obj, std::string* out);
  // A word of a type object, cached for the read; false when unreadable.
  bool type_word(uint64_t type, uint32_t offset, uint64_t* out);
  // Whether dict key `key` (a str) is `name`, its text cached for the read.
  bool key_is(uint64_t key, const std::string& name);
  bool read_ptr(uint64_t addr, uint64_t* out) { return memory_.read_exact(addr, out, 8); }
  // (key, value) pairs of a dict object; keys in insertion order.
  std::vector<std::pair<uint64_t, uint64_t>> dict_items(uint64_t dict);
  // The same, from a dict-keys object and, for a split table, its values
  // array; nothing when it claims more than max_entries (a torn read).
  std::vector<std::pair<uint64_t, uint64_t>> keys_items(uint64_t keys, uint64_t values,
                                                        int64_t max_entries,
                                                        int64_t values_capacity = -1);
  uint64_t dict_get(uint64_t dict, const std::string& key);
  // An instance attribute: from its __dict__ (managed, inline or its own) or a
  // __slots__ member.
  uint64_t attribute(uint64_t obj, const std::string& name);
  uint64_t read_attribute(uint64_t obj, const std::string& name);  // attribute(), uncached
  uint16_t code_unit(uint64_t at);  // a bytecode unit, cached for the read
  uint64_t slot(uint64_t obj, uint64_t type, const std::string& name);
  bool read_long(uint64_t obj, uint64_t* out);
  void read_thread_names(uint64_t interp, std::vector<PyThreadInfo>& threads);
  int line_of(const CodeInfo& info, uint64_t code, uint64_t instr) const;

  // Objects, for the asyncio reader (collector/cpython_tasks.cpp).
  const std::string& type_name(uint64_t type);  // tp_name, cached per read
  uint64_t type_of(uint64_t obj);
  bool derives_from(uint64_t type, const char* name);  // type or one of its bases
  uint64_t module_global(uint64_t interp, const std::string& module, const std::string& name);
  std::vector<uint64_t> set_items(uint64_t set);
  int64_t sequence_length(uint64_t obj);  // ob_size: list, tuple, deque; -1 unreadable
  uint64_t frame_local(uint64_t frame, const std::string& name);  // a local by name
  // The code of a frame with its local names read; null when unreadable.
  const CodeInfo* code_with_locals(uint64_t frame);
  bool read_task(const AsyncioOffsets& o, uint64_t task, PyTaskInfo& t, TaskRead& r);
  void read_chain(const AsyncioOffsets& o, uint64_t coro, PyTaskInfo& t, uint64_t* awaited);
  void classify(const AsyncioOffsets& o, const TaskRead& r, PyTaskInfo& t,
                const std::vector<PyThreadInfo>& threads);

  Memory& memory_;
  const CPythonLayout L_;
  uint64_t runtime_;
  uint32_t version_;
  uint64_t code_type_;                               // &PyCode_Type in the target, 0 when unknown
  uint64_t unicode_type_;                            // &PyUnicode_Type
  std::unordered_map<uint64_t, CodeInfo> codes_;     // per read
  std::unordered_map<uint64_t, std::string> types_;  // tp_name by type, per read
  // Words of type objects (flags, sizes, bases: fixed once a type is ready)
  // by address + offset, and the strings of attribute names met in dict
  // keys (interned, shared by every instance of a class), per read: reading
  // ten thousand tasks asks for the same few again and again.
  std::unordered_map<uint64_t, uint64_t> type_words_;
  std::unordered_map<uint64_t, std::string> key_names_;
  // attribute() answers by object and name, per read: ten thousand tasks
  // waiting on one Event ask for its waiters ten thousand times.
  std::map<std::pair<uint64_t, std::string>, uint64_t> attributes_;
  // Bytecode units by address (a suspended coroutine's RESUME), per read.
  std::unordered_map<uint64_t, uint16_t> code_units_;
  std::string asyncio_debug_module_;  // where .AsyncioDebug was found (3.14+)
  uint64_t asyncio_debug_ = 0;        // its address in the target
};

// "threading" for /usr/lib/python3.11/threading.py, "concurrent.futures.thread"
// for .../concurrent/futures/thread.py, "requests.sessions" in site-packages;
// the file's stem elsewhere.
std::string python_module_name(const std::string& file);
// Whether a file belongs to the standard library or to installed packages
// (site-packages, dist-packages), rather than to the user's own code.
bool is_python_library_file(const std::string& file);

}  // namespace stackaudit
