#include "collector/module_map.h"

#include <unistd.h>

#include <algorithm>

#include "injector/mapped_file.h"

namespace stackaudit {

bool is_system_library(const std::string& path) {
  for (const char* dir : {"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/"})
    if (path.starts_with(dir)) return true;
  return false;
}

namespace {

// Whether a file at the mapping's path that is not the mapped one by device
// and inode has the mapped file's build-id where the target has its copy of
// it: the same build (an overlay's file, whose device number the maps give
// from the layer below), not a replacement.
bool same_build(const ElfFile& elf, const Mapping& m, Memory* memory) {
  uint64_t bias;
  if (!memory || elf.build_id().empty() || !elf.load_bias(m.start, m.offset, &bias)) return false;
  std::string mapped(elf.build_id().size(), '\0');
  return memory->read_exact(elf.build_id_vaddr() + bias, mapped.data(), mapped.size()) &&
         mapped == elf.build_id();
}

}  // namespace

std::shared_ptr<ElfFile> ModuleMap::open_file(const Mapping& m, Memory* memory, Module* mod,
                                              std::string* problem) {
  std::string key = std::to_string(m.dev_major) + ":" + std::to_string(m.dev_minor) + ":" +
                    std::to_string(m.inode);
  auto cached = files_.find(key);
  if (cached == files_.end()) {
    MappedFile file = open_mapped_file(pid_, root_, m);
    OpenedFile opened;
    if (file.fd) {
      // A mapped file that is not an ELF file (a locale archive, a data file
      // the program maps) is no module: nothing to say.
      opened.elf = ElfFile::open(std::move(file.fd), file.opened);
      opened.opened = file.opened;
    } else if (file.other) {
      std::shared_ptr<ElfFile> other = ElfFile::open(std::move(file.other), file.other_path);
      if (other && same_build(*other, m, memory)) {
        opened.elf = std::move(other);
        opened.opened = file.other_path;
      } else {
        opened.problem = file.problem;
      }
    } else {
      opened.problem = file.problem;
    }
    cached = files_.emplace(key, std::move(opened)).first;
  }
  mod->open_path = cached->second.opened;
  if (!cached->second.problem.empty()) *problem = cached->second.problem;
  return cached->second.elf;
}

bool ModuleMap::update(const std::vector<Mapping>& maps, Memory* memory) {
  if (executable_.empty()) {
    char exe[4096];
    std::string link = "/proc/" + std::to_string(pid_) + "/exe";
    ssize_t n = ::readlink(link.c_str(), exe, sizeof exe - 1);
    if (n > 0) executable_.assign(exe, static_cast<size_t>(n));
    root_ = target_root(pid_);
  }
  std::vector<Module> modules;
  std::vector<std::pair<uint64_t, uint64_t>> exec, anonymous_code;
  std::map<std::string, size_t> index;  // path -> position in modules
  // Files that could not be opened, by path: why, and whether any of their
  // mappings holds code (only then is it a module whose frames lose symbols).
  std::map<std::string, std::pair<std::string, bool>> failed;
  for (const Mapping& m : maps) {
    if (m.executable) exec.emplace_back(m.start, m.end);
    // A JIT's code: executable memory backed by no file (V8 and others also
    // map code from memfds). It may lie between two mappings of one module
    // (V8 maps part of node's text again, far above it).
    if (m.executable &&
        (m.path.empty() || m.path.starts_with("[anon") || m.path.starts_with("/memfd:")))
      anonymous_code.emplace_back(m.start, m.end);
    if (m.path == "[vdso]" && memory && m.end - m.start <= (1u << 20)) {
      // The same image for every process of this boot: copy it once.
      if (!vdso_) {
        std::vector<uint8_t> image(m.end - m.start);
        if (memory->read_exact(m.start, image.data(), image.size()))
          vdso_ = ElfFile::from_bytes("[vdso]", std::move(image));
      }
      if (vdso_) {
        Module mod;
        mod.path = mod.name = "[vdso]";
        mod.start = m.start;
        mod.end = m.end;
        mod.bias = m.start;  // linked at 0
        mod.elf = vdso_;
        modules.push_back(std::move(mod));
      }
      continue;
    }
    if (m.path.empty() || m.path[0] != '/' || m.inode == 0) continue;
    auto it = index.find(m.path);
    if (it != index.end()) {
      Module& mod = modules[it->second];
      mod.start = std::min(mod.start, m.start);
      mod.end = std::max(mod.end, m.end);
      if (auto f = failed.find(m.path); f != failed.end()) f->second.second |= m.executable;
      continue;
    }
    Module mod;
    mod.path = path_in_target(m.path, root_);
    mod.name = mod.path.substr(mod.path.rfind('/') + 1);
    mod.lookup_path = "/proc/" + std::to_string(pid_) + "/root" + mod.path;
    mod.start = m.start;
    mod.end = m.end;
    mod.program = m.path == executable_;
    std::string problem;
    mod.elf = open_file(m, memory, &mod, &problem);
    if (!problem.empty()) {
      // Still a module, without a file: its frames are named module+offset.
      failed.emplace(m.path, std::make_pair(problem, m.executable));
    } else if (!mod.elf || !mod.elf->load_bias(m.start, m.offset, &mod.bias)) {
      continue;  // not an ELF file (a locale archive, a data file the program maps)
    }
    index.emplace(m.path, modules.size());
    modules.push_back(std::move(mod));
  }
  warnings_.clear();
  for (const auto& [path, why] : failed)
    if (why.second)
      warnings_.push_back(path_in_target(path, root_) + ": " + why.first +
                          "; its frames are shown without symbols");
  std::sort(modules.begin(), modules.end(),
            [](const Module& a, const Module& b) { return a.start < b.start; });
  std::sort(exec.begin(), exec.end());
  bool changed = modules.size() != modules_.size() ||
                 !std::equal(modules.begin(), modules.end(), modules_.begin(),
                             [](const Module& a, const Module& b) {
                               return a.path == b.path && a.start == b.start && a.elf == b.elf;
                             });
  modules_ = std::move(modules);
  exec_ranges_ = std::move(exec);
  std::sort(anonymous_code.begin(), anonymous_code.end());
  anonymous_code_ = std::move(anonymous_code);
  return changed;
}

const Module* ModuleMap::find(uint64_t addr) const {
  auto it = std::upper_bound(modules_.begin(), modules_.end(), addr,
                             [](uint64_t a, const Module& m) { return a < m.start; });
  if (it == modules_.begin()) return nullptr;
  --it;
  return addr < it->end ? &*it : nullptr;
}

namespace {

bool in_ranges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t addr) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), std::make_pair(addr, UINT64_MAX));
  if (it == ranges.begin()) return false;
  --it;
  return addr >= it->first && addr < it->second;
}

}  // namespace

bool ModuleMap::is_executable(uint64_t addr) const {
  return in_ranges(exec_ranges_, addr);
}

bool ModuleMap::is_anonymous_code(uint64_t addr) const {
  return in_ranges(anonymous_code_, addr);
}

bool ModuleMap::read_readonly(uint64_t addr, void* out, size_t len) const {
  const Module* m = find(addr);
  return m && m->elf && m->elf->read_readonly(addr - m->bias, out, len);
}

bool ModuleMap::read_file_image(uint64_t addr, void* out, size_t len) const {
  const Module* m = find(addr);
  return m && m->elf && m->elf->read(addr - m->bias, out, len, true);
}

}  // namespace stackaudit
