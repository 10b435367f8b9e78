// The threading lock a Python thread waits for, read from the interpreter's
// memory (3.11 and 3.12). Facts from CPython's Modules/_threadmodule.c of
// both versions: a `_thread.lock` is {PyObject_HEAD; PyThread_type_lock
// lock_lock; ...} and a `_thread.RLock` is {PyObject_HEAD; PyThread_type_lock
// rlock_lock; unsigned long rlock_owner; unsigned long rlock_count; ...}; on
// Linux a PyThread_type_lock is a sem_t whose first word is the futex its
// waiters sleep on. A bound method (`lock.__exit__`, pushed by `with lock:`)
// is a PyCFunctionObject whose m_self follows its method definition.
#include <algorithm>

#include "collector/cpython_reader.h"

namespace stackaudit {
namespace {

constexpr uint32_t kLockLock = 16;  // lock_lock, rlock_lock
constexpr uint32_t kRlockOwner = 24, kRlockCount = 32;
constexpr uint32_t kMethodSelf = 24;    // PyCFunctionObject.m_self
constexpr uint32_t kLocalsplus = 72;    // _PyInterpreterFrame.localsplus (3.11, 3.12)
constexpr size_t kStackSlotsRead = 48;  // value stack slots looked at past the locals

}  // namespace

std::optional<CPythonReader::LockWait> CPythonReader::lock_waited_on(uint64_t frame,
                                                                     uint64_t futex) {
  uint32_t minor = version_ >> 16 & 0xff;
  if ((minor != 11 && minor != 12) || !frame || !futex) return std::nullopt;
  const CodeInfo* code = code_with_locals(frame);
  if (!code) return std::nullopt;
  // The value stack follows the locals; its top is not kept while the frame
  // runs a call, so every slot of a window is a candidate, checked by type
  // and by the futex it must lead to.
  std::vector<uint64_t> slots(kStackSlotsRead);
  uint64_t stack = frame + kLocalsplus + 8 * code->locals.size();
  ssize_t got = memory_.read(stack, slots.data(), slots.size() * 8);
  if (got <= 0) return std::nullopt;
  slots.resize(static_cast<size_t>(got) / 8);
  for (uint64_t obj : slots) {
    if (!obj || obj % 8 != 0) continue;
    const std::string* type = &type_name(type_of(obj));
    if (*type == "builtin_function_or_method") {
      if (!read_ptr(obj + kMethodSelf, &obj) || !obj) continue;
      type = &type_name(type_of(obj));
    }
    bool reentrant = *type == "_thread.RLock";
    if (!reentrant && *type != "_thread.lock") continue;
    uint64_t lock = 0;
    if (!read_ptr(obj + kLockLock, &lock) || lock != futex) continue;
    LockWait w;
    w.reentrant = reentrant;
    w.address = obj;
    if (reentrant &&
        (!read_ptr(obj + kRlockOwner, &w.owner_ident) || !read_ptr(obj + kRlockCount, &w.count)))
      continue;
    return w;
  }
  return std::nullopt;
}

}  // namespace stackaudit
