#include "collector/cpython_layout.h"

#include <cstring>
#include <span>
#include <string_view>

namespace stackaudit {
namespace {

// Shared by every version: struct _gil_runtime_state starts with interval,
// last_holder, locked, switch_number, then the condition variable and mutex a
// waiting thread sleeps on (pthread_cond_t, pthread_mutex_t on x86-64 glibc),
// then the same pair again (switch_cond, switch_mutex) on which a thread that
// dropped the GIL on request waits until another thread has taken it.
constexpr decltype(CPythonLayout::gil) kGil = {
    .holder = 8, .locked = 16, .cond = 32, .cond_size = 48, .mutex = 80, .mutex_size = 40};

// PyDictKeysObject and its entries, unchanged from 3.11 to 3.15 (default builds).
constexpr decltype(CPythonLayout::dict) kDict = {.keys = 32,
                                                 .values = 40,
                                                 .log2_size = 8,
                                                 .log2_index_bytes = 9,
                                                 .kind = 10,
                                                 .nentries = 24,
                                                 .indices = 32,
                                                 .general_entry_size = 24,
                                                 .unicode_entry_size = 16};

// CPython 3.11, x86-64, release build (offsetof on 3.11.2's internal headers).
constexpr CPythonLayout kPython311 = {
    .version_min = 0x030b0000,
    .version_max = 0x030bffff,
    .name = "3.11",
    .runtime = {.interpreters_head = 40, .gil = 360},
    .interp = {.next = 0, .threads_head = 16, .modules = 888, .id = 48, .gil_pointer = 0},
    .gil = kGil,
    .tstate = {.next = 8,
               .interp = 16,
               .thread_id = 152,
               .native_thread_id = 160,
               .frame = 56,
               .cframe_current_frame = 8,
               .size = 0},
    .frame = {.code = 32,
              .previous = 48,
              .instr = 56,
              .is_entry = 68,
              .owner = 69,
              .owner_generator = 1,
              .owner_shim = 0,
              .code_tag_bits = 0},
    .code = {.firstlineno = 72,
             .filename = 112,
             .name = 120,
             .qualname = 128,
             .linetable = 136,
             .code_adaptive = 184,
             .firsttraceable = 168},
    .str = {.length = 16, .state = 32, .ascii_data = 48, .compact_data = 72},
    .bytes = {.size = 16, .data = 32},
    .object = {.ob_type = 8,
               .tp_flags = 168,
               .tp_basicsize = 32,
               .ht_cached_keys = 872,
               .module_dict = 16,
               .managed_dict_flag = 1u << 4,
               .inline_values_flag = 0,
               .values = CPythonLayout::Values::kBeforeObject,
               .managed_values = -32,
               .managed_dict = -24,
               .inline_capacity = 0,
               .inline_valid = 0,
               .inline_array = 0},
    .integer = {.size = 16, .digits = 24, .tagged = false},
    .dict = kDict,
};

// CPython 3.12, x86-64, release build (offsetof on 3.12.1's internal headers).
// Frames lost is_entry: each eval-loop call pushes an entry frame of its own,
// owned by the C stack. The GIL moved into each interpreter.
constexpr CPythonLayout kPython312 = {
    .version_min = 0x030c0000,
    .version_max = 0x030cffff,
    .name = "3.12",
    .runtime = {.interpreters_head = 40, .gil = -1},
    .interp = {.next = 0, .threads_head = 72, .modules = 944, .id = 8, .gil_pointer = 384},
    .gil = kGil,
    .tstate = {.next = 8,
               .interp = 16,
               .thread_id = 136,
               .native_thread_id = 144,
               .frame = 56,
               .cframe_current_frame = 0,
               .size = 0},
    .frame = {.code = 0,
              .previous = 8,
              .instr = 56,
              .is_entry = 0,
              .owner = 70,
              .owner_generator = 1,
              .owner_shim = 3,
              .code_tag_bits = 0},
    .code = {.firstlineno = 68,
             .filename = 112,
             .name = 120,
             .qualname = 128,
             .linetable = 136,
             .code_adaptive = 192,
             .firsttraceable = 176},
    .str = {.length = 16, .state = 32, .ascii_data = 40, .compact_data = 56},
    .bytes = {.size = 16, .data = 32},
    .object = {.ob_type = 8,
               .tp_flags = 168,
               .tp_basicsize = 32,
               .ht_cached_keys = 880,
               .module_dict = 16,
               .managed_dict_flag = 1u << 4,
               .inline_values_flag = 0,
               .values = CPythonLayout::Values::kTaggedPointer,
               .managed_values = 0,
               .managed_dict = -24,
               .inline_capacity = 0,
               .inline_valid = 0,
               .inline_array = 0},
    .integer = {.size = 16, .digits = 24, .tagged = true},
    .dict = kDict,
};

constexpr const CPythonLayout* kLayouts[] = {&kPython311, &kPython312};

// _Py_DebugOffsets, one uint64 per name in the order of the structure (the
// 8-byte cookie is one). The structure grew with each version; a version newer
// than the last one here is read as the last one, and validated.
// clang-format off
constexpr std::string_view kDebugOffsets313[] = {
    "cookie", "version", "free_threaded",
    "runtime.size", "runtime.finalizing", "runtime.interpreters_head",
    "interp.size", "interp.id", "interp.next", "interp.threads_head", "interp.gc",
    "interp.imports_modules", "interp.sysdict", "interp.builtins", "interp.ceval_gil",
    "interp.gil_runtime_state", "interp.gil_enabled", "interp.gil_locked", "interp.gil_holder",
    "tstate.size", "tstate.prev", "tstate.next", "tstate.interp", "tstate.current_frame",
    "tstate.thread_id", "tstate.native_thread_id", "tstate.datastack_chunk", "tstate.status",
    "frame.size", "frame.previous", "frame.executable", "frame.instr_ptr", "frame.localsplus",
    "frame.owner",
    "code.size", "code.filename", "code.name", "code.qualname", "code.linetable",
    "code.firstlineno", "code.argcount", "code.localsplusnames", "code.localspluskinds",
    "code.co_code_adaptive",
    "object.size", "object.ob_type",
    "type.size", "type.tp_name", "type.tp_repr", "type.tp_flags",
    "tuple.size", "tuple.ob_item", "tuple.ob_size",
    "list.size", "list.ob_item", "list.ob_size",
    "dict.size", "dict.ma_keys", "dict.ma_values",
    "float.size", "float.ob_fval",
    "long.size", "long.lv_tag", "long.ob_digit",
    "bytes.size", "bytes.ob_size", "bytes.ob_sval",
    "unicode.size", "unicode.state", "unicode.length", "unicode.asciiobject_size",
    "gc.size", "gc.collecting"};
// clang-format on

// clang-format off
constexpr std::string_view kDebugOffsets314[] = {
    "cookie", "version", "free_threaded",
    "runtime.size", "runtime.finalizing", "runtime.interpreters_head",
    "interp.size", "interp.id", "interp.next", "interp.threads_head", "interp.threads_main",
    "interp.gc", "interp.imports_modules", "interp.sysdict", "interp.builtins",
    "interp.ceval_gil", "interp.gil_runtime_state", "interp.gil_enabled", "interp.gil_locked",
    "interp.gil_holder", "interp.code_object_generation", "interp.tlbc_generation",
    "tstate.size", "tstate.prev", "tstate.next", "tstate.interp", "tstate.current_frame",
    "tstate.thread_id", "tstate.native_thread_id", "tstate.datastack_chunk", "tstate.status",
    "frame.size", "frame.previous", "frame.executable", "frame.instr_ptr", "frame.localsplus",
    "frame.owner", "frame.stackpointer", "frame.tlbc_index",
    "code.size", "code.filename", "code.name", "code.qualname", "code.linetable",
    "code.firstlineno", "code.argcount", "code.localsplusnames", "code.localspluskinds",
    "code.co_code_adaptive", "code.co_tlbc",
    "object.size", "object.ob_type",
    "type.size", "type.tp_name", "type.tp_repr", "type.tp_flags",
    "tuple.size", "tuple.ob_item", "tuple.ob_size",
    "list.size", "list.ob_item", "list.ob_size",
    "set.size", "set.used", "set.table", "set.mask",
    "dict.size", "dict.ma_keys", "dict.ma_values",
    "float.size", "float.ob_fval",
    "long.size", "long.lv_tag", "long.ob_digit",
    "bytes.size", "bytes.ob_size", "bytes.ob_sval",
    "unicode.size", "unicode.state", "unicode.length", "unicode.asciiobject_size",
    "gc.size", "gc.collecting",
    "gen.size", "gen.gi_name", "gen.gi_iframe", "gen.gi_frame_state",
    "llist.next", "llist.prev",
    "debugger.eval_breaker", "debugger.remote_debugger_support",
    "debugger.remote_debugging_enabled", "debugger.debugger_pending_call",
    "debugger.debugger_script_path", "debugger.debugger_script_path_size"};
// clang-format on

// clang-format off
constexpr std::string_view kDebugOffsets315[] = {
    "cookie", "version", "free_threaded",
    "runtime.size", "runtime.finalizing", "runtime.interpreters_head",
    "interp.size", "interp.id", "interp.next", "interp.threads_head", "interp.threads_main",
    "interp.gc", "interp.imports_modules", "interp.sysdict", "interp.builtins",
    "interp.ceval_gil", "interp.gil_runtime_state", "interp.gil_enabled", "interp.gil_locked",
    "interp.gil_holder", "interp.code_object_generation", "interp.tlbc_generation",
    "tstate.size", "tstate.prev", "tstate.next", "tstate.interp", "tstate.current_frame",
    "tstate.base_frame", "tstate.last_profiled_frame", "tstate.last_profiled_frame_seq",
    "tstate.thread_id", "tstate.native_thread_id", "tstate.datastack_chunk", "tstate.status",
    "tstate.holds_gil", "tstate.gil_requested", "tstate.current_exception", "tstate.exc_state",
    "err_stackitem.exc_value",
    "frame.size", "frame.previous", "frame.executable", "frame.instr_ptr", "frame.localsplus",
    "frame.owner", "frame.stackpointer", "frame.tlbc_index",
    "code.size", "code.filename", "code.name", "code.qualname", "code.linetable",
    "code.firstlineno", "code.argcount", "code.localsplusnames", "code.localspluskinds",
    "code.co_code_adaptive", "code.co_tlbc",
    "object.size", "object.ob_type",
    "type.size", "type.tp_name", "type.tp_repr", "type.tp_flags", "type.tp_basicsize",
    "type.tp_dictoffset",
    "heap_type.size", "heap_type.ht_cached_keys",
    "tuple.size", "tuple.ob_item", "tuple.ob_size",
    "list.size", "list.ob_item", "list.ob_size",
    "set.size", "set.used", "set.table", "set.mask",
    "dict.size", "dict.ma_keys", "dict.ma_values",
    "float.size", "float.ob_fval",
    "long.size", "long.lv_tag", "long.ob_digit",
    "bytes.size", "bytes.ob_size", "bytes.ob_sval",
    "unicode.size", "unicode.state", "unicode.length", "unicode.asciiobject_size",
    "unicode.compactunicodeobject_size",
    "gc.size", "gc.collecting", "gc.frame", "gc.generation_stats_size", "gc.generation_stats",
    "gen.size", "gen.gi_name", "gen.gi_iframe", "gen.gi_frame_state",
    "llist.next", "llist.prev",
    "debugger.eval_breaker", "debugger.remote_debugger_support",
    "debugger.remote_debugging_enabled", "debugger.debugger_pending_call",
    "debugger.debugger_script_path", "debugger.debugger_script_path_size"};
// clang-format on

static_assert(sizeof(kDebugOffsets315) / sizeof(kDebugOffsets315[0]) * 8 <= kDebugOffsetsBytes);

// What _Py_DebugOffsets does not say, per minor version (offsetof on Debian's
// libpython3.x-dev headers). _co_firsttraceable is 0 for a version not listed.
struct Extras {
  uint32_t minor, firsttraceable, ht_cached_keys;
};
constexpr Extras kExtras[] = {{13, 184, 880}, {14, 192, 880}, {15, 192, 888}};

class DebugOffsets {
 public:
  DebugOffsets(std::span<const std::string_view> names, const uint8_t* raw, size_t size)
      : names_(names), raw_(raw), size_(size) {}
  bool complete() const { return names_.size() * 8 <= size_; }
  uint64_t operator[](std::string_view name) const {
    for (size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) {
        uint64_t v;
        std::memcpy(&v, raw_ + i * 8, 8);
        return v;
      }
    return kMissing;
  }
  bool has(std::string_view name) const { return (*this)[name] != kMissing; }
  static constexpr uint64_t kMissing = ~uint64_t{0};

 private:
  std::span<const std::string_view> names_;
  const uint8_t* raw_;
  size_t size_;
};

}  // namespace

const CPythonLayout* cpython_layout(uint32_t version) {
  for (const CPythonLayout* l : kLayouts)
    if (version >= l->version_min && version <= l->version_max) return l;
  return nullptr;
}

std::optional<CPythonLayout> cpython_layout_from_debug_offsets(const uint8_t* raw, size_t size,
                                                               uint32_t py_version,
                                                               std::string* why) {
  uint32_t minor = (py_version >> 16) & 0xff;
  std::span<const std::string_view> names = kDebugOffsets315;
  if (minor == 13) names = kDebugOffsets313;
  if (minor == 14) names = kDebugOffsets314;
  DebugOffsets d(names, raw, size);
  if (!d.complete() || std::memcmp(raw, "xdebugpy", 8) != 0) {
    *why = "has no readable _Py_DebugOffsets (no \"xdebugpy\" cookie at the start of _PyRuntime)";
    return std::nullopt;
  }
  if ((d["version"] >> 16) != (py_version >> 16)) {
    *why = "has _Py_DebugOffsets for another version (" +
           cpython_version_text(static_cast<uint32_t>(d["version"])) + ")";
    return std::nullopt;
  }
  if (d["free_threaded"] != 0) {
    *why = "is a free-threaded build, which stackaudit does not read yet";
    return std::nullopt;
  }
  // Every offset we use must lie inside its object, every object be of a
  // plausible size: a structure that changed shape fails here, not later.
  struct Check {
    const char* size;
    uint64_t max_size;
    std::initializer_list<const char*> fields;
  };
  const Check checks[] = {
      {"runtime.size", 1u << 24, {"runtime.interpreters_head"}},
      {"interp.size",
       1u << 24,
       {"interp.id", "interp.next", "interp.threads_head", "interp.imports_modules",
        "interp.ceval_gil", "interp.gil_runtime_state", "interp.gil_locked", "interp.gil_holder"}},
      {"tstate.size",
       1u << 16,
       {"tstate.next", "tstate.interp", "tstate.current_frame", "tstate.thread_id",
        "tstate.native_thread_id"}},
      {"frame.size", 1u << 10, {"frame.previous", "frame.executable", "frame.instr_ptr"}},
      {"code.size",
       1u << 12,
       {"code.filename", "code.name", "code.qualname", "code.linetable", "code.firstlineno",
        "code.co_code_adaptive"}},
      {"object.size", 64, {"object.ob_type"}},
      {"type.size", 1u << 12, {"type.tp_flags"}},
      {"dict.size", 256, {"dict.ma_keys", "dict.ma_values"}},
      {"long.size", 256, {"long.lv_tag"}},
      {"bytes.size", 256, {"bytes.ob_size"}},
      {"unicode.size", 256, {"unicode.state", "unicode.length"}},
  };
  for (const Check& c : checks) {
    uint64_t object_size = d[c.size];
    bool sane = object_size > 0 && object_size <= c.max_size;
    for (const char* f : c.fields) sane &= d[f] < object_size && d[f] + 8 <= object_size;
    if (!sane) {
      *why = std::string("has _Py_DebugOffsets that fail validation (") + c.size + " " +
             std::to_string(object_size) + ")";
      return std::nullopt;
    }
  }
  if (d["frame.owner"] >= d["frame.size"] || d["code.co_code_adaptive"] > d["code.size"] ||
      d["unicode.asciiobject_size"] > d["unicode.size"] || d["long.ob_digit"] > d["long.size"] ||
      d["bytes.ob_sval"] > d["bytes.size"]) {
    *why = "has _Py_DebugOffsets that fail validation (an object's data outside it)";
    return std::nullopt;
  }
  uint32_t firsttraceable = 0, ht_cached_keys = 0;
  for (const Extras& e : kExtras)
    if (e.minor == minor) firsttraceable = e.firsttraceable, ht_cached_keys = e.ht_cached_keys;
  if (d.has("heap_type.ht_cached_keys"))
    ht_cached_keys = static_cast<uint32_t>(d["heap_type.ht_cached_keys"]);
  auto u = [&](const char* name) { return static_cast<uint32_t>(d[name]); };
  uint32_t gil = u("interp.gil_runtime_state");
  CPythonLayout l = {
      .version_min = py_version & 0xffff0000u,
      .version_max = py_version | 0xffffu,
      .name = "debug offsets",
      .runtime = {.interpreters_head = u("runtime.interpreters_head"), .gil = -1},
      .interp = {.next = u("interp.next"),
                 .threads_head = u("interp.threads_head"),
                 .modules = u("interp.imports_modules"),
                 .id = u("interp.id"),
                 .gil_pointer = u("interp.ceval_gil")},
      .gil = kGil,
      .tstate = {.next = u("tstate.next"),
                 .interp = u("tstate.interp"),
                 .thread_id = u("tstate.thread_id"),
                 .native_thread_id = u("tstate.native_thread_id"),
                 .frame = u("tstate.current_frame"),
                 .cframe_current_frame = -1,
                 .size = u("tstate.size")},
      .frame =
          {.code = u("frame.executable"),
           .previous = u("frame.previous"),
           .instr = u("frame.instr_ptr"),
           .is_entry = 0,
           .owner = u("frame.owner"),
           .owner_generator = 1,
           // 3.13: FRAME_OWNED_BY_CSTACK = 3; 3.14+: FRAME_OWNED_BY_INTERPRETER = 3 (and CSTACK 4)
           .owner_shim = 3,
           .code_tag_bits = minor >= 14 ? 3u : 0u},
      .code = {.firstlineno = u("code.firstlineno"),
               .filename = u("code.filename"),
               .name = u("code.name"),
               .qualname = u("code.qualname"),
               .linetable = u("code.linetable"),
               .code_adaptive = u("code.co_code_adaptive"),
               .firsttraceable = firsttraceable},
      .str = {.length = u("unicode.length"),
              .state = u("unicode.state"),
              .ascii_data = u("unicode.asciiobject_size"),
              // PyCompactUnicodeObject: the ASCII header, then utf8_length and utf8.
              .compact_data = d.has("unicode.compactunicodeobject_size")
                                  ? u("unicode.compactunicodeobject_size")
                                  : u("unicode.asciiobject_size") + 16},
      .bytes = {.size = u("bytes.ob_size"), .data = u("bytes.ob_sval")},
      .object = {.ob_type = u("object.ob_type"),
                 .tp_flags = u("type.tp_flags"),
                 .tp_basicsize = d.has("type.tp_basicsize") ? u("type.tp_basicsize") : 32,
                 .ht_cached_keys = ht_cached_keys,
                 .module_dict = 16,
                 .managed_dict_flag = 1u << 4,
                 .inline_values_flag = 1u << 2,
                 .values = CPythonLayout::Values::kInline,
                 .managed_values = 0,
                 .managed_dict = -24,
                 .inline_capacity = 0,
                 .inline_valid = 3,
                 .inline_array = 8},
      .integer = {.size = u("long.lv_tag"), .digits = u("long.ob_digit"), .tagged = true},
      .dict = kDict,
  };
  l.dict.keys = u("dict.ma_keys");
  l.dict.values = u("dict.ma_values");
  // The GIL's fields as offsets inside struct _gil_runtime_state; its futexes
  // only when the structure starts as we know it.
  bool gil_known =
      u("interp.gil_holder") == gil + kGil.holder && u("interp.gil_locked") == gil + kGil.locked;
  if (!gil_known) l.gil.cond_size = 0;  // no holder, no waiters: not a struct we know
  return l;
}

std::string cpython_version_text(uint32_t v) {
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 0xff) + "." +
         std::to_string((v >> 8) & 0xff);
}

}  // namespace stackaudit
