// The Prometheus exporter: /metrics (prometheus-cpp's registry in the text format),
// /healthz (200 while the main loop is making progress, 503 otherwise) and /readyz (200 when
// the process is doing its job, else 503 with a one-line reason).
//
// A small HTTP/1.1 server of its own (one thread, poll), built so that no client can starve
// a scrape: every connection must deliver its request headers within kHeaderTimeout and take
// its response within kWriteTimeout; a client (an address) holds at most
// kMaxConnectionsPerClient connections that are still sending their request, and the
// exporter at most kMaxConnections: a new connection over either limit closes the oldest
// such connection of that client (or of all). New connections are taken a few at a time and
// read at once, so a scrape that sends its request with the connect is answered even when a
// flood of connections from its own address arrives with it. Every answer closes its
// connection (no keep-alive, so no idle connections).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <prometheus/registry.h>

#include "common/result.h"

namespace hsdo {

class Exporter {
 public:
  using HealthCheck = std::function<bool()>;
  // "" when ready, else one line saying why not. Called from the exporter's thread.
  using ReadinessCheck = std::function<std::string()>;

  static constexpr std::chrono::milliseconds kHeaderTimeout{2000};
  static constexpr std::chrono::milliseconds kWriteTimeout{5000};
  static constexpr std::size_t kMaxRequestBytes = 8192;
  static constexpr std::size_t kMaxConnectionsPerClient = 16;
  static constexpr std::size_t kMaxConnections = 256;
  static constexpr std::size_t kAcceptBatch = 8;  // connections taken per round

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
  struct Response {
    int status = 200;
    std::string content_type = "text/plain";
    std::string body;
  };

  Exporter(std::shared_ptr<prometheus::Registry> registry, HealthCheck healthy)
      : registry_(std::move(registry)), healthy_(std::move(healthy)) {}
  // The answer to one request (method and path, the query already removed).
  Response Handle(std::string_view method, std::string_view path) const;
  void Run();

  std::shared_ptr<prometheus::Registry> registry_;
  HealthCheck healthy_;
  mutable std::mutex ready_mutex_;
  ReadinessCheck ready_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd: the destructor wakes the server thread through it
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace hsdo
