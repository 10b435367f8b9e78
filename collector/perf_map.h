// Names for code in anonymous executable memory, from the perf map a JIT
// writes: /tmp/perf-PID.map, one "START SIZE NAME" line per piece of code
// (hexadecimal START and SIZE), the convention of perf, written by the JVM
// (jcmd PID Compiler.perfmap, -XX:+DumpPerfMapAtExit), Node.js
// (--perf-basic-prof), LuaJIT, .NET and others. A target in a container
// writes it in its own /tmp, under its own PID: it is read through
// /proc/PID/root with the PID of the target's namespace.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "injector/unique_fd.h"

namespace stackaudit {

struct PerfMapEntry {
  uint64_t end = 0;
  std::string name;
};

// The entries of a perf map, by start address. A later line for the same
// start replaces an earlier one (the JIT reused the memory); malformed lines
// are skipped; at most max_entries are kept.
std::map<uint64_t, PerfMapEntry> parse_perf_map(std::string_view text, size_t max_entries);

class PerfMap {
 public:
  explicit PerfMap(pid_t pid) : pid_(pid) {}

  // Reads the file again if it changed since the last read (size or time);
  // returns true when the entries changed. Cheap when it did not: one stat.
  bool refresh();
  // The name of the code that holds ip, and where that code starts; null
  // when no entry holds it.
  const std::string* find(uint64_t ip, uint64_t* start) const;
  // The file, as the target names it ("/tmp/perf-123.map"); "" before refresh().
  const std::string& path() const { return path_; }

  static constexpr size_t kMaxEntries = 200'000;
  static constexpr uint64_t kMaxBytes = 32ull << 20;

 private:
  pid_t pid_;
  UniqueFd open_in_target_root() const;

  std::string path_;  // in the target's namespace
  uint64_t size_ = 0;
  int64_t mtime_ns_ = -1;
  std::map<uint64_t, PerfMapEntry> entries_;
};

}  // namespace stackaudit
