// Turns addresses into functions, files and lines with elfutils libdw, inlined
// calls included. Debug info is looked up locally only: next to the file, by
// .gnu_debuglink and by build-id under /usr/lib/debug (the target's own first
// when it runs under another root, a container's), and the embedded
// .gnu_debugdata (MiniDebugInfo); never over the network (debuginfod is off).
#pragma once

#include <elfutils/libdwfl.h>

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "collector/module_map.h"
#include "collector/perf_map.h"
#include "collector/snapshot.h"

namespace stackaudit {

// Which modules' frames get a source file and line (and their inlined calls)
// from debug info. System libraries (libc, libstdc++, ... under /lib and
// /usr/lib) are left to their symbol tables by default: their debug info,
// where installed, is compressed, and inflating libc's alone costs several
// times a whole dump of a small process (docs/benchmarks.md, 1.9).
enum class SourceLines {
  kProgram,  // the executable and libraries outside the system's directories
  kAll,      // every module with debug info
};

class Symbolizer {
 public:
  explicit Symbolizer(const ModuleMap& modules, SourceLines lines = SourceLines::kProgram);
  ~Symbolizer();
  Symbolizer(const Symbolizer&) = delete;
  Symbolizer& operator=(const Symbolizer&) = delete;

  // Re-reports the modules after ModuleMap changed; keeps the cache of
  // modules that are still loaded at the same place.
  void reload();

  // The frames for one address, innermost first: calls inlined at that
  // address, then the function that contains it. A return address (every frame
  // but a thread's first) is looked up at ip - 1, inside the call instruction.
  // Code in anonymous executable memory (a JIT's) is named from the
  // target's perf map (collector/perf_map.h).
  const std::vector<Frame>& symbolize(uint64_t ip, bool return_address);
  // A new snapshot: the perf map is looked at again (once, at its first
  // address in anonymous code).
  void new_snapshot() { perf_map_checked_ = false; }

 private:
  std::vector<Frame> lookup(uint64_t ip, uint64_t pc);
  const ModuleMap& modules_;
  SourceLines lines_;
  // Where separate debug info is looked for (libdw's syntax); the callbacks
  // point at it.
  std::string debuginfo_path_;
  char* debuginfo_path_c_ = nullptr;
  Dwfl_Callbacks callbacks_{};
  Dwfl* dwfl_ = nullptr;
  // The modules of the last report, by file and load bias.
  std::map<std::pair<const ElfFile*, uint64_t>, Dwfl_Module*> reported_;
  std::unordered_map<uint64_t, std::vector<Frame>> cache_;
  PerfMap perf_map_;
  bool perf_map_checked_ = false;
  std::vector<uint64_t> anonymous_cached_;  // cache_ keys named from the perf map (or not)
};

// "std::mutex::lock()" -> "std::mutex::lock"; "f(int) const" -> "f".
std::string strip_parameters(const std::string& demangled);
// Demangles an Itanium C++ name; returns the input when it is not one.
std::string demangle(const char* name);

}  // namespace stackaudit
