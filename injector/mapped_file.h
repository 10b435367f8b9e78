// Opens the file a mapping of the target maps: the one place that turns a
// line of /proc/PID/maps into an open file. The path in the maps is not enough:
// a target in a container names its files from its own root (or from its
// mount namespace's), and a file replaced on disk since it was mapped (an
// in-place package upgrade: a new file renamed over the old path) is another
// file at the same path. What was opened is checked against the device and
// inode the kernel gives for the mapping.
#pragma once

#include <sys/types.h>

#include <string>

#include "injector/capture_types.h"
#include "injector/unique_fd.h"

namespace stackaudit {

// How a mapping's file was reached.
enum class MappedFileVia {
  kNone,      // not opened (see MappedFile::problem)
  kRoot,      // /proc/PID/root/PATH: the path under the target's own root
  kPath,      // the path as the maps give it, from our root (a chroot in our mount tree)
  kMapFiles,  // /proc/PID/map_files/START-END: the mapped file itself, whatever its path now
};

struct MappedFile {
  UniqueFd fd;  // the mapped file (device and inode checked); invalid when none was found
  MappedFileVia via = MappedFileVia::kNone;
  std::string opened;  // the path that was opened
  // The file's path as the target sees it: the maps' path without the target
  // root's prefix and without " (deleted)", e.g. /usr/lib/x86_64-linux-gnu/libc.so.6.
  std::string target_path;
  // /proc/PID/root + target_path: where files beside it (a .gnu_debuglink's
  // debug file) are looked for.
  std::string under_root;
  // When fd is invalid: a file at the mapping's path that is not the mapped
  // one (replaced since, or the device numbers of an overlay differ), for the
  // caller to compare contents with the target's memory; and one sentence why
  // the mapped file could not be opened.
  UniqueFd other;
  std::string other_path;
  std::string problem;
};

// The target's root as our /proc resolves it ("/" for a process of our own
// root; the chroot's folder for a chroot in our mount tree), "" when unreadable.
std::string target_root(pid_t pid);

// Opens the file `m` maps: the path under the target's root, then the path as
// given, then /proc/PID/map_files (which needs CAP_SYS_ADMIN or
// CAP_CHECKPOINT_RESTORE); each one only if its device and inode are the
// mapping's. `root` is target_root(pid). Never throws.
MappedFile open_mapped_file(pid_t pid, const std::string& root, const Mapping& m);

// The maps' path as the target sees it: without " (deleted)" and without the
// prefix `root` (when root is not "/").
std::string path_in_target(const std::string& maps_path, const std::string& root);

}  // namespace stackaudit
