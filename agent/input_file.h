// Reading a file the user named (an audit, a thresholds file) whole.
#pragma once

#include <string>

namespace stackaudit {

// The file's content. Throws UserError (exit 2) with one sentence naming what
// the file is for (e.g. "the baseline audit"), the path and the reason.
// Files past 256 MiB are refused rather than read (a device, a wrong path).
std::string read_input_file(const std::string& path, const std::string& what);

}  // namespace stackaudit
