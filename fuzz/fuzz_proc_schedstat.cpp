// /proc/PID/task/TID/schedstat: "CPU_NS WAIT_NS TIMESLICES".
#include <cinttypes>

#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  if (proc::parse_schedstat(text)) {
    // Three fields and two separators at least, or it would have said nothing.
    FUZZ_CHECK(text.size() >= 5);
  }

  fuzz::Bytes in(data, size);
  SchedStat want{in.take<uint64_t>(), in.take<uint64_t>(), in.take<uint64_t>()};
  char line[128];
  std::snprintf(line, sizeof line, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", want.cpu_ns,
                want.wait_ns, want.timeslices);
  auto got = proc::parse_schedstat(line);
  FUZZ_CHECK(got && *got == want);
  return 0;
}
