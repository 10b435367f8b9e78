// Where CPython keeps what we read, per version. 3.11 and 3.12 are rows of a
// table, derived with offsetof() from the interpreter's internal headers and
// checked against live interpreters by the tests. 3.13 and later publish most
// of their layout in the running interpreter (_Py_DebugOffsets, at the start of
// _PyRuntime): the layout is read from the target, validated, and completed
// with the few facts the structure does not carry. A version we cannot lay out
// gets native-only output and one warning.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace stackaudit {

struct CPythonLayout {
  uint32_t version_min;  // PY_VERSION_HEX range this row covers, major.minor
  uint32_t version_max;
  const char* name;

  struct {
    uint32_t interpreters_head;
    int32_t gil;  // the GIL inside _PyRuntime (3.11); -1: each interpreter points to its own
  } runtime;
  struct {
    uint32_t next, threads_head, modules, id;
    uint32_t gil_pointer;  // ceval.gil: the GIL this interpreter runs under (3.12+)
  } interp;
  struct {  // struct _gil_runtime_state; cond_size 0 when it is not one we know: no GIL facts
    uint32_t holder, locked, cond, cond_size, mutex, mutex_size;
  } gil;
  struct {
    uint32_t next, interp, thread_id, native_thread_id;
    uint32_t frame;                // current_frame, or the _PyCFrame holding it (3.11, 3.12)
    int32_t cframe_current_frame;  // -1: `frame` is the current frame itself
    uint32_t size;  // sizeof(PyThreadState) from _Py_DebugOffsets (3.13+); 0 when not published
  } tstate;
  struct {
    uint32_t code, previous;
    uint32_t instr;     // prev_instr (3.11, 3.12: the last instruction run), instr_ptr (3.13+: the
                        // current one)
    uint32_t is_entry;  // 3.11's flag on the first frame of an eval-loop call; 0: none
    uint32_t owner;
    uint8_t owner_generator;
    uint8_t
        owner_shim;  // owner >= this: the C stack's entry frame, not Python code (3.12+); 0: none
    uint64_t code_tag_bits;  // low bits of a tagged f_executable (3.14+)
  } frame;
  struct {
    uint32_t firstlineno, filename, name, qualname, linetable, code_adaptive;
    uint32_t firsttraceable;  // 0 when unknown: no frame is taken for not yet started
  } code;
  struct {
    uint32_t length, state, ascii_data, compact_data;
  } str;
  struct {
    uint32_t size, data;
  } bytes;
  enum class Values {
    kBeforeObject,   // 3.11: values pointer and dict pointer before the object
    kTaggedPointer,  // 3.12: one pointer before the object, values when its low bit is set
    kInline,         // 3.13+: values inline after the object (tp_basicsize), dict pointer before it
  };
  struct {
    uint32_t ob_type, tp_flags, tp_basicsize, ht_cached_keys, module_dict;
    uint64_t managed_dict_flag, inline_values_flag;
    Values values;
    int32_t managed_values, managed_dict;                  // offsets before the object
    uint32_t inline_capacity, inline_valid, inline_array;  // inside the inline PyDictValues
  } object;
  struct {
    uint32_t size;  // ob_size (3.11) or lv_tag (3.12+)
    uint32_t digits;
    bool tagged;  // lv_tag: digit count << 3, sign in the low bits
  } integer;
  struct {
    uint32_t keys, values, log2_size, log2_index_bytes, kind, nentries, indices;
    uint32_t general_entry_size, unicode_entry_size;
  } dict;
};

// The table row for a PY_VERSION_HEX (3.11, 3.12), or null.
const CPythonLayout* cpython_layout(uint32_t py_version_hex);

// The first version that publishes _Py_DebugOffsets.
constexpr uint32_t kFirstDebugOffsetsVersion = 0x030d0000;
// How many bytes of _Py_DebugOffsets the reader needs at most.
constexpr size_t kDebugOffsetsBytes = 1024;

// A layout from the _Py_DebugOffsets found at the start of _PyRuntime (`raw`,
// `size` bytes) of an interpreter whose Py_Version is `py_version_hex`. nullopt
// when the structure is not sane (cookie, version, sizes, every offset inside
// its object) or the build is free-threaded: *why says which, in words that
// follow "CPython 3.x.y ...".
std::optional<CPythonLayout> cpython_layout_from_debug_offsets(const uint8_t* raw, size_t size,
                                                               uint32_t py_version_hex,
                                                               std::string* why);

// "3.11.2" from 0x030b02f0.
std::string cpython_version_text(uint32_t py_version_hex);

}  // namespace stackaudit
