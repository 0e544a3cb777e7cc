// The node record (issue 10, item 3): one codec for every store. A node's report is stored as
// one JSON object, the same text in SQLite (table `nodes`), DynamoDB (table
// `<DYNAMODB_TABLE_NAME>-nodes`, attribute Report) and etcd (key `<prefix>/nodes/<name>`):
//   {"name": "web-1", "applied_generation": 42, "applied_at_ms": 1764500000000,
//    "reported_at_ms": 1764500001000, "draining_sessions": {"3": 12}, "interval_ms": 1000,
//    "instance": "9f86d081884c7d65", "version": "0.1.0", "pending_admission": [5]}
// Times are Unix milliseconds. Everything read back is validated here (ARCHITECTURE.md,
// invariant 5): a record that fails is skipped and counted, never trusted.
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/slot_table.h"

namespace prometheus {
class Counter;
class Registry;
}  // namespace prometheus

namespace hsdo {

// A stored record is refused beyond this size (a node has at most a list's worth of slots).
inline constexpr std::size_t kMaxNodeRecordBytes = 256 * 1024;
// A record's "version" longer than this, or not printable ASCII without spaces, reads as "".
inline constexpr std::size_t kMaxVersionBytes = 64;

std::string EncodeNodeReport(const NodeReport& report);
// kInvalidArgument when the text is not a valid node record.
Result<NodeReport> DecodeNodeReport(std::string_view text);

// HSDO_NODE_NAME, or the host name when it is empty; kInvalidArgument when the result is not a
// valid node name (config validates HSDO_NODE_NAME; a host name is checked here).
Result<std::string> ResolveNodeName(const std::string& configured);

// A node record as a store holds it, before validation: the name its key gives and its text.
struct StoredNodeRecord {
  std::string key_name;
  std::string text;
};

// What the node-record adapters of every store share: decoding what they read (a bad record is
// skipped, counted in hsdo_node_records_invalid_total and logged once per name) and reporting
// a report they could not store (counted in hsdo_node_reports_unstored_total, logged once
// until a report is stored again): a node report is never worth failing an agent's cycle.
class NodeRecordLog {
 public:
  // `registry` may be null (no metrics); `where` names the store in log lines.
  NodeRecordLog(prometheus::Registry* registry, std::string where);

  // The valid reports among `records`, in the order given.
  std::vector<NodeReport> Decode(std::span<const StoredNodeRecord> records);
  // Logs `error` (once, until Stored()), counts it and returns it.
  Error Unstored(Error error);
  void Stored();

  std::uint64_t invalid() const { return invalid_; }
  std::uint64_t unstored() const { return unstored_; }

 private:
  std::string where_;
  prometheus::Counter* invalid_counter_ = nullptr;
  prometheus::Counter* unstored_counter_ = nullptr;
  std::uint64_t invalid_ = 0;
  std::uint64_t unstored_ = 0;
  std::set<std::string> logged_invalid_;
  bool unstored_logged_ = false;
};

}  // namespace hsdo
