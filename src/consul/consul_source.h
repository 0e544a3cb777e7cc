// ConsulSource: targets from Consul's health endpoint, kept current by blocking queries.
//
// One watch thread per service in CONSUL_SERVICE_NAME (services are fetched concurrently,
// each with its own HttpClient). A watch long-polls /v1/health/service/<name> and keeps the
// last good list of its service; Discover() returns the union of those lists. When a list
// changes the watch calls Wakeup::Notify(), so the orchestrator plans and writes at once
// instead of waiting out INTERVAL.
//
// Discover() is an error until every service has answered once: a partial first view would
// free the slots of every target of the services not heard from yet. After that, a service
// whose queries fail keeps its last good list (logged, counted, retried with backoff). An
// answer that Consul filtered by ACLs is an error too, never a shorter list.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>

#include "common/clock.h"
#include "common/wakeup.h"
#include "config/config.h"
#include "discovery/discovery_source.h"
#include "http/http_client.h"

namespace prometheus {
class Registry;
}

namespace hsdo::consul {

// Makes one HTTP client per watch thread (HttpClient is not thread-safe).
using HttpClientFactory =
    std::function<std::unique_ptr<http::HttpClient>(const http::TlsOptions& tls)>;

// libcurl clients (http::MakeCurlHttpClient).
HttpClientFactory CurlHttpClientFactory();

// How a watch waits between requests. Production waits in real time and wakes at once when
// the source is destroyed; tests advance a FakeClock instead.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  // Waits `duration`, or less when `stop` is requested; returns false when stopped.
  virtual bool SleepFor(std::chrono::milliseconds duration, const std::stop_token& stop) = 0;
};

std::unique_ptr<Sleeper> MakeRealSleeper();

// Tuning that is not (yet) configuration. The defaults are what production uses.
struct ConsulSourceOptions {
  // Consul's `wait` for a blocking query: 5 minutes (Consul's own default). A request in
  // flight is cancelled when the source is destroyed (http::Request::cancel), so a long wait
  // does not slow down a shutdown.
  std::chrono::milliseconds wait{300'000};
  // Added to wait + wait/16 (Consul's jitter) for the whole-request timeout: a server that
  // accepts a request and never answers is detected (an error, logged, last list kept) after
  // wait + wait/16 + timeout_margin, 320 s with the defaults.
  std::chrono::milliseconds timeout_margin{1000};
  std::chrono::milliseconds connect_timeout{1000};
  // Errors: exponential backoff from `backoff_initial`, doubling up to `backoff_max`. The
  // binary sets `backoff_max` to INTERVAL: a watch keeps probing a Consul that is down about
  // once per INTERVAL, so the first change after an outage reaches the slot table within
  // INTERVAL plus a round trip (a cap of 30 s once made that 22 s after a 40 s outage).
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{1000};
  // Rate limit of each watch loop: `rate_burst` requests at once, then one per
  // `rate_interval` (see RateLimiter). Consul's documentation suggests degrading to a poll
  // every 15 s or so; hsdo wants every change in the slot table within a second, so the
  // interval stays under that (a change waits at most one interval for its request) and a
  // churning or misbehaving Consul costs two requests per second per service, not a spin.
  int rate_burst = 3;
  std::chrono::milliseconds rate_interval{500};
  // How long the first Discover() waits for every watch to finish its first request, so that
  // the first cycle after start-up sees Consul's answer instead of "not ready yet".
  std::chrono::milliseconds first_answer_wait{2000};
};

// The production source. `registry` receives hsdo_consul_requests_total{service,result},
// hsdo_consul_errors_total{service}, hsdo_consul_index{service} and
// hsdo_consul_skipped_instances{service}. `wakeup`, `registry` and `clock` must outlive it.
std::unique_ptr<DiscoverySource> MakeConsulSource(
    const ConsulConfig& config, Wakeup& wakeup, prometheus::Registry& registry, const Clock& clock,
    HttpClientFactory client_factory = CurlHttpClientFactory(),
    const ConsulSourceOptions& options = {});

// The same, with the sleeper injected (tests).
std::unique_ptr<DiscoverySource> MakeConsulSource(const ConsulConfig& config, Wakeup& wakeup,
                                                  prometheus::Registry& registry,
                                                  const Clock& clock,
                                                  HttpClientFactory client_factory,
                                                  const ConsulSourceOptions& options,
                                                  std::unique_ptr<Sleeper> sleeper);

}  // namespace hsdo::consul
