// The agent's HTTP endpoint: /metrics in the Prometheus text format, /folded
// (the window's collapsed stacks, agent/flame.h, built on request), and the
// page at / (agent/page.h), rendered by the agent's thread and served as is.
#pragma once

#include <prometheus/collectable.h>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collector/snapshot.h"

class CivetServer;

namespace stackaudit {

class Exporter {
 public:
  // Listens on "ADDR:PORT" (IPv4 or [IPv6]). Throws UserError (exit 3) when the
  // port is taken.
  Exporter(const std::string& listen,
           std::vector<std::weak_ptr<prometheus::Collectable>> collectables);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The page at / from now on (StatusPage::render).
  void set_page(std::string html);

  // What /folded answers: the window's collapsed stacks, built by `source`
  // on civetweb's thread when asked (it takes whatever lock the data needs);
  // null: an empty body. Setting it waits for a request in progress, so
  // clearing it before the data goes away is safe.
  void set_folded_source(std::function<std::string()> source);

  std::string metrics_text() const;
  std::string folded_text() const;
  std::string landing_page() const;

 private:
  class Handler;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_;
  mutable std::mutex page_mutex_;
  std::string page_body_;
  mutable std::mutex folded_mutex_;
  std::function<std::string()> folded_source_;
  std::unique_ptr<Handler> metrics_handler_;
  std::unique_ptr<Handler> folded_handler_;
  std::unique_ptr<Handler> page_handler_;
  std::unique_ptr<CivetServer> server_;
  std::vector<int> listening_fds_;  // civetweb's, shut down to stop it promptly
};

// "127.0.0.1:9464" -> civetweb's listening_ports syntax; throws UserError (exit
// 2) on a malformed address.
std::string civetweb_listen(const std::string& listen);

}  // namespace stackaudit
