#include "agent/service_metrics.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string_view>

#include "agent/curl_handles.h"
#include "agent/exit_codes.h"
#include "agent/version.h"
#include "injector/clock.h"

namespace stackaudit {
namespace {

// A metrics page larger than this is not read.
constexpr size_t kMaxBody = 16u << 20;

bool metric_name_ok(const std::string& name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front()))) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != ':') return false;
  return true;
}

struct Body {
  std::string text;
  bool too_large = false;
};

size_t keep_body(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<Body*>(user);
  if (body->text.size() + size * n > kMaxBody) {
    body->too_large = true;
    return 0;  // ends the transfer
  }
  body->text.append(data, size * n);
  return size * n;
}

int abandon_on_stop(void* stop, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<std::atomic<bool>*>(stop)->load() ? 1 : 0;
}

}  // namespace

void check_service_metrics(const ServiceMetricsOptions& o) {
  if (o.url.empty() != o.metric.empty())
    throw UserError{kExitUsage, o.url.empty()
                                    ? "--throughput-metric goes with --service-metrics URL (the "
                                      "service's Prometheus endpoint)"
                                    : "--service-metrics goes with --throughput-metric NAME (the "
                                      "service's request counter)"};
  if (o.url.empty()) return;
  CurlUrl u(curl_url());
  if (!u) throw std::bad_alloc();
  CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, o.url.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK)
    throw UserError{kExitUsage, "malformed --service-metrics URL '" + o.url + "' (" +
                                    curl_url_strerror(rc) + ")"};
  char* scheme = nullptr;
  curl_url_get(u.get(), CURLUPART_SCHEME, &scheme, 0);
  std::string s = scheme ? scheme : "";
  curl_free(scheme);
  if (s != "http" && s != "https")
    throw UserError{kExitUsage,
                    "--service-metrics '" + o.url + "' is not an http:// or https:// URL"};
  if (!metric_name_ok(o.metric))
    throw UserError{kExitUsage, "--throughput-metric '" + o.metric +
                                    "' is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"};
}

// No Debian-packaged C++ library parses the Prometheus text exposition
// (prometheus-cpp only writes it), so this is a minimal line scan of the
// format (docs: "Exposition formats", text-based), enough to read one
// counter: `name{label="value",...} value [timestamp]`, comments (#) and
// blank lines skipped, quoted label values with backslash escapes stepped
// over. It does not validate the page.
std::optional<double> counter_sum(const std::string& text, const std::string& metric) {
  std::optional<double> sum;
  const std::string with_total = metric.ends_with("_total") ? metric : metric + "_total";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    size_t i = 0;
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    if (i == line.size() || line[i] == '#') continue;
    size_t name_start = i;
    while (i < line.size() && line[i] != '{' && line[i] != ' ' && line[i] != '\t') ++i;
    std::string_view name = line.substr(name_start, i - name_start);
    if (name != metric && name != with_total) continue;
    if (i < line.size() && line[i] == '{') {  // labels: step over, quotes and escapes included
      bool quoted = false;
      for (++i; i < line.size(); ++i) {
        if (quoted && line[i] == '\\') {
          ++i;
        } else if (line[i] == '"') {
          quoted = !quoted;
        } else if (!quoted && line[i] == '}') {
          ++i;
          break;
        }
      }
    }
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t value_start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    std::string value(line.substr(value_start, i - value_start));
    if (value.empty()) continue;
    char* end = nullptr;
    double v = std::strtod(value.c_str(), &end);
    if (end != value.c_str() + value.size() || !std::isfinite(v)) continue;
    sum = sum.value_or(0) + v;
  }
  return sum;
}

void CounterRate::add(double value, int64_t at_ns) {
  if (readings_++ == 0) {
    first_ns_ = at_ns;
  } else {
    // A counter that went down was reset (the service restarted): what it
    // shows now is what it counted since.
    increase_ += value >= *last_ ? value - *last_ : value;
  }
  last_ = value;
  last_ns_ = at_ns;
}

std::optional<double> CounterRate::per_second() const {
  if (readings_ < 2 || last_ns_ <= first_ns_) return std::nullopt;
  return increase_ / (static_cast<double>(last_ns_ - first_ns_) * 1e-9);
}

ServiceScraper::ServiceScraper(ServiceMetricsOptions options) : options_(std::move(options)) {
  init_curl();
}

ServiceScraper::~ServiceScraper() {
  stop();
}

void ServiceScraper::start() {
  if (thread_.joinable() || options_.url.empty()) return;
  thread_ = std::thread([this] { run(); });
}

void ServiceScraper::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool ServiceScraper::scrape_once(std::string* why) {
  CurlEasy easy(curl_easy_init());
  if (!easy) {
    *why = "libcurl could not make a handle";
    return false;
  }
  CURL* h = easy.get();
  Body body;
  char error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(h, CURLOPT_URL, options_.url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_PROXY, "");
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(h, CURLOPT_USERAGENT, (std::string("stackaudit/") + kVersion).c_str());
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abandon_on_stop);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &stop_);
  if (!options_.cacert.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.cacert.c_str());
  CURLcode rc = curl_easy_perform(h);
  if (stop_) return true;  // abandoned: neither a reading nor an error
  if (rc != CURLE_OK) {
    *why = body.too_large ? "the page is larger than 16 MiB"
                          : std::string(error[0] ? error : curl_easy_strerror(rc));
    return false;
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    *why = "HTTP status " + std::to_string(status);
    return false;
  }
  auto value = counter_sum(body.text, options_.metric);
  if (!value) {
    *why = "no sample named " + options_.metric + " or " + options_.metric + "_total";
    return false;
  }
  std::lock_guard lock(mutex_);
  ++scrapes_;
  rate_.add(*value, static_cast<int64_t>(monotonic_ns()));
  return true;
}

void ServiceScraper::run() {
  auto next = std::chrono::steady_clock::now();
  while (!stop_) {
    std::string why;
    if (!scrape_once(&why)) {
      bool first;
      {
        std::lock_guard lock(mutex_);
        ++scrapes_;
        ++errors_;
        first = last_error_ != why;
        last_error_ = why;
      }
      if (first) spdlog::warn("--service-metrics {}: {}", options_.url, why);
    }
    next += options_.interval;
    auto now = std::chrono::steady_clock::now();
    if (next < now) next = now;  // a slow fetch: no burst to catch up
    std::unique_lock lock(mutex_);
    wake_.wait_until(lock, next, [&] { return stop_.load(); });
  }
}

ServiceScraper::Figures ServiceScraper::figures() const {
  std::lock_guard lock(mutex_);
  return {scrapes_, errors_, rate_.per_second()};
}

nlohmann::json ServiceScraper::json() const {
  Figures f = figures();
  return {{"url", options_.url},
          {"metric", options_.metric},
          {"scrapes", f.scrapes},
          {"scrape_errors", f.errors},
          {"requests_per_second",
           f.per_second ? nlohmann::json(*f.per_second) : nlohmann::json(nullptr)}};
}

}  // namespace stackaudit
