// Who holds the lock a blocked thread waits for, and the deadlocks that
// follow. Read from the target's memory without stopping anything: the lock
// word's address is the futex the thread sleeps on (its syscall arguments),
// the owner is what glibc keeps in the lock.
#pragma once

#include <vector>

#include "collector/cpython_reader.h"
#include "collector/snapshot.h"
#include "injector/memory.h"

namespace stackaudit {

// Sets Blocking::lock for every thread blocked on a glibc pthread mutex
// (normal, recursive, error-checking, timed; std::mutex and kin) or rwlock,
// with the owner named when the lock records one.
void read_lock_owners(std::vector<Thread>& threads, Memory& memory);

// Sets Blocking::lock for every Python thread blocked acquiring a
// threading.RLock (with its owner) or a threading.Lock (which has none), on
// CPython 3.11 and 3.12 (CPythonReader::lock_waited_on). `python` is what the
// reader read for this snapshot; threads whose frames it did not read again
// keep what they had.
void read_python_locks(std::vector<Thread>& threads, const PyProcessInfo& python,
                       CPythonReader& reader);

// The rings of the wait-for graph (a lock waiter -> its lock's owner), each
// once, starting from the member with the lowest tid.
std::vector<Deadlock> find_deadlocks(const std::vector<Thread>& threads);

// Keeps the rings whose members still wait where they were seen: nothing is
// stopped, so a ring read across a lock handoff could be one that never
// was. Each member's syscall is read again (same futex) and its glibc lock
// too (same owner); a ring with a member that moved is dropped.
void confirm_deadlocks(std::vector<Deadlock>& rings, pid_t pid, const std::vector<Thread>& threads,
                       Memory& memory);

// How the report names a thread: its Python name when it has one, else its
// OS name.
std::string thread_label(const Thread& t);

}  // namespace stackaudit
