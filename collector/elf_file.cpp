#include "collector/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

namespace stackaudit {

std::shared_ptr<ElfFile> ElfFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    ::close(fd);
    return nullptr;
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return nullptr;
  std::shared_ptr<ElfFile> elf(new ElfFile);
  elf->path_ = path;
  elf->data_ = static_cast<const uint8_t*>(map);
  elf->size_ = static_cast<size_t>(st.st_size);

  Elf64_Ehdr eh;
  std::memcpy(&eh, elf->data_, sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_phentsize != sizeof(Elf64_Phdr) ||
      eh.e_phoff + uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr) > elf->size_)
    return nullptr;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, elf->data_ + eh.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type == PT_LOAD)
      elf->segments_.push_back({ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz,
                                (ph.p_flags & PF_W) != 0, (ph.p_flags & PF_X) != 0});
    else if (ph.p_type == PT_GNU_EH_FRAME)
      elf->eh_frame_hdr_vaddr_ = ph.p_vaddr;
  }
  return elf;
}

ElfFile::~ElfFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
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
