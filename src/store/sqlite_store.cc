#include "store/sqlite_store.h"

#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/python_time.h"
#include "common/validate.h"

namespace hsdo {

namespace {

// Seed attribute names as columns; Port and AZ are hsdo's additions. The meta table holds
// the generation (bumped in the same transaction as every write) and the overflow count.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS slots (
  BackendServerID     INTEGER PRIMARY KEY,
  IPAddress           TEXT    NOT NULL DEFAULT 'none',
  ServerName          TEXT    NOT NULL DEFAULT 'none',
  ASG                 TEXT    NOT NULL DEFAULT 'none',
  Weight              INTEGER NOT NULL DEFAULT 0,
  BackendServerStatus TEXT    NOT NULL DEFAULT 'disabled',
  LastWeightUpdate    TEXT    NOT NULL DEFAULT '0-0-0 00:00:00.000000',
  Port                INTEGER,
  AZ                  TEXT
);
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('overflow', 0);
)sql";

constexpr auto kBusyTimeoutMs = 5000;

// A prepared statement, finalized on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

Error SqlError(sqlite3* db, std::string_view what) {
  const int code = sqlite3_errcode(db);
  const bool transient = code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_IOERR;
  return MakeError(transient ? ErrorCode::kUnavailable : ErrorCode::kGeneric, "sqlite {}: {}", what,
                   sqlite3_errmsg(db));
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const auto* text = sqlite3_column_text(stmt, column);
  return text == nullptr ? std::string{} : reinterpret_cast<const char*>(text);
}

// Rolls back an open transaction unless committed.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {}
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  Result<void> Begin(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db_, "begin");
    }
    open_ = true;
    return Ok();
  }
  Result<void> Commit() {
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return SqlError(db_, "commit");
    }
    open_ = false;
    return Ok();
  }

 private:
  sqlite3* db_;
  bool open_ = false;
};

Result<std::uint64_t> ReadMeta(sqlite3* db, const char* key) {
  Statement stmt(db, "SELECT value FROM meta WHERE key = ?");
  if (!stmt.ok()) return SqlError(db, "prepare");
  sqlite3_bind_text(stmt.get(), 1, key, -1, SQLITE_STATIC);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_ROW) return static_cast<std::uint64_t>(sqlite3_column_int64(stmt.get(), 0));
  if (rc == SQLITE_DONE) return std::uint64_t{0};
  return SqlError(db, "read meta");
}

// A row → a slot. Rows are validated like any store item (invariant 5): a row that does not
// describe a valid enabled target reads as a free slot, with a warning.
Slot RowToSlot(sqlite3_stmt* stmt, int id) {
  const std::string status = ColumnText(stmt, 5);
  if (status != "enabled") return Slot::Free(id);
  Slot slot;
  slot.id = id;
  slot.status = SlotStatus::kEnabled;
  const std::string address = ColumnText(stmt, 1);
  const auto canonical = CanonicalIp(address);
  const auto weight = sqlite3_column_int64(stmt, 4);
  if (!canonical || weight < 0 || weight > 256) {
    spdlog::warn("sqlite store: slot {} has an invalid address or weight; read as free", id);
    return Slot::Free(id);
  }
  slot.target.address = *canonical;
  slot.target.name = ColumnText(stmt, 2);
  if (slot.target.name == "none") slot.target.name.clear();
  slot.target.group = ColumnText(stmt, 3);
  if (slot.target.group == "none") slot.target.group.clear();
  slot.weight = static_cast<int>(weight);
  slot.last_weight_update = ParsePythonDatetime(ColumnText(stmt, 6));
  if (sqlite3_column_type(stmt, 7) != SQLITE_NULL) {
    const auto port = sqlite3_column_int64(stmt, 7);
    if (port < 1 || port > 65535) {
      spdlog::warn("sqlite store: slot {} has an invalid port; read as free", id);
      return Slot::Free(id);
    }
    slot.target.port = static_cast<std::uint16_t>(port);
  }
  slot.target.az = ColumnText(stmt, 8);
  return slot;
}

}  // namespace

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, int list_size,
                                                       bool create) {
  std::error_code ec;
  if (!create && !std::filesystem::exists(path, ec)) {
    return MakeError(ErrorCode::kNotFound, "no SQLite store at {} (has hsdo --server run?)", path);
  }
  if (const auto dir = std::filesystem::path(path).parent_path(); create && !dir.empty()) {
    std::filesystem::create_directories(dir, ec);
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(
          path.c_str(), &db,
          SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX,
          nullptr) != SQLITE_OK) {
    Error error = MakeError(ErrorCode::kUnavailable, "cannot open SQLite store {}: {}", path,
                            db != nullptr ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return error;
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  std::unique_ptr<SqliteStore> store(new SqliteStore(db, list_size));
  // WAL: readers never block the writer nor each other. NORMAL sync is durable across
  // process crashes, which is what a slot table needs (the orchestrator rewrites it anyway).
  // When several processes open a new file at once (an orchestrator and its agents
  // starting together), switching it to WAL can fail with SQLITE_BUSY without going through
  // the busy handler, so the set-up is retried for as long as the busy timeout.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  while (true) {
    auto ready = store->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    if (ready) ready = store->Exec(kSchema);
    if (ready) return store;
    const int code = sqlite3_errcode(db) & 0xFF;
    if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) ||
        std::chrono::steady_clock::now() >= deadline) {
      return MakeError(ready.error().code, "cannot open SQLite store {}: {}", path,
                       ready.error().message);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

SqliteStore::~SqliteStore() { sqlite3_close(db_); }

Result<void> SqliteStore::Exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    Error error = MakeError(ErrorCode::kUnavailable, "sqlite: {}",
                            message != nullptr ? message : "unknown error");
    sqlite3_free(message);
    return error;
  }
  return Ok();
}

Result<std::uint64_t> SqliteStore::ReadGeneration() { return ReadMeta(db_, "generation"); }

Result<SlotTable> SqliteStore::ReadTable() {
  // One read transaction: the generation and the slots come from the same snapshot.
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN DEFERRED"); !r) return r.error();
  auto generation = ReadMeta(db_, "generation");
  if (!generation) return generation.error();
  auto overflow = ReadMeta(db_, "overflow");
  if (!overflow) return overflow.error();

  SlotTable table = SlotTable::Empty(list_size_);
  table.generation = *generation;
  table.overflow = static_cast<int>(*overflow);
  Statement stmt(db_,
                 "SELECT BackendServerID, IPAddress, ServerName, ASG, Weight, BackendServerStatus,"
                 " LastWeightUpdate, Port, AZ FROM slots WHERE BackendServerID BETWEEN 1 AND ?"
                 " ORDER BY BackendServerID");
  if (!stmt.ok()) return SqlError(db_, "prepare");
  sqlite3_bind_int(stmt.get(), 1, list_size_);
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const int id = sqlite3_column_int(stmt.get(), 0);
    table.slots[static_cast<std::size_t>(id - 1)] = RowToSlot(stmt.get(), id);
  }
  if (rc != SQLITE_DONE) return SqlError(db_, "read slots");
  if (auto r = txn.Commit(); !r) return r.error();
  return table;
}

Result<std::uint64_t> SqliteStore::WriteSlots(std::span<const Slot> changed, int overflow,
                                              std::uint64_t expected_generation) {
  // IMMEDIATE takes the write lock up front, so the generation check and the write cannot
  // interleave with another writer.
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN IMMEDIATE"); !r) return r.error();
  auto generation = ReadMeta(db_, "generation");
  if (!generation) return generation.error();
  if (*generation != expected_generation) {
    return MakeError(ErrorCode::kConflict,
                     "sqlite store: generation is {}, expected {} (another writer?)", *generation,
                     expected_generation);
  }
  Statement upsert(db_,
                   "INSERT OR REPLACE INTO slots (BackendServerID, IPAddress, ServerName, ASG,"
                   " Weight, BackendServerStatus, LastWeightUpdate, Port, AZ)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!upsert.ok()) return SqlError(db_, "prepare");
  for (const Slot& slot : changed) {
    sqlite3_stmt* s = upsert.get();
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    const auto text = [&](int index, const std::string& value, const char* if_empty) {
      const std::string& v = value.empty() ? std::string(if_empty) : value;
      sqlite3_bind_text(s, index, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    };
    sqlite3_bind_int(s, 1, slot.id);
    if (slot.enabled()) {
      text(2, slot.target.address, "none");
      text(3, slot.target.name.empty() ? slot.target.address : slot.target.name, "none");
      text(4, slot.target.group, "none");
      sqlite3_bind_int(s, 5, slot.weight);
      text(6, "enabled", "");
      text(7, slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update) : "",
           kFreeSlotTime.data());
      if (slot.target.port) sqlite3_bind_int(s, 8, *slot.target.port);
      if (!slot.target.az.empty()) text(9, slot.target.az, "");
    } else {
      text(2, "none", "");
      text(3, "none", "");
      text(4, "none", "");
      sqlite3_bind_int(s, 5, 0);
      text(6, "disabled", "");
      text(7, std::string(kFreeSlotTime), "");
    }
    if (sqlite3_step(s) != SQLITE_DONE) return SqlError(db_, "write slot");
  }
  const std::uint64_t next = expected_generation + 1;
  Statement meta(db_,
                 "UPDATE meta SET value = CASE key WHEN 'generation' THEN ? ELSE ? END"
                 " WHERE key IN ('generation', 'overflow')");
  if (!meta.ok()) return SqlError(db_, "prepare");
  sqlite3_bind_int64(meta.get(), 1, static_cast<sqlite3_int64>(next));
  sqlite3_bind_int(meta.get(), 2, overflow);
  if (sqlite3_step(meta.get()) != SQLITE_DONE) return SqlError(db_, "write generation");
  if (auto r = txn.Commit(); !r) return r.error();
  return next;
}

bool SqliteStore::Watch(std::function<void()> on_change) {
  // A commit appends to the -wal file (or writes the db itself outside WAL mode).
  auto watcher =
      FileWatcher::ForPath(sqlite3_db_filename(db_, "main"), {"-wal"}, std::move(on_change));
  if (!watcher) spdlog::warn("cannot watch the SQLite store: {}", watcher.error().message);
  if (watcher) watcher_ = std::move(*watcher);
  return watcher_ != nullptr;
}

}  // namespace hsdo
