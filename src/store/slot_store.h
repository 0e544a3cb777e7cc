// SlotStore: where the slot table lives (DynamoDB for a fleet, SQLite for one host).
// The subset of operations hsdo actually uses; one writer (the orchestrator), many readers.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "common/result.h"
#include "core/slot_table.h"

namespace hsdo {

class SlotStore {
 public:
  virtual ~SlotStore() = default;

  // The table's generation number, which changes with every write. Cheap: agents call it
  // every cycle and read the table only when it moved.
  virtual Result<std::uint64_t> ReadGeneration() = 0;

  // The whole table, slots 1..list size; slots never written come back free.
  virtual Result<SlotTable> ReadTable() = 0;

  // Writes the `changed` slots and the overflow count, atomically with a generation bump,
  // if the stored generation still equals `expected_generation` (else kConflict).
  // Returns the new generation.
  virtual Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                           std::uint64_t expected_generation) = 0;

  // Starts watching the store: `on_change` is then called (from another thread, owned by the
  // store and stopped by its destructor) whenever the table may have changed, so an agent
  // reacts at once instead of at its next poll. Returns false when this store cannot watch;
  // the caller then simply polls every INTERVAL (it polls anyway, as a fallback).
  virtual bool Watch(std::function<void()> on_change) {
    (void)on_change;
    return false;
  }
};

}  // namespace hsdo
