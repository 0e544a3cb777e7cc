// SlotStore: where the slot table lives (DynamoDB for a fleet, SQLite for one host).
// The subset of operations hsdo actually uses; one writer (the orchestrator), many readers.
#pragma once

#include <cstdint>
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
};

}  // namespace hsdo
