#include "app/factories.h"

#include "discovery/file_source.h"
#include "store/sqlite_store.h"

namespace hsdo {

Result<std::unique_ptr<SlotStore>> MakeStore(const Config& config,
                                             prometheus::Registry& /*registry*/) {
  switch (config.store) {
    case StoreKind::kSqlite: {
      auto store = SqliteStore::Open(config.sqlite_path, config.list_size);
      if (!store) return store.error();
      return std::unique_ptr<SlotStore>(std::move(*store));
    }
    case StoreKind::kDynamoDb:
      break;
  }
  return MakeError(ErrorCode::kInvalidArgument, "STORE={} is not built into this hsdo",
                   ToString(config.store));
}

Result<std::unique_ptr<DiscoverySource>> MakeSource(const Config& config, Wakeup& /*wakeup*/,
                                                    prometheus::Registry& /*registry*/,
                                                    const Clock& /*clock*/) {
  switch (config.server_mode) {
    case ServerMode::kFile:
      return std::unique_ptr<DiscoverySource>(
          std::make_unique<FileSource>(config.server_file_path));
    case ServerMode::kAws:
    case ServerMode::kConsul:
    case ServerMode::kNone:
      break;
  }
  return MakeError(ErrorCode::kInvalidArgument, "SERVER_MODE={} is not built into this hsdo",
                   ToString(config.server_mode));
}

}  // namespace hsdo
