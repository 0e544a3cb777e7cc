// The planner: the orchestrator's pure core. From the current slot table and the targets a
// source discovered, it makes the next table. No I/O and no clock reads: `now` is given.
//
// Rules (ARCHITECTURE.md invariants 1, 2, 7):
//  - a target already in a slot keeps it, for as long as it is discovered; a record without a
//    port (the Python HSDO's) is the one target at its address with a port, when exactly one
//    is and no record holds it, and takes its port in place;
//  - a new target takes the lowest free slot; a target that is gone frees its slot;
//    other targets never move, and slots are never compacted: consistent hashing in
//    HAProxy places each server on the ring by its slot id, so moving a target would move
//    its keys on every node;
//  - more targets than slots: existing assignments stay, the newest targets are left out
//    (reported, never silent);
//  - a new target starts at min_weight and gains increase_weight every increase_interval
//    until max_weight.
//
// Draining (issue 10): a slot whose target leaves (with drain_timeout > 0), or whose target the
// source asks to drain (Target::drain, whatever the timeout), keeps its target, address and
// weight and becomes draining, so that agents stop new connections while established ones
// finish. A draining slot is never given to another target. It is freed once it has drained
// for drain_timeout, or earlier when the nodes report it drained (`drained`, see DrainedSlots);
// a draining target that is discovered again without the drain flag is enabled again in its
// own slot at its weight. The operator's override (Slot::admin) goes with the slot's target
// through every plan; a freed slot loses it.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "core/slot_table.h"

namespace hsdo {

struct PlannerConfig {
  int list_size = 10;
  int min_weight = 1;
  int max_weight = 10;
  int increase_weight = 1;
  std::chrono::milliseconds increase_interval{30'000};
  std::chrono::milliseconds drain_timeout{0};  // HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT
  // The port agents serve a target without one at (HAPROXY_BACKEND_SERVER_PORT): a record of
  // that port takes the one target at its address without a port, in place (the same server,
  // its port no longer written out), as a record without a port takes the one with a port.
  std::optional<std::uint16_t> default_port;
  // Targets whose records are above list_size (the size lowered, or mistyped) stay there
  // instead of taking free slots below it (Plan::kept_above): the orchestrator moves them only
  // once the size has stayed lower for MASS_REMOVAL_DELAY.
  bool keep_above = false;
  // Weights above max_weight (it was lowered, or mistyped) stay as they are, for the same
  // reason: lowered on every node at once, most keys move.
  bool keep_weights = false;
};

struct Plan {
  SlotTable next;                // generation as in the current table; overflow set
  std::vector<int> changed;      // ids of the slots that differ from the current table
  std::vector<Target> left_out;  // targets without a slot, in discovery order
  int joined = 0;                // targets that took a slot
  int left = 0;                  // targets whose slot was freed or began to drain
  // Discovered targets with Target::drain whose slot this plan frees (drained, timed out, or
  // a drain timeout of 0): once written, the source is told (DiscoverySource::OnSlotsFreed).
  std::vector<Target> freed_drain_targets;
  // Slots whose record had no port and took the one target at its address with a port, in
  // place (the same server, its port now known), or the reverse at the default port: no
  // removal, no join.
  std::vector<int> adopted;
  // With PlannerConfig::keep_above: ids of the records above list_size whose discovered target
  // stays there (not placed below).
  std::vector<int> kept_above;
  // Slots a target took again, having left them a moment ago (`recently_freed`).
  std::vector<int> returned;
};

// Times by the caller's own steady clock (slot id -> time), so that neither a wall clock set
// forward or back nor a new leader whose clock differs from the old one's moves a drain or a
// ramp: the orchestrator counts from when it began or first saw each. Without them, the
// planner reads the table's wall times (`now - drain_since`, `now - last_weight_update`).
struct SlotTimes {
  // How long each draining slot has drained; a slot not in the map has just begun. After a
  // take-over a drain gets its whole timeout again.
  std::map<int, std::chrono::milliseconds> draining;
  // How long since each enabled slot's weight last stepped (or since it was first seen);
  // a slot not in the map steps no weight in this plan. It steps by as many
  // increase_intervals as that holds, and its last_weight_update becomes `now` (so each step
  // may come up to one cycle after its interval: a ramp of 9 steps at INTERVAL 1 s takes at
  // most 9 s longer).
  std::map<int, std::chrono::milliseconds> since_weight_step;
};

// `targets` in discovery order (oldest first): that order decides who is left out when
// there are more targets than slots. Duplicates (same Key()) count once. `drained`: ids of
// draining slots the nodes report drained (freed now, unless their target is back).
// `recently_freed`: slots freed a moment ago (by id, as they were before), which a target back
// takes again (the same address, port and name) at its weight, and other new targets take
// last.
Plan PlanSlots(const SlotTable& current, const std::vector<Target>& targets,
               const PlannerConfig& config, WallTime now, const std::set<int>& drained = {},
               const std::optional<SlotTimes>& own_clock = std::nullopt,
               const std::map<int, Slot>& recently_freed = {});

// When a node counts (ARCHITECTURE.md): a node is live while its last report is younger than
// `liveness` (3 x INTERVAL), or than 3 x the node's own INTERVAL when that is longer: an agent
// reports every INTERVAL or two of its own, so one given a longer INTERVAL than the
// orchestrator's would look dead between its reports, and the others' word alone would free a
// drain under the sessions it still serves.
inline std::chrono::milliseconds NodeLiveness(const NodeReport& report,
                                              std::chrono::milliseconds liveness) {
  return std::max(liveness, 3 * report.interval);
}
inline bool NodeIsLive(const NodeReport& report, WallTime now, std::chrono::milliseconds liveness) {
  return now - report.reported_at < NodeLiveness(report, liveness);
}

// The draining slots of `table` that are drained: at least one node is live, and every live
// node has applied a generation at or after the one that made the slot draining
// (`draining_generation`, by slot id; a slot not in it uses table.generation, which is later)
// and reports 0 sessions for it. A live node that reports nothing for the slot has not
// drained it, and neither has a node no longer live whose last report, at or after that
// generation, gave it sessions (its agent may be restarting while its HAProxy serves on), or
// that has been silent for less than `silent_hold` (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT)
// without saying the slot drained (a paused agent, a stalled HAProxy socket), when the caller
// has seen it report (`seen_reporting`: names whose report changed while the caller read).
// `inherited`: the slots whose drain the caller found under way (a restart, a take-over), whose
// `draining_generation` is only the table's it first read, not the one that began the drain: a
// silent node whose last report gave such a slot sessions holds it whatever table it applied.
std::set<int> DrainedSlots(const SlotTable& table,
                           const std::map<int, std::uint64_t>& draining_generation,
                           std::span<const NodeReport> reports, WallTime now,
                           std::chrono::milliseconds liveness,
                           std::chrono::milliseconds silent_hold,
                           const std::set<std::string>& seen_reporting,
                           const std::set<int>& inherited = {});

// The slots whose target most live nodes have not yet seen pass a health check (held at weight
// 0, or given their weight while nothing else served there) (NodeReport::pending_admission): more
// than half of the live nodes that say what they wait for (agents of earlier versions do not, and
// are not counted). A slow-booting instance's ramp waits with it, instead of running on while no
// node sends it traffic; one node whose check cannot pass holds nothing.
std::set<int> SlotsAwaitingAdmission(std::span<const NodeReport> reports, WallTime now,
                                     std::chrono::milliseconds liveness);

// The ready slots of `table` (enabled, no override) whose health check has passed at their
// target on most live nodes: more than half of the live nodes that say what they wait for
// (NodeReport::pending_admission) vouch for it, each one that gates every slot by its check
// (NodeReport::gates_every_slot), whose report this process saw written (`seen_reporting`), that
// applied a table holding the slot's target (`filled_at`: by slot id, a generation from which
// the table holds it; slots without one are not proven) and lists the slot neither as waiting
// nor as unvouched (DOWN, or given its weight once before a check passed there). Nodes that
// say whether they gate count among the live nodes, whatever they say.
// A target at an address that does not answer (a typo's) is never proven; nor is any slot of a
// fleet whose HAProxy servers have no `check`. The removal guard's evidence that a removal is
// a replacement, not an emptying.
std::set<int> SlotsProvenByChecks(const SlotTable& table,
                                  const std::map<int, std::uint64_t>& filled_at,
                                  std::span<const NodeReport> reports, WallTime now,
                                  std::chrono::milliseconds liveness,
                                  const std::set<std::string>& seen_reporting);

// The nodes that are behind: their report is older than `liveness`, or they have applied
// another generation than the table's (`generation`) while the table has not changed for
// `liveness` (a node needs a moment to follow a write).
int NodesBehind(std::span<const NodeReport> reports, std::uint64_t generation,
                WallTime table_changed_at, WallTime now, std::chrono::milliseconds liveness);

}  // namespace hsdo
