// /proc/PID/task/TID/stat. The comm field is the thread's name, which the
// target sets to anything (prctl PR_SET_NAME: any bytes but NUL, up to 15; a
// kernel thread's up to 64), printed raw between parentheses: spaces,
// parentheses and newlines included.
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Any text: no crash, and what comes out was in the text.
  std::string text = fuzz::as_text(data, size);
  if (auto st = proc::parse_stat(text)) {
    FUZZ_CHECK(text.find('(') != std::string::npos);
    FUZZ_CHECK(text.find(st->comm) != std::string::npos);
    FUZZ_CHECK(st->state == '?' || text.find(st->state, text.rfind(')')) != std::string::npos);
  }

  // The kernel's own line around a comm made of the input's first bytes: the
  // name and every field we use come back unchanged.
  fuzz::Bytes in(data, size);
  std::string comm = in.text(64);
  auto ppid = in.take<uint32_t>() & 0x3fffffff;
  auto flags = in.take<uint32_t>();
  auto utime = in.take<uint64_t>();
  auto stime = in.take<uint64_t>();
  auto start = in.take<uint64_t>();
  char tail[512];
  std::snprintf(
      tail, sizeof tail,
      ") S %" PRIu32 " 4242 4242 0 -1 %" PRIu32 " 100 0 0 0 %" PRIu64 " %" PRIu64
      " 0 0 20 0 1 0 %" PRIu64
      " 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 "
      "0\n",
      ppid, flags, utime, stime, start);
  auto st = proc::parse_stat("4242 (" + comm + tail);
  FUZZ_CHECK(st);
  FUZZ_CHECK(st->comm == comm);
  FUZZ_CHECK(st->state == 'S');
  FUZZ_CHECK(st->ppid == static_cast<pid_t>(ppid));
  FUZZ_CHECK(st->flags == flags);
  FUZZ_CHECK(st->utime_ticks == utime);
  FUZZ_CHECK(st->stime_ticks == stime);
  FUZZ_CHECK(st->start_time_ticks == start);
  return 0;
}
