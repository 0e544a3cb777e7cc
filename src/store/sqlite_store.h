// SqliteStore: the slot table in an embedded SQLite file, for one host (the default when no
// DynamoDB table is named). WAL mode lets one orchestrator write while agents read.
// The columns mirror the seed's DynamoDB attributes (ARCHITECTURE.md, "Store layout").
#pragma once

#include <memory>
#include <string>

#include "common/file_watcher.h"
#include "store/slot_store.h"

struct sqlite3;

namespace hsdo {

class SqliteStore final : public SlotStore {
 public:
  // Opens the database at `path` for a table of `list_size` slots, creating it (and its
  // directory) when `create` is set, else failing with kNotFound when it does not exist.
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, int list_size,
                                                   bool create = true);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Result<std::uint64_t> ReadGeneration() override;
  Result<SlotTable> ReadTable() override;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation) override;
  bool Watch(std::function<void()> on_change) override;  // inotify on the db and -wal files

 private:
  SqliteStore(sqlite3* db, int list_size) : db_(db), list_size_(list_size) {}
  Result<void> Exec(const char* sql);

  sqlite3* db_;
  int list_size_;
  std::unique_ptr<FileWatcher> watcher_;
};

}  // namespace hsdo
