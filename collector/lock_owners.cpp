#include "collector/lock_owners.h"

#include <linux/futex.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "injector/proc.h"

namespace stackaudit {
namespace {

// glibc's struct __pthread_mutex_s on x86_64: the lock word is the futex.
struct GlibcMutex {
  int32_t lock;
  uint32_t count;  // recursion depth of a recursive mutex
  int32_t owner;   // the holder's tid (its PID namespace's)
  uint32_t nusers;
  int32_t kind;
};
constexpr int32_t kMutexKindMask = 3;  // normal, recursive, error-checking, adaptive
constexpr int32_t kMutexProcessShared = 0x80;
constexpr int32_t kMutexKnownBits = 0x3 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200;
constexpr int32_t kMutexOwnerDied = 0x7fffffff;  // PTHREAD_MUTEX_INCONSISTENT
constexpr int32_t kMutexUnrecoverable = 0x7ffffffe;

// glibc's (2.25+) struct __pthread_rwlock_arch_t on x86_64. Readers sleep on
// wrphase_futex, writers on it or on writers_futex.
struct GlibcRwlock {
  uint32_t readers;  // count << 3 | flags
  uint32_t writers;
  uint32_t wrphase_futex;
  uint32_t writers_futex;
  uint32_t pad3;
  uint32_t pad4;
  int32_t cur_writer;  // the writer's tid while one holds it, else 0
  int32_t shared;
  int8_t rwelision;
  uint8_t pad1[7];
  uint64_t pad2;
  uint32_t flags;
};
static_assert(sizeof(GlibcRwlock) == 56);
constexpr uint32_t kRwlockWrLocked = 2;
constexpr unsigned kRwlockReaderShift = 3;

enum class LockKind { kNone, kMutex, kRwlock };

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

// What the innermost frames say the futex is: a glibc mutex or rwlock. A
// libc that is not glibc (musl) keeps its locks otherwise: not read.
LockKind lock_kind(const Thread& t) {
  size_t looked = 0;
  for (const Frame& f : t.frames) {
    if (f.kind != Frame::Kind::kNative || ++looked > 8) break;
    if (f.module.starts_with("ld-musl") || f.module.starts_with("libc.musl"))
      return LockKind::kNone;
    std::string_view fn = f.function;
    // By the pthread entry point, not the low-level lock under it: glibc's
    // own locks (malloc's, stdio's) wait in __lll_lock_wait_private on a bare
    // int, with no mutex around it to read.
    if (contains(fn, "pthread_rwlock_") || contains(fn, "shared_mutex")) return LockKind::kRwlock;
    if (contains(fn, "pthread_mutex_")) return LockKind::kMutex;
  }
  return LockKind::kNone;
}

// Threads by the id the target itself uses (its PID namespace's).
using ByNsTid = std::map<pid_t, Thread*>;

ByNsTid by_ns_tid(std::vector<Thread>& threads) {
  ByNsTid out;
  for (Thread& t : threads) out.emplace(t.ns_tid > 0 ? t.ns_tid : t.tid, &t);
  return out;
}

LockOwner owner_named(pid_t ns_tid, const ByNsTid& threads) {
  LockOwner o;
  auto it = threads.find(ns_tid);
  if (it == threads.end()) {
    o.tid = ns_tid;
    o.alive = false;
    return o;
  }
  o.tid = it->second->tid;
  o.name = thread_label(*it->second);
  return o;
}

std::string held_by(const LockOwner& o) {
  if (!o.alive)
    return "held by tid " + std::to_string(o.tid) +
           ", which is no thread of the process: it ended holding the lock";
  return "held by \"" + o.name + "\" (tid " + std::to_string(o.tid) + ")";
}

// A process-shared lock's owner that is no thread of the target: a thread of
// the process /proc says it belongs to, when it still exists.
std::string held_elsewhere(pid_t tid, const char* what) {
  std::string text = "held by tid " + std::to_string(tid);
  auto status = proc::read_file("/proc/" + std::to_string(tid) + "/status");
  pid_t tgid = 0;
  if (status)
    if (size_t at = status->find("\nTgid:"); at != std::string::npos)
      tgid = static_cast<pid_t>(std::atoi(status->c_str() + at + 6));
  if (tgid > 0) {
    std::string comm = proc::read_file("/proc/" + std::to_string(tgid) + "/comm").value_or("");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    text += " of PID " + std::to_string(tgid) + " (" + comm + ")";
  } else {
    text += " of another process";
  }
  return text + " (a process-shared " + what + ")";
}

std::optional<LockInfo> read_mutex(uint64_t futex, uint64_t op, Memory& memory,
                                   const ByNsTid& threads) {
  GlibcMutex m;
  if (!memory.read_exact(futex, &m, sizeof m)) return std::nullopt;
  if ((m.kind & ~kMutexKnownBits) != 0) return std::nullopt;  // not a glibc mutex
  LockInfo info;
  info.kind = "pthread_mutex";
  info.address = futex;
  pid_t owner = (op == FUTEX_LOCK_PI || op == FUTEX_LOCK_PI2)
                    ? static_cast<pid_t>(static_cast<uint32_t>(m.lock) & FUTEX_TID_MASK)
                    : m.owner;
  if (owner == kMutexOwnerDied || owner == kMutexUnrecoverable) {
    info.detail = "its owner died holding it (a robust mutex, not yet made consistent)";
    return info;
  }
  if (owner <= 0) {
    // Locked but no owner yet: taken a moment ago (glibc records the owner
    // just after the lock word).
    info.detail = m.lock != 0 ? "held; its new owner is not recorded yet"
                              : "free: released since the thread went to sleep";
    return info;
  }
  info.owner = owner_named(owner, threads);
  info.detail = held_by(*info.owner);
  if (!info.owner->alive && (m.kind & kMutexProcessShared))
    info.detail = held_elsewhere(owner, "mutex");
  if ((m.kind & kMutexKindMask) == 1 && m.count > 1)
    info.detail += ", locked " + std::to_string(m.count) + " times";
  return info;
}

// The rwlock whose futex this is: it sits 8 bytes into the lock (readers, and
// a writer waiting for readers to leave) or 12 (a writer waiting for another
// writer); the one whose unused fields are zero and whose writer agrees with
// its flags.
std::optional<LockInfo> read_rwlock(uint64_t futex, Memory& memory, const ByNsTid& threads) {
  for (uint64_t offset : {8, 12}) {
    GlibcRwlock r;
    if (futex < offset || !memory.read_exact(futex - offset, &r, sizeof r)) continue;
    bool wrlocked = (r.readers & kRwlockWrLocked) != 0;
    if (r.pad3 != 0 || r.pad4 != 0 || r.flags > 2 || r.shared < 0 || r.shared > 1) continue;
    if (r.cur_writer < 0 || (!wrlocked && r.cur_writer != 0)) continue;
    LockInfo info;
    info.kind = "pthread_rwlock";
    info.address = futex - offset;
    uint32_t readers = r.readers >> kRwlockReaderShift;
    if (r.cur_writer > 0) {
      info.owner = owner_named(r.cur_writer, threads);
      info.detail = "held for writing" + held_by(*info.owner).substr(4);
      if (!info.owner->alive && r.shared == 1) info.detail = held_elsewhere(r.cur_writer, "rwlock");
    } else if (readers > 0) {
      // A writer that has claimed the lock waits for the readers in it to
      // leave (glibc records the writer once they have).
      info.detail = "held for reading by " + std::to_string(readers) + " thread" +
                    (readers == 1 ? "" : "s") + " (a rwlock does not record its readers)";
    } else {
      info.detail = "free: released since the thread went to sleep";
    }
    return info;
  }
  return std::nullopt;
}

}  // namespace

std::string thread_label(const Thread& t) {
  return t.python && !t.python->thread_name.empty() ? t.python->thread_name : t.name;
}

void read_lock_owners(std::vector<Thread>& threads, Memory& memory) {
  ByNsTid by_ns = by_ns_tid(threads);
  for (Thread& t : threads) {
    if (!t.blocking || t.blocking->category != "lock" || !t.syscall || t.syscall->name != "futex")
      continue;
    uint64_t futex = t.syscall->args[0];
    uint64_t op = t.syscall->args[1] & FUTEX_CMD_MASK;
    if (op != FUTEX_WAIT && op != FUTEX_WAIT_BITSET && op != FUTEX_LOCK_PI && op != FUTEX_LOCK_PI2)
      continue;
    switch (lock_kind(t)) {
      case LockKind::kMutex:
        t.blocking->lock = read_mutex(futex, op, memory, by_ns);
        break;
      case LockKind::kRwlock:
        t.blocking->lock = read_rwlock(futex, memory, by_ns);
        break;
      case LockKind::kNone:
        break;
    }
  }
}

void read_python_locks(std::vector<Thread>& threads, const PyProcessInfo& python,
                       CPythonReader& reader) {
  ByNsTid by_ns = by_ns_tid(threads);
  std::map<uint64_t, pid_t> by_ident;  // threading.get_ident() -> tid (the target's)
  for (const PyThreadInfo& p : python.threads) by_ident.emplace(p.thread_id, p.native_tid);
  for (const PyThreadInfo& p : python.threads) {
    auto it = by_ns.find(static_cast<pid_t>(p.native_tid));
    if (it == by_ns.end()) continue;
    Thread& t = *it->second;
    if (!t.blocking || t.blocking->category != "lock" || !t.syscall || t.syscall->name != "futex" ||
        (t.python && t.python->waits_for_gil))
      continue;
    auto caller = std::find_if(p.frames.begin(), p.frames.end(),
                               [](const PyFrameInfo& f) { return !f.incomplete; });
    if (caller == p.frames.end()) continue;
    auto w = reader.lock_waited_on(caller->address, t.syscall->args[0]);
    if (!w) continue;
    LockInfo info;
    info.address = w->address;
    if (!w->reentrant) {
      info.kind = "python_lock";
      info.detail = "a threading.Lock records no owner: any thread may release it";
    } else if (w->owner_ident == 0) {
      info.kind = "python_rlock";
      info.detail = "free: released since the thread went to sleep";
    } else {
      info.kind = "python_rlock";
      auto owner = by_ident.find(w->owner_ident);
      if (owner != by_ident.end()) {
        info.owner = owner_named(owner->second, by_ns);
        info.detail = held_by(*info.owner);
      } else {
        info.owner = LockOwner{0, "", false};
        info.detail = "held by a thread that has ended (threading ident " +
                      std::to_string(w->owner_ident) + ")";
      }
      if (w->count > 1) info.detail += ", acquired " + std::to_string(w->count) + " times";
    }
    t.blocking->lock = std::move(info);
  }
}

void confirm_deadlocks(std::vector<Deadlock>& rings, pid_t pid, const std::vector<Thread>& threads,
                       Memory& memory) {
  if (rings.empty()) return;
  std::vector<Thread> again = threads;  // the locks read a second time
  for (Thread& t : again)
    if (t.blocking && t.blocking->lock && t.blocking->lock->kind.starts_with("pthread_"))
      t.blocking->lock.reset();
  read_lock_owners(again, memory);
  std::map<pid_t, const Thread*> by_tid;
  for (const Thread& t : again) by_tid.emplace(t.tid, &t);
  auto still = [&](const Deadlock::Member& m) {
    auto it = by_tid.find(m.tid);
    if (it == by_tid.end() || !it->second->syscall) return false;
    const Thread& t = *it->second;
    auto now = proc::read_syscall(pid, m.tid);
    if (!now || now->kind != SyscallState::Kind::kInSyscall || now->nr != t.syscall->nr ||
        now->args[0] != t.syscall->args[0])
      return false;
    if (!m.waits_for.kind.starts_with("pthread_")) return true;  // a Python lock: its futex
    const auto& lock = t.blocking ? t.blocking->lock : std::nullopt;
    return lock && lock->owner && m.waits_for.owner && lock->owner->tid == m.waits_for.owner->tid;
  };
  std::erase_if(rings, [&](const Deadlock& d) {
    return !std::all_of(d.threads.begin(), d.threads.end(), still);
  });
}

std::vector<Deadlock> find_deadlocks(const std::vector<Thread>& threads) {
  // Each waiter has one edge, to its lock's owner: following edges from any
  // thread ends at a thread that waits for no known owner, or runs into a
  // ring. Threads met on an earlier walk are not walked again.
  std::map<pid_t, const Thread*> by_tid;
  for (const Thread& t : threads) by_tid.emplace(t.tid, &t);
  auto next = [&](const Thread* t) -> const Thread* {
    if (!t->blocking || !t->blocking->lock || !t->blocking->lock->owner) return nullptr;
    const LockOwner& o = *t->blocking->lock->owner;
    if (!o.alive) return nullptr;
    auto it = by_tid.find(o.tid);
    return it == by_tid.end() ? nullptr : it->second;
  };
  std::set<pid_t> done;
  std::vector<Deadlock> rings;
  for (const Thread& start : threads) {
    std::vector<const Thread*> path;
    const Thread* t = &start;
    while (t && !done.count(t->tid) && std::find(path.begin(), path.end(), t) == path.end()) {
      path.push_back(t);
      t = next(t);
    }
    if (t && !done.count(t->tid)) {  // the walk came back to a thread on its path
      auto from = std::find(path.begin(), path.end(), t);
      std::vector<const Thread*> ring(from, path.end());
      std::rotate(
          ring.begin(),
          std::min_element(ring.begin(), ring.end(),
                           [](const Thread* a, const Thread* b) { return a->tid < b->tid; }),
          ring.end());
      Deadlock d;
      for (const Thread* m : ring)
        d.threads.push_back({m->tid, thread_label(*m), *m->blocking->lock, m->blocking->site});
      rings.push_back(std::move(d));
    }
    for (const Thread* p : path) done.insert(p->tid);
  }
  return rings;
}

}  // namespace stackaudit
