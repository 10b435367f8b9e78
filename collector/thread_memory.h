// A captured thread's memory as its unwinding must see it, after the thread
// runs again: its stack as it was at the stop (the copy), module files for
// read-only data, nothing from the rest of that stack (it has changed since,
// and a live read there would mix two moments into one stack), the live
// process for everything else, and the files' initial bytes when the process
// is gone.
#pragma once

#include "collector/module_map.h"
#include "injector/capture_types.h"
#include "injector/memory.h"

namespace stackaudit {

class CapturedThreadMemory final : public Memory {
 public:
  CapturedThreadMemory(const RawThread& thread, const ModuleMap& modules, Memory& live)
      : thread_(thread), modules_(modules), live_(live) {}

  // All or nothing: len bytes from one source, or -1.
  ssize_t read(uint64_t addr, void* buf, size_t len) override;

 private:
  const RawThread& thread_;
  const ModuleMap& modules_;
  Memory& live_;
};

}  // namespace stackaudit
