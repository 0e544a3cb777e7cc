// SlotStore: where the slot table lives (DynamoDB for a fleet, SQLite for one host).
// The subset of operations hsdo actually uses; one writer (the orchestrator), many readers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "common/result.h"
#include "core/slot_table.h"
#include "store/record_backend.h"

namespace hsdo {

class SlotStore {
 public:
  virtual ~SlotStore() = default;

  // The table's generation number, which changes with every write. Cheap: agents call it
  // every cycle and read the table only when it moved.
  virtual Result<std::uint64_t> ReadGeneration() = 0;

  // The whole table, slots 1..list size; slots never written come back free.
  virtual Result<SlotTable> ReadTable() = 0;

  // Moves when the store starts reading another table than before with the same reads (an
  // SQLite store made again at its path): its generations then count from that table's start,
  // and one equal to a generation seen before says nothing. Read it after ReadGeneration.
  virtual std::uint64_t Incarnation() { return 0; }

  // Whether this store was made for hsdo (RecordBackend::Initialised): the orchestrator
  // writes into no other.
  virtual Result<bool> Initialised() { return true; }

  // The next ReadTable reads the whole table, not only the records that the writes since the
  // last read changed: the agent's periodic resync, which so also finds an edit that left the
  // generation alone (a console edit, the Python server) or a table recreated at the same
  // generation.
  virtual void ReadWholeNext() {}

  // Writes the `changed` slots and the overflow count, atomically with a generation bump,
  // if the stored generation still equals `expected_generation` (else kConflict).
  // Returns the new generation. `hold`: the removal the writer holds, stored in the same write
  // (SlotTable::removal_hold; one without a slot clears it); nullopt leaves it as stored.
  // `above`: the new generation is above it, not only above `expected_generation` (a leader
  // writing back over a store that went back in time or was wiped lands above the generation
  // the agents hold: a write at the very generation they hold would read as no change).
  virtual Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                           std::uint64_t expected_generation,
                                           const std::optional<HeldRemoval>& hold,
                                           std::uint64_t above) = 0;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation,
                                   const std::optional<HeldRemoval>& hold) {
    return WriteSlots(changed, overflow, expected_generation, hold, 0);
  }
  // A write that leaves the stored removal hold as it is (`hsdo set-state`).
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected_generation) {
    return WriteSlots(changed, overflow, expected_generation, std::nullopt);
  }

  // Starts watching the store: `on_change` is then called (from another thread, owned by the
  // store and stopped by its destructor) whenever the table may have changed, so an agent
  // reacts at once instead of at its next poll. Returns false when this store cannot watch;
  // the caller then simply polls every INTERVAL (it polls anyway, as a fallback).
  virtual bool Watch(std::function<void()> on_change) {
    (void)on_change;
    return false;
  }
  // True once the watch calls `on_change` after every write that can change the table, none
  // missed (RecordBackend::WatchSeesEveryWrite): the agent then reads the generation when
  // woken, and only every HAPROXY_FULL_SYNC_INTERVAL otherwise.
  virtual bool WatchSeesEveryWrite() const { return false; }
  // Runs `write`, a write of this process into the store that changes no slot (an SQLite
  // agent's own node report, in the file it watches), without waking the watch; the watch's
  // `on_change` is then called once from this thread, to tell whether another process wrote
  // meanwhile (FileWatcher::Unwatched). Other stores just run it.
  virtual void Unwatched(const std::function<void()>& write) { write(); }

  // The leader lease (store/leader_election.h), for stores that keep one; the others fail
  // with kInvalidArgument. See RecordBackend::ReadLease/WriteLease for the contracts.
  virtual Result<std::optional<Lease>> ReadLease() {
    return MakeError(ErrorCode::kInvalidArgument, "this store has no leader lease");
  }
  virtual Result<void> WriteLease(const Lease& lease,
                                  std::optional<std::uint64_t> expected_version) {
    (void)lease;
    (void)expected_version;
    return MakeError(ErrorCode::kInvalidArgument, "this store has no leader lease");
  }
  // Every later WriteSlots is conditioned, in the store, on the lease still being held with
  // `fence`; `on_fenced` is called for each write refused because the lease moved on.
  virtual void SetFence(std::optional<Fence> fence, std::function<void()> on_fenced) {
    (void)fence;
    (void)on_fenced;
  }
};

}  // namespace hsdo
