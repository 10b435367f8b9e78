// The limits `stackaudit gate` holds two audits to: documented defaults, which
// a thresholds file (TOML, docs/gate.md) changes gate by gate.
#pragma once

#include <array>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace stackaudit {

// Every gate, in the order they are evaluated and reported. The id names the
// gate in the output and its table in the thresholds file.
inline constexpr std::array<std::string_view, 11> kGateIds = {"probe_p95",
                                                              "probe_p99",
                                                              "probe_error_rate",
                                                              "rss",
                                                              "threads",
                                                              "event_loop_blocked",
                                                              "event_loop_new_sites",
                                                              "pool_threads",
                                                              "pool_idle",
                                                              "target_up",
                                                              "throughput"};

struct GateThresholds {
  double probe_p95_max_ratio = 1.10;             // current p95 <= baseline p95 x this
  double probe_p99_max_ratio = 1.10;             // current p99 <= baseline p99 x this
  double probe_error_rate_max_increase = 0.001;  // current <= baseline + this (a fraction)
  double rss_max_ratio = 1.05;                   // current average RSS <= baseline x this
  double threads_max_ratio = 1.00;               // current average threads <= baseline x this
  double event_loop_blocked_max_share = 0.0;     // blocked share of event-loop samples
  double event_loop_new_sites_max_share = 0.0;   // a new site's share of event-loop samples
  long pool_max_threads = 10;                    // a named pool's most threads in the window
  double pool_min_idle_share = 0.5;              // a named pool's idle share of its samples
  double throughput_min_ratio = 0.90;            // current service req/s >= baseline x this

  std::vector<std::string> pools;  // the pools to gate ([pool] names, then --pool), no repeats
  std::set<std::string, std::less<>> disabled;  // gates with enabled = false

  bool enabled(std::string_view gate) const { return !disabled.contains(gate); }
  // Adds a pool name unless it is already there.
  void add_pool(const std::string& name);
};

// Reads a thresholds file over the defaults. Throws UserError (exit 2) with
// one sentence that starts with FILE:LINE for an unknown gate or key, a wrong
// type or a value out of range, and FILE:LINE:COLUMN for a TOML syntax error.
GateThresholds load_gate_thresholds(const std::string& path);

// The same, from TOML text (path only names it in errors).
GateThresholds parse_gate_thresholds(std::string_view text, const std::string& path);

}  // namespace stackaudit
