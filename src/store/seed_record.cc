#include "store/seed_record.h"

#include <charconv>

#include "common/python_time.h"
#include "common/validate.h"

namespace hsdo {

namespace {

constexpr std::string_view kNone = "none";
constexpr std::string_view kEnabled = "enabled";
constexpr std::string_view kDisabled = "disabled";
constexpr std::string_view kDrain = "drain";
constexpr std::string_view kMaint = "maint";
constexpr std::int64_t kMaxWeight = 256;
constexpr std::int64_t kMaxOverflow = 1'000'000;

const AttributeValue* Find(const Record& record, std::string_view name) {
  const auto it = record.find(name);
  return it == record.end() ? nullptr : &it->second;
}

std::optional<std::string> GetString(const Record& record, std::string_view name) {
  const AttributeValue* value = Find(record, name);
  if (value == nullptr || value->type != AttributeValue::Type::kString) return std::nullopt;
  return value->text;
}

std::optional<std::int64_t> GetInteger(const Record& record, std::string_view name) {
  const AttributeValue* value = Find(record, name);
  if (value == nullptr) return std::nullopt;
  return ParseInteger(*value);
}

Error Invalid(std::string_view why) { return MakeError(ErrorCode::kInvalidArgument, "{}", why); }

bool HasControlCharacter(std::string_view text) {
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return true;
  }
  return false;
}

// An optional label attribute (ServerName, ASG, AZ): absent, "none", empty or neither a
// string nor a number → empty. Never a reason to refuse the record: a label is only shown
// (and matched against CLIENT_ASG_NAMES), so one hsdo would not have written (a space in an
// ASG name, an EC2 Name tag the Python server stored) is kept, made printable.
std::string OptionalLabel(const Record& record, std::string_view name) {
  const AttributeValue* value = Find(record, name);
  if (value == nullptr || value->text == kNone) return std::string();
  if (value->type != AttributeValue::Type::kString &&
      value->type != AttributeValue::Type::kNumber) {
    return std::string();
  }
  return SanitizedLabel(value->text);
}

}  // namespace

std::optional<std::int64_t> ParseInteger(const AttributeValue& value) {
  if (value.type != AttributeValue::Type::kNumber) return std::nullopt;
  const std::string& text = value.text;
  if (text.empty() || text.front() == '+') return std::nullopt;
  std::int64_t parsed = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return parsed;
}

Record SlotToRecord(const Slot& slot) {
  Record record;
  const auto set = [&record](std::string_view name, AttributeValue value) {
    record.insert_or_assign(std::string(name), std::move(value));
  };
  set(attr::kId, AttributeValue::Number(slot.id));
  if (slot.filled() && !slot.target.address.empty()) {
    const Target& target = slot.target;
    set(attr::kAddress, AttributeValue::String(target.address));
    set(attr::kName, AttributeValue::String(target.name.empty() ? target.address : target.name));
    set(attr::kGroup,
        AttributeValue::String(target.group.empty() ? std::string(kNone) : target.group));
    set(attr::kWeight, AttributeValue::Number(slot.weight));
    set(attr::kStatus, AttributeValue::String(std::string(slot.enabled() ? kEnabled : kDisabled)));
    set(attr::kLastWeightUpdate,
        AttributeValue::String(slot.last_weight_update
                                   ? FormatPythonDatetime(*slot.last_weight_update)
                                   : std::string(kFreeSlotTime)));
    if (target.port) set(attr::kPort, AttributeValue::Number(*target.port));
    if (!target.az.empty()) set(attr::kAz, AttributeValue::String(target.az));
    if (slot.draining()) {
      set(attr::kDrainingSince,
          AttributeValue::String(FormatPythonDatetime(slot.drain_since.value_or(WallTime{}))));
      set(attr::kWeight, AttributeValue::Number(0));
      set(attr::kDrainingWeight, AttributeValue::Number(slot.weight));
    }
    if (slot.admin != AdminState::kNone) {
      set(attr::kAdminState,
          AttributeValue::String(std::string(slot.admin == AdminState::kDrain ? kDrain : kMaint)));
    }
  } else {
    // The seed's free record, exactly (RemovedAt aside).
    set(attr::kAddress, AttributeValue::String(std::string(kNone)));
    set(attr::kName, AttributeValue::String(std::string(kNone)));
    set(attr::kGroup, AttributeValue::String(std::string(kNone)));
    set(attr::kWeight, AttributeValue::Number(0));
    set(attr::kStatus, AttributeValue::String(std::string(kDisabled)));
    set(attr::kLastWeightUpdate, AttributeValue::String(std::string(kFreeSlotTime)));
  }
  if (slot.removed_at) {
    set(attr::kRemovedAt, AttributeValue::String(FormatPythonDatetime(*slot.removed_at)));
  }
  return record;
}

std::optional<HeldByInvalidRecord> RecordHeldTarget(const Record& record) {
  const auto address = GetString(record, attr::kAddress);
  const auto canonical = address ? TargetAddress(*address) : std::nullopt;
  if (!canonical) return std::nullopt;
  Target target{.address = *canonical};
  if (Find(record, attr::kPort) != nullptr) {
    const auto port = GetInteger(record, attr::kPort);
    if (!port || *port < 1 || *port > 65535) return std::nullopt;
    target.port = static_cast<std::uint16_t>(*port);
  }
  HeldByInvalidRecord held{.key = target.Key()};
  auto weight = GetInteger(record, attr::kWeight);
  if (weight == 0 && Find(record, attr::kDrainingSince) != nullptr &&
      Find(record, attr::kDrainingWeight) != nullptr) {
    weight = GetInteger(record, attr::kDrainingWeight);  // as RecordToSlot reads it
  }
  if (weight && *weight >= 0 && *weight <= kMaxWeight) held.weight = static_cast<int>(*weight);
  if (const auto admin = GetString(record, attr::kAdminState)) {
    if (*admin == kDrain) held.admin = AdminState::kDrain;
    if (*admin == kMaint) held.admin = AdminState::kMaint;
  }
  return held;
}

std::optional<int> RecordId(const Record& record) {
  const auto id = GetInteger(record, attr::kId);
  if (!id || *id < 1 || *id > kMaxSlotId) return std::nullopt;
  return static_cast<int>(*id);
}

Result<Slot> RecordToSlot(const Record& record, int id) {
  const auto status = GetString(record, attr::kStatus);
  if (!status) return Invalid("BackendServerStatus is missing or not a string");
  // Only the removal guard reads it, after a restart: a value that is not a date is none.
  std::optional<WallTime> removed_at;
  if (const auto removed = GetString(record, attr::kRemovedAt)) {
    removed_at = ParsePythonDatetime(*removed);
  }
  Slot slot{.id = id, .status = SlotStatus::kEnabled, .removed_at = removed_at};
  if (*status == kDisabled) {
    // Free, unless hsdo wrote it as draining (DrainingSince; a Python agent reads it as free).
    const AttributeValue* since = Find(record, attr::kDrainingSince);
    if (since == nullptr) {
      Slot free = Slot::Free(id);
      free.removed_at = removed_at;
      return free;
    }
    const auto parsed = since->type == AttributeValue::Type::kString
                            ? ParsePythonDatetime(since->text)
                            : std::nullopt;
    if (!parsed) return Invalid("DrainingSince is not a date");
    slot.status = SlotStatus::kDraining;
    slot.drain_since = parsed;
  } else if (*status != kEnabled) {
    return Invalid("BackendServerStatus is neither enabled nor disabled");
  }

  const auto address = GetString(record, attr::kAddress);
  const auto canonical = address ? TargetAddress(*address) : std::nullopt;
  if (!canonical) return Invalid("IPAddress is not a server's IP literal");
  slot.target.address = *canonical;

  const auto weight = GetInteger(record, attr::kWeight);
  if (!weight || *weight < 0 || *weight > kMaxWeight) {
    return Invalid("Weight is not an integer in 0-256");
  }
  slot.weight = static_cast<int>(*weight);
  // Only as this version writes it: with Weight 0. An earlier version leaves the attribute as
  // it was when it updates record 1 in place, and writes the weight in Weight.
  if (slot.draining() && slot.weight == 0 && Find(record, attr::kDrainingWeight) != nullptr) {
    const auto draining_weight = GetInteger(record, attr::kDrainingWeight);
    if (!draining_weight || *draining_weight < 0 || *draining_weight > kMaxWeight) {
      return Invalid("DrainingWeight is not an integer in 0-256");
    }
    slot.weight = static_cast<int>(*draining_weight);
  }

  slot.target.name = OptionalLabel(record, attr::kName);
  slot.target.group = OptionalLabel(record, attr::kGroup);
  slot.target.az = OptionalLabel(record, attr::kAz);

  if (Find(record, attr::kPort) != nullptr) {
    const auto port = GetInteger(record, attr::kPort);
    if (!port || *port < 1 || *port > 65535) return Invalid("Port is not an integer in 1-65535");
    slot.target.port = static_cast<std::uint16_t>(*port);
  }

  // Only the weight ramp uses it: a value that is not a date restarts the ramp clock rather
  // than taking a live target out, but it must still be a clean string.
  if (const AttributeValue* time = Find(record, attr::kLastWeightUpdate)) {
    if (time->type != AttributeValue::Type::kString || HasControlCharacter(time->text)) {
      return Invalid("LastWeightUpdate is not a string of printable characters");
    }
    slot.last_weight_update = ParsePythonDatetime(time->text);
  }

  // An override hsdo does not know is ignored, never a reason to take a live target out.
  if (const auto admin = GetString(record, attr::kAdminState)) {
    if (*admin == kDrain) slot.admin = AdminState::kDrain;
    if (*admin == kMaint) slot.admin = AdminState::kMaint;
  }
  return slot;
}

Result<std::optional<std::uint64_t>> RecordGeneration(const Record& record) {
  const AttributeValue* value = Find(record, attr::kGeneration);
  if (value == nullptr) return std::optional<std::uint64_t>();
  const auto generation = ParseInteger(*value);
  if (!generation || *generation < 0 ||
      (static_cast<std::uint64_t>(*generation) & ~kChainingBit) > kMaxStoredGeneration) {
    return Invalid("TableGeneration of record 1 is not an integer in 0-2^62");
  }
  return std::optional<std::uint64_t>(static_cast<std::uint64_t>(*generation));
}

int RecordOverflow(const Record& record) {
  const auto overflow = GetInteger(record, attr::kOverflow);
  if (!overflow || *overflow < 0 || *overflow > kMaxOverflow) return 0;
  return static_cast<int>(*overflow);
}

}  // namespace hsdo
