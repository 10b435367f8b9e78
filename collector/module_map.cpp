#include "collector/module_map.h"

#include <unistd.h>

#include <algorithm>

namespace stackaudit {

bool is_system_library(const std::string& path) {
  for (const char* dir : {"/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/"})
    if (path.starts_with(dir)) return true;
  return false;
}

bool ModuleMap::update(const std::vector<Mapping>& maps, Memory* memory) {
  if (executable_.empty()) {
    char exe[4096];
    std::string link = "/proc/" + std::to_string(pid_) + "/exe";
    ssize_t n = ::readlink(link.c_str(), exe, sizeof exe - 1);
    if (n > 0) executable_.assign(exe, static_cast<size_t>(n));
  }
  std::vector<Module> modules;
  std::vector<std::pair<uint64_t, uint64_t>> exec;
  std::map<std::string, size_t> index;  // path -> position in modules
  for (const Mapping& m : maps) {
    if (m.executable) exec.emplace_back(m.start, m.end);
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
      continue;
    }
    Module mod;
    mod.path = m.path;
    mod.name = m.path.substr(m.path.rfind('/') + 1);
    mod.open_path = "/proc/" + std::to_string(pid_) + "/root" + m.path;
    mod.start = m.start;
    mod.end = m.end;
    mod.program = m.path == executable_;
    std::string key = mod.open_path + "#" + std::to_string(m.inode);
    auto f = files_.find(key);
    if (f == files_.end()) f = files_.emplace(key, ElfFile::open(mod.open_path)).first;
    mod.elf = f->second;
    if (!mod.elf || !mod.elf->load_bias(m.start, m.offset, &mod.bias)) continue;
    index.emplace(m.path, modules.size());
    modules.push_back(std::move(mod));
  }
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
  return changed;
}

const Module* ModuleMap::find(uint64_t addr) const {
  auto it = std::upper_bound(modules_.begin(), modules_.end(), addr,
                             [](uint64_t a, const Module& m) { return a < m.start; });
  if (it == modules_.begin()) return nullptr;
  --it;
  return addr < it->end ? &*it : nullptr;
}

bool ModuleMap::is_executable(uint64_t addr) const {
  auto it =
      std::upper_bound(exec_ranges_.begin(), exec_ranges_.end(), std::make_pair(addr, UINT64_MAX));
  if (it == exec_ranges_.begin()) return false;
  --it;
  return addr >= it->first && addr < it->second;
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
