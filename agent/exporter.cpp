#include "agent/exporter.h"

#include <CivetServer.h>
#include <arpa/inet.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>

#include "agent/audit_json.h"
#include "agent/exit_codes.h"
#include "agent/metrics.h"
#include "agent/page.h"
#include "collector/rules.h"
#include "injector/unique_fd.h"

namespace stackaudit {
namespace {

void reply(mg_connection* conn, const char* type, const std::string& body) {
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            type, body.size());
  mg_write(conn, body.data(), body.size());
}

// Why ADDR:PORT (already checked by civetweb_listen) cannot be listened on,
// found with a socket of our own.
std::string why_cannot_listen(const std::string& listen) {
  bool ipv6 = listen.starts_with('[');
  size_t colon = ipv6 ? listen.find("]:") : listen.rfind(':');
  std::string addr = ipv6 ? listen.substr(1, colon - 1) : listen.substr(0, colon);
  auto port = static_cast<uint16_t>(std::stoi(listen.substr(colon + (ipv6 ? 2 : 1))));
  sockaddr_storage ss{};
  socklen_t len;
  if (ipv6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, addr.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, addr.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int err = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0 ? 0 : errno;
  switch (err) {
    case EADDRINUSE:
      return "another process already listens on that port (choose another with --listen)";
    case EADDRNOTAVAIL:
      return addr + " is not an address of this machine";
    case EACCES:
      return "a port below 1024 needs root or CAP_NET_BIND_SERVICE";
    case 0:
      return "the HTTP server could not start there";
    default:
      return std::strerror(err);
  }
}

// The listening sockets civetweb opened on `port`: its master thread polls them
// in 2 s slices and mg_stop waits for it to notice, so shutting them down first
// (which wakes the poll) makes the agent's exit prompt.
std::vector<int> listening_sockets(int port) {
  std::vector<int> fds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = std::atoi(entry.path().filename().c_str());
    int listening = 0;
    socklen_t size = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 || !listening) continue;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) continue;
    int bound = ss.ss_family == AF_INET6  ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                : ss.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port)
                                          : -1;
    if (bound == port) fds.push_back(fd);
  }
  return fds;
}

}  // namespace

std::string civetweb_listen(const std::string& listen) {
  auto bad = [&] {
    return UserError{kExitUsage, "malformed --listen '" + listen +
                                     "': expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"};
  };
  bool ipv6 = listen.starts_with('[');
  size_t colon = ipv6 ? listen.find("]:") : listen.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad();
  std::string addr = ipv6 ? listen.substr(1, colon - 1) : listen.substr(0, colon);
  std::string port = listen.substr(colon + (ipv6 ? 2 : 1));
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(ipv6 ? AF_INET6 : AF_INET, addr.c_str(), buf) != 1) throw bad();
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw bad();
  int number = std::stoi(port);
  if (number < 1 || number > 65535) throw bad();
  return ipv6 ? "[" + addr + "]:" + port : addr + ":" + port;
}

// Answers GET with what `body` produces.
class Exporter::Handler : public CivetHandler {
 public:
  Handler(const char* content_type, std::function<std::string()> body)
      : content_type_(content_type), body_(std::move(body)) {}
  bool handleGet(CivetServer*, mg_connection* conn) override {
    reply(conn, content_type_, body_());
    return true;
  }

 private:
  const char* content_type_;
  std::function<std::string()> body_;
};

Exporter::Exporter(const std::string& listen,
                   std::vector<std::weak_ptr<prometheus::Collectable>> collectables)
    : collectables_(std::move(collectables)),
      metrics_handler_(new Handler("text/plain; version=0.0.4; charset=utf-8",
                                   [this] { return metrics_text(); })),
      folded_handler_(new Handler("text/plain; charset=utf-8", [this] { return folded_text(); })),
      page_handler_(new Handler("text/html; charset=utf-8", [this] { return landing_page(); })) {
  std::vector<std::string> options = {"listening_ports", civetweb_listen(listen), "num_threads",
                                      "2"};
  try {
    server_ = std::make_unique<CivetServer>(options);
  } catch (const CivetException&) {
    throw UserError{kExitUsage, "cannot listen on " + listen + ": " + why_cannot_listen(listen)};
  }
  for (int port : server_->getListeningPorts()) {
    auto fds = listening_sockets(port);
    listening_fds_.insert(listening_fds_.end(), fds.begin(), fds.end());
  }
  server_->addHandler("/metrics", *metrics_handler_);
  server_->addHandler("/folded$", *folded_handler_);
  server_->addHandler("/$", *page_handler_);  // "/" exactly; other paths 404
  set_page(StatusPage(1.0).render(FlameStacks()));
}

Exporter::~Exporter() {
  if (!server_) return;
  for (int fd : listening_fds_) ::shutdown(fd, SHUT_RDWR);
  server_->close();
}

std::string Exporter::metrics_text() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& weak : collectables_)
    if (auto c = weak.lock()) {
      auto more = c->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
  return prometheus::TextSerializer().Serialize(families);
}

void Exporter::set_folded_source(std::function<std::string()> source) {
  std::lock_guard lock(folded_mutex_);
  folded_source_ = std::move(source);
}

std::string Exporter::folded_text() const {
  std::lock_guard lock(folded_mutex_);
  return folded_source_ ? folded_source_() : std::string();
}

std::string Exporter::landing_page() const {
  std::lock_guard lock(page_mutex_);
  return page_body_;
}

void Exporter::set_page(std::string html) {
  std::lock_guard lock(page_mutex_);
  page_body_ = std::move(html);
}

}  // namespace stackaudit
