#include "injector/memory.h"

#include <cerrno>
#include <cstring>

namespace stackaudit {

void CannedMemory::put(uint64_t addr, std::vector<uint8_t> bytes) {
  regions_[addr] = std::move(bytes);
}

ssize_t CannedMemory::read(uint64_t addr, void* buf, size_t len) {
  if (len == 0) return 0;
  auto it = regions_.upper_bound(addr);
  if (it == regions_.begin()) return errno = EFAULT, -1;
  --it;
  const std::vector<uint8_t>& bytes = it->second;
  uint64_t offset = addr - it->first;
  if (offset >= bytes.size()) return errno = EFAULT, -1;
  size_t n = std::min<size_t>(len, bytes.size() - offset);
  std::memcpy(buf, bytes.data() + offset, n);
  return static_cast<ssize_t>(n);
}

}  // namespace stackaudit
