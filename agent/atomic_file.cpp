#include "agent/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "injector/unique_fd.h"

namespace stackaudit {

AtomicFile::AtomicFile(const std::string& path)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_.reset(::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd_) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::fail(const char* what) {
  std::string msg = std::string("cannot ") + what + " " + path_ + ": " + std::strerror(errno);
  fd_.reset();
  ::unlink(tmp_.c_str());
  committed_ = true;  // nothing left for the destructor to remove
  throw std::runtime_error(msg);
}

void AtomicFile::write(std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd_.get(), text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    text.remove_prefix(static_cast<size_t>(n));
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_.get()) != 0) fail("sync");
  if (::close(fd_.release()) != 0) fail("write");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("replace");
  committed_ = true;
}

void write_file_atomically(const std::string& path, const std::string& content) {
  AtomicFile file(path);
  file.write(content);
  file.commit();
}

void check_writable(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    throw std::runtime_error("cannot write " + path + ": it is a directory");
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  fd.reset();
  ::unlink(tmp.c_str());
}

}  // namespace stackaudit
