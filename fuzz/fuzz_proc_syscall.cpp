// /proc/PID/task/TID/syscall: "running", "-1 SP PC", or "NR A1..A6 SP PC".
// Its raw line is also compared between two reads to tell that a thread did
// not move, so it must be kept exactly (less the newline).
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  if (auto s = proc::parse_syscall(text)) {
    FUZZ_CHECK(text.starts_with(s->line));
    FUZZ_CHECK(s->line.empty() || s->line.back() != '\n');
    FUZZ_CHECK(s->kind != SyscallState::Kind::kUnknown);
    if (s->kind == SyscallState::Kind::kRunning)
      FUZZ_CHECK(s->line.find("running") != std::string::npos);
    if (s->kind == SyscallState::Kind::kOutsideSyscall)
      FUZZ_CHECK(s->line.find("-1") != std::string::npos);
  }

  // The kernel's three shapes with values from the input come back as written.
  fuzz::Bytes in(data, size);
  uint8_t shape = in.take<uint8_t>() % 3;
  long nr = in.take<uint16_t>() % 512;
  uint64_t args[6];
  for (auto& a : args) a = in.take<uint64_t>();
  uint64_t sp = in.take<uint64_t>(), pc = in.take<uint64_t>();
  char line[512];
  if (shape == 0) {
    std::snprintf(line, sizeof line, "running\n");
  } else if (shape == 1) {
    std::snprintf(line, sizeof line, "-1 0x%" PRIx64 " 0x%" PRIx64 "\n", sp, pc);
  } else {
    std::snprintf(line, sizeof line,
                  "%ld 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64
                  " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 "\n",
                  nr, args[0], args[1], args[2], args[3], args[4], args[5], sp, pc);
  }
  auto s = proc::parse_syscall(line);
  FUZZ_CHECK(s);
  FUZZ_CHECK(s->line + "\n" == line);
  if (shape == 0) {
    FUZZ_CHECK(s->kind == SyscallState::Kind::kRunning);
  } else if (shape == 1) {
    FUZZ_CHECK(s->kind == SyscallState::Kind::kOutsideSyscall);
    FUZZ_CHECK(s->sp == sp && s->pc == pc);
  } else {
    FUZZ_CHECK(s->kind == SyscallState::Kind::kInSyscall);
    FUZZ_CHECK(s->nr == nr);
    for (int i = 0; i < 6; ++i) FUZZ_CHECK(s->args[i] == args[i]);
    FUZZ_CHECK(s->sp == sp && s->pc == pc);
  }
  return 0;
}
