// CPython 3.11 location tables, as read from a target's memory (a code
// object's co_linetable and co_firstlineno): torn by a concurrent write, freed
// and reused, or simply not what we think. Input: 4 bytes of firstlineno, 2 of
// a code unit to look up, then the table.
#include <climits>

#include "collector/cpython_linetable.h"
#include "fuzz/fuzz_check.h"

using namespace stackaudit;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Bytes in(data, size);
  int firstlineno = in.take<int32_t>();
  int probe = in.take<uint16_t>();
  std::string table = in.rest();

  auto ranges = decode_linetable_311(table, firstlineno);
  size_t entries = 0;  // bytes that can start an entry
  for (char c : table) entries += (static_cast<uint8_t>(c) & 0x80) != 0;
  FUZZ_CHECK(ranges.size() <= entries);
  int unit = 0;
  for (const LineRange& r : ranges) {
    // Contiguous from unit 0, one to eight units each.
    FUZZ_CHECK(r.start == unit);
    FUZZ_CHECK(r.end > r.start && r.end - r.start <= 8);
    FUZZ_CHECK(r.line == -1 || r.line >= 0);
    unit = r.end;
  }
  // The lookup agrees with the full decoding, inside, at the edges and outside.
  for (int u : {probe, 0, unit - 1, unit, -1, INT_MAX}) {
    int want = -1;
    for (const LineRange& r : ranges)
      if (u >= r.start && u < r.end) want = r.line;
    FUZZ_CHECK(line_at_311(table, firstlineno, u) == want);
  }
  return 0;
}
