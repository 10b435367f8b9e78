// The CPython interpreters the suite audits, and a way to start a script under
// each: Debian's python3.11, other CPythons found on the machine (pyenv, PATH,
// STACKAUDIT_TEST_PYTHONS), and Debian unstable's 3.13-3.15 inside the rootfs
// setup.sh makes, started in their own mount and PID namespaces (a container,
// see RootfsChild), with tests/targets at /mnt and a /tmp of their own.
#pragma once

#include <sys/types.h>

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "tests/support.h"

namespace stackaudit::test {

struct PythonTarget {
  std::string version;  // "3.13"
  bool container = false;
  // "py3_13_host", "py3_14_container": a test-name suffix.
  std::string name() const;
};
// How gtest prints one: "3.13 in a container".
void PrintTo(const PythonTarget& target, std::ostream* out);

// Every slot the version tests cover, present or not: a missing one is a
// skipped test that names what is missing.
std::vector<PythonTarget> python_targets();

// A Python script running under one target.
class PythonProcess {
 public:
  // Starts `script` (a file of tests/targets) with `args`. Null, with *missing
  // naming what is absent, when the interpreter is not on this machine.
  static std::unique_ptr<PythonProcess> start(const PythonTarget& target, const std::string& script,
                                              std::string* missing,
                                              const std::vector<std::string>& args = {});
  ~PythonProcess();

  pid_t pid() const { return pid_; }  // the interpreter, as the host sees it
  Child& io() { return container_ ? container_->io() : *host_; }
  // The script's path as the interpreter sees it (inside the container's root).
  const std::string& script() const { return script_; }
  const std::string& interpreter() const { return interpreter_; }
  // A thread id the script printed (its own namespace's) as the host sees it;
  // -1 when no thread of the process has it.
  long host_tid(long tid) const;

 private:
  PythonProcess() = default;
  std::unique_ptr<Child> host_;
  std::unique_ptr<TempDir> tmp_;  // the container's /tmp
  std::unique_ptr<RootfsChild> container_;
  pid_t pid_ = -1;
  std::string script_;
  std::string interpreter_;
};

}  // namespace stackaudit::test
