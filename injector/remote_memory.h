// Reading the target's memory without stopping it: process_vm_readv, with a
// /proc/PID/mem fallback for kernels or sandboxes that refuse it.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "injector/unique_fd.h"

namespace stackaudit {

class RemoteMemory {
 public:
  explicit RemoteMemory(pid_t pid) : pid_(pid) {}
  RemoteMemory(const RemoteMemory&) = delete;
  RemoteMemory& operator=(const RemoteMemory&) = delete;

  // Copies up to len bytes from addr. Returns the bytes copied (a read that
  // runs into an unmapped page stops there), or -1 with errno set.
  // Allocation-free: safe inside a stop window.
  ssize_t read(uint64_t addr, void* buf, size_t len);

  // True only when all len bytes were read.
  bool read_exact(uint64_t addr, void* buf, size_t len) {
    return read(addr, buf, len) == static_cast<ssize_t>(len);
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
  UniqueFd mem_fd_;
  bool use_proc_mem_ = false;
};

}  // namespace stackaudit
