// The service's own request counter (`agent --service-metrics URL
// --throughput-metric NAME`): its Prometheus text endpoint, fetched once per
// --interval from a thread of its own, and the counter's rate over the run
// (window.service, window.throughput.service_requests_per_second).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

namespace stackaudit {

struct ServiceMetricsOptions {
  std::string url;     // "" for none
  std::string metric;  // the counter's name, with or without _total
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds timeout{2000};  // each fetch (--probe-timeout)
  std::string cacert;                       // CA bundle for https:// (--probe-cacert)
};

// Checks the pair (both or neither, an http(s) URL, a metric name); throws
// UserError (exit 2) naming the option.
void check_service_metrics(const ServiceMetricsOptions& o);

// The sum of every sample of `metric` (or `metric`_total) in a Prometheus
// text exposition, over all its label sets; nullopt when there is none.
std::optional<double> counter_sum(const std::string& exposition, const std::string& metric);

// A counter's increase over successive readings, across resets (a service
// restarted: its counter starts again from 0).
class CounterRate {
 public:
  void add(double value, int64_t at_ns);
  // Increase per second between the first and last reading; nullopt before
  // two readings.
  std::optional<double> per_second() const;

 private:
  std::optional<double> last_;
  int64_t first_ns_ = 0, last_ns_ = 0;
  double increase_ = 0;
  size_t readings_ = 0;
};

class ServiceScraper {
 public:
  explicit ServiceScraper(ServiceMetricsOptions options);
  ~ServiceScraper();
  ServiceScraper(const ServiceScraper&) = delete;
  ServiceScraper& operator=(const ServiceScraper&) = delete;

  void start();
  void stop();  // joins; idempotent; an unfinished fetch is abandoned

  struct Figures {
    uint64_t scrapes = 0, errors = 0;
    std::optional<double> per_second;
  };
  Figures figures() const;
  // window.service (docs/audit-json.md).
  nlohmann::json json() const;

 private:
  void run();
  // One fetch and read; false (and *why) when it failed.
  bool scrape_once(std::string* why);

  ServiceMetricsOptions options_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t scrapes_ = 0, errors_ = 0;
  CounterRate rate_;
  std::string last_error_;
};

}  // namespace stackaudit
