// The live target's memory, read without stopping it: process_vm_readv, with a
// /proc/PID/mem fallback for kernels or sandboxes that refuse it.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "injector/memory.h"
#include "injector/unique_fd.h"

namespace stackaudit {

class RemoteMemory final : public Memory {
 public:
  explicit RemoteMemory(pid_t pid) : pid_(pid) {}
  RemoteMemory(const RemoteMemory&) = delete;
  RemoteMemory& operator=(const RemoteMemory&) = delete;

  // As Memory::read, with errno set on failure. Allocation-free: safe inside
  // a stop window.
  ssize_t read(uint64_t addr, void* buf, size_t len) override;

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
  UniqueFd mem_fd_;
  bool use_proc_mem_ = false;
};

}  // namespace stackaudit
