// The agent's active latency probe (`agent --probe [NAME=]URL`): requests to
// the service at a constant rate, from a thread of its own, timed from when
// each was due (no coordinated omission). Figures go to Prometheus
// (stackaudit_probe_*) and to the window audit (window.probes[]).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/curl_handles.h"

namespace prometheus {
class Registry;
}

namespace stackaudit {

enum class ProbeKind { kHttp, kHttps, kTcp };

// One --probe, checked.
struct ProbeTarget {
  std::string name;  // the metrics' probe label
  std::string url;   // as given
  ProbeKind kind = ProbeKind::kHttp;
  std::string request_url;  // what libcurl is given (tcp:// becomes http:// with connect-only)
};

struct ProbeOptions {
  std::vector<ProbeTarget> targets;
  double rate_per_second = 5;  // per probe
  std::chrono::milliseconds timeout{2000};
  std::string cacert;  // CA bundle for https:// ("" for the system's)
};

// "[NAME=]URL" -> a target; throws UserError (exit 2) naming --probe.
ProbeTarget parse_probe(const std::string& spec);
// "5/s" or "5" -> 5; throws UserError naming --probe-rate.
double parse_probe_rate(const std::string& text);
// Every check of the probe options together (names unique, timeout and rate
// in range, the CA file readable); throws UserError.
ProbeOptions make_probe_options(const std::vector<std::string>& specs, const std::string& rate,
                                std::chrono::milliseconds timeout, const std::string& cacert);

// How a request ended. kOk: HTTP 2xx or 3xx, or a tcp:// connection made.
enum class ProbeResult { kOk, kHttp4xx, kHttp5xx, kTimeout, kConnectError };
constexpr size_t kProbeResults = 5;
const char* probe_result_name(ProbeResult r);

// One probe's figures since it started.
struct ProbeStats {
  ProbeTarget target;
  uint64_t sent = 0;       // requests started (a request that never found a free slot is not)
  uint64_t completed = 0;  // ended, whatever the result
  std::array<uint64_t, kProbeResults> by_result{};
  uint64_t late_starts = 0;
  std::optional<double> p50, p95, p99, max;  // seconds from the due time; none when completed == 0
  double seconds = 0;                        // the probe's running time so far
  double rate_per_second = 0;                // configured
};

// The window.probes[] entry (docs/audit-json.md).
nlohmann::json probe_json(const ProbeStats& s);
// completed / seconds, 0 when no time has passed.
double achieved_rate(const ProbeStats& s);

class Prober {
 public:
  // registry: where the stackaudit_probe_* series go (may be null).
  Prober(ProbeOptions options, prometheus::Registry* registry);
  ~Prober();
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // Starts the probe thread; its clock (t0) starts now.
  void start();
  // Stops and joins it; requests in flight are dropped. Idempotent.
  void stop();
  // Figures so far, one per target, in the order given. Thread-safe.
  std::vector<ProbeStats> results() const;

 private:
  struct Probe;
  struct Slot;
  void run();
  void start_due(Probe& p, int64_t now);
  void finish(Slot& slot, int curl_code, int64_t now);
  void record(Probe& p, ProbeResult r, double seconds);

  ProbeOptions options_;
  std::vector<std::unique_ptr<Probe>> probes_;
  CurlMulti multi_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  int64_t t0_ns_ = 0, end_ns_ = 0;
  mutable std::mutex mutex_;  // the figures in probes_
};

}  // namespace stackaudit
