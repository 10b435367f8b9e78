// Checks, before any thread is touched, that a PID can be audited, and says in
// one sentence why not.
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>

#include "injector/capture_types.h"

namespace stackaudit {

// A target that cannot be audited. The message is one sentence for the user.
class TargetError : public std::runtime_error {
 public:
  enum class Reason {
    kNotFound,
    kSelf,
    kZombie,
    kKernelThread,
    kPermission,
    kAlreadyTraced,
    kNot64Bit,
  };
  TargetError(Reason reason, const std::string& message)
      : std::runtime_error(message), reason_(reason) {}
  Reason reason() const { return reason_; }

 private:
  Reason reason_;
};

// Throws TargetError; returns what /proc says about the process otherwise.
ProcessInfo check_target(pid_t pid);

// The sentence that tells how to get ptrace permission on this machine.
std::string permission_hint();

}  // namespace stackaudit
