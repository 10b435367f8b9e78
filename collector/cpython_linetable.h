// Decoding CPython 3.11's location table (co_linetable, Objects/locations.md):
// which source line each code unit of a code object belongs to.
#pragma once

#include <string_view>
#include <vector>

namespace stackaudit {

struct LineRange {
  int start;  // first code unit (2-byte instruction word)
  int end;    // one past the last
  int line;   // -1: no location (compiler-generated code, or a line CPython
              // would show as None: below 0 after its int arithmetic wraps)
};

std::vector<LineRange> decode_linetable_311(std::string_view table, int firstlineno);

// The line of the code unit at `unit`, or -1.
int line_at_311(std::string_view table, int firstlineno, int unit);

}  // namespace stackaudit
