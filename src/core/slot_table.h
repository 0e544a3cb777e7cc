// The vocabulary of hsdo (ARCHITECTURE.md, glossary):
//  - target: a backend instance found by discovery;
//  - slot: a numbered HAProxy server made by server-template, ids 1..N, the same on every node;
//  - slot table: for each slot, which target fills it, its weight, and whether it is enabled.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace hsdo {

struct Target {
  std::string address;                // canonical IPv4/IPv6 literal (see CanonicalIp)
  std::optional<std::uint16_t> port;  // when the source gives one
  std::string name;                   // defaults to the address
  std::string group;                  // ASG or Consul service name; may be empty
  std::string az;                     // availability zone; may be empty

  // A target's identity: its address, plus its port when the source gives one.
  std::string Key() const;

  bool operator==(const Target&) const = default;
};

// The seed's BackendServerStatus values.
enum class SlotStatus { kDisabled, kEnabled };

struct Slot {
  int id = 0;  // 1..N
  SlotStatus status = SlotStatus::kDisabled;
  Target target;  // empty when free
  int weight = 0;
  std::optional<WallTime> last_weight_update;  // nullopt when free

  bool enabled() const { return status == SlotStatus::kEnabled; }
  bool operator==(const Slot&) const = default;

  static Slot Free(int id) { return Slot{.id = id}; }
};

struct SlotTable {
  std::uint64_t generation = 0;  // changes with every write to the store
  int overflow = 0;              // targets left out for lack of a free slot
  std::vector<Slot> slots;       // slots[i].id == i + 1, in slot order
  int invalid_records = 0;       // store records that failed validation and read as free

  // A table of `size` free slots.
  static SlotTable Empty(int size);
  int EnabledCount() const;
};

}  // namespace hsdo
