#pragma once

#include <string>

namespace stackaudit {

// Writes content to path atomically: a temporary file in the same directory,
// fsync, rename. Readers see the old file or the new one, never half of one.
// Throws std::runtime_error with one sentence on failure.
void write_file_atomically(const std::string& path, const std::string& content);

// Checks, before any work, that write_file_atomically(path) can succeed: the
// directory exists and takes a new file, and path is not a directory. Throws
// std::runtime_error with one sentence otherwise.
void check_writable(const std::string& path);

}  // namespace stackaudit
