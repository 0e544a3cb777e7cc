#include "aws/dynamodb_store.h"

#include <algorithm>
#include <charconv>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "common/python_time.h"
#include "common/validate.h"

namespace hsdo::aws {

namespace {

using nlohmann::json;

constexpr std::string_view kTargetPrefix = "DynamoDB_20120810";
constexpr std::string_view kNone = "none";
// A Scan racing a write is retried this many times before giving up for this cycle.
constexpr int kMaxScanAttempts = 3;

json S(std::string_view value) { return json{{"S", value}}; }
json N(std::int64_t value) { return json{{"N", std::to_string(value)}}; }

json Key(int id) { return json{{"BackendServerID", N(id)}}; }

std::optional<std::string> GetS(const json& item, const char* name) {
  const auto it = item.find(name);
  if (it == item.end() || !it->is_object()) return std::nullopt;
  const auto s = it->find("S");
  if (s == it->end() || !s->is_string()) return std::nullopt;
  return s->get<std::string>();
}

// DynamoDB numbers travel as strings; hsdo only stores integers.
std::optional<std::int64_t> GetN(const json& item, const char* name) {
  const auto it = item.find(name);
  if (it == item.end() || !it->is_object()) return std::nullopt;
  const auto n = it->find("N");
  if (n == it->end() || !n->is_string()) return std::nullopt;
  const std::string& text = n->get_ref<const std::string&>();
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return value;
}

// The condition that the stored generation is still `expected`; a table the original
// server wrote has no TableGeneration at all, which counts as generation 0.
void AddGenerationCondition(json& action, std::uint64_t expected) {
  if (expected == 0) {
    action["ConditionExpression"] =
        "attribute_not_exists(TableGeneration) OR TableGeneration = :expected";
  } else {
    action["ConditionExpression"] = "TableGeneration = :expected";
  }
  action["ExpressionAttributeValues"][":expected"] = N(static_cast<std::int64_t>(expected));
}

}  // namespace

json SlotToItem(const Slot& slot) {
  json item = Key(slot.id);
  if (slot.enabled() && !slot.target.address.empty()) {
    item["IPAddress"] = S(slot.target.address);
    item["ServerName"] = S(slot.target.name.empty() ? slot.target.address : slot.target.name);
    item["ASG"] = S(slot.target.group.empty() ? kNone : std::string_view(slot.target.group));
    item["Weight"] = N(slot.weight);
    item["BackendServerStatus"] = S("enabled");
    item["LastWeightUpdate"] =
        S(slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update)
                                  : std::string(kFreeSlotTime));
    if (slot.target.port) item["Port"] = N(*slot.target.port);
    if (!slot.target.az.empty()) item["AZ"] = S(slot.target.az);
  } else {
    // The seed's free slot, exactly.
    item["IPAddress"] = S(kNone);
    item["ServerName"] = S(kNone);
    item["ASG"] = S(kNone);
    item["Weight"] = N(0);
    item["BackendServerStatus"] = S("disabled");
    item["LastWeightUpdate"] = S(kFreeSlotTime);
  }
  return item;
}

std::optional<int> ItemSlotId(const json& item) {
  const auto id = GetN(item, "BackendServerID");
  if (!id || *id < 1 || *id > 1'000'000) return std::nullopt;
  return static_cast<int>(*id);
}

Result<Slot> ItemToSlot(const json& item, int id) {
  const auto status = GetS(item, "BackendServerStatus");
  if (!status) return MakeError(ErrorCode::kInvalidArgument, "no BackendServerStatus");
  if (*status == "disabled") return Slot::Free(id);
  if (*status != "enabled") {
    return MakeError(ErrorCode::kInvalidArgument,
                     "BackendServerStatus is neither enabled nor "
                     "disabled");
  }
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  const auto address = GetS(item, "IPAddress");
  const auto canonical = address ? CanonicalIp(*address) : std::nullopt;
  if (!canonical) return MakeError(ErrorCode::kInvalidArgument, "IPAddress is not an IP literal");
  slot.target.address = *canonical;
  const auto weight = GetN(item, "Weight");
  if (!weight || *weight < 0 || *weight > 256) {
    return MakeError(ErrorCode::kInvalidArgument, "Weight is not a number in 0-256");
  }
  slot.weight = static_cast<int>(*weight);
  const auto name = GetS(item, "ServerName");
  if (name && *name != kNone) {
    if (!IsValidLabel(*name)) return MakeError(ErrorCode::kInvalidArgument, "invalid ServerName");
    slot.target.name = *name;
  }
  const auto group = GetS(item, "ASG");
  if (group && *group != kNone) {
    if (!IsValidLabel(*group)) return MakeError(ErrorCode::kInvalidArgument, "invalid ASG");
    slot.target.group = *group;
  }
  if (item.contains("Port")) {
    const auto port = GetN(item, "Port");
    if (!port || *port < 1 || *port > 65535) {
      return MakeError(ErrorCode::kInvalidArgument, "Port is not in 1-65535");
    }
    slot.target.port = static_cast<std::uint16_t>(*port);
  }
  if (const auto az = GetS(item, "AZ"); az && !az->empty()) {
    if (!IsValidLabel(*az)) return MakeError(ErrorCode::kInvalidArgument, "invalid AZ");
    slot.target.az = *az;
  }
  // Only the weight ramp uses it: an odd value restarts the ramp clock rather than
  // invalidating a live target.
  if (const auto time = GetS(item, "LastWeightUpdate")) {
    slot.last_weight_update = ParsePythonDatetime(*time);
  }
  return slot;
}

DynamoDbStore::DynamoDbStore(std::unique_ptr<AwsClient> client, std::string table_name,
                             int list_size, prometheus::Registry* registry)
    : client_(std::move(client)),
      table_name_(std::move(table_name)),
      list_size_(list_size),
      request_token_seed_(std::random_device{}()) {
  if (registry != nullptr) {
    invalid_counter_ = &prometheus::BuildCounter()
                            .Name("hsdo_aws_dynamodb_invalid_items_total")
                            .Help(
                                "DynamoDB slot items that failed validation and were read "
                                "as free slots")
                            .Register(*registry)
                            .Add({});
  }
}

Error DynamoDbStore::Explain(const Error& error, std::string_view what) const {
  if (error.code == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kNotFound,
                     "DynamoDB table '{}' not found in region {} (create it with `hsdo "
                     "init-table`): {}",
                     table_name_, client_->options().region, error.message);
  }
  return MakeError(error.code, "DynamoDB table '{}', {}: {}", table_name_, what, error.message);
}

Result<std::uint64_t> DynamoDbStore::ReadGenerationWith(bool consistent) {
  auto answer = client_->CallJson(kTargetPrefix, "GetItem",
                                  {{"TableName", table_name_},
                                   {"Key", Key(1)},
                                   {"ProjectionExpression", "TableGeneration"},
                                   {"ConsistentRead", consistent}});
  if (!answer) return Explain(answer.error(), "read generation");
  const auto item = answer->find("Item");
  if (item == answer->end() || !item->is_object()) return std::uint64_t{0};
  const auto generation = GetN(*item, "TableGeneration");
  if (!item->contains("TableGeneration")) return std::uint64_t{0};  // written by the seed
  if (!generation || *generation < 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "DynamoDB table '{}': TableGeneration of item "
                     "1 is not a number",
                     table_name_);
  }
  return static_cast<std::uint64_t>(*generation);
}

// Eventually consistent: one read unit at most, every agent cycle. A stale answer only
// delays a table read by one cycle; the periodic full read bounds the rest.
Result<std::uint64_t> DynamoDbStore::ReadGeneration() { return ReadGenerationWith(false); }

Result<SlotTable> DynamoDbStore::ReadTable() {
  for (int attempt = 1; attempt <= kMaxScanAttempts; ++attempt) {
    // A Scan is not a snapshot: a transaction that commits while it runs could give a torn
    // table. The generation read before and after brackets it; if it moved, scan again.
    auto before = ReadGenerationWith(true);
    if (!before) return before.error();
    SlotTable table = SlotTable::Empty(list_size_);
    table.generation = *before;
    std::optional<std::uint64_t> scanned_generation;
    std::uint64_t invalid = 0;
    json start_key;
    auto paged = Paginate([&](const std::string&) -> Result<std::string> {
      json request{{"TableName", table_name_}, {"ConsistentRead", true}};
      if (!start_key.is_null()) request["ExclusiveStartKey"] = start_key;
      auto answer = client_->CallJson(kTargetPrefix, "Scan", request);
      if (!answer) return Explain(answer.error(), "scan");
      for (const auto& item : answer->value("Items", json::array())) {
        const auto id = ItemSlotId(item);
        if (!id) {
          ++invalid;
          spdlog::warn(
              "dynamodb store: table '{}' has an item without a valid BackendServerID; "
              "ignored",
              table_name_);
          continue;
        }
        if (*id == 1) {
          if (const auto g = GetN(item, "TableGeneration"); g && *g >= 0) {
            scanned_generation = static_cast<std::uint64_t>(*g);
          }
          if (const auto o = GetN(item, "Overflow"); o && *o >= 0 && *o < 1'000'000) {
            table.overflow = static_cast<int>(*o);
          }
        }
        if (*id > list_size_) continue;  // beyond HAPROXY_BACKEND_SERVERS_LIST_SIZE
        auto slot = ItemToSlot(item, *id);
        if (!slot) {
          ++invalid;
          spdlog::warn("dynamodb store: table '{}', slot {}: {}; read as a free slot", table_name_,
                       *id, slot.error().message);
          continue;
        }
        table.slots[static_cast<std::size_t>(*id - 1)] = std::move(*slot);
      }
      const auto last = answer->find("LastEvaluatedKey");
      if (last == answer->end() || last->is_null() || last->empty()) return std::string();
      start_key = *last;
      return last->dump();  // only a token for Paginate's loop check
    });
    if (!paged) return paged.error();
    auto after = ReadGenerationWith(true);
    if (!after) return after.error();
    if (*after == *before && scanned_generation.value_or(0) == *before) {
      invalid_items_ += invalid;
      if (invalid_counter_ != nullptr) invalid_counter_->Increment(static_cast<double>(invalid));
      return table;
    }
    spdlog::debug(
        "dynamodb store: table '{}' changed during a scan (generation {} -> {}); "
        "scanning again",
        table_name_, *before, *after);
  }
  return MakeError(ErrorCode::kUnavailable,
                   "DynamoDB table '{}' kept changing during {} scans; will read again next cycle",
                   table_name_, kMaxScanAttempts);
}

Result<std::uint64_t> DynamoDbStore::WriteChunk(std::span<const Slot> slots, int overflow,
                                                std::uint64_t expected_generation) {
  const std::uint64_t next = expected_generation + 1;
  json actions = json::array();
  bool slot1_written = false;
  for (const Slot& slot : slots) {
    json put{{"TableName", table_name_}, {"Item", SlotToItem(slot)}};
    if (slot.id == 1) {
      // Slot 1 carries the generation: fold the bump into its Put, with the condition.
      put["Item"]["TableGeneration"] = N(static_cast<std::int64_t>(next));
      put["Item"]["Overflow"] = N(overflow);
      AddGenerationCondition(put, expected_generation);
      slot1_written = true;
    }
    actions.push_back({{"Put", std::move(put)}});
  }
  if (!slot1_written) {
    // if_not_exists: on a fresh table this creates slot 1 as a complete free seed item (the
    // Python clients crash on an item that lacks one of the six attributes).
    json update{{"TableName", table_name_},
                {"Key", Key(1)},
                {"UpdateExpression",
                 "SET TableGeneration = :next, Overflow = :overflow, "
                 "IPAddress = if_not_exists(IPAddress, :none), "
                 "ServerName = if_not_exists(ServerName, :none), ASG = if_not_exists(ASG, :none), "
                 "Weight = if_not_exists(Weight, :zero), "
                 "BackendServerStatus = if_not_exists(BackendServerStatus, :disabled), "
                 "LastWeightUpdate = if_not_exists(LastWeightUpdate, :free_time)"},
                {"ExpressionAttributeValues",
                 {{":next", N(static_cast<std::int64_t>(next))},
                  {":overflow", N(overflow)},
                  {":none", S(kNone)},
                  {":zero", N(0)},
                  {":disabled", S("disabled")},
                  {":free_time", S(kFreeSlotTime)}}}};
    AddGenerationCondition(update, expected_generation);
    actions.push_back({{"Update", std::move(update)}});
  }
  // Idempotency: a retry (same body, same token) after a lost answer must not fail its own
  // condition. DynamoDB takes at most 36 characters: 8 + 12 + 16 hex digits.
  const std::string token = fmt::format("{:08x}{:012x}{:016x}", request_token_seed_ & 0xffffffffu,
                                        ++request_count_ & 0xffffffffffffu, next);
  auto answer =
      client_->CallJson(kTargetPrefix, "TransactWriteItems",
                        {{"TransactItems", std::move(actions)}, {"ClientRequestToken", token}});
  if (answer) return next;
  const AwsErrorDetail& detail = client_->last_error();
  if (detail.code == "ConditionalCheckFailedException") {
    return MakeError(ErrorCode::kConflict, "DynamoDB table '{}': generation is no longer {}",
                     table_name_, expected_generation);
  }
  if (detail.code == "TransactionCanceledException") {
    // Lost the condition → somebody else wrote; anything else (TransactionConflict with a
    // concurrent reader/writer, throttling) is worth trying again next cycle.
    const json& body = client_->last_error_body();
    bool condition_failed = false;
    if (body.is_object() && body.contains("CancellationReasons") &&
        body["CancellationReasons"].is_array()) {
      for (const auto& reason : body["CancellationReasons"]) {
        if (reason.is_object() && reason.value("Code", "") == "ConditionalCheckFailed") {
          condition_failed = true;
        }
      }
    } else {
      condition_failed = detail.message.find("ConditionalCheckFailed") != std::string::npos;
    }
    if (condition_failed) {
      return MakeError(ErrorCode::kConflict, "DynamoDB table '{}': generation is no longer {}",
                       table_name_, expected_generation);
    }
    return MakeError(ErrorCode::kUnavailable, "DynamoDB table '{}': transaction cancelled: {}",
                     table_name_, detail.message);
  }
  return Explain(answer.error(), "write slots");
}

Result<std::uint64_t> DynamoDbStore::WriteSlots(std::span<const Slot> changed, int overflow,
                                                std::uint64_t expected_generation) {
  for (const Slot& slot : changed) {
    if (slot.id < 1 || slot.id > list_size_) {
      return MakeError(ErrorCode::kInvalidArgument, "slot id {} outside 1-{}", slot.id, list_size_);
    }
  }
  if (changed.size() <= kMaxSlotsPerTransaction) {
    return WriteChunk(changed, overflow, expected_generation);
  }
  // More changes than one transaction holds: several transactions, each atomic with its
  // own generation bump and conditioned on the previous one. Every intermediate table is a
  // valid one (each slot item is either its old or its new value), and agents see each
  // step as a new generation. Slots being freed go first, so that an address moving to a
  // new slot is never in two slots at once; then slot order.
  std::vector<Slot> ordered(changed.begin(), changed.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const Slot& a, const Slot& b) {
    if (a.enabled() != b.enabled()) return !a.enabled();
    return a.id < b.id;
  });
  std::uint64_t generation = expected_generation;
  for (std::size_t start = 0; start < ordered.size(); start += kMaxSlotsPerTransaction) {
    const std::size_t count = std::min(kMaxSlotsPerTransaction, ordered.size() - start);
    auto next =
        WriteChunk(std::span<const Slot>(ordered).subspan(start, count), overflow, generation);
    if (!next) return next.error();
    generation = *next;
  }
  spdlog::info("dynamodb store: {} slots written in {} transactions (generation {} -> {})",
               ordered.size(), generation - expected_generation, expected_generation, generation);
  return generation;
}

namespace {

const Clock& ClockOrSystem(const Clock* clock) {
  static const SystemClock system_clock;
  return clock != nullptr ? *clock : system_clock;
}

Result<std::unique_ptr<AwsClient>> MakeDynamoDbClient(const Config& config, const Clock& clock,
                                                      prometheus::Registry* registry,
                                                      std::stop_token cancel = {}) {
  auto credentials =
      MakeDefaultCredentialsChain(config.aws, clock, http::MakeCurlHttpClient({}, cancel));
  return MakeAwsClient(config.aws, kDynamoDb, std::move(credentials), clock,
                       registry != nullptr ? std::make_shared<AwsMetrics>(*registry) : nullptr,
                       DefaultRetryHooks(), cancel);
}

}  // namespace

Result<std::unique_ptr<SlotStore>> MakeDynamoDbStore(const Config& config,
                                                     prometheus::Registry* registry,
                                                     const Clock* clock, std::stop_token cancel) {
  if (config.dynamodb_table_name.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "STORE=dynamodb needs DYNAMODB_TABLE_NAME");
  }
  auto client = MakeDynamoDbClient(config, ClockOrSystem(clock), registry, std::move(cancel));
  if (!client) return client.error();
  return std::unique_ptr<SlotStore>(std::make_unique<DynamoDbStore>(
      std::move(*client), config.dynamodb_table_name, config.list_size, registry));
}

Result<void> InitTable(AwsClient& client, const std::string& table_name,
                       std::chrono::milliseconds max_wait,
                       const std::function<void(std::chrono::milliseconds)>& sleep) {
  const json create{
      {"TableName", table_name},
      {"AttributeDefinitions", {{{"AttributeName", "BackendServerID"}, {"AttributeType", "N"}}}},
      {"KeySchema", {{{"AttributeName", "BackendServerID"}, {"KeyType", "HASH"}}}},
      {"BillingMode", "PROVISIONED"},
      {"ProvisionedThroughput", {{"ReadCapacityUnits", 20}, {"WriteCapacityUnits", 20}}}};
  auto created = client.CallJson(kTargetPrefix, "CreateTable", create);
  if (created) {
    spdlog::info("dynamodb: creating table '{}'", table_name);
  } else if (client.last_error().code == "ResourceInUseException") {
    spdlog::info("dynamodb: table '{}' exists already", table_name);
  } else {
    return MakeError(created.error().code, "creating DynamoDB table '{}': {}", table_name,
                     created.error().message);
  }
  constexpr std::chrono::milliseconds kPoll{1'000};
  std::chrono::milliseconds waited{0};
  while (true) {
    auto described = client.CallJson(kTargetPrefix, "DescribeTable", {{"TableName", table_name}});
    if (!described) {
      return MakeError(described.error().code, "DynamoDB table '{}': {}", table_name,
                       described.error().message);
    }
    const std::string status = described->value("/Table/TableStatus"_json_pointer, "");
    if (status == "ACTIVE") {
      spdlog::info("dynamodb: table '{}' is ACTIVE", table_name);
      return Ok();
    }
    if (waited >= max_wait) {
      return MakeError(ErrorCode::kUnavailable,
                       "DynamoDB table '{}' not ACTIVE after {} s (status {})", table_name,
                       std::chrono::duration_cast<std::chrono::seconds>(max_wait).count(), status);
    }
    if (sleep) {
      sleep(kPoll);
    } else {
      std::this_thread::sleep_for(kPoll);
    }
    waited += kPoll;
  }
}

Result<void> InitTable(const Config& config, const Clock* clock) {
  if (config.dynamodb_table_name.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "init-table needs DYNAMODB_TABLE_NAME");
  }
  auto client = MakeDynamoDbClient(config, ClockOrSystem(clock), nullptr);
  if (!client) return client.error();
  return InitTable(**client, config.dynamodb_table_name);
}

}  // namespace hsdo::aws
