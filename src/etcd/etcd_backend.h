// EtcdBackend: the slot table in etcd v3 (STORE=etcd), a RecordBackend of the one slot-table
// engine. Layout under ETCD_PREFIX (default /hsdo/<DYNAMODB_TABLE_NAME or "default">):
//   <prefix>/slots/<id>   one key per slot: the seed record as a JSON object, with the same
//                         attribute names as the DynamoDB items (strings and integers);
//   <prefix>/generation   {"TableGeneration": N, "Overflow": N, "WriteId": "..."}, presented
//                         to the engine as attributes of record 1;
//   <prefix>/lease        the leader lease (holder, epoch, version, duration, since), written
//                         with a txn on its mod revision;
//   <prefix>/fence        {"epoch": N, "holder": "..."} of the lease's holder, written with the
//                         lease; a fenced table write compares its value in the same txn;
//   <prefix>/nodes/<name> the agents' node records (EtcdNodeReports below);
//   <prefix>/store        put once by `hsdo init-table`: the orchestrator writes under no
//                         prefix without it, a generation key or a lease (Initialised).
// Every write is one txn that puts the records and the generation key, conditioned on the
// generation key's mod revision (so a write based on a stale read fails as a conflict). One
// range over the prefix is a snapshot at one revision. Agents watch the generation key (it
// changes in every write) instead of polling.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "common/result.h"
#include "config/config.h"
#include "etcd/etcd_client.h"
#include "store/node_report.h"
#include "store/node_report_codec.h"
#include "store/record_backend.h"

namespace prometheus {
class Registry;
class Counter;
}  // namespace prometheus

namespace hsdo::etcd {

// etcd's default --max-txn-ops is 128: one op is the generation key, and the nested txn that
// creates record 1 when it is missing counts as two (measured on etcd 3.4).
inline constexpr std::size_t kMaxRecordsPerTxn = 125;

// The record codec's JSON form (pure): strings stay strings, numbers are JSON integers;
// anything else read back is kOther, which the engine's codec refuses.
std::string RecordToJson(const Record& record);
Result<Record> JsonToRecord(std::string_view text);

class EtcdBackend final : public RecordBackend {
 public:
  EtcdBackend(std::unique_ptr<EtcdClient> client, std::string prefix,
              prometheus::Registry* registry = nullptr);
  ~EtcdBackend() override;
  EtcdBackend(const EtcdBackend&) = delete;
  EtcdBackend& operator=(const EtcdBackend&) = delete;

  std::string Describe() const override;
  Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                    bool consistent) override;
  Result<std::vector<Record>> ReadAll() override;
  // One range over the prefix: every record and the generation at one revision.
  bool ReadAllIsSnapshot() const override { return true; }
  Result<void> Write(const ConditionalWrite& write) override;
  Result<bool> Initialised() override;
  Result<void> Initialise() override;
  std::size_t MaxRecordsPerWrite() const override { return kMaxRecordsPerTxn; }
  bool Watch(std::function<void()> on_change) override;
  Result<std::optional<Lease>> ReadLease() override;
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override;

  // The leader compacts etcd's history every `interval` (0: never), at its lease writes, up to
  // the revision it saw one interval before: every node report and lease renewal is a
  // revision, and etcd keeps them all until compacted (its default), until its space quota
  // (2 GB) stops every write, the slot table's too.
  void SetCompaction(std::chrono::milliseconds interval) { compaction_interval_ = interval; }

  std::string SlotKey(int id) const;
  const std::string& generation_key() const { return generation_key_; }
  const std::string& lease_key() const { return lease_key_; }
  // Watch streams lost and re-created since start (for tests and metrics).
  std::uint64_t watch_restarts() const { return watch_restarts_.load(); }

 private:
  struct Generation {
    std::uint64_t generation = 0;
    std::int64_t overflow = 0;
    std::int64_t mod_revision = 0;  // 0: the key does not exist
    std::string write_id;
    std::string removal_hold;  // attr::kRemovalHold, empty when none
  };
  static Result<Generation> ParseGeneration(const std::optional<KeyValue>& kv);
  Result<Generation> ReadGenerationKey();
  Result<std::optional<std::pair<Lease, std::int64_t>>> ReadLeaseKey();  // with mod revision
  void Remember(const Generation& generation);
  void WatchLoop(std::stop_token stop, std::function<void()> on_change);
  bool SleepFor(std::stop_token& stop, std::chrono::milliseconds duration);

  std::unique_ptr<EtcdClient> client_;
  std::string prefix_;
  std::string slots_prefix_;
  std::string generation_key_;
  std::string lease_key_;
  std::string fence_key_;
  std::string store_key_;
  Record SlotRecord(const std::string& key, std::string_view value, int id);

  std::mutex mutex_;                                 // guards last_ and corrupt_said_
  Generation last_;                                  // the generation key as last read or written
  std::map<std::string, std::string> corrupt_said_;  // slot key -> why its value was refused
  std::uint64_t write_count_ = 0;
  std::uint64_t write_id_seed_;
  std::atomic<std::uint64_t> watch_restarts_{0};
  prometheus::Counter* watch_restart_counter_ = nullptr;
  // A watch stream can fall silent without breaking (its member stopped or cut off): when the
  // agent's reads see a revision that the watch has not reported for kWatchLagLimit, the
  // stream is ended and watched again.
  void CheckWatchLag(std::int64_t read_revision);
  void MaybeCompact(std::int64_t revision);
  // The lease as this backend last read or wrote it: its version and the key's mod revision.
  struct LeaseSeen {
    std::uint64_t version = 0;
    std::int64_t mod_revision = 0;
  };
  std::optional<LeaseSeen> lease_seen_;
  std::chrono::milliseconds compaction_interval_{0};
  std::int64_t compact_to_ = 0;  // the revision seen at the last compaction (or the first)
  std::chrono::steady_clock::time_point compact_due_;
  std::string compact_error_;  // the last compaction's error, logged once
  std::atomic<std::int64_t> watched_revision_{0};
  std::int64_t lagging_revision_ = 0;  // guarded by mutex_
  std::chrono::steady_clock::time_point lagging_since_;
  std::mutex stream_mutex_;
  std::stop_source stream_stop_;  // ends the current stream
  std::mutex sleep_mutex_;
  std::condition_variable_any sleep_cv_;
  std::jthread watcher_;  // last: stopped and joined first
};

// Node records (issue 10, item 3): key `<prefix>/nodes/<name>`, the record's JSON text
// (store/node_report_codec.h), written by each agent with a plain put (no lease: liveness is
// the record's reported_at, the same for every store) and read with one range over
// `<prefix>/nodes/`. A record whose name is not its key's is skipped and counted.
class EtcdNodeReports final : public NodeReportSink, public NodeReportReader {
 public:
  // `registry` may be null (no metrics).
  EtcdNodeReports(std::unique_ptr<EtcdClient> client, const std::string& prefix,
                  prometheus::Registry* registry = nullptr);

  Result<void> Report(const NodeReport& report) override;
  Result<std::vector<NodeReport>> ReadNodeReports() override;
  // A read of the key, then a txn that deletes it if its mod revision is still the one read.
  Result<bool> DeleteNodeReport(const std::string& name, WallTime reported_at) override;

  std::string NodeKey(const std::string& name) const { return nodes_prefix_ + name; }
  const NodeRecordLog& log() const { return log_; }

 private:
  std::unique_ptr<EtcdClient> client_;
  std::string nodes_prefix_;
  NodeRecordLog log_;
};

// Checks ETCD_* beyond what the config loader does (prefix, TLS files) and builds the client.
Result<ClientOptions> MakeClientOptions(const EtcdConfig& config);
// `registry` may be null (no metrics). `cancel` ends requests in flight at shutdown
// (ClientOptions::cancel).
Result<std::unique_ptr<EtcdBackend>> MakeEtcdBackend(const EtcdConfig& config,
                                                     prometheus::Registry* registry = nullptr,
                                                     std::stop_token cancel = {});

Result<std::unique_ptr<EtcdNodeReports>> MakeEtcdNodeReports(
    const EtcdConfig& config, prometheus::Registry* registry = nullptr,
    std::stop_token cancel = {});

}  // namespace hsdo::etcd
