#include "agent/input_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/exit_codes.h"
#include "injector/unique_fd.h"

namespace stackaudit {

namespace {
constexpr size_t kMaxInputBytes = size_t{256} << 20;
}

std::string read_input_file(const std::string& path, const std::string& what) {
  auto fail = [&](const std::string& why) -> UserError {
    return UserError{kExitUsage, "cannot read " + what + " " + path + ": " + why};
  };
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw fail(std::strerror(errno));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxInputBytes) throw fail("larger than 256 MiB");
  }
  return out;
}

}  // namespace stackaudit
