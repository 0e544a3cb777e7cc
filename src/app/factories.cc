#include "app/factories.h"

#include <algorithm>

#include "app/deferred_store.h"
#include "aws/asg_source.h"
#include "aws/dynamodb_store.h"
#include "consul/consul_source.h"
#include "discovery/file_source.h"
#include "etcd/etcd_backend.h"
#include "store/slot_table_store.h"
#include "store/sqlite_store.h"

namespace hsdo {

Result<std::unique_ptr<SlotStore>> MakeStore(const Config& config, prometheus::Registry& registry,
                                             StoreAccess access, std::stop_token cancel) {
  switch (config.store) {
    case StoreKind::kSqlite: {
      const auto mode = access == StoreAccess::kRead    ? SqliteOpenMode::kReadOnly
                        : access == StoreAccess::kWrite ? SqliteOpenMode::kWrite
                                                        : SqliteOpenMode::kCreate;
      auto store = SqliteStore::Open(config.sqlite_path, config.list_size, mode, std::move(cancel));
      if (!store) return store.error();
      return std::unique_ptr<SlotStore>(std::move(*store));
    }
    case StoreKind::kDynamoDb:
      return aws::MakeDynamoDbStore(config, &registry, nullptr, std::move(cancel));
    case StoreKind::kEtcd: {
      auto backend = etcd::MakeEtcdBackend(config.etcd, &registry, std::move(cancel));
      if (!backend) return backend.error();
      return std::unique_ptr<SlotStore>(
          std::make_unique<SlotTableStore>(std::move(*backend), config.list_size));
    }
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown STORE");
}

Config WithAgentRequestTimeout(Config config) {
  config.aws.request_timeout = std::clamp(2 * config.interval, std::chrono::milliseconds{2'000},
                                          std::chrono::milliseconds{10'000});
  return config;
}

Result<std::unique_ptr<SlotStore>> MakeAgentStore(const Config& config,
                                                  prometheus::Registry& registry,
                                                  std::stop_token cancel) {
  // The configuration is copied: the store outlives the caller's Config (a temporary in tests).
  auto store = std::make_unique<DeferredStore>(
      [config = WithAgentRequestTimeout(config), &registry, cancel] {
        return MakeStore(config, registry, StoreAccess::kRead, cancel);
      });
  if (auto opened = store->Open(); !opened && opened.error().code == ErrorCode::kInvalidArgument) {
    return opened.error();
  }
  return std::unique_ptr<SlotStore>(std::move(store));
}

namespace {

// Both roles of the node records are one object per store; `writer` chooses SQLite's mode.
template <typename Role>
Result<std::unique_ptr<Role>> MakeNodeReports(const Config& config, prometheus::Registry* registry,
                                              bool writer, std::stop_token cancel) {
  switch (config.store) {
    case StoreKind::kSqlite:
      return std::unique_ptr<Role>(std::make_unique<SqliteNodeReports>(
          config.sqlite_path,
          writer ? SqliteNodeReports::Mode::kWriter : SqliteNodeReports::Mode::kReader, registry));
    case StoreKind::kDynamoDb: {
      // An agent's report is tried once: the next one comes a cycle later, and retries
      // (with their backoff) would only hold the agent's cycle.
      Config node_config = writer ? WithAgentRequestTimeout(config) : config;
      if (writer) node_config.aws.max_attempts = 1;
      auto reports =
          aws::MakeDynamoDbNodeReports(node_config, registry, nullptr, std::move(cancel));
      if (!reports) return reports.error();
      return std::unique_ptr<Role>(std::move(*reports));
    }
    case StoreKind::kEtcd: {
      auto reports = etcd::MakeEtcdNodeReports(config.etcd, registry, std::move(cancel));
      if (!reports) return reports.error();
      return std::unique_ptr<Role>(std::move(*reports));
    }
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown STORE");
}

}  // namespace

Result<std::unique_ptr<NodeReportSink>> MakeNodeReportSink(const Config& config,
                                                           prometheus::Registry* registry,
                                                           std::stop_token cancel) {
  return MakeNodeReports<NodeReportSink>(config, registry, /*writer=*/true, std::move(cancel));
}

Result<std::unique_ptr<NodeReportReader>> MakeNodeReportReader(const Config& config,
                                                               prometheus::Registry* registry,
                                                               std::stop_token cancel) {
  return MakeNodeReports<NodeReportReader>(config, registry, /*writer=*/false, std::move(cancel));
}

Result<std::unique_ptr<DiscoverySource>> MakeSource(const Config& config, Wakeup& wakeup,
                                                    prometheus::Registry& registry,
                                                    const Clock& clock) {
  switch (config.server_mode) {
    case ServerMode::kFile:
      return std::unique_ptr<DiscoverySource>(
          std::make_unique<FileSource>(config.server_file_path, wakeup.stop_token()));
    case ServerMode::kAws:
      return aws::MakeAsgSource(config, registry, &clock, wakeup.stop_token());
    case ServerMode::kConsul: {
      // A watch whose Consul is down probes about once per INTERVAL, so that the first change
      // after an outage reaches the table within INTERVAL plus a round trip.
      consul::ConsulSourceOptions options;
      options.backoff_max = std::max(options.backoff_initial, config.interval);
      return consul::MakeConsulSource(config.consul, wakeup, registry, clock,
                                      consul::CurlHttpClientFactory(), options);
    }
    case ServerMode::kNone:
      break;
  }
  return MakeError(ErrorCode::kInvalidArgument, "SERVER_MODE is not set");
}

}  // namespace hsdo
