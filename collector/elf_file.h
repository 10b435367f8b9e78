// A mapped ELF file of the target, opened once and kept: its load segments (to
// serve read-only bytes without touching the target) and where its unwind
// table (.eh_frame_hdr) is.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "injector/unique_fd.h"

namespace stackaudit {

class ElfFile {
 public:
  // Returns null when the file cannot be opened or is not a 64-bit ELF.
  static std::shared_ptr<ElfFile> open(const std::string& path);
  // The same from an open file, which the ElfFile keeps (fd()); `path` names it.
  static std::shared_ptr<ElfFile> open(UniqueFd fd, const std::string& path);
  // An ELF image copied from memory (the vDSO, which has no file).
  static std::shared_ptr<ElfFile> from_bytes(const std::string& name, std::vector<uint8_t> bytes);
  ~ElfFile();
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  struct Segment {
    uint64_t vaddr, memsz, offset, filesz;
    bool writable, executable;
  };

  const std::string& path() const { return path_; }
  // The open file, -1 for an image from memory. Others (libdw) read the very
  // file this one is, whatever is at its path now, through a dup of it.
  int fd() const { return fd_.get(); }
  const std::vector<Segment>& segments() const { return segments_; }

  // The GNU build-id (NT_GNU_BUILD_ID note's bytes), "" when absent, and the
  // link-time address of those bytes: a loaded module has them in memory too.
  const std::string& build_id() const { return build_id_; }
  uint64_t build_id_vaddr() const { return build_id_vaddr_; }

  // Link-time address of .eh_frame_hdr (PT_GNU_EH_FRAME), 0 when absent.
  uint64_t eh_frame_hdr_vaddr() const { return eh_frame_hdr_vaddr_; }

  // Load bias of this file given one of its mappings (start address and file
  // offset): runtime address = link-time address + bias.
  bool load_bias(uint64_t map_start, uint64_t map_offset, uint64_t* bias) const;

  // Link-time address of a symbol from .dynsym (or .symtab when the file has
  // one), 0 when absent.
  uint64_t symbol(std::string_view name) const;
  // Link-time address of a section, 0 when absent (e.g. ".PyRuntime").
  uint64_t section_address(std::string_view name) const;
  // The name of the function symbol containing a link-time address, "" if none.
  std::string symbol_at(uint64_t vaddr) const;

  // Copies bytes at a link-time address from a read-only segment. False when
  // the range is not file-backed read-only data (writable data must come from
  // the live process).
  bool read_readonly(uint64_t vaddr, void* out, size_t len) const {
    return read(vaddr, out, len, false);
  }
  // Copies bytes from any file-backed segment, writable ones included: what the
  // file holds, not what the process may have written there since.
  bool read(uint64_t vaddr, void* out, size_t len, bool include_writable) const;

 private:
  ElfFile() = default;
  bool parse_headers();
  // Calls visit(sym, name) for each defined symbol until it returns true.
  template <class Visit>
  void for_each_symbol(Visit&& visit) const;
  void find_build_id(uint64_t note_offset, uint64_t note_size, uint64_t note_vaddr);
  std::string path_;
  UniqueFd fd_;
  std::vector<uint8_t> owned_;  // the image, when it came from memory
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<Segment> segments_;
  uint64_t eh_frame_hdr_vaddr_ = 0;
  std::string build_id_;
  uint64_t build_id_vaddr_ = 0;
};

}  // namespace stackaudit
