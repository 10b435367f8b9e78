#include "injector/remote_memory.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace stackaudit {

ssize_t RemoteMemory::read(uint64_t addr, void* buf, size_t len) {
  if (len == 0) return 0;
  if (!use_proc_mem_) {
    iovec local{buf, len};
    iovec remote{reinterpret_cast<void*>(addr), len};
    ssize_t n = ::process_vm_readv(pid_, &local, 1, &remote, 1, 0);
    if (n >= 0 || (errno != ENOSYS && errno != EPERM)) return n;
    // Some seccomp profiles forbid process_vm_readv; /proc/PID/mem needs the
    // same ptrace permission but is a plain file.
    use_proc_mem_ = true;
  }
  if (!mem_fd_) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/mem", pid_);
    mem_fd_.reset(::open(path, O_RDONLY | O_CLOEXEC));
    if (!mem_fd_) return -1;
  }
  ssize_t n;
  do {
    n = ::pread(mem_fd_.get(), buf, len, static_cast<off_t>(addr));
  } while (n < 0 && errno == EINTR);
  return n;
}

}  // namespace stackaudit
