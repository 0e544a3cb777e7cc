#include "metrics/exporter.h"

#include <civetweb.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <prometheus/text_serializer.h>

#include "common/validate.h"

namespace hsdo {

namespace {

void Reply(mg_connection* connection, int status, const char* reason, const char* content_type,
           const std::string& body) {
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            status, reason, content_type, body.size());
  mg_write(connection, body.data(), body.size());
}

}  // namespace

Result<std::unique_ptr<Exporter>> Exporter::Start(const std::string& address, std::uint16_t port,
                                                  std::shared_ptr<prometheus::Registry> registry,
                                                  HealthCheck healthy) {
  const auto ip = CanonicalIp(address);
  if (!ip) return MakeError(ErrorCode::kInvalidArgument, "exporter address {}: not an IP", address);
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });
  std::unique_ptr<Exporter> exporter(new Exporter(std::move(registry), std::move(healthy)));
  exporter->address_ = *ip;
  exporter->port_ = port;
  const std::string listen =
      IsIpv6(*ip) ? fmt::format("[{}]:{}", *ip, port) : fmt::format("{}:{}", *ip, port);
  const char* options[] = {"listening_ports",    listen.c_str(), "num_threads", "2",
                           "request_timeout_ms", "5000",         nullptr};
  mg_callbacks callbacks{};
  exporter->context_ = mg_start(&callbacks, nullptr, options);
  if (exporter->context_ == nullptr) {
    return MakeError(ErrorCode::kUnavailable,
                     "exporter: cannot listen on {} (EXPORTER_PORT in use?)", listen);
  }
  mg_set_request_handler(exporter->context_, "/metrics$", &Exporter::ServeMetrics, exporter.get());
  mg_set_request_handler(exporter->context_, "/healthz$", &Exporter::ServeHealth, exporter.get());
  mg_set_request_handler(exporter->context_, "/readyz$", &Exporter::ServeReady, exporter.get());
  return exporter;
}

namespace {

// Opens and closes a connection to the exporter's own port.
void Knock(const std::string& address, std::uint16_t port) {
  const bool v6 = IsIpv6(address);
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&storage);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, address == "::" ? "::1" : address.c_str(), &a->sin6_addr);
    length = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&storage);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, address == "0.0.0.0" ? "127.0.0.1" : address.c_str(), &a->sin_addr);
    length = sizeof(*a);
  }
  ::connect(fd, reinterpret_cast<sockaddr*>(&storage), length);
  ::close(fd);
}

}  // namespace

Exporter::~Exporter() {
  if (context_ == nullptr) return;
  // civetweb's master thread polls its listening socket in 2 s quanta and only then sees the
  // stop flag; a connection wakes it at once, so hsdo exits promptly after SIGTERM.
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    mg_stop(context_);
    stopped = true;
  });
  while (!stopped) {
    Knock(address_, port_);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stopper.join();
}

int Exporter::ServeMetrics(mg_connection* connection, void* self) {
  const auto* exporter = static_cast<Exporter*>(self);
  const auto body = prometheus::TextSerializer().Serialize(exporter->registry_->Collect());
  Reply(connection, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
  return 200;
}

int Exporter::ServeHealth(mg_connection* connection, void* self) {
  const auto* exporter = static_cast<Exporter*>(self);
  if (exporter->healthy_ && exporter->healthy_()) {
    Reply(connection, 200, "OK", "text/plain", "ok\n");
    return 200;
  }
  Reply(connection, 503, "Service Unavailable", "text/plain", "loop not running\n");
  return 503;
}

void Exporter::SetReadiness(ReadinessCheck ready) {
  std::lock_guard lock(ready_mutex_);
  ready_ = std::move(ready);
}

int Exporter::ServeReady(mg_connection* connection, void* self) {
  auto* exporter = static_cast<Exporter*>(self);
  std::string reason = "starting";
  {
    std::lock_guard lock(exporter->ready_mutex_);
    if (exporter->ready_) reason = exporter->ready_();
  }
  if (reason.empty()) {
    Reply(connection, 200, "OK", "text/plain", "ready\n");
    return 200;
  }
  Reply(connection, 503, "Service Unavailable", "text/plain", reason + "\n");
  return 503;
}

}  // namespace hsdo
