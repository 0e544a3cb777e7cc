#include "consul/consul_source.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "common/secret_file.h"
#include "common/sleep.h"
#include "common/validate.h"
#include "consul/blocking_query.h"
#include "consul/health_service.h"
#include "http/redact.h"

namespace hsdo::consul {

namespace {

// For /v1/catalog/services, which Consul answers at once (no blocking query).
constexpr std::chrono::milliseconds kCatalogTimeout{10'000};

class RealSleeper final : public Sleeper {
 public:
  bool SleepFor(std::chrono::milliseconds duration, const std::stop_token& stop) override {
    return SleepUnlessStopped(duration, stop);
  }
};

// Not cut here: Redact() cuts it, after taking the token out (a token cut in two would not be
// found).
std::string FirstLine(std::string_view text) {
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  return std::string(text);
}

// What one service's watch knows, shared with Discover() under ConsulSource::mutex_.
struct ServiceState {
  std::string name;
  bool attempted = false;  // the first request has finished, one way or the other
  bool succeeded = false;  // at least one good answer: `instances` is authoritative
  std::vector<Instance> instances;
  std::string last_error;
  bool unknown = false;  // the last answer was empty and Consul does not know the service
  // A good answer came, or Discover() gave the list as current, since the orchestrator last
  // stood by (OnStandBy). A list older than that, kept through failures, is none this leader
  // planned from: the targets registered since would look removed.
  bool current_since_stand_by = true;
};

struct ServiceMetrics {
  prometheus::Counter* changed = nullptr;
  prometheus::Counter* unchanged = nullptr;
  prometheus::Counter* failed = nullptr;
  prometheus::Counter* errors = nullptr;
  prometheus::Gauge* index = nullptr;
  prometheus::Gauge* skipped = nullptr;
  prometheus::Gauge* draining = nullptr;
  prometheus::Gauge* not_passing = nullptr;
};

class ConsulSource final : public DiscoverySource {
 public:
  ConsulSource(const ConsulConfig& config, Wakeup& wakeup, prometheus::Registry& registry,
               const Clock& clock, HttpClientFactory client_factory, ConsulSourceOptions options,
               std::unique_ptr<Sleeper> sleeper)
      : config_(config),
        wakeup_(wakeup),
        clock_(clock),
        client_factory_(std::move(client_factory)),
        options_(options),
        sleeper_(std::move(sleeper)) {
    auto& requests = prometheus::BuildCounter()
                         .Name("hsdo_consul_requests_total")
                         .Help(
                             "Consul health queries, by service and result "
                             "(changed, unchanged, error)")
                         .Register(registry);
    auto& errors = prometheus::BuildCounter()
                       .Name("hsdo_consul_errors_total")
                       .Help("Failed Consul health queries (transport, HTTP status, bad JSON)")
                       .Register(registry);
    auto& index = prometheus::BuildGauge()
                      .Name("hsdo_consul_index")
                      .Help("The X-Consul-Index a service's next blocking query waits on")
                      .Register(registry);
    auto& skipped = prometheus::BuildGauge()
                        .Name("hsdo_consul_skipped_instances")
                        .Help("Instances in the last answer left out for invalid data")
                        .Register(registry);
    auto& draining = prometheus::BuildGauge()
                         .Name("hsdo_consul_draining_instances")
                         .Help(
                             "Instances in the last answer in maintenance (node or service): "
                             "targets whose slots drain")
                         .Register(registry);
    auto& not_passing = prometheus::BuildGauge()
                            .Name("hsdo_consul_not_passing_instances")
                            .Help(
                                "Instances in the last answer left out for a check that is not "
                                "passing (CONSUL_PASSING_ONLY)")
                            .Register(registry);
    // One state per distinct service name, in configuration order.
    for (const auto& name : config_.service_names) {
      if (std::any_of(states_.begin(), states_.end(),
                      [&](const ServiceState& s) { return s.name == name; })) {
        continue;
      }
      states_.push_back(ServiceState{.name = name});
      metrics_.push_back(ServiceMetrics{
          .changed = &requests.Add({{"service", name}, {"result", "changed"}}),
          .unchanged = &requests.Add({{"service", name}, {"result", "unchanged"}}),
          .failed = &requests.Add({{"service", name}, {"result", "error"}}),
          .errors = &errors.Add({{"service", name}}),
          .index = &index.Add({{"service", name}}),
          .skipped = &skipped.Add({{"service", name}}),
          .draining = &draining.Add({{"service", name}}),
          .not_passing = &not_passing.Add({{"service", name}}),
      });
    }
    // Started last: every member the threads touch exists by now.
    threads_.reserve(states_.size());
    for (std::size_t i = 0; i < states_.size(); ++i) {
      threads_.emplace_back([this, i](std::stop_token stop) { Watch(stop, i); });
    }
  }

  ~ConsulSource() override {
    // Ask every watch to stop first, then join: they wind down in parallel, each within its
    // request in flight (bounded by options_.wait, see ConsulSourceOptions) or at once when
    // sleeping.
    for (auto& thread : threads_) thread.request_stop();
    for (auto& thread : threads_) thread.join();
  }

  ConsulSource(const ConsulSource&) = delete;
  ConsulSource& operator=(const ConsulSource&) = delete;

  std::string_view kind() const override { return "consul"; }

  bool LastAnswerCurrent() const override { return last_answer_current_; }
  bool AnsweredThroughFailures() const override { return failing_; }
  std::vector<std::string> UnknownGroups() const override { return unknown_groups_; }
  std::vector<std::string> Groups() const override {
    std::vector<std::string> groups;
    for (const auto& state : states_) groups.push_back(SanitizedLabel(state.name));
    return groups;  // `name` never changes after construction: no lock
  }

  void OnStandBy() override {
    std::lock_guard lock(mutex_);
    for (auto& state : states_) state.current_since_stand_by = false;
  }

  Result<std::vector<Target>> Discover() override {
    if (states_.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "consul: no service names configured");
    }
    std::unique_lock lock(mutex_);
    if (!all_attempted_once_) {
      // Also ends when hsdo stops (SIGTERM), so a Consul that never answers cannot hold the
      // first cycle, and with it the shutdown, for first_answer_wait.
      first_answer_cv_.wait_for(lock, wakeup_.stop_token(), options_.first_answer_wait, [this] {
        return std::all_of(states_.begin(), states_.end(),
                           [](const ServiceState& s) { return s.attempted; });
      });
      all_attempted_once_ = true;
    }
    // Until every service has answered once, the union would be a partial view: planned as
    // is, it would free the slots of every target of the silent services (after a restart,
    // the whole fleet of a service), and their instances would come back in other slots. So
    // it is an error, and the orchestrator keeps what it has.
    // A service Consul does not know, with no good answer before, is no partial view: it is
    // an unknown group (UnknownGroups), whose slots the orchestrator keeps as the table holds
    // them, and it does not hold up the other services.
    // Nor is a service that has failed since before this orchestrator took over (its watch
    // broke while it stood by, for hours maybe): its last good list may lack every target
    // registered since, which would look removed. It is an unknown group too until it answers.
    std::vector<std::string> missing;
    unknown_groups_.clear();
    const auto stale = [](const ServiceState& s) {
      return s.succeeded && !s.current_since_stand_by && !s.last_error.empty();
    };
    for (auto& state : states_) {
      if (state.last_error.empty()) state.current_since_stand_by = true;
      if ((!state.succeeded && state.unknown) || stale(state)) {
        unknown_groups_.push_back(SanitizedLabel(state.name));  // as the table spells it
      } else if (!state.succeeded) {
        missing.push_back(state.last_error.empty() ? state.name + ": no answer yet"
                                                   : state.name + ": " + state.last_error);
      }
    }
    if (!missing.empty()) {
      unknown_groups_.clear();
      return MakeError(ErrorCode::kUnavailable, "consul: no good answer yet for {}",
                       fmt::join(missing, "; "));
    }
    // A service whose last query failed is answered with its last good list.
    // Not while a service is unknown either: after a typo in its name, the targets the table
    // holds under the right name match no configured service and look removed; only an
    // answer that is not current keeps the removal guard from confirming that, ever.
    last_answer_current_ = std::all_of(states_.begin(), states_.end(),
                                       [](const ServiceState& s) { return s.last_error.empty(); });
    failing_ = std::any_of(states_.begin(), states_.end(), [](const ServiceState& s) {
      return !s.last_error.empty() && !s.unknown;
    });
    std::vector<Instance> all;
    for (const auto& state : states_) {
      if (stale(state)) continue;
      all.insert(all.end(), state.instances.begin(), state.instances.end());
    }
    // CreateIndex is one Raft index across services, so this is oldest first overall: when
    // targets outnumber slots, the planner leaves out the newest registrations.
    SortOldestFirst(all);
    std::vector<Target> targets;
    targets.reserve(all.size());
    std::map<std::string, std::size_t> index_of;
    for (auto& instance : all) {
      // A target's identity is address:port; one registered under two services (or twice)
      // fills one slot, the oldest registration's. It drains only if every registration asks
      // for it (review: an instance re-registered under a new id while the old id stayed in
      // maintenance was drained out of every node while its new registration passed).
      const auto [found, first] = index_of.try_emplace(instance.target.Key(), targets.size());
      if (first) {
        targets.push_back(std::move(instance.target));
      } else {
        targets[found->second].drain = targets[found->second].drain && instance.target.drain;
      }
    }
    return targets;
  }

 private:
  // The token to send: CONSUL_HTTP_TOKEN, or CONSUL_HTTP_TOKEN_FILE's content read now (a
  // token rotated in the file is sent from the next request on, without a restart). An error
  // when the file cannot give one: this request is not sent, the service keeps its last list.
  Result<std::string> Token() const {
    if (config_.token_file.empty()) return config_.token;
    return ReadSecretFile(config_.token_file, "CONSUL_HTTP_TOKEN_FILE");
  }

  // A GET of `url` with `token`, within `timeout`; cancelled when `stop` is requested (the
  // destructor ends a long poll in flight).
  http::Request Get(std::string url, std::chrono::milliseconds timeout, const std::string& token,
                    const std::stop_token& stop) const {
    http::Request request;
    request.cancel = stop;
    request.url = std::move(url);
    if (!token.empty()) request.headers.emplace_back("X-Consul-Token", token);
    request.headers.emplace_back("Accept", "application/json");
    request.timeout = timeout;
    request.connect_timeout = options_.connect_timeout;
    return request;
  }

  http::Request MakeRequest(const std::string& service, std::uint64_t index,
                            const std::string& token, const std::stop_token& stop) const {
    // Consul may hold a blocking query for wait + wait/16 before answering.
    return Get(HealthServiceUrl(config_, service, index, options_.wait),
               options_.wait + options_.wait / 16 + options_.timeout_margin, token, stop);
  }

  // Text that came from the server or the transport, fit for an error message and a log
  // line: without the token sent (a server may echo it back) and on one line.
  static std::string WithoutToken(std::string_view text, const std::string& token) {
    const std::string secrets[] = {token};
    return http::RedactSecrets(text, secrets);
  }

  // The setting the token comes from, for messages.
  std::string_view TokenSetting() const {
    return config_.token_file.empty() ? "CONSUL_HTTP_TOKEN" : "CONSUL_HTTP_TOKEN_FILE";
  }

  using Fetched = Result<std::pair<HealthServiceAnswer, std::optional<std::uint64_t>>>;

  // One request; the answer and the X-Consul-Index it came with.
  Fetched Fetch(http::HttpClient& client, const std::string& service, std::uint64_t index,
                const std::stop_token& stop) const {
    const auto token = Token();
    if (!token) return token.error();
    bool refused = false;
    Fetched fetched = FetchWith(client, service, index, *token, stop, refused);
    // Review: a token rotated in the file while this long poll was in flight, the old one
    // revoked: Consul refused the answer (403, or filtered by ACLs). Asked again at once with
    // the new token, it is no failure (each rotation logged one, and counted it).
    if (refused && !config_.token_file.empty()) {
      if (const auto rotated = Token(); rotated && *rotated != *token) {
        return FetchWith(client, service, index, *rotated, stop, refused);
      }
    }
    return fetched;
  }

  // Fetch with `token`; `refused` says whether Consul refused it (403, or filtered by ACLs).
  Fetched FetchWith(http::HttpClient& client, const std::string& service, std::uint64_t index,
                    const std::string& token, const std::stop_token& stop, bool& refused) const {
    refused = false;
    const http::Request request = MakeRequest(service, index, token, stop);
    const auto Redact = [&](std::string_view text) { return WithoutToken(text, token); };
    const SteadyTime sent = clock_.Steady();
    auto response = client.Send(request);
    if (!response.ok()) {
      if (clock_.Steady() - sent >= options_.wait) {
        // A long poll may last wait + wait/16; past the request timeout, the server
        // accepted the request and never answered (a stalled server or a black hole).
        return MakeError(ErrorCode::kUnavailable,
                         "no answer within {} ms (wait {} ms + wait/16 + {} ms): the server "
                         "is stalled: {}",
                         request.timeout.count(), options_.wait.count(),
                         options_.timeout_margin.count(), Redact(response.error().message));
      }
      return MakeError(response.error().code, "{}", Redact(response.error().message));
    }
    if (response->status == 403) {
      // Consul's body says "ACL not found" or "Permission denied"; the token is never shown.
      refused = true;
      return MakeError(ErrorCode::kUnavailable,
                       "HTTP 403 ({}): check {} and its service:read policy",
                       Redact(FirstLine(response->body)), TokenSetting());
    }
    if (response->status != 200) {
      return MakeError(ErrorCode::kUnavailable, "HTTP {}: {}", response->status,
                       Redact(FirstLine(response->body)));
    }
    if (response->Header("X-Consul-Results-Filtered-By-ACLs") == "true") {
      // Consul answers a token that may not read every node or instance with a shorter list
      // instead of an error. Taken as is, that would free the slots of live targets.
      refused = true;
      return MakeError(ErrorCode::kUnavailable,
                       "the answer was filtered by ACLs: give {} service:read and node:read",
                       TokenSetting());
    }
    auto answer = ParseHealthService(response->body, service, config_.az_meta_key,
                                     config_.passing_only, config_.tag);
    if (!answer.ok()) return MakeError(answer.error().code, "{}", Redact(answer.error().message));
    if (answer->instances.empty() && !answer->skipped.empty()) {
      // Entries, none usable: a broken answer, not "no instances" (that is an empty array).
      // Taken as is, it would free the slot of every instance of the service. Kept as the last
      // list, or, without one, as an unknown service's: as "no good answer yet" it made every
      // service's discovery an error (nothing joined nor left anywhere) while it lasted.
      return MakeError(ErrorCode::kNotFound, "every one of the {} entries is unusable ({})",
                       answer->skipped.size(), Redact(answer->skipped.front()));
    }
    if (answer->instances.empty() && answer->not_passing > 0) {
      // Registered instances, none passing: a Consul failure (its gossip or an agent down marks
      // every check critical) looks the same as every instance down. Taken as is, it would free
      // every slot of the service once the removal guard let go; kept as the last list (as an
      // unknown service's, without one), HAProxy's own checks take dead servers out.
      return MakeError(ErrorCode::kNotFound,
                       "none of its {} registered instances passes its checks "
                       "(CONSUL_PASSING_ONLY): taken for a Consul failure, not for no instance",
                       answer->not_passing);
    }
    if (answer->instances.empty() && answer->skipped.empty() && answer->not_passing == 0) {
      // No entry at all: a name or tag that matches nothing (a typo), or every instance
      // deregistered, after which Consul forgets the service too: both unknown (CheckKnown).
      if (auto known = CheckKnown(client, service, stop); !known) return known.error();
      // A service the catalog lists has an instance: no entry is then a stale or filtered
      // answer (a server behind, a token that may not read the nodes of an older Consul,
      // which does not say it filtered), never "no instance". Taken as is, it freed every
      // slot of the service (network-fault review: one such answer took half a fleet out
      // until the next change, up to a 5-minute wait). Kept as the last list, as for none
      // passing.
      return MakeError(ErrorCode::kNotFound,
                       "no instance, although Consul's catalog lists the service: taken for a "
                       "stale or filtered answer (check the token's node:read), not for no "
                       "instance");
    }
    return std::make_pair(std::move(answer).value(),
                          ParseConsulIndex(response->Header("X-Consul-Index")));
  }

  // Whether Consul knows `service` (and the tag), from /v1/catalog/services (CheckServiceKnown).
  Result<void> CheckKnown(http::HttpClient& client, const std::string& service,
                          const std::stop_token& stop) const {
    const auto token = Token();
    if (!token) return token.error();
    const auto Redact = [&](std::string_view text) { return WithoutToken(text, *token); };
    auto response = client.Send(Get(CatalogServicesUrl(config_), kCatalogTimeout, *token, stop));
    if (!response.ok()) {
      return MakeError(response.error().code, "catalog/services: {}",
                       Redact(response.error().message));
    }
    if (response->status != 200) {
      return MakeError(ErrorCode::kUnavailable, "catalog/services: HTTP {}: {}", response->status,
                       Redact(FirstLine(response->body)));
    }
    auto known = CheckServiceKnown(response->body, service, config_.tag);
    if (!known) return MakeError(known.error().code, "{}", Redact(known.error().message));
    return Ok();
  }

  void Watch(const std::stop_token& stop, std::size_t i) {
    const std::string service = states_[i].name;  // never changes after construction
    const ServiceMetrics& metrics = metrics_[i];
    const http::TlsOptions tls{.ca_file = config_.ca_cert,
                               .client_cert = config_.client_cert,
                               .client_key = config_.client_key};
    std::unique_ptr<http::HttpClient> client = client_factory_(tls);
    RateLimiter limiter(options_.rate_burst, options_.rate_interval);
    Backoff backoff(options_.backoff_initial, options_.backoff_max);
    std::uint64_t index = 0;
    std::vector<std::string> last_skipped;
    std::vector<std::string> last_not_plain;
    int failures_in_a_row = 0;
    std::string last_logged_error;
    bool no_index_said = false;
    std::uint64_t before_failure = 0;  // the index reached before the last failures

    while (!stop.stop_requested()) {
      if (const auto delay = limiter.Reserve(clock_.Steady()); delay.count() > 0) {
        if (!sleeper_->SleepFor(delay, stop)) break;
      }
      auto fetched = Fetch(*client, service, index, stop);
      if (stop.stop_requested()) break;

      if (!fetched.ok()) {
        ++failures_in_a_row;
        metrics.failed->Increment();
        metrics.errors->Increment();
        const auto delay = backoff.Next();
        {
          std::lock_guard lock(mutex_);
          states_[i].attempted = true;
          states_[i].last_error = fetched.error().message;
          // CheckKnown. One that never answered stays unknown through other errors: as
          // "no good answer yet" it would make every service's discovery an error.
          states_[i].unknown = fetched.error().code == ErrorCode::kNotFound ||
                               (states_[i].unknown && !states_[i].succeeded);
        }
        first_answer_cv_.notify_all();
        // The last good list stays in place: an unreachable Consul never empties HAProxy.
        // Logged once per cause: the retries come every second or so.
        if (fetched.error().message != last_logged_error) {
          spdlog::warn(
              "consul: service {}: {} (keeping the last good list; retrying every {} ms at "
              "most)",
              service, fetched.error().message, options_.backoff_max.count());
          last_logged_error = fetched.error().message;
        }
        // The next query does not block: a Consul rebuilt or restored meanwhile counts from
        // below `index`, and would hold a query on it until its wait ran out (review: the first
        // change after such an outage reached the table 5 minutes late). Its answer is still
        // held to the index reached before (`before_failure`, below).
        before_failure = std::max(before_failure, index);
        index = 0;
        metrics.index->Set(0);
        if (!sleeper_->SleepFor(delay, stop)) break;
        continue;
      }
      if (failures_in_a_row > 0) {
        spdlog::info("consul: service {}: answering again after {} failure(s)", service,
                     failures_in_a_row);
      }
      failures_in_a_row = 0;
      last_logged_error.clear();
      backoff.Reset();

      auto& [answer, returned_index] = fetched.value();
      if (!returned_index && !no_index_said) {
        // Review (Consul semantics): polled at the rate limit, and nothing said so.
        spdlog::warn(
            "consul: service {}: its answers carry no X-Consul-Index header (a proxy between "
            "hsdo and Consul dropping it?): polling it instead of blocking queries",
            service);
        no_index_said = true;
      }
      const std::uint64_t next = NextIndex(index, returned_index);
      // The index this answer must not be below: the one sent, or after a failure the one
      // reached before it (review of 7f8b616: the first answer after a failure, from a server
      // behind, was taken, and a live instance it lacked lost its slot on every node).
      const std::uint64_t reached = std::max(index, before_failure);
      before_failure = 0;
      if (returned_index && *returned_index > 0 && *returned_index < reached) {
        // A snapshot restore, or an answer from a server behind: this one may be older than
        // the list kept (a live instance missing would lose its slot until the next answer),
        // so only the answer of the query from 0 counts (network-fault review).
        spdlog::info(
            "consul: service {}: X-Consul-Index went backwards ({} -> {}); dropping that "
            "answer and restarting the blocking query from 0",
            service, reached, *returned_index);
        index = 0;
        metrics.index->Set(0);
        continue;
      }
      index = next;
      metrics.index->Set(static_cast<double>(index));

      // Skipped instances are logged when the set changes, not on every long poll.
      if (answer.skipped != last_skipped) {
        for (const auto& line : answer.skipped) spdlog::warn("consul: skipped {}", line);
        last_skipped = answer.skipped;
      }
      if (answer.not_plain != last_not_plain) {
        for (const auto& line : answer.not_plain) spdlog::warn("consul: {}", line);
        last_not_plain = answer.not_plain;
      }
      metrics.skipped->Set(static_cast<double>(answer.skipped.size()));
      metrics.not_passing->Set(static_cast<double>(answer.not_passing));
      metrics.draining->Set(static_cast<double>(
          std::count_if(answer.instances.begin(), answer.instances.end(),
                        [](const Instance& instance) { return instance.target.drain; })));

      bool changed = false;
      bool all_succeeded = false;
      {
        std::lock_guard lock(mutex_);
        ServiceState& state = states_[i];
        changed = !state.succeeded || state.instances != answer.instances;
        if (changed) state.instances = std::move(answer.instances);
        state.attempted = true;
        state.succeeded = true;
        state.last_error.clear();
        state.unknown = false;
        state.current_since_stand_by = true;
        all_succeeded = std::all_of(states_.begin(), states_.end(), [](const ServiceState& s) {
          return s.succeeded || s.unknown;  // an unknown service holds up no other
        });
      }
      first_answer_cv_.notify_all();
      if (changed) {
        metrics.changed->Increment();
        spdlog::debug("consul: service {}: list changed (index {})", service, index);
        // Before every service has answered, Discover() would only return an error: the wake
        // comes with the last first answer.
        if (all_succeeded) wakeup_.Notify();
      } else {
        metrics.unchanged->Increment();
      }
    }
  }

  const ConsulConfig config_;
  Wakeup& wakeup_;
  const Clock& clock_;
  const HttpClientFactory client_factory_;
  const ConsulSourceOptions options_;
  const std::unique_ptr<Sleeper> sleeper_;
  std::vector<ServiceMetrics> metrics_;  // parallel to states_; fixed after construction

  std::mutex mutex_;  // guards the fields of states_ below (the vector itself is fixed)
  std::condition_variable_any first_answer_cv_;  // _any: its wait also takes a stop token
  std::vector<ServiceState> states_;
  bool all_attempted_once_ = false;
  bool last_answer_current_ = true;          // of the last Discover(), on the orchestrator's thread
  bool failing_ = false;                     // AnsweredThroughFailures(), the same
  std::vector<std::string> unknown_groups_;  // of the last Discover(), likewise

  // Last: destroyed (joined) first, while everything the watches use still exists.
  std::vector<std::jthread> threads_;
};

}  // namespace

HttpClientFactory CurlHttpClientFactory() {
  return [](const http::TlsOptions& tls) { return http::MakeCurlHttpClient(tls); };
}

std::unique_ptr<Sleeper> MakeRealSleeper() { return std::make_unique<RealSleeper>(); }

std::unique_ptr<DiscoverySource> MakeConsulSource(const ConsulConfig& config, Wakeup& wakeup,
                                                  prometheus::Registry& registry,
                                                  const Clock& clock,
                                                  HttpClientFactory client_factory,
                                                  const ConsulSourceOptions& options) {
  return MakeConsulSource(config, wakeup, registry, clock, std::move(client_factory), options,
                          MakeRealSleeper());
}

namespace {

// Whether CONSUL_API_URL sends the token unencrypted off this host: http:// to another host
// than loopback (a local Consul agent on http://127.0.0.1:8500 is the usual set-up).
bool TokenTravelsInTheClear(const ConsulConfig& config) {
  constexpr std::string_view kHttp = "http://";
  if ((config.token.empty() && config.token_file.empty()) || !config.api_url.starts_with(kHttp)) {
    return false;
  }
  std::string_view host = std::string_view(config.api_url).substr(kHttp.size());
  host = host.substr(0, host.find('/'));
  if (host.starts_with('[')) {
    host = host.substr(1, host.find(']') - 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  if (host == "localhost") return false;
  const auto ip = CanonicalIp(host);
  return !(ip && (ip->starts_with("127.") || *ip == "::1"));
}

}  // namespace

std::unique_ptr<DiscoverySource> MakeConsulSource(const ConsulConfig& config, Wakeup& wakeup,
                                                  prometheus::Registry& registry,
                                                  const Clock& clock,
                                                  HttpClientFactory client_factory,
                                                  const ConsulSourceOptions& options,
                                                  std::unique_ptr<Sleeper> sleeper) {
  // As the etcd store warns of ETCD_PASSWORD (security review).
  if (TokenTravelsInTheClear(config)) {
    spdlog::warn("consul source: the token of {} will travel unencrypted to {} (http://)",
                 config.token_file.empty() ? "CONSUL_HTTP_TOKEN" : "CONSUL_HTTP_TOKEN_FILE",
                 config.api_url);
  }
  return std::make_unique<ConsulSource>(config, wakeup, registry, clock, std::move(client_factory),
                                        options, std::move(sleeper));
}

}  // namespace hsdo::consul
