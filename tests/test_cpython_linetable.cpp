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

TEST(CPythonLineTable, LinesWrapAndGoBelowZeroAsInCPython) {
  // CPython keeps the line in a C int that wraps (it is built with -fwrapv);
  // co_lines says None for a line below 0. Found by fuzz/: a table read from
  // a process could overflow our int (undefined behaviour) and gave negative
  // lines. A no-column entry (kind 13) of one unit with a signed-varint delta:
  auto entry = [](unsigned svarint) {
    std::string e(1, static_cast<char>(0x80 | (13 << 3)));
    for (; svarint >= 64; svarint >>= 6) e += static_cast<char>(64 | (svarint & 63));
    return e + static_cast<char>(svarint);
  };
  // 1 - 5 = -4: None; + 10 = 6, as python3.11's co_lines says for this table.
  std::string below = entry(11) + entry(20);
  EXPECT_EQ(line_at_311(below, 1, 0), -1);
  EXPECT_EQ(line_at_311(below, 1, 1), 6);
  // INT_MAX + 1 wraps below 0: None; and no overflow from INT_MIN - 21.
  EXPECT_EQ(line_at_311(entry(2), 2147483647, 0), -1);
  EXPECT_EQ(line_at_311(entry(2) + entry(3), 2147483647, 1), 2147483647);
  // INT_MIN - 21 wraps back up to INT_MAX - 20.
  EXPECT_EQ(line_at_311(entry(43), -2147483647 - 1, 0), 2147483627);
  // A garbage firstlineno below 0.
  EXPECT_EQ(line_at_311(entry(0), -7, 0), -1);
}

// Tables written at random (every entry kind, line deltas up to +-2^30,
// firstlineno up to INT_MAX) decode as CPython's own co_lines reads them.
TEST(CPythonLineTable, RandomTablesMatchCoLines) {
  const char* script = R"(
import json, random, sys
random.seed(11)
def varint(u):
    out = []
    while u >= 64:
        out.append(64 | (u & 63)); u >>= 6
    return out + [u]
def svarint(v):
    return varint(((-v) << 1) | 1 if v < 0 else v << 1)
def delta():
    return random.choice([0, 1, -1, 2, random.randint(-300, 300),
                          random.randint(-2**30 + 1, 2**30 - 1)])
template = (lambda: None).__code__
out = []
for _ in range(400):
    first = random.choice([1, 5000, 2**31 - 1, 2**31 - 3, random.randint(1, 2**31 - 1)])
    table = []
    for _ in range(random.randint(1, 30)):
        kind = random.choice([0, 5, 9, 10, 11, 12, 13, 14, 15])
        table.append(0x80 | (kind << 3) | random.randint(0, 7))
        if kind < 10:
            table.append(random.randint(0, 127))
        elif kind < 13:
            table += [random.randint(0, 127), random.randint(0, 127)]
        elif kind == 13:
            table += svarint(delta())
        elif kind == 14:
            table += svarint(delta()) + varint(random.randint(0, 5)) + varint(
                random.randint(0, 80)) + varint(random.randint(0, 80))
    code = template.replace(co_linetable=bytes(table), co_firstlineno=first)
    out.append({"firstlineno": first, "linetable": bytes(table).hex(),
                "lines": [[s // 2, e // 2, -1 if l is None else l] for s, e, l in code.co_lines()]})
json.dump(out, sys.stdout)
)";
  RunResult r = run({"/usr/bin/python3.11", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto tables = nlohmann::json::parse(r.out);
  ASSERT_EQ(tables.size(), 400u);
  size_t units = 0, none = 0, mismatches = 0;
  for (const auto& t : tables) {
    std::string table = unhex(t["linetable"]);
    int first = t["firstlineno"];
    for (const auto& range : t["lines"]) {
      for (int u = range[0]; u < range[1].get<int>(); ++u) {
        ++units;
        int want = range[2];
        none += want == -1;
        int got = line_at_311(table, first, u);
        if (got != want && ++mismatches <= 5)
          ADD_FAILURE() << "table " << t["linetable"] << " firstlineno " << first << " unit " << u
                        << ": decoded " << got << ", CPython says " << want;
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << units << " code units";
  EXPECT_GT(none, 100u);  // the wrapped and below-zero lines were exercised
}

}  // namespace
}  // namespace stackaudit::test
