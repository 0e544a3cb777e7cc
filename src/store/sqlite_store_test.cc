#include "store/sqlite_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/testing/log_capture.h"
#include "common/testing/temp_dir.h"
#include "store/testing/invalid_records.h"

namespace hsdo {
namespace {

using namespace std::chrono_literals;

class SqliteStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<SqliteStore> Open(int size = 5) {
    auto store = SqliteStore::Open(path_, size);
    EXPECT_TRUE(store.ok()) << store.error().message;
    return std::move(*store);
  }

  // Rows written as another tool (or a hand edit) would, past the store's checks: `values` is
  // the VALUES list of (BackendServerID, IPAddress, ServerName, ASG, Weight,
  // BackendServerStatus, LastWeightUpdate, Port, AZ).
  void InsertRawRows(const std::string& values) const {
    Sql("INSERT INTO slots (BackendServerID, IPAddress, ServerName, ASG, Weight,"
        " BackendServerStatus, LastWeightUpdate, Port, AZ) VALUES " +
        values);
  }
  // Runs `sql` on the store's file, behind the store's back.
  void Sql(const std::string& sql) const {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK)
        << sqlite3_errmsg(db);
    sqlite3_close(db);
  }

  inline static const Lease kLeaseA{.holder = "a", .epoch = 1, .version = 1, .duration_ms = 10'000};
  // `writer`'s table and lease, then its file deleted (with its -wal and -shm).
  void WriteThenDelete(SqliteStore& writer) const {
    ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 4)}, 0, 0).ok());
    ASSERT_TRUE(writer.WriteLease(kLeaseA, std::nullopt).ok());
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  }

  // A leader and a standby on the store; its file deleted and made again (`hsdo init-table`,
  // `clock_went_back`: stamped before the first one's making); the leader follows it first and
  // takes the lease there; the standby must read that lease, and may take over on it.
  void StandbyFollowsAStoreMadeAgain(bool clock_went_back) {
    auto leader = Open();
    auto standby = SqliteStore::Open(path_, 5, SqliteOpenMode::kWrite);
    ASSERT_TRUE(standby.ok());
    ASSERT_NO_FATAL_FAILURE(WriteThenDelete(*leader));
    ASSERT_TRUE(SqliteStore::Open(path_, 5).ok());
    if (clock_went_back) Sql("UPDATE meta SET value = 1 WHERE key = 'made_at'");
    // The leader's renewal follows the new file; its lease is gone there: taken at epoch 1.
    (void)leader->WriteLease(kLeaseA, std::uint64_t{1});
    const Lease fresh{.holder = "a", .epoch = 1, .version = 2, .duration_ms = 10'000};
    ASSERT_TRUE(leader->WriteLease(fresh, std::nullopt).ok());
    auto seen = (*standby)->ReadLease();  // every cycle
    ASSERT_TRUE(seen.ok());
    EXPECT_EQ((*seen)->version, 2u) << "the standby reads the deleted file's lease";
    // After a lease, it tries to take over (on the version it saw).
    const Lease take{.holder = "b", .epoch = 2, .version = 3, .duration_ms = 10'000};
    auto taken = (*standby)->WriteLease(take, (*seen)->version);
    EXPECT_TRUE(taken.ok() || taken.error().code == ErrorCode::kConflict)
        << (taken.ok() ? "" : taken.error().message);
  }

  static Slot Enabled(int id, std::string address, int weight) {
    Slot slot;
    slot.id = id;
    slot.status = SlotStatus::kEnabled;
    slot.target.address = std::move(address);
    slot.target.name = "web-" + std::to_string(id);
    slot.target.group = "asg-a";
    slot.weight = weight;
    slot.last_weight_update =
        WallTime{std::chrono::seconds{1'700'000'000}} + std::chrono::microseconds{123456};
    return slot;
  }

  // The store as an orchestrator leaves it after its first write (generation 1, slot 2).
  std::unique_ptr<SqliteStore> WrittenOnce() {
    auto store = Open();
    EXPECT_TRUE(store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0).ok());
    return store;
  }

  testing::TempDir dir_;
  std::string path_ = dir_.File("sub/hsdo.db");  // the store creates missing directories
};

TEST_F(SqliteStoreTest, NewStoreIsAnEmptyTableAtGenerationZero) {
  auto store = Open();
  EXPECT_EQ(*store->ReadGeneration(), 0u);
  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->generation, 0u);
  EXPECT_EQ(table->slots, SlotTable::Empty(5).slots);
}

TEST_F(SqliteStoreTest, WriteRoundTripsAndBumpsTheGeneration) {
  auto store = Open();
  Slot with_port = Enabled(2, "2001:db8::7", 3);
  with_port.target.port = 8080;
  with_port.target.az = "eu-west-1b";
  const std::vector<Slot> changed = {Enabled(1, "10.0.0.1", 1), with_port};
  auto generation = store->WriteSlots(changed, 4, 0);
  ASSERT_TRUE(generation.ok()) << generation.error().message;
  EXPECT_EQ(*generation, 1u);
  EXPECT_EQ(*store->ReadGeneration(), 1u);

  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->generation, 1u);
  EXPECT_EQ(table->overflow, 4);
  EXPECT_EQ(table->slots[0], changed[0]);
  EXPECT_EQ(table->slots[1], changed[1]);
  EXPECT_EQ(table->slots[2], Slot::Free(3));

  // Freeing a slot writes the seed's free form.
  const std::vector<Slot> freed = {Slot::Free(1)};
  ASSERT_EQ(*store->WriteSlots(freed, 0, 1), 2u);
  EXPECT_EQ(store->ReadTable()->slots[0], Slot::Free(1));
}

TEST_F(SqliteStoreTest, StaleGenerationIsAConflict) {
  auto store = Open();
  const std::vector<Slot> changed = {Enabled(1, "10.0.0.1", 1)};
  ASSERT_TRUE(store->WriteSlots(changed, 0, 0).ok());
  auto stale = store->WriteSlots(changed, 0, 0);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_EQ(*store->ReadGeneration(), 1u);
}

// The orchestrator's held removal is stored in the write that carries it, read back with the
// table (by a reader too), left as it is by a write that does not say (`hsdo set-state`),
// cleared by one that says none, and never stored by a write that is refused.
TEST_F(SqliteStoreTest, TheRemovalHoldIsWrittenWithTheTableOrNotAtAll) {
  auto store = Open();
  const HeldRemoval hold{.slots = {1, 2, 3}, .base = 3};
  const std::vector<Slot> changed = {Enabled(4, "10.0.0.4", 1)};
  ASSERT_EQ(*store->WriteSlots(changed, 0, 0, hold), 1u);
  EXPECT_EQ(store->ReadTable()->removal_hold, hold);
  auto reader = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  EXPECT_EQ((*reader)->ReadTable()->removal_hold, hold);

  ASSERT_EQ(*store->WriteSlots(changed, 0, 1), 2u);  // set-state
  EXPECT_EQ(store->ReadTable()->removal_hold, hold);
  const HeldRemoval other{.slots = {2}, .base = 5};
  EXPECT_EQ(store->WriteSlots(changed, 0, 1, other).error().code, ErrorCode::kConflict);
  EXPECT_EQ(store->ReadTable()->removal_hold, hold);
  store->SetFence(Fence{.holder = "a", .epoch = 1}, {});  // no lease: refused
  EXPECT_EQ(store->WriteSlots(changed, 0, 2, other).error().code, ErrorCode::kConflict);
  store->SetFence(std::nullopt, {});
  EXPECT_EQ(store->ReadTable()->removal_hold, hold);
  ASSERT_EQ(*store->WriteSlots(changed, 0, 2, HeldRemoval{}), 3u);
  EXPECT_EQ(store->ReadTable()->removal_hold, HeldRemoval{});
  EXPECT_EQ((*reader)->ReadTable()->removal_hold, HeldRemoval{});
}

// A value that is no hold (written by hand, or by something else) reads as none, said once.
TEST_F(SqliteStoreTest, ARemovalHoldThatDoesNotParseIsNone) {
  auto store = WrittenOnce();
  Sql("INSERT INTO removal_hold (id, value) VALUES (1, '3:2-1')");
  testing::LogCapture logs;
  EXPECT_EQ(store->ReadTable()->removal_hold, HeldRemoval{});
  EXPECT_EQ(store->ReadTable()->removal_hold, HeldRemoval{});
  EXPECT_EQ(logs.Count("RemovalHold is not a removal hold of slots 1-5 ('3:2-1'): read as none"), 1)
      << logs.text();
}

TEST_F(SqliteStoreTest, RowsUseTheSeedLayout) {
  auto store = Open();
  const std::vector<Slot> changed = {Enabled(1, "10.0.0.1", 7), Slot::Free(2)};
  ASSERT_TRUE(store->WriteSlots(changed, 0, 0).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT IPAddress, ServerName, ASG, Weight, BackendServerStatus,"
                               " LastWeightUpdate FROM slots ORDER BY BackendServerID",
                               -1, &stmt, nullptr),
            SQLITE_OK);
  const auto row = [&] {
    std::vector<std::string> values;
    for (int i = 0; i < 6; ++i) {
      values.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(stmt, i)));
    }
    return values;
  };
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(row(), (std::vector<std::string>{"10.0.0.1", "web-1", "asg-a", "7", "enabled",
                                             "2023-11-14 22:13:20.123456"}));
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(row(), (std::vector<std::string>{"none", "none", "none", "0", "disabled",
                                             "0-0-0 00:00:00.000000"}));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(SqliteStoreTest, InvalidRowsReadAsFreeSlots) {
  auto store = Open();
  InsertRawRows(
      "(1, '1.2.3.4; shutdown sessions server be/srv1', 'x', 'g', 5, 'enabled',"
      "  '2024-01-01 00:00:00.000000', NULL, NULL),"
      " (2, 'not-an-ip', 'x', 'g', 5, 'enabled', '', NULL, NULL),"
      " (3, '10.0.0.3', 'x', 'g', 999, 'enabled', '', NULL, NULL),"
      " (4, '10.0.0.4', 'x', 'g', 5, 'enabled', '', 70000, NULL),"
      " (5, '10.0.0.5', 'x', 'g', 5, 'enabled', '', 80, NULL)");
  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok());
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(table->slots[i].enabled()) << "slot " << i + 1;
  EXPECT_TRUE(table->slots[4].enabled());
  EXPECT_EQ(table->slots[4].target.port, 80);
}

// Issue 8.8: SQLite used to coerce (Weight 'abc' gave an enabled slot at weight 0, Port
// '80;...' gave port 80). Its values are now read as strictly as DynamoDB's, by the same codec.
TEST_F(SqliteStoreTest, ValuesAreNotCoercedButReadAsFreeAndCounted) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSlots(std::vector<Slot>{Enabled(5, "10.0.0.5", 3)}, 0, 0).ok());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(
                db,
                "INSERT OR REPLACE INTO slots (BackendServerID, IPAddress, ServerName, ASG, Weight,"
                " BackendServerStatus, LastWeightUpdate, Port, AZ) VALUES"
                " (1, '10.0.0.1', 'x', 'g', 'abc', 'enabled', '', NULL, NULL),"
                " (2, '10.0.0.2', 'x', 'g', 5, 'enabled', '', '80;shutdown', NULL),"
                " (3, '10.0.0.3', 'x', 'g', 5.5, 'enabled', '', NULL, NULL),"
                " (4, '10.0.0.4', 'x', 'g', 5, 'enabled', '', X'50', NULL)",
                nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok());
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(table->slots[i].enabled()) << "slot " << i + 1;
  EXPECT_TRUE(table->slots[4].enabled());
  EXPECT_EQ(table->invalid_records, 4);
}

// Found in review: a row with an invalid id (0) sorted before record 1, the generation went
// on a made-up record 1 that the real one then overwrote, and the table read without its
// generation: every write of the orchestrator then conflicted, for good. It is counted and
// skipped, and the generation stays with record 1.
TEST_F(SqliteStoreTest, ARowWithAnInvalidIdLeavesTheGenerationAndTheWritesAlone) {
  auto store = Open();
  ASSERT_TRUE(store->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 3)}, 0, 0).ok());
  InsertRawRows("(0, '10.0.0.9', 'x', 'g', 5, 'enabled', '', NULL, NULL)");
  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->generation, 1u);
  EXPECT_EQ(table->invalid_records, 1);
  EXPECT_TRUE(table->slots[0].enabled());
  EXPECT_TRUE(store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 3)}, 0, 1).ok());
}

// Every invalid form of the codec's list, stored in a row with the form's own type: SQLite
// refuses exactly what the codec refuses (absent attributes are NULLs, which only the
// nullable columns can hold).
TEST_F(SqliteStoreTest, EveryInvalidFormOfTheCodecIsReadAsFree) {
  auto store = Open(1);
  int checked = 0;
  for (const auto& form : testing::InvalidForms()) {
    if (form.converted_by_sqlite) continue;
    if (form.remove && form.attribute != "Port" && form.attribute != "AZ") continue;
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(
            db,
            "INSERT OR REPLACE INTO slots (BackendServerID, IPAddress, ServerName, ASG, Weight,"
            " BackendServerStatus, LastWeightUpdate, Port, AZ)"
            " VALUES (1, '10.0.0.1', 'web', 'g', 5,"
            " 'enabled', '2024-01-01 00:00:00.000000', 80, 'eu-west-1a')",
            nullptr, nullptr, nullptr),
        SQLITE_OK);
    const std::string sql = "UPDATE slots SET " + form.attribute + " = ? WHERE BackendServerID = 1";
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
    switch (form.value.type) {
      case AttributeValue::Type::kString:
        sqlite3_bind_text(stmt, 1, form.value.text.c_str(), -1, SQLITE_TRANSIENT);
        break;
      case AttributeValue::Type::kNumber:
        if (form.value.text.find('.') != std::string::npos) {
          sqlite3_bind_double(stmt, 1, std::stod(form.value.text));
        } else {
          sqlite3_bind_int64(stmt, 1, std::stoll(form.value.text));
        }
        break;
      case AttributeValue::Type::kOther:
        sqlite3_bind_blob(stmt, 1, "x", 1, SQLITE_TRANSIENT);
        break;
    }
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_DONE) << sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    auto table = store->ReadTable();
    ASSERT_TRUE(table.ok());
    EXPECT_FALSE(table->slots[0].enabled()) << form.attribute << "=" << form.value.text;
    EXPECT_EQ(table->invalid_records, 1) << form.attribute << "=" << form.value.text;
    ++checked;
  }
  EXPECT_GT(checked, 15);
}

TEST_F(SqliteStoreTest, ReadOnlyReadsButNeverCreatesNorWrites) {
  const std::string missing = dir_.File("nodir/hsdo.db");
  auto absent = SqliteStore::Open(missing, 5, SqliteOpenMode::kReadOnly);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(missing).parent_path()));

  {
    auto writer = Open();
    ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 4)}, 0, 0).ok());
  }  // closed: the WAL is checkpointed and its files removed
  auto reader = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  EXPECT_EQ(*(*reader)->ReadGeneration(), 1u);
  EXPECT_EQ((*reader)->ReadTable()->slots[1].weight, 4);
  auto write = (*reader)->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 4)}, 0, 1);
  EXPECT_FALSE(write.ok());
  // A writer that opens later is seen by the read-only reader.
  auto writer = Open();
  ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 4)}, 0, 1).ok());
  EXPECT_EQ(*(*reader)->ReadGeneration(), 2u);
  EXPECT_TRUE((*reader)->ReadTable()->slots[2].enabled());

  // A file that is not an hsdo store is refused, not set up. A database without its tables
  // (an empty file too) is a store being made, not found yet; a file that is no database is an
  // error, never "no store": `hsdo status` printed an all-free table, exit 0, for it.
  const std::string other = dir_.File("other.db");
  { std::ofstream(other) << ""; }
  auto empty = SqliteStore::Open(other, 5, SqliteOpenMode::kReadOnly);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code, ErrorCode::kNotFound);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(other.c_str(), &db), SQLITE_OK);
    sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  auto foreign = SqliteStore::Open(other, 5, SqliteOpenMode::kReadOnly);
  ASSERT_FALSE(foreign.ok());
  EXPECT_EQ(foreign.error().code, ErrorCode::kUnavailable) << foreign.error().message;
  EXPECT_THAT(foreign.error().message, ::testing::HasSubstr("holds another table (t)"));
  { std::ofstream(other) << "garbage, not a database"; }
  auto garbage = SqliteStore::Open(other, 5, SqliteOpenMode::kReadOnly);
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code, ErrorCode::kUnavailable) << garbage.error().message;
  EXPECT_THAT(garbage.error().message,
              ::testing::HasSubstr("cannot be read as an hsdo SQLite store"));
}

TEST_F(SqliteStoreTest, DrainingSlotsAndOverridesRoundTrip) {
  auto store = Open();
  Slot draining = Enabled(1, "10.0.0.1", 5);
  draining.status = SlotStatus::kDraining;
  draining.drain_since = WallTime{std::chrono::seconds{1'700'000'100}};
  draining.admin = AdminState::kMaint;
  Slot overridden = Enabled(2, "10.0.0.2", 3);
  overridden.admin = AdminState::kDrain;
  ASSERT_TRUE(store->WriteSlots(std::vector<Slot>{draining, overridden}, 0, 0).ok());
  auto table = store->ReadTable();
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->slots[0], draining);
  EXPECT_EQ(table->slots[1], overridden);
  // Clearing both (the target is back, `ready`) removes the attributes.
  ASSERT_TRUE(store
                  ->WriteSlots(
                      std::vector<Slot>{Enabled(1, "10.0.0.1", 5), Enabled(2, "10.0.0.2", 3)}, 0, 1)
                  .ok());
  table = store->ReadTable();
  EXPECT_EQ(table->slots[0], Enabled(1, "10.0.0.1", 5));
  EXPECT_EQ(table->slots[1], Enabled(2, "10.0.0.2", 3));
}

// A store made by an hsdo before issue 10: the slots table without DrainingSince/AdminState.
void MakeOldStore(const std::string& path) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TABLE slots (BackendServerID INTEGER PRIMARY KEY,"
                         " IPAddress TEXT NOT NULL DEFAULT 'none', ServerName TEXT NOT NULL"
                         " DEFAULT 'none', ASG TEXT NOT NULL DEFAULT 'none', Weight INTEGER NOT"
                         " NULL DEFAULT 0, BackendServerStatus TEXT NOT NULL DEFAULT 'disabled',"
                         " LastWeightUpdate TEXT NOT NULL DEFAULT '0-0-0 00:00:00.000000',"
                         " Port INTEGER, AZ TEXT);"
                         "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
                         "INSERT INTO meta VALUES ('generation', 3), ('overflow', 0);"
                         "INSERT INTO slots (BackendServerID, IPAddress, ServerName, ASG, Weight,"
                         " BackendServerStatus, LastWeightUpdate, Port, AZ)"
                         " VALUES (1, '10.0.0.1', 'web-1', 'asg-a', 6, 'enabled',"
                         " '2023-11-14 22:13:20.123456', NULL, NULL);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
}

std::vector<std::string> ColumnNames(const std::string& path) {
  sqlite3* db = nullptr;
  std::vector<std::string> names;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return names;
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "SELECT name FROM pragma_table_info('slots')", -1, &stmt, nullptr);
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    names.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return names;
}

TEST_F(SqliteStoreTest, AnOlderStoreIsReadReadOnlyAndMigratedByTheOrchestrator) {
  MakeOldStore(path_);
  // An agent reads it as it is, and changes nothing.
  auto reader = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  auto table = (*reader)->ReadTable();
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->generation, 3u);
  EXPECT_EQ(table->slots[0], Enabled(1, "10.0.0.1", 6));
  EXPECT_EQ(ColumnNames(path_).size(), 9u);

  // The orchestrator adds the columns and keeps the rows.
  auto writer = Open();
  const auto names = ColumnNames(path_);
  EXPECT_NE(std::find(names.begin(), names.end(), "DrainingSince"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "AdminState"), names.end());
  EXPECT_EQ(writer->ReadTable()->slots[0], Enabled(1, "10.0.0.1", 6));
  Slot draining = Enabled(1, "10.0.0.1", 6);
  draining.status = SlotStatus::kDraining;
  draining.drain_since = WallTime{std::chrono::seconds{1'700'000'100}};
  ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{draining}, 0, 3).ok());
  // The reader opened before the migration sees the new attributes.
  table = (*reader)->ReadTable();
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->slots[0], draining);
  // Opening again changes nothing.
  writer.reset();
  EXPECT_EQ(Open()->ReadTable()->slots[0], draining);
}

// A lease table made before its renewal time was stored (`hsdo status` could not tell a
// lease nobody renews from a live one): read as 0 read-only; the column is added read-write.
TEST_F(SqliteStoreTest, ALeaseStoredBeforeItsRenewalTimeIsReadAndMigrated) {
  MakeOldStore(path_);
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(
        sqlite3_exec(db,
                     "CREATE TABLE lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL,"
                     " epoch INTEGER NOT NULL, version INTEGER NOT NULL, duration_ms"
                     " INTEGER NOT NULL, since_ms INTEGER NOT NULL);"
                     "INSERT INTO lease VALUES ('leader', 'a/1', 2, 7, 10000, 1700000000000);",
                     nullptr, nullptr, nullptr),
        SQLITE_OK);
    sqlite3_close(db);
  }
  auto reader = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  auto old = (*reader)->ReadLease();
  ASSERT_TRUE(old.ok()) << old.error().message;
  ASSERT_TRUE(old->has_value());
  EXPECT_EQ(**old, (Lease{.holder = "a/1",
                          .epoch = 2,
                          .version = 7,
                          .duration_ms = 10'000,
                          .since_unix_ms = 1'700'000'000'000}));

  auto writer = Open();
  const Lease renewed{.holder = "a/1",
                      .epoch = 2,
                      .version = 8,
                      .duration_ms = 10'000,
                      .since_unix_ms = 1'700'000'000'000,
                      .renewed_unix_ms = 1'700'000'123'000};
  auto written = writer->WriteLease(renewed, std::uint64_t{7});
  ASSERT_TRUE(written.ok()) << written.error().message;
  EXPECT_EQ(**writer->ReadLease(), renewed);
  EXPECT_EQ(**(*reader)->ReadLease(), renewed);
}

// Found in review: they were dropped in silence, so an agent configured with a smaller list
// size than the orchestrator's left them out of its HAProxy and said nothing. They are counted.
TEST_F(SqliteStoreTest, SlotsBeyondTheListSizeAreLeftOutAndCounted) {
  auto big = Open(8);
  const std::vector<Slot> changed = {Enabled(6, "10.0.0.6", 1), Enabled(7, "10.0.0.7", 1)};
  ASSERT_TRUE(big->WriteSlots(changed, 0, 0).ok());
  auto small = Open(5);
  const auto table = small->ReadTable();
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->slots.size(), 5u);
  EXPECT_EQ(table->BeyondListSize(), 2);
  EXPECT_EQ(table->HighestBeyond(), 7);
  EXPECT_EQ(big->ReadTable()->BeyondListSize(), 0);
  // (SQLite reads whole at every change; DynamoDB's delta read once left them as the last
  // whole read had them: DynamoDbStore.AChangeAboveTheListSizeIsReadWhole.)
  const Slot freed = Slot::Free(7);
  ASSERT_TRUE(big->WriteSlots(std::span<const Slot>(&freed, 1), 0, *big->ReadGeneration()).ok());
  const auto after = small->ReadTable();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->BeyondListSize(), 1);
  EXPECT_EQ(after->HighestBeyond(), 6);
  EXPECT_TRUE(after->invalid_above.empty());
  // A record up there that cannot be read is listed apart (the agent leaves its server).
  InsertRawRows("(8, 'not-an-ip', 'x', 'g', 5, 'enabled', '', NULL, NULL)");
  testing::LogCapture logs;
  EXPECT_EQ(small->ReadTable()->invalid_above, std::vector<int>{8});
  EXPECT_EQ(logs.Count("slot 8 is invalid"), 1) << logs.text();  // said, not silent
}

// An agent reading while the orchestrator writes sees whole writes only: every slot of a
// table it reads carries the weight of the same write, which is the generation.
TEST_F(SqliteStoreTest, ReaderWhileWriterWritesSeesConsistentSnapshots) {
  constexpr int kSize = 20;
  constexpr int kWrites = 300;
  auto writer = Open(kSize);
  auto reader = Open(kSize);
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::string failure;

  std::thread reading([&] {
    std::uint64_t last = 0;
    while (!done.load()) {
      auto table = reader->ReadTable();
      if (!table.ok()) {
        failure = table.error().message;
        return;
      }
      ++reads;
      if (table->generation < last) {
        failure = "generation went backwards";
        return;
      }
      last = table->generation;
      for (const auto& slot : table->slots) {
        const int expected = static_cast<int>(table->generation % 200);
        if (table->generation > 0 && slot.weight != expected) {
          failure = "torn read at generation " + std::to_string(table->generation);
          return;
        }
      }
    }
  });

  for (int gen = 1; gen <= kWrites; ++gen) {
    std::vector<Slot> changed;
    for (int id = 1; id <= kSize; ++id) changed.push_back(Enabled(id, "10.0.0.1", gen % 200));
    auto result = writer->WriteSlots(changed, 0, static_cast<std::uint64_t>(gen - 1));
    ASSERT_TRUE(result.ok()) << result.error().message;
  }
  done = true;
  reading.join();
  EXPECT_EQ(failure, "");
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(*reader->ReadGeneration(), static_cast<std::uint64_t>(kWrites));
}

// An agent's store watching `path`: records the generation that each notification sees (read
// through a connection of its own, as the agent's cycle would).
class WatchingAgent {
 public:
  explicit WatchingAgent(const std::string& path)
      : reader_(OpenReadOnly(path)), agent_(OpenReadOnly(path)) {
    watching_ = reader_ && agent_ && agent_->Watch([this] {
      auto generation = reader_->ReadGeneration();
      std::lock_guard lock(mutex_);
      seen_.push_back(generation ? *generation : 0);
    });
  }
  bool watching() const { return watching_; }
  bool sees_every_write() const { return agent_->WatchSeesEveryWrite(); }
  std::vector<std::uint64_t> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  // Waits (up to `timeout`) until a notification saw `generation`, or any when it is nullopt.
  bool WaitFor(std::optional<std::uint64_t> generation = std::nullopt,
               std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto now_seen = seen();
      if (!now_seen.empty() && (!generation || now_seen.back() == *generation)) return true;
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
  }

 private:
  static std::unique_ptr<SqliteStore> OpenReadOnly(const std::string& path) {
    auto store = SqliteStore::Open(path, 5, SqliteOpenMode::kReadOnly);
    return store ? std::move(*store) : nullptr;
  }

  // Destroyed in reverse order: agent_ first, which stops its watcher, whose callback uses
  // every other member (a notification can come in until then).
  std::unique_ptr<SqliteStore> reader_;
  std::mutex mutex_;
  std::vector<std::uint64_t> seen_;
  bool watching_ = false;
  std::unique_ptr<SqliteStore> agent_;
};

// A write that spills pages to the -wal before it commits (a small cache, a big transaction)
// and bumps the generation, left open: the caller commits.
constexpr const char* kSpillThenBumpGeneration =
    "PRAGMA cache_size=2; BEGIN IMMEDIATE;"
    " CREATE TABLE filler (x);"
    " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
    " WHERE i < 2000) INSERT INTO filler SELECT randomblob(300) FROM n;"
    " UPDATE meta SET value = value + 1 WHERE key = 'generation';";

// An orchestrator and its agents starting together all open (and set up) a new file at once.
// A writer whose transaction spills pages to the -wal before it commits (or that fsyncs the
// -wal for a long time) wakes the watcher before its commit is visible. The watcher waits
// while another process holds SQLite's write lock, so its first notification sees the write.
// The writer is a child process (a lock held by this process would not show), paused between
// its spill and its commit until this test lets it go on.
TEST_F(SqliteStoreTest, TheWatcherNotifiesOnlyOnceAnotherProcesssCommitIsVisible) {
  auto orchestrator = WrittenOnce();
  int go[2];
  int spilled[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(spilled), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(go[1]);
    ::close(spilled[0]);
    char byte = 0;
    pollfd wait_go{.fd = go[0], .events = POLLIN, .revents = 0};  // bounded: 10 s
    sqlite3* db = nullptr;
    bool ok = sqlite3_open(path_.c_str(), &db) == SQLITE_OK &&
              sqlite3_exec(db, kSpillThenBumpGeneration, nullptr, nullptr, nullptr) == SQLITE_OK;
    ok = ok && ::write(spilled[1], "s", 1) == 1 && ::poll(&wait_go, 1, 10'000) == 1 &&
         ::read(go[0], &byte, 1) == 1;
    ok = ok && sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK;
    sqlite3_close(db);
    ::_exit(ok ? 0 : 1);
  }
  ::close(go[0]);
  ::close(spilled[1]);
  WatchingAgent agent(path_);
  ASSERT_TRUE(agent.watching());
  char byte = 0;
  ASSERT_EQ(::read(spilled[0], &byte, 1), 1);  // the -wal holds uncommitted frames now
  ASSERT_TRUE(std::filesystem::file_size(path_ + "-wal") > 0);
  // Long enough for a watcher that does not wait to have notified (its settle is 2 ms).
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(::write(go[1], "g", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(agent.WaitFor()) << "no notification";
  EXPECT_EQ(agent.seen().front(), 2u) << "notified before the commit was visible";
  ::close(go[1]);
  ::close(spilled[0]);
}

// A writer in this process (tests; an agent's own node report) holds the same WAL write lock,
// which a plain F_GETLK does not show to its own process: the watcher must still wait for the
// commit, and then notify once, without confirmations (five wake-ups per write before).
TEST_F(SqliteStoreTest, TheWatcherWaitsForAWriterOfItsOwnProcessAndNotifiesOnce) {
  auto orchestrator = WrittenOnce();
  WatchingAgent agent(path_);
  ASSERT_TRUE(agent.watching());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, kSpillThenBumpGeneration, nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_TRUE(std::filesystem::file_size(path_ + "-wal") > 0);  // uncommitted frames
  // Long enough for a watcher that does not wait to have notified (its settle is 2 ms).
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_TRUE(agent.WaitFor()) << "no notification";
  EXPECT_EQ(agent.seen().front(), 2u) << "notified before the commit was visible";
  // Past the first three confirmations a watcher in doubt would send (25, 75, 175 ms).
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(agent.seen().size(), 1u);
  // Closed only now: closing may checkpoint the -wal file, a write of its own that notifies.
  sqlite3_close(db);
}

// Every connection SQLite opens as root `fchown`s the -wal file at its first read, before it
// takes a lock: `hsdo status`, another agent starting, or a writer about to begin. None of them
// may wake an agent (the last was the flake of the test above on a loaded machine: a
// notification at generation 1, before the writer took its lock).
TEST_F(SqliteStoreTest, ANewConnectionReadingTheStoreNotifiesNoOne) {
  auto orchestrator = WrittenOnce();
  WatchingAgent agent(path_);
  ASSERT_TRUE(agent.watching());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "SELECT * FROM meta", nullptr, nullptr, nullptr), SQLITE_OK);
  auto status = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  ASSERT_TRUE(status.ok());
  ASSERT_TRUE((*status)->ReadTable().ok());
  // Past the settle delay and the first confirmation.
  EXPECT_FALSE(agent.WaitFor(std::nullopt, 200ms));
  sqlite3_close(db);
}

// The watch is on the store's directory. Once that directory is moved away (or removed), a
// store made again at the path may lie in a directory no watch covers: the agent must read the
// store at every cycle, not wait for a notification, until that directory is watched.
TEST_F(SqliteStoreTest, AStoreWhoseDirectoryIsMovedAwayIsPolledUntilItsPathIsWatchedAgain) {
  auto orchestrator = WrittenOnce();
  WatchingAgent agent(path_);
  ASSERT_TRUE(agent.watching());
  EXPECT_TRUE(agent.sees_every_write());
  std::filesystem::rename(dir_.File("sub"), dir_.File("old"));
  ASSERT_TRUE(agent.WaitFor()) << "no notification";
  EXPECT_FALSE(agent.sees_every_write());

  auto made_again = Open();  // makes the directory again
  for (std::uint64_t g = 0; g < 3; ++g) {
    ASSERT_TRUE(made_again->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1)}, 0, g));
  }
  EXPECT_TRUE(agent.WaitFor(3)) << "the new store was not seen";
  EXPECT_TRUE(agent.sees_every_write());
}

TEST_F(SqliteStoreTest, ManyConnectionsOpeningANewFileAtOnceAllSucceed) {
  for (int round = 0; round < 20; ++round) {
    const std::string path = dir_.File("race" + std::to_string(round) + ".db");
    std::vector<std::thread> openers;
    std::atomic<int> failures{0};
    std::string failure;
    std::mutex mutex;
    for (int i = 0; i < 6; ++i) {
      openers.emplace_back([&] {
        auto store = SqliteStore::Open(path, 5);
        if (!store.ok() || !(*store)->ReadTable().ok()) {
          ++failures;
          std::lock_guard lock(mutex);
          if (!store.ok()) failure = store.error().message;
        }
      });
    }
    for (auto& t : openers) t.join();
    ASSERT_EQ(failures.load(), 0) << "round " << round << ": " << failure;
  }
}

// Found in review: a typo in the orchestrator's SQLITE_PATH made a second, empty store without
// a word (agents kept reading the old one, which nobody wrote any more).
// A missing store used to be made by the orchestrator, with a warning: a mistyped or deleted
// SQLITE_PATH then had every target placed again. Only `hsdo init-table` (kCreate) makes one.
// Found in review: a SIGTERM that came while another process held the file's write lock (an
// `sqlite3` shell, a backup) waited out SQLite's busy timeout, 5 s, twice (the write, then the
// lease's release): as long as systemd waits before it kills. A stop now ends the wait; without
// one, a write still waits for the lock and goes through once it is released.
TEST_F(SqliteStoreTest, AStopEndsTheWaitForAnotherConnectionsLock) {
  WrittenOnce().reset();
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  const std::unique_ptr<sqlite3, int (*)(sqlite3*)> closer(other, sqlite3_close);
  const std::vector<Slot> slot{Enabled(3, "10.0.0.3", 1)};

  std::stop_source stop;
  auto stopped = SqliteStore::Open(path_, 5, SqliteOpenMode::kWrite, stop.get_token());
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
  auto waiting = SqliteStore::Open(path_, 5, SqliteOpenMode::kWrite);
  ASSERT_TRUE(waiting.ok()) << waiting.error().message;
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  const auto start = std::chrono::steady_clock::now();
  std::jthread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop.request_stop();
  });
  EXPECT_FALSE((*stopped)->WriteSlots(slot, 0, 1).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);  // the busy timeout is 5 s
  stopper.join();

  std::jthread releaser([&] {
    std::this_thread::sleep_for(300ms);
    sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  });
  auto written = (*waiting)->WriteSlots(slot, 0, 1);
  EXPECT_TRUE(written.ok()) << written.error().message;
}

// Review: a reader that followed its path to a store made again kept the new connection's
// busy handler pointing at the object that had opened it, freed by then: the next lock it met
// waited in freed memory (a crash under valgrind), and without the stop that ends the wait.
TEST_F(SqliteStoreTest, AReaderThatFollowedAReplacedFileStillEndsItsWaitOnAStop) {
  WrittenOnce().reset();
  std::stop_source stop;
  auto reader = SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly, stop.get_token());
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  ASSERT_EQ(*(*reader)->ReadGeneration(), 1u);
  // A backup restored over the store: another file, in rollback-journal mode, at generation 3.
  const std::string copy = dir_.File("sub/restored.db");
  {
    auto restored = SqliteStore::Open(copy, 5);
    ASSERT_TRUE(restored.ok()) << restored.error().message;
    for (std::uint64_t generation = 0; generation < 3; ++generation) {
      ASSERT_TRUE(
          (*restored)->WriteSlots(std::vector<Slot>{Enabled(4, "10.0.0.4", 2)}, 0, generation));
    }
  }
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(copy.c_str(), &other), SQLITE_OK);
  const std::unique_ptr<sqlite3, int (*)(sqlite3*)> closer(other, sqlite3_close);
  ASSERT_EQ(sqlite3_exec(other, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr),
            SQLITE_OK);
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  std::filesystem::rename(copy, path_);
  ASSERT_EQ(*(*reader)->ReadGeneration(), 3u);  // followed
  // A writer's exclusive lock keeps readers out in that mode; the stop ends their wait.
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE; UPDATE meta SET value = value;", nullptr, nullptr,
                         nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(other);
  stop.request_stop();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE((*reader)->ReadTable().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 4s);  // the busy timeout is 5 s
  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
}

TEST_F(SqliteStoreTest, AWriterNeverMakesTheStore) {
  auto missing = SqliteStore::Open(path_, 5, SqliteOpenMode::kWrite);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message.find("hsdo init-table"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path_));
  Open();
  EXPECT_TRUE(SqliteStore::Open(path_, 5, SqliteOpenMode::kWrite).ok());
}

TEST_F(SqliteStoreTest, WithoutCreateAMissingFileIsNotFoundAndNotCreated) {
  auto store = SqliteStore::Open(path_, 5, /*create=*/false);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(path_));
  Open();  // created by a writer
  EXPECT_TRUE(SqliteStore::Open(path_, 5, /*create=*/false).ok());
}

// Found in review: a store this user cannot look for (in /var/lib/hsdo, mode 0750, without
// sudo) was "no store", and `hsdo status` printed an all-free table with exit code 0. A name
// too long for the file system fails the same check as a permission denied (the tests run as
// root, which enters any directory).
TEST_F(SqliteStoreTest, AStoreThatCannotBeLookedForIsAnErrorNotAMissingStore) {
  const std::string hidden = dir_.File(std::string(300, 'x')) + "/hsdo.db";
  auto store = SqliteStore::Open(hidden, 5, /*create=*/false);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, ErrorCode::kUnavailable) << store.error().message;
  EXPECT_NE(store.error().message.find("cannot look for"), std::string::npos);
}

// Found in review: a SQLITE_PATH whose directory cannot be made exited 1 (restarted every 2 s
// by systemd) with a message that did not name the variable.
TEST_F(SqliteStoreTest, ADirectoryThatCannotBeMadeIsAConfigurationError) {
  const std::string file = dir_.File("a-file");
  std::ofstream(file) << "x";
  auto store = SqliteStore::Open(file + "/sub/hsdo.db", 5, /*create=*/true);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, ErrorCode::kInvalidArgument) << store.error().message;
  EXPECT_NE(store.error().message.find("SQLITE_PATH="), std::string::npos);
}

// An agent keeps its connection for days: when the store is made again at its path (deleted
// and recreated by a restarted orchestrator) or restored from a copy, the agent must read the
// new file, not the one it opened; while nothing or no store is at the path, the old one.
TEST_F(SqliteStoreTest, AReaderFollowsTheStoreMadeAgainAtItsPathAndKeepsItsFileMeanwhile) {
  auto reader_or = [&] {
    auto writer = Open();
    EXPECT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 4)}, 0, 0).ok());
    EXPECT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 4)}, 0, 1).ok());
    return SqliteStore::Open(path_, 5, SqliteOpenMode::kReadOnly);
  }();
  ASSERT_TRUE(reader_or.ok()) << reader_or.error().message;
  auto& reader = **reader_or;
  ASSERT_EQ(*reader.ReadGeneration(), 2u);

  // Deleted: the reader reads on what it opened, without an error.
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  EXPECT_EQ(*reader.ReadGeneration(), 2u);
  EXPECT_EQ(reader.ReadTable()->slots[1].target.address, "10.0.0.2");
  // Something that is not a store at the path: the same.
  { std::ofstream(path_) << "not a database"; }
  EXPECT_EQ(*reader.ReadGeneration(), 2u);
  EXPECT_EQ(reader.ReadTable()->EnabledCount(), 2);
  std::filesystem::remove(path_);

  // Made again by an orchestrator: the reader reads the new table.
  {
    auto writer = Open();
    ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 7)}, 0, 0).ok());
    EXPECT_EQ(*reader.ReadGeneration(), 1u);
    auto table = reader.ReadTable();
    ASSERT_TRUE(table.ok()) << table.error().message;
    EXPECT_EQ(table->EnabledCount(), 1);
    EXPECT_EQ(table->slots[2].target.address, "10.0.0.3");
    // And the new file's later writes.
    ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(4, "10.0.0.4", 7)}, 0, 1).ok());
    EXPECT_EQ(*reader.ReadGeneration(), 2u);
  }

  // Replaced at once: another store renamed over the path (its -wal and -shm files removed
  // first; SQLite would otherwise read the old ones' pages as the new file's).
  const std::string copy = dir_.File("sub/restored.db");
  {
    auto restored = SqliteStore::Open(copy, 5);
    ASSERT_TRUE(restored.ok());
    for (std::uint64_t g = 0; g < 5; ++g)
      ASSERT_TRUE((*restored)->WriteSlots(std::vector<Slot>{Enabled(5, "10.0.0.5", 2)}, 0, g).ok());
  }  // closed: checkpointed, a single file
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  std::filesystem::rename(copy, path_);
  EXPECT_EQ(*reader.ReadGeneration(), 5u);
  EXPECT_EQ(reader.ReadTable()->slots[4].target.address, "10.0.0.5");
}

// The orchestrator keeps the file it opened: once that file is deleted or replaced, its writes
// would reach no agent started later (nor one that followed the new file), so it writes
// nothing and says why, table and lease alike.
TEST_F(SqliteStoreTest, AWriterWhoseFileIsDeletedOrReplacedWritesNothing) {
  auto writer = Open();
  ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 4)}, 0, 0).ok());
  ASSERT_TRUE(writer->WriteLease(kLeaseA, std::nullopt).ok());
  // A copy of this store (a backup), to be moved in below.
  const std::string copy = path_ + ".copy";
  {
    sqlite3* source = nullptr;
    sqlite3* dest = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &source), SQLITE_OK);
    ASSERT_EQ(sqlite3_open(copy.c_str(), &dest), SQLITE_OK);
    sqlite3_backup* backup = sqlite3_backup_init(dest, "main", source, "main");
    ASSERT_NE(backup, nullptr);
    EXPECT_EQ(sqlite3_backup_step(backup, -1), SQLITE_DONE);
    EXPECT_EQ(sqlite3_backup_finish(backup), SQLITE_OK);
    sqlite3_close(dest);
    sqlite3_close(source);
  }
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path_ + suffix);
  auto write = writer->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 4)}, 0, 1);
  ASSERT_FALSE(write.ok());
  EXPECT_EQ(write.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(write.error().message.find("was deleted or replaced"), std::string::npos)
      << write.error().message;
  EXPECT_FALSE(writer->WriteLease(kLeaseA, std::uint64_t{1}).ok());
  // A copy of the store it opened (made at the same time), written, moved in (whose table is
  // right is not known here): the same.
  std::filesystem::rename(copy, path_);
  std::error_code none;  // closed last, SQLite removed them
  for (const char* suffix : {"-wal", "-shm"}) {
    std::filesystem::rename(copy + suffix, path_ + suffix, none);
  }
  write = writer->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 4)}, 0, 1);
  ASSERT_FALSE(write.ok());
  EXPECT_NE(write.error().message.find("was deleted or replaced"), std::string::npos)
      << write.error().message;
  EXPECT_FALSE(writer->WriteLease(kLeaseA, std::uint64_t{1}).ok());
}

// Store-wipe review: an SQLite file deleted and made again by `hsdo init-table` was left alone
// by the orchestrator, whose documented recovery (a restart) planned from the empty store: every
// target moved. A store no orchestrator has written (generation 0, no lease) is followed: the
// leader fills it as a wiped store, with the table it holds.
TEST_F(SqliteStoreTest, AWriterFollowsAStoreMadeAgainThatNobodyWrote) {
  auto writer = Open();
  ASSERT_NO_FATAL_FAILURE(WriteThenDelete(*writer));
  auto made = SqliteStore::Open(path_, 5);  // `hsdo init-table`
  ASSERT_TRUE(made.ok());
  EXPECT_EQ(writer->ReadTable()->EnabledCount(), 0) << "reads the new file";
  EXPECT_FALSE(writer->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 4)}, 0, 1).ok())
      << "the new store is at generation 0";
  ASSERT_TRUE(writer->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 4)}, 0, 0).ok());
  ASSERT_TRUE(writer->WriteLease(kLeaseA, std::nullopt).ok());
  EXPECT_EQ((*made)->ReadTable()->slots[0].target.address, "10.0.0.1");
  EXPECT_EQ((*(*made)->ReadLease())->holder, "a");
}

// Review of 6a62921: two orchestrators on one SQLite store (a leader and a standby). The file is
// deleted and made again; the leader follows it first and writes its lease there. The standby
// read the lease from the deleted file (ReadLease did not follow), and followed only when it
// wrote; by then the new store had a lease row, so it was refused as a written store moved in,
// and the standby was stuck on the deleted file for good: it could never replace the leader.
// It follows at its lease reads, and a store made after the one it opened, written or not.
TEST_F(SqliteStoreTest, AStandbyFollowsAStoreMadeAgainThatTheLeaderWroteFirst) {
  ASSERT_NO_FATAL_FAILURE(StandbyFollowsAStoreMadeAgain(/*clock_went_back=*/false));
}

// Review of 306900d: `made_at` is wall time; a store made again while the host's clock was
// behind the first store's making was refused by a standby once the leader had written it
// (stuck for good again). A store made at another time than the one opened is followed.
TEST_F(SqliteStoreTest, AStandbyFollowsAStoreMadeAgainAfterTheClockWentBack) {
  ASSERT_NO_FATAL_FAILURE(StandbyFollowsAStoreMadeAgain(/*clock_went_back=*/true));
}

TEST_F(SqliteStoreTest, UnwritablePathIsAnError) {
  auto store = SqliteStore::Open("/proc/hsdo/none.db", 5);
  EXPECT_FALSE(store.ok());
}

}  // namespace
}  // namespace hsdo
