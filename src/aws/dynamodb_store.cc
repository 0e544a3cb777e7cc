#include "aws/dynamodb_store.h"

#include <algorithm>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "store/seed_record.h"

namespace hsdo::aws {

namespace {

using nlohmann::json;

constexpr std::string_view kTargetPrefix = "DynamoDB_20120810";

// Lease attributes on record 1.
constexpr std::string_view kLeaseHolder = attr::kLeaseHolder;
constexpr std::string_view kLeaseEpoch = "LeaseEpoch";
constexpr std::string_view kLeaseVersion = "LeaseVersion";
constexpr std::string_view kLeaseDuration = "LeaseDurationMs";
constexpr std::string_view kLeaseSince = "LeaseSince";
constexpr std::string_view kLeaseRenewed = "LeaseRenewed";
// The LeaseVersion that LeaseRenewed was written with: an UpdateItem by an hsdo that does not
// write LeaseRenewed leaves the last one there, which is then not the lease's.
constexpr std::string_view kLeaseRenewedVersion = "LeaseRenewedVersion";

// Node table attributes.
constexpr std::string_view kNodeKey = "NodeName";
constexpr std::string_view kNodeReport = "Report";

// The slot attributes a write of record 1 removes when the new record lacks them.
constexpr std::string_view kSlotAttributes[] = {
    attr::kAddress,    attr::kName,      attr::kGroup,
    attr::kWeight,     attr::kStatus,    attr::kLastWeightUpdate,
    attr::kPort,       attr::kAz,        attr::kDrainingSince,
    attr::kAdminState, attr::kRemovedAt, attr::kDrainingWeight};

json S(std::string_view value) { return json{{"S", value}}; }

// The member at `path` of nested objects, or null when one of them is missing or not an
// object. (json::value with a json_pointer throws on an array on the way, and nothing above
// catches it: found by fuzzing, `{"Item":[1]}` ended the orchestrator.)
const json* Member(const json& root, std::initializer_list<std::string_view> path) {
  const json* at = &root;
  for (const std::string_view name : path) {
    if (!at->is_object()) return nullptr;
    const auto it = at->find(name);
    if (it == at->end()) return nullptr;
    at = &*it;
  }
  return at;
}
json N(std::int64_t value) { return json{{"N", std::to_string(value)}}; }
json N(std::uint64_t value) { return json{{"N", std::to_string(value)}}; }

json Key(int id) { return json{{"BackendServerID", N(static_cast<std::int64_t>(id))}}; }

json ValueJson(const AttributeValue& value) {
  return value.type == AttributeValue::Type::kNumber ? json{{"N", value.text}}
                                                     : json{{"S", value.text}};
}

// Builds an UpdateExpression with placeholders for every name and value.
class UpdateBuilder {
 public:
  void Set(std::string_view name, json value, bool if_not_exists = false) {
    const std::string n = Name(name);
    const std::string v = Value(std::move(value));
    sets_.push_back(if_not_exists ? fmt::format("{} = if_not_exists({}, {})", n, n, v)
                                  : fmt::format("{} = {}", n, v));
  }
  void Remove(std::string_view name) { removes_.push_back(Name(name)); }
  // Adds "<name> = <value>" (or attribute_not_exists when `value` is null) to the condition.
  void RequireEqual(std::string_view name, const json& value) {
    conditions_.push_back(value.is_null() ? fmt::format("attribute_not_exists({})", Name(name))
                                          : fmt::format("{} = {}", Name(name), Value(value)));
  }
  void RequireAbsentOrEqual(std::string_view name, const json& value) {
    const std::string n = Name(name);
    conditions_.push_back(fmt::format("(attribute_not_exists({}) OR {} = {})", n, n, Value(value)));
  }
  json Build(json action) const {
    std::string expression = "SET " + fmt::format("{}", fmt::join(sets_, ", "));
    if (!removes_.empty()) expression += " REMOVE " + fmt::format("{}", fmt::join(removes_, ", "));
    action["UpdateExpression"] = expression;
    if (!conditions_.empty()) {
      action["ConditionExpression"] = fmt::format("{}", fmt::join(conditions_, " AND "));
    }
    action["ExpressionAttributeNames"] = names_;
    action["ExpressionAttributeValues"] = values_;
    return action;
  }

 private:
  std::string Name(std::string_view name) {
    for (const auto& [placeholder, existing] : names_.items()) {
      if (existing == name) return placeholder;
    }
    std::string placeholder = fmt::format("#a{}", names_.size());
    names_[placeholder] = name;
    return placeholder;
  }
  std::string Value(json value) {
    std::string placeholder = fmt::format(":v{}", values_.size());
    values_[placeholder] = std::move(value);
    return placeholder;
  }

  std::vector<std::string> sets_;
  std::vector<std::string> removes_;
  std::vector<std::string> conditions_;
  json names_ = json::object();
  json values_ = json::object();
};

std::optional<std::int64_t> GetN(const Record& record, std::string_view name) {
  const auto it = record.find(name);
  if (it == record.end()) return std::nullopt;
  return ParseInteger(it->second);
}

// A consistent, paginated Scan of `table`: `on_item` for every item, in the order returned.
Result<void> ScanTable(AwsClient& client, const std::string& table,
                       const std::function<void(Record&&)>& on_item) {
  json start_key;
  return Paginate([&](const std::string&) -> Result<std::string> {
    json request{{"TableName", table}, {"ConsistentRead", true}};
    if (!start_key.is_null()) request["ExclusiveStartKey"] = start_key;
    auto answer = client.CallJsonText(kTargetPrefix, "Scan", request);
    if (!answer) return answer.error();
    auto page = ParseScanPage(*answer);
    if (!page) return page.error();
    for (Record& item : page->items) on_item(std::move(item));
    if (!page->last_evaluated_key) return std::string();
    start_key = RecordToItem(*page->last_evaluated_key);
    return start_key.dump();  // only a token for Paginate's loop check
  });
}

// nlohmann's SAX events of a Scan answer → ScanPage. `depth_` counts the open objects and
// arrays; an event is used only where the answer's shape gives it a meaning (the top
// object's "Items" and "LastEvaluatedKey", an item's attributes, an attribute's value
// object), and ignored anywhere else, which skips what lies below.
class ScanPageReader {
 public:
  explicit ScanPageReader(ScanPage& page) : page_(page) {}

  // Whether the top object had its "Items" array (a Scan's answer always does, if empty).
  bool saw_items() const { return saw_items_; }
  // Whether its "LastEvaluatedKey" was no object (null, a string, a list).
  bool bad_last_evaluated_key() const { return bad_last_evaluated_key_; }

  bool null() { return Scalar(); }
  bool boolean(bool) { return Scalar(); }
  bool number_integer(json::number_integer_t) { return Scalar(); }
  bool number_unsigned(json::number_unsigned_t) { return Scalar(); }
  bool number_float(json::number_float_t, const std::string&) { return Scalar(); }
  bool binary(json::binary_t&) { return Scalar(); }
  bool string(std::string& value) {
    if (InValueObject()) {
      value_text_ = std::move(value);
      value_is_string_ = true;
      return true;
    }
    return Scalar();
  }
  bool start_object(std::size_t) { return Open(/*object=*/true); }
  bool start_array(std::size_t) { return Open(/*object=*/false); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(std::string& name) {
    if (depth_ == 1) {
      top_key_ = name == "Items"              ? TopKey::kItems
                 : name == "LastEvaluatedKey" ? TopKey::kLastEvaluatedKey
                                              : TopKey::kOther;
    } else if (record_ != nullptr && depth_ == record_depth_) {
      attribute_ = std::move(name);
    } else if (InValueObject()) {
      // {"S": "x"} or {"N": "5"}, and nothing else: a second member makes it another type.
      if (value_type_.empty()) {
        value_type_ = std::move(name);
      } else if (name != value_type_) {
        value_mixed_ = true;
      }
      value_is_string_ = false;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    return false;
  }

 private:
  enum class TopKey { kOther, kItems, kLastEvaluatedKey };

  bool InItems() const { return in_items_ && depth_ == 2; }
  bool InValueObject() const {
    return value_open_ && record_ != nullptr && depth_ == record_depth_ + 1;
  }

  // A number, boolean, null or string where it is not a value object's member.
  bool Scalar() {
    if (depth_ == 1 && top_key_ == TopKey::kLastEvaluatedKey) bad_last_evaluated_key_ = true;
    if (InItems()) {
      page_.items.emplace_back();  // not an object: an empty record
    } else if (record_ != nullptr && depth_ == record_depth_) {
      record_->insert_or_assign(std::move(attribute_),
                                AttributeValue{AttributeValue::Type::kOther});
    } else if (InValueObject()) {
      value_is_string_ = false;
    }
    return true;
  }

  bool Open(bool object) {
    if (depth_ == 1 && !object && top_key_ == TopKey::kItems) {
      in_items_ = true;
      saw_items_ = true;
    } else if (depth_ == 1 && top_key_ == TopKey::kLastEvaluatedKey) {
      if (object) {
        StartRecord(&page_.last_evaluated_key.emplace());
      } else {
        bad_last_evaluated_key_ = true;
      }
    } else if (InItems()) {
      page_.items.emplace_back();
      if (object) StartRecord(&page_.items.back());
    } else if (record_ != nullptr && depth_ == record_depth_) {
      if (!object) {
        Scalar();  // a list where a value object belongs: another type
      } else {
        value_open_ = true;
        value_type_.clear();
        value_text_.clear();
        value_mixed_ = false;
        value_is_string_ = false;
      }
    } else if (InValueObject()) {
      value_is_string_ = false;  // {"L": [...]}, {"M": {...}}: another type
    }
    ++depth_;
    return true;
  }

  bool Close() {
    --depth_;
    if (value_open_ && record_ != nullptr && depth_ == record_depth_) {
      // The end of an attribute's value object.
      value_open_ = false;
      AttributeValue value{AttributeValue::Type::kOther};
      if (!value_mixed_ && value_is_string_ && (value_type_ == "S" || value_type_ == "N")) {
        value = AttributeValue{
            value_type_ == "S" ? AttributeValue::Type::kString : AttributeValue::Type::kNumber,
            std::move(value_text_)};
      }
      record_->insert_or_assign(std::move(attribute_), std::move(value));
    } else if (record_ != nullptr && depth_ + 1 == record_depth_) {
      record_ = nullptr;  // the end of the item
    } else if (depth_ == 1 && in_items_) {
      in_items_ = false;
    }
    return true;
  }

  void StartRecord(Record* record) {
    record_ = record;
    record_depth_ = depth_ + 1;
  }

  ScanPage& page_;
  int depth_ = 0;
  TopKey top_key_ = TopKey::kOther;
  bool in_items_ = false;
  bool saw_items_ = false;
  bool bad_last_evaluated_key_ = false;
  Record* record_ = nullptr;  // the item being read, whose members are at record_depth_
  int record_depth_ = 0;
  std::string attribute_;
  // The attribute value object being read (open or not): its first member's name, whether
  // another name followed, and whether its (last) member's value is a string.
  bool value_open_ = false;
  std::string value_type_;
  std::string value_text_;
  bool value_mixed_ = false;
  bool value_is_string_ = false;
};

}  // namespace

Result<ScanPage> ParseScanPage(std::string_view answer) {
  ScanPage page;
  ScanPageReader reader(page);
  if (!json::sax_parse(answer, &reader)) {
    return MakeError(ErrorCode::kUnavailable, "the Scan answer is not JSON");
  }
  // Read as "no items", an answer without them (an empty body, another shape) would end the
  // scan there: every slot not read yet would look free, on every node.
  if (!reader.saw_items()) {
    return MakeError(ErrorCode::kUnavailable, "the Scan answer has no Items list");
  }
  // Read as "the last page", a LastEvaluatedKey that is no key (null, a string, {}) would end
  // the scan there too.
  if (reader.bad_last_evaluated_key() ||
      (page.last_evaluated_key && page.last_evaluated_key->empty())) {
    return MakeError(ErrorCode::kUnavailable, "the Scan answer's LastEvaluatedKey is no key");
  }
  return page;
}

json RecordToItem(const Record& record) {
  json item = json::object();
  for (const auto& [name, value] : record) item[name] = ValueJson(value);
  return item;
}

Record ItemToRecord(const json& item) {
  Record record;
  if (!item.is_object()) return record;
  for (const auto& [name, value] : item.items()) {
    AttributeValue parsed{AttributeValue::Type::kOther, ""};
    if (value.is_object() && value.size() == 1) {
      if (const auto s = value.find("S"); s != value.end() && s->is_string()) {
        parsed = AttributeValue::String(s->get<std::string>());
      } else if (const auto n = value.find("N"); n != value.end() && n->is_string()) {
        parsed = AttributeValue{AttributeValue::Type::kNumber, n->get<std::string>()};
      }
    }
    record.insert_or_assign(name, std::move(parsed));
  }
  return record;
}

DynamoDbBackend::DynamoDbBackend(std::unique_ptr<AwsClient> client, std::string table_name)
    : client_(std::move(client)),
      table_name_(std::move(table_name)),
      request_token_seed_(std::random_device{}()) {}

std::string DynamoDbBackend::Describe() const {
  return fmt::format("DynamoDB table '{}'", table_name_);
}

Error DynamoDbBackend::Explain(const Error& error, std::string_view what) const {
  if (error.code == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kNotFound,
                     "DynamoDB table '{}' not found in region {} (create it with `hsdo "
                     "init-table`): {}",
                     table_name_, client_->options().region, error.message);
  }
  return MakeError(error.code, "DynamoDB table '{}', {}: {}", table_name_, what, error.message);
}

Error DynamoDbBackend::WriteError(const Error& error, std::string_view what) const {
  const AwsErrorDetail& detail = client_->last_error();
  if (detail.code == "ConditionalCheckFailedException") {
    return MakeError(ErrorCode::kConflict, "{}: a condition failed", what);
  }
  if (detail.code == "TransactionCanceledException") {
    // Lost a condition → somebody else wrote; anything else (TransactionConflict with a
    // concurrent reader/writer, throttling) is worth trying again next cycle.
    const json& body = client_->last_error_body();
    bool condition_failed = false;
    if (body.is_object() && body.contains("CancellationReasons") &&
        body["CancellationReasons"].is_array()) {
      for (const auto& reason : body["CancellationReasons"]) {
        const auto code = reason.is_object() ? reason.find("Code") : reason.end();
        if (code != reason.end() && code->is_string() && *code == "ConditionalCheckFailed") {
          condition_failed = true;
        }
      }
    } else {
      condition_failed = detail.message.find("ConditionalCheckFailed") != std::string::npos;
    }
    if (condition_failed) return MakeError(ErrorCode::kConflict, "{}: a condition failed", what);
    return MakeError(ErrorCode::kUnavailable, "DynamoDB table '{}': transaction cancelled: {}",
                     table_name_, detail.message);
  }
  return Explain(error, what);
}

Result<std::optional<Record>> DynamoDbBackend::Get(int id,
                                                   const std::vector<std::string>& projection,
                                                   bool consistent) {
  json request{{"TableName", table_name_}, {"Key", Key(id)}, {"ConsistentRead", consistent}};
  if (!projection.empty()) {
    request["ProjectionExpression"] = fmt::format("{}", fmt::join(projection, ", "));
  }
  auto answer = client_->CallJson(kTargetPrefix, "GetItem", request);
  if (!answer) return Explain(answer.error(), "get item");
  const auto item = answer->find("Item");
  if (item == answer->end() || !item->is_object()) return std::optional<Record>();
  return std::optional<Record>(ItemToRecord(*item));
}

Result<std::vector<Record>> DynamoDbBackend::ReadAll() {
  std::vector<Record> records;
  auto scanned =
      ScanTable(*client_, table_name_, [&](Record&& item) { records.push_back(std::move(item)); });
  if (!scanned) return Explain(scanned.error(), "scan");
  return records;
}

Result<std::vector<Record>> DynamoDbBackend::GetMany(const std::vector<int>& ids) {
  // BatchGetItem takes 100 keys; it may leave some unprocessed (throttling), asked again a
  // few times before giving up (the engine then reads the whole table).
  constexpr std::size_t kMaxKeys = 100;
  constexpr int kMaxRounds = 4;
  std::vector<Record> records;
  for (std::size_t start = 0; start < ids.size(); start += kMaxKeys) {
    json keys = json::array();
    for (std::size_t i = start; i < std::min(ids.size(), start + kMaxKeys); ++i) {
      keys.push_back(Key(ids[i]));
    }
    for (int round = 1; !keys.empty(); ++round) {
      if (round > kMaxRounds) {
        return MakeError(ErrorCode::kUnavailable, "DynamoDB table '{}': keys left unprocessed",
                         table_name_);
      }
      // Keys left unprocessed are throttled reads: asked again after 50, 100, 200 ms, as AWS
      // asks (they went again at once, and a read still throttled fell back to a Scan).
      if (round > 1 && !client_->Pause(std::chrono::milliseconds(50 << (round - 2)))) {
        return MakeError(ErrorCode::kUnavailable, "DynamoDB table '{}': read cancelled",
                         table_name_);
      }
      json request{
          {"RequestItems", {{table_name_, {{"Keys", std::move(keys)}, {"ConsistentRead", true}}}}}};
      auto answer = client_->CallJson(kTargetPrefix, "BatchGetItem", request);
      if (!answer) return Explain(answer.error(), "batch get items");
      const auto unprocessed = answer->find("UnprocessedKeys");
      const json* left = nullptr;  // this table's entry, {"Keys": [...]}
      if (unprocessed != answer->end() && unprocessed->is_object()) {
        const auto found = unprocessed->find(table_name_);
        if (found != unprocessed->end()) left = &*found;
      }
      keys = json::array();
      if (left != nullptr) {
        const auto listed = left->is_object() ? left->find("Keys") : left->end();
        if (!left->is_object() || listed == left->end() || !listed->is_array()) {
          return MakeError(ErrorCode::kUnavailable,
                           "DynamoDB table '{}': BatchGetItem answered its unprocessed keys in "
                           "another shape",
                           table_name_);
        }
        keys = *listed;
      }
      // DynamoDB lists the table in Responses whenever it read a key of it, an empty list if
      // none was there (it answers an error when it could read none). Without that list, the
      // keys it did not leave unprocessed would read as freed slots.
      const auto responses = answer->find("Responses");
      const json* items = nullptr;
      if (responses != answer->end() && responses->is_object()) {
        const auto found = responses->find(table_name_);
        if (found != responses->end() && found->is_array()) items = &*found;
      }
      if (items == nullptr) {
        return MakeError(ErrorCode::kUnavailable,
                         "DynamoDB table '{}': BatchGetItem answered without the table's list",
                         table_name_);
      }
      for (const auto& item : *items) records.push_back(ItemToRecord(item));
    }
  }
  return records;
}

Result<std::vector<Record>> DynamoDbBackend::GetSnapshot(const std::vector<int>& ids) {
  if (ids.size() > kMaxSnapshotGet) {
    return MakeError(ErrorCode::kInvalidArgument, "{} keys, TransactGetItems takes {}", ids.size(),
                     kMaxSnapshotGet);
  }
  json items = json::array();
  for (const int id : ids) {
    items.push_back({{"Get", {{"TableName", table_name_}, {"Key", Key(id)}}}});
  }
  auto answer = client_->CallJson(kTargetPrefix, "TransactGetItems", {{"TransactItems", items}});
  // A cancellation (a write transaction on the same items in progress) is worth another try.
  if (!answer) return WriteError(answer.error(), "transact get items");
  // One response per item asked, in the request's order ({} for an item that is not there).
  // Another count is an answer this reader does not understand: read as absent, those items
  // would be freed slots.
  const auto responses = answer->find("Responses");
  if (responses == answer->end() || !responses->is_array() || responses->size() != ids.size()) {
    return MakeError(
        ErrorCode::kUnavailable,
        "DynamoDB table '{}': TransactGetItems answered {} responses for {} items", table_name_,
        responses != answer->end() && responses->is_array() ? responses->size() : 0, ids.size());
  }
  std::vector<Record> records;
  for (const auto& response : *responses) {
    // Skipped, a response that is no object (null) would read as a freed slot.
    if (!response.is_object()) {
      return MakeError(ErrorCode::kUnavailable,
                       "DynamoDB table '{}': TransactGetItems answered a response that is no "
                       "object",
                       table_name_);
    }
    const auto item = response.find("Item");
    if (item != response.end() && item->is_object()) records.push_back(ItemToRecord(*item));
  }
  return records;
}

Result<void> DynamoDbBackend::Write(const ConditionalWrite& write) {
  json actions = json::array();
  const Record* record_1 = nullptr;
  for (const Record& record : write.puts) {
    if (RecordId(record) == 1) {
      record_1 = &record;
      continue;
    }
    actions.push_back({{"Put", {{"TableName", table_name_}, {"Item", RecordToItem(record)}}}});
  }
  // Record 1 is updated, never put: its metadata and lease attributes must survive. The
  // generation bump, its condition and the fence all sit on this one action.
  UpdateBuilder update;
  if (record_1 != nullptr) {
    for (const auto& [name, value] : *record_1) {
      if (name != attr::kId) update.Set(name, ValueJson(value));
    }
    for (const auto name : kSlotAttributes) {
      if (!record_1->contains(name)) update.Remove(name);
    }
  } else {
    // if_not_exists: on a fresh table this creates record 1 as a complete free seed record
    // (the Python clients crash on an item that lacks one of the six attributes).
    for (const auto& [name, value] : write.free_record_1) {
      if (name != attr::kId) update.Set(name, ValueJson(value), /*if_not_exists=*/true);
    }
  }
  update.Set(attr::kGeneration, N(write.next_generation));
  update.Set(attr::kOverflow, N(write.overflow));
  if (!write.last_change.empty()) update.Set(attr::kLastChange, S(write.last_change));
  if (!write.recent_changes.empty()) update.Set(attr::kRecentChanges, S(write.recent_changes));
  if (write.removal_hold && write.removal_hold->empty()) {
    update.Remove(attr::kRemovalHold);
  } else if (write.removal_hold) {
    update.Set(attr::kRemovalHold, S(*write.removal_hold));
  }
  // A table the Python HSDO wrote has no TableGeneration at all, which counts as 0.
  if (write.expected_generation == 0) {
    update.RequireAbsentOrEqual(attr::kGeneration, N(std::uint64_t{0}));
  } else {
    update.RequireEqual(attr::kGeneration, N(write.expected_generation));
  }
  if (write.fence) {
    update.RequireEqual(kLeaseHolder, S(write.fence->holder));
    update.RequireEqual(kLeaseEpoch, N(write.fence->epoch));
  }
  actions.push_back({{"Update", update.Build({{"TableName", table_name_}, {"Key", Key(1)}})}});
  // Idempotency: a retry (same body, same token) after a lost answer must not fail its own
  // condition. DynamoDB takes at most 36 characters: 8 + 12 + 16 hex digits.
  const std::string token = fmt::format("{:08x}{:012x}{:016x}", request_token_seed_ & 0xffffffffu,
                                        ++request_count_ & 0xffffffffffffu, write.next_generation);
  auto answer =
      client_->CallJson(kTargetPrefix, "TransactWriteItems",
                        {{"TransactItems", std::move(actions)}, {"ClientRequestToken", token}});
  if (answer) return Ok();
  return WriteError(answer.error(), fmt::format("DynamoDB table '{}': write", table_name_));
}

Result<std::optional<Lease>> DynamoDbBackend::ReadLease() {
  auto record =
      Get(1,
          {std::string(kLeaseHolder), std::string(kLeaseEpoch), std::string(kLeaseVersion),
           std::string(kLeaseDuration), std::string(kLeaseSince), std::string(kLeaseRenewed),
           std::string(kLeaseRenewedVersion)},
          /*consistent=*/true);
  if (!record) return record.error();
  if (!*record || !(*record)->contains(kLeaseVersion)) return std::optional<Lease>();
  const Record& r = **record;
  Lease lease;
  if (const auto it = r.find(kLeaseHolder); it != r.end()) lease.holder = it->second.text;
  const auto epoch = GetN(r, kLeaseEpoch);
  const auto version = GetN(r, kLeaseVersion);
  if (!epoch || !version || *epoch < 0 || *version < 0) {
    return MakeError(ErrorCode::kInvalidArgument, "DynamoDB table '{}': invalid lease on item 1",
                     table_name_);
  }
  lease.epoch = static_cast<std::uint64_t>(*epoch);
  lease.version = static_cast<std::uint64_t>(*version);
  lease.duration_ms = GetN(r, kLeaseDuration).value_or(0);
  lease.since_unix_ms = GetN(r, kLeaseSince).value_or(0);
  if (GetN(r, kLeaseRenewedVersion) == *version) {
    lease.renewed_unix_ms = GetN(r, kLeaseRenewed).value_or(0);
  }
  return std::optional<Lease>(std::move(lease));
}

Result<void> DynamoDbBackend::WriteLease(const Lease& lease,
                                         std::optional<std::uint64_t> expected_version) {
  UpdateBuilder update;
  // On a fresh table, item 1 is created as the seed's complete free item.
  for (const auto& [name, value] : SlotToRecord(Slot::Free(1))) {
    if (name != attr::kId) update.Set(name, ValueJson(value), /*if_not_exists=*/true);
  }
  update.Set(kLeaseHolder, S(lease.holder));
  update.Set(kLeaseEpoch, N(lease.epoch));
  update.Set(kLeaseVersion, N(lease.version));
  update.Set(kLeaseDuration, N(lease.duration_ms));
  update.Set(kLeaseSince, N(lease.since_unix_ms));
  update.Set(kLeaseRenewed, N(lease.renewed_unix_ms));
  update.Set(kLeaseRenewedVersion, N(lease.version));
  update.RequireEqual(kLeaseVersion, expected_version ? N(*expected_version) : json(nullptr));
  auto answer = client_->CallJson(kTargetPrefix, "UpdateItem",
                                  update.Build({{"TableName", table_name_}, {"Key", Key(1)}}));
  if (answer) return Ok();
  return WriteError(answer.error(), fmt::format("DynamoDB table '{}': lease", table_name_));
}

std::string NodeTableName(const std::string& table_name) { return table_name + "-nodes"; }

DynamoDbNodeReports::DynamoDbNodeReports(std::unique_ptr<AwsClient> client, std::string node_table,
                                         prometheus::Registry* registry)
    : client_(std::move(client)),
      table_name_(std::move(node_table)),
      log_(registry, fmt::format("DynamoDB table '{}'", table_name_)) {}

Error DynamoDbNodeReports::Explain(const Error& error, std::string_view what) const {
  if (error.code == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kNotFound,
                     "DynamoDB node table '{}' not found in region {} (create it with `hsdo "
                     "init-table`): {}",
                     table_name_, client_->options().region, error.message);
  }
  return MakeError(error.code, "DynamoDB table '{}', {}: {}", table_name_, what, error.message);
}

Result<void> DynamoDbNodeReports::Report(const NodeReport& report) {
  const json request{
      {"TableName", table_name_},
      {"Item", {{kNodeKey, S(report.name)}, {kNodeReport, S(EncodeNodeReport(report))}}}};
  auto answer = client_->CallJson(kTargetPrefix, "PutItem", request);
  if (!answer) return log_.Unstored(Explain(answer.error(), "put node record"));
  log_.Stored();
  return Ok();
}

Result<std::vector<NodeReport>> DynamoDbNodeReports::ReadNodeReports() {
  std::vector<StoredNodeRecord> records;
  auto scanned = ScanTable(*client_, table_name_, [&](Record&& record) {
    // Anything but two strings reads as an empty text, which the codec refuses.
    const auto text = [&](std::string_view name) {
      const auto it = record.find(name);
      return it != record.end() && it->second.type == AttributeValue::Type::kString
                 ? it->second.text
                 : std::string();
    };
    records.push_back({.key_name = text(kNodeKey), .text = text(kNodeReport)});
  });
  if (!scanned) return Explain(scanned.error(), "scan");
  return log_.Decode(records);
}

Result<bool> DynamoDbNodeReports::DeleteNodeReport(const std::string& name, WallTime reported_at) {
  // Read again, then deleted on the condition that the text is still the one read: a node that
  // reported in between keeps its new record.
  const json key{{kNodeKey, S(name)}};
  auto got =
      client_->CallJson(kTargetPrefix, "GetItem",
                        json{{"TableName", table_name_}, {"Key", key}, {"ConsistentRead", true}});
  if (!got) return Explain(got.error(), "get node record");
  const json* found = Member(*got, {"Item", kNodeReport, "S"});
  if (found == nullptr || !found->is_string()) return false;
  const json& text = *found;
  const auto stored = DecodeNodeReport(text.get_ref<const std::string&>());
  if (!stored || stored->reported_at != reported_at) return false;
  auto deleted = client_->CallJson(kTargetPrefix, "DeleteItem",
                                   json{{"TableName", table_name_},
                                        {"Key", key},
                                        {"ConditionExpression", "#r = :r"},
                                        {"ExpressionAttributeNames", {{"#r", kNodeReport}}},
                                        {"ExpressionAttributeValues", {{":r", {{"S", text}}}}}});
  if (deleted) return true;
  if (client_->last_error().code == "ConditionalCheckFailedException") return false;
  return Explain(deleted.error(), "delete node record");
}

namespace {

const Clock& ClockOrSystem(const Clock* clock) {
  static const SystemClock system_clock;
  return clock != nullptr ? *clock : system_clock;
}

Result<std::unique_ptr<AwsClient>> MakeDynamoDbClient(const Config& config, const Clock& clock,
                                                      prometheus::Registry* registry,
                                                      std::stop_token cancel = {}) {
  if (auto supported = CheckProfileSupported(config.aws); !supported) return supported.error();
  auto http = MakeCredentialsHttpClient(config.aws, cancel);
  if (!http) return http.error();
  auto credentials = MakeDefaultCredentialsChain(config.aws, clock, std::move(*http));
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
      std::move(*client), config.dynamodb_table_name, config.list_size));
}

namespace {

Result<void> CreateTableAndWait(AwsClient& client, const json& create,
                                std::chrono::milliseconds max_wait,
                                const std::function<void(std::chrono::milliseconds)>& sleep) {
  const std::string table_name = create.at("TableName");
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
    // DescribeTable may not know a table just created yet (eventually consistent, as AWS's
    // CreateTable documentation says): "not found" then reads as "being created" for the
    // wait (init-table failed, the node table never made, and only a second run worked).
    // Also after "in use": a CreateTable retried after a lost answer, or another init-table
    // creating it at the same moment.
    const bool not_yet = !described && client.last_error().code == "ResourceNotFoundException";
    if (!described && !not_yet) {
      return MakeError(described.error().code, "DynamoDB table '{}': {}", table_name,
                       described.error().message);
    }
    const json* found = not_yet ? nullptr : Member(*described, {"Table", "TableStatus"});
    const std::string status = not_yet                                  ? "not found yet"
                               : found != nullptr && found->is_string() ? found->get<std::string>()
                                                                        : "";
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

}  // namespace

Result<std::unique_ptr<DynamoDbNodeReports>> MakeDynamoDbNodeReports(const Config& config,
                                                                     prometheus::Registry* registry,
                                                                     const Clock* clock,
                                                                     std::stop_token cancel) {
  if (config.dynamodb_table_name.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "STORE=dynamodb needs DYNAMODB_TABLE_NAME");
  }
  auto client = MakeDynamoDbClient(config, ClockOrSystem(clock), registry, std::move(cancel));
  if (!client) return client.error();
  return std::make_unique<DynamoDbNodeReports>(std::move(*client),
                                               NodeTableName(config.dynamodb_table_name), registry);
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
  if (auto r = CreateTableAndWait(client, create, max_wait, sleep); !r) return r;
  // Node records: one small item per node, written at most once per INTERVAL by each.
  const json create_nodes{
      {"TableName", NodeTableName(table_name)},
      {"AttributeDefinitions", {{{"AttributeName", kNodeKey}, {"AttributeType", "S"}}}},
      {"KeySchema", {{{"AttributeName", kNodeKey}, {"KeyType", "HASH"}}}},
      {"BillingMode", "PAY_PER_REQUEST"}};
  return CreateTableAndWait(client, create_nodes, max_wait, sleep);
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
