// The target's loaded ELF modules (executable and shared libraries), built from
// its mappings: where each is loaded, its load bias and its file. Each file is
// the one mapped (injector/mapped_file.h): a target in a container resolves to
// its own files, and a file replaced on disk since it was mapped to the
// original.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "collector/elf_file.h"
#include "injector/capture_types.h"
#include "injector/memory.h"

namespace stackaudit {

struct Module {
  std::string path;       // as the target sees it, e.g. /usr/lib/x86_64-linux-gnu/libc.so.6
  std::string open_path;  // what was opened, e.g. /proc/123/root/usr/lib/...; "" for the vDSO
  // Where files that go with it (separate debug info) are looked for: its
  // path under the target's root, /proc/123/root/usr/lib/...; "" for the vDSO.
  std::string lookup_path;
  std::string name;    // basename
  uint64_t start = 0;  // lowest mapped address
  uint64_t end = 0;    // highest mapped address
  uint64_t bias = 0;
  bool program = false;  // the process's executable (not a library)
  // Null when the mapped file could not be opened (ModuleMap::warnings() says
  // why): the module is known by name and range only.
  std::shared_ptr<ElfFile> elf;
};

// Whether a path is in the system's library directories (/lib, /usr/lib and
// their 64-bit twins), where the distribution's shared libraries live.
bool is_system_library(const std::string& path);

class ModuleMap {
 public:
  explicit ModuleMap(pid_t pid) : pid_(pid) {}

  // Rebuilds from a fresh read of the maps. Already opened files are kept.
  // The vDSO, which has no file, is copied from the target through memory.
  // Returns true when the set of modules changed.
  bool update(const std::vector<Mapping>& maps, Memory* memory = nullptr);

  const Module* find(uint64_t addr) const;
  bool is_executable(uint64_t addr) const;
  // Executable memory backed by no file: a JIT's code (collector/perf_map.h).
  bool is_anonymous_code(uint64_t addr) const;
  const std::vector<Module>& modules() const { return modules_; }
  pid_t pid() const { return pid_; }
  // Modules whose mapped file could not be opened (one sentence each); their
  // frames have no symbols.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Reads read-only file-backed bytes at a runtime address, if a module has them.
  bool read_readonly(uint64_t addr, void* out, size_t len) const;
  // Reads file-backed bytes, writable segments included (their initial contents).
  bool read_file_image(uint64_t addr, void* out, size_t len) const;

 private:
  struct OpenedFile {
    std::shared_ptr<ElfFile> elf;  // null when it could not be opened
    std::string opened;            // the path that was opened
    std::string problem;           // why the mapped file could not be opened
  };
  // The ELF file of a mapping (cached by device and inode); sets
  // mod->open_path, or *problem to why the mapped file could not be opened.
  std::shared_ptr<ElfFile> open_file(const Mapping& m, Memory* memory, Module* mod,
                                     std::string* problem);

  pid_t pid_;
  std::string executable_;                                     // /proc/PID/exe as the maps name it
  std::vector<Module> modules_;                                // sorted by start
  std::vector<std::pair<uint64_t, uint64_t>> exec_ranges_;     // sorted executable mappings
  std::vector<std::pair<uint64_t, uint64_t>> anonymous_code_;  // ... those backed by no file
  std::string root_;                                           // target_root(), read once
  // By device and inode: a file is opened once, and its failure said once.
  std::map<std::string, OpenedFile> files_;
  std::vector<std::string> warnings_;
  std::shared_ptr<ElfFile> vdso_;  // the vDSO image, copied from the target once
};

}  // namespace stackaudit
