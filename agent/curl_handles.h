// libcurl handles, owned (RAII), for the agent's HTTP clients: the latency
// probe (agent/probe.h) and the service-metrics scrape
// (agent/service_metrics.h).
#pragma once

#include <curl/curl.h>

#include <memory>

namespace stackaudit {

struct CurlEasyCleanup {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
struct CurlMultiCleanup {
  void operator()(CURLM* h) const { curl_multi_cleanup(h); }
};
struct CurlUrlCleanup {
  void operator()(CURLU* h) const { curl_url_cleanup(h); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyCleanup>;
using CurlMulti = std::unique_ptr<CURLM, CurlMultiCleanup>;
using CurlUrl = std::unique_ptr<CURLU, CurlUrlCleanup>;

// curl_global_init, once per process, from whichever client is made first.
// libcurl wants it before any other call and before threads use it.
void init_curl();

}  // namespace stackaudit
