// The seed record codec, written once for every store: a slot ↔ the Python HSDO's record
// (ARCHITECTURE.md, "Store layout"), plus the table metadata hsdo keeps on record 1.
// Everything read from a store is validated here and nowhere else (invariant 5): a record
// that does not describe a valid slot is refused with a reason, and the caller reads the
// slot as free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/result.h"
#include "core/slot_table.h"
#include "store/record_backend.h"

namespace hsdo {

// Generations hsdo stores stay below 2^62, kChainingBit aside; larger stored values are
// refused. Generations derived from a table's content (a table without TableGeneration) have
// bit 63 set.
inline constexpr std::uint64_t kMaxStoredGeneration = (std::uint64_t{1} << 62) - 1;
inline constexpr std::uint64_t kDerivedGenerationBit = std::uint64_t{1} << 63;
static_assert((kMaxStoredGeneration & kChainingBit) == 0);

// Whether `read`, a table's generation in the store, is earlier than `held`, the one a reader
// (or the leader, which wrote it) had from the same store: the store went back in time (a
// backup restored in place, old records put back). Generations derived from content have no
// order; kChainingBit aside.
inline bool GenerationWentBack(std::uint64_t read, std::uint64_t held) {
  return (read & kDerivedGenerationBit) == 0 && (held & kDerivedGenerationBit) == 0 &&
         WithoutChainingBit(read) < WithoutChainingBit(held);
}

// The record of `slot`: the seed's six attributes exactly (the seed's free record when the
// slot is free), plus Port and AZ when known, DrainingSince for a draining slot (written with
// BackendServerStatus "disabled", so a Python agent takes it out as the seed does on removal)
// and AdminState for an override. Never TableGeneration/Overflow.
Record SlotToRecord(const Slot& slot);

// The slot record `record` describes as slot `id`, or an error saying what is wrong (a
// fixed text, never the offending value). A record whose BackendServerStatus is "disabled"
// is a free slot whatever else it holds, unless it has a DrainingSince (a draining slot).
Result<Slot> RecordToSlot(const Record& record, int id);

// What a record says of its target when its IPAddress (and Port, if any) read, whatever else
// is wrong with it: where an invalid record's target goes back, at what weight and override.
std::optional<HeldByInvalidRecord> RecordHeldTarget(const Record& record);

// The BackendServerID of a record, if it is an integer in 1-1,000,000.
std::optional<int> RecordId(const Record& record);

// The stored TableGeneration of record 1: nullopt when absent (a table the Python HSDO
// wrote, or a new one), an error when present but not an integer in 0-kMaxStoredGeneration
// (kChainingBit set or not).
Result<std::optional<std::uint64_t>> RecordGeneration(const Record& record);

// The Overflow of record 1: 0 when absent or invalid.
int RecordOverflow(const Record& record);

// A strict decimal integer (what DynamoDB's N and SQLite's INTEGER hold): an optional '-',
// digits, nothing else.
std::optional<std::int64_t> ParseInteger(const AttributeValue& value);

}  // namespace hsdo
