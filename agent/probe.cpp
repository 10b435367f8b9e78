#include "agent/probe.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>

#include "agent/exit_codes.h"
#include "agent/version.h"
#include "collector/percentile.h"
#include "injector/clock.h"

namespace stackaudit {
namespace {

constexpr double kMaxRate = 1000;  // per probe; a probe, not a load generator
constexpr auto kMinTimeout = std::chrono::milliseconds(10);
constexpr auto kMaxTimeout = std::chrono::seconds(60);
constexpr size_t kMaxNameLength = 64;
// Requests in flight per probe: enough for rate x timeout, never more than
// this (past it, a request that finds no free slot within its timeout counts
// as a timeout, unsent).
constexpr size_t kMaxSlots = 512;
// A request that starts this long after it was due counts as a late start
// (the loop's own wake-up jitter is well under it).
constexpr int64_t kLateNs = 10'000'000;
// Latencies kept for the exact percentiles; past it, a uniform reservoir.
constexpr size_t kMaxSamples = 100000;

const prometheus::Histogram::BucketBoundaries kProbeBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

constexpr std::array<const char*, kProbeResults> kResultNames = {"ok", "http_4xx", "http_5xx",
                                                                 "timeout", "connect_error"};

UserError usage(const std::string& sentence) {
  return UserError{kExitUsage, sentence};
}

bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' ||
         c == '/' || c == '-';
}

std::string url_part(CURLU* u, CURLUPart part, unsigned flags) {
  char* text = nullptr;
  CURLUcode code = curl_url_get(u, part, &text, flags);
  std::string out = code == CURLUE_OK && text ? text : "";
  curl_free(text);
  return out;
}

size_t discard_body(char*, size_t size, size_t n, void*) {
  return size * n;
}

int64_t now_ns() {
  return static_cast<int64_t>(monotonic_ns());
}

}  // namespace

void init_curl() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

const char* probe_result_name(ProbeResult r) {
  return kResultNames[static_cast<size_t>(r)];
}

ProbeTarget parse_probe(const std::string& spec) {
  ProbeTarget t;
  t.url = spec;
  // NAME=URL: an '=' before the scheme's "://" (a query string may hold '=' too).
  size_t scheme_end = spec.find("://"), eq = spec.find('=');
  bool named = eq != std::string::npos && (scheme_end == std::string::npos || eq < scheme_end);
  if (named) {
    t.name = spec.substr(0, eq);
    t.url = spec.substr(eq + 1);
    if (t.name.empty() || t.name.size() > kMaxNameLength ||
        !std::all_of(t.name.begin(), t.name.end(), name_char))
      throw usage("malformed --probe name '" + t.name +
                  "': 1 to 64 characters of A-Z a-z 0-9 _ . : / -");
  }
  CurlUrl u(curl_url());
  if (!u) throw std::bad_alloc();
  CURLUcode rc = curl_url_set(u.get(), CURLUPART_URL, t.url.c_str(), CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK)
    throw usage("malformed --probe '" + spec + "' (" + curl_url_strerror(rc) +
                "): expected [NAME=]URL with http://, https:// or tcp://HOST:PORT");
  std::string scheme = url_part(u.get(), CURLUPART_SCHEME, 0);
  if (scheme == "http") {
    t.kind = ProbeKind::kHttp;
  } else if (scheme == "https") {
    t.kind = ProbeKind::kHttps;
  } else if (scheme == "tcp") {
    t.kind = ProbeKind::kTcp;
  } else {
    throw usage("--probe '" + spec + "' has the scheme '" + scheme +
                "': a probe is http://, https:// or tcp://HOST:PORT");
  }
  std::string host = url_part(u.get(), CURLUPART_HOST, 0);
  if (host.empty()) throw usage("--probe '" + spec + "' names no host");
  std::string port = url_part(u.get(), CURLUPART_PORT,
                              t.kind == ProbeKind::kTcp ? 0u : unsigned{CURLU_DEFAULT_PORT});
  if (port.empty())
    throw usage("--probe '" + spec + "' needs a port: a tcp:// probe is tcp://HOST:PORT");
  std::string path = url_part(u.get(), CURLUPART_PATH, 0);
  if (t.kind == ProbeKind::kTcp) {
    std::string query = url_part(u.get(), CURLUPART_QUERY, 0);
    if ((!path.empty() && path != "/") || !query.empty())
      throw usage("--probe '" + spec + "': a tcp:// probe is tcp://HOST:PORT, with no path");
    path.clear();
    // The same address as an http:// URL: libcurl connects and stops there
    // (CURLOPT_CONNECT_ONLY); no byte of HTTP is sent.
    curl_url_set(u.get(), CURLUPART_SCHEME, "http", 0);
  }
  t.request_url = url_part(u.get(), CURLUPART_URL, 0);
  if (!named) {
    t.name = host + ":" + port + path;
    bool fits = t.name.size() <= kMaxNameLength &&
                std::all_of(t.name.begin(), t.name.end(),
                            [](char c) { return name_char(c) || c == '[' || c == ']'; });
    if (!fits)
      throw usage("--probe '" + spec + "' makes the probe name '" + t.name +
                  "', too long or with odd characters for a metric label: give it a name "
                  "with NAME=URL");
  }
  return t;
}

double parse_probe_rate(const std::string& text) {
  std::string number = text;
  if (number.ends_with("/s")) number.resize(number.size() - 2);
  double rate = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), rate);
  if (number.empty() || ec != std::errc() || end != number.data() + number.size() ||
      !std::isfinite(rate))
    throw usage("malformed --probe-rate '" + text +
                "': expected requests per second per probe, like 5/s, 20 or 0.5/s");
  if (!(rate > 0) || rate > kMaxRate)
    throw usage("--probe-rate '" + text + "' is out of range: more than 0, at most 1000/s");
  return rate;
}

ProbeOptions make_probe_options(const std::vector<std::string>& specs, const std::string& rate,
                                std::chrono::milliseconds timeout, const std::string& cacert) {
  ProbeOptions o;
  o.rate_per_second = parse_probe_rate(rate);
  if (timeout < kMinTimeout || timeout > kMaxTimeout)
    throw usage("--probe-timeout must be from 10ms to 60s, not " + std::to_string(timeout.count()) +
                "ms");
  o.timeout = timeout;
  std::set<std::string> names;
  for (const std::string& spec : specs) {
    ProbeTarget t = parse_probe(spec);
    if (!names.insert(t.name).second)
      throw usage("two --probe options have the name '" + t.name +
                  "': give each its own with NAME=URL");
    o.targets.push_back(std::move(t));
  }
  if (!cacert.empty()) {
    if (access(cacert.c_str(), R_OK) != 0)
      throw usage("cannot read the --probe-cacert file '" + cacert + "': " + std::strerror(errno));
    std::ifstream in(cacert);
    if (!in.good()) throw usage("cannot read the --probe-cacert file '" + cacert + "'");
    char c;
    if (!in.get(c)) throw usage("the --probe-cacert file '" + cacert + "' is empty or a folder");
  }
  o.cacert = cacert;
  return o;
}

double achieved_rate(const ProbeStats& s) {
  return s.seconds > 0 ? static_cast<double>(s.completed) / s.seconds : 0.0;
}

nlohmann::json probe_json(const ProbeStats& s) {
  auto count = [&](ProbeResult r) { return s.by_result[static_cast<size_t>(r)]; };
  uint64_t errors = s.completed - count(ProbeResult::kOk);
  auto seconds = [](const std::optional<double>& v) -> nlohmann::json {
    if (!v) return nullptr;
    return *v;
  };
  return {
      {"name", s.target.name},
      {"url", s.target.url},
      {"kind", s.target.kind == ProbeKind::kHttp    ? "http"
               : s.target.kind == ProbeKind::kHttps ? "https"
                                                    : "tcp"},
      {"requests", s.completed},
      {"ok", count(ProbeResult::kOk)},
      {"errors", errors},
      {"errors_by_kind",
       {{"http_4xx", count(ProbeResult::kHttp4xx)},
        {"http_5xx", count(ProbeResult::kHttp5xx)},
        {"timeout", count(ProbeResult::kTimeout)},
        {"connect_error", count(ProbeResult::kConnectError)}}},
      {"error_rate",
       s.completed ? static_cast<double>(errors) / static_cast<double>(s.completed) : 0.0},
      {"p50", seconds(s.p50)},
      {"p95", seconds(s.p95)},
      {"p99", seconds(s.p99)},
      {"max", seconds(s.max)},
      {"requests_per_second", achieved_rate(s)},
      {"rate_per_second", s.rate_per_second},
      {"late_starts", s.late_starts},
  };
}

// One request slot: an easy handle, reused (its HTTP connections stay in the
// multi handle's cache: keep-alive).
struct Prober::Slot {
  Probe* probe = nullptr;
  CurlEasy easy;
  int64_t due_ns = 0;
};

struct Prober::Probe {
  ProbeTarget target;
  std::vector<std::unique_ptr<Slot>> slots;
  std::vector<Slot*> free;
  uint64_t next = 0;  // index of the next request due: t0 + next / rate
  // Figures, under mutex_.
  uint64_t sent = 0, completed = 0, late_starts = 0;
  std::array<uint64_t, kProbeResults> by_result{};
  std::vector<double> samples;  // seconds from the due time
  uint64_t seen = 0;
  double max = 0;
  uint64_t rng = 0x2545f4914f6cdd1dull;
  // Series (null without a registry).
  prometheus::Histogram* duration = nullptr;
  std::array<prometheus::Counter*, kProbeResults> requests{};
};

Prober::Prober(ProbeOptions options, prometheus::Registry* registry)
    : options_(std::move(options)) {
  init_curl();
  multi_.reset(curl_multi_init());
  if (!multi_) throw std::runtime_error("libcurl could not make a multi handle");
  prometheus::Family<prometheus::Histogram>* durations = nullptr;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  if (registry) {
    durations = &prometheus::BuildHistogram()
                     .Name("stackaudit_probe_duration_seconds")
                     .Help(
                         "Latency of the agent's probe requests (--probe), from when each was "
                         "due to its answer or error, whatever the result")
                     .Register(*registry);
    requests = &prometheus::BuildCounter()
                    .Name("stackaudit_probe_requests_total")
                    .Help(
                        "The agent's probe requests (--probe) that ended, by result: ok, "
                        "http_4xx, http_5xx, timeout, connect_error")
                    .Register(*registry);
  }
  double timeout_s = static_cast<double>(options_.timeout.count()) / 1000.0;
  size_t slots =
      std::min(kMaxSlots, static_cast<size_t>(std::ceil(options_.rate_per_second * timeout_s)) + 1);
  for (const ProbeTarget& t : options_.targets) {
    auto p = std::make_unique<Probe>();
    p->target = t;
    if (durations) {
      p->duration = &durations->Add({{"probe", t.name}}, kProbeBuckets);
      for (size_t r = 0; r < kProbeResults; ++r)
        p->requests[r] = &requests->Add({{"probe", t.name}, {"result", kResultNames[r]}});
    }
    for (size_t i = 0; i < slots; ++i) {
      auto s = std::make_unique<Slot>();
      s->probe = p.get();
      s->easy.reset(curl_easy_init());
      if (!s->easy) throw std::runtime_error("libcurl could not make an easy handle");
      CURL* h = s->easy.get();
      curl_easy_setopt(h, CURLOPT_URL, t.request_url.c_str());
      curl_easy_setopt(h, CURLOPT_PRIVATE, s.get());
      curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
      // The service itself, never through a proxy named in the environment.
      curl_easy_setopt(h, CURLOPT_PROXY, "");
      curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
      curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
      curl_easy_setopt(h, CURLOPT_USERAGENT, (std::string("stackaudit-probe/") + kVersion).c_str());
      if (!options_.cacert.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.cacert.c_str());
      if (t.kind == ProbeKind::kTcp) {
        // Connect, then stop: a fresh TCP connection per request, closed when
        // the handle leaves the multi handle.
        curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
        curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
      }
      p->free.push_back(s.get());
      p->slots.push_back(std::move(s));
    }
    probes_.push_back(std::move(p));
  }
}

Prober::~Prober() {
  stop();
}

void Prober::start() {
  if (thread_.joinable() || probes_.empty()) return;
  t0_ns_ = now_ns();
  thread_ = std::thread([this] { run(); });
}

void Prober::stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  curl_multi_wakeup(multi_.get());
  thread_.join();
  std::lock_guard lock(mutex_);
  end_ns_ = now_ns();
}

void Prober::record(Probe& p, ProbeResult r, double seconds) {
  if (p.duration) {
    p.duration->Observe(seconds);
    p.requests[static_cast<size_t>(r)]->Increment();
  }
  std::lock_guard lock(mutex_);
  ++p.completed;
  ++p.by_result[static_cast<size_t>(r)];
  p.max = p.completed == 1 ? seconds : std::max(p.max, seconds);
  ++p.seen;
  if (p.samples.size() < kMaxSamples) {
    p.samples.push_back(seconds);
  } else {
    p.rng ^= p.rng << 13;  // xorshift64: uniform enough for a reservoir
    p.rng ^= p.rng >> 7;
    p.rng ^= p.rng << 17;
    uint64_t slot = p.rng % p.seen;
    if (slot < kMaxSamples) p.samples[slot] = seconds;
  }
}

void Prober::start_due(Probe& p, int64_t now) {
  const double period_ns = 1e9 / options_.rate_per_second;
  const int64_t timeout_ns = static_cast<int64_t>(options_.timeout.count()) * 1000000;
  for (;;) {
    int64_t due =
        t0_ns_ + static_cast<int64_t>(std::llround(static_cast<double>(p.next) * period_ns));
    if (due > now) return;
    int64_t waited = now - due;
    if (waited >= timeout_ns) {
      // It waited its whole timeout for a free slot (or the agent was not
      // scheduled): a timeout that was never sent.
      ++p.next;
      {
        std::lock_guard lock(mutex_);
        ++p.late_starts;
      }
      record(p, ProbeResult::kTimeout, static_cast<double>(waited) * 1e-9);
      continue;
    }
    if (p.free.empty()) return;  // it waits for a slot; its wait counts in its latency
    Slot* s = p.free.back();
    p.free.pop_back();
    s->due_ns = due;
    // The timeout runs from the due time, like the latency; rounded up to
    // curl's whole milliseconds, so that it never ends before due + timeout.
    long left_ms = std::max<long>(1, static_cast<long>((timeout_ns - waited + 999999) / 1000000));
    curl_easy_setopt(s->easy.get(), CURLOPT_TIMEOUT_MS, left_ms);
    if (curl_multi_add_handle(multi_.get(), s->easy.get()) != CURLM_OK) {
      p.free.push_back(s);
      return;  // tried again on the next turn
    }
    ++p.next;
    std::lock_guard lock(mutex_);
    ++p.sent;
    if (waited > kLateNs) ++p.late_starts;
  }
}

void Prober::finish(Slot& s, int curl_code, int64_t now) {
  Probe& p = *s.probe;
  CURL* h = s.easy.get();
  ProbeResult r = ProbeResult::kConnectError;
  if (curl_code == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (p.target.kind == ProbeKind::kTcp || (status >= 200 && status < 400))
      r = ProbeResult::kOk;
    else if (status >= 400 && status < 500)
      r = ProbeResult::kHttp4xx;
    else
      r = ProbeResult::kHttp5xx;  // 5xx, or a status no server should send
  } else if (curl_code == CURLE_OPERATION_TIMEDOUT) {
    r = ProbeResult::kTimeout;
  }
  // Anything else is connect_error: refused, not resolved, TLS handshake or
  // certificate check failed, connection closed or reset before an answer.
  curl_multi_remove_handle(multi_.get(), h);
  p.free.push_back(&s);
  record(p, r, static_cast<double>(now - s.due_ns) * 1e-9);
}

void Prober::run() {
  const int64_t timeout_ns = static_cast<int64_t>(options_.timeout.count()) * 1000000;
  const double period_ns = 1e9 / options_.rate_per_second;
  while (!stop_) {
    for (auto& p : probes_) start_due(*p, now_ns());
    int running = 0;
    curl_multi_perform(multi_.get(), &running);
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi_.get(), &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      Slot* s = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &s);
      CURLcode code = m->data.result;  // m is not valid after the handle is removed
      if (s) finish(*s, code, now_ns());
    }
    // Sleep until the next request is due (or, when one waits for a slot,
    // until its timeout), an answer comes, or stop() wakes us.
    int64_t now = now_ns(), wake = std::numeric_limits<int64_t>::max();
    for (auto& p : probes_) {
      int64_t due =
          t0_ns_ + static_cast<int64_t>(std::llround(static_cast<double>(p->next) * period_ns));
      wake = std::min(wake, due <= now && p->free.empty() ? due + timeout_ns : due);
    }
    int64_t wait_ns = std::clamp<int64_t>(wake - now, 0, 1'000'000'000);
    if (wait_ns > 0) {
      int ms = static_cast<int>((wait_ns + 999'999) / 1'000'000);
      curl_multi_poll(multi_.get(), nullptr, 0, ms, nullptr);
    }
  }
  for (auto& p : probes_)
    for (auto& s : p->slots)
      if (std::find(p->free.begin(), p->free.end(), s.get()) == p->free.end()) {
        curl_multi_remove_handle(multi_.get(), s->easy.get());
        p->free.push_back(s.get());
      }
}

std::vector<ProbeStats> Prober::results() const {
  std::vector<ProbeStats> out;
  std::vector<std::vector<double>> samples;
  {
    std::lock_guard lock(mutex_);
    int64_t end = end_ns_ ? end_ns_ : now_ns();
    for (const auto& p : probes_) {
      ProbeStats s;
      s.target = p->target;
      s.sent = p->sent;
      s.completed = p->completed;
      s.by_result = p->by_result;
      s.late_starts = p->late_starts;
      s.rate_per_second = options_.rate_per_second;
      s.seconds = t0_ns_ ? static_cast<double>(end - t0_ns_) * 1e-9 : 0.0;
      if (p->completed) s.max = p->max;
      out.push_back(std::move(s));
      samples.push_back(p->samples);
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<double>& v = samples[i];
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    out[i].p50 = percentile_of_sorted(v, 0.50);
    out[i].p95 = percentile_of_sorted(v, 0.95);
    out[i].p99 = percentile_of_sorted(v, 0.99);
  }
  return out;
}

}  // namespace stackaudit
