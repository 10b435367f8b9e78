// /proc/PID/maps. The path column is a file name the target chose (spaces
// allowed; the kernel writes a newline in it as "\012").
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  auto maps = proc::parse_maps(text);
  FUZZ_CHECK(maps.size() <= fuzz::count_lines(text));
  for (const Mapping& m : maps) {
    FUZZ_CHECK(m.path.find('\n') == std::string::npos);
    FUZZ_CHECK(text.find(m.path) != std::string::npos);
    FUZZ_CHECK(m.path.empty() || (m.path[0] != ' ' && m.path[0] != '\t'));
  }

  // One line as the kernel prints it (show_vma_header_prefix, then padding to
  // column 73 before the path) comes back field for field.
  fuzz::Bytes in(data, size);
  uint64_t start = in.take<uint64_t>(), end = in.take<uint64_t>(), offset = in.take<uint64_t>();
  uint64_t inode = in.take<uint64_t>();
  uint8_t perms = in.take<uint8_t>();
  uint16_t dev = in.take<uint16_t>();
  std::string path = in.text(300);
  for (char& c : path)
    if (c == '\n') c = '?';
  // A path that begins with blanks loses them (they read as padding): known,
  // and no file the loader maps is named so.
  path.erase(0, path.find_first_not_of(" \t"));
  char line[128];
  int n =
      std::snprintf(line, sizeof line,
                    "%08" PRIx64 "-%08" PRIx64 " %c%c%c%c %08" PRIx64 " %02x:%02x %" PRIu64 " ",
                    start, end, perms & 1 ? 'r' : '-', perms & 2 ? 'w' : '-', perms & 4 ? 'x' : '-',
                    perms & 8 ? 's' : 'p', offset, dev >> 8, dev & 255, inode);
  std::string kernel_line(line, static_cast<size_t>(n));
  if (!path.empty()) {
    if (kernel_line.size() < 72) kernel_line.resize(72, ' ');
    kernel_line += ' ' + path;
  }
  auto got = proc::parse_maps("55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /bin/a\n" +
                              kernel_line + "\n");
  FUZZ_CHECK(got.size() == 2);
  const Mapping& m = got[1];
  FUZZ_CHECK(m.start == start && m.end == end && m.offset == offset && m.inode == inode);
  FUZZ_CHECK(m.dev_major == unsigned(dev >> 8) && m.dev_minor == unsigned(dev & 255));
  FUZZ_CHECK(m.readable == bool(perms & 1) && m.writable == bool(perms & 2) &&
             m.executable == bool(perms & 4));
  // Trailing blanks of the line belong to the path, as the kernel wrote them.
  if (path.find_first_not_of(" \t") != std::string::npos) FUZZ_CHECK(m.path == path);
  return 0;
}
