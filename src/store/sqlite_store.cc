#include "store/sqlite_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/validate.h"
#include "store/seed_record.h"

namespace hsdo {

namespace {

// SQLite's WAL write lock: byte 120 of the -shm file (WAL_WRITE_LOCK, walformat.html).
constexpr off_t kWalWriteLockByte = 120;

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
  AZ                  TEXT,
  DrainingSince       TEXT,
  AdminState          TEXT,
  RemovedAt           TEXT,
  DrainingWeight      INTEGER
);
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('generation', 0), ('overflow', 0);
CREATE TABLE IF NOT EXISTS lease (
  name        TEXT PRIMARY KEY,
  holder      TEXT    NOT NULL,
  epoch       INTEGER NOT NULL,
  version     INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  since_ms    INTEGER NOT NULL,
  renewed_ms  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS nodes (
  name   TEXT PRIMARY KEY,
  report TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS removal_hold (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  value TEXT NOT NULL
);
)sql";

// The slot columns, in the order of every SELECT and INSERT below. DrainingSince and
// AdminState came with issue 10, RemovedAt and DrainingWeight later: a store created before
// them has only the first nine (or eleven, or twelve) until the orchestrator opens it
// read-write and adds them (ALTER TABLE); a read-only reader selects what exists.
constexpr std::array<std::string_view, 13> kColumns = {attr::kId,
                                                       attr::kAddress,
                                                       attr::kName,
                                                       attr::kGroup,
                                                       attr::kWeight,
                                                       attr::kStatus,
                                                       attr::kLastWeightUpdate,
                                                       attr::kPort,
                                                       attr::kAz,
                                                       attr::kDrainingSince,
                                                       attr::kAdminState,
                                                       attr::kRemovedAt,
                                                       attr::kDrainingWeight};
constexpr std::size_t kOriginalColumns = 9;

constexpr auto kBusyTimeoutMs = 5000;

// Why a writer never makes the store itself: a mistyped or deleted SQLITE_PATH would be a new,
// empty store, on which every target is placed again and every key moves.
constexpr const char* kMakeItOnce =
    ": make it once with `hsdo init-table`; an orchestrator never makes one, since a mistyped "
    "or deleted store would have every target placed again";

// Before the first connection of the process: no bulk page-cache allocation per connection
// (SQLite's default reserves 20 pages, some 90 kB, at each connection's first read, resident
// whether used or not); pages are allocated as they are read instead.
void ConfigureSqliteOnce() {
  [[maybe_unused]] static const int configured =
      sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
}

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
  const int code = sqlite3_errcode(db) & 0xFF;
  const bool transient = code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_IOERR;
  return MakeError(transient ? ErrorCode::kUnavailable : ErrorCode::kGeneric, "sqlite {}: {}", what,
                   sqlite3_errmsg(db));
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

Result<std::int64_t> ReadMeta(sqlite3* db, const char* key) {
  Statement stmt(db, "SELECT value FROM meta WHERE key = ?");
  if (!stmt.ok()) return SqlError(db, "prepare");
  sqlite3_bind_text(stmt.get(), 1, key, -1, SQLITE_STATIC);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_ROW) return sqlite3_column_int64(stmt.get(), 0);
  if (rc == SQLITE_DONE) return std::int64_t{0};
  return SqlError(db, "read meta");
}

// The first table of `db` that is not one of hsdo's, "" when none.
std::string OtherTable(sqlite3* db) {
  Statement stmt(db,
                 "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                 "('slots', 'meta', 'lease', 'nodes', 'removal_hold') LIMIT 1");
  if (!stmt.ok() || sqlite3_step(stmt.get()) != SQLITE_ROW) return "";
  const auto* name = sqlite3_column_text(stmt.get(), 0);
  return name != nullptr ? reinterpret_cast<const char*>(name) : "";
}

// A column as the store holds it: the codec, not SQLite's coercion, decides what is valid.
std::optional<AttributeValue> ColumnValue(sqlite3_stmt* stmt, int column) {
  switch (sqlite3_column_type(stmt, column)) {
    case SQLITE_NULL:
      return std::nullopt;
    case SQLITE_INTEGER:
      return AttributeValue::Number(sqlite3_column_int64(stmt, column));
    case SQLITE_TEXT: {
      const auto* text = sqlite3_column_text(stmt, column);
      const int size = sqlite3_column_bytes(stmt, column);
      return AttributeValue::String(
          std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(size)));
    }
    default:
      return AttributeValue{AttributeValue::Type::kOther, ""};
  }
}

// The first `columns` of kColumns, from a row selected with SelectSlots(columns).
Record RowToRecord(sqlite3_stmt* stmt, std::size_t columns) {
  Record record;
  for (std::size_t i = 0; i < columns; ++i) {
    if (auto value = ColumnValue(stmt, static_cast<int>(i))) {
      record.insert_or_assign(std::string(kColumns[i]), std::move(*value));
    }
  }
  return record;
}

std::string SelectSlots(std::size_t columns) {
  return fmt::format(
      "SELECT {} FROM slots",
      fmt::join(kColumns.begin(), kColumns.begin() + static_cast<long>(columns), ", "));
}

// How many of kColumns the slots table has: kColumns.size(), or fewer for a store made by an
// earlier version and not yet opened read-write since.
Result<std::size_t> CountColumns(sqlite3* db) {
  Statement stmt(db, "SELECT name FROM pragma_table_info('slots')");
  if (!stmt.ok()) return SqlError(db, "prepare");
  std::vector<std::string> names;
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const auto* text = sqlite3_column_text(stmt.get(), 0);
    if (text != nullptr) names.emplace_back(reinterpret_cast<const char*>(text));
  }
  if (rc != SQLITE_DONE) return SqlError(db, "read the columns");
  std::size_t present = kOriginalColumns;
  while (present < kColumns.size() &&
         std::find(names.begin(), names.end(), kColumns[present]) != names.end()) {
    ++present;
  }
  return present;
}

// The meta table as attributes of record 1 (absent while nothing was ever written).
Result<void> AddMeta(sqlite3* db, Record& record) {
  auto generation = ReadMeta(db, "generation");
  if (!generation) return generation.error();
  auto overflow = ReadMeta(db, "overflow");
  if (!overflow) return overflow.error();
  if (*generation != 0) {
    record.insert_or_assign(std::string(attr::kGeneration), AttributeValue::Number(*generation));
  }
  record.insert_or_assign(std::string(attr::kOverflow), AttributeValue::Number(*overflow));
  // (A store made before the table, opened read-only, has none: no hold.)
  Statement hold(db, "SELECT value FROM removal_hold WHERE id = 1");
  if (!hold.ok()) {
    if (std::string_view(sqlite3_errmsg(db)).find("no such table") != std::string_view::npos) {
      return Ok();
    }
    return SqlError(db, "prepare");
  }
  const int rc = sqlite3_step(hold.get());
  if (rc == SQLITE_ROW) {
    // A value that is no text reads as a hold that does not parse (logged, read as none).
    const auto* text = sqlite3_column_text(hold.get(), 0);
    record.insert_or_assign(
        std::string(attr::kRemovalHold),
        AttributeValue::String(text == nullptr ? "" : reinterpret_cast<const char*>(text)));
  } else if (rc != SQLITE_DONE) {
    return SqlError(db, "read the removal hold");
  }
  return Ok();
}

Result<void> BindRecord(sqlite3* db, sqlite3_stmt* stmt, const Record& record) {
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  for (const auto& [name, value] : record) {
    const auto column = std::find(kColumns.begin(), kColumns.end(), name);
    if (column == kColumns.end()) {
      return MakeError(ErrorCode::kInvalidArgument, "sqlite store has no column {}", name);
    }
    const int index = static_cast<int>(column - kColumns.begin()) + 1;
    if (value.type == AttributeValue::Type::kNumber) {
      const auto number = ParseInteger(value);
      if (!number) return MakeError(ErrorCode::kInvalidArgument, "{} is not an integer", name);
      sqlite3_bind_int64(stmt, index, *number);
    } else if (value.type == AttributeValue::Type::kString) {
      sqlite3_bind_text(stmt, index, value.text.data(), static_cast<int>(value.text.size()),
                        SQLITE_TRANSIENT);
    } else {
      return MakeError(ErrorCode::kInvalidArgument, "{} has a type SQLite does not store", name);
    }
  }
  (void)db;
  return Ok();
}

}  // namespace

std::optional<SqliteFileId> SqliteFileId::Of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return SqliteFileId{st.st_dev, st.st_ino};
}

int SqliteBackend::WaitWhileBusy(void* backend, int attempt) {
  auto* self = static_cast<SqliteBackend*>(backend);
  const auto now = std::chrono::steady_clock::now();
  if (attempt == 0) self->busy_since_ = now;
  // A stop does not wait out the lock: with sqlite3_busy_timeout a SIGTERM that came while
  // another process held the file (an `sqlite3` shell, a backup) took up to 10 s (the write,
  // then the lease's release), as long as systemd waits before it kills.
  if (self->cancel_.stop_requested() ||
      now - self->busy_since_ >= std::chrono::milliseconds(kBusyTimeoutMs)) {
    return 0;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min(1 << std::min(attempt, 5), 20)));
  return 1;
}

Result<std::unique_ptr<SqliteBackend>> SqliteBackend::Open(const std::string& path,
                                                           SqliteOpenMode mode,
                                                           std::stop_token cancel) {
  ConfigureSqliteOnce();
  const bool create = mode == SqliteOpenMode::kCreate;
  const bool writer = mode != SqliteOpenMode::kReadOnly;
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (ec) {
    // Not "no store": a directory this user may not enter (/var/lib/hsdo is 0750) hides one,
    // and `hsdo status` printed an all-free table for it.
    return MakeError(ErrorCode::kUnavailable, "cannot look for the SQLite store {}: {}{}", path,
                     ec.message(),
                     ec == std::errc::permission_denied ? " (run it as the hsdo user)" : "");
  }
  if (!create && !exists) {
    return MakeError(ErrorCode::kNotFound, "no SQLite store at {} (SQLITE_PATH){}", path,
                     writer ? kMakeItOnce : " (has `hsdo init-table` made it?)");
  }
  if (const auto dir = std::filesystem::path(path).parent_path(); create && !dir.empty()) {
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      // A configuration error (exit 2), not one to restart on every 2 s.
      return MakeError(ErrorCode::kInvalidArgument,
                       "SQLITE_PATH={}: cannot create its directory {}: {}", path, dir.string(),
                       ec.message());
    }
  }
  sqlite3* db = nullptr;
  const int flags = (writer ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) |
                    (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    Error error =
        MakeError(ErrorCode::kUnavailable, "cannot open SQLite store {} (SQLITE_PATH): {}", path,
                  db != nullptr ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return error;
  }
  std::unique_ptr<SqliteBackend> backend(new SqliteBackend(db, path, mode, std::move(cancel)));
  sqlite3_busy_handler(db, &SqliteBackend::WaitWhileBusy, backend.get());
  if (!writer) {
    // Read-only (an agent, `hsdo status`): set nothing up, only check that this is a slot
    // store. A small page cache: the generation is read every cycle, the whole table only
    // when it moved, from the OS's page cache; SQLite's default (2 MB) would keep a copy of
    // the table (some 200 kB at 1000 slots) resident for nothing.
    sqlite3_exec(db, "PRAGMA cache_size=-64", nullptr, nullptr, nullptr);
    if (auto meta = ReadMeta(db, "generation"); !meta) {
      // A database without the table is a store being made (or not hsdo's); anything else (a
      // file that is no database, one this user may not read) is an error, not "no store
      // yet", which `hsdo status` showed as an all-free table.
      if (meta.error().message.find("no such table") != std::string::npos) {
        if (const std::string other = OtherTable(db); !other.empty()) {
          return MakeError(ErrorCode::kUnavailable,
                           "{} is not an hsdo SQLite store: it holds another table ({})", path,
                           SanitizedLabel(other));
        }
        return MakeError(ErrorCode::kNotFound, "{} is not an hsdo SQLite store (yet): {}", path,
                         meta.error().message);
      }
      return MakeError(ErrorCode::kUnavailable, "{} cannot be read as an hsdo SQLite store: {}{}",
                       path, meta.error().message,
                       meta.error().message.find("readonly") != std::string::npos
                           ? " (reading it needs the right to write beside it while no "
                             "orchestrator runs: run it as the hsdo user)"
                           : "");
    }
    if (auto r = backend->RefreshColumns(); !r) return r.error();
    return backend;
  }
  if (!create) {
    // The orchestrator writes only into a store `hsdo init-table` made (or an older hsdo's
    // orchestrator did): an empty file is not one either.
    if (auto meta = ReadMeta(db, "generation");
        !meta && meta.error().message.find("no such table") != std::string::npos) {
      return MakeError(ErrorCode::kNotFound, "{} is not an hsdo SQLite store (SQLITE_PATH){}", path,
                       kMakeItOnce);
    }
  }
  // WAL: readers never block the writer nor each other. NORMAL sync is durable across
  // process crashes, which is what a slot table needs (the orchestrator rewrites it anyway).
  // When several processes open a new file at once (an orchestrator and its agents
  // starting together), switching it to WAL can fail with SQLITE_BUSY without going through
  // the busy handler, so the set-up is retried for as long as the busy timeout.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  while (true) {
    auto ready = backend->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    if (ready && create) {
      // The tables and when `hsdo init-table` made them, in one transaction: a writer that
      // follows the store (FollowReplacedFile) never finds one without the other.
      const auto made_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
      ready = backend->Exec(
          fmt::format("BEGIN IMMEDIATE; {} INSERT OR IGNORE INTO meta (key, value) VALUES "
                      "('made_at', {}); COMMIT;",
                      kSchema, made_ms)
              .c_str());
      if (!ready) (void)backend->Exec("ROLLBACK");
    } else if (ready) {
      ready = backend->Exec(kSchema);
    }
    if (ready) ready = backend->AddMissingColumns();
    // When `hsdo init-table` made it (kept when made before): a store made again at the path
    // is newer than the one a running writer opened (FollowReplacedFile).
    if (ready) return backend;
    const int code = sqlite3_errcode(db) & 0xFF;
    if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) ||
        std::chrono::steady_clock::now() >= deadline || backend->cancel_.stop_requested()) {
      return MakeError(ready.error().code, "cannot open SQLite store {}: {}", path,
                       ready.error().message);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

SqliteBackend::~SqliteBackend() {
  watcher_.reset();  // its thread uses shm_fd_
  sqlite3_finalize(generation_stmt_);
  sqlite3_close(db_);
  if (shm_fd_ >= 0) ::close(shm_fd_);
}

std::string SqliteBackend::Describe() const { return fmt::format("SQLite store {}", path_); }

Result<void> SqliteBackend::StillAtPath() const {
  if (SqliteFileId::Of(path_) == file_) return Ok();
  return MakeError(ErrorCode::kUnavailable,
                   "{} was deleted or replaced since this process opened it: its writes would "
                   "go where no agent started from now on reads them, so it writes nothing "
                   "until `hsdo init-table` makes a new store at the path, which it then fills "
                   "with the table it holds (restarted, it would plan from whatever is there)",
                   Describe());
}

namespace {
// When `hsdo init-table` made the store of `db` (Unix ms; 0 when made by a version before it).
std::int64_t MadeAt(sqlite3* db) {
  const auto made = ReadMeta(db, "made_at");
  return made ? *made : 0;
}

// A store no orchestrator has written: generation 0 and no lease (`hsdo init-table`'s).
bool NeverWritten(sqlite3* db) {
  const auto generation = ReadMeta(db, "generation");
  if (!generation || *generation != 0) return false;
  Statement lease(db, "SELECT COUNT(*) FROM lease");
  return lease.ok() && sqlite3_step(lease.get()) == SQLITE_ROW &&
         sqlite3_column_int64(lease.get(), 0) == 0;
}
}  // namespace

void SqliteBackend::FollowReplacedFile() {
  const bool writer = mode_ != SqliteOpenMode::kReadOnly;
  const auto now = SqliteFileId::Of(path_);  // one stat(2) a cycle
  if (!now || now == file_ || (written_ && now == written_)) return;
  // (A writer never creates: kWrite, not kCreate.)
  auto fresh = Open(path_, writer ? SqliteOpenMode::kWrite : SqliteOpenMode::kReadOnly, cancel_);
  if (!fresh) {
    // Not a store yet (being made), or not one at all: read on what was opened, and try
    // again at the next read. Said once per file.
    if (now != refused_) {
      spdlog::warn(
          "{} was replaced by a file that cannot be read as a store ({}); reading the "
          "file opened before until it can",
          Describe(), fresh.error().message);
      refused_ = now;
    }
    return;
  }
  if (writer) {
    // A store made again by `hsdo init-table` (made at another time than the one opened: the
    // leader may have written it first, a standby follows it too; wall time, which may have
    // gone back meanwhile) or never written. Not a copy of the one opened moved in (made at
    // the same time), nor one whose making is not known (an older hsdo's): whose table is the
    // right one is not known here (StillAtPath says so at each write). Another store's copy
    // moved in is followed: the leader writes its table back over an older table
    // (Orchestrator), as after a restore.
    const std::int64_t made_at = MadeAt((*fresh)->db_);
    if ((made_at == 0 || made_at == MadeAt(db_)) && !NeverWritten((*fresh)->db_)) {
      spdlog::error(
          "{} was replaced by a store an orchestrator has written (a copy moved in?): this "
          "process writes to neither; restart it to use that store",
          Describe());
      written_ = now;
      return;
    }
    spdlog::warn("{} was made again: writing to it from now on", Describe());
  } else {
    spdlog::info("{} was replaced (made again or restored): reading the new file", Describe());
  }
  // The old connection and statement go with `fresh`. The watcher watches the path, and finds
  // the new -shm file itself (Watch).
  std::swap(db_, (*fresh)->db_);
  std::swap(generation_stmt_, (*fresh)->generation_stmt_);
  std::swap(columns_, (*fresh)->columns_);
  file_ = (*fresh)->file_;
  ++incarnation_;
  // Each connection's busy handler is given its owner: the new one's was `fresh`, freed on
  // return (review: a lock met after following a replaced file waited in freed memory).
  sqlite3_busy_handler(db_, &SqliteBackend::WaitWhileBusy, this);
  sqlite3_busy_handler((*fresh)->db_, &SqliteBackend::WaitWhileBusy, fresh->get());
}

Result<void> SqliteBackend::AddMissingColumns() {
  // One transaction: another orchestrator opening the same file at once adds them only once.
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN IMMEDIATE"); !r) return r.error();
  auto present = CountColumns(db_);
  if (!present) return present.error();
  for (std::size_t i = *present; i < kColumns.size(); ++i) {
    // An integer in a TEXT column would read back as text (its affinity), which the codec
    // refuses.
    const std::string sql = fmt::format("ALTER TABLE slots ADD COLUMN {} {}", kColumns[i],
                                        kColumns[i] == attr::kDrainingWeight ? "INTEGER" : "TEXT");
    if (auto r = Exec(sql.c_str()); !r) return r;
  }
  // The lease's renewal time came after the lease.
  if (Statement probe(db_, "SELECT renewed_ms FROM lease");
      !probe.ok() &&
      std::string_view(sqlite3_errmsg(db_)).find("no such column") != std::string_view::npos) {
    if (auto r = Exec("ALTER TABLE lease ADD COLUMN renewed_ms INTEGER NOT NULL DEFAULT 0"); !r) {
      return r;
    }
  }
  if (auto r = txn.Commit(); !r) return r;
  columns_ = kColumns.size();
  return Ok();
}

Result<void> SqliteBackend::RefreshColumns() {
  if (columns_ == kColumns.size()) return Ok();
  auto present = CountColumns(db_);
  if (!present) return present.error();
  columns_ = *present;
  return Ok();
}

Result<void> SqliteBackend::Exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    Error error = MakeError(ErrorCode::kUnavailable, "sqlite: {}",
                            message != nullptr ? message : "unknown error");
    sqlite3_free(message);
    return error;
  }
  return Ok();
}

Result<std::optional<Record>> SqliteBackend::Get(int id, const std::vector<std::string>& projection,
                                                 bool consistent) {
  (void)consistent;  // every read is consistent here
  FollowReplacedFile();
  if (id == 1 && projection.size() == 1 && projection[0] == attr::kGeneration) {
    return ReadGenerationOnly();
  }
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN DEFERRED"); !r) return r.error();
  // A reader of an older store looks again for the new columns (the orchestrator adds them).
  if (auto r = RefreshColumns(); !r) return r.error();
  Statement stmt(db_, (SelectSlots(columns_) + " WHERE BackendServerID = ?").c_str());
  if (!stmt.ok()) return SqlError(db_, "prepare");
  sqlite3_bind_int(stmt.get(), 1, id);
  const int rc = sqlite3_step(stmt.get());
  std::optional<Record> record;
  if (rc == SQLITE_ROW) {
    record = RowToRecord(stmt.get(), columns_);
  } else if (rc != SQLITE_DONE) {
    return SqlError(db_, "read slot");
  }
  if (id == 1) {
    Record meta;
    if (auto r = AddMeta(db_, meta); !r) return r.error();
    if (record || meta.contains(attr::kGeneration)) {
      if (!record) record.emplace();
      record->merge(meta);
    }
  }
  if (auto r = txn.Commit(); !r) return r.error();
  if (record && !projection.empty()) {
    std::erase_if(*record, [&](const auto& entry) {
      return std::find(projection.begin(), projection.end(), entry.first) == projection.end();
    });
  }
  return record;
}

Result<std::vector<Record>> SqliteBackend::ReadAll() {
  FollowReplacedFile();
  // One read transaction: a snapshot, generation and slots alike.
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN DEFERRED"); !r) return r.error();
  if (auto r = RefreshColumns(); !r) return r.error();
  Statement stmt(db_, (SelectSlots(columns_) + " ORDER BY BackendServerID").c_str());
  if (!stmt.ok()) return SqlError(db_, "prepare");
  std::vector<Record> records;
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW)
    records.push_back(RowToRecord(stmt.get(), columns_));
  if (rc != SQLITE_DONE) return SqlError(db_, "read slots");
  Record meta;
  if (auto r = AddMeta(db_, meta); !r) return r.error();
  // Record 1 carries the generation; rows with an invalid id (0, negative) may sort before it.
  const auto record_1 = std::find_if(records.begin(), records.end(),
                                     [](const Record& record) { return RecordId(record) == 1; });
  if (record_1 != records.end()) {
    record_1->merge(meta);
  } else if (meta.contains(attr::kGeneration)) {
    // A store written before record 1 always existed: present it as the seed's free record.
    Record first = meta;
    first.merge(SlotToRecord(Slot::Free(1)));
    records.insert(records.begin(), std::move(first));
  }
  if (auto r = txn.Commit(); !r) return r.error();
  return records;
}

Result<void> SqliteBackend::Write(const ConditionalWrite& write) {
  FollowReplacedFile();
  if (auto r = StillAtPath(); !r) return r;
  // IMMEDIATE takes the write lock up front, so the conditions and the write cannot
  // interleave with another writer.
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN IMMEDIATE"); !r) return r.error();
  auto generation = ReadMeta(db_, "generation");
  if (!generation) return generation.error();
  if (static_cast<std::uint64_t>(*generation) != write.expected_generation) {
    return MakeError(ErrorCode::kConflict, "generation is {}, expected {} (another writer?)",
                     *generation, write.expected_generation);
  }
  if (write.fence) {
    auto lease = ReadLeaseRow();
    if (!lease) return lease.error();
    if (!*lease || (*lease)->holder != write.fence->holder ||
        (*lease)->epoch != write.fence->epoch) {
      return MakeError(ErrorCode::kConflict, "the leader lease is no longer held by {} (epoch {})",
                       write.fence->holder, write.fence->epoch);
    }
  }
  // Opened read-write, so every column exists (AddMissingColumns).
  std::string placeholders = "?";
  for (std::size_t i = 1; i < kColumns.size(); ++i) placeholders += ", ?";
  const std::string upsert_sql = fmt::format("INSERT OR REPLACE INTO slots ({}) VALUES ({})",
                                             fmt::join(kColumns, ", "), placeholders);
  Statement upsert(db_, upsert_sql.c_str());
  if (!upsert.ok()) return SqlError(db_, "prepare");
  const auto put = [&](const Record& record) -> Result<void> {
    if (auto r = BindRecord(db_, upsert.get(), record); !r) return r;
    if (sqlite3_step(upsert.get()) != SQLITE_DONE) return SqlError(db_, "write slot");
    return Ok();
  };
  bool has_record_1 = false;
  for (const Record& record : write.puts) {
    if (auto r = put(record); !r) return r.error();
    has_record_1 = has_record_1 || RecordId(record) == 1;
  }
  if (!has_record_1) {
    Statement exists(db_, "SELECT 1 FROM slots WHERE BackendServerID = 1");
    if (!exists.ok()) return SqlError(db_, "prepare");
    if (sqlite3_step(exists.get()) != SQLITE_ROW) {
      if (auto r = put(write.free_record_1); !r) return r.error();
    }
  }
  Statement meta(db_,
                 "UPDATE meta SET value = CASE key WHEN 'generation' THEN ? ELSE ? END"
                 " WHERE key IN ('generation', 'overflow')");
  if (!meta.ok()) return SqlError(db_, "prepare");
  sqlite3_bind_int64(meta.get(), 1, static_cast<sqlite3_int64>(write.next_generation));
  sqlite3_bind_int64(meta.get(), 2, write.overflow);
  if (sqlite3_step(meta.get()) != SQLITE_DONE) return SqlError(db_, "write generation");
  if (write.removal_hold) {
    Statement hold(db_, write.removal_hold->empty()
                            ? "DELETE FROM removal_hold"
                            : "INSERT OR REPLACE INTO removal_hold (id, value) VALUES (1, ?)");
    if (!hold.ok()) return SqlError(db_, "prepare");
    if (!write.removal_hold->empty()) {
      sqlite3_bind_text(hold.get(), 1, write.removal_hold->c_str(), -1, SQLITE_STATIC);
    }
    if (sqlite3_step(hold.get()) != SQLITE_DONE) return SqlError(db_, "write the removal hold");
  }
  return txn.Commit();
}

Result<std::optional<Lease>> SqliteBackend::ReadLease() {
  FollowReplacedFile();  // a standby reads nothing else
  return ReadLeaseRow();
}

Result<std::optional<Lease>> SqliteBackend::ReadLeaseRow() {
  std::optional<Statement> stmt;
  stmt.emplace(db_,
               "SELECT holder, epoch, version, duration_ms, since_ms, renewed_ms FROM lease"
               " WHERE name = 'leader'");
  if (!stmt->ok() &&
      std::string_view(sqlite3_errmsg(db_)).find("no such column") != std::string_view::npos) {
    // A store created before renewed_ms, opened read-only (AddMissingColumns adds it).
    stmt.emplace(db_,
                 "SELECT holder, epoch, version, duration_ms, since_ms, 0 FROM lease"
                 " WHERE name = 'leader'");
  }
  if (!stmt->ok()) {
    // A store created before leases existed, opened read-only: no lease.
    if (std::string_view(sqlite3_errmsg(db_)).find("no such table") != std::string_view::npos) {
      return std::optional<Lease>();
    }
    return SqlError(db_, "prepare");
  }
  const int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_DONE) return std::optional<Lease>();
  if (rc != SQLITE_ROW) return SqlError(db_, "read lease");
  Lease lease;
  const auto* holder = sqlite3_column_text(stmt->get(), 0);
  lease.holder = holder == nullptr ? "" : reinterpret_cast<const char*>(holder);
  lease.epoch = static_cast<std::uint64_t>(sqlite3_column_int64(stmt->get(), 1));
  lease.version = static_cast<std::uint64_t>(sqlite3_column_int64(stmt->get(), 2));
  lease.duration_ms = sqlite3_column_int64(stmt->get(), 3);
  lease.since_unix_ms = sqlite3_column_int64(stmt->get(), 4);
  lease.renewed_unix_ms = sqlite3_column_int64(stmt->get(), 5);
  return std::optional<Lease>(std::move(lease));
}

Result<void> SqliteBackend::WriteLease(const Lease& lease,
                                       std::optional<std::uint64_t> expected_version) {
  FollowReplacedFile();
  if (auto r = StillAtPath(); !r) return r;
  Transaction txn(db_);
  if (auto r = txn.Begin("BEGIN IMMEDIATE"); !r) return r.error();
  auto stored = ReadLeaseRow();
  if (!stored) return stored.error();
  const std::optional<std::uint64_t> version =
      *stored ? std::optional<std::uint64_t>((*stored)->version) : std::nullopt;
  if (version != expected_version) {
    return MakeError(ErrorCode::kConflict, "the leader lease changed (held by {})",
                     *stored ? (*stored)->holder : std::string("nobody"));
  }
  Statement stmt(db_,
                 "INSERT OR REPLACE INTO lease (name, holder, epoch, version, duration_ms,"
                 " since_ms, renewed_ms) VALUES ('leader', ?, ?, ?, ?, ?, ?)");
  if (!stmt.ok()) return SqlError(db_, "prepare");
  sqlite3_bind_text(stmt.get(), 1, lease.holder.data(), static_cast<int>(lease.holder.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_int64(stmt.get(), 2, static_cast<sqlite3_int64>(lease.epoch));
  sqlite3_bind_int64(stmt.get(), 3, static_cast<sqlite3_int64>(lease.version));
  sqlite3_bind_int64(stmt.get(), 4, lease.duration_ms);
  sqlite3_bind_int64(stmt.get(), 5, lease.since_unix_ms);
  sqlite3_bind_int64(stmt.get(), 6, lease.renewed_unix_ms);
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqlError(db_, "write lease");
  return txn.Commit();
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, int list_size,
                                                       SqliteOpenMode mode,
                                                       std::stop_token cancel) {
  auto backend = SqliteBackend::Open(path, mode, std::move(cancel));
  if (!backend) return backend.error();
  return std::make_unique<SqliteStore>(std::move(*backend), list_size);
}

// An agent's steady cycle reads only this: one statement (one implicit read transaction),
// prepared once, instead of a transaction of three freshly parsed statements.
Result<std::optional<Record>> SqliteBackend::ReadGenerationOnly() {
  if (generation_stmt_ == nullptr &&
      sqlite3_prepare_v3(db_, "SELECT value FROM meta WHERE key = 'generation'", -1,
                         SQLITE_PREPARE_PERSISTENT, &generation_stmt_, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  const int rc = sqlite3_step(generation_stmt_);
  const std::int64_t generation = rc == SQLITE_ROW ? sqlite3_column_int64(generation_stmt_, 0) : 0;
  // Reset at once: a statement left stepping would hold its read transaction (and snapshot).
  sqlite3_reset(generation_stmt_);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqlError(db_, "read generation");
  // As Get(1) projected on the generation: absent while it is 0 (nothing written yet).
  if (generation == 0) return std::optional<Record>();
  return std::optional<Record>(
      Record{{std::string(attr::kGeneration), AttributeValue::Number(generation)}});
}

bool SqliteBackend::Watch(std::function<void()> on_change) {
  // A commit appends to the -wal file (or writes the db itself outside WAL mode), then
  // fsyncs it and publishes the commit in the mmapped -shm, which inotify does not see: a
  // reader woken by the appends may be too early. The writer holds SQLite's WAL write lock
  // through all of it, a POSIX lock on byte 120 of the -shm file (the WAL-index format,
  // https://www.sqlite.org/walformat.html): the watcher waits while anyone holds it. An open
  // file description lock query (F_OFD_GETLK) sees every POSIX lock, this process's own
  // included (F_GETLK would not: an in-process writer looked done); once the lock is free the
  // commit is visible, and one notification is enough.
  auto writer = [this] {
    const std::string shm_path = path_ + "-shm";
    if (shm_fd_ >= 0) {
      // A store made again has a -shm file of its own (FollowReplacedFile). Closing the old
      // one drops this process's locks on that file only, which no one reads any more.
      struct stat open_st {};
      const auto now = SqliteFileId::Of(shm_path);
      if (now && ::fstat(shm_fd_, &open_st) == 0 &&
          !(*now == SqliteFileId{open_st.st_dev, open_st.st_ino})) {
        ::close(shm_fd_);
        shm_fd_ = -1;
      }
    }
    if (shm_fd_ < 0) shm_fd_ = ::open(shm_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (shm_fd_ < 0) return FileWatcher::Writer::kUnknown;  // not in WAL mode (yet)
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    lock.l_start = kWalWriteLockByte;
    lock.l_len = 1;
    if (::fcntl(shm_fd_, F_OFD_GETLK, &lock) != 0) return FileWatcher::Writer::kUnknown;
    return lock.l_type == F_UNLCK ? FileWatcher::Writer::kDone : FileWatcher::Writer::kBusy;
  };
  // Every write notifies, the ones that leave the slot table alone too (an agent's own node
  // report, another's, the leader lease): the agent reads the generation before it runs a
  // cycle (agent::Agent::StoreMoved).
  auto watcher = FileWatcher::ForPath(path_, {"-wal"}, std::move(on_change), std::move(writer));
  if (watcher) watcher_ = std::move(*watcher);
  return watcher_ != nullptr;
}

SqliteNodeReports::SqliteNodeReports(std::string path, Mode mode, prometheus::Registry* registry)
    : path_(std::move(path)), mode_(mode), log_(registry, fmt::format("SQLite store {}", path_)) {}

SqliteNodeReports::~SqliteNodeReports() { Disconnect(); }

void SqliteNodeReports::Disconnect() {
  sqlite3_finalize(report_stmt_);
  report_stmt_ = nullptr;
  sqlite3_finalize(data_version_stmt_);
  data_version_stmt_ = nullptr;
  data_version_.reset();  // another connection counts from its own start
  // _v2: a read that failed part-way disconnects with its statement still open, which
  // sqlite3_close refuses (SQLITE_BUSY, the connection and its descriptors leaked at every
  // failed read); this one closes the connection as soon as that statement ends.
  sqlite3_close_v2(db_);
  db_ = nullptr;
}

Result<void> SqliteNodeReports::Connect() {
  if (db_ != nullptr) return Ok();
  ConfigureSqliteOnce();
  std::error_code ec;
  if (!std::filesystem::exists(path_, ec)) {
    return MakeError(ErrorCode::kNotFound, "no SQLite store at {} (has `hsdo init-table` made it?)",
                     path_);
  }
  // Never SQLITE_OPEN_CREATE: the file is `hsdo init-table`'s to create.
  const int flags =
      (mode_ == Mode::kWriter ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
    Error error = MakeError(ErrorCode::kUnavailable, "cannot open SQLite store {}: {}", path_,
                            db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory");
    Disconnect();
    return error;
  }
  file_ = SqliteFileId::Of(path_);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // As the store's own connection: in WAL mode a commit then needs no fsync (the heartbeat
  // every 2 x INTERVAL was an fdatasync each); a power loss may lose the last report, which
  // the next one replaces anyway. The file stays consistent.
  if (mode_ == Mode::kWriter)
    sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
  read_only_ = mode_ == Mode::kWriter && sqlite3_db_readonly(db_, "main") == 1;
  return Ok();
}

Result<void> SqliteNodeReports::Report(const NodeReport& report) {
  if (mode_ != Mode::kWriter) {
    return MakeError(ErrorCode::kInvalidArgument, "node reports opened read-only");
  }
  std::lock_guard lock(mutex_);
  // A store made again or restored is another file: the orchestrator reads that one. While
  // nothing is at the path, the report goes where it went.
  if (const auto now = SqliteFileId::Of(path_); db_ != nullptr && now && now != file_) {
    Disconnect();
  }
  bool reconnected = false;
  if (read_only_ && ::access(path_.c_str(), W_OK) == 0 &&
      std::chrono::steady_clock::now() - reconnected_at_ >= reconnect_wait_) {
    reconnected_at_ = std::chrono::steady_clock::now();
    reconnected = true;
    Disconnect();  // the file may be written now
  }
  if (auto r = Connect(); !r) return log_.Unstored(std::move(r.error()));
  if (reconnected) {
    // Each attempt that opens read-only again keeps one more descriptor (review: access()
    // and open() disagree under an AppArmor rule or on some FUSE file systems): the attempts
    // come further apart, up to an hour.
    reconnect_wait_ = read_only_ ? std::min(reconnect_wait_ * 2, std::chrono::minutes(60))
                                 : std::chrono::minutes(1);
  }
  if (read_only_) {
    return log_.Unstored(MakeError(
        ErrorCode::kUnavailable,
        "SQLite store {} can only be read by this agent: its node reports are not stored (run "
        "it as a user that may write the file and its directory, on a writable mount)",
        path_));
  }
  const std::string text = EncodeNodeReport(report);
  // Fails to prepare while the table does not exist: the row is written only into a store
  // an orchestrator has set up. Prepared once per connection: a report every 2 x INTERVAL.
  // An update in place writes one page, the table's (INSERT OR REPLACE deleted the row and
  // inserted it again under a new rowid: the name index's page too, twice the WAL writes).
  if (report_stmt_ == nullptr &&
      sqlite3_prepare_v3(db_,
                         "INSERT INTO nodes (name, report) VALUES (?, ?)"
                         " ON CONFLICT (name) DO UPDATE SET report = excluded.report",
                         -1, SQLITE_PREPARE_PERSISTENT, &report_stmt_, nullptr) != SQLITE_OK) {
    return log_.Unstored(SqlError(db_, "prepare node record"));
  }
  sqlite3_stmt* stmt = report_stmt_;
  sqlite3_bind_text(stmt, 1, report.name.data(), static_cast<int>(report.name.size()),
                    SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt, 2, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  const bool done = sqlite3_step(stmt) == SQLITE_DONE;
  std::optional<Error> error;
  if (!done) error = SqlError(db_, "write node record");
  sqlite3_reset(stmt);  // ends the statement at once, whatever it returned
  sqlite3_clear_bindings(stmt);
  if (error) {
    // A file replaced under us (deleted, restored) is seen by a new connection.
    if (error->code != ErrorCode::kUnavailable) Disconnect();
    return log_.Unstored(std::move(*error));
  }
  log_.Stored();
  return Ok();
}

bool SqliteNodeReports::OthersMayHaveWritten() {
  std::lock_guard lock(mutex_);
  if (db_ == nullptr) return true;
  // This connection sees the writes to the file it opened only: a store made again at the
  // path, or none there any more, is news for the agent (it follows the new file).
  if (SqliteFileId::Of(path_) != file_) return true;
  if (data_version_stmt_ == nullptr &&
      sqlite3_prepare_v3(db_, "PRAGMA data_version", -1, SQLITE_PREPARE_PERSISTENT,
                         &data_version_stmt_, nullptr) != SQLITE_OK) {
    return true;
  }
  bool others = true;
  if (sqlite3_step(data_version_stmt_) == SQLITE_ROW) {
    const long long version = sqlite3_column_int64(data_version_stmt_, 0);
    others = !data_version_ || *data_version_ != version;
    data_version_ = version;
  }
  sqlite3_reset(data_version_stmt_);
  return others;
}

Result<std::vector<NodeReport>> SqliteNodeReports::ReadNodeReports() {
  std::lock_guard lock(mutex_);
  // A store made again or restored at the path is the one to read (the orchestrator's reader
  // would read the replaced file's last reports for ever, every node going silent on it).
  if (const auto now = SqliteFileId::Of(path_); db_ != nullptr && now && now != file_) {
    Disconnect();
  }
  if (auto r = Connect(); !r) {
    if (r.error().code == ErrorCode::kNotFound) return std::vector<NodeReport>();
    return r.error();
  }
  Statement stmt(db_, "SELECT name, report FROM nodes ORDER BY name");
  if (!stmt.ok()) {
    // A store set up before node records existed: none yet.
    if (std::string_view(sqlite3_errmsg(db_)).find("no such table") != std::string_view::npos) {
      return std::vector<NodeReport>();
    }
    Error error = SqlError(db_, "prepare");
    Disconnect();
    return error;
  }
  std::vector<StoredNodeRecord> records;
  int rc = SQLITE_ROW;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const auto text = [&](int column) {
      const auto* value = sqlite3_column_text(stmt.get(), column);
      return value == nullptr
                 ? std::string()
                 : std::string(reinterpret_cast<const char*>(value),
                               static_cast<std::size_t>(sqlite3_column_bytes(stmt.get(), column)));
    };
    records.push_back({.key_name = text(0), .text = text(1)});
  }
  if (rc != SQLITE_DONE) {
    Error error = SqlError(db_, "read node records");
    Disconnect();
    return error;
  }
  return log_.Decode(records);
}

Result<bool> SqliteNodeReports::DeleteNodeReport(const std::string& name, WallTime reported_at) {
  std::lock_guard lock(mutex_);
  // A read-write connection of its own, closed after: the orchestrator's connection stays
  // read-only, and a delete is rare (a node silent for NODE_RECORD_EXPIRY).
  sqlite3* db = nullptr;
  const int open =
      sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  const std::unique_ptr<sqlite3, int (*)(sqlite3*)> closer(db, sqlite3_close_v2);
  if (open != SQLITE_OK) {
    return MakeError(ErrorCode::kUnavailable, "cannot open SQLite store {}: {}", path_,
                     db != nullptr ? sqlite3_errmsg(db) : "out of memory");
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  // The record is read again and deleted in one write transaction: a node that reported
  // since keeps its new record.
  Transaction transaction(db);
  if (auto begun = transaction.Begin("BEGIN IMMEDIATE"); !begun) return begun.error();
  Statement select(db, "SELECT report FROM nodes WHERE name = ?");
  if (!select.ok()) return SqlError(db, "prepare");
  sqlite3_bind_text(select.get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(select.get());
  if (rc == SQLITE_DONE) return false;
  if (rc != SQLITE_ROW) return SqlError(db, "read node record");
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(select.get(), 0));
  const auto stored = DecodeNodeReport(
      text != nullptr
          ? std::string_view(text, static_cast<std::size_t>(sqlite3_column_bytes(select.get(), 0)))
          : std::string_view());
  sqlite3_reset(select.get());  // done reading: the commit finds no statement in progress
  if (!stored || stored->reported_at != reported_at) return false;
  Statement remove(db, "DELETE FROM nodes WHERE name = ?");
  if (!remove.ok()) return SqlError(db, "prepare");
  sqlite3_bind_text(remove.get(), 1, name.data(), static_cast<int>(name.size()), SQLITE_STATIC);
  if (sqlite3_step(remove.get()) != SQLITE_DONE) return SqlError(db, "delete node record");
  if (auto committed = transaction.Commit(); !committed) return committed.error();
  return true;
}

}  // namespace hsdo
