#include "collector/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "injector/unique_fd.h"

namespace stackaudit {

std::shared_ptr<ElfFile> ElfFile::open(const std::string& path) {
  return open(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
}

std::shared_ptr<ElfFile> ElfFile::open(UniqueFd fd, const std::string& path) {
  if (!fd) return nullptr;
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr)))
    return nullptr;
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (map == MAP_FAILED) return nullptr;
  std::shared_ptr<ElfFile> elf(new ElfFile);
  elf->path_ = path;
  elf->data_ = static_cast<const uint8_t*>(map);
  elf->size_ = static_cast<size_t>(st.st_size);
  elf->fd_ = std::move(fd);
  return elf->parse_headers() ? elf : nullptr;
}

std::shared_ptr<ElfFile> ElfFile::from_bytes(const std::string& name, std::vector<uint8_t> bytes) {
  std::shared_ptr<ElfFile> elf(new ElfFile);
  elf->path_ = name;
  elf->owned_ = std::move(bytes);
  elf->data_ = elf->owned_.data();
  elf->size_ = elf->owned_.size();
  return elf->parse_headers() ? elf : nullptr;
}

bool ElfFile::parse_headers() {
  Elf64_Ehdr eh;
  if (size_ < sizeof eh) return false;
  std::memcpy(&eh, data_, sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_phentsize != sizeof(Elf64_Phdr) ||
      eh.e_phoff + uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr) > size_)
    return false;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, data_ + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD)
      segments_.push_back({ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz,
                           (ph.p_flags & PF_W) != 0, (ph.p_flags & PF_X) != 0});
    else if (ph.p_type == PT_GNU_EH_FRAME)
      eh_frame_hdr_vaddr_ = ph.p_vaddr;
    else if (ph.p_type == PT_NOTE && build_id_.empty())
      find_build_id(ph.p_offset, ph.p_filesz, ph.p_vaddr);
  }
  return true;
}

void ElfFile::find_build_id(uint64_t offset, uint64_t size, uint64_t vaddr) {
  if (offset > size_ || size > size_ - offset) return;
  uint64_t at = 0;
  while (at + sizeof(Elf64_Nhdr) <= size) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, data_ + offset + at, sizeof nh);
    uint64_t name_at = at + sizeof nh;
    uint64_t desc_at = name_at + ((uint64_t{nh.n_namesz} + 3) & ~uint64_t{3});
    uint64_t next = desc_at + ((uint64_t{nh.n_descsz} + 3) & ~uint64_t{3});
    if (desc_at + nh.n_descsz > size) return;
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
        std::memcmp(data_ + offset + name_at, "GNU", 4) == 0 && nh.n_descsz > 0) {
      build_id_.assign(reinterpret_cast<const char*>(data_ + offset + desc_at), nh.n_descsz);
      build_id_vaddr_ = vaddr + desc_at;
      return;
    }
    at = next;
  }
}

ElfFile::~ElfFile() {
  if (data_ && owned_.empty()) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {

template <class T>
bool read_at(const uint8_t* data, size_t size, uint64_t offset, T* out) {
  if (offset > size || sizeof(T) > size - offset) return false;
  std::memcpy(out, data + offset, sizeof(T));
  return true;
}

}  // namespace

uint64_t ElfFile::section_address(std::string_view name) const {
  Elf64_Ehdr eh;
  if (!read_at(data_, size_, 0, &eh) || eh.e_shentsize != sizeof(Elf64_Shdr)) return 0;
  Elf64_Shdr names;
  if (!read_at(data_, size_, eh.e_shoff + uint64_t{eh.e_shstrndx} * sizeof(Elf64_Shdr), &names))
    return 0;
  for (unsigned i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    if (!read_at(data_, size_, eh.e_shoff + i * sizeof sh, &sh)) return 0;
    uint64_t at = names.sh_offset + sh.sh_name;
    if (at >= size_) continue;
    const char* n = reinterpret_cast<const char*>(data_ + at);
    if (std::string_view(n, strnlen(n, size_ - at)) == name) return sh.sh_addr;
  }
  return 0;
}

template <class Visit>
void ElfFile::for_each_symbol(Visit&& visit) const {
  Elf64_Ehdr eh;
  if (!read_at(data_, size_, 0, &eh) || eh.e_shentsize != sizeof(Elf64_Shdr)) return;
  for (uint32_t want : {uint32_t{SHT_DYNSYM}, uint32_t{SHT_SYMTAB}}) {
    for (unsigned i = 0; i < eh.e_shnum; ++i) {
      Elf64_Shdr sh, strtab;
      if (!read_at(data_, size_, eh.e_shoff + i * sizeof sh, &sh)) return;
      if (sh.sh_type != want || sh.sh_entsize != sizeof(Elf64_Sym)) continue;
      if (!read_at(data_, size_, eh.e_shoff + uint64_t{sh.sh_link} * sizeof sh, &strtab)) continue;
      for (uint64_t off = sh.sh_offset; off + sizeof(Elf64_Sym) <= sh.sh_offset + sh.sh_size;
           off += sizeof(Elf64_Sym)) {
        Elf64_Sym sym;
        if (!read_at(data_, size_, off, &sym)) break;
        if (sym.st_shndx == SHN_UNDEF || sym.st_value == 0) continue;
        uint64_t at = strtab.sh_offset + sym.st_name;
        if (at >= size_) continue;
        const char* n = reinterpret_cast<const char*>(data_ + at);
        if (visit(sym, std::string_view(n, strnlen(n, size_ - at)))) return;
      }
    }
  }
}

uint64_t ElfFile::symbol(std::string_view name) const {
  uint64_t found = 0;
  for_each_symbol([&](const Elf64_Sym& sym, std::string_view n) {
    if (n != name) return false;
    found = sym.st_value;
    return true;
  });
  return found;
}

std::string ElfFile::symbol_at(uint64_t vaddr) const {
  std::string found;
  for_each_symbol([&](const Elf64_Sym& sym, std::string_view n) {
    if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || vaddr < sym.st_value ||
        vaddr >= sym.st_value + sym.st_size)
      return false;
    found = n;
    return true;
  });
  return found;
}

bool ElfFile::load_bias(uint64_t map_start, uint64_t map_offset, uint64_t* bias) const {
  for (const auto& s : segments_) {
    uint64_t page_offset = s.offset & ~uint64_t{0xfff};
    if (map_offset >= page_offset && map_offset < s.offset + s.filesz) {
      // File offset map_offset is at link-time address vaddr - offset + map_offset.
      *bias = map_start - (s.vaddr - s.offset + map_offset);
      return true;
    }
  }
  return false;
}

bool ElfFile::read(uint64_t vaddr, void* out, size_t len, bool include_writable) const {
  for (const auto& s : segments_) {
    if ((s.writable && !include_writable) || vaddr < s.vaddr || vaddr + len > s.vaddr + s.filesz)
      continue;
    uint64_t off = s.offset + (vaddr - s.vaddr);
    if (off + len > size_) return false;
    std::memcpy(out, data_ + off, len);
    return true;
  }
  return false;
}

}  // namespace stackaudit
