// asyncio tasks, read from a CPython process's memory while it runs: where the
// tasks are (per version), each task's suspended coroutine chain, what it
// awaits, and which loop runs on which thread. docs/design/asyncio-tasks.md
// has the facts per version and where each was checked.
#include <time.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "collector/cpython_reader.h"

namespace stackaudit {
namespace {

constexpr int kMaxChain = 64;                 // coroutines awaiting coroutines
constexpr size_t kMaxSetSlots = 1u << 20;     // a set's table (WeakSet data, _eager_tasks)
constexpr size_t kMaxListNodes = 1u << 20;    // 3.14+ task lists, all threads together
constexpr int kMaxBases = 16;                 // tp_base hops
constexpr uint64_t kMaxStackSlots = 1 << 16;  // a frame's value stack
constexpr size_t kWideSlots = 16;             // locals and stack slots read with a frame
constexpr size_t kMaxClosure = 64;

// The type object's fields we use: the same on 3.11-3.15 (checked against
// each version's headers).
constexpr uint32_t kTpName = 24;
constexpr uint32_t kTpBase = 256, kTpDict = 264;  // (also in cpython_reader.cpp)
constexpr uint32_t kWeakrefObject = 16;           // PyWeakReference.wr_object
constexpr uint32_t kObSize = 16;                  // PyVarObject.ob_size: lists, tuples, deques
constexpr uint32_t kFloatValue = 16;
constexpr uint32_t kCellRef = 16;
constexpr uint32_t kFuncQualname = 40, kFuncClosure = 72;
constexpr uint32_t kFutureCallback0 = 24;
constexpr uint32_t kAsendGen = 16;  // async_generator_asend.ags_gen
constexpr uint32_t kFutureIterFut = 16;
constexpr uint32_t kCodeLocalsNames = 96;  // co_localsplusnames
// set: used, mask, table; a table entry is {key, hash}.
constexpr uint32_t kSetUsed = 24, kSetMask = 32, kSetTable = 40;

template <class T>
T field(const std::vector<uint8_t>& block, uint64_t offset) {
  T v{};
  if (offset + sizeof(T) <= block.size()) std::memcpy(&v, block.data() + offset, sizeof(T));
  return v;
}

bool is_asyncio_file(const std::string& file, const char* module) {
  std::string tail = std::string("/asyncio/") + module;
  return file.ends_with(tail);
}

std::string plural(int64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

// The per-version facts of asyncio and of generators.
struct CPythonReader::AsyncioOffsets {
  uint32_t minor = 0;
  // _asyncio.Task (C): from the object's start.
  uint32_t fut_loop = 16, fut_state = 0, fut_waiter = 0, task_coro = 0, task_name = 0;
  uint32_t task_size = 0;  // tp_basicsize of _asyncio.Task
  uint32_t task_node = 0;  // 3.14+: {next, prev} in the thread's list
  // generator / coroutine head
  uint32_t gi_frame_state = 0, gi_iframe = 0;
  // the embedded frame
  uint32_t localsplus = 0, stack = 64;
  bool stack_pointer = false;  // 3.14+: `stack` holds a pointer past the top; else an int count
  uint64_t ref_tag_bits = 0;   // 3.14+: stack refs are tagged
  int stack_target_slots = 1;  // 3.15: the await target is one slot deeper
  std::set<int> suspended_in_await;  // gi_frame_state values of a frame parked in `await`
  bool resume_check = false;         // 3.11/3.12: no such state; look at the next instruction
  uint32_t tuple_items = 24;
  // where a thread's running loop is
  int32_t tstate_dict = -1;          // 3.11/3.12: PyThreadState.dict
  bool loop_holder = false;          // 3.11: the dict holds a holder with rl_loop at +16
  uint32_t tstate_running_loop = 0;  // 3.13+: in _PyThreadStateImpl
  uint32_t tstate_running_task = 0, tstate_tasks_head = 0, interp_tasks_head = 0;  // 3.14+
  bool task_lists = false;
};

struct CPythonReader::TaskRead {
  uint64_t coro = 0, waiter = 0;
};

const std::string& CPythonReader::type_name(uint64_t type) {
  auto it = types_.find(type);
  if (it != types_.end()) return it->second;
  std::string name;
  uint64_t p = 0;
  if (type && read_ptr(type + kTpName, &p) && p) {
    char buf[128];
    ssize_t n = memory_.read(p, buf, sizeof buf);
    if (n > 0) name.assign(buf, strnlen(buf, static_cast<size_t>(n)));
    if (n > 0 && name.size() == static_cast<size_t>(n)) name.clear();  // no terminator: not a name
  }
  return types_.emplace(type, std::move(name)).first->second;
}

uint64_t CPythonReader::type_of(uint64_t obj) {
  uint64_t type = 0;
  if (!obj || !read_ptr(obj + L_.object.ob_type, &type)) return 0;
  return type;
}

uint16_t CPythonReader::code_unit(uint64_t at) {
  auto it = code_units_.find(at);
  if (it != code_units_.end()) return it->second;
  uint16_t unit = 0;
  if (!memory_.read_exact(at, &unit, 2)) return 0;  // not cached: may be readable later
  code_units_.emplace(at, unit);
  return unit;
}

bool CPythonReader::derives_from(uint64_t type, const char* name) {
  for (int i = 0; type && i < kMaxBases; ++i) {
    if (type_name(type) == name) return true;
    if (!type_word(type, kTpBase, &type)) return false;
  }
  return false;
}

uint64_t CPythonReader::module_global(uint64_t interp, const std::string& module,
                                      const std::string& name) {
  uint64_t modules = 0, m = 0, dict = 0;
  if (!read_ptr(interp + L_.interp.modules, &modules) || !modules) return 0;
  m = dict_get(modules, module);
  if (!m || !read_ptr(m + L_.object.module_dict, &dict)) return 0;
  return dict_get(dict, name);
}

std::vector<uint64_t> CPythonReader::set_items(uint64_t set) {
  std::vector<uint64_t> out;
  uint8_t head[kSetTable + 8];
  if (!set || !memory_.read_exact(set, head, sizeof head)) return out;
  int64_t used, mask;
  uint64_t table;
  std::memcpy(&used, head + kSetUsed, 8);
  std::memcpy(&mask, head + kSetMask, 8);
  std::memcpy(&table, head + kSetTable, 8);
  if (used <= 0 || mask < 0 || static_cast<uint64_t>(mask) + 1 > kMaxSetSlots || used > mask + 1)
    return out;
  std::vector<uint64_t> slots(2 * (static_cast<size_t>(mask) + 1));
  if (!memory_.read_exact(table, slots.data(), slots.size() * 8)) return out;
  for (size_t i = 0; i < slots.size(); i += 2)
    if (slots[i] && static_cast<int64_t>(slots[i + 1]) != -1) out.push_back(slots[i]);
  return out;
}

int64_t CPythonReader::sequence_length(uint64_t obj) {
  int64_t n = -1;
  if (!obj || !memory_.read_exact(obj + kObSize, &n, 8) || n < 0 || n > (int64_t{1} << 40))
    return -1;
  return n;
}

const CPythonReader::CodeInfo* CPythonReader::code_with_locals(uint64_t frame) {
  uint64_t code = 0;
  if (!read_ptr(frame + L_.frame.code, &code)) return nullptr;
  code &= ~L_.frame.code_tag_bits;
  if (!code_info(code)) return nullptr;
  CodeInfo& info = codes_.at(code);
  if (!info.locals_read) {
    info.locals_read = true;
    uint64_t names = 0;
    int64_t n = 0;
    bool new_tuples = (version_ >> 16 & 0xff) >= 14;  // tuples gained a cached hash in 3.14
    uint32_t items = new_tuples ? 32 : 24;
    if (read_ptr(code + kCodeLocalsNames, &names) && names &&
        memory_.read_exact(names + kObSize, &n, 8) && n > 0 && n < 4096) {
      std::vector<uint64_t> ptrs(static_cast<size_t>(n));
      if (memory_.read_exact(names + items, ptrs.data(), ptrs.size() * 8))
        for (uint64_t p : ptrs) {
          std::string s;
          read_string(p, &s);
          info.locals.push_back(std::move(s));
        }
    }
  }
  return &info;
}

uint64_t CPythonReader::frame_local(uint64_t frame, const std::string& name) {
  const CodeInfo* code = code_with_locals(frame);
  if (!code) return 0;
  const CodeInfo& info = *code;
  auto at = std::find(info.locals.begin(), info.locals.end(), name);
  if (at == info.locals.end()) return 0;
  bool tagged = (version_ >> 16 & 0xff) >= 14;
  uint32_t localsplus = tagged ? 80 : 72;
  uint64_t v = 0;
  if (!read_ptr(frame + localsplus + 8 * static_cast<uint64_t>(at - info.locals.begin()), &v))
    return 0;
  return tagged ? v & ~uint64_t{3} : v;
}

// Fills `t` (the chain) from the task's coroutine: each suspended coroutine
// down to the innermost await. *awaited is what the innermost one awaits when
// that is not a coroutine (a future, another awaitable), else 0.
void CPythonReader::read_chain(const AsyncioOffsets& o, uint64_t coro, PyTaskInfo& t,
                               uint64_t* awaited) {
  *awaited = 0;
  std::vector<PyFrameInfo> outer_first;
  std::set<uint64_t> seen;
  // The generator with its frame, and the first slots of the frame's locals
  // and stack in the same read when they are mapped (the awaited object is
  // usually there); else the generator and frame header alone.
  const size_t exact = o.gi_iframe + o.localsplus;
  const size_t wide = exact + 8 * kWideSlots;
  std::vector<uint8_t> head(wide);
  uint64_t gen = coro;
  std::string known_kind;  // gen's type name when the previous level read it
  for (int depth = 0;; ++depth) {
    if (depth >= kMaxChain || !seen.insert(gen).second) {
      t.coroutine_truncated = true;
      break;
    }
    const std::string kind = known_kind.empty() ? type_name(type_of(gen)) : known_kind;
    if (kind != "coroutine" && kind != "generator" && kind != "async_generator") {
      if (depth == 0) t.coroutine_truncated = true;  // a task without a coroutine we know
      break;
    }
    head.resize(wide);
    if (!memory_.read_exact(gen, head.data(), head.size())) {
      head.resize(exact);
      if (!memory_.read_exact(gen, head.data(), head.size())) {
        t.coroutine_truncated = true;
        break;
      }
    }
    int state = field<int8_t>(head, o.gi_frame_state);
    uint64_t frame = gen + o.gi_iframe;
    uint64_t code = field<uint64_t>(head, o.gi_iframe + L_.frame.code) & ~L_.frame.code_tag_bits;
    uint64_t instr = field<uint64_t>(head, o.gi_iframe + L_.frame.instr);
    const CodeInfo* info = code_info(code);
    if (!info) {
      t.coroutine_truncated = true;
      break;
    }
    // A pure-Python future's __await__ (a generator): the chain ends at its
    // future, its `self`.
    if (info->qualname == "Future.__await__" && is_asyncio_file(info->file, "futures.py")) {
      *awaited = frame_local(frame, "self");
      break;
    }
    PyFrameInfo pf;
    pf.qualname = info->qualname;
    pf.file = info->file;
    pf.line = line_of(*info, code, instr);
    pf.address = frame;
    pf.generator = true;
    outer_first.push_back(std::move(pf));
    // Parked in an await? Then the awaited object is on top of its stack.
    bool in_await = o.suspended_in_await.count(state) > 0;
    if (in_await && o.resume_check) {
      uint16_t unit = code_unit(instr + 2);
      int op = unit & 0xff, arg = unit >> 8;
      bool resume = op == 151 || (o.minor == 11 && op == 150) || (o.minor == 12 && op == 240);
      in_await = resume && arg >= 2;
    }
    if (!in_await) break;  // running, a plain yield, done
    uint64_t slot = 0;
    if (o.stack_pointer) {
      uint64_t sp = field<uint64_t>(head, o.gi_iframe + o.stack);
      slot = sp - 8 * static_cast<uint64_t>(o.stack_target_slots);
      if (sp < frame + o.localsplus + 8 * static_cast<uint64_t>(o.stack_target_slots) ||
          sp > frame + o.localsplus + 8 * kMaxStackSlots)
        break;
    } else {
      int32_t top = field<int32_t>(head, o.gi_iframe + o.stack);
      if (top < 1 || static_cast<uint64_t>(top) > kMaxStackSlots) break;
      slot = frame + o.localsplus + 8 * static_cast<uint64_t>(top - 1);
    }
    uint64_t target = 0;
    if (slot >= gen && slot + 8 <= gen + head.size())
      target = field<uint64_t>(head, static_cast<uint32_t>(slot - gen));
    else if (!read_ptr(slot, &target))
      break;
    target &= ~o.ref_tag_bits;
    const std::string& tk = type_name(type_of(target));
    known_kind.clear();
    if (tk == "coroutine" || tk == "generator" || tk == "async_generator") {
      gen = target;
      known_kind = tk;
    } else if (tk == "async_generator_asend") {
      if (!read_ptr(target + kAsendGen, &gen)) break;
    } else if (tk == "_asyncio.FutureIter") {
      read_ptr(target + kFutureIterFut, awaited);
      break;
    } else {
      *awaited = target;
      break;
    }
  }
  t.coroutine.assign(outer_first.rbegin(), outer_first.rend());
}

bool CPythonReader::read_task(const AsyncioOffsets& o, uint64_t task, PyTaskInfo& t, TaskRead& r) {
  // Nothing here is trusted before it validates: the task may have finished
  // and been freed since we found it.
  std::vector<uint8_t> b(o.task_size);
  if (!task || !memory_.read_exact(task, b.data(), b.size())) return false;
  uint64_t type = field<uint64_t>(b, L_.object.ob_type);
  t.address = task;
  uint64_t name = 0;
  if (derives_from(type, "_asyncio.Task")) {
    int32_t state = field<int32_t>(b, o.fut_state);
    if (state < 0 || state > 2) return false;
    t.state = state;
    t.loop = field<uint64_t>(b, o.fut_loop);
    r.coro = field<uint64_t>(b, o.task_coro);
    r.waiter = field<uint64_t>(b, o.fut_waiter);
    name = field<uint64_t>(b, o.task_name);
  } else if (derives_from(type, "Task") && derives_from(type, "Future")) {
    // The pure-Python Task (asyncio.tasks._PyTask, or every task when the
    // _asyncio module is missing): plain instance attributes.
    // A pending future keeps the class's _state ("PENDING"): an instance
    // has its own only once it is done.
    std::string state;
    uint64_t state_obj = attribute(task, "_state");
    for (uint64_t c = type; !state_obj && c; c = type_word(c, kTpBase, &c) ? c : 0) {
      uint64_t dict = 0;
      if (type_word(c, kTpDict, &dict) && dict) state_obj = dict_get(dict, "_state");
    }
    read_string(state_obj, &state);
    if (state == "PENDING")
      t.state = 0;
    else if (state == "CANCELLED")
      t.state = 1;
    else if (state == "FINISHED")
      t.state = 2;
    else
      return false;
    t.loop = attribute(task, "_loop");
    r.coro = attribute(task, "_coro");
    r.waiter = attribute(task, "_fut_waiter");
    if (r.waiter && type_name(type_of(r.waiter)) == "NoneType") r.waiter = 0;
    name = attribute(task, "_name");
  } else {
    return false;
  }
  if (!t.loop) return false;
  // The name: a str, or (3.12+) the number of an auto name not yet asked for.
  uint64_t n = 0;
  if (!read_string(name, &t.name) && name && type_name(type_of(name)) == "int" &&
      read_long(name, &n))
    t.name = "Task-" + std::to_string(n);
  return true;
}

void CPythonReader::classify(const AsyncioOffsets& o, const TaskRead& r, PyTaskInfo& t,
                             const std::vector<PyThreadInfo>& threads) {
  uint64_t awaited = 0;
  if (r.coro) read_chain(o, r.coro, t, &awaited);
  auto tasks_in = [&](const std::vector<uint64_t>& objs) {
    for (uint64_t x : objs) {
      uint64_t type = type_of(x);
      if (derives_from(type, "_asyncio.Task") || derives_from(type, "Task")) t.awaits.push_back(x);
    }
  };
  // The innermost frame of asyncio's own that says what it waits for.
  for (const PyFrameInfo& f : t.coroutine) {
    const std::string& q = f.qualname;
    if (is_asyncio_file(f.file, "tasks.py") && q == "sleep") {
      t.kind = "sleep";
      uint64_t handle = frame_local(f.address, "h");
      double when = 0;
      uint64_t when_obj = handle ? attribute(handle, "_when") : 0;
      if (when_obj && type_name(type_of(when_obj)) == "float" &&
          memory_.read_exact(when_obj + kFloatValue, &when, sizeof when)) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = when - (static_cast<double>(now.tv_sec) + now.tv_nsec / 1e9);
        t.seconds_left = std::max(0.0, left);
        char buf[64];
        snprintf(buf, sizeof buf, "%.1f s left", *t.seconds_left);
        t.detail = buf;
      }
      return;
    }
    if (is_asyncio_file(f.file, "queues.py") && (q == "Queue.get" || q == "Queue.put")) {
      t.kind = "queue";
      uint64_t self = frame_local(f.address, "self");
      int64_t items = self ? sequence_length(attribute(self, "_queue")) : -1;
      std::string op = q == "Queue.get" ? "get" : "put";
      t.detail = items < 0 ? op : op + " on a queue of " + plural(items, "item", "items");
      return;
    }
    if (is_asyncio_file(f.file, "locks.py")) {
      std::string kind = q == "Lock.acquire"        ? "lock"
                         : q == "Event.wait"        ? "event"
                         : q == "Condition.wait"    ? "condition"
                         : q == "Semaphore.acquire" ? "semaphore"
                                                    : "";
      if (!kind.empty()) {
        t.kind = kind;
        uint64_t self = frame_local(f.address, "self");
        int64_t waiters = self ? sequence_length(attribute(self, "_waiters")) : -1;
        if (waiters >= 0) t.detail = plural(waiters, "waiter", "waiters");
        return;
      }
    }
    if (is_asyncio_file(f.file, "streams.py") &&
        (q == "StreamReader._wait_for_data" || q == "FlowControlMixin._drain_helper")) {
      t.kind = "stream";
      t.detail = q == "StreamReader._wait_for_data" ? "read" : "write (drain)";
      uint64_t self = frame_local(f.address, "self");
      uint64_t transport = self ? attribute(self, "_transport") : 0;
      uint64_t fd = 0;
      if (transport && read_long(attribute(transport, "_sock_fd"), &fd) && fd < (1u << 24))
        t.fd = static_cast<int>(fd);
      return;
    }
    if ((is_asyncio_file(f.file, "subprocess.py") &&
         (q == "Process.wait" || q == "Process.communicate")) ||
        (is_asyncio_file(f.file, "base_subprocess.py") && q == "BaseSubprocessTransport._wait")) {
      t.kind = "subprocess";
      uint64_t self = frame_local(f.address, "self");
      uint64_t transport = q.starts_with("Process.") && self ? attribute(self, "_transport") : self;
      uint64_t pid = 0;
      if (transport && read_long(attribute(transport, "_pid"), &pid))
        t.detail = "pid " + std::to_string(pid);
      return;
    }
    if (is_asyncio_file(f.file, "taskgroups.py") &&
        (q == "TaskGroup.__aexit__" || q == "TaskGroup._aexit")) {
      t.kind = "task";
      t.detail = "TaskGroup";
      uint64_t self = frame_local(f.address, "self");
      if (self) tasks_in(set_items(attribute(self, "_tasks")));
      return;
    }
  }
  // Else what the task's step is parked on.
  uint64_t waiter = r.waiter ? r.waiter : awaited;
  if (!waiter) {
    t.kind = "none";
    return;
  }
  uint64_t type = type_of(waiter);
  const std::string& name = type_name(type);
  if (derives_from(type, "_asyncio.Task") || (derives_from(type, "Task") && name != "")) {
    t.kind = "task";
    t.awaits.push_back(waiter);
    return;
  }
  if (name == "_GatheringFuture") {
    t.kind = "gather";
    uint64_t children = attribute(waiter, "_children");
    int64_t n = sequence_length(children);
    uint64_t items = 0;
    if (n > 0 && n <= 100000 && read_ptr(children + 24, &items)) {
      std::vector<uint64_t> kids(static_cast<size_t>(n));
      if (memory_.read_exact(items, kids.data(), kids.size() * 8)) tasks_in(kids);
    }
    return;
  }
  // A future run_in_executor made: its first callback copies the
  // concurrent.futures.Future's result over (asyncio.futures._chain_future).
  uint64_t callback = 0, qualname = 0, closure = 0;
  std::string cb;
  if (derives_from(type, "_asyncio.Future") && read_ptr(waiter + kFutureCallback0, &callback) &&
      callback && read_ptr(callback + kFuncQualname, &qualname) && read_string(qualname, &cb) &&
      cb == "_chain_future.<locals>._call_check_cancel") {
    t.kind = "executor";
    t.detail = "run_in_executor job, not running (queued or done)";
    // The concurrent.futures.Future is a free variable of the callback.
    uint64_t source = 0;
    int64_t cells = 0;
    if (read_ptr(callback + kFuncClosure, &closure) && closure &&
        (cells = sequence_length(closure)) > 0 && static_cast<size_t>(cells) <= kMaxClosure) {
      std::vector<uint64_t> c(static_cast<size_t>(cells));
      if (memory_.read_exact(closure + o.tuple_items, c.data(), c.size() * 8))
        for (uint64_t cell : c) {
          uint64_t v = 0;
          if (!read_ptr(cell + kCellRef, &v) || !v) continue;
          uint64_t vt = type_of(v);
          if (type_name(vt) == "Future" && !derives_from(vt, "_asyncio.Future")) source = v;
        }
    }
    // The worker thread whose _WorkItem.run runs that future's job.
    for (const PyThreadInfo& th : threads) {
      if (!source) break;
      for (const PyFrameInfo& f : th.frames) {
        if (f.qualname != "_WorkItem.run" || !f.file.ends_with("concurrent/futures/thread.py"))
          continue;
        uint64_t item = frame_local(f.address, "self");
        if (item && attribute(item, "future") == source) {
          t.executor_tid = th.native_tid;  // the report says "run by thread N"
          t.detail = "run_in_executor job";
        }
      }
    }
    return;
  }
  t.kind = "future";
  t.detail = name;
}

namespace {

// 3.14+: the _asyncio module's debug offsets, in this order.
enum AsyncioDebugField {
  kTaskSize,
  kTaskName,
  kTaskAwaitedBy,
  kTaskIsTask,
  kTaskAwaitedByIsSet,
  kTaskCoro,
  kTaskNode,
  kInterpSize,
  kInterpTasksHead,
  kTstateSize,
  kTstateRunningLoop,
  kTstateRunningTask,
  kTstateTasksHead,
  kAsyncioDebugFields
};

}  // namespace

PyAsyncioInfo CPythonReader::read_tasks(const ModuleMap& modules,
                                        const std::vector<PyThreadInfo>& threads,
                                        size_t max_per_loop) {
  PyAsyncioInfo out;
  types_.clear();
  type_words_.clear();
  key_names_.clear();
  attributes_.clear();
  code_units_.clear();
  uint32_t minor = (version_ >> 16) & 0xff;
  // The main interpreter: the last of the list, id 0. Sub-interpreters'
  // loops are not read.
  uint64_t interp = 0, main_interp = 0;
  read_ptr(runtime_ + L_.runtime.interpreters_head, &interp);
  for (int i = 0; interp && i < 256; ++i) {
    int64_t id = -1;
    memory_.read_exact(interp + L_.interp.id, &id, sizeof id);
    if (id == 0) main_interp = interp;
    if (!read_ptr(interp + L_.interp.next, &interp)) break;
  }
  if (!main_interp) return out;
  uint64_t modules_dict = 0, tasks_module = 0;
  if (!read_ptr(main_interp + L_.interp.modules, &modules_dict) ||
      !(tasks_module = dict_get(modules_dict, "asyncio.tasks")))
    return out;  // no asyncio: no tasks
  out.imported = true;

  AsyncioOffsets o;
  o.minor = minor;
  if (minor == 11 || minor == 12) {
    o.fut_state = 88, o.fut_waiter = 128, o.task_coro = 136, o.task_name = 144;
    o.task_size = 176;
    o.gi_frame_state = minor == 11 ? 75 : 67, o.gi_iframe = minor == 11 ? 80 : 72;
    o.localsplus = 72;
    o.suspended_in_await = {-1};
    o.resume_check = true;
    o.tstate_dict = minor == 11 ? 128 : 112;
    o.loop_holder = minor == 11;
  } else if (minor == 13) {
    o.fut_state = 96, o.fut_waiter = 112, o.task_coro = 120, o.task_name = 128;
    o.task_size = 144;
    o.gi_frame_state = 67, o.gi_iframe = 72;
    o.localsplus = 72;
    o.suspended_in_await = {-1};
    o.tstate_running_loop = L_.tstate.size;
  } else if (minor >= 14 && minor <= 15) {
    // Where the _asyncio module says its tasks are. It is mapped once the
    // program imported asyncio (a shared object, or the interpreter itself).
    uint64_t d[kAsyncioDebugFields] = {};
    bool found = false;
    for (const Module& m : modules.modules()) {
      uint64_t at = m.elf ? m.elf->section_address(".AsyncioDebug") : 0;
      if (at && memory_.read_exact(at + m.bias, d, sizeof d)) {
        found = true;
        break;
      }
    }
    bool sane =
        found && d[kTaskSize] >= 64 && d[kTaskSize] < 4096 && d[kTaskNode] + 16 <= d[kTaskSize] &&
        d[kTaskName] + 8 <= d[kTaskSize] && d[kTaskCoro] + 8 <= d[kTaskSize] &&
        d[kTaskCoro] >= 16 && d[kTaskAwaitedBy] + 16 <= d[kTaskSize] && d[kTstateSize] < 65536 &&
        d[kTstateTasksHead] + 16 <= d[kTstateSize] && d[kTstateRunningLoop] + 8 <= d[kTstateSize] &&
        d[kTstateRunningTask] + 8 <= d[kTstateSize] && d[kInterpTasksHead] + 16 <= d[kInterpSize] &&
        d[kInterpSize] < (1u << 24);
    if (!sane) {
      out.notes.push_back(std::string("asyncio tasks: ") +
                          (found ? "the _asyncio module's .AsyncioDebug offsets fail validation"
                                 : "no .AsyncioDebug section found in any module") +
                          "; tasks not read");
      return out;
    }
    auto u = [&](int i) { return static_cast<uint32_t>(d[i]); };
    o.task_size = u(kTaskSize), o.task_name = u(kTaskName), o.task_coro = u(kTaskCoro);
    o.task_node = u(kTaskNode);
    o.fut_state = u(kTaskAwaitedBy) + 8, o.fut_waiter = u(kTaskCoro) - 8;
    o.gi_frame_state = 67, o.gi_iframe = 72;
    o.localsplus = 80;
    o.stack_pointer = true;
    o.ref_tag_bits = 3;
    o.tuple_items = 32;
    if (minor == 14) {
      o.suspended_in_await = {-1};
    } else {
      o.suspended_in_await = {2, 3};
      o.stack_target_slots = 2;
    }
    o.tstate_running_loop = u(kTstateRunningLoop), o.tstate_running_task = u(kTstateRunningTask);
    o.tstate_tasks_head = u(kTstateTasksHead), o.interp_tasks_head = u(kInterpTasksHead);
    o.task_lists = true;
  } else {
    out.notes.push_back("asyncio tasks: CPython " + cpython_version_text(version_) +
                        " is not a version whose tasks stackaudit reads");
    return out;
  }

  // Where the tasks are.
  std::vector<uint64_t> found;
  std::set<uint64_t> seen;
  auto add = [&](uint64_t task) {
    if (task && seen.insert(task).second) found.push_back(task);
  };
  uint64_t tasks_dict = 0;
  read_ptr(tasks_module + L_.object.module_dict, &tasks_dict);
  auto global = [&](const char* name) { return tasks_dict ? dict_get(tasks_dict, name) : 0; };
  bool truncated_list = false;
  if (o.task_lists) {
    // Each thread's list, then the interpreter's (tasks of threads that
    // ended): circular, through each task's task_node.
    std::vector<uint64_t> heads;
    for (const PyThreadInfo& th : threads) heads.push_back(th.tstate + o.tstate_tasks_head);
    heads.push_back(main_interp + o.interp_tasks_head);
    size_t nodes = 0;
    for (uint64_t head : heads) {
      uint64_t node = 0;
      std::set<uint64_t> visited;
      if (!read_ptr(head, &node)) continue;
      while (node && node != head) {
        if (++nodes > kMaxListNodes || !visited.insert(node).second) {
          truncated_list = true;
          break;
        }
        add(node - o.task_node);
        if (!read_ptr(node, &node)) {
          truncated_list = true;
          break;
        }
      }
    }
  }
  // The registry: every task on 3.11-3.13, the pure-Python ones on 3.14+.
  uint64_t weak = global(minor == 11 ? "_all_tasks" : "_scheduled_tasks");
  if (weak) {
    for (uint64_t ref : set_items(attribute(weak, "data"))) {
      uint64_t obj = 0;
      if (read_ptr(ref + kWeakrefObject, &obj)) add(obj);
    }
  }
  if (minor >= 12) {
    for (uint64_t task : set_items(global("_eager_tasks"))) add(task);
  }

  // Which loop runs on which thread, and its current task.
  std::map<uint64_t, PyLoopInfo> loops;
  std::vector<uint64_t> order;  // loops in the order first met
  auto loop_of = [&](uint64_t loop) -> PyLoopInfo& {
    auto [it, fresh] = loops.try_emplace(loop);
    if (fresh) {
      it->second.address = loop;
      order.push_back(loop);
    }
    return it->second;
  };
  std::map<uint64_t, uint64_t> current;  // loop -> task
  if (!o.task_lists)
    for (const auto& [loop, task] : dict_items(global("_current_tasks"))) current[loop] = task;
  for (const PyThreadInfo& th : threads) {
    uint64_t loop = 0, task = 0;
    if (o.tstate_dict >= 0) {
      uint64_t dict = 0;
      if (read_ptr(th.tstate + static_cast<uint32_t>(o.tstate_dict), &dict) && dict) {
        loop = dict_get(dict, "__asyncio_running_event_loop__");
        if (loop && o.loop_holder && !read_ptr(loop + 16, &loop)) loop = 0;
      }
    } else if (o.tstate_running_loop) {
      read_ptr(th.tstate + o.tstate_running_loop, &loop);
      loop &= ~uint64_t{3};
      if (o.tstate_running_task) {
        read_ptr(th.tstate + o.tstate_running_task, &task);
        task &= ~uint64_t{3};
      }
    }
    if (loop && type_name(type_of(loop)) == "NoneType") loop = 0;
    // Else the thread's own frames: BaseEventLoop.run_forever's self (the
    // pure-Python loop keeps its running loop in a threading.local).
    for (const PyFrameInfo& f : th.frames) {
      if (loop) break;
      if (f.qualname == "BaseEventLoop.run_forever" && is_asyncio_file(f.file, "base_events.py"))
        loop = frame_local(f.address, "self");
    }
    if (!loop) continue;
    PyLoopInfo& l = loop_of(loop);
    l.native_tid = th.native_tid;
    if (task) current[loop] = task;
  }

  size_t skipped = 0;
  for (uint64_t addr : found) {
    PyTaskInfo t;
    TaskRead r;
    if (!read_task(o, addr, t, r)) {
      ++skipped;
      continue;
    }
    PyLoopInfo& l = loop_of(t.loop);
    ++l.seen;
    if (l.tasks.size() >= max_per_loop) {
      l.truncated = true;
      continue;
    }
    classify(o, r, t, threads);
    l.tasks.push_back(std::move(t));
  }
  for (uint64_t loop : order) {
    PyLoopInfo& l = loops[loop];
    uint64_t loop_type = type_of(loop);
    l.type = type_name(loop_type);
    // uvloop's Loop is a Cython type named "Loop" of module uvloop.loop.
    uint64_t type_dict = 0;
    std::string module;
    if (read_ptr(loop_type + kTpDict, &type_dict) && type_dict)
      read_string(dict_get(type_dict, "__module__"), &module);
    if (module.starts_with("uvloop") && !l.type.starts_with("uvloop."))
      l.type = module + "." + l.type;
    if (l.type.starts_with("uvloop."))
      out.notes.push_back(
          "asyncio tasks: uvloop is not supported; its tasks are listed, its ready queue is not "
          "read");
    else
      l.ready = sequence_length(attribute(loop, "_ready"));
    auto c = current.find(loop);
    if (c != current.end()) l.current_task = c->second;
    l.truncated |= truncated_list;
    if (l.seen > l.tasks.size() && l.tasks.size() >= max_per_loop)
      out.notes.push_back("asyncio tasks: an event loop has " + std::to_string(l.seen) +
                          " tasks, of which the first " + std::to_string(l.tasks.size()) +
                          " were read; --max-tasks raises the cap");
    out.loops.push_back(std::move(l));
  }
  if (skipped)
    out.notes.push_back("asyncio tasks: " + plural(static_cast<int64_t>(skipped), "task", "tasks") +
                        " finished or changed while being read and " +
                        (skipped == 1 ? "was" : "were") + " skipped");
  return out;
}

}  // namespace stackaudit
