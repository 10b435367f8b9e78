// `stackaudit agent`: samples a live process every interval and serves
// Prometheus metrics; writes an aggregate audit on exit and on SIGUSR1.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "agent/pipeline.h"
#include "collector/symbolizer.h"

namespace stackaudit {

struct AgentOptions {
  pid_t pid = 0;          // --pid, or
  std::string match;      // --match REGEX over the command line (and descendants)
  bool children = false;  // --children: with --pid, its descendants too
  size_t max_processes = 64;
  std::chrono::milliseconds interval{1000};
  std::string listen = "127.0.0.1:9464";
  std::string audit_json;                 // "" for none
  std::string folded;                     // --folded FILE, "" for none
  std::string speedscope;                 // --speedscope FILE, "" for none
  std::chrono::milliseconds duration{0};  // 0: until stopped
  std::string rules_file;
  size_t max_sites = 50;
  std::chrono::milliseconds max_stop{50};  // --max-stop
  SourceLines source_lines = SourceLines::kProgram;
  TaskOptions tasks;  // --tasks, --no-tasks, --max-tasks
  // The latency probe (agent/probe.h): --probe [NAME=]URL, checked at start.
  std::vector<std::string> probes;
  std::string probe_rate = "5/s";
  std::chrono::milliseconds probe_timeout{2000};
  std::string probe_cacert;
  // The service's own request counter (agent/service_metrics.h).
  std::string service_metrics;    // URL of its Prometheus text endpoint
  std::string throughput_metric;  // the counter's name
};

int run_agent(const AgentOptions& options);

// "500ms", "1s", "2m", "1h" -> milliseconds; throws UserError (exit 2).
std::chrono::milliseconds parse_duration(const std::string& text, const char* option);

}  // namespace stackaudit
