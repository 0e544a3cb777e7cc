// agent_driver: a test-only stand-in for `hsdo --client` until the app wires RunAgent. It reads
// the configuration like hsdo (a YAML file given with --config, the environment wins), opens the
// SQLite store, exposes metrics on EXPORTER_PORT (127.0.0.1) and runs the agent until SIGTERM.
//   agent_driver [--config FILE] [--dry-run]
#include <csignal>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/agent.h"
#include "common/clock.h"
#include "common/wakeup.h"
#include "config/config.h"
#include "haproxy/runtime_api.h"
#include "store/sqlite_store.h"

int main(int argc, char** argv) {
  std::string config_path = "conf/env.yaml";
  bool explicit_config = false;
  bool dry_run = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      config_path = argv[++i];
      explicit_config = true;
    } else if (std::strcmp(argv[i], "--dry-run") == 0) {
      dry_run = true;
    } else {
      std::fprintf(stderr, "usage: %s [--config FILE] [--dry-run]\n", argv[0]);
      return 2;
    }
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("hsdo"));

  // Block the stop signals in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto config = hsdo::LoadConfig(config_path, explicit_config, hsdo::ReadProcessEnvironment());
  if (!config) {
    spdlog::error("{}", config.error().message);
    return 2;
  }
  if (auto valid = hsdo::ValidateForClient(*config); !valid) {
    spdlog::error("{}", valid.error().message);
    return 2;
  }
  if (config->debug) spdlog::set_level(spdlog::level::debug);
  auto store = hsdo::SqliteStore::Open(config->sqlite_path, config->list_size);
  if (!store) {
    spdlog::error("{}", store.error().message);
    return 1;
  }
  auto api = hsdo::haproxy::SocketRuntimeApi::Create(config->haproxy_socket_path);
  if (!api) {
    spdlog::error("HAPROXY_SOCKET_PATH: {}", api.error().message);
    return 2;
  }
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!dry_run) {
    exposer =
        std::make_unique<prometheus::Exposer>(fmt::format("127.0.0.1:{}", config->exporter_port));
    exposer->RegisterCollectable(registry);
  }
  hsdo::Wakeup wakeup;
  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    wakeup.RequestStop();
  });
  hsdo::SystemClock clock;
  const int code =
      hsdo::agent::RunAgent(*config, **store, **api, *registry, wakeup, clock, dry_run);
  // Wake the signal thread if it is still waiting.
  if (!wakeup.stop_requested()) {
    wakeup.RequestStop();
    pthread_kill(signal_thread.native_handle(), SIGTERM);
  }
  signal_thread.join();
  return code;
}
