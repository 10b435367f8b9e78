// The 3.11 location-table decoder against CPython's own answer: every code
// object of a few standard-library modules, compiled by the real interpreter,
// every code unit compared with co_lines().
#include <gtest/gtest.h>

#include "collector/cpython_linetable.h"
#include "tests/support.h"

namespace stackaudit::test {
namespace {

std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

TEST(CPythonLineTable, MatchesCoLinesForEveryCodeUnit) {
  RunResult r = run({"/usr/bin/python3.11", DUMP_LINETABLES_SCRIPT});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto codes = nlohmann::json::parse(r.out);
  ASSERT_GT(codes.size(), 500u);
  size_t units = 0, mismatches = 0;
  std::map<int, size_t> kinds;  // entry kinds seen, to know what was covered
  for (const auto& c : codes) {
    std::string table = unhex(c["linetable"]);
    for (unsigned char b : table)
      if (b & 0x80) ++kinds[(b >> 3) & 15];
    int first = c["firstlineno"];
    std::vector<int> want(c["units"].get<size_t>(), -1);
    for (const auto& range : c["lines"])
      for (int u = range[0]; u < range[1].get<int>() && u < static_cast<int>(want.size()); ++u)
        want[static_cast<size_t>(u)] = range[2];
    auto ranges = decode_linetable_311(table, first);
    for (size_t u = 0; u < want.size(); ++u) {
      ++units;
      int got = line_at_311(table, first, static_cast<int>(u));
      if (got != want[u] && ++mismatches <= 5)
        ADD_FAILURE() << c["name"] << " unit " << u << ": decoded " << got << ", CPython says "
                      << want[u];
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << units << " code units";
  // The comparison covered short forms, one-line forms with each delta, the
  // no-column form, the long form (long jumps, negative deltas) and code
  // without a location.
  for (int kind : {0, 10, 11, 12, 13, 14, 15}) EXPECT_GT(kinds[kind], 0u) << "entry kind " << kind;
}

TEST(CPythonLineTable, HandWrittenEntries) {
  // firstlineno 10: one-line form delta 1 (2 units), long form with line delta
  // -3 (1 unit), no location (1 unit), no-column form delta +120 (1 unit).
  std::string table;
  table += static_cast<char>(0x80 | (11 << 3) | 1);  // one-line, delta 1, 2 units
  table += '\x01';
  table += '\x05';
  table += static_cast<char>(0x80 | (14 << 3) | 0);  // long form, 1 unit
  table += '\x07';                                   // signed varint: -(7>>1) = -3
  table += '\x00';                                   // end line delta
  table += '\x01';                                   // column
  table += '\x02';                                   // end column
  table += static_cast<char>(0x80 | (15 << 3) | 0);  // no location, 1 unit
  table += static_cast<char>(0x80 | (13 << 3) | 0);  // no columns, 1 unit
  table += static_cast<char>(0x40 | (240 & 63));     // 240 = +120 signed; low chunk, more follows
  table += static_cast<char>(240 >> 6);
  EXPECT_EQ(line_at_311(table, 10, 0), 11);
  EXPECT_EQ(line_at_311(table, 10, 1), 11);
  EXPECT_EQ(line_at_311(table, 10, 2), 8);
  EXPECT_EQ(line_at_311(table, 10, 3), -1);
  EXPECT_EQ(line_at_311(table, 10, 4), 128);
  EXPECT_EQ(line_at_311(table, 10, 5), -1);  // past the end
}

}  // namespace
}  // namespace stackaudit::test
