#include "app/deferred_store.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <fstream>

#include "app/factories.h"
#include "app/readiness.h"
#include "common/testing/temp_dir.h"
#include "store/sqlite_store.h"

namespace hsdo {
namespace {

// A store that answers with a fixed generation and counts watches.
class CountingStore final : public SlotStore {
 public:
  Result<std::uint64_t> ReadGeneration() override { return std::uint64_t{7}; }
  Result<SlotTable> ReadTable() override { return SlotTable::Empty(3); }
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot>, int, std::uint64_t,
                                   const std::optional<HeldRemoval>&, std::uint64_t) override {
    return std::uint64_t{8};
  }
  bool Watch(std::function<void()> on_change) override {
    on_change();
    return true;
  }
  std::uint64_t Incarnation() override { return 2; }
};

TEST(DeferredStore, RetriesOpeningAtEveryCallUntilTheStoreExists) {
  int opens = 0;
  bool exists = false;
  DeferredStore store([&]() -> Result<std::unique_ptr<SlotStore>> {
    ++opens;
    if (!exists) return MakeError(ErrorCode::kNotFound, "no store yet");
    return std::unique_ptr<SlotStore>(std::make_unique<CountingStore>());
  });
  int changes = 0;
  EXPECT_FALSE(store.Watch([&] { ++changes; }));  // nothing to watch yet
  for (int i = 0; i < 3; ++i) {
    auto generation = store.ReadGeneration();
    ASSERT_FALSE(generation);
    EXPECT_EQ(generation.error().code, ErrorCode::kNotFound);
  }
  EXPECT_FALSE(store.ReadTable());
  EXPECT_EQ(store.Incarnation(), 0u);
  EXPECT_EQ(opens, 4);
  EXPECT_EQ(changes, 0);

  exists = true;
  EXPECT_EQ(*store.ReadGeneration(), 7u);
  EXPECT_EQ(changes, 1);  // the watch was attached when the store opened
  EXPECT_EQ(store.ReadTable()->slots.size(), 3u);
  EXPECT_EQ(store.Incarnation(), 2u) << "the agent must see the store made again";
  EXPECT_EQ(opens, 5);  // opened once, kept
}

Config SqliteConfig(const std::string& path) {
  Config config;
  config.store = StoreKind::kSqlite;
  config.sqlite_path = path;
  config.list_size = 4;
  return config;
}

// The agent's store never creates anything: not the file, not its directory.
TEST(MakeAgentStore, MissingSqliteFileIsNotFoundAndCreatesNothing) {
  testing::TempDir dir;
  const auto path = dir.path() / "typo" / "hsdo.db";
  const Config config = SqliteConfig(path.string());
  prometheus::Registry registry;
  auto store = MakeAgentStore(config, registry, {});
  ASSERT_TRUE(store) << store.error().message;
  for (int i = 0; i < 2; ++i) {
    auto generation = (*store)->ReadGeneration();
    ASSERT_FALSE(generation);
    EXPECT_EQ(generation.error().code, ErrorCode::kNotFound);
    EXPECT_NE(generation.error().message.find(path.string()), std::string::npos);
  }
  EXPECT_FALSE(std::filesystem::exists(path.parent_path()));

  // `hsdo init-table` creates it: the same agent store now reads it.
  auto writer = MakeStore(config, registry, StoreAccess::kCreate);
  ASSERT_TRUE(writer) << writer.error().message;
  const Slot slot{.id = 1,
                  .status = SlotStatus::kEnabled,
                  .target = {.address = "10.0.0.1", .name = "web-1", .group = "asg-a"},
                  .weight = 5};
  ASSERT_TRUE((*writer)->WriteSlots(std::span<const Slot>(&slot, 1), 0, 0));
  auto table = (*store)->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 1u);
  EXPECT_TRUE(table->slots[0].enabled());
}

// An existing file that holds no table (an empty file, a file of something else) is read,
// never written: the schema is `hsdo init-table`'s to create.
TEST(MakeAgentStore, ExistingEmptyFileIsAnErrorAndStaysEmpty) {
  testing::TempDir dir;
  const auto path = dir.File("hsdo.db");
  { std::ofstream touch(path); }
  prometheus::Registry registry;
  auto store = MakeAgentStore(SqliteConfig(path), registry, {});
  ASSERT_TRUE(store);
  auto generation = (*store)->ReadGeneration();
  ASSERT_FALSE(generation);
  EXPECT_EQ(generation.error().code, ErrorCode::kNotFound) << generation.error().message;
  EXPECT_FALSE((*store)->ReadTable());
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
}

// The orchestrator and `hsdo set-state` never make a store either: a mistyped or deleted
// SQLITE_PATH would be a new, empty store on which every target is placed again.
TEST(MakeStore, AWriterOpensOnlyAStoreInitTableMade) {
  testing::TempDir dir;
  const auto typo = dir.path() / "typo" / "hsdo.db";
  prometheus::Registry registry;
  auto missing = MakeStore(SqliteConfig(typo.string()), registry, StoreAccess::kWrite);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message.find("hsdo init-table"), std::string::npos)
      << missing.error().message;
  EXPECT_FALSE(std::filesystem::exists(typo.parent_path()));

  const auto empty = dir.File("empty.db");
  { std::ofstream touch(empty); }
  auto no_tables = MakeStore(SqliteConfig(empty), registry, StoreAccess::kWrite);
  ASSERT_FALSE(no_tables);
  EXPECT_EQ(no_tables.error().code, ErrorCode::kNotFound) << no_tables.error().message;
  EXPECT_EQ(std::filesystem::file_size(empty), 0u);

  const auto made = dir.File("hsdo.db");
  ASSERT_TRUE(MakeStore(SqliteConfig(made), registry, StoreAccess::kCreate));
  auto writer = MakeStore(SqliteConfig(made), registry, StoreAccess::kWrite);
  ASSERT_TRUE(writer) << writer.error().message;
  const Slot slot{.id = 1, .status = SlotStatus::kEnabled, .target = {.address = "10.0.0.1"}};
  EXPECT_TRUE((*writer)->WriteSlots(std::span<const Slot>(&slot, 1), 0, 0));
}

TEST(MakeAgentStore, ConfigurationErrorsFailAtOnce) {
  Config config;
  config.store = StoreKind::kDynamoDb;  // without a table name
  prometheus::Registry registry;
  auto store = MakeAgentStore(config, registry, {});
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kInvalidArgument);
}

TEST(OrchestratorReadiness, ReadyWithinThreeIntervalsOfASuccessfulCycle) {
  using std::chrono::milliseconds;
  EXPECT_NE(OrchestratorNotReadyReason(false, 0, 1000, milliseconds(1000)).find("no successful"),
            std::string::npos);
  EXPECT_EQ(OrchestratorNotReadyReason(false, 1000, 1000, milliseconds(1000)), "");
  EXPECT_EQ(OrchestratorNotReadyReason(false, 1000, 1003, milliseconds(1000)), "");
  const auto stale = OrchestratorNotReadyReason(false, 1000, 1003.5, milliseconds(1000));
  EXPECT_NE(stale.find("3.5 s ago"), std::string::npos) << stale;
  EXPECT_EQ(stale.find('\n'), std::string::npos);
  // A standby is not ready, whatever it did before it lost the lease; nobody may hold it
  // (review: it said another orchestrator did while none could take it).
  EXPECT_EQ(OrchestratorNotReadyReason(true, 1000, 1000, milliseconds(1000)),
            "standing by: this orchestrator does not hold the leader lease (another does, or it "
            "cannot be taken: see the log)");
}

}  // namespace
}  // namespace hsdo
