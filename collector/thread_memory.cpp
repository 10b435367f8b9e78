#include "collector/thread_memory.h"

#include <cstring>

namespace stackaudit {

ssize_t CapturedThreadMemory::read(uint64_t addr, void* buf, size_t len) {
  const RawThread& t = thread_;
  auto n = static_cast<ssize_t>(len);
  // Written so that no address, however wild, overflows the bounds check.
  if (t.stack.size() >= len && addr >= t.stack_start &&
      addr - t.stack_start <= t.stack.size() - len) {
    std::memcpy(buf, t.stack.data() + (addr - t.stack_start), len);
    return n;
  }
  if (modules_.read_readonly(addr, buf, len)) return n;
  if (addr >= t.stack_map_start && addr < t.stack_map_end) return -1;
  if (live_.read_exact(addr, buf, len)) return n;
  // A CIE's personality pointer is often indirect, through writable .data
  // (DW.ref.__gxx_personality_v0). Unwinding never uses its value, so when the
  // live read fails (the process is gone) the file's bytes will do.
  if (modules_.read_file_image(addr, buf, len)) return n;
  return -1;
}

}  // namespace stackaudit
