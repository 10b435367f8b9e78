// The CPython 3.11 walk on canned memory: a runtime, its interpreters, thread
// states, frames, code objects, strings and the threading module's _active
// dict are laid out by hand at the offsets of the 3.11 row, and the reader is
// asked what a live read would be asked. Each case is a shape a live
// interpreter rarely shows on demand: a frame chain that loops, code freed
// under the reader, a runtime that is starting, a surrogate-escaped file
// name, a second interpreter.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "collector/cpython_layout.h"
#include "collector/cpython_reader.h"
#include "collector/snapshot_builder.h"
#include "injector/memory.h"

namespace stackaudit {
namespace {

constexpr uint64_t kCodeType = 0x7f0000001000;
constexpr uint64_t kUnicodeType = 0x7f0000002000;
constexpr uint64_t kRuntime = 0x7f0000100000;

// One object's bytes, filled field by field at the layout's offsets.
struct Block {
  explicit Block(size_t size) : bytes(size) {}
  template <class T>
  Block& set(uint64_t offset, T value) {
    if (offset + sizeof value > bytes.size()) {
      ADD_FAILURE() << "field at " << offset << " outside a block of " << bytes.size();
      return *this;
    }
    std::memcpy(bytes.data() + offset, &value, sizeof value);
    return *this;
  }
  std::vector<uint8_t> bytes;
};

// A fake heap: every object gets its own address with unreadable space around
// it, as freed memory would be.
class FakePython {
 public:
  FakePython() : L(*cpython_layout(0x030b07f0)) {}

  uint64_t reserve(size_t size) {
    uint64_t at = next_;
    next_ += (size + 0xfff) / 0x1000 * 0x1000 + 0x1000;
    return at;
  }
  uint64_t put(Block b) {
    uint64_t at = reserve(b.bytes.size());
    memory.put(at, std::move(b.bytes));
    return at;
  }

  uint64_t str(const std::string& ascii) {
    // The reader reads a string's header as the larger, non-ASCII one.
    Block b(std::max<size_t>(L.str.ascii_data + ascii.size() + 1, L.str.compact_data));
    b.set<uint64_t>(L.object.ob_type, kUnicodeType)
        .set<int64_t>(L.str.length, static_cast<int64_t>(ascii.size()))
        .set<uint32_t>(L.str.state, (1u << 2) | (1u << 5) | (1u << 6));  // kind 1, compact, ascii
    std::memcpy(b.bytes.data() + L.str.ascii_data, ascii.data(), ascii.size());
    return put(std::move(b));
  }
  // A two-byte-kind string, for code units outside Latin-1 (and lone surrogates).
  uint64_t str16(const std::u16string& units) {
    Block b(L.str.compact_data + 2 * units.size() + 2);
    b.set<uint64_t>(L.object.ob_type, kUnicodeType)
        .set<int64_t>(L.str.length, static_cast<int64_t>(units.size()))
        .set<uint32_t>(L.str.state, (2u << 2) | (1u << 5));  // kind 2, compact
    std::memcpy(b.bytes.data() + L.str.compact_data, units.data(), 2 * units.size());
    return put(std::move(b));
  }
  uint64_t bytes(const std::string& data) {
    Block b(L.bytes.data + data.size() + 1);
    b.set<int64_t>(L.bytes.size, static_cast<int64_t>(data.size()));
    std::memcpy(b.bytes.data() + L.bytes.data, data.data(), data.size());
    return put(std::move(b));
  }
  // A small int (thread idents are below 2**60: two 30-bit digits).
  uint64_t integer(uint64_t v) {
    Block b(L.integer.digits + 8);
    b.set<int64_t>(L.integer.size, 2)
        .set<uint32_t>(L.integer.digits, static_cast<uint32_t>(v & 0x3fffffff))
        .set<uint32_t>(L.integer.digits + 4, static_cast<uint32_t>(v >> 30));
    return put(std::move(b));
  }

  // A location table: one entry per (code units, line delta), one-line forms
  // for deltas 0..2, the no-columns form for any other.
  static std::string linetable(const std::vector<std::pair<int, int>>& entries) {
    std::string t;
    for (auto [units, delta] : entries) {
      if (delta >= 0 && delta <= 2) {
        t += static_cast<char>(0x80 | ((10 + delta) << 3) | (units - 1));
        t += '\x01';  // start and end column
        t += '\x05';
      } else {
        t += static_cast<char>(0x80 | (13 << 3) | (units - 1));
        unsigned v = delta < 0 ? (static_cast<unsigned>(-delta) << 1) | 1 : unsigned(delta) << 1;
        do {
          unsigned chunk = v & 63;
          v >>= 6;
          t += static_cast<char>(chunk | (v ? 64 : 0));
        } while (v);
      }
    }
    return t;
  }

  uint64_t code(const std::string& qualname, uint64_t filename, int firstlineno,
                const std::string& table, int units, int firsttraceable = 0) {
    Block b(L.code.code_adaptive + 2 * static_cast<size_t>(units));
    b.set<uint64_t>(L.object.ob_type, kCodeType)
        .set<int32_t>(L.code.firstlineno, firstlineno)
        .set<uint64_t>(L.code.filename, filename)
        .set<uint64_t>(L.code.name, str(qualname))
        .set<uint64_t>(L.code.qualname, str(qualname))
        .set<uint64_t>(L.code.linetable, bytes(table))
        .set<int32_t>(L.code.firsttraceable, firsttraceable);
    return put(std::move(b));
  }

  // A frame at code unit `unit` of `code` (prev_instr points at that unit).
  uint64_t frame(uint64_t code, int unit, uint64_t previous, bool entry = false, uint64_t at = 0) {
    Block b(L.frame.owner + 1);
    b.set<uint64_t>(L.frame.code, code)
        .set<uint64_t>(L.frame.previous, previous)
        .set<uint64_t>(L.frame.instr, code + L.code.code_adaptive + 2 * uint64_t(unit))
        .set<uint8_t>(L.frame.is_entry, entry ? 1 : 0)
        .set<uint8_t>(L.frame.owner, 0);
    if (!at) return put(std::move(b));
    memory.put(at, std::move(b.bytes));
    return at;
  }

  uint64_t thread_state(uint64_t next, uint64_t current_frame, uint64_t ident, long tid) {
    auto cf = static_cast<uint32_t>(L.tstate.cframe_current_frame);
    Block cframe(cf + 8);
    cframe.set<uint64_t>(cf, current_frame);
    Block b(L.tstate.native_thread_id + 8);
    b.set<uint64_t>(L.tstate.next, next)
        .set<uint64_t>(L.tstate.frame, put(std::move(cframe)))
        .set<uint64_t>(L.tstate.thread_id, ident)
        .set<int64_t>(L.tstate.native_thread_id, tid);
    uint64_t at = put(Block(b));
    tstates_.emplace(at, std::move(b));
    return at;
  }

  // A dict. Unicode keys (kind 1) when every key is a str, else general (0).
  uint64_t dict(const std::vector<std::pair<uint64_t, uint64_t>>& items, bool unicode) {
    return dict_from_keys(keys(items, unicode ? 1 : 0, false), 0);
  }
  uint64_t dict_from_keys(uint64_t keys, uint64_t values) {
    Block d(L.dict.values + 8);
    d.set<uint64_t>(L.dict.keys, keys).set<uint64_t>(L.dict.values, values);
    return put(std::move(d));
  }
  // A keys object; a split one (kind 2) holds no values, they live beside
  // each instance.
  uint64_t keys(const std::vector<std::pair<uint64_t, uint64_t>>& items, uint8_t kind, bool split) {
    const uint8_t log2_index_bytes = 3;
    uint32_t esize = kind == 0 ? L.dict.general_entry_size : L.dict.unicode_entry_size;
    uint64_t entries = L.dict.indices + (1u << log2_index_bytes);
    Block k(entries + items.size() * esize);
    k.set<uint8_t>(L.dict.log2_size, 3)
        .set<uint8_t>(L.dict.log2_index_bytes, log2_index_bytes)
        .set<uint8_t>(L.dict.kind, kind)
        .set<int64_t>(L.dict.nentries, static_cast<int64_t>(items.size()));
    for (size_t i = 0; i < items.size(); ++i) {
      uint64_t at = entries + i * esize + (kind == 0 ? 8 : 0);  // general: hash first
      k.set<uint64_t>(at, items[i].first);
      if (!split) k.set<uint64_t>(at + 8, items[i].second);
    }
    return put(std::move(k));
  }

  // A threading.Thread whose attributes are in a split dict: the keys shared
  // by its type, the values just before the object.
  uint64_t thread_object(const std::string& name) {
    uint64_t shared = keys({{str("_target"), 0}, {str("_name"), 0}}, 2, true);
    Block type(L.object.ht_cached_keys + 8);
    type.set<uint64_t>(L.object.tp_flags, L.object.managed_dict_flag)
        .set<uint64_t>(L.object.ht_cached_keys, shared);
    uint64_t type_at = put(std::move(type));
    Block values(16);
    values.set<uint64_t>(0, str("target")).set<uint64_t>(8, str(name));
    uint64_t values_at = put(std::move(values));
    // The object with its pre-header: managed values at -32, managed dict at -24.
    Block obj(64);
    obj.set<uint64_t>(0, values_at)
        .set<uint64_t>(8, 0)
        .set<uint64_t>(32 + L.object.ob_type, type_at);
    return put(std::move(obj)) + 32;
  }
  // The same with a materialized dict (values pointer 0, dict at -24).
  uint64_t thread_object_with_dict(const std::string& name) {
    Block type(L.object.ht_cached_keys + 8);
    type.set<uint64_t>(L.object.tp_flags, L.object.managed_dict_flag);
    uint64_t type_at = put(std::move(type));
    uint64_t d = dict({{str("_name"), str(name)}}, true);
    Block obj(64);
    obj.set<uint64_t>(0, 0).set<uint64_t>(8, d).set<uint64_t>(32 + L.object.ob_type, type_at);
    return put(std::move(obj)) + 32;
  }

  // sys.modules with a threading module whose _active maps idents to threads.
  uint64_t modules_with_threads(const std::vector<std::pair<uint64_t, uint64_t>>& active) {
    std::vector<std::pair<uint64_t, uint64_t>> by_ident;
    for (auto [ident, thread] : active) by_ident.emplace_back(integer(ident), thread);
    uint64_t active_dict = dict(by_ident, false);
    uint64_t module_dict =
        dict({{str("__name__"), str("threading")}, {str("_active"), active_dict}}, true);
    Block module(L.object.module_dict + 8);
    module.set<uint64_t>(L.object.module_dict, module_dict);
    uint64_t threading = put(std::move(module));
    return dict({{str("sys"), str("not a module")}, {str("threading"), threading}}, true);
  }

  // An interpreter whose thread states start at `threads`; they are made to
  // point back to it, as CPython's do.
  uint64_t interpreter(uint64_t next, uint64_t threads, uint64_t modules, int64_t id = 0,
                       bool link = true) {
    Block b(L.interp.modules + 8);
    b.set<uint64_t>(L.interp.next, next)
        .set<uint64_t>(L.interp.threads_head, threads)
        .set<uint64_t>(L.interp.modules, modules)
        .set<int64_t>(L.interp.id, id);
    uint64_t at = put(std::move(b));
    for (uint64_t ts = threads; link && tstates_.count(ts);) {
      Block& state = tstates_.at(ts);
      state.set<uint64_t>(L.tstate.interp, at);
      memory.put(ts, state.bytes);
      std::memcpy(&ts, state.bytes.data() + L.tstate.next, 8);
    }
    return at;
  }

  void runtime(uint64_t interp, uint64_t gil_holder) {
    auto gil = static_cast<uint32_t>(L.runtime.gil);
    Block b(gil + L.gil.mutex + L.gil.mutex_size);
    b.set<uint64_t>(L.runtime.interpreters_head, interp)
        .set<int32_t>(gil + L.gil.locked, gil_holder ? 1 : 0)
        .set<uint64_t>(gil + L.gil.holder, gil_holder);
    memory.put(kRuntime, std::move(b.bytes));
  }

  PyProcessInfo read(const std::set<long>* frames_for = nullptr) {
    CPythonReader reader(memory, L, kRuntime, 0x030b07f0, kCodeType, kUnicodeType);
    return reader.read(frames_for);
  }

  const CPythonLayout& L;
  CannedMemory memory;

 private:
  uint64_t next_ = 0x7f1000000000;
  std::map<uint64_t, Block> tstates_;  // by address
};

const PyThreadInfo* by_tid(const PyProcessInfo& p, long tid) {
  for (const PyThreadInfo& t : p.threads)
    if (t.native_tid == tid) return &t;
  return nullptr;
}

class CPythonWalk : public ::testing::Test {
 protected:
  // Two threads: a worker in Worker.run (line 14) called from
  // Thread._bootstrap_inner, and the main thread in <module> (line 3),
  // holding the GIL.
  void SetUp() override {
    uint64_t app = py.str("/srv/app/worker.py");
    uint64_t threading = py.str("/usr/lib/python3.11/threading.py");
    // Worker.run starts at line 10: units 0-1 line 10, 2-4 line 12, 5-7 line 14.
    uint64_t run =
        py.code("Worker.run", app, 10, FakePython::linetable({{2, 0}, {3, 2}, {3, 2}}), 8);
    uint64_t bootstrap =
        py.code("Thread._bootstrap_inner", threading, 1010,
                FakePython::linetable({{4, 0}, {4, 35}}), 8);  // unit 4 and on: line 1045
    uint64_t module = py.code("<module>", app, 1, FakePython::linetable({{2, 0}, {2, 2}}), 4);
    uint64_t outer = py.frame(bootstrap, 5, 0, /*entry=*/true);
    uint64_t inner = py.frame(run, 6, outer);
    uint64_t main_frame = py.frame(module, 3, 0, true);
    worker_ = py.thread_state(0, inner, 0x7f00aa000001, 4242);
    main_ = py.thread_state(worker_, main_frame, 0x7f00bb000002, 4241);
    modules_ =
        py.modules_with_threads({{0x7f00aa000001, py.thread_object("pool-worker-1")},
                                 {0x7f00bb000002, py.thread_object_with_dict("MainThread")}});
    py.runtime(py.interpreter(0, main_, modules_), main_);
  }
  FakePython py;
  uint64_t worker_ = 0, main_ = 0, modules_ = 0;
};

TEST_F(CPythonWalk, FramesInnermostFirstWithFilesAndLines) {
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads.size(), 2u);
  EXPECT_TRUE(p.notes.empty()) << p.notes.front();
  const PyThreadInfo* w = by_tid(p, 4242);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->frames.size(), 2u);
  EXPECT_EQ(w->frames[0].qualname, "Worker.run");
  EXPECT_EQ(w->frames[0].file, "/srv/app/worker.py");
  EXPECT_EQ(w->frames[0].line, 14);
  EXPECT_FALSE(w->frames[0].is_entry);
  EXPECT_EQ(w->frames[1].qualname, "Thread._bootstrap_inner");
  EXPECT_EQ(w->frames[1].line, 1045);
  EXPECT_TRUE(w->frames[1].is_entry);
  EXPECT_FALSE(w->truncated);
  EXPECT_EQ(w->thread_id, 0x7f00aa000001u);
  const PyThreadInfo* m = by_tid(p, 4241);
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->frames.size(), 1u);
  EXPECT_EQ(m->frames[0].qualname, "<module>");
  EXPECT_EQ(m->frames[0].line, 3);
}

TEST_F(CPythonWalk, GilHolderAndWaitAddresses) {
  PyProcessInfo p = py.read();
  EXPECT_TRUE(by_tid(p, 4241)->holds_gil);
  EXPECT_FALSE(by_tid(p, 4242)->holds_gil);
  uint64_t gil = kRuntime + static_cast<uint32_t>(py.L.runtime.gil);
  // From the condition variable to the end of the switch mutex: cond, mutex,
  // switch_cond, switch_mutex (208 bytes into struct _gil_runtime_state).
  ASSERT_EQ(p.gil_waits.size(), 1u);
  EXPECT_EQ(p.gil_waits[0].first, gil + py.L.gil.cond);
  EXPECT_EQ(p.gil_waits[0].second, gil + 208);
  py.runtime(py.interpreter(0, main_, modules_), 0);  // released
  p = py.read();
  EXPECT_FALSE(by_tid(p, 4241)->holds_gil);
}

TEST_F(CPythonWalk, ThreadNamesFromSplitAndMaterializedDicts) {
  PyProcessInfo p = py.read();
  EXPECT_EQ(by_tid(p, 4242)->name, "pool-worker-1");  // split: keys in the type
  EXPECT_EQ(by_tid(p, 4241)->name, "MainThread");     // a dict of its own
}

TEST_F(CPythonWalk, FramesOnlyForTheThreadsAsked) {
  std::set<long> only{4242};
  PyProcessInfo p = py.read(&only);
  ASSERT_EQ(p.threads.size(), 2u);
  EXPECT_EQ(by_tid(p, 4242)->frames.size(), 2u);
  EXPECT_TRUE(by_tid(p, 4241)->frames.empty());
  EXPECT_EQ(by_tid(p, 4241)->name, "MainThread");  // names are read for all
}

TEST_F(CPythonWalk, SurrogateEscapedFileNameBecomesReplacementCharacter) {
  // A file name with the byte 0xff, as Python keeps it: the lone surrogate U+DCFF.
  uint64_t odd = py.str16(u"/srv/caf\u00e9/\xdcff.py");
  uint64_t code = py.code("handler", odd, 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t ts = py.thread_state(0, py.frame(code, 1, 0, true), 1, 5000);
  py.runtime(py.interpreter(0, ts, 0), 0);
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads.size(), 1u);
  ASSERT_EQ(p.threads[0].frames.size(), 1u);
  EXPECT_EQ(p.threads[0].frames[0].file, "/srv/caf\xc3\xa9/\xef\xbf\xbd.py");
}

TEST_F(CPythonWalk, AFrameChainThatLoopsIsCutAndMarked) {
  uint64_t code =
      py.code("spin", py.str("/srv/app/loop.py"), 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t at = py.reserve(py.L.frame.owner + 1);
  py.frame(code, 1, at, false, at);  // its own previous frame
  uint64_t ts = py.thread_state(0, at, 1, 5001);
  py.runtime(py.interpreter(0, ts, 0), 0);
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads.size(), 1u);
  EXPECT_TRUE(p.threads[0].truncated);
  EXPECT_EQ(p.threads[0].frames.size(), 1u);  // cut where it comes back
  ASSERT_FALSE(p.notes.empty());
  EXPECT_NE(p.notes.back().find("shown partial"), std::string::npos) << p.notes.back();
}

TEST_F(CPythonWalk, CodeFreedUnderTheReaderEndsTheChainThere) {
  uint64_t code = py.code("kept", py.str("/srv/app/a.py"), 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t freed = py.reserve(0x100);  // nothing readable there any more
  uint64_t reused = py.str("not a code object");
  uint64_t bottom = py.frame(code, 1, 0, true);
  uint64_t middle = py.frame(reused, 1, bottom);
  uint64_t top = py.frame(code, 1, py.frame(freed, 1, middle));
  uint64_t ts = py.thread_state(0, top, 1, 5002);
  py.runtime(py.interpreter(0, ts, 0), 0);
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads.size(), 1u);
  ASSERT_EQ(p.threads[0].frames.size(), 1u);
  EXPECT_EQ(p.threads[0].frames[0].qualname, "kept");
  EXPECT_TRUE(p.threads[0].truncated);
  // An object of another type where code was is refused the same way.
  ts = py.thread_state(0, middle, 1, 5003);
  py.runtime(py.interpreter(0, ts, 0), 0);
  p = py.read();
  EXPECT_TRUE(p.threads[0].frames.empty());
  EXPECT_TRUE(p.threads[0].truncated);
}

TEST_F(CPythonWalk, AFrameBeforeItsFirstInstructionIsIncomplete) {
  uint64_t code = py.code("starting", py.str("/srv/app/a.py"), 1, FakePython::linetable({{4, 0}}),
                          4, /*firsttraceable=*/2);
  uint64_t started = py.frame(code, 2, 0, true);
  uint64_t not_yet = py.frame(code, 1, started);
  uint64_t ts = py.thread_state(0, not_yet, 1, 5004);
  py.runtime(py.interpreter(0, ts, 0), 0);
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads[0].frames.size(), 2u);
  EXPECT_TRUE(p.threads[0].frames[0].incomplete);
  EXPECT_FALSE(p.threads[0].frames[1].incomplete);
}

TEST_F(CPythonWalk, EveryInterpreterIsRead) {
  uint64_t code = py.code("sub_main", py.str("<string>"), 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t sub_ts = py.thread_state(0, py.frame(code, 1, 0, true), 9, 4243);
  uint64_t sub = py.interpreter(0, sub_ts, 0, /*id=*/1);
  py.runtime(py.interpreter(sub, main_, modules_), main_);
  PyProcessInfo p = py.read();
  EXPECT_EQ(p.interpreters, 2);
  ASSERT_EQ(p.threads.size(), 3u);
  const PyThreadInfo* s = by_tid(p, 4243);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->frames.size(), 1u);
  EXPECT_EQ(s->frames[0].qualname, "sub_main");
  EXPECT_EQ(s->frames[0].interpreter, 1);
  EXPECT_EQ(s->interpreter, 1);
  EXPECT_EQ(by_tid(p, 4242)->name, "pool-worker-1");
  // The GIL they share is held by the main interpreter's thread, listed last.
  EXPECT_TRUE(by_tid(p, 4241)->holds_gil);
  EXPECT_FALSE(by_tid(p, 4243)->holds_gil);
}

TEST_F(CPythonWalk, AThreadInTwoInterpretersIsOneThreadInnermostInterpreterFirst) {
  // The worker thread called into a sub-interpreter: a thread state there too.
  uint64_t code = py.code("sub_main", py.str("<string>"), 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t sub_ts = py.thread_state(0, py.frame(code, 1, 0, true), 0x7f00aa000001, 4242);
  uint64_t sub = py.interpreter(0, sub_ts, 0, /*id=*/3);
  py.runtime(py.interpreter(sub, main_, modules_), main_);
  PyProcessInfo p = py.read();
  ASSERT_EQ(p.threads.size(), 2u);
  const PyThreadInfo* w = by_tid(p, 4242);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->frames.size(), 3u);
  EXPECT_EQ(w->frames[0].qualname, "sub_main");
  EXPECT_EQ(w->frames[0].interpreter, 3);
  EXPECT_TRUE(w->frames[0].is_entry);  // its own eval-loop call
  EXPECT_EQ(w->frames[1].qualname, "Worker.run");
  EXPECT_EQ(w->frames[1].interpreter, 0);
  EXPECT_EQ(w->frames[2].qualname, "Thread._bootstrap_inner");
  EXPECT_EQ(w->name, "pool-worker-1");  // named by the interpreter it started in
}

TEST_F(CPythonWalk, ThreadStatesThatDoNotPointBackAreNotTrusted) {
  // A layout we got wrong reads garbage as thread states: they would not
  // point back to their interpreter.
  uint64_t code = py.code("f", py.str("/srv/app/a.py"), 1, FakePython::linetable({{2, 0}}), 2);
  uint64_t ts = py.thread_state(0, py.frame(code, 1, 0, true), 1, 5005);
  py.interpreter(0, ts, 0);  // ts points to this one, but the runtime lists another
  py.runtime(py.interpreter(0, ts, 0, 0, /*link=*/false), 0);
  PyProcessInfo p = py.read();
  EXPECT_TRUE(p.threads.empty());
  ASSERT_EQ(p.notes.size(), 1u);
  EXPECT_NE(p.notes[0].find("do not point back"), std::string::npos);
}

TEST_F(CPythonWalk, NoInterpreterYetIsANoteNotAFailure) {
  py.runtime(0, 0);
  PyProcessInfo p = py.read();
  EXPECT_TRUE(p.threads.empty());
  ASSERT_EQ(p.notes.size(), 1u);
  EXPECT_NE(p.notes[0].find("starting up or finalizing"), std::string::npos);
}

TEST_F(CPythonWalk, AnUnreadableRuntimeGivesNothingAndSaysSo) {
  CannedMemory empty;
  CPythonReader reader(empty, py.L, kRuntime, 0x030b07f0, kCodeType, kUnicodeType);
  PyProcessInfo p = reader.read();
  EXPECT_TRUE(p.threads.empty());
  ASSERT_EQ(p.notes.size(), 1u);
  EXPECT_NE(p.notes[0].find("runtime could not be read"), std::string::npos) << p.notes[0];
}

// Placing Python frames in a native stack by where each eval-loop call keeps
// its entry frame (3.12+), with no symbol to go by.
Frame native(const std::string& function, uint64_t sp) {
  Frame f;
  f.function = function;
  f.sp = sp;
  return f;
}

PyFrameInfo python(const std::string& name, uint64_t entry_at = 0) {
  PyFrameInfo p;
  p.qualname = name;
  p.is_entry = entry_at != 0;
  p.entry_at = entry_at;
  return p;
}

std::vector<std::string> names(const std::vector<Frame>& frames) {
  std::vector<std::string> out;
  for (const Frame& f : frames)
    out.push_back((f.kind == Frame::Kind::kPython ? "py:" : "") + f.function);
  return out;
}

TEST(MergePythonFrames, EachGroupBeforeTheNativeFrameHoldingItsEntryFrame) {
  // Unnamed eval-loop frames at sp 0x1100 and 0x1300; entry frames inside them.
  std::vector<Frame> stack = {native("wait", 0x1000), native("", 0x1100), native("call", 0x1200),
                              native("", 0x1300), native("start", 0x1400)};
  ASSERT_TRUE(merge_python_frames(
      stack, {python("inner"), python("run", 0x1180), python("bootstrap", 0x1350)}));
  EXPECT_EQ(names(stack), (std::vector<std::string>{"wait", "py:inner", "py:run", "", "call",
                                                    "py:bootstrap", "", "start"}));
}

TEST(MergePythonFrames, NotInTheLastFrameOfATruncatedStack) {
  // The stack stops at 0x1200: an entry frame above it is in a frame never
  // reached, not in the last one reached.
  std::vector<Frame> stack = {native("wait", 0x1000), native("", 0x1100), native("call", 0x1200)};
  EXPECT_FALSE(merge_python_frames(stack, {python("run", 0x1180), python("bootstrap", 0x1350)},
                                   /*native_truncated=*/true));
  EXPECT_EQ(names(stack), (std::vector<std::string>{"wait", "py:run", "", "call", "py:bootstrap"}));
}

}  // namespace
}  // namespace stackaudit
