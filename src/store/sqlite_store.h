// The SQLite adapter: the slot table in an embedded SQLite file, for one host (the default
// when no DynamoDB table is named). WAL mode lets one orchestrator write while agents read.
// The columns mirror the seed's DynamoDB attributes (ARCHITECTURE.md, "Store layout"); the
// meta table holds TableGeneration and Overflow, presented as attributes of record 1; the
// lease table holds the leader lease; the nodes table holds the agents' node records
// (SqliteNodeReports below). All validation is the one codec's (store/seed_record.h):
// SQLite's column affinity keeps 'abc' in an INTEGER column as text, which the codec refuses.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>

#include "common/file_watcher.h"
#include "store/node_report.h"
#include "store/node_report_codec.h"
#include "store/record_backend.h"
#include "store/slot_table_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace hsdo {

// Which file a path names now (device and inode), to see it replaced under an open
// connection: a store deleted and made again, or restored from a backup, is another file,
// while a connection keeps reading the one it opened. Absent when nothing is at the path.
struct SqliteFileId {
  dev_t device = 0;
  ino_t inode = 0;
  static std::optional<SqliteFileId> Of(const std::string& path);
  friend bool operator==(const SqliteFileId&, const SqliteFileId&) = default;
};

enum class SqliteOpenMode {
  // `hsdo init-table`: creates the file and its directory when missing.
  kCreate,
  // The orchestrator and `hsdo set-state`: read-write, into a store kCreate made (a missing
  // file, or one without hsdo's tables, is kNotFound); adds the columns of newer versions.
  kWrite,
  // Agents and `hsdo status`: SQLITE_OPEN_READONLY; a missing file is kNotFound, and neither
  // the file nor its directory is ever created.
  kReadOnly,
};

class SqliteBackend final : public RecordBackend {
 public:
  // A lock held by another process is waited for up to 5 s, less once `cancel` is stopped:
  // the request then fails at once (SQLITE_BUSY).
  static Result<std::unique_ptr<SqliteBackend>> Open(const std::string& path, SqliteOpenMode mode,
                                                     std::stop_token cancel = {});
  ~SqliteBackend() override;
  SqliteBackend(const SqliteBackend&) = delete;
  SqliteBackend& operator=(const SqliteBackend&) = delete;

  std::string Describe() const override;
  // How many times this reader followed its path to another file (FollowReplacedFile).
  std::uint64_t Incarnation() const override { return incarnation_; }
  Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                    bool consistent) override;
  Result<std::vector<Record>> ReadAll() override;
  bool ReadAllIsSnapshot() const override { return true; }
  Result<void> Write(const ConditionalWrite& write) override;
  std::size_t MaxRecordsPerWrite() const override { return 0; }
  Result<std::optional<Lease>> ReadLease() override;
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override;
  // inotify on the db and -wal files; notifies once per commit, when it is visible (whatever it
  // wrote: node reports and the lease live in the same file).
  bool Watch(std::function<void()> on_change) override;
  // inotify sees every write made on this host through the file system (SQLite writes with
  // pwrite, never through a shared mapping), and a store made again (a new name in the
  // directory), as long as the directory itself was neither removed nor moved away.
  bool WatchSeesEveryWrite() const override { return watcher_ != nullptr && watcher_->Watching(); }
  void Unwatched(const std::function<void()>& write) override {
    watcher_ ? watcher_->Unwatched(write) : write();
  }

 private:
  SqliteBackend(sqlite3* db, std::string path, SqliteOpenMode mode, std::stop_token cancel)
      : db_(db),
        path_(std::move(path)),
        mode_(mode),
        cancel_(std::move(cancel)),
        file_(SqliteFileId::Of(path_)) {}
  // SQLite's busy handler: waits for another connection's lock in steps of at most 20 ms, for
  // up to kBusyTimeout in all, and not at all once cancel_ is stopped.
  static int WaitWhileBusy(void* backend, int attempt);
  // Read-only (an agent): when the path names another file that is a slot store (the
  // orchestrator made it again, a backup was restored), reads go to that one from now on.
  // While nothing or something else is there, the file opened is read on: an agent keeps the
  // last table rather than losing it. A writer (the orchestrator, `hsdo set-state`) follows
  // only a store `hsdo init-table` made after the one it opened, or one no orchestrator has
  // written yet (generation 0, no lease), which the leader then fills with the table it holds,
  // as a wiped store.
  void FollowReplacedFile();
  // A writer writes only while the path still names the file it opened (or one it followed):
  // kUnavailable otherwise (its table and lease writes then fail, loudly, and agents keep the
  // last table).
  Result<void> StillAtPath() const;
  Result<std::optional<Lease>> ReadLeaseRow();  // in the file open now (in a transaction too)
  Result<void> Exec(const char* sql);
  // Adds the columns a store made by an older hsdo lacks (read-write opens only).
  Result<void> AddMissingColumns();
  // Read-only: looks again for the columns while some are missing.
  Result<void> RefreshColumns();
  Result<std::optional<Record>> ReadGenerationOnly();

  sqlite3* db_;
  std::string path_;
  SqliteOpenMode mode_;
  std::stop_token cancel_;
  std::chrono::steady_clock::time_point busy_since_{};  // the current wait's first attempt
  std::optional<SqliteFileId> file_;                    // the file db_ reads
  std::optional<SqliteFileId> refused_;  // the last file at the path not read as a store
  std::optional<SqliteFileId> written_;  // a writer's: the last one refused as written already
  std::uint64_t incarnation_ = 0;
  std::size_t columns_ = 9;  // how many of the slot columns the table has (see sqlite_store.cc)
  std::unique_ptr<FileWatcher> watcher_;
  // The -shm file, opened by the watcher's thread to see another process's write lock; closed
  // only after the connection (closing any descriptor of a file drops every POSIX lock this
  // process holds on it, SQLite's own included).
  int shm_fd_ = -1;
  sqlite3_stmt* generation_stmt_ = nullptr;  // prepared on first use
};

class SqliteStore final : public SlotTableStore {
 public:
  // Opens the store at `path` for a table of `list_size` slots.
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, int list_size,
                                                   SqliteOpenMode mode = SqliteOpenMode::kCreate,
                                                   std::stop_token cancel = {});
  // `create` false is kReadOnly.
  static Result<std::unique_ptr<SqliteStore>> Open(const std::string& path, int list_size,
                                                   bool create) {
    return Open(path, list_size, create ? SqliteOpenMode::kCreate : SqliteOpenMode::kReadOnly);
  }

  using SlotTableStore::SlotTableStore;
};

// Node records (issue 10, item 3) in the `nodes` table of the store's file: one row per node
// name, the record's JSON text (store/node_report_codec.h). Python agents read only the slots
// table. The table is created by the orchestrator's read-write open (kSchema); this class
// never creates the file nor the table. It opens its own connection on first use:
//   kWriter (an agent's sink): read-write, used only for its node's row; while the file or the
//     table does not exist (no orchestrator yet, an older hsdo) a report is not stored, which
//     is logged once and counted. A short busy timeout: a report never holds a cycle long.
//   kReader (the orchestrator, `hsdo status --fleet`): read-only.
class SqliteNodeReports final : public NodeReportSink, public NodeReportReader {
 public:
  enum class Mode { kWriter, kReader };
  static constexpr int kBusyTimeoutMs = 200;

  // `registry` may be null (no metrics).
  SqliteNodeReports(std::string path, Mode mode, prometheus::Registry* registry = nullptr);
  ~SqliteNodeReports() override;
  SqliteNodeReports(const SqliteNodeReports&) = delete;
  SqliteNodeReports& operator=(const SqliteNodeReports&) = delete;

  Result<void> Report(const NodeReport& report) override;
  // SQLite's `PRAGMA data_version` on the reports' connection, which moves with every commit
  // of another connection (another process's, or another of this one's) and never with its
  // own. True when it cannot tell: not connected yet, the first call, an error, and when the
  // path no longer names the file this connection opened (a store made again).
  bool OthersMayHaveWritten() override;
  // Every valid record, by name; an absent file or table is no records.
  Result<std::vector<NodeReport>> ReadNodeReports() override;
  // On a read-write connection of its own, opened for the delete (in either mode).
  Result<bool> DeleteNodeReport(const std::string& name, WallTime reported_at) override;

  const NodeRecordLog& log() const { return log_; }

 private:
  Result<void> Connect();
  void Disconnect();

  std::string path_;
  Mode mode_;
  std::mutex mutex_;  // the connection: the agent's loop reports, a watcher's thread asks
  sqlite3* db_ = nullptr;
  std::optional<SqliteFileId> file_;     // the file db_ writes; another at the path: reconnect
  sqlite3_stmt* report_stmt_ = nullptr;  // prepared on the first report of a connection
  sqlite3_stmt* data_version_stmt_ = nullptr;  // prepared on the first OthersMayHaveWritten
  std::optional<long long> data_version_;      // as the last OthersMayHaveWritten saw it
  // Opened read-only though asked to write (file permissions, a read-only mount): the
  // connection is kept, and made again only once the file may be written, at most once a
  // minute (doubling up to an hour while that still opens read-only). Made again every
  // report, each one held a descriptor for good (SQLite keeps a closed one while another
  // connection of the process locks the file, and reuses it only for the same open flags):
  // the agent ran out of them within the hour.
  bool read_only_ = false;
  std::chrono::steady_clock::time_point reconnected_at_{};
  std::chrono::minutes reconnect_wait_{1};
  NodeRecordLog log_;
};

}  // namespace hsdo
