#include "collector/cpython_linetable.h"

#include <cstdint>
#include <limits>

namespace stackaudit {
namespace {

// Entry kinds, from bits 3-6 of an entry's first byte.
constexpr int kNoColumns = 13;     // line delta as a signed varint, no columns
constexpr int kLongForm = 14;      // signed varint line delta, then three varints
constexpr int kNoLocation = 15;    // code without a source position
constexpr int kOneLineFirst = 10;  // 10..12: line delta 0..2, two column bytes
constexpr int kOneLineLast = 12;

class Reader {
 public:
  explicit Reader(std::string_view t) : t_(t) {}
  bool done() const { return pos_ >= t_.size(); }
  uint8_t byte() { return done() ? 0 : static_cast<uint8_t>(t_[pos_++]); }
  // 6-bit chunks, least significant first; bit 6 says another chunk follows.
  unsigned varint() {
    unsigned b = byte();
    unsigned value = b & 63;
    for (unsigned shift = 6; (b & 64) && !done() && shift < 32; shift += 6) {
      b = byte();
      value |= (b & 63u) << shift;
    }
    return value;
  }
  // The sign is in the lowest bit.
  int signed_varint() {
    unsigned v = varint();
    return (v & 1) ? -static_cast<int>(v >> 1) : static_cast<int>(v >> 1);
  }
  // Skips to the next entry: its first byte has bit 7 set.
  void next_entry() {
    while (!done() && !(static_cast<uint8_t>(t_[pos_]) & 0x80)) ++pos_;
  }

 private:
  std::string_view t_;
  size_t pos_ = 0;
};

// Calls visit(range) for each entry in order, until visit returns false.
//
// The line is kept as CPython keeps it: a C int that wraps (CPython is built
// with -fwrapv), where a negative value means "no location" (co_lines says
// None). Unsigned arithmetic gives the same wrap without undefined behaviour,
// whatever firstlineno and deltas a torn or hostile table holds.
template <typename Visit>
void for_each_range(std::string_view table, int firstlineno, Visit visit) {
  Reader r(table);
  uint32_t line = static_cast<uint32_t>(firstlineno);
  int unit = 0;
  r.next_entry();
  // Each entry covers at most 8 units: stop before the unit count could wrap.
  while (!r.done() && unit <= std::numeric_limits<int>::max() - 8) {
    uint8_t first = r.byte();
    int code = (first >> 3) & 15;
    int length = (first & 7) + 1;
    int delta = 0;
    if (code == kNoColumns || code == kLongForm)
      delta = r.signed_varint();
    else if (code >= kOneLineFirst && code <= kOneLineLast)
      delta = code - kOneLineFirst;
    line += static_cast<uint32_t>(delta);
    int as_int = static_cast<int32_t>(line);
    if (!visit(LineRange{unit, unit + length, code == kNoLocation || as_int < 0 ? -1 : as_int}))
      return;
    unit += length;
    r.next_entry();  // skip columns and end-line data we do not use
  }
}

}  // namespace

std::vector<LineRange> decode_linetable_311(std::string_view table, int firstlineno) {
  std::vector<LineRange> out;
  for_each_range(table, firstlineno, [&](const LineRange& range) {
    out.push_back(range);
    return true;
  });
  return out;
}

int line_at_311(std::string_view table, int firstlineno, int unit) {
  // Decoded on the fly, without a vector: a table read from a process may be
  // long (up to 16 MiB), and the answer is usually near its start.
  int line = -1;
  for_each_range(table, firstlineno, [&](const LineRange& range) {
    if (unit >= range.start && unit < range.end) {
      line = range.line;
      return false;
    }
    return unit >= range.end;  // ranges ascend: past `unit` means not there
  });
  return line;
}

}  // namespace stackaudit
