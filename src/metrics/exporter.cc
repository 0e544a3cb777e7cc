#include "metrics/exporter.h"

#include <civetweb.h>

#include <mutex>

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
  return exporter;
}

Exporter::~Exporter() {
  if (context_ != nullptr) mg_stop(context_);
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

}  // namespace hsdo
