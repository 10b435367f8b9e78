#include "collector/cpython_layout.h"

namespace stackaudit {
namespace {

// CPython 3.11, x86-64, release build (offsetof on 3.11.2's internal headers).
constexpr CPythonLayout kPython311 = {
    .version_min = 0x030b0000,
    .version_max = 0x030bffff,
    .name = "3.11",
    .runtime = {.interpreters_head = 40,
                .gil_locked = 376,
                .gil_cond = 392,
                .gil_cond_size = 48,
                .gil_mutex = 440,
                .gil_mutex_size = 40,
                .tstate_current = 576},
    .interp = {.next = 0, .threads_head = 16, .modules = 888},
    .tstate = {.next = 8, .cframe = 56, .thread_id = 152, .native_thread_id = 160},
    .cframe = {.current_frame = 8},
    .frame = {.code = 32,
              .previous = 48,
              .prev_instr = 56,
              .is_entry = 68,
              .owner = 69,
              .owner_generator = 1},
    .code = {.firstlineno = 72,
             .filename = 112,
             .name = 120,
             .qualname = 128,
             .linetable = 136,
             .firsttraceable = 168,
             .code_adaptive = 184},
    .str = {.length = 16, .state = 32, .ascii_data = 48, .compact_data = 72},
    .bytes = {.size = 16, .data = 32},
    .object = {.ob_type = 8,
               .tp_flags = 168,
               .ht_cached_keys = 872,
               .ob_size = 16,
               .long_digits = 24,
               .module_dict = 16,
               .managed_dict_flag = 1u << 4,
               .managed_values = -32,
               .managed_dict = -24},
    .dict = {.keys = 32,
             .values = 40,
             .log2_size = 8,
             .log2_index_bytes = 9,
             .kind = 10,
             .nentries = 24,
             .indices = 32,
             .general_entry_size = 24,
             .unicode_entry_size = 16},
};

constexpr const CPythonLayout* kLayouts[] = {&kPython311};

}  // namespace

const CPythonLayout* cpython_layout(uint32_t version) {
  for (const CPythonLayout* l : kLayouts)
    if (version >= l->version_min && version <= l->version_max) return l;
  return nullptr;
}

std::string cpython_version_text(uint32_t v) {
  return std::to_string(v >> 24) + "." + std::to_string((v >> 16) & 0xff) + "." +
         std::to_string((v >> 8) & 0xff);
}

}  // namespace stackaudit
