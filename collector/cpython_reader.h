// Reads a CPython interpreter's threads and frames out of process, from memory
// only (process_vm_readv), never stopping anything: the interpreter keeps
// running while we read, so every pointer is checked, every walk is bounded,
// and a read that tears is retried or reported partial, never trusted blindly.
#pragma once

#include <cstdint>
#include <memory>
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

 private:
  struct CodeInfo {
    std::string qualname, file, linetable;
    int firstlineno = 0;
    int firsttraceable = 0;
  };
  bool read_once(PyProcessInfo& out, const std::set<long>* frames_for);
  bool read_thread(uint64_t tstate, PyThreadInfo& t, const std::set<long>* frames_for);
  bool read_frames(uint64_t frame, PyThreadInfo& t);
  // Where the GIL an interpreter runs under is, 0 when unknown.
  uint64_t gil_of(uint64_t interp);
  const CodeInfo* code_info(uint64_t code);
  bool read_string(uint64_t obj, std::string* out);
  bool read_ptr(uint64_t addr, uint64_t* out) { return memory_.read_exact(addr, out, 8); }
  // (key, value) pairs of a dict object; keys in insertion order.
  std::vector<std::pair<uint64_t, uint64_t>> dict_items(uint64_t dict);
  // The same, from a dict-keys object and, for a split table, its values
  // array; nothing when it claims more than max_entries (a torn read).
  std::vector<std::pair<uint64_t, uint64_t>> keys_items(uint64_t keys, uint64_t values,
                                                        int64_t max_entries,
                                                        int64_t values_capacity = -1);
  uint64_t dict_get(uint64_t dict, const std::string& key);
  uint64_t attribute(uint64_t obj, const std::string& name);  // instance __dict__ lookup
  bool read_long(uint64_t obj, uint64_t* out);
  void read_thread_names(uint64_t interp, std::vector<PyThreadInfo>& threads);

  Memory& memory_;
  const CPythonLayout L_;
  uint64_t runtime_;
  uint32_t version_;
  uint64_t code_type_;                            // &PyCode_Type in the target, 0 when unknown
  uint64_t unicode_type_;                         // &PyUnicode_Type
  std::unordered_map<uint64_t, CodeInfo> codes_;  // per read
};

// "threading" for /usr/lib/python3.11/threading.py, "concurrent.futures.thread"
// for .../concurrent/futures/thread.py, "requests.sessions" in site-packages;
// the file's stem elsewhere.
std::string python_module_name(const std::string& file);
// Whether a file belongs to the standard library or to installed packages
// (site-packages, dist-packages), rather than to the user's own code.
bool is_python_library_file(const std::string& file);

}  // namespace stackaudit
