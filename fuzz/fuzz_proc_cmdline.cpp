// /proc/PID/cmdline: the target's argument block, which it may rewrite at will
// (setproctitle): NUL-separated, maybe without the final NUL.
#include "fuzz/fuzz_check.h"
#include "injector/proc.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text = fuzz::as_text(data, size);
  auto args = proc::parse_cmdline(text);
  // Joined again with NULs, the arguments are the text less one final NUL.
  std::string joined;
  for (size_t i = 0; i < args.size(); ++i) {
    FUZZ_CHECK(args[i].find('\0') == std::string::npos);
    if (i) joined += '\0';
    joined += args[i];
  }
  if (!text.empty() && text.back() == '\0') text.pop_back();
  FUZZ_CHECK(joined == text);
  FUZZ_CHECK(args.size() <= size);
  return 0;
}
