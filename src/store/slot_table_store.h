// SlotTableStore: the slot table over any RecordBackend, with the protocol written once:
//  - the seed record codec and its one strict validation (store/seed_record.h); a record
//    that fails it reads as a free slot, is logged once and counted in the table it was
//    read with (SlotTable::invalid_records, which the agent adds to
//    hsdo_agent_invalid_slots_total);
//  - the generation: TableGeneration on record 1, bumped by every write. A table without
//    one (the Python HSDO never writes it) gets a generation derived from its content, so
//    that agents read it whole every cycle, as the seed's agents do, and still see every
//    change at once;
//  - reads bracketed by consistent generation reads (a backend's ReadAll need not be a
//    snapshot) and read again when a write raced them;
//  - on a backend whose ReadAll is not a snapshot (DynamoDB's Scan), a reader that holds the
//    table at generation g-k reads only the records the writes g-k -> g changed, listed on
//    record 1 (attr::kLastChange for the last write, attr::kRecentChanges for the last
//    kMaxRecentChanges): with record 1 in one snapshot read when the backend has one (the
//    generation read already carries both, so a change costs the agent one request more
//    than a quiet cycle), else bracketed by generation reads; anything else (further behind,
//    a list that does not reach the held generation) is a whole read;
//  - writes conditioned on the generation (and on the leader's fence), split into chained
//    writes of at most MaxRecordsPerWrite records, freed slots first so that a target
//    moving to another slot is never in two slots at once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "store/record_backend.h"
#include "store/slot_store.h"

namespace hsdo {

// Record 1's attr::kRecentChanges lists at most this many writes, with at most this many ids
// in all (the oldest dropped first, the newest always kept): record 1 stays small, and the
// ids and record 1 fit in one DynamoDB TransactGetItems (100 items).
inline constexpr std::size_t kMaxRecentChanges = 8;
inline constexpr std::size_t kMaxRecentChangeIds = 99;

// One write as record 1 lists it (attr::kLastChange): the generation it made and the ids of
// the records it replaced.
struct TableChange {
  std::uint64_t generation = 0;
  std::vector<int> ids;
  bool operator==(const TableChange&) const = default;
};

class SlotTableStore : public SlotStore {
 public:
  SlotTableStore(std::unique_ptr<RecordBackend> backend, int list_size);

  // One small read of record 1 (eventually consistent when the backend allows) on a table
  // hsdo writes; on a table without a generation, a whole read, kept for the ReadTable call
  // that follows it.
  Result<std::uint64_t> ReadGeneration() override;
  std::uint64_t Incarnation() override { return backend_->Incarnation(); }
  Result<bool> Initialised() override { return backend_->Initialised(); }
  Result<SlotTable> ReadTable() override;
  void ReadWholeNext() override { held_.reset(); }
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation,
                                   const std::optional<HeldRemoval>& hold,
                                   std::uint64_t above) override;
  bool Watch(std::function<void()> on_change) override;
  bool WatchSeesEveryWrite() const override { return backend_->WatchSeesEveryWrite(); }
  void Unwatched(const std::function<void()>& write) override { backend_->Unwatched(write); }

  Result<std::optional<Lease>> ReadLease() override { return backend_->ReadLease(); }
  Result<void> WriteLease(const Lease& lease,
                          std::optional<std::uint64_t> expected_version) override {
    return backend_->WriteLease(lease, expected_version);
  }
  void SetFence(std::optional<Fence> fence, std::function<void()> on_fenced = {}) override {
    fence_ = std::move(fence);
    on_fenced_ = std::move(on_fenced);
  }

  RecordBackend& backend() { return *backend_; }
  int list_size() const { return list_size_; }

 private:
  struct Snapshot {
    SlotTable table;
    std::optional<std::uint64_t> stored_generation;  // TableGeneration of record 1
    bool empty = true;  // no record at all, or only a lease on a fresh table: never written
  };
  Result<std::optional<std::uint64_t>> StoredGeneration(bool consistent);
  Result<Snapshot> ReadAllOnce();
  Result<SlotTable> ReadWholeTable();
  // The table at the generation after held_'s, from the records its write changed; nullopt
  // when that cannot be done (then the caller reads the whole table).
  Result<std::optional<SlotTable>> ReadChanges();
  // ReadChanges with one GetSnapshot of the changed records and record 1; `seen` is record 1
  // as this cycle's generation read saw it (its LastChange spares a read), if any.
  Result<std::optional<SlotTable>> ReadChangesAtOnce(const std::optional<Record>& seen);
  // ReadChanges with GetMany between two consistent reads of record 1.
  Result<std::optional<SlotTable>> ReadChangesBracketed();
  // `ids` without record 1 and those beyond the table.
  std::vector<int> ChangedSlots(const std::vector<int>& ids) const;
  // Whether any of `ids` is above the list size: then the table is read whole.
  bool ChangesBeyondListSize(const std::vector<int>& ids) const;
  // held_ with the records `ids` (besides record 1) replaced by `records` (absent: free).
  SlotTable ApplyChanges(std::uint64_t generation, const Record& first, const std::vector<int>& ids,
                         const std::vector<Record>& records);
  void Hold(const SlotTable& table);
  void NoteGeneration(bool has_generation, bool empty);
  void NoteInvalid(int id, const std::string& reason);
  // Record 1's attr::kRemovalHold (none when absent; one that does not parse is logged once).
  HeldRemoval RemovalHoldOf(const Record& first);
  // After a conflict on a fenced write: the error to return, and whether the fence was the
  // reason (the lease moved on), which is counted.
  Error ExplainConflict(const Error& error, std::uint64_t expected);

  std::unique_ptr<RecordBackend> backend_;
  int list_size_;
  std::optional<Fence> fence_;
  std::function<void()> on_fenced_;
  // The table read by the last ReadGeneration of a table without a generation.
  std::optional<SlotTable> pending_table_;
  // The last table ReadTable returned, kept for ReadChanges (backends without snapshots).
  std::optional<SlotTable> held_;
  // Record 1 (generation and LastChange) as the last ReadGeneration saw it, for ReadChanges.
  std::optional<Record> seen_first_;
  // The writes that led to the last record 1 seen or written (RecentChangesOf, oldest
  // first), to which a write conditioned on the newest one's generation adds its own.
  std::vector<TableChange> recent_;
  std::optional<bool> had_generation_;          // for logging the change once
  std::map<int, std::string> invalid_reasons_;  // slot id (0: no id) → last reason logged
  std::string invalid_hold_;                    // the last attr::kRemovalHold that did not parse
};

// attr::kRemovalHold's text: "<base>:<slots>", the slots as ranges ("6:1-3,5"); empty for a hold
// without a slot (none).
std::string FormatHeldRemoval(const HeldRemoval& hold);
// That text back; nullopt when it is not one (a base below 1, no slot, slots not ascending) or
// names no slot up to `max_slot` (those above are left out: a reader never expands a range past
// its table).
std::optional<HeldRemoval> ParseHeldRemoval(std::string_view text,
                                            std::int64_t max_slot = kMaxSlotId);

// The generation a table without a stored one reads as: 0 when it has no record at all,
// else a hash of its content with kDerivedGenerationBit set.
std::uint64_t DerivedGeneration(const SlotTable& table, bool empty);

}  // namespace hsdo
