// hsdo: HAProxy Service Discovery Orchestrator.
//
// The seed's idea, kept visible: the server (orchestrator) orders, the clients (agents)
// apply. `hsdo --server` discovers targets and writes the slot table to the store;
// `hsdo --client` makes the HAProxy beside it match that table through the Runtime API.
//
// Exit codes: 0 done, 1 runtime failure (store unreachable, port in use), 2 bad
// configuration or usage.
#include <malloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>
#include <stop_token>
#include <thread>

#include <fmt/chrono.h>
#include <fmt/ranges.h>
#include <prometheus/gauge.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "agent/agent.h"
#include "app/factories.h"
#include "app/readiness.h"
#include "app/set_state.h"
#include "app/status.h"
#include "aws/dynamodb_store.h"
#include "common/logging.h"
#include "common/readiness.h"
#include "common/sleep.h"
#include "common/version.h"
#include "config/config.h"
#include "etcd/etcd_backend.h"
#include "haproxy/runtime_api.h"
#include "metrics/exporter.h"
#include "orchestrator/orchestrator.h"
#include "store/node_report_codec.h"
#include "store/seed_record.h"

namespace hsdo {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitConfig = 2;

constexpr const char* kFooterHead = R"(
Configuration: read from --config FILE, else $HSDO_CONFIG, else ./conf/env.yaml, else
/etc/hsdo/env.yaml; every variable can also be set in the environment, which wins. The first
log line says which file was read. `hsdo config` prints the effective settings.
)";

constexpr const char* kFooterTail = R"(
Signals: SIGTERM and SIGINT stop --server and --client within a second, even while a store
or source request hangs. SIGHUP is logged and ignored: the configuration is read once at
start, so restart hsdo to apply a change.

Endpoints on EXPORTER_PORT: /metrics, /healthz (the process is alive), /readyz (200 when it
does its job: the agent's HAProxy matched the slot table at its last cycle; the orchestrator
leads and wrote, or had nothing to write, after a successful discovery within 3 x INTERVAL;
else 503 with the reason).

Examples:
  hsdo init-table                   # once per store, before the first --server
  SERVER_MODE=file SERVER_FILE_PATH=targets.yaml hsdo --server
  HAPROXY_BACKEND_NAME=http-back HAPROXY_BACKEND_BASE_NAME=srv hsdo --client --dry-run
  hsdo status --json
  hsdo set-state web-3 drain        # every node drains web-3's slot; `ready` undoes it

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.)";

// Logging is set up once the configuration is known (LOG_FORMAT); until then, and when the
// configuration is invalid, the environment's LOG_FORMAT is honoured if it is json.
void SetupLogging(LogFormat format, bool debug, const Environment& env) {
  const auto journal = env.find("JOURNAL_STREAM");
  logging::Setup(logging::Options{
      .format = format == LogFormat::kJson ? logging::Format::kJson : logging::Format::kText,
      .debug = debug,
      .journal_priorities = journal != env.end() && logging::StderrIsJournal(journal->second)});
}

// A stop that follows `trigger` after `delay`. The orchestrator's store requests outlive a
// SIGTERM by that much: the leader finishes the request in flight and then releases its lease,
// so that a standby takes over at once; a store request that hangs still ends that soon after
// the signal.
class DelayedStop {
 public:
  DelayedStop(std::stop_token trigger, std::chrono::milliseconds delay)
      : on_trigger_(std::move(trigger), [this] { wake_.request_stop(); }), thread_([this, delay] {
          WaitUntilStopped(wake_.get_token());
          SleepUnlessStopped(delay, end_.get_token());
          source_.request_stop();
        }) {}
  ~DelayedStop() {
    end_.request_stop();
    wake_.request_stop();
  }
  DelayedStop(const DelayedStop&) = delete;
  DelayedStop& operator=(const DelayedStop&) = delete;

  std::stop_token token() const { return source_.get_token(); }

 private:
  std::stop_source wake_;  // the trigger, or the end
  std::stop_source end_;
  std::stop_source source_;
  std::stop_callback<std::function<void()>> on_trigger_;
  std::jthread thread_;
};

// Turns SIGINT and SIGTERM into Wakeup::RequestStop(): every loop ends at once, and so does
// any store or source request in flight (they hold Wakeup::stop_token()). SIGHUP is logged and
// ignored, on purpose: hsdo reads its configuration once, and a reload that half-applies a
// changed store or backend list is worse than a restart (without this, SIGHUP's default
// action would kill the process silently). The signals are blocked in every thread (set
// before any thread starts) and read here from a signalfd. The thread sleeps in poll() until
// a signal arrives or the destructor writes to an eventfd: it never wakes on its own (a
// periodic tick cost the agent CPU every 200 ms of its steady state, issue 12).
class SignalWatcher {
 public:
  explicit SignalWatcher(Wakeup& wakeup)
      : signals_(OpenSignalFd()),
        stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        thread_([this, &wakeup] { Watch(wakeup); }) {}
  ~SignalWatcher() {
    done_ = true;
    const std::uint64_t one = 1;
    if (stop_ >= 0 && ::write(stop_, &one, sizeof one) < 0) {
      spdlog::debug("signal watcher: cannot write its eventfd: {}", std::strerror(errno));
    }
    thread_.join();
    if (signals_ >= 0) ::close(signals_);
    if (stop_ >= 0) ::close(stop_);
  }
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  static void BlockSignals() {
    sigset_t set = HandledSignals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::signal(SIGPIPE, SIG_IGN);  // a peer closing a socket is an error value, not a death
  }
  // For the one-shot commands, which have no watcher: Ctrl-C, `timeout`'s SIGTERM or a
  // closed terminal ends them as any command, also while a store request hangs (blocked,
  // they were ignored until SIGKILL). A signal that came meanwhile is delivered now.
  static void UnblockSignals() {
    sigset_t set = HandledSignals();
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  }

 private:
  static sigset_t HandledSignals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
  }
  static int OpenSignalFd() {
    const sigset_t set = HandledSignals();
    return ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  }
  // Returns the next handled signal, 0 when stopped (or after a timeout in the fallback).
  int Next() {
    if (signals_ < 0 || stop_ < 0) {
      // Without the descriptors (never seen; a process out of them): the old 200 ms tick.
      const sigset_t set = HandledSignals();
      const timespec tick{0, 200'000'000};
      return std::max(0, sigtimedwait(&set, nullptr, &tick));
    }
    pollfd fds[2] = {{.fd = signals_, .events = POLLIN, .revents = 0},
                     {.fd = stop_, .events = POLLIN, .revents = 0}};
    if (::poll(fds, 2, -1) < 0) return 0;  // EINTR: the loop checks done_ and polls again
    if ((fds[0].revents & POLLIN) == 0) return 0;
    signalfd_siginfo info{};
    if (::read(signals_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) return 0;
    return static_cast<int>(info.ssi_signo);
  }
  void Watch(Wakeup& wakeup) {
    while (!done_) {
      const int signal = Next();
      if (signal == SIGHUP) {
        spdlog::warn(
            "received SIGHUP: ignored (hsdo does not reload its configuration; restart it to "
            "apply a change)");
      } else if (signal > 0) {
        spdlog::info("received {}, stopping", signal == SIGINT ? "SIGINT" : "SIGTERM");
        wakeup.RequestStop();
        return;
      }
    }
  }

  const int signals_;
  const int stop_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

struct Options {
  std::string set_state_target;  // hsdo set-state TARGET STATE
  std::string set_state_state;
  bool server = false;
  bool client = false;
  bool debug = false;
  bool dry_run = false;
  bool json = false;
  bool fleet = false;
  std::string config_path;
};

// The exporter's address and port as a URL's authority: an IPv6 address in brackets.
std::string ExporterHostPort(const Config& config) {
  const std::string& host = config.exporter_address;
  return host.find(':') == std::string::npos ? fmt::format("{}:{}", host, config.exporter_port)
                                             : fmt::format("[{}]:{}", host, config.exporter_port);
}

// Logs `error` and gives the exit code for it: 2 for what the user must fix in the
// configuration, 1 for anything else.
int Fail(const Error& error) {
  spdlog::error("{}", error.message);
  return error.code == ErrorCode::kInvalidArgument ? kExitConfig : kExitFailure;
}

// Finds and loads the configuration, then sets up logging: on success the first log line
// says which file was read; on failure the one line is the error.
Result<Config> LoadAndValidate(const Options& options) {
  const Environment env = ReadProcessEnvironment();
  const ConfigLocation location =
      LocateConfigFile(options.config_path, env, [](const std::string& path) {
        struct stat st {};
        return stat(path.c_str(), &st) == 0;
      });
  std::vector<std::string> warnings;
  auto config = LoadConfig(location.path, location.must_exist, env, &warnings,
                           options.server   ? SettingRole::kServer
                           : options.client ? SettingRole::kClient
                                            : SettingRole::kBoth);
  if (!config && location.must_exist && config.error().code == ErrorCode::kNotFound) {
    config =
        MakeError(config.error().code, "{} (given by {})", config.error().message, location.how);
  }
  if (config) {
    if (options.debug) config->debug = true;
    if (auto r = ValidateForStore(*config); !r) config = r.error();
  }
  // What the role needs, also before the first log line: a bad configuration is one line.
  if (config && options.server) {
    if (auto r = ValidateForServer(*config); !r) config = r.error();
  }
  if (config && options.client) {
    if (auto r = ValidateForClient(*config); !r) config = r.error();
  }
  if (!config) {
    const auto format = env.find("LOG_FORMAT");
    // As the setting reads it: any case, spaces around.
    std::string wanted = format != env.end() ? format->second : std::string();
    std::erase(wanted, ' ');
    std::ranges::transform(wanted, wanted.begin(), [](unsigned char c) { return std::tolower(c); });
    const bool json = wanted == "json";
    SetupLogging(json ? LogFormat::kJson : LogFormat::kText, options.debug, env);
    return config.error();
  }
  SetupLogging(config->log_format, config->debug, env);
  if (location.path.empty()) {
    spdlog::info(
        "configuration: no config file (neither conf/env.yaml nor /etc/hsdo/env.yaml exists); "
        "environment and defaults only");
  } else {
    spdlog::info("configuration: read {} (from {})", location.path,
                 location.how == "default" ? "the default lookup" : location.how);
  }
  for (const auto& warning : warnings) spdlog::warn("{}", warning);
  return config;
}

// `hsdo config`: the effective settings, one NAME=value per line, secrets masked.
int RunPrintConfig(const Config& config) {
  for (const auto& [name, value] : EffectiveSettings(config)) {
    std::cout << name << '=' << value << '\n';
  }
  std::cout << std::flush;
  return kExitOk;
}

// Whether the orchestrator's store was made for hsdo (SlotStore::Initialised), asked again
// every INTERVAL while the store cannot answer. A store never made is a configuration error
// (kInvalidArgument); false: stopped before the store answered.
Result<bool> WaitUntilKnown(SlotStore& store, const Config& config, Wakeup& wakeup) {
  std::string said;  // each cause once
  while (!wakeup.stop_requested()) {
    auto initialised = store.Initialised();
    if (initialised && *initialised) return true;
    if (initialised) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the {} store {} was never initialised: run `hsdo init-table` once with "
                       "this configuration. An orchestrator never starts on a store that is "
                       "neither initialised nor written: that is what a mistyped location "
                       "looks like, and on it every target would be placed again",
                       ToString(config.store), StoreLocation(config));
    }
    if (initialised.error().message != said) {
      spdlog::warn("cannot tell whether the store is initialised, asking again every {} s: {}",
                   std::chrono::duration<double>(config.interval).count(),
                   initialised.error().message);
      said = initialised.error().message;
    }
    wakeup.WaitFor(config.interval);
  }
  return false;
}

// hsdo_build_info{version} 1, as Prometheus' own *_build_info: which version runs where.
void RegisterBuildInfo(prometheus::Registry& registry) {
  prometheus::BuildGauge()
      .Name("hsdo_build_info")
      .Help("1, labelled with the version of hsdo that runs")
      .Register(registry)
      .Add({{"version", std::string(kVersion)}})
      .Set(1);
}

int RunServer(const Config& config) {
  if (auto r = ValidateForServer(config); !r) return Fail(r.error());
  auto registry = std::make_shared<MetricsRegistry>();
  RegisterBuildInfo(*registry);
  Wakeup wakeup;
  SignalWatcher signals(wakeup);
  SystemClock clock;
  // The request in flight at the signal, then the release (the cycle starts no other once
  // stopping), must both fit, and the whole stop within a second whatever the store does.
  // With 300 ms, a store answering in more than 150 ms (far away, under load) never saw the
  // release: the standby waited a whole lease.
  DelayedStop store_stop(wakeup.stop_token(), std::chrono::milliseconds(800));
  auto store = MakeStore(config, *registry, StoreAccess::kWrite, store_stop.token());
  if (!store) {
    // A store `hsdo init-table` never made: a setup or configuration error, not one to
    // restart on.
    return Fail(store.error().code == ErrorCode::kNotFound
                    ? MakeError(ErrorCode::kInvalidArgument, "{}", store.error().message)
                    : store.error());
  }
  auto source = MakeSource(config, wakeup, *registry, clock);
  if (!source) return Fail(source.error());
  Orchestrator orchestrator(
      PlannerConfig{.list_size = config.list_size,
                    .min_weight = config.min_weight,
                    .max_weight = config.max_weight,
                    .increase_weight = config.increase_weight,
                    .increase_interval = config.increase_weight_interval,
                    .drain_timeout = config.drain_timeout,
                    .default_port = config.backend_server_port},
      config.interval, **source, **store, clock, wakeup, *registry,
      RemovalGuardConfig{.max_removed_fraction = config.max_removed_fraction,
                         .delay = config.mass_removal_delay,
                         .replacements_by_checks = config.replacements_by_checks});
  // Active/standby: any number of servers may share the store; one leads (docs/stores.md).
  const auto lease = EffectiveLeaderLease(config);
  if (lease != config.leader_lease) {
    spdlog::warn("LEADER_LEASE_SECONDS={} s is shorter than 3 x INTERVAL: the lease is {} s",
                 std::chrono::duration<double>(config.leader_lease).count(),
                 std::chrono::duration<double>(lease).count());
  }
  LeaderElection election(**store, LeaseHolderName(config.node_name), lease, clock, *registry);
  orchestrator.SetLeaderElection(&election);
  // The agents' node reports free drained slots before HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT
  // and feed hsdo_fleet_nodes_behind. Without a reader, draining slots wait for the timeout.
  auto reports = MakeNodeReportReader(config, registry.get(), wakeup.stop_token());
  if (!reports) return Fail(reports.error());
  orchestrator.SetNodeReports(reports->get(), config.node_record_expiry);
  // Healthy while cycles keep completing: a cycle may take a while (a slow source), so
  // allow a few intervals plus some slack before reporting unhealthy.
  const double stale_after = 3 * std::chrono::duration<double>(config.interval).count() + 30;
  auto exporter = Exporter::Start(config.exporter_address, config.exporter_port, registry, [&] {
    const double last = orchestrator.last_cycle_seconds();
    const double now = std::chrono::duration<double>(clock.Steady().time_since_epoch()).count();
    return last > 0 && now - last < stale_after;
  });
  if (!exporter) return Fail(exporter.error());
  (*exporter)->SetReadiness([&] {
    return OrchestratorNotReadyReason(
        orchestrator.standing_by(), orchestrator.last_ready_seconds(),
        std::chrono::duration<double>(clock.Steady().time_since_epoch()).count(), config.interval);
  });
  spdlog::info("metrics on http://{}/metrics, store {} ({})", ExporterHostPort(config),
               ToString(config.store), StoreLocation(config));
  // After the exporter: /healthz answers (unhealthy) while the store cannot be asked.
  if (auto initialised = WaitUntilKnown(**store, config, wakeup); !initialised) {
    return Fail(initialised.error());
  } else if (!*initialised) {
    return kExitOk;  // stopped while the store could not be asked
  }
  orchestrator.Run();
  election.Release();
  return kExitOk;
}

int RunClient(const Config& config, bool dry_run) {
  if (auto r = ValidateForClient(config); !r) return Fail(r.error());
  // One malloc arena per thread that allocates keeps memory resident for no gain in a process
  // this quiet: a /metrics scrape (500 weight series at N=1000) left some 230 kB resident in
  // the exporter thread's arena, which the trim after each full read never reached. One arena
  // for all (the threads hardly ever allocate at once), set before any thread starts.
  ::mallopt(M_ARENA_MAX, 1);
  auto registry = std::make_shared<MetricsRegistry>();
  RegisterBuildInfo(*registry);
  Wakeup wakeup;
  SystemClock clock;
  // Opened read-only and never created: until `hsdo init-table` has made it, every cycle fails
  // with "store not found" and HAProxy is left as it is.
  auto store = MakeAgentStore(config, *registry, wakeup.stop_token());
  if (!store) return Fail(store.error());
  // One connection kept from cycle to cycle: a steady cycle is then one write and one read.
  auto api = haproxy::SocketRuntimeApi::Create(config.haproxy_socket_path, {.keep_open = true});
  if (!api) {
    spdlog::error("invalid configuration: HAPROXY_SOCKET_PATH=\"{}\": {}",
                  config.haproxy_socket_path, api.error().message);
    return kExitConfig;
  }
  // Both before the exporter, whose threads read them until it stops.
  Readiness readiness;
  std::atomic<bool> running{true};
  std::unique_ptr<Exporter> exporter;
  if (!dry_run) {  // a dry run is a one-shot command: no exporter, no port to collide on
    // Every cycle ends by setting the readiness (so does each wait for HAProxy's socket): one
    // not set for a few intervals plus the requests' timeouts is a stuck loop, as for the
    // orchestrator's health.
    const auto stale_after = 3 * config.interval + std::chrono::milliseconds{30'000};
    auto started = Exporter::Start(
        config.exporter_address, config.exporter_port, registry,
        [&running, &readiness, stale_after] {
          return running.load() && !readiness.Stale(std::chrono::steady_clock::now(), stale_after);
        });
    if (!started) return Fail(started.error());
    exporter = std::move(*started);
    exporter->SetReadiness([&readiness, stale_after] {
      return readiness.Reason(std::chrono::steady_clock::now(), stale_after);
    });
    spdlog::info("metrics on http://{}/metrics, store {}, HAProxy at {}", ExporterHostPort(config),
                 ToString(config.store), config.haproxy_socket_path);
  }
  SignalWatcher signals(wakeup);
  // This node's reports (issue 10 item 3), written after each apply; none in a dry run.
  Config agent_config = config;
  std::unique_ptr<NodeReportSink> node_reports;
  if (!dry_run) {
    auto name = ResolveNodeName(config.node_name);
    if (!name) return Fail(name.error());
    agent_config.node_name = std::move(*name);
    auto sink = MakeNodeReportSink(config, registry.get(), wakeup.stop_token());
    if (!sink) return Fail(sink.error());
    node_reports = std::move(*sink);
  }
  const int code = agent::RunAgent(agent_config, **store, **api, *registry, wakeup, clock, dry_run,
                                   &readiness, node_reports.get());
  running = false;
  wakeup.RequestStop();  // ends the signal watcher when the agent stopped on its own
  return code;
}

int RunStatus(const Config& config, bool json) {
  prometheus::Registry registry;
  // A store that does not exist (never made, or another path than the daemons': a shell
  // without the unit's SQLITE_PATH) is an error, exit 1: an all-free table on stdout read as an
  // empty fleet, and success. Reading never creates it.
  auto store = MakeStore(config, registry, StoreAccess::kRead);
  if (!store) return Fail(store.error());
  auto table = (*store)->ReadTable();
  if (!table) {
    spdlog::error("cannot read the slot table: {}", table.error().message);
    return kExitFailure;
  }
  const auto hold = ReadRemovalHold(config, *http::MakeCurlHttpClient());
  std::string out = json ? FormatStatusJson(*table, hold) : FormatStatusTable(*table, hold);
  // The leader lease (docs/stores.md), when the store holds one.
  if (auto lease = (*store)->ReadLease(); lease && *lease) {
    const WallTime now = std::chrono::system_clock::now();
    out = json ? AddLeaseJson(out, **lease, now) : out + FormatLeaseLine(**lease, now);
  }
  std::cout << out << std::flush;
  return kExitOk;
}

// `hsdo set-state TARGET ready|drain|maint` (app/set_state.h). Exit 2 when TARGET names no
// filled slot or several, 1 when the store cannot be read or written.
int RunSetState(const Config& config, const std::string& target, const std::string& state_name) {
  const auto state = ParseAdminState(state_name);
  if (!state) return Fail(state.error());
  prometheus::Registry registry;
  // Never creates a store: a missing one is an error.
  auto store = MakeStore(config, registry, StoreAccess::kWrite);
  if (!store) return Fail(store.error());
  auto outcome = SetSlotState(**store, target, *state);
  if (!outcome) {
    spdlog::error("set-state: {}", outcome.error().message);
    return outcome.error().code == ErrorCode::kInvalidArgument ? kExitConfig : kExitFailure;
  }
  const Slot& slot = outcome->slot;
  const bool named = !slot.target.name.empty() && slot.target.name != slot.target.address;
  const std::string what =
      named ? fmt::format("slot {} ({}, {})", slot.id, slot.target.Key(), slot.target.name)
            : fmt::format("slot {} ({})", slot.id, slot.target.Key());
  if (!outcome->written) {
    std::cout << fmt::format("{}: already {}; nothing written\n", what, AdminStateName(*state));
  } else {
    std::cout << fmt::format(
        "{}: {} (was {}), generation {}: every agent applies it at its next cycle\n", what,
        AdminStateName(*state), AdminStateName(outcome->before), outcome->generation);
  }
  std::cout << std::flush;
  return kExitOk;
}

// What `hsdo init-table` found already there. A second fleet pointed at the same store (the
// same table name, the default etcd prefix or SQLite path) shows here, before an orchestrator
// of it plans over the first fleet's table; after an upgrade it is the table kept.
void SayWhatTheStoreHolds(const Config& config) {
  prometheus::Registry registry;
  auto store = MakeStore(config, registry, StoreAccess::kRead);
  if (!store) return;
  auto table = (*store)->ReadTable();
  if (!table) return;
  std::set<std::string> groups;
  int filled = 0;
  for (const Slot& slot : table->slots) {
    if (!slot.filled()) continue;
    ++filled;
    if (!slot.target.group.empty()) groups.insert(slot.target.group);
  }
  if (table->generation == 0 && filled == 0) return;
  spdlog::info(
      "the store already holds a table: {}, {} filled slots of groups {}; an orchestrator with "
      "this configuration goes on from it (a store of another fleet? give each fleet its own)",
      (table->generation & kDerivedGenerationBit) != 0
          ? std::string("no generation (the Python HSDO's)")
          : fmt::format("generation {}", table->generation),
      filled, groups.empty() ? std::string("(none)") : fmt::format("{}", fmt::join(groups, ", ")));
}

// `hsdo init-table`: makes the configured store, the one step an orchestrator never takes
// (RecordBackend::Initialised). Idempotent.
int RunInitTable(const Config& config) {
  if (auto r = ValidateForStore(config); !r) return Fail(r.error());
  if (config.store == StoreKind::kSqlite) {
    std::error_code ec;
    const bool existed = std::filesystem::exists(config.sqlite_path, ec);
    prometheus::Registry registry;
    auto store = MakeStore(config, registry, StoreAccess::kCreate);
    if (!store) return Fail(store.error());
    spdlog::info("SQLite store {} {}", config.sqlite_path,
                 existed ? "is there (its tables are up to date)" : "made");
  } else if (config.store == StoreKind::kEtcd) {
    auto backend = etcd::MakeEtcdBackend(config.etcd, nullptr);
    if (!backend) return Fail(backend.error());
    auto was = (*backend)->Initialised();
    if (!was) return Fail(was.error());
    if (auto r = (*backend)->Initialise(); !r) return Fail(r.error());
    // A new prefix is also what a mistyped ETCD_PREFIX makes: said as plainly as SQLite's.
    spdlog::info("etcd store under {} {}", config.etcd.prefix,
                 *was ? "was initialised already"
                      : fmt::format("made ({}/store): a new, empty table", config.etcd.prefix));
  } else {
    spdlog::info("creating DynamoDB table {} (unless it exists) and waiting until it is ACTIVE",
                 config.dynamodb_table_name);
    if (auto r = aws::InitTable(config); !r) return Fail(r.error());
    spdlog::info("table {} is ACTIVE", config.dynamodb_table_name);
  }
  SayWhatTheStoreHolds(config);
  return kExitOk;
}

int Main(int argc, char** argv) {
  SignalWatcher::BlockSignals();
  CLI::App app{
      "hsdo: HAProxy Service Discovery Orchestrator.\n"
      "Gives every HAProxy node the same server slot and weight for every backend instance.",
      "hsdo"};
  app.footer(std::string(kFooterHead) + SettingsHelp() + kFooterTail);
  Options options;
  // The Python HSDO's short forms too (-s, -c, -d): its units and container commands work
  // unchanged.
  auto* server = app.add_flag("-s,--server", options.server,
                              "Run the orchestrator: discover targets, write the slot table");
  auto* client = app.add_flag("-c,--client", options.client,
                              "Run the agent: make the local HAProxy match the slot table");
  server->excludes(client);
  app.add_flag("-d,--debug", options.debug, "Debug logging (same as DEBUG=true)");
  app.add_flag("--dry-run", options.dry_run,
               "With --client: print the runtime commands one cycle would send, send none")
      ->needs(client);
  app.add_option("--config", options.config_path,
                 "Config file, which must exist (default: $HSDO_CONFIG, which must exist "
                 "too, else the first of conf/env.yaml and /etc/hsdo/env.yaml that exists)");
  app.set_version_flag("--version", fmt::format("hsdo {}", kVersion));
  // Before the subcommands: CLI11 gives each the setting it has when the subcommand is made,
  // and `hsdo status --config FILE` must work as `hsdo --config FILE status` does.
  app.fallthrough();
  auto* status = app.add_subcommand("status", "Print the slot table from the configured store");
  status->add_flag("--json", options.json, "Print JSON instead of a table");
  status->add_flag("--fleet", options.fleet,
                   "List the nodes that report (agents): the generation each has applied, how "
                   "far behind the table it is, the age of its report, whether it is live "
                   "(reported within 3 x INTERVAL, or 3 x the node's own when longer), its "
                   "agent's version, the slots awaiting their first passing check, those whose "
                   "check it vouches for (the removal guard's proof of a replacement) and its "
                   "draining slots' sessions");
  auto* init_table = app.add_subcommand(
      "init-table",
      "Make the configured store, once, before the first `hsdo --server` (which never makes "
      "one): the DynamoDB table DYNAMODB_TABLE_NAME (as the seed's Terraform), the SQLite file "
      "SQLITE_PATH, or the key <ETCD_PREFIX>/store");
  auto* set_state = app.add_subcommand(
      "set-state",
      "Override one slot's state on every node (drain, maint; ready clears it), kept across "
      "HAProxy reloads and restarts");
  set_state
      ->add_option("TARGET", options.set_state_target,
                   "A slot number, an address (or address:port) or a target name")
      ->required();
  set_state
      ->add_option("STATE", options.set_state_state,
                   "ready (clear the override), drain (no new connections) or maint (out)")
      ->required()
      ->check(CLI::IsMember({"ready", "drain", "maint"}));
  auto* print_config = app.add_subcommand(
      "config", "Print the effective settings (NAME=value, secrets masked) and exit");
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "hsdo: " << e.what() << "\nRun 'hsdo --help' for usage.\n";
    return kExitConfig;
  }
  const bool run_status = status->parsed();
  const bool run_init_table = init_table->parsed();
  const bool run_print_config = print_config->parsed();
  const bool run_set_state = set_state->parsed();
  const bool run_command = run_status || run_init_table || run_print_config || run_set_state;
  if (run_command) SignalWatcher::UnblockSignals();
  if (!run_command && !options.server && !options.client) {
    std::cerr << app.help() << "\nhsdo: choose --server, --client or a command\n";
    return kExitConfig;
  }
  if (run_command && (options.server || options.client)) {
    std::cerr << "hsdo: commands do not take --server or --client\n";
    return kExitConfig;
  }

  auto config = LoadAndValidate(options);
  if (!config) {
    spdlog::error("{}", config.error().message);
    return kExitConfig;
  }
  if (run_print_config) return RunPrintConfig(*config);
  if (run_status && options.fleet) {
    auto fleet = ReadFleetStatus(*config, options.json, SystemClock().Now());
    if (!fleet) return Fail(fleet.error());
    std::cout << *fleet << std::flush;
    return kExitOk;
  }
  if (run_status) return RunStatus(*config, options.json);
  if (run_init_table) return RunInitTable(*config);
  if (run_set_state) {
    return RunSetState(*config, options.set_state_target, options.set_state_state);
  }
  return options.server ? RunServer(*config) : RunClient(*config, options.dry_run);
}

}  // namespace
}  // namespace hsdo

int main(int argc, char** argv) { return hsdo::Main(argc, argv); }
