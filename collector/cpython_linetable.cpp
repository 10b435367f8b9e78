#include "collector/cpython_linetable.h"

#include <cstdint>

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

}  // namespace

std::vector<LineRange> decode_linetable_311(std::string_view table, int firstlineno) {
  std::vector<LineRange> out;
  Reader r(table);
  int line = firstlineno;
  int unit = 0;
  r.next_entry();
  while (!r.done()) {
    uint8_t first = r.byte();
    int code = (first >> 3) & 15;
    int length = (first & 7) + 1;
    int delta = 0;
    if (code == kNoColumns || code == kLongForm)
      delta = r.signed_varint();
    else if (code >= kOneLineFirst && code <= kOneLineLast)
      delta = code - kOneLineFirst;
    line += delta;
    out.push_back({unit, unit + length, code == kNoLocation ? -1 : line});
    unit += length;
    r.next_entry();  // skip columns and end-line data we do not use
  }
  return out;
}

int line_at_311(std::string_view table, int firstlineno, int unit) {
  for (const LineRange& r : decode_linetable_311(table, firstlineno))
    if (unit >= r.start && unit < r.end) return r.line;
  return -1;
}

}  // namespace stackaudit
