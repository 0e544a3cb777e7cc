#include "store/slot_table_store.h"

#include <algorithm>
#include <charconv>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

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

// The ids listed by record 1's attr::kLastChange when it describes `generation`, else nullopt.
std::optional<std::vector<int>> LastChangeIds(const Record& first, std::uint64_t generation) {
  const auto it = first.find(attr::kLastChange);
  if (it == first.end() || it->second.type != AttributeValue::Type::kString) return std::nullopt;
  const std::string_view text = it->second.text;
  const auto colon = text.find(':');
  std::uint64_t of = 0;
  if (colon == std::string_view::npos ||
      std::from_chars(text.data(), text.data() + colon, of) !=
          std::from_chars_result{text.data() + colon, std::errc{}} ||
      of != generation) {
    return std::nullopt;
  }
  std::vector<int> ids;
  for (std::size_t start = colon + 1; start < text.size();) {
    const std::size_t end = std::min(text.find(',', start), text.size());
    int id = 0;
    if (std::from_chars(text.data() + start, text.data() + end, id) !=
            std::from_chars_result{text.data() + end, std::errc{}} ||
        id < 1) {
      return std::nullopt;
    }
    ids.push_back(id);
    start = end + 1;
  }
  return ids;
}

}  // namespace

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
    spdlog::warn("{}: slot {} is invalid: {}; read as a free slot", backend_->Describe(), id,
                 reason);
  }
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
    }
    if (*id > list_size_) continue;  // beyond HAPROXY_BACKEND_SERVERS_LIST_SIZE
    auto slot = RecordToSlot(record, *id);
    if (!slot) {
      invalid[*id] = slot.error().message;
      ++snapshot.table.invalid_records;
      continue;
    }
    snapshot.table.slots[static_cast<std::size_t>(*id - 1)] = std::move(*slot);
  }
  // Log each invalid record once per reason, and forget the ones that became valid.
  for (const auto& [id, reason] : invalid) NoteInvalid(id, reason);
  std::erase_if(invalid_reasons_,
                [&](const auto& entry) { return !invalid.contains(entry.first); });
  return snapshot;
}

Result<std::uint64_t> SlotTableStore::ReadGeneration() {
  pending_table_.reset();
  auto stored = StoredGeneration(/*consistent=*/false);
  if (!stored) return stored.error();
  if (*stored && **stored > 0) {
    NoteGeneration(true, false);
    return **stored;
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
  if (!held_) return std::optional<SlotTable>();
  auto first = backend_->Get(1, {}, /*consistent=*/true);
  if (!first) return first.error();
  if (!*first) return std::optional<SlotTable>();
  const auto stored = RecordGeneration(**first);
  // The same generation is a resync (or a write that left no trace): read it whole.
  if (!stored || !*stored || **stored != NextGeneration(held_->generation)) {
    return std::optional<SlotTable>();
  }
  const std::uint64_t generation = **stored;
  const auto ids = LastChangeIds(**first, generation);
  if (!ids) return std::optional<SlotTable>();
  std::vector<int> others;
  for (const int id : *ids) {
    if (id != 1 && id <= list_size_) others.push_back(id);
  }
  auto records = backend_->GetMany(others);
  if (!records) return records.error();
  // The records are of `generation` only if no write landed meanwhile.
  auto after = StoredGeneration(/*consistent=*/true);
  if (!after) return after.error();
  if (after->value_or(0) != generation) return std::optional<SlotTable>();

  std::map<int, const Record*> by_id;
  for (const Record& record : *records) {
    if (const auto id = RecordId(record)) by_id[*id] = &record;
  }
  SlotTable table = *held_;
  table.generation = generation;
  table.overflow = RecordOverflow(**first);
  auto apply = [&](int id, const Record* record) {
    const bool was_invalid = invalid_reasons_.contains(id);
    Slot slot = Slot::Free(id);
    bool invalid = false;
    if (record != nullptr) {
      if (auto decoded = RecordToSlot(*record, id)) {
        slot = std::move(*decoded);
      } else {
        invalid = true;
        NoteInvalid(id, decoded.error().message);
      }
    }
    if (!invalid) invalid_reasons_.erase(id);
    table.invalid_records += (invalid ? 1 : 0) - (was_invalid ? 1 : 0);
    table.slots[static_cast<std::size_t>(id - 1)] = std::move(slot);
  };
  apply(1, &**first);  // record 1 is read whole anyway
  for (const int id : others) {
    const auto it = by_id.find(id);
    apply(id, it == by_id.end() ? nullptr : it->second);
  }
  return std::optional<SlotTable>(std::move(table));
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
    if (before_value.value_or(0) == 0 && scanned == 0) {
      // No generation to bracket with (the seed's agents read the same way).
      NoteGeneration(false, snapshot->empty);
      snapshot->table.generation = DerivedGeneration(snapshot->table, snapshot->empty);
      return std::move(snapshot->table);
    }
    auto after = StoredGeneration(/*consistent=*/true);
    if (!after) return after.error();
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
                                                 std::uint64_t expected_generation) {
  pending_table_.reset();
  for (const Slot& slot : changed) {
    if (slot.id < 1 || slot.id > list_size_) {
      return MakeError(ErrorCode::kInvalidArgument, "slot id {} outside 1-{}", slot.id, list_size_);
    }
  }
  // Freed slots first, then slot order: split into several writes, a target moving to a new
  // slot is never in two slots of any intermediate table.
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
    write.overflow = overflow;
    write.free_record_1 = SlotToRecord(Slot::Free(1));
    write.fence = fence_;
    std::vector<int> ids;
    ids.reserve(count);
    for (std::size_t i = start; i < start + count; ++i) ids.push_back(ordered[i].id);
    write.last_change = fmt::format("{}:{}", write.next_generation, fmt::join(ids, ","));
    if (auto written = backend_->Write(write); !written) {
      if (written.error().code == ErrorCode::kConflict) {
        return ExplainConflict(written.error(), stored_expected);
      }
      return written.error();
    }
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
