#pragma once

#include <string>
#include <string_view>

#include "injector/unique_fd.h"

namespace stackaudit {

// A file written atomically: into a temporary file in the same directory,
// then fsync and rename on commit(). Readers see the old file or the new one,
// never half of one; without commit() (an exception on the way) the temporary
// file is removed. Throws std::runtime_error with one sentence on failure.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view text);
  void commit();

 private:
  [[noreturn]] void fail(const char* what);
  std::string path_, tmp_;
  UniqueFd fd_;
  bool committed_ = false;
};

// The whole of content, atomically (AtomicFile).
void write_file_atomically(const std::string& path, const std::string& content);

// Checks, before any work, that write_file_atomically(path) can succeed: the
// directory exists and takes a new file, and path is not a directory. Throws
// std::runtime_error with one sentence otherwise.
void check_writable(const std::string& path);

}  // namespace stackaudit
