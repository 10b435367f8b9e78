#include "injector/mapped_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace stackaudit {
namespace {

constexpr std::string_view kDeleted = " (deleted)";

// Opens path read-only; the fd when it is the mapped file, else it goes to
// *other (the first such file kept) and the result is invalid.
UniqueFd open_if_mapped(const std::string& path, const Mapping& m, UniqueFd* other,
                        std::string* other_path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return {};
  if (st.st_ino == m.inode && major(st.st_dev) == m.dev_major && minor(st.st_dev) == m.dev_minor)
    return fd;
  if (!*other) {
    *other = std::move(fd);
    *other_path = path;
  }
  return {};
}

}  // namespace

std::string target_root(pid_t pid) {
  char buf[4096];
  std::string link = "/proc/" + std::to_string(pid) + "/root";
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  std::string root = n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  // A root folder removed since (the container's rootfs deleted): its files,
  // deleted too, are named under the same prefix.
  if (root.ends_with(kDeleted)) root.resize(root.size() - kDeleted.size());
  return root;
}

std::string path_in_target(const std::string& maps_path, const std::string& root) {
  std::string path = maps_path;
  if (path.ends_with(kDeleted)) path.resize(path.size() - kDeleted.size());
  // A chroot inside our mount tree: the kernel names the file from the
  // mount namespace's root, /srv/rootfs/usr/lib/..., which the target knows
  // as /usr/lib/...
  if (root.size() > 1 && root[0] == '/' && path.size() > root.size() && path.starts_with(root) &&
      path[root.size()] == '/')
    path.erase(0, root.size());
  return path;
}

MappedFile open_mapped_file(pid_t pid, const std::string& root, const Mapping& m) {
  MappedFile f;
  f.target_path = path_in_target(m.path, root);
  f.under_root = "/proc/" + std::to_string(pid) + "/root" + f.target_path;
  std::string as_given =
      m.path.ends_with(kDeleted) ? m.path.substr(0, m.path.size() - kDeleted.size()) : m.path;
  char map_files[96];
  std::snprintf(map_files, sizeof map_files, "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, pid,
                m.start, m.end);
  const std::pair<MappedFileVia, std::string> candidates[] = {
      {MappedFileVia::kRoot, f.under_root},
      {MappedFileVia::kPath, as_given},
      {MappedFileVia::kMapFiles, map_files},
  };
  int map_files_errno = 0;
  for (const auto& [via, path] : candidates) {
    // With the target's root ours, the path as given is the one just tried.
    if (via == MappedFileVia::kPath && (root == "/" || as_given == f.under_root)) continue;
    errno = 0;
    f.fd = open_if_mapped(path, m, &f.other, &f.other_path);
    if (f.fd) {
      f.via = via;
      f.opened = path;
      f.other.reset();
      f.other_path.clear();
      return f;
    }
    if (via == MappedFileVia::kMapFiles) map_files_errno = errno;
  }
  std::string why = f.other ? "the file at " + f.other_path +
                                  " is not the one mapped (replaced since the process started?)"
                            : "no file at " + f.target_path + " under the target's root";
  if (map_files_errno == EPERM || map_files_errno == EACCES)
    why += ", and /proc/PID/map_files, which reaches the mapped file itself, needs CAP_SYS_ADMIN";
  else if (map_files_errno != 0)
    why += ", and /proc/PID/map_files could not open it (" +
           std::string(std::strerror(map_files_errno)) + ")";
  f.problem = why;
  return f;
}

}  // namespace stackaudit
