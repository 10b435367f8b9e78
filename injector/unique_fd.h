// One owner for each file descriptor and directory stream: closed when the
// owner goes, moved never copied. Every layer uses these instead of closing
// by hand on each return path.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <utility>

namespace stackaudit {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  // Closes what is held (if anything) and holds fd instead.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

class UniqueDir {
 public:
  explicit UniqueDir(const char* path) : dir_(::opendir(path)) {}
  ~UniqueDir() {
    if (dir_) ::closedir(dir_);
  }
  UniqueDir(const UniqueDir&) = delete;
  UniqueDir& operator=(const UniqueDir&) = delete;

  explicit operator bool() const { return dir_ != nullptr; }
  // The next entry, or nullptr at the end.
  dirent* next() { return ::readdir(dir_); }

 private:
  DIR* dir_;
};

}  // namespace stackaudit
