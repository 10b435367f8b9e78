#include "agent/gate_thresholds.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "agent/exit_codes.h"
#include "agent/input_file.h"

namespace stackaudit {
namespace {

enum class KeyKind { kNumber, kCount, kNames };

// One key of the thresholds file: where its value goes and what it may be.
struct KeySpec {
  std::string_view table;
  std::string_view key;
  KeyKind kind;
  double min;
  double max;
  bool min_exclusive;
  std::string_view allowed;  // in words, for errors
  double GateThresholds::*number = nullptr;
  long GateThresholds::*count = nullptr;
};

constexpr double kNoMax = 1e9;

const std::array<KeySpec, 11> kKeys = {{
    {"probe_p95", "max_ratio", KeyKind::kNumber, 0, kNoMax, true, "a number greater than 0",
     &GateThresholds::probe_p95_max_ratio},
    {"probe_p99", "max_ratio", KeyKind::kNumber, 0, kNoMax, true, "a number greater than 0",
     &GateThresholds::probe_p99_max_ratio},
    {"probe_error_rate", "max_increase", KeyKind::kNumber, 0, 1, false,
     "a fraction from 0 to 1 (0.001 is 0.1 percentage point)",
     &GateThresholds::probe_error_rate_max_increase},
    {"rss", "max_ratio", KeyKind::kNumber, 0, kNoMax, true, "a number greater than 0",
     &GateThresholds::rss_max_ratio},
    {"threads", "max_ratio", KeyKind::kNumber, 0, kNoMax, true, "a number greater than 0",
     &GateThresholds::threads_max_ratio},
    {"event_loop_blocked", "max_share", KeyKind::kNumber, 0, 1, false, "a fraction from 0 to 1",
     &GateThresholds::event_loop_blocked_max_share},
    {"event_loop_new_sites", "max_share", KeyKind::kNumber, 0, 1, false, "a fraction from 0 to 1",
     &GateThresholds::event_loop_new_sites_max_share},
    {"pool_threads", "max_threads", KeyKind::kCount, 0, 1e6, false,
     "a whole number from 0 to 1000000", nullptr, &GateThresholds::pool_max_threads},
    {"pool_idle", "min_idle_share", KeyKind::kNumber, 0, 1, false, "a fraction from 0 to 1",
     &GateThresholds::pool_min_idle_share},
    {"throughput", "min_ratio", KeyKind::kNumber, 0, kNoMax, false, "a number from 0 up",
     &GateThresholds::throughput_min_ratio},
    {"pool", "names", KeyKind::kNames, 0, 0, false, "an array of pool names (strings)"},
}};

// The table that is not a gate: which pools the pool gates look at.
constexpr std::string_view kPoolTable = "pool";

bool is_gate(std::string_view id) {
  return std::find(kGateIds.begin(), kGateIds.end(), id) != kGateIds.end();
}

std::string type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date or time";
    default:
      return "nothing";
  }
}

std::string format_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string keys_of(std::string_view table) {
  std::string out = table == kPoolTable ? "" : "enabled";
  for (const KeySpec& k : kKeys)
    if (k.table == table) out += (out.empty() ? "" : ", ") + std::string(k.key);
  return out;
}

std::string gate_list() {
  std::string out;
  for (std::string_view id : kGateIds) out += (out.empty() ? "" : ", ") + std::string(id);
  return out;
}

class Reader {
 public:
  Reader(const std::string& path, GateThresholds& out) : path_(path), out_(out) {}

  void read(const toml::table& root) {
    for (const auto& [key, node] : root) {
      std::string_view name = key.str();
      if (!is_gate(name) && name != kPoolTable)
        fail(line(key, node), "unknown gate \"" + std::string(name) +
                                  "\" (the gates: " + gate_list() + "; [pool] names the pools)");
      const toml::table* table = node.as_table();
      if (!table)
        fail(line(key, node), std::string(name) + " must be a table ([" + std::string(name) +
                                  "] with its keys), not " + type_name(node));
      read_table(name, *table);
    }
  }

 private:
  void read_table(std::string_view table, const toml::table& keys) {
    for (const auto& [key, node] : keys) {
      std::string_view name = key.str();
      std::string where = "[" + std::string(table) + "] " + std::string(name);
      if (name == "enabled" && table != kPoolTable) {
        const auto* flag = node.as_boolean();
        if (!flag) fail(node, where + " must be true or false, not " + type_name(node));
        if (flag->get())
          out_.disabled.erase(std::string(table));
        else
          out_.disabled.insert(std::string(table));
        continue;
      }
      auto spec = std::find_if(kKeys.begin(), kKeys.end(),
                               [&](const KeySpec& k) { return k.table == table && k.key == name; });
      if (spec == kKeys.end())
        fail(line(key, node), "unknown key \"" + std::string(name) + "\" in [" +
                                  std::string(table) + "] (its keys: " + keys_of(table) + ")");
      read_value(*spec, where, node);
    }
  }

  void read_value(const KeySpec& spec, const std::string& where, const toml::node& node) {
    switch (spec.kind) {
      case KeyKind::kNumber: {
        if (!node.is_number())
          fail(node, where + " must be " + std::string(spec.allowed) + ", not " + type_name(node));
        double v = node.value<double>().value_or(0);
        check_range(spec, where, node, v);
        out_.*spec.number = v;
        break;
      }
      case KeyKind::kCount: {
        if (node.is_floating_point())
          fail(node, where + " must be " + std::string(spec.allowed) + ", not " +
                         format_number(node.as_floating_point()->get()));
        if (!node.is_integer())
          fail(node, where + " must be " + std::string(spec.allowed) + ", not " + type_name(node));
        auto v = node.as_integer()->get();
        check_range(spec, where, node, static_cast<double>(v));
        out_.*spec.count = static_cast<long>(v);
        break;
      }
      case KeyKind::kNames: {
        const toml::array* names = node.as_array();
        if (!names)
          fail(node, where + " must be " + std::string(spec.allowed) + ", not " + type_name(node));
        for (const toml::node& item : *names) {
          const auto* s = item.as_string();
          if (!s || s->get().empty())
            fail(item, where + " must hold pool names (non-empty strings), not " +
                           (s ? std::string("an empty string") : type_name(item)));
          out_.add_pool(s->get());
        }
        break;
      }
    }
  }

  void check_range(const KeySpec& spec, const std::string& where, const toml::node& node,
                   double v) {
    bool low = spec.min_exclusive ? v <= spec.min : v < spec.min;
    if (low || v > spec.max || v != v)
      fail(node, where + " must be " + std::string(spec.allowed) + ", not " + format_number(v));
  }

  static long line(const toml::key& key, const toml::node& node) {
    long l = static_cast<long>(key.source().begin.line);
    return l > 0 ? l : static_cast<long>(node.source().begin.line);
  }

  [[noreturn]] void fail(const toml::node& node, const std::string& what) {
    fail(static_cast<long>(node.source().begin.line), what);
  }

  [[noreturn]] void fail(long line, const std::string& what) {
    throw UserError{kExitUsage, path_ + ":" + std::to_string(line) + ": " + what};
  }

  const std::string& path_;
  GateThresholds& out_;
};

}  // namespace

void GateThresholds::add_pool(const std::string& name) {
  if (name.empty()) throw UserError{kExitUsage, "--pool needs a pool name, not an empty string"};
  if (std::find(pools.begin(), pools.end(), name) == pools.end()) pools.push_back(name);
}

GateThresholds parse_gate_thresholds(std::string_view text, const std::string& path) {
  GateThresholds out;
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    throw UserError{kExitUsage, path + ":" + std::to_string(at.line) + ":" +
                                    std::to_string(at.column) +
                                    ": not valid TOML: " + std::string(e.description())};
  }
  Reader(path, out).read(root);
  return out;
}

GateThresholds load_gate_thresholds(const std::string& path) {
  return parse_gate_thresholds(read_input_file(path, "the thresholds file"), path);
}

}  // namespace stackaudit
