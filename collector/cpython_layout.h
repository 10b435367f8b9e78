// Where CPython keeps what we read, per version: a table of offsets, derived
// with offsetof() from the interpreter's internal headers (Debian's
// libpython3.11-dev, /usr/include/python3.11/internal) and checked against a
// live interpreter by the tests. A version without a row gets native-only
// output and one warning. 3.12 reorganised frames and thread states; 3.13
// publishes _Py_DebugOffsets at the start of _PyRuntime for readers like us.
// Each is a row to add, not code to change.
#pragma once

#include <cstdint>
#include <string>

namespace stackaudit {

struct CPythonLayout {
  uint32_t version_min;  // PY_VERSION_HEX range this row covers, major.minor
  uint32_t version_max;
  const char* name;

  struct {
    uint32_t interpreters_head, gil_locked, gil_cond, gil_cond_size, gil_mutex, gil_mutex_size,
        tstate_current;
  } runtime;
  struct {
    uint32_t next, threads_head, modules;
  } interp;
  struct {
    uint32_t next, cframe, thread_id, native_thread_id;
  } tstate;
  struct {
    uint32_t current_frame;
  } cframe;
  struct {
    uint32_t code, previous, prev_instr, is_entry, owner;
    uint8_t owner_generator;
  } frame;
  struct {
    uint32_t firstlineno, filename, name, qualname, linetable, firsttraceable, code_adaptive;
  } code;
  struct {
    uint32_t length, state, ascii_data, compact_data;
  } str;
  struct {
    uint32_t size, data;
  } bytes;
  struct {
    uint32_t ob_type, tp_flags, ht_cached_keys, ob_size, long_digits, module_dict;
    uint64_t managed_dict_flag;
    int32_t managed_values, managed_dict;  // offsets before the object
  } object;
  struct {
    uint32_t keys, values, log2_size, log2_index_bytes, kind, nentries, indices;
    uint32_t general_entry_size, unicode_entry_size;
  } dict;
};

// The row for a PY_VERSION_HEX, or null when this version is not supported.
const CPythonLayout* cpython_layout(uint32_t py_version_hex);

// "3.11.2" from 0x030b02f0.
std::string cpython_version_text(uint32_t py_version_hex);

}  // namespace stackaudit
