// Where the target's bytes come from. Readers of the target (the unwinder, the
// module map, the CPython reader, and the asyncio and lock-owner readers to
// come) take a Memory&, so that the same walk runs on the live process, on a
// captured stack copy, or on canned bytes in a test (and later a core file).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace stackaudit {

class Memory {
 public:
  virtual ~Memory() = default;

  // Copies up to len bytes from addr. Returns the bytes copied (a read that
  // runs into unreadable memory stops there), or -1 when nothing at addr can
  // be read.
  virtual ssize_t read(uint64_t addr, void* buf, size_t len) = 0;

  // True only when all len bytes were read.
  bool read_exact(uint64_t addr, void* buf, size_t len) {
    return read(addr, buf, len) == static_cast<ssize_t>(len);
  }
};

// Bytes placed at chosen addresses; everything else is unreadable. For tests
// of readers, and for anything replayed from a saved capture.
class CannedMemory final : public Memory {
 public:
  // Places bytes at addr. Regions must not overlap.
  void put(uint64_t addr, std::vector<uint8_t> bytes);
  ssize_t read(uint64_t addr, void* buf, size_t len) override;

 private:
  std::map<uint64_t, std::vector<uint8_t>> regions_;  // by start address
};

}  // namespace stackaudit
