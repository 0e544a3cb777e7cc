// The vocabulary of hsdo (ARCHITECTURE.md, glossary):
//  - target: a backend instance found by discovery;
//  - slot: a numbered HAProxy server made by server-template, ids 1..N, the same on every node;
//  - slot table: for each slot, which target fills it, its weight, and whether it is enabled.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"

namespace hsdo {

// The highest slot id a store record may carry (HAPROXY_BACKEND_SERVERS_LIST_SIZE is far below).
inline constexpr std::int64_t kMaxSlotId = 1'000'000;

struct Target {
  std::string address;                // canonical IPv4/IPv6 literal (see CanonicalIp)
  std::optional<std::uint16_t> port;  // when the source gives one
  std::string name;                   // defaults to the address
  std::string group;                  // ASG or Consul service name; may be empty
  std::string az;                     // availability zone; may be empty
  // The source asks that this target drain (ASG Terminating:Wait or Standby, Consul
  // maintenance, file `state: drain`): it is never given a slot, and a slot it holds drains.
  bool drain = false;

  // A target's identity: its address, plus its port when the source gives one.
  std::string Key() const;
  // Key() == other.Key() (for addresses that are IP literals, as every target's and valid
  // slot's is), without making either.
  bool SameKey(const Target& other) const { return address == other.address && port == other.port; }

  bool operator==(const Target&) const = default;
};

// The seed's BackendServerStatus values, plus draining: the slot keeps its target, address,
// weight and number, and agents put it in HAProxy's `drain` state until it is freed.
enum class SlotStatus { kDisabled, kEnabled, kDraining };

// An operator's override of a filled slot (`hsdo set-state`), applied by every agent; it sticks
// while the slot's target holds it.
enum class AdminState { kNone, kDrain, kMaint };

struct Slot {
  int id = 0;  // 1..N
  SlotStatus status = SlotStatus::kDisabled;
  Target target;  // empty when free
  int weight = 0;
  std::optional<WallTime> last_weight_update;  // nullopt when free
  std::optional<WallTime> drain_since;         // when draining began; only while draining
  AdminState admin = AdminState::kNone;
  // When this slot's last target was taken out of service (freed, or its drain began), as
  // the planner wrote it; nullopt when never, or not known (a table an earlier version wrote).
  // After a restart or a take-over the removal guard counts the recent ones
  // (RemovalGuard::Seed). A record of the past, not of what the slot holds: `==` ignores it.
  std::optional<WallTime> removed_at;

  bool enabled() const { return status == SlotStatus::kEnabled; }
  bool draining() const { return status == SlotStatus::kDraining; }
  bool filled() const { return status != SlotStatus::kDisabled; }  // holds a target
  bool operator==(const Slot& other) const {
    return id == other.id && status == other.status && target == other.target &&
           weight == other.weight && last_weight_update == other.last_weight_update &&
           drain_since == other.drain_since && admin == other.admin;
  }

  static Slot Free(int id) { return Slot{.id = id}; }
};

// Set on the generation of every write of a chain but the last (a change too large for one
// store transaction, SlotTableStore::WriteSlots): such a table is a write or more away from
// complete, and agents do not apply it (a wiped store written back lacks most of the fleet
// until the last write). Generations derived from content (bit 63) never have it.
inline constexpr std::uint64_t kChainingBit = std::uint64_t{1} << 62;
inline bool IsChaining(std::uint64_t generation) {
  return (generation >> 62) == 1;  // bit 62 set, bit 63 clear
}
// The generation as the complete tables count it: without kChainingBit.
inline std::uint64_t WithoutChainingBit(std::uint64_t generation) {
  return IsChaining(generation) ? generation & ~kChainingBit : generation;
}

// What a store record that failed validation still says of the target its slot held.
struct HeldByInvalidRecord {
  std::string key;            // Target::Key(): its IPAddress and Port read
  std::optional<int> weight;  // its Weight, when that reads
  AdminState admin = AdminState::kNone;
  bool operator==(const HeldByInvalidRecord&) const = default;
};

// A mass removal the orchestrator holds (orchestrator/removal_guard.h), stored with the table in
// the write that carries it (attr::kRemovalHold), so that the leader after a restart or a
// take-over holds it on: the joins written while it was held (a typo's wrong addresses) would
// otherwise make the held removal look small against the table. No slot: none held.
struct HeldRemoval {
  std::vector<int> slots;  // the enabled slots the held plan frees, in slot order
  int base = 0;            // what the fraction is of: the enabled slots when the hold began
  bool operator==(const HeldRemoval&) const = default;
};

struct SlotTable {
  std::uint64_t generation = 0;  // changes with every write to the store
  int overflow = 0;              // targets left out for lack of a free slot
  std::vector<Slot> slots;       // slots[i].id == i + 1, in slot order
  int invalid_records = 0;       // store records that failed validation and read as free
  std::vector<int> invalid_ids;  // the slots (1..N) among them, in no order
  // Of those, the ones whose address (and port) still read: what each held, which the planner
  // puts back there rather than in the lowest free slot.
  std::map<int, HeldByInvalidRecord> invalid_held;
  // Filled slots the store holds above the reader's HAPROXY_BACKEND_SERVERS_LIST_SIZE, which
  // it cannot apply (the orchestrator frees those whose target it placed below); found at each
  // whole read.
  std::vector<Slot> beyond;
  // Records above that size that could not be read: an agent leaves their servers as they
  // are, as it keeps what an invalid record below held.
  std::vector<int> invalid_above;
  // The removal its writer held when it wrote it (read from record 1; none from a writer that
  // does not store one: an earlier version, `hsdo set-state` leaves it as it was).
  HeldRemoval removal_hold;

  // A table of `size` free slots.
  static SlotTable Empty(int size);
  int EnabledCount() const;
  int BeyondListSize() const { return static_cast<int>(beyond.size()); }
  int HighestBeyond() const;  // the highest id of `beyond`, 0 when none
};

// What an agent reports about its node (HSDO_NODE_NAME): the table generation it has applied
// to its HAProxy, and the current sessions of each draining slot (`show stat` scur).
struct NodeReport {
  std::string name;
  std::uint64_t applied_generation = 0;
  WallTime applied_at{};
  WallTime reported_at{};
  std::map<int, int> draining_sessions;  // slot id -> sessions on this node
  // The agent's INTERVAL, which paces its reports; 0 from agents of versions that did not say
  // (their INTERVAL is taken to be the reader's).
  std::chrono::milliseconds interval{0};
  // A random id the agent draws when it starts (16 hex digits; empty from earlier versions):
  // two agents that report under one name overwrite each other's record, and the ids tell it.
  std::string instance;
  // The hsdo version of the agent (kVersion); empty from earlier versions, or when the record's
  // is not a short printable text: it only informs (`hsdo status --fleet`).
  std::string version;
  // The slots waiting for this node's health check to pass at their target for the first time
  // (admission gating): held at weight 0, or given their weight before, nothing else serving
  // (a node that joined). By id; nullopt from agents of versions that did not say. The
  // orchestrator holds such a slot's ramp while most live nodes wait.
  std::optional<std::set<int>> pending_admission;
  // Every slot this node serves is gated by its health check (HAPROXY_ADMISSION_GATING on,
  // `check` at the server's own address and port on every server it fills, none missing or
  // unreadable), as of the table it applied: an enabled slot of that table in neither
  // `pending_admission` nor `unvouched` has passed a check at its target here, and is UP. False
  // when it cannot say (or could not apply this cycle); nullopt from agents of versions that
  // did not say. The orchestrator counts such slots as proven when it weighs a mass removal
  // (SlotsProvenByChecks).
  std::optional<bool> gates_every_slot;
  // With gates_every_slot: the slots served without waiting that this node cannot vouch for
  // (DOWN, or UP before any check passed, at its last full read, or put in service in the
  // last minute on a passing result that was not theirs: haproxy::BackendDiff::inherited).
  std::set<int> unvouched;

  bool operator==(const NodeReport&) const = default;
};

}  // namespace hsdo
