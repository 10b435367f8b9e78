// /proc/PID/net/{tcp,tcp6,udp,udp6}: the target's own connections, addresses
// as hex words in the kernel's byte order. The first input byte picks the
// table, the rest is its text.
#include <arpa/inet.h>

#include <cinttypes>
#include <set>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

namespace {

const char* const kProtocols[] = {"tcp", "tcp6", "udp", "udp6"};
const std::set<std::string> kStates = {
    "?",     "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
    "CLOSE", "CLOSE_WAIT",  "LAST_ACK", "LISTEN",   "CLOSING",   "UNCONN"};
const char kHeader[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n";

// An address as the kernel prints it (each 32-bit word with %08X), and as we
// should show it.
void address(const uint8_t* bytes, bool v6, uint16_t port, std::string& hex, std::string& shown) {
  char buf[64];
  hex.clear();
  for (int w = 0; w < (v6 ? 4 : 1); ++w) {
    uint32_t word;
    std::memcpy(&word, bytes + 4 * w, 4);
    std::snprintf(buf, sizeof buf, "%08X", word);
    hex += buf;
  }
  std::snprintf(buf, sizeof buf, ":%04X", port);
  hex += buf;
  char text[INET6_ADDRSTRLEN];
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, bytes, text, sizeof text);
  shown = v6 ? "[" + std::string(text) + "]:" + std::to_string(port)
             : std::string(text) + ":" + std::to_string(port);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Bytes in(data, size);
  std::string protocol = kProtocols[in.take<uint8_t>() % 4];
  std::string text = in.rest();
  std::vector<SocketEntry> out;
  proc::parse_inet_sockets(text, protocol, out);
  FUZZ_CHECK(out.size() <= fuzz::count_lines(text));
  for (const SocketEntry& e : out) {
    FUZZ_CHECK(e.protocol == protocol);
    FUZZ_CHECK(kStates.count(e.state));
  }

  // One line as tcp4_seq_show / tcp6_seq_show print it.
  fuzz::Bytes again(data, size);
  bool v6 = again.take<uint8_t>() & 1;
  protocol = v6 ? "tcp6" : "tcp";
  uint8_t local[16], remote[16];
  for (auto& b : local) b = again.take<uint8_t>();
  for (auto& b : remote) b = again.take<uint8_t>();
  uint16_t local_port = again.take<uint16_t>(), remote_port = again.take<uint16_t>();
  uint8_t state = again.take<uint8_t>() % 13;
  uint64_t inode = again.take<uint64_t>();
  std::string local_hex, local_shown, remote_hex, remote_shown;
  address(local, v6, local_port, local_hex, local_shown);
  address(remote, v6, remote_port, remote_hex, remote_shown);
  char line[512];
  std::snprintf(line, sizeof line,
                "%4d: %s %s %02X 00000000:00000000 00:00000000 00000000  1000        0 %" PRIu64
                " 1 0000000000000000 20 4 30 10 -1\n",
                7, local_hex.c_str(), remote_hex.c_str(), state, inode);
  out.clear();
  proc::parse_inet_sockets(std::string(kHeader) + line, protocol, out);
  FUZZ_CHECK(out.size() == 1);
  FUZZ_CHECK(out[0].local == local_shown);
  FUZZ_CHECK(out[0].remote == remote_shown);
  FUZZ_CHECK(out[0].inode == inode);
  if (state == 1) FUZZ_CHECK(out[0].state == "ESTABLISHED");
  if (state == 10) FUZZ_CHECK(out[0].state == "LISTEN");
  if (state == 0 || state == 12) FUZZ_CHECK(out[0].state == "?");
  return 0;
}
