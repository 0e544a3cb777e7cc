#include "store/node_report_codec.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <limits>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "common/validate.h"

namespace hsdo {

namespace {

using nlohmann::json;

// Session counts a record may carry (HAProxy's scur is an unsigned 32-bit counter).
constexpr std::int64_t kMaxSessions = std::numeric_limits<std::int32_t>::max();
// Times within what a WallTime holds (nanoseconds since 1970 in 64 bits: 2262-04-11): year
// 9999, the limit before, overflowed them (undefined; the time read back as one before 1970).
constexpr std::int64_t kMaxUnixMs = std::numeric_limits<std::int64_t>::max() / 1'000'000;
// The longest INTERVAL the configuration takes: a year.
constexpr std::int64_t kMaxIntervalMs = 365LL * 86'400'000;

std::int64_t UnixMs(WallTime time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

WallTime FromUnixMs(std::int64_t ms) { return WallTime{std::chrono::milliseconds{ms}}; }

Error InvalidNodeRecord(std::string_view why) {
  return MakeError(ErrorCode::kInvalidArgument, "not a valid node record: {}", why);
}

// An integer field in [min, max], else nullopt.
std::optional<std::int64_t> IntegerField(const json& doc, const char* name, std::int64_t min,
                                         std::int64_t max) {
  const auto it = doc.find(name);
  if (it == doc.end() || !it->is_number_integer()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    if (value > static_cast<std::uint64_t>(max) || static_cast<std::int64_t>(value) < min) {
      return std::nullopt;
    }
    return static_cast<std::int64_t>(value);
  }
  const auto value = it->get<std::int64_t>();
  if (value < min || value > max) return std::nullopt;
  return value;
}

std::optional<std::int64_t> ParseSlotId(const std::string& text) {
  if (text.empty() || text.size() > 7 || text[0] == '0') return std::nullopt;
  std::int64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value < 1 || value > kMaxSlotId) return std::nullopt;
  return value;
}

// A JSON array of slot ids; nullopt when it is anything else.
std::optional<std::set<int>> SlotIdList(const json& list) {
  if (!list.is_array() || list.size() > kMaxSlotId) return std::nullopt;
  std::set<int> ids;
  const bool valid = std::all_of(list.begin(), list.end(), [&](const json& id) {
    const auto value = IntegerField(json{{"n", id}}, "n", 1, kMaxSlotId);
    if (value) ids.insert(static_cast<int>(*value));
    return value.has_value();
  });
  if (!valid) return std::nullopt;
  return ids;
}

}  // namespace

std::string EncodeNodeReport(const NodeReport& report) {
  json sessions = json::object();
  for (const auto& [slot, count] : report.draining_sessions) {
    sessions[std::to_string(slot)] = count;
  }
  json doc{{"name", report.name},
           {"applied_generation", report.applied_generation},
           {"applied_at_ms", UnixMs(report.applied_at)},
           {"reported_at_ms", UnixMs(report.reported_at)},
           {"draining_sessions", std::move(sessions)},
           {"interval_ms", report.interval.count()},
           {"instance", report.instance},
           {"version", report.version}};
  if (report.pending_admission) doc["pending_admission"] = *report.pending_admission;
  if (report.gates_every_slot) doc["gates_every_slot"] = *report.gates_every_slot;
  if (!report.unvouched.empty()) doc["unvouched"] = report.unvouched;
  return doc.dump();
}

Result<NodeReport> DecodeNodeReport(std::string_view text) {
  if (text.size() > kMaxNodeRecordBytes) return InvalidNodeRecord("too large");
  const json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return InvalidNodeRecord("not a JSON object");
  NodeReport report;
  const auto name = doc.find("name");
  if (name == doc.end() || !name->is_string() || !IsValidNodeName(name->get<std::string>())) {
    return InvalidNodeRecord("name");
  }
  report.name = name->get<std::string>();
  const auto generation = doc.find("applied_generation");
  if (generation == doc.end() || !generation->is_number_integer() ||
      (!generation->is_number_unsigned() && generation->get<std::int64_t>() < 0)) {
    return InvalidNodeRecord("applied_generation");
  }
  report.applied_generation = generation->get<std::uint64_t>();
  const auto applied_at = IntegerField(doc, "applied_at_ms", 0, kMaxUnixMs);
  if (!applied_at) return InvalidNodeRecord("applied_at_ms");
  report.applied_at = FromUnixMs(*applied_at);
  const auto reported_at = IntegerField(doc, "reported_at_ms", 0, kMaxUnixMs);
  if (!reported_at) return InvalidNodeRecord("reported_at_ms");
  report.reported_at = FromUnixMs(*reported_at);
  // Absent from the records of earlier versions.
  if (doc.contains("interval_ms")) {
    const auto interval = IntegerField(doc, "interval_ms", 0, kMaxIntervalMs);
    if (!interval) return InvalidNodeRecord("interval_ms");
    report.interval = std::chrono::milliseconds{*interval};
  }
  if (const auto instance = doc.find("instance"); instance != doc.end()) {
    if (!instance->is_string() || instance->get_ref<const std::string&>().size() > 32 ||
        !std::all_of(instance->get_ref<const std::string&>().begin(),
                     instance->get_ref<const std::string&>().end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); })) {
      return InvalidNodeRecord("instance");
    }
    report.instance = instance->get<std::string>();
  }
  // Informative only: one that cannot be shown is no reason to skip the node's report (its
  // sessions hold drains).
  if (const auto version = doc.find("version"); version != doc.end() && version->is_string()) {
    const auto& shown = version->get_ref<const std::string&>();
    if (shown.size() <= kMaxVersionBytes &&
        std::all_of(shown.begin(), shown.end(), [](char c) { return c > ' ' && c <= '~'; })) {
      report.version = shown;
    }
  }
  // Holds ramps only: one that cannot be read is no reason to skip the node's report (its
  // sessions hold drains); the node then counts as one that did not say.
  if (const auto pending = doc.find("pending_admission"); pending != doc.end()) {
    report.pending_admission = SlotIdList(*pending);
  }
  // Proves slots only: anything but a boolean is a node that cannot vouch (false), and so is
  // one whose `unvouched` cannot be read.
  if (const auto gates = doc.find("gates_every_slot"); gates != doc.end()) {
    report.gates_every_slot = gates->is_boolean() && gates->get<bool>();
  }
  if (const auto unvouched = doc.find("unvouched"); unvouched != doc.end()) {
    const auto ids = SlotIdList(*unvouched);
    if (ids) {
      report.unvouched = *ids;
    } else if (report.gates_every_slot) {
      report.gates_every_slot = false;
    }
  }
  const auto sessions = doc.find("draining_sessions");
  if (sessions != doc.end()) {
    if (!sessions->is_object()) return InvalidNodeRecord("draining_sessions");
    for (const auto& [slot, count] : sessions->items()) {
      const auto id = ParseSlotId(slot);
      if (!id || !count.is_number_integer()) return InvalidNodeRecord("draining_sessions");
      const json wrapped{{"n", count}};
      const auto value = IntegerField(wrapped, "n", 0, kMaxSessions);
      if (!value) return InvalidNodeRecord("draining_sessions");
      report.draining_sessions[static_cast<int>(*id)] = static_cast<int>(*value);
    }
  }
  return report;
}

Result<std::string> ResolveNodeName(const std::string& configured) {
  std::string name = configured;
  if (name.empty()) {
    char buffer[HOST_NAME_MAX + 1] = {};
    if (gethostname(buffer, sizeof(buffer) - 1) != 0) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "cannot read the host name for the node name: set HSDO_NODE_NAME");
    }
    name = buffer;
  }
  if (!IsValidNodeName(name)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "node name \"{}\" is not 1-128 printable characters without spaces: set "
                     "HSDO_NODE_NAME",
                     name);
  }
  return name;
}

NodeRecordLog::NodeRecordLog(prometheus::Registry* registry, std::string where)
    : where_(std::move(where)) {
  if (registry != nullptr) {
    invalid_counter_ = &prometheus::BuildCounter()
                            .Name("hsdo_node_records_invalid_total")
                            .Help(
                                "Node records read from the store that failed validation "
                                "and were skipped")
                            .Register(*registry)
                            .Add({});
    unstored_counter_ = &prometheus::BuildCounter()
                             .Name("hsdo_node_reports_unstored_total")
                             .Help(
                                 "This node's reports that could not be stored (no node "
                                 "table, store unreachable)")
                             .Register(*registry)
                             .Add({});
  }
}

std::vector<NodeReport> NodeRecordLog::Decode(std::span<const StoredNodeRecord> records) {
  std::vector<NodeReport> reports;
  for (const StoredNodeRecord& record : records) {
    auto report = DecodeNodeReport(record.text);
    if (report && report->name != record.key_name) {
      report = InvalidNodeRecord(fmt::format("its name \"{}\" is not its key's", report->name));
    }
    if (report) {
      reports.push_back(std::move(*report));
      continue;
    }
    ++invalid_;
    if (invalid_counter_ != nullptr) invalid_counter_->Increment();
    // Once per name: a bad record stays bad until its node rewrites it.
    // The key is what the store holds: shown only when it is a valid name.
    const std::string shown = IsValidNodeName(record.key_name) ? record.key_name : "(invalid)";
    if (logged_invalid_.size() < 1000 && logged_invalid_.insert(shown).second) {
      spdlog::warn("{}: node record of \"{}\" skipped: {}", where_, shown, report.error().message);
    }
  }
  return reports;
}

Error NodeRecordLog::Unstored(Error error) {
  ++unstored_;
  if (unstored_counter_ != nullptr) unstored_counter_->Increment();
  if (!unstored_logged_) {
    spdlog::warn("{}: this node's report is not stored (logged once until it is): {}", where_,
                 error.message);
    unstored_logged_ = true;
  }
  return error;
}

void NodeRecordLog::Stored() {
  if (unstored_logged_) spdlog::info("{}: this node's report is stored again", where_);
  unstored_logged_ = false;
}

}  // namespace hsdo
