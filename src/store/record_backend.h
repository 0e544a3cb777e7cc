// RecordBackend: the little a slot store needs from a database, so that the slot-table
// protocol (seed record codec, generation, chunking; store/slot_table_store.h) is written
// once and SQLite, DynamoDB and etcd are thin adapters of this interface.
//
// The record model is the seed's DynamoDB table (ARCHITECTURE.md, "Store layout"): one record
// per slot keyed by BackendServerID, attributes that are strings (S) or integers (N), and the
// table's metadata (TableGeneration, Overflow, the leader lease) as extra attributes of
// record 1. A backend may keep the metadata elsewhere (SQLite: a meta table; etcd: a
// generation key) but presents it as attributes of record 1 in Get and ReadAll.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace hsdo {

// One attribute value as the store holds it. Numbers stay text (DynamoDB's N is a string;
// SQLite's INTEGER is printed in decimal) so that the one codec validates every store alike.
struct AttributeValue {
  enum class Type {
    kString,  // DynamoDB S, SQLite TEXT, JSON string
    kNumber,  // DynamoDB N, SQLite INTEGER, JSON number (decimal text)
    kOther,   // anything else (SQLite REAL/BLOB, DynamoDB BOOL/L/M...): the codec refuses it
  };
  Type type = Type::kString;
  std::string text;

  static AttributeValue String(std::string text) { return {Type::kString, std::move(text)}; }
  static AttributeValue Number(std::int64_t value) {
    return {Type::kNumber, std::to_string(value)};
  }
  bool operator==(const AttributeValue&) const = default;
};

// Attribute name → value. A missing attribute is simply absent (SQLite NULL).
using Record = std::map<std::string, AttributeValue, std::less<>>;

// Attribute names of the seed's record and of hsdo's additions.
namespace attr {
inline constexpr std::string_view kId = "BackendServerID";
inline constexpr std::string_view kAddress = "IPAddress";
inline constexpr std::string_view kName = "ServerName";
inline constexpr std::string_view kGroup = "ASG";
inline constexpr std::string_view kWeight = "Weight";
inline constexpr std::string_view kStatus = "BackendServerStatus";
inline constexpr std::string_view kLastWeightUpdate = "LastWeightUpdate";
inline constexpr std::string_view kPort = "Port";
inline constexpr std::string_view kAz = "AZ";
// hsdo's additions for issue 10: a draining slot (with BackendServerStatus "disabled", and
// Weight 0: see kDrainingWeight) and an operator's override.
inline constexpr std::string_view kDrainingSince = "DrainingSince";
inline constexpr std::string_view kAdminState = "AdminState";
// When the slot's last target was taken out (Slot::removed_at), on free and filled records.
inline constexpr std::string_view kRemovedAt = "RemovedAt";
// A draining slot's weight. Its seed Weight is written 0: a Python agent reads only IPAddress
// and Weight (never BackendServerStatus), so it then keeps the server `ready` at weight 0,
// which takes no new request, as a drain does (review: it kept sending full traffic to a
// leaving target until its slot was freed). Absent from an earlier version's draining record,
// whose Weight is the slot's.
inline constexpr std::string_view kDrainingWeight = "DrainingWeight";
// Metadata on record 1.
inline constexpr std::string_view kGeneration = "TableGeneration";
// The orchestrators' lease, where it lives on record 1 (DynamoDB): its holder.
inline constexpr std::string_view kLeaseHolder = "LeaseHolder";
inline constexpr std::string_view kOverflow = "Overflow";
// "<generation>:<id>,<id>,...": the records the write that made <generation> replaced (written
// in the same transaction). A reader that holds the table at the generation before reads only
// those; anything else (another writer's bump, a prefix that is not the current generation)
// means a whole read. The Python HSDO ignores it.
inline constexpr std::string_view kLastChange = "LastChange";
// "<generation>:<ids>;<generation>:<ids>;...": the last few writes (oldest first, at most
// kMaxRecentChanges, their ids at most kMaxRecentChangeIds in all, the newest always kept),
// each as kLastChange spells it, the newest being the one kLastChange describes. A reader a
// few generations behind reads the union of the ids of the writes it missed. Kept apart from
// kLastChange so that readers of the previous version, which parse only that, are unaffected.
// Trusted only when its generations follow each other up to record 1's and its newest entry
// equals kLastChange (a writer of the previous version updates kLastChange alone).
inline constexpr std::string_view kRecentChanges = "RecentChanges";
// "<base>:<slots>" (slots as ranges: "6:1-3,5"): the mass removal the orchestrator held when it
// wrote the table (SlotTable::removal_hold), absent when none. The Python HSDO ignores it.
inline constexpr std::string_view kRemovalHold = "RemovalHold";
}  // namespace attr

// Who may write: the leader's name and the epoch of its lease. A backend that stores a lease
// checks, inside the same transaction/condition as the write, that the stored lease still
// has exactly this holder and epoch; a leader paused past its lease therefore cannot write.
struct Fence {
  std::string holder;
  std::uint64_t epoch = 0;
  bool operator==(const Fence&) const = default;
};

// The leader lease as a backend stores it (DynamoDB: attributes of record 1; SQLite: a lease
// row; etcd: a key). `version` changes with every acquisition and renewal (a random or
// increasing number, as Amazon's DynamoDB Lock Client's record version number): a standby
// takes over only after it has observed the same version for a whole `duration`, so the
// hosts' clocks never need to agree. `epoch` increases by one at each change of holder and
// is the fencing token.
struct Lease {
  std::string holder;
  std::uint64_t epoch = 0;
  std::uint64_t version = 0;
  std::int64_t duration_ms = 0;
  std::int64_t since_unix_ms = 0;  // when `holder` took it, for `hsdo status` only (info)
  // When it was last written (taken, renewed or released), by the writer's wall clock; for
  // `hsdo status` only, which tells a lease nobody renews from a live one by it (0: written by
  // an hsdo that did not store it).
  std::int64_t renewed_unix_ms = 0;
  bool operator==(const Lease&) const = default;
};

// One atomic, conditional write (one transaction).
struct ConditionalWrite {
  // Whole records to store, each with its BackendServerID; each replaces the stored record
  // (attributes absent here are removed, except the metadata attributes of record 1).
  std::vector<Record> puts;
  // Condition: the stored TableGeneration equals this; 0 means "absent or 0" (a new table,
  // or one written by the Python HSDO, which never writes a generation).
  std::uint64_t expected_generation = 0;
  // Set in the same transaction on record 1: TableGeneration = next_generation and
  // Overflow = overflow. When record 1 does not exist and is not among `puts`, it is
  // created as `free_record_1` plus those attributes (the Python clients crash on a record
  // that lacks one of the seed attributes).
  std::uint64_t next_generation = 0;
  std::int64_t overflow = 0;
  Record free_record_1;
  // Condition (when set): the lease is held with exactly this holder and epoch.
  std::optional<Fence> fence;
  // Set on record 1 as attr::kLastChange in the same transaction, by a backend whose ReadAll
  // is not a snapshot (the others read whole tables cheaply and may ignore it).
  std::string last_change;
  // Set on record 1 as attr::kRecentChanges in the same transaction, by the same backends.
  std::string recent_changes;
  // Record 1's attr::kRemovalHold, in the same transaction: nullopt leaves it as stored, empty
  // removes it, any other text sets it.
  std::optional<std::string> removal_hold;
};

class RecordBackend {
 public:
  virtual ~RecordBackend() = default;

  // For log lines and errors: "SQLite store /var/lib/hsdo/hsdo.db", "DynamoDB table 'x'".
  virtual std::string Describe() const = 0;
  // SlotStore::Incarnation.
  virtual std::uint64_t Incarnation() const { return 0; }
  // Whether `hsdo init-table` made this store (Initialise), or an orchestrator of an older
  // hsdo already wrote it. A store that is neither is what a mistyped or deleted location
  // looks like, and the orchestrator writes into none: on it every target would be placed
  // again, and every key would move. Stores whose location cannot be mistyped into a new,
  // empty one (DynamoDB: a table must exist; SQLite: the file must) say true.
  virtual Result<bool> Initialised() { return true; }
  // `hsdo init-table` for a store that has no other way to be made: marks it as made.
  // Idempotent.
  virtual Result<void> Initialise() { return Ok(); }

  // The record `id` with only the `projection` attributes (all when empty), or nullopt when
  // there is no such record. `consistent`: reflects every write acknowledged before the
  // call (else it may be stale, which a backend may use to read cheaper). Errors:
  // kNotFound when the table itself does not exist, kUnavailable for transient failures.
  virtual Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                            bool consistent) = 0;

  // Every record of the table, in any order, read consistently (each record reflects every
  // write acknowledged before the call) but not necessarily as one snapshot: the engine
  // brackets it with generation reads and reads again when a write raced it.
  virtual Result<std::vector<Record>> ReadAll() = 0;

  // The records `ids` that exist, in any order, each read consistently (not necessarily as
  // one snapshot: the engine brackets it with generation reads). The default reads them one
  // by one.
  virtual Result<std::vector<Record>> GetMany(const std::vector<int>& ids) {
    std::vector<Record> records;
    for (const int id : ids) {
      auto record = Get(id, {}, /*consistent=*/true);
      if (!record) return record.error();
      if (*record) records.push_back(std::move(**record));
    }
    return records;
  }

  // The most ids one GetSnapshot may ask for; 0 (default) when the backend cannot read
  // records as one snapshot (the engine then uses GetMany bracketed by generation reads).
  virtual std::size_t MaxSnapshotGet() const { return 0; }

  // The records `ids` that exist, in any order, read in one request as one snapshot: no
  // write is applied to some of them and not to others (DynamoDB: TransactGetItems, which is
  // serialized with TransactWriteItems). At most MaxSnapshotGet() ids.
  virtual Result<std::vector<Record>> GetSnapshot(const std::vector<int>& ids) {
    (void)ids;
    return MakeError(ErrorCode::kInvalidArgument, "{} cannot read records as one snapshot",
                     Describe());
  }

  // True when ReadAll returns one snapshot (SQLite's read transaction, etcd's range at one
  // revision): the engine then trusts the generation that ReadAll itself carries and skips
  // the bracketing reads, which a busy writer could otherwise outrun.
  virtual bool ReadAllIsSnapshot() const { return false; }

  // Applies `write` atomically if its conditions hold, else changes nothing and fails with
  // kConflict. Any other error (kUnavailable...) leaves it unknown whether the write was
  // applied (a lost answer); the engine then re-reads before writing again, and the
  // generation condition keeps a retried write from applying twice. A backend that retries
  // internally must make its retries idempotent (DynamoDB: ClientRequestToken).
  virtual Result<void> Write(const ConditionalWrite& write) = 0;

  // The most records one Write may carry (DynamoDB: 99 of its 100 transaction actions);
  // 0 when unbounded. Larger writes are split by the engine into chained writes.
  virtual std::size_t MaxRecordsPerWrite() const = 0;

  // The stored lease, or nullopt when none was ever written. Always a consistent read.
  // Backends that cannot hold a lease fail with kInvalidArgument (default).
  virtual Result<std::optional<Lease>> ReadLease() {
    return MakeError(ErrorCode::kInvalidArgument, "{} has no leader lease", Describe());
  }

  // Stores `lease` if the stored lease's version is still `expected_version` (nullopt: no
  // lease stored yet), atomically; else kConflict. Never touches the slot records.
  virtual Result<void> WriteLease(const Lease& lease,
                                  std::optional<std::uint64_t> expected_version) {
    (void)lease;
    (void)expected_version;
    return MakeError(ErrorCode::kInvalidArgument, "{} has no leader lease", Describe());
  }

  // Calls `on_change` (from a thread the backend owns and stops in its destructor) whenever
  // the table may have changed. Returns false when the backend cannot watch (the agent then
  // polls every INTERVAL, as it does anyway as a fallback).
  virtual bool Watch(std::function<void()> on_change) {
    (void)on_change;
    return false;
  }
  // True once Watch runs and calls `on_change` after every write that can change the table,
  // none missed (SQLite's inotify): a reader may then skip its polls. False for a watch that
  // can miss one (etcd's stream, which the reads themselves check for silence).
  virtual bool WatchSeesEveryWrite() const { return false; }
  // Runs `write`, a write of this process that changes no slot, without waking the watch
  // (SlotStore::Unwatched).
  virtual void Unwatched(const std::function<void()>& write) { write(); }
};

}  // namespace hsdo
