#include "collector/symbolizer.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>

#include <fcntl.h>
#include <gelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

// Whether the module's main file names a dwz alternate file: libdw then looks
// that up by its own build-id, which is not the module's.
bool has_debugaltlink(Dwfl_Module* mod) {
  GElf_Addr bias;
  Elf* elf = dwfl_module_getelf(mod, &bias);
  size_t strndx;
  if (!elf || elf_getshdrstrndx(elf, &strndx) != 0) return false;
  for (Elf_Scn* scn = nullptr; (scn = elf_nextscn(elf, scn));) {
    GElf_Shdr shdr;
    const char* name = gelf_getshdr(scn, &shdr) ? elf_strptr(elf, strndx, shdr.sh_name) : nullptr;
    if (name && std::strcmp(name, ".gnu_debugaltlink") == 0) return true;
  }
  return false;
}

// Whether separate debug info could be somewhere libdw looks, following its
// search path: entries starting with '/' are roots (ROOT/.build-id/xx/
// rest.debug, and ROOT + each tail of the file's folder + the link name),
// the others are relative to the file's folder; a leading '+' or '-' (check
// the CRC or not) is not part of the folder. The link name is the
// .gnu_debuglink, or FILE.debug without one. When unsure, yes: a wrong yes
// costs only what libdw would have done anyway.
bool may_have_local_debuginfo(Dwfl_Module* mod, const std::string& path, const char* file_name,
                              const char* debuglink) {
  if (has_debugaltlink(mod)) return true;
  const unsigned char* id = nullptr;
  GElf_Addr id_vaddr;
  int id_len = dwfl_module_build_id(mod, &id, &id_vaddr);
  std::string build_id;
  for (int i = 0; i < id_len; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", id[i]);
    build_id += hex;
    if (i == 0) build_id += '/';
  }
  std::string file = file_name ? file_name : "";
  std::string dir = file.substr(0, file.rfind('/') + 1);
  std::string link = debuglink ? debuglink : file.substr(dir.size()) + ".debug";
  // stat, not access: access checks with the real user's rights, and a
  // service account with CAP_SYS_PTRACE as an ambient capability would be
  // refused paths under /proc/PID/root that its open() may use.
  auto exists = [](const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
  };
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string entry = path.substr(start, end - start);
    start = end + 1;
    if (!entry.empty() && (entry[0] == '+' || entry[0] == '-')) entry.erase(0, 1);
    if (!entry.empty() && entry[0] == '/') {
      if (id_len > 0 && exists(entry + "/.build-id/" + build_id + ".debug")) return true;
      // /usr/lib/debug/usr/lib/x86_64-linux-gnu/LINK for a file opened as
      // /proc/PID/root/usr/lib/x86_64-linux-gnu/...: every tail of the folder.
      for (size_t at = 0; at != std::string::npos; at = dir.find('/', at + 1))
        if (exists(entry + dir.substr(at) + link)) return true;
    } else if (exists(dir + (entry.empty() ? "" : entry + "/") + link)) {
      return true;
    }
  }
  return false;
}

// libdw's standard search, but only where a file could be: when there is
// none, libdw 0.188 would go on to load libdebuginfod (and with it curl and
// gnutls, a few milliseconds and megabytes) only to find it has no server.
// Each module's userdata is the search path of the Symbolizer that reported it.
int find_local_debuginfo(Dwfl_Module* mod, void** userdata, const char* modname, Dwarf_Addr base,
                         const char* file_name, const char* debuglink, GElf_Word crc,
                         char** debuginfo_file_name) {
  const auto* path = static_cast<const std::string*>(*userdata);
  if (!path || !may_have_local_debuginfo(mod, *path, file_name, debuglink)) return -1;
  return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink, crc,
                                      debuginfo_file_name);
}

// Whether the target's root is ours (same device and inode).
bool same_root_as_ours(pid_t pid) {
  struct stat theirs, ours;
  std::string root = "/proc/" + std::to_string(pid) + "/root/";
  return ::stat(root.c_str(), &theirs) == 0 && ::stat("/", &ours) == 0 &&
         theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino;
}

// A symbol as people read it: demangled, no parameters, no symbol version
// ("pthread_cond_wait@@GLIBC_2.3.2" -> "pthread_cond_wait").
std::string function_name(const char* symbol) {
  std::string s = symbol;
  if (auto at = s.find('@'); at != std::string::npos && at > 0) s.resize(at);
  return strip_parameters(demangle(s.c_str()));
}

std::string die_function_name(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  const char* linkage = nullptr;
  if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attr) ||
      dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr))
    linkage = dwarf_formstring(&attr);
  if (linkage) return function_name(linkage);
  const char* name = dwarf_diename(die);
  if (!name && dwarf_attr_integrate(die, DW_AT_name, &attr)) name = dwarf_formstring(&attr);
  return name ? name : "";
}

// The file named by a DW_AT_call_file index of this CU.
std::string call_file(Dwarf_Die* cudie, Dwarf_Word index) {
  Dwarf_Files* files;
  size_t count;
  if (dwarf_getsrcfiles(cudie, &files, &count) != 0 || index >= count) return "";
  const char* name = dwarf_filesrc(files, index, nullptr, nullptr);
  return name ? name : "";
}

}  // namespace

std::string demangle(const char* name) {
  if (!name) return "";
  if (name[0] == '_' && name[1] == 'Z') {
    int status = 0;
    char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    if (status == 0 && out) {
      std::string s(out);
      std::free(out);
      return s;
    }
  }
  return name;
}

std::string strip_parameters(const std::string& s) {
  // Drop suffixes like " [clone .cold]", then the last balanced "(...)" and
  // whatever qualifiers follow it.
  std::string text = s;
  if (auto clone = text.find(" [clone"); clone != std::string::npos) text.resize(clone);
  size_t close = text.rfind(')');
  if (close != std::string::npos) {
    int depth = 0;
    for (size_t i = close + 1; i-- > 0;) {
      if (text[i] == ')')
        ++depth;
      else if (text[i] == '(' && --depth == 0) {
        if (i > 0) text.resize(i);  // "operator()" keeps its own parentheses
        break;
      }
    }
  }
  // A function template's demangled name starts with its return type
  // ("void std::this_thread::sleep_for<...>"): keep what follows the last
  // space outside brackets, unless that space belongs to "operator new".
  int depth = 0;
  size_t cut = std::string::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '<' || c == '(' || c == '[')
      ++depth;
    else if ((c == '>' || c == ')' || c == ']') && depth > 0)
      --depth;
    else if (c == ' ' && depth == 0 && !std::string_view(text).substr(0, i).ends_with("operator"))
      cut = i;
  }
  if (cut != std::string::npos) text = text.substr(cut + 1);
  return text;
}

Symbolizer::Symbolizer(const ModuleMap& modules, SourceLines lines)
    : modules_(modules), lines_(lines), perf_map_(modules.pid()) {
  // DEBUGINFOD_URLS is unset by the program at start (agent/cli.cpp): no
  // network lookups, and no change to the environment once threads run.
  // libdw's own default, with the target's /usr/lib/debug first when its root
  // is not ours (a container's build-ids are its packages').
  if (const char* env = std::getenv("STACKAUDIT_DEBUGINFO_PATH"))
    debuginfo_path_ = env;
  else if (same_root_as_ours(modules.pid()))
    debuginfo_path_ = ":.debug:/usr/lib/debug";
  else
    debuginfo_path_ =
        ":.debug:/proc/" + std::to_string(modules.pid()) + "/root/usr/lib/debug:/usr/lib/debug";
  debuginfo_path_c_ = debuginfo_path_.data();
  callbacks_ = Dwfl_Callbacks{
      .find_elf = nullptr,  // every module is reported with its file
      .find_debuginfo = find_local_debuginfo,
      .section_address = nullptr,
      .debuginfo_path = &debuginfo_path_c_,
  };
  dwfl_ = dwfl_begin(&callbacks_);
  reload();
}

Symbolizer::~Symbolizer() {
  if (dwfl_) dwfl_end(dwfl_);
}

void Symbolizer::reload() {
  // A module reported again with its file would be refused by libdw as
  // overlapping itself and dropped: one already there is kept by its name
  // and range instead.
  std::map<std::pair<const ElfFile*, uint64_t>, Dwfl_Module*> reported;
  dwfl_report_begin(dwfl_);
  for (const Module& m : modules_.modules()) {
    if (!m.elf || m.lookup_path.empty() || m.elf->fd() < 0) continue;
    auto key = std::make_pair(m.elf.get(), m.bias);
    Dwfl_Module* dm = nullptr;
    if (auto before = reported_.find(key); before != reported_.end()) {
      Dwarf_Addr low = 0, high = 0;
      const char* name = dwfl_module_info(before->second, nullptr, &low, &high, nullptr, nullptr,
                                          nullptr, nullptr);
      if (name) dm = dwfl_report_module(dwfl_, name, low, high);
    } else {
      // libdw reads the very file we opened (not whatever is at a path now)
      // through a descriptor of its own, which it closes with the module.
      // Separate debug info is looked for beside the file's path under the
      // target's root.
      UniqueFd fd(::fcntl(m.elf->fd(), F_DUPFD_CLOEXEC, 0));
      if (fd)
        dm = dwfl_report_elf(dwfl_, m.name.c_str(), m.lookup_path.c_str(), fd.get(), m.bias, true);
      if (dm) fd.release();
    }
    if (!dm) continue;
    void** userdata = nullptr;
    dwfl_module_info(dm, &userdata, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
    if (userdata) *userdata = &debuginfo_path_;
    reported.emplace(key, dm);
  }
  dwfl_report_end(dwfl_, nullptr, nullptr);
  reported_ = std::move(reported);
  cache_.clear();
  anonymous_cached_.clear();
}

const std::vector<Frame>& Symbolizer::symbolize(uint64_t ip, bool return_address) {
  uint64_t pc = return_address && ip > 0 ? ip - 1 : ip;
  bool anonymous = modules_.is_anonymous_code(pc) || !modules_.find(pc);
  if (anonymous && !perf_map_checked_ && modules_.is_executable(pc)) {
    perf_map_checked_ = true;
    if (perf_map_.refresh()) {  // names may have moved: forget the old ones
      for (uint64_t a : anonymous_cached_) cache_.erase(a);
      anonymous_cached_.clear();
    }
  }
  auto it = cache_.find(pc);
  if (it != cache_.end()) {
    return it->second;
  }
  auto frames = lookup(ip, pc);
  if (anonymous) anonymous_cached_.push_back(pc);
  return cache_.emplace(pc, std::move(frames)).first->second;
}

std::vector<Frame> Symbolizer::lookup(uint64_t ip, uint64_t pc) {
  std::vector<Frame> out;
  Frame base;
  base.ip = ip;
  const Module* mod = modules_.is_anonymous_code(pc) ? nullptr : modules_.find(pc);
  if (mod) {
    base.module = mod->name;
    base.module_path = mod->path;
    base.module_offset = ip - mod->start;
  }
  if (!mod) {
    uint64_t start = 0;
    if (const std::string* name = perf_map_.find(pc, &start)) {
      base.function = *name;
      base.module = perf_map_.path().substr(perf_map_.path().rfind('/') + 1);
      base.module_path = perf_map_.path();
      base.module_offset = ip - start;  // into that piece of code
    }
    out.push_back(base);
    return out;
  }
  Dwfl_Module* dm = dwfl_addrmodule(dwfl_, pc);
  if (!dm) {
    // A module libdw does not know (the vDSO): its own symbol table.
    if (mod && mod->elf) base.function = function_name(mod->elf->symbol_at(pc - mod->bias).c_str());
    out.push_back(base);
    return out;
  }

  GElf_Off offset;
  GElf_Sym sym;
  const char* symname = dwfl_module_addrinfo(dm, pc, &offset, &sym, nullptr, nullptr, nullptr);
  std::string sym_function = symname ? function_name(symname) : "";
  if (lines_ == SourceLines::kProgram && mod && !mod->program && is_system_library(mod->path)) {
    base.function = sym_function;
    out.push_back(base);
    return out;
  }

  std::string file;
  int line = 0;
  if (Dwfl_Line* l = dwfl_module_getsrc(dm, pc)) {
    const char* f = dwfl_lineinfo(l, nullptr, &line, nullptr, nullptr, nullptr);
    if (f) file = f;
  }

  Dwarf_Addr bias = 0;
  Dwarf_Die* cudie = dwfl_module_addrdie(dm, pc, &bias);
  // dwarf_getscopes gives the innermost scope at pc; past an inlined call it
  // follows the abstract origin, so the concrete chain of calls inlined into
  // each other comes from dwarf_getscopes_die on that innermost scope.
  Dwarf_Die* innermost = nullptr;
  Dwarf_Die* scopes = nullptr;
  int nscopes = 0;
  if (cudie && dwarf_getscopes(cudie, pc - bias, &innermost) > 0)
    nscopes = dwarf_getscopes_die(&innermost[0], &scopes);
  std::free(innermost);
  bool found_function = false;
  for (int i = 0; i < nscopes; ++i) {
    int tag = dwarf_tag(&scopes[i]);
    if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram) continue;
    Frame f = base;
    f.file = file;
    f.line = line;
    if (tag == DW_TAG_subprogram) {
      f.function = sym_function.empty() ? die_function_name(&scopes[i]) : sym_function;
      out.push_back(std::move(f));
      found_function = true;
      break;
    }
    f.function = die_function_name(&scopes[i]);
    f.inlined = true;
    out.push_back(std::move(f));
    // The caller's position is where this call was inlined.
    Dwarf_Attribute attr;
    Dwarf_Word value;
    file = dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &value) == 0
               ? call_file(cudie, value)
               : "";
    line = dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &value) == 0
               ? static_cast<int>(value)
               : 0;
  }
  std::free(scopes);
  if (!found_function) {
    Frame f = base;
    f.function = sym_function;
    f.file = file;
    f.line = line;
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace stackaudit
