#include "store/slot_table_store.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/validate.h"
#include "store/seed_record.h"

namespace hsdo {

namespace {

// A ReadAll racing a write is repeated this many times before giving up for this cycle.
constexpr int kMaxReadAttempts = 3;

class Fnv1a {
 public:
  void Add(std::string_view text) {
    for (const char c : text) Byte(static_cast<unsigned char>(c));
    Byte(0xff);  // separator: "ab","c" and "a","bc" differ
  }
  void Add(std::int64_t value) { Add(std::to_string(value)); }
  std::uint64_t value() const { return hash_; }

 private:
  void Byte(unsigned char byte) {
    hash_ ^= byte;
    hash_ *= 0x100000001b3ULL;
  }
  std::uint64_t hash_ = 0xcbf29ce484222325ULL;
};

// The generation after `expected`: stored generations stay in 1-kMaxStoredGeneration.
std::uint64_t NextGeneration(std::uint64_t expected) {
  return (expected & kMaxStoredGeneration) % kMaxStoredGeneration + 1;
}

// The stored generation of record 1, or nullopt when it has none or an invalid one.
std::optional<std::uint64_t> GenerationOf(const Record& first) {
  auto generation = RecordGeneration(first);
  return generation ? *generation : std::nullopt;
}

std::string FormatChange(const TableChange& change) {
  return fmt::format("{}:{}", change.generation, fmt::join(change.ids, ","));
}

// "<generation>:<id>,<id>,..." (no ids: "<generation>:"), else nullopt.
std::optional<TableChange> ParseChange(std::string_view text) {
  const auto colon = text.find(':');
  TableChange change;
  if (colon == std::string_view::npos ||
      std::from_chars(text.data(), text.data() + colon, change.generation) !=
          std::from_chars_result{text.data() + colon, std::errc{}}) {
    return std::nullopt;
  }
  for (std::size_t start = colon + 1; start < text.size();) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    int id = 0;
    if (std::from_chars(text.data() + start, text.data() + end, id) !=
            std::from_chars_result{text.data() + end, std::errc{}} ||
        id < 1) {
      return std::nullopt;
    }
    change.ids.push_back(id);
    start = end + 1;
  }
  return change;
}

// The string attribute `name` of `record`, if it has one.
std::optional<std::string_view> StringAttribute(const Record& record, std::string_view name) {
  const auto it = record.find(name);
  if (it == record.end() || it->second.type != AttributeValue::Type::kString) return std::nullopt;
  return std::string_view(it->second.text);
}

// The write that made record 1's generation (attr::kLastChange naming it), else nullopt.
std::optional<TableChange> LastChangeOf(const Record& first) {
  const auto generation = GenerationOf(first);
  const auto text = StringAttribute(first, attr::kLastChange);
  if (!generation || *generation == 0 || !text) return std::nullopt;
  auto change = ParseChange(*text);
  if (!change || change->generation != *generation) return std::nullopt;
  return change;
}

// The writes that led to record 1's generation, oldest first, one generation after the other
// and the newest the one attr::kLastChange describes: attr::kRecentChanges when it says so,
// else that one write (a table written by the previous version, or a RecentChanges left
// behind by it), else none.
std::vector<TableChange> RecentChangesOf(const Record& first) {
  auto last = LastChangeOf(first);
  if (!last) return {};
  std::vector<TableChange> changes;
  const auto text = StringAttribute(first, attr::kRecentChanges);
  for (std::size_t start = 0; text && start < text->size();) {
    const std::size_t end = std::min(text->find(';', start), text->size());
    auto change = ParseChange(text->substr(start, end - start));
    if (!change || (!changes.empty() && (change->generation & kMaxStoredGeneration) !=
                                            NextGeneration(changes.back().generation))) {
      changes.clear();  // a gap or a parse error: trust LastChange alone
      break;
    }
    changes.push_back(std::move(*change));
    start = end + 1;
  }
  if (changes.empty() || changes.back() != *last) return {std::move(*last)};
  return changes;
}

// Record 1's attributes that ChangesSince, RecentChangesOf and ApplyChanges read.
std::vector<std::string> RecordOneProjection() {
  return {std::string(attr::kGeneration), std::string(attr::kLastChange),
          std::string(attr::kRecentChanges), std::string(attr::kRemovalHold)};
}

std::string FormatRecentChanges(const std::vector<TableChange>& changes) {
  std::vector<std::string> parts;
  parts.reserve(changes.size());
  for (const TableChange& change : changes) parts.push_back(FormatChange(change));
  return fmt::format("{}", fmt::join(parts, ";"));
}

// What a reader holding `held` reads to reach record 1's generation: the union of the ids
// of the writes since, in slot order; nullopt when record 1 does not list them all.
std::optional<TableChange> ChangesSince(const Record& first, std::uint64_t held) {
  const auto changes = RecentChangesOf(first);
  const auto missed = std::find_if(changes.begin(), changes.end(), [&](const TableChange& change) {
    return (change.generation & kMaxStoredGeneration) == NextGeneration(held);
  });
  if (missed == changes.end()) return std::nullopt;
  TableChange since{changes.back().generation, {}};
  for (auto it = missed; it != changes.end(); ++it) {
    since.ids.insert(since.ids.end(), it->ids.begin(), it->ids.end());
  }
  std::sort(since.ids.begin(), since.ids.end());
  since.ids.erase(std::unique(since.ids.begin(), since.ids.end()), since.ids.end());
  return since;
}

}  // namespace

std::string FormatHeldRemoval(const HeldRemoval& hold) {
  if (hold.slots.empty()) return {};
  std::string text = fmt::format("{}:", hold.base);
  for (std::size_t i = 0; i < hold.slots.size();) {
    std::size_t last = i;
    while (last + 1 < hold.slots.size() && hold.slots[last + 1] == hold.slots[last] + 1) ++last;
    if (i > 0) text += ',';
    text += last == i ? fmt::format("{}", hold.slots[i])
                      : fmt::format("{}-{}", hold.slots[i], hold.slots[last]);
    i = last + 1;
  }
  return text;
}

std::optional<HeldRemoval> ParseHeldRemoval(std::string_view text, std::int64_t max_slot) {
  const auto number = [](std::string_view digits) -> std::optional<int> {
    int value = 0;
    if (digits.empty() || digits.front() == '0' ||
        std::from_chars(digits.data(), digits.data() + digits.size(), value) !=
            std::from_chars_result{digits.data() + digits.size(), std::errc{}} ||
        value < 1 || value > kMaxSlotId) {
      return std::nullopt;
    }
    return value;
  };
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  HeldRemoval hold;
  const auto base = number(text.substr(0, colon));
  if (!base) return std::nullopt;
  hold.base = *base;
  int previous = 0;  // the last slot of the range before
  for (std::size_t start = colon + 1; start <= text.size();) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    const std::string_view range = text.substr(start, end - start);
    const auto dash = range.find('-');
    const auto first = number(range.substr(0, dash));
    const auto last = dash == std::string_view::npos ? first : number(range.substr(dash + 1));
    if (!first || !last || *last < *first || *first <= previous) return std::nullopt;
    // Slots past the reader's table are left out (a list size lowered since), not expanded.
    for (int id = *first; id <= std::min<std::int64_t>(*last, max_slot); ++id) {
      hold.slots.push_back(id);
    }
    previous = *last;
    start = end + 1;
  }
  if (hold.slots.empty()) return std::nullopt;
  return hold;
}

std::uint64_t DerivedGeneration(const SlotTable& table, bool empty) {
  if (empty) return 0;
  Fnv1a hash;
  hash.Add(table.overflow);
  for (const Slot& slot : table.slots) {
    hash.Add(slot.id);
    hash.Add(slot.enabled() ? 1 : 0);
    hash.Add(slot.target.address);
    hash.Add(slot.target.port ? *slot.target.port : -1);
    hash.Add(slot.target.name);
    hash.Add(slot.target.group);
    hash.Add(slot.target.az);
    hash.Add(slot.weight);
    hash.Add(slot.last_weight_update ? slot.last_weight_update->time_since_epoch().count() : -1);
  }
  return kDerivedGenerationBit | (hash.value() & kMaxStoredGeneration);
}

SlotTableStore::SlotTableStore(std::unique_ptr<RecordBackend> backend, int list_size)
    : backend_(std::move(backend)), list_size_(list_size) {}

bool SlotTableStore::Watch(std::function<void()> on_change) {
  return backend_->Watch(std::move(on_change));
}

Result<std::optional<std::uint64_t>> SlotTableStore::StoredGeneration(bool consistent) {
  auto record = backend_->Get(1, {std::string(attr::kGeneration)}, consistent);
  if (!record) return record.error();
  if (!*record) return std::optional<std::uint64_t>();
  auto generation = RecordGeneration(**record);
  if (!generation) {
    return MakeError(ErrorCode::kInvalidArgument, "{}: {}", backend_->Describe(),
                     generation.error().message);
  }
  return *generation;
}

void SlotTableStore::NoteGeneration(bool has_generation, bool empty) {
  if (empty || had_generation_ == has_generation) return;
  if (!has_generation) {
    spdlog::warn(
        "{}: record 1 has no TableGeneration (a table written by the Python HSDO): reading "
        "the whole table every cycle, as the seed's agents do",
        backend_->Describe());
  } else if (had_generation_) {
    spdlog::info("{}: the table now has a TableGeneration; reading it only when it changes",
                 backend_->Describe());
  }
  had_generation_ = has_generation;
}

void SlotTableStore::NoteInvalid(int id, const std::string& reason) {
  auto& last = invalid_reasons_[id];
  if (last == reason) return;
  last = reason;
  if (id == 0) {
    spdlog::warn("{}: a record without a valid BackendServerID: {}; ignored", backend_->Describe(),
                 reason);
  } else {
    spdlog::warn("{}: slot {} is invalid: {}; {}", backend_->Describe(), id, reason,
                 id > list_size_ ? "above HAPROXY_BACKEND_SERVERS_LIST_SIZE, agents leave that "
                                   "server as it is"
                                 : "read as free (agents leave that server as it is)");
  }
}

HeldRemoval SlotTableStore::RemovalHoldOf(const Record& first) {
  const auto text = StringAttribute(first, attr::kRemovalHold);
  if (!text) return {};
  auto hold = ParseHeldRemoval(*text, list_size_);
  if (hold) return std::move(*hold);
  if (*text != invalid_hold_) {
    spdlog::warn("{}: record 1's {} is not a removal hold of slots 1-{} ('{}'): read as none",
                 backend_->Describe(), attr::kRemovalHold, list_size_, SanitizedLabel(*text));
    invalid_hold_ = *text;
  }
  return {};
}

Result<SlotTableStore::Snapshot> SlotTableStore::ReadAllOnce() {
  auto records = backend_->ReadAll();
  if (!records) return records.error();
  Snapshot snapshot;
  snapshot.table = SlotTable::Empty(list_size_);
  snapshot.empty = records->empty();
  std::map<int, std::string> invalid;
  for (const Record& record : *records) {
    const auto id = RecordId(record);
    if (!id) {
      invalid[0] = "BackendServerID is not an integer in 1-1000000";
      ++snapshot.table.invalid_records;
      continue;
    }
    if (*id == 1) {
      auto generation = RecordGeneration(record);
      if (!generation) {
        return MakeError(ErrorCode::kInvalidArgument, "{}: {}", backend_->Describe(),
                         generation.error().message);
      }
      snapshot.stored_generation = *generation;
      snapshot.table.overflow = RecordOverflow(record);
      snapshot.table.removal_hold = RemovalHoldOf(record);
      recent_ = RecentChangesOf(record);
    }
    auto slot = RecordToSlot(record, *id);
    if (*id > list_size_) {  // beyond HAPROXY_BACKEND_SERVERS_LIST_SIZE: said, not applied
      if (slot && slot->filled()) {
        snapshot.table.beyond.push_back(*slot);
      } else if (!slot) {
        snapshot.table.invalid_above.push_back(*id);
        invalid[*id] = slot.error().message;  // logged (not counted: no slot of this reader's)
      }
      continue;
    }
    if (!slot) {
      invalid[*id] = slot.error().message;
      ++snapshot.table.invalid_records;
      snapshot.table.invalid_ids.push_back(*id);
      if (auto held = RecordHeldTarget(record)) snapshot.table.invalid_held[*id] = std::move(*held);
      continue;
    }
    snapshot.table.slots[static_cast<std::size_t>(*id - 1)] = std::move(*slot);
  }
  // Without a generation and without a filled slot, a table says nothing about the fleet: an
  // orchestrator's lease on a fresh table (DynamoDB: record 1 made the seed's free record, for
  // the Python clients' sake) before its first write, a record 1 read half made (seen with
  // moto, whose UpdateItem sets one attribute after another), or a seed table emptied. Read
  // as a seed table with every slot free, it took every server of every node out; as never
  // written (generation 0), agents leave HAProxy as it is.
  if (snapshot.stored_generation.value_or(0) == 0 && snapshot.table.beyond.empty() &&
      std::none_of(snapshot.table.slots.begin(), snapshot.table.slots.end(),
                   [](const Slot& slot) { return slot.filled(); })) {
    snapshot.empty = true;
  }
  // Log each invalid record once per reason, and forget the ones that became valid.
  for (const auto& [id, reason] : invalid) NoteInvalid(id, reason);
  std::erase_if(invalid_reasons_,
                [&](const auto& entry) { return !invalid.contains(entry.first); });
  return snapshot;
}

Result<std::uint64_t> SlotTableStore::ReadGeneration() {
  pending_table_.reset();
  seen_first_.reset();
  // Where changes are read record by record, LastChange comes along: the table read that a
  // new generation prompts then needs no read of record 1 of its own.
  auto record = backend_->Get(1,
                              backend_->ReadAllIsSnapshot()
                                  ? std::vector<std::string>{std::string(attr::kGeneration)}
                                  : RecordOneProjection(),
                              /*consistent=*/false);
  if (!record) return record.error();
  std::optional<std::uint64_t> stored;
  if (*record) {
    auto generation = RecordGeneration(**record);
    if (!generation) {
      return MakeError(ErrorCode::kInvalidArgument, "{}: {}", backend_->Describe(),
                       generation.error().message);
    }
    stored = *generation;
  }
  if (stored && *stored > 0) {
    NoteGeneration(true, false);
    recent_ = RecentChangesOf(**record);
    seen_first_ = std::move(**record);
    return *stored;
  }
  // No generation: only the content tells whether the table changed.
  auto table = ReadTable();
  if (!table) return table.error();
  const std::uint64_t generation = table->generation;
  pending_table_ = std::move(*table);
  return generation;
}

void SlotTableStore::Hold(const SlotTable& table) {
  // Only where a whole read is expensive, and only a stored generation can be followed.
  if (backend_->ReadAllIsSnapshot() || table.generation == 0 ||
      (table.generation & kDerivedGenerationBit) != 0) {
    held_.reset();
    return;
  }
  held_ = table;
}

Result<std::optional<SlotTable>> SlotTableStore::ReadChanges() {
  std::optional<Record> seen = std::move(seen_first_);
  seen_first_.reset();
  if (!held_) return std::optional<SlotTable>();
  if (backend_->MaxSnapshotGet() > 0) {
    auto changed = ReadChangesAtOnce(seen);
    if (changed) return changed;
    spdlog::debug("{}: reading the changed records at once failed ({}); reading them one by one",
                  backend_->Describe(), changed.error().message);
  }
  return ReadChangesBracketed();
}

Result<std::optional<SlotTable>> SlotTableStore::ReadChangesAtOnce(
    const std::optional<Record>& seen) {
  const std::uint64_t held = held_->generation;
  std::optional<TableChange> since;
  if (seen) {
    // The generation this cycle saw is the one held: a resync, read whole.
    if (GenerationOf(*seen) == held) return std::optional<SlotTable>();
    since = ChangesSince(*seen, held);
  }
  if (!since) {
    auto first = backend_->Get(1, RecordOneProjection(), /*consistent=*/true);
    if (!first) return first.error();
    if (!*first) return std::optional<SlotTable>();
    since = ChangesSince(**first, held);
    if (!since) return std::optional<SlotTable>();
  }
  if (ChangesBeyondListSize(since->ids)) return std::optional<SlotTable>();
  const std::vector<int> others = ChangedSlots(since->ids);
  std::vector<int> keys = others;
  keys.push_back(1);
  if (keys.size() > backend_->MaxSnapshotGet()) {
    return MakeError(ErrorCode::kUnavailable, "{} records changed, more than one read takes",
                     keys.size());
  }
  auto records = backend_->GetSnapshot(keys);
  if (!records) return records.error();
  const auto first = std::find_if(records->begin(), records->end(),
                                  [](const Record& record) { return RecordId(record) == 1; });
  // The snapshot is of the generation and the writes that record 1 listed, or the table
  // moved on (or was rewritten by another writer): read it whole.
  if (first == records->end() || ChangesSince(*first, held) != since) {
    return std::optional<SlotTable>();
  }
  return std::optional<SlotTable>(ApplyChanges(since->generation, *first, others, *records));
}

Result<std::optional<SlotTable>> SlotTableStore::ReadChangesBracketed() {
  auto first = backend_->Get(1, {}, /*consistent=*/true);
  if (!first) return first.error();
  if (!*first) return std::optional<SlotTable>();
  // The same generation is a resync (or a write that left no trace): read it whole.
  const auto since = ChangesSince(**first, held_->generation);
  if (!since) return std::optional<SlotTable>();
  if (ChangesBeyondListSize(since->ids)) return std::optional<SlotTable>();
  const std::vector<int> others = ChangedSlots(since->ids);
  auto records = backend_->GetMany(others);
  if (!records) return records.error();
  // The records are of `since->generation` only if no write landed meanwhile.
  auto after = StoredGeneration(/*consistent=*/true);
  if (!after) return after.error();
  if (after->value_or(0) != since->generation) return std::optional<SlotTable>();
  return std::optional<SlotTable>(ApplyChanges(since->generation, **first, others, *records));
}

bool SlotTableStore::ChangesBeyondListSize(const std::vector<int>& ids) const {
  // The filled slots above the list size (SlotTable::beyond) come from a whole read: a change
  // up there is read whole, or a slot freed there would still read as filled.
  return std::any_of(ids.begin(), ids.end(), [&](int id) { return id > list_size_; });
}

std::vector<int> SlotTableStore::ChangedSlots(const std::vector<int>& ids) const {
  std::vector<int> slots;
  for (const int id : ids) {
    if (id != 1 && id <= list_size_) slots.push_back(id);
  }
  return slots;
}

SlotTable SlotTableStore::ApplyChanges(std::uint64_t generation, const Record& first,
                                       const std::vector<int>& ids,
                                       const std::vector<Record>& records) {
  std::map<int, const Record*> by_id;
  for (const Record& record : records) {
    if (const auto id = RecordId(record)) by_id[*id] = &record;
  }
  recent_ = RecentChangesOf(first);
  SlotTable table = *held_;
  table.generation = generation;
  table.overflow = RecordOverflow(first);
  table.removal_hold = RemovalHoldOf(first);
  auto apply = [&](int id, const Record* record) {
    const bool was_invalid = invalid_reasons_.contains(id);
    Slot slot = Slot::Free(id);
    bool invalid = false;
    table.invalid_held.erase(id);
    if (record != nullptr) {
      if (auto decoded = RecordToSlot(*record, id)) {
        slot = std::move(*decoded);
      } else {
        invalid = true;
        NoteInvalid(id, decoded.error().message);
        if (auto held = RecordHeldTarget(*record)) table.invalid_held[id] = std::move(*held);
      }
    }
    if (!invalid) invalid_reasons_.erase(id);
    table.invalid_records += (invalid ? 1 : 0) - (was_invalid ? 1 : 0);
    std::erase(table.invalid_ids, id);
    if (invalid) table.invalid_ids.push_back(id);
    table.slots[static_cast<std::size_t>(id - 1)] = std::move(slot);
  };
  apply(1, &first);  // record 1 is read whole anyway
  for (const int id : ids) {
    const auto it = by_id.find(id);
    apply(id, it == by_id.end() ? nullptr : it->second);
  }
  return table;
}

Result<SlotTable> SlotTableStore::ReadTable() {
  if (pending_table_) {
    SlotTable table = std::move(*pending_table_);
    pending_table_.reset();
    return table;
  }
  auto changed = ReadChanges();
  if (changed && *changed) {
    held_ = **changed;
    return std::move(**changed);
  }
  if (!changed) {
    spdlog::debug("{}: reading the changed records failed ({}); reading the whole table",
                  backend_->Describe(), changed.error().message);
  }
  auto table = ReadWholeTable();
  if (table) Hold(*table);
  return table;
}

Result<SlotTable> SlotTableStore::ReadWholeTable() {
  const bool snapshot_reads = backend_->ReadAllIsSnapshot();
  for (int attempt = 1; attempt <= kMaxReadAttempts; ++attempt) {
    std::optional<std::uint64_t> before_value;
    if (!snapshot_reads) {
      auto before = StoredGeneration(/*consistent=*/true);
      if (!before) return before.error();
      before_value = *before;
    }
    auto snapshot = ReadAllOnce();
    if (!snapshot) return snapshot.error();
    const std::uint64_t scanned = snapshot->stored_generation.value_or(0);
    if (snapshot_reads) {
      NoteGeneration(scanned != 0, snapshot->empty);
      snapshot->table.generation =
          scanned != 0 ? scanned : DerivedGeneration(snapshot->table, snapshot->empty);
      return std::move(snapshot->table);
    }
    auto after = StoredGeneration(/*consistent=*/true);
    if (!after) return after.error();
    if (before_value.value_or(0) == 0 && scanned == 0 && after->value_or(0) == 0) {
      // No generation to bracket with (the seed's agents read the same way). One that appeared
      // during the read is hsdo's first write, which a read that is not a snapshot may have
      // seen part of: read again.
      NoteGeneration(false, snapshot->empty);
      snapshot->table.generation = DerivedGeneration(snapshot->table, snapshot->empty);
      return std::move(snapshot->table);
    }
    if (before_value.value_or(0) == scanned && after->value_or(0) == scanned) {
      NoteGeneration(true, false);
      snapshot->table.generation = scanned;
      return std::move(snapshot->table);
    }
    spdlog::debug("{}: the table changed during a read (generation {} -> {}); reading again",
                  backend_->Describe(), before_value.value_or(0), after->value_or(0));
  }
  return MakeError(ErrorCode::kUnavailable,
                   "{} kept changing during {} reads; will read again next cycle",
                   backend_->Describe(), kMaxReadAttempts);
}

Error SlotTableStore::ExplainConflict(const Error& error, std::uint64_t expected) {
  if (fence_) {
    // The store's condition does not say which part failed: ask the lease.
    auto lease = backend_->ReadLease();
    if (lease &&
        (!*lease || (*lease)->holder != fence_->holder || (*lease)->epoch != fence_->epoch)) {
      if (on_fenced_) on_fenced_();
      return MakeError(ErrorCode::kConflict,
                       "{}: write refused: this process no longer holds the leader lease "
                       "(epoch {}; now {}, epoch {})",
                       backend_->Describe(), fence_->epoch,
                       *lease ? (*lease)->holder : std::string("nobody"),
                       *lease ? (*lease)->epoch : 0);
    }
  }
  return MakeError(ErrorCode::kConflict, "{}: generation is no longer {} ({})",
                   backend_->Describe(), expected, error.message);
}

Result<std::uint64_t> SlotTableStore::WriteSlots(std::span<const Slot> changed, int overflow,
                                                 std::uint64_t expected_generation,
                                                 const std::optional<HeldRemoval>& hold,
                                                 std::uint64_t above) {
  pending_table_.reset();
  seen_first_.reset();
  for (const Slot& slot : changed) {
    // Above the list size, only to free a record left there when the list size shrank.
    if (slot.id < 1 || (slot.id > list_size_ && slot.filled())) {
      return MakeError(ErrorCode::kInvalidArgument, "slot id {} outside 1-{}", slot.id, list_size_);
    }
  }
  // Freed slots first, then slot order: split into several writes, a target moving to a new
  // slot is never in two slots of any intermediate table. Every write but the last sets
  // kChainingBit on its generation: agents apply none of those tables.
  std::vector<Slot> ordered(changed.begin(), changed.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const Slot& a, const Slot& b) {
    if (a.enabled() != b.enabled()) return !a.enabled();
    return a.id < b.id;
  });
  const std::size_t limit = backend_->MaxRecordsPerWrite();
  const std::size_t chunk = limit == 0 ? std::max<std::size_t>(ordered.size(), 1) : limit;
  // A generation derived from content (bit 63) means no stored generation: condition on its
  // absence, which the backend spells "0".
  std::uint64_t stored_expected =
      (expected_generation & kDerivedGenerationBit) != 0 ? 0 : expected_generation;
  std::uint64_t generation = expected_generation;
  std::size_t writes = 0;
  std::size_t start = 0;
  do {
    const std::size_t count = std::min(chunk, ordered.size() - start);
    ConditionalWrite write;
    write.puts.reserve(count);
    for (std::size_t i = start; i < start + count; ++i) {
      write.puts.push_back(SlotToRecord(ordered[i]));
    }
    write.expected_generation = stored_expected;
    write.next_generation = NextGeneration(generation);
    // The first write of a chain lands above `above` (its later ones follow it); a generation
    // derived from content has no order.
    const std::uint64_t floor =
        (above & kDerivedGenerationBit) != 0 ? 0 : above & kMaxStoredGeneration;
    if (writes == 0 && floor < kMaxStoredGeneration && write.next_generation <= floor) {
      write.next_generation = NextGeneration(floor);
    }
    if (start + count < ordered.size()) write.next_generation |= kChainingBit;  // not the last
    write.overflow = overflow;
    write.free_record_1 = SlotToRecord(Slot::Free(1));
    write.fence = fence_;
    // In every write of a chain: one that stops part-way leaves the hold with the table.
    if (hold) write.removal_hold = FormatHeldRemoval(*hold);
    std::vector<int> ids;
    ids.reserve(count);
    for (std::size_t i = start; i < start + count; ++i) ids.push_back(ordered[i].id);
    TableChange change{write.next_generation, std::move(ids)};
    write.last_change = FormatChange(change);
    // The writes before this one, as record 1 listed them at the generation this write is
    // conditioned on (else none), then this one.
    std::vector<TableChange> recent;
    if (!recent_.empty() && recent_.back().generation == stored_expected) {
      recent = std::move(recent_);
    }
    recent.push_back(std::move(change));
    const auto count_ids = [&] {
      std::size_t total = 0;
      for (const TableChange& listed : recent) total += listed.ids.size();
      return total;
    };
    while (recent.size() > 1 &&
           (recent.size() > kMaxRecentChanges || count_ids() > kMaxRecentChangeIds)) {
      recent.erase(recent.begin());
    }
    write.recent_changes = FormatRecentChanges(recent);
    recent_.clear();  // unknown until this write is known to have landed
    if (auto written = backend_->Write(write); !written) {
      if (written.error().code == ErrorCode::kConflict) {
        return ExplainConflict(written.error(), stored_expected);
      }
      return written.error();
    }
    recent_ = std::move(recent);
    generation = write.next_generation;
    stored_expected = generation;
    ++writes;
    start += count;
  } while (start < ordered.size());
  if (writes > 1) {
    spdlog::info("{}: {} slots written in {} chained writes (generation {} -> {})",
                 backend_->Describe(), ordered.size(), writes, expected_generation, generation);
  }
  return generation;
}

}  // namespace hsdo
