// Text that comes from the target (thread names, command lines, paths,
// symbols, Python strings) is bytes, not necessarily UTF-8: the kernel cuts a
// thread name at 15 bytes, in the middle of a character if need be, and a
// path or argument may be in any encoding. Everything the snapshot carries is
// made valid UTF-8 here, once, so that the JSON, the metrics' labels and the
// text report can rely on it.
#pragma once

#include <string>
#include <string_view>

namespace stackaudit {

// Replaces each byte that is not part of a well-formed UTF-8 sequence (RFC
// 3629: no overlong forms, no surrogates, nothing above U+10FFFF) with U+FFFD.
void make_valid_utf8(std::string& text);
std::string valid_utf8(std::string_view text);

}  // namespace stackaudit
