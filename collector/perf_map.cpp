#include "collector/perf_map.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include "injector/proc.h"
#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

bool parse_hex(std::string_view& s, uint64_t* out) {
  if (s.starts_with("0x") || s.starts_with("0X")) s.remove_prefix(2);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, 16);
  if (ec != std::errc() || end == s.data()) return false;
  s.remove_prefix(static_cast<size_t>(end - s.data()));
  return true;
}

}  // namespace

std::map<uint64_t, PerfMapEntry> parse_perf_map(std::string_view text, size_t max_entries) {
  std::map<uint64_t, PerfMapEntry> entries;
  while (!text.empty() && entries.size() < max_entries) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    uint64_t start = 0, size = 0;
    if (!parse_hex(line, &start) || !line.starts_with(' ')) continue;
    line.remove_prefix(1);
    if (!parse_hex(line, &size) || size == 0 || start + size < start || !line.starts_with(' '))
      continue;
    line.remove_prefix(1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    entries[start] = PerfMapEntry{start + size, std::string(line)};
  }
  return entries;
}

UniqueFd PerfMap::open_in_target_root() const {
  UniqueFd root(::open(("/proc/" + std::to_string(pid_) + "/root").c_str(),
                       O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return UniqueFd();
  open_how how{};
  how.flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  std::string relative = path_.substr(1);  // "tmp/perf-N.map"
  // No openat2 (Linux before 5.6): no perf map, rather than a path that
  // could leave the target's root.
  return UniqueFd(
      static_cast<int>(::syscall(SYS_openat2, root.get(), relative.c_str(), &how, sizeof how)));
}

bool PerfMap::refresh() {
  if (path_.empty()) {
    auto info = proc::read_process_info(pid_);
    pid_t ns_pid = info && info->ns_pid != 0 ? info->ns_pid : pid_;
    path_ = "/tmp/perf-" + std::to_string(ns_pid) + ".map";
  }
  // The target owns its /tmp: the path is resolved inside its root (a /tmp
  // or a map that is a symbolic link cannot lead out of it, nor to /proc),
  // to a regular file only (no FIFO to block on), read up to a bound.
  UniqueFd fd = open_in_target_root();
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    bool had = !entries_.empty();
    entries_.clear();
    size_ = 0;
    mtime_ns_ = -1;
    return had;
  }
  int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (static_cast<uint64_t>(st.st_size) == size_ && mtime == mtime_ns_) return false;
  size_ = static_cast<uint64_t>(st.st_size);
  mtime_ns_ = mtime;
  std::string text;
  char buf[65536];
  while (text.size() < kMaxBytes) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  entries_ = parse_perf_map(text, kMaxEntries);
  return true;
}

const std::string* PerfMap::find(uint64_t ip, uint64_t* start) const {
  auto it = entries_.upper_bound(ip);
  if (it == entries_.begin()) return nullptr;
  --it;
  if (ip >= it->second.end) return nullptr;
  *start = it->first;
  return &it->second.name;
}

}  // namespace stackaudit
