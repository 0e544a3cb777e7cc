// The Prometheus exporter: /metrics (prometheus-cpp's registry in the text format),
// /healthz (200 while the main loop is making progress, 503 otherwise) and /readyz (200 when
// the process is doing its job, else 503 with a one-line reason), on civetweb.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <prometheus/registry.h>

#include "common/result.h"

struct mg_context;
struct mg_connection;

namespace hsdo {

class Exporter {
 public:
  using HealthCheck = std::function<bool()>;
  // "" when ready, else one line saying why not. Called from the exporter's threads.
  using ReadinessCheck = std::function<std::string()>;

  // Listens on address:port ("0.0.0.0", "127.0.0.1", "::1").
  static Result<std::unique_ptr<Exporter>> Start(const std::string& address, std::uint16_t port,
                                                 std::shared_ptr<prometheus::Registry> registry,
                                                 HealthCheck healthy);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Serves /readyz from `ready`; until it is set, /readyz answers 503 "starting".
  void SetReadiness(ReadinessCheck ready);

 private:
  Exporter(std::shared_ptr<prometheus::Registry> registry, HealthCheck healthy)
      : registry_(std::move(registry)), healthy_(std::move(healthy)) {}
  static int ServeMetrics(mg_connection* connection, void* self);
  static int ServeHealth(mg_connection* connection, void* self);
  static int ServeReady(mg_connection* connection, void* self);

  std::shared_ptr<prometheus::Registry> registry_;
  HealthCheck healthy_;
  std::mutex ready_mutex_;
  ReadinessCheck ready_;
  std::string address_;
  std::uint16_t port_ = 0;
  mg_context* context_ = nullptr;
};

}  // namespace hsdo
