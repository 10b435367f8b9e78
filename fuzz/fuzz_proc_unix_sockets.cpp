// /proc/PID/net/unix. The path is the name the target bound: the kernel prints
// it raw after the inode (spaces and all; '@' for an abstract name's NULs).
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  std::vector<SocketEntry> out;
  proc::parse_unix_sockets(text, out);
  FUZZ_CHECK(out.size() <= fuzz::count_lines(text));
  for (const SocketEntry& e : out) {
    FUZZ_CHECK(e.protocol == "unix");
    FUZZ_CHECK(e.local.find('\n') == std::string::npos);
    FUZZ_CHECK(text.find(e.local) != std::string::npos);
    FUZZ_CHECK(e.state == "CONNECTED" || e.state == "UNCONNECTED" || e.state == "LISTEN?");
  }

  // One line as unix_seq_show prints it, with a path from the input.
  fuzz::Bytes in(data, size);
  uint64_t inode = in.take<uint32_t>();
  uint8_t state = in.take<uint8_t>() % 5;
  std::string path = in.text(108);
  for (char& c : path)
    if (c == '\n' || c == '\0') c = '@';
  char line[256];
  std::snprintf(line, sizeof line,
                "0000000000000000: 00000002 00000000 00010000 0001 %02X %5" PRIu64, state, inode);
  out.clear();
  proc::parse_unix_sockets("Num       RefCount Protocol Flags    Type St Inode Path\n" +
                               std::string(line) + (path.empty() ? "" : " " + path) + "\n",
                           out);
  FUZZ_CHECK(out.size() == 1);
  FUZZ_CHECK(out[0].inode == inode);
  // A name of blanks only is not told from no name.
  if (path.find_first_not_of(" \t") != std::string::npos)
    FUZZ_CHECK(out[0].local == path);
  else
    FUZZ_CHECK(out[0].local.empty());
  if (state == 3) FUZZ_CHECK(out[0].state == "CONNECTED");
  if (state == 1) FUZZ_CHECK(out[0].state == "UNCONNECTED");
  return 0;
}
