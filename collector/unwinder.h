// Unwinds a captured thread with libunwind, after the thread runs again, from
// the copy of its stack and its saved registers. Unwind tables (.eh_frame_hdr
// and .eh_frame) are read from the module files we keep open, not from the
// target; only addresses outside the copy and outside read-only file data are
// read from the live process (collector/thread_memory.h says what is read
// where).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "collector/module_map.h"
#include "injector/capture_types.h"
#include "injector/memory.h"

typedef struct unw_addr_space* unw_addr_space_t;

namespace stackaudit {

struct UnwindResult {
  std::vector<uint64_t> ips;  // ips[0] is the thread's pc; the rest are return addresses
  std::vector<uint64_t> sps;  // each frame's stack pointer: its locals lie in [sps[i], sps[i + 1])
  // Frames found by following the frame-pointer chain through code without
  // unwind information (a JIT's): frame_pointer[i] for ips[i].
  std::vector<bool> frame_pointer;
  bool truncated = false;
  std::string reason;  // why it stopped early, when truncated
};

class Unwinder {
 public:
  Unwinder(const ModuleMap& modules, Memory& memory, size_t max_frames = 256);
  ~Unwinder();
  Unwinder(const Unwinder&) = delete;
  Unwinder& operator=(const Unwinder&) = delete;

  UnwindResult unwind(const RawThread& thread);

  // Forget cached unwind info (after the module set changed).
  void flush();

  // libunwind callbacks reach these through the context pointer.
  struct Context;
  const ModuleMap& modules() const { return modules_; }

 private:
  UnwindResult unwind_once(Context& ctx);
  // Goes on from where the tables ended, along the frame-pointer chain,
  // when that goes further.
  void extend_by_frame_pointers(Context& ctx, UnwindResult& out);
  void follow_frame_pointers(Context& ctx, UnwindResult& out);
  bool has_unwind_table(uint64_t ip) const;
  uint64_t frame_pointer_above(Context& ctx, uint64_t sp);

  const ModuleMap& modules_;
  Memory& memory_;  // the live process
  size_t max_frames_;
  unw_addr_space_t space_ = nullptr;
};

}  // namespace stackaudit
