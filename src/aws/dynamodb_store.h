// The DynamoDB adapter: the slot table in the seed's DynamoDB table (ARCHITECTURE.md, "Store
// layout"), one item per slot keyed by BackendServerID, with the seed's six attributes
// written exactly so that the original Python clients keep working, plus:
//   Port (N, only when the target has one) and AZ (S, only when known) on slot items;
//   TableGeneration (N) and Overflow (N) on the item of slot 1.
// Why slot 1 carries the generation rather than a metadata item of its own: the Python
// clients Scan every item and index the six seed attributes, so any other item would be
// taken for a server slot (or crash them). Slot 1 always exists, and its extra attributes are
// ignored by those clients.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "aws/aws_client.h"
#include "common/clock.h"
#include "config/config.h"
#include "store/node_report.h"
#include "store/node_report_codec.h"
#include "store/record_backend.h"
#include "store/slot_table_store.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace hsdo::aws {

// TransactWriteItems takes at most 100 actions; one is the generation bump on record 1.
inline constexpr std::size_t kMaxSlotsPerTransaction = 99;
// TransactGetItems takes at most 100 items: a write's changed records and record 1.
inline constexpr std::size_t kMaxSnapshotGet = 100;

// The attribute-value JSON codec (pure): a record ↔ a DynamoDB item. S and N map to string
// and number values; any other type (BOOL, L, M, NULL...) reads as AttributeValue::kOther,
// which the seed-record codec refuses.
nlohmann::json RecordToItem(const Record& record);
Record ItemToRecord(const nlohmann::json& item);

// One page of a Scan answer, read from its text as it streams by: each item of "Items" as
// ItemToRecord reads it (an element that is not an object is an empty record) and
// "LastEvaluatedKey" when present; everything else is skipped. A whole-table Scan is 250 kB
// of JSON at 1000 slots: this reads it without building the document, in a third of the
// time (bench/store_bench.cc). Errors: kUnavailable when the text is not JSON.
struct ScanPage {
  std::vector<Record> items;
  std::optional<Record> last_evaluated_key;
};
Result<ScanPage> ParseScanPage(std::string_view answer);

// The DynamoDB adapter of RecordBackend: GetItem (projection, consistent or not), a
// consistent paginated Scan, consistent BatchGetItem, TransactGetItems (one snapshot of up to
// 100 items), and one TransactWriteItems per write in which record 1's
// Update carries the generation condition and the fence, so that a write either fully
// applies under both conditions or not at all. Record 1 is always updated, never put, so
// that the metadata and lease attributes it carries survive slot writes. The lease lives
// on record 1 too (LeaseHolder, LeaseEpoch, LeaseVersion, LeaseDurationMs, LeaseSince,
// LeaseRenewed, LeaseRenewedVersion): the Python clients scan every item, so any extra item
// would break them.
class DynamoDbBackend final : public RecordBackend {
 public:
  DynamoDbBackend(std::unique_ptr<AwsClient> client, std::string table_name);

  std::string Describe() const override;
  Result<std::optional<Record>> Get(int id, const std::vector<std::string>& projection,
                                    bool consistent) override;
  Result<std::vector<Record>> ReadAll() override;
  Result<std::vector<Record>> GetMany(const std::vector<int>& ids) override;
  std::size_t MaxSnapshotGet() const override { return kMaxSnapshotGet; }
  Result<std::vector<Record>> GetSnapshot(const std::vector<int>& ids) override;
  Result<void> Write(const ConditionalWrite& write) override;
  std::size_t MaxRecordsPerWrite() const override { return kMaxSlotsPerTransaction; }
  Result<std::optional<Lease>> ReadLease() override;
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override;

 private:
  Error Explain(const Error& error, std::string_view what) const;
  // kConflict when a TransactionCanceled/ConditionalCheckFailed answer says a condition
  // failed, else the error explained.
  Error WriteError(const Error& error, std::string_view what) const;

  std::unique_ptr<AwsClient> client_;
  std::string table_name_;
  std::uint64_t request_token_seed_;
  std::uint64_t request_count_ = 0;
};

// The slot store on DynamoDB: the one engine over the DynamoDB adapter.
class DynamoDbStore final : public SlotTableStore {
 public:
  DynamoDbStore(std::unique_ptr<AwsClient> client, std::string table_name, int list_size)
      : SlotTableStore(std::make_unique<DynamoDbBackend>(std::move(client), std::move(table_name)),
                       list_size) {}
};

// Node records (issue 10, item 3) live in a second table, `<DYNAMODB_TABLE_NAME>-nodes`, hash
// key NodeName (S), one item per node: NodeName and Report (S, the record's JSON text,
// store/node_report_codec.h). Not in the main table: the Python agents Scan it whole and take
// every item for a slot. `hsdo init-table` creates both tables.
std::string NodeTableName(const std::string& table_name);

// An agent's sink (PutItem of its item) and the readers' view (a consistent, paginated Scan).
// While the node table does not exist (init-table not run since upgrading) a report is not
// stored (logged once, counted) and a read is a kNotFound error that says so.
class DynamoDbNodeReports final : public NodeReportSink, public NodeReportReader {
 public:
  // `node_table` is the node table's own name; `registry` may be null (no metrics).
  DynamoDbNodeReports(std::unique_ptr<AwsClient> client, std::string node_table,
                      prometheus::Registry* registry = nullptr);

  Result<void> Report(const NodeReport& report) override;
  Result<std::vector<NodeReport>> ReadNodeReports() override;
  // A consistent GetItem, then a DeleteItem on the condition that the text is the one read.
  Result<bool> DeleteNodeReport(const std::string& name, WallTime reported_at) override;

  const NodeRecordLog& log() const { return log_; }

 private:
  Error Explain(const Error& error, std::string_view what) const;

  std::unique_ptr<AwsClient> client_;
  std::string table_name_;
  NodeRecordLog log_;
};

Result<std::unique_ptr<DynamoDbNodeReports>> MakeDynamoDbNodeReports(
    const Config& config, prometheus::Registry* registry = nullptr, const Clock* clock = nullptr,
    std::stop_token cancel = {});

// Wiring for the binary (`STORE=dynamodb`): credentials chain, DynamoDB client, store.
// `clock` may be null (the system clock); `registry` may be null (no metrics). `cancel` ends
// requests and retry sleeps at shutdown (AwsClientOptions::cancel).
Result<std::unique_ptr<SlotStore>> MakeDynamoDbStore(const Config& config,
                                                     prometheus::Registry* registry = nullptr,
                                                     const Clock* clock = nullptr,
                                                     std::stop_token cancel = {});

// `hsdo init-table`: creates the table as the seed's Terraform does (hash key
// BackendServerID, type N; PROVISIONED 20/20) unless it exists, then its node table (hash key
// NodeName, type S; PAY_PER_REQUEST) unless it exists, and waits until each is ACTIVE
// (polling DescribeTable, at most `max_wait` each).
Result<void> InitTable(AwsClient& client, const std::string& table_name,
                       std::chrono::milliseconds max_wait = std::chrono::seconds(120),
                       const std::function<void(std::chrono::milliseconds)>& sleep = nullptr);
Result<void> InitTable(const Config& config, const Clock* clock = nullptr);

}  // namespace hsdo::aws
