#include "core/planner.h"

#include <algorithm>
#include <map>
#include <memory_resource>
#include <unordered_map>
#include <unordered_set>

namespace hsdo {

namespace {

// A weight brought into a plan, at most max_weight unless a lowered maximum is held.
int Capped(int weight, const PlannerConfig& config) {
  return config.keep_weights ? weight : std::min(weight, config.max_weight);
}

// Advances an enabled slot's weight ramp by the whole intervals elapsed since its last
// step. On the table's wall times (`own_clock` null) steps are anchored on the previous step,
// not on `now`, so the ramp does not drift with the cycle period; on the caller's own clock
// (SlotTimes::since_weight_step) a step is stamped `now` and the caller times the next one
// from its record of it.
void RampWeight(Slot& slot, const PlannerConfig& config, WallTime now,
                const std::map<int, std::chrono::milliseconds>* own_clock) {
  if (!slot.last_weight_update) slot.last_weight_update = now;
  slot.weight = Capped(slot.weight, config);
  if (slot.weight >= config.max_weight) return;
  if (config.increase_interval.count() == 0) {
    slot.weight = config.max_weight;
    slot.last_weight_update = now;
    return;
  }
  WallTime::duration elapsed = now - *slot.last_weight_update;
  if (own_clock != nullptr) {
    const auto found = own_clock->find(slot.id);
    elapsed = found == own_clock->end() ? WallTime::duration{0} : WallTime::duration{found->second};
  }
  if (elapsed < config.increase_interval) return;
  const auto steps = elapsed / config.increase_interval;
  const long long raised =
      static_cast<long long>(slot.weight) + static_cast<long long>(steps) * config.increase_weight;
  slot.weight = static_cast<int>(std::min<long long>(raised, config.max_weight));
  slot.last_weight_update =
      own_clock != nullptr
          ? now
          : *slot.last_weight_update +
                std::chrono::duration_cast<WallTime::duration>(config.increase_interval * steps);
}

// Targets by identity (Target::SameKey), without making their Key() strings: a plan hashes
// every discovered target and every filled slot, 15,000 of them at 10,000 targets.
struct KeyHash {
  std::size_t operator()(const Target* target) const {
    const std::size_t port = target->port ? *target->port + 1u : 0u;
    return std::hash<std::string_view>{}(target->address) ^ (port * 0x9e3779b97f4a7c15u);
  }
};
struct KeyEqual {
  bool operator()(const Target* a, const Target* b) const { return a->SameKey(*b); }
};
using TargetSet = std::pmr::unordered_set<const Target*, KeyHash, KeyEqual>;

// Slot::removed_at of `after`, what the plan makes of `before`: when a target leaves the slot
// (freed, or replaced by another), the time it was taken out of service (its drain's start when
// it drained); otherwise the time the slot holds.
void MarkRemoval(const Slot& before, Slot& after, WallTime now, bool adopted) {
  const bool left =
      before.filled() && !(after.filled() && (adopted || after.target.SameKey(before.target)));
  if (!left) {
    after.removed_at = before.removed_at;
  } else if (before.draining() && before.drain_since) {
    after.removed_at = before.drain_since;
  } else {
    after.removed_at = now;
  }
}

// Whether a node that applied the table of generation `applied` holds what the table of
// `generation` held, or later. Generations derived from a table's content (bit 63: a table no
// hsdo wrote, seed_record.h) are in no order, among themselves or with stored ones.
bool AppliedSince(std::uint64_t applied, std::uint64_t generation) {
  constexpr auto kDerived = std::uint64_t{1} << 63;
  if ((applied & kDerived) != 0 || (generation & kDerived) != 0) return applied == generation;
  return applied >= generation;
}

}  // namespace

Plan PlanSlots(const SlotTable& current, const std::vector<Target>& targets,
               const PlannerConfig& config, WallTime now, const std::set<int>& drained,
               const std::optional<SlotTimes>& own_clock,
               const std::map<int, Slot>& recently_freed) {
  Plan plan;
  plan.next = SlotTable::Empty(config.list_size);
  plan.next.generation = current.generation;

  // Discovered targets by identity; the first of duplicates wins, in its place, unless it
  // asks to drain and a later one does not (one entry of a target in `state: drain` drained it
  // out of every node while another entry said it serves).
  // Both sets live for this call only: their nodes come from one buffer, freed at once.
  std::pmr::monotonic_buffer_resource arena;
  TargetSet discovered(&arena);
  std::vector<const Target*> order;
  discovered.reserve(targets.size());
  for (const auto& target : targets) {
    const auto [it, first] = discovered.insert(&target);
    if (first) {
      order.push_back(&target);
    } else if ((*it)->drain && !target.drain) {
      const Target* draining = *it;
      discovered.erase(it);
      discovered.insert(&target);
      std::replace(order.begin(), order.end(), draining, &target);
    }
  }

  // A record without a port (the Python HSDO's, which had one port for all, or a file entry
  // without one) whose address is no target's without a port takes the one target at that
  // address with a port that no record holds: the same server, its port now known (a Consul
  // service's). Taken for a new target, it would leave its slot and every key would move on
  // every node (a fleet switching from the Python server in Consul mode: every slot at once).
  // Made only when a record needs it. The reverse too: a record at the default port (a file's
  // `port: 80` taken out of every entry, 80 being the agents' port) takes the one target at
  // its address without a port (review: every target moved, once the guard's delay was over).
  using ByAddress = std::pmr::unordered_map<std::string_view, const Target*>;
  std::optional<ByAddress> ported;
  std::optional<ByAddress> unported;
  const auto adopter = [&](const Target& record) -> const Target* {
    const bool reverse = record.port.has_value();
    if (reverse && record.port != config.default_port) return nullptr;
    std::optional<ByAddress>& candidates = reverse ? unported : ported;
    if (!candidates) {
      TargetSet in_table(&arena);
      for (const Slot& slot : current.slots) {
        if (slot.filled()) in_table.insert(&slot.target);
      }
      candidates.emplace(&arena);
      for (const Target* target : order) {
        if (target->port.has_value() == reverse || in_table.contains(target)) continue;
        // Two at one address: which one the record meant is not known.
        const auto [it, first] = candidates->try_emplace(target->address, target);
        if (!first) it->second = nullptr;
      }
    }
    const auto it = candidates->find(record.address);
    return it == candidates->end() ? nullptr : it->second;
  };

  // Slots beyond list_size (the operator shrank it) are dropped; their targets compete
  // for free slots below as new ones (with their overrides, below).
  TargetSet placed(&arena);
  placed.reserve(current.slots.size());
  const std::size_t kept = std::min(current.slots.size(), plan.next.slots.size());
  for (std::size_t i = 0; i < kept; ++i) {
    const Slot& old_slot = current.slots[i];
    if (!old_slot.filled()) continue;
    const Target* key = &old_slot.target;
    if (placed.contains(key)) {
      if (old_slot.enabled()) ++plan.left;  // a duplicate in a corrupt table: freed
      continue;
    }
    const auto it = discovered.find(key);
    const Target* target = it == discovered.end() ? nullptr : *it;
    if (target == nullptr) {
      target = adopter(*key);
      if (target != nullptr && placed.contains(target)) target = nullptr;  // taken already
      if (target != nullptr) {
        key = target;  // what `placed` holds for it from now on
        plan.adopted.push_back(static_cast<int>(i) + 1);
      }
    }
    Slot slot = old_slot;
    slot.id = static_cast<int>(i) + 1;
    if (target != nullptr) {
      slot.target = *target;      // the name, group or AZ may have changed
      slot.target.drain = false;  // the source's request, not part of the slot
    }
    if (target != nullptr && !target->drain) {
      // Discovered: stays enabled, or a draining target came back, at its weight.
      slot.status = SlotStatus::kEnabled;
      slot.drain_since.reset();
      if (old_slot.draining() && target->name != old_slot.target.name) {
        // Another instance at the address of one that was leaving (a private IP given again
        // within the drain): not the drained one back. It holds the slot as a new target does,
        // from the first weight of the ramp, without the override set on the leaving one (a
        // `maint` would keep it out for good).
        slot.weight = std::min(config.min_weight, config.max_weight);
        slot.admin = AdminState::kNone;
        slot.last_weight_update = now;
        ++plan.joined;
        plan.next.slots[i] = std::move(slot);
        placed.insert(key);
        continue;
      }
      RampWeight(slot, config, now, own_clock ? &own_clock->since_weight_step : nullptr);
      plan.next.slots[i] = std::move(slot);
      placed.insert(key);
      continue;
    }
    // Gone, or the source asks that it drain.
    if (old_slot.enabled()) {
      ++plan.left;
      slot.status = SlotStatus::kDraining;
      slot.drain_since = now;
    } else if (!slot.drain_since) {
      slot.drain_since = now;  // cannot be read from a store; a draining slot always has one
    }
    const auto drained_for_slot = [&]() -> WallTime::duration {
      if (!own_clock) return now - *slot.drain_since;
      const auto found = own_clock->draining.find(slot.id);
      if (old_slot.enabled() || found == own_clock->draining.end()) return WallTime::duration{0};
      return found->second;
    };
    const bool timed_out = drained_for_slot() >= config.drain_timeout;
    if (timed_out || drained.contains(slot.id)) {
      if (target != nullptr) plan.freed_drain_targets.push_back(*target);
      continue;  // freed: plan.next holds a free slot here
    }
    plan.next.slots[i] = std::move(slot);
    placed.insert(key);
  }

  // The size lowered, or mistyped: the targets above it stay where every node serves them
  // while the orchestrator holds the move (PlannerConfig::keep_above).
  // A draining record's only for its own target back (review: placed below at once, its keys
  // moved for good because of a typo), not for another instance at its address.
  const auto keep_above = [&](const Slot& above) {
    if (!above.filled()) return;
    const auto it = discovered.find(&above.target);
    const Target* target = it != discovered.end() ? *it : adopter(above.target);
    if (target == nullptr || target->drain || placed.contains(target)) return;
    if (above.draining() && target->name != above.target.name) return;
    placed.insert(target);
    plan.kept_above.push_back(above.id);
  };
  if (config.keep_above) {
    for (std::size_t i = kept; i < current.slots.size(); ++i) keep_above(current.slots[i]);
    for (const Slot& above : current.beyond) keep_above(above);
  }

  // New targets take the lowest free slots, in discovery order; a target the source asks to
  // drain never takes one. A target whose record turned invalid (read as a free slot) goes
  // back where the record is, at the weight and override it says where they read: every node
  // still serves it there, and its keys stay.
  std::map<std::string_view, std::pair<std::size_t, const HeldByInvalidRecord*>> invalid_slot_of;
  for (const auto& [id, held] : current.invalid_held) {
    const auto index = static_cast<std::size_t>(id - 1);
    if (id >= 1 && index < plan.next.slots.size()) {
      invalid_slot_of.try_emplace(held.key, index, &held);
    }
  }
  // back_to[i]: the slot order[i] goes back to (none: slots.size()); reserved from other joins.
  std::vector<std::pair<std::size_t, const HeldByInvalidRecord*>> back_to;
  std::vector<bool> reserved;
  if (!invalid_slot_of.empty()) {
    back_to.assign(order.size(), {plan.next.slots.size(), nullptr});
    reserved.assign(plan.next.slots.size(), false);
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (order[i]->drain || placed.contains(order[i])) continue;
      const auto found = invalid_slot_of.find(order[i]->Key());
      if (found == invalid_slot_of.end() || plan.next.slots[found->second.first].filled()) {
        continue;
      }
      back_to[i] = found->second;
      reserved[found->second.first] = true;
      invalid_slot_of.erase(found);  // the first of duplicates
    }
  }
  // The operator's overrides of targets in slots beyond list_size (the operator shrank it):
  // each goes with its target to the slot it takes below. Dropped, a `maint` put the target
  // back in service on every node, and nothing said so (reconfiguration review). So does its
  // weight: a live target at full weight started its ramp again (weights review).
  // (A store reads them into `beyond`, the table's slots stopping at the reader's size.)
  // Keyed as the records are: a record without a port also by its address, for the one
  // discovered target there (as `adopter` matches it below the list size). A draining slot's
  // override and weight are its leaving target's: another instance at its address (a private
  // IP given again) gets neither, as below. Two records of one target: maint wins over drain,
  // whatever the order they were read in, and the higher weight.
  std::map<std::string, std::vector<const Slot*>> beyond_records;
  const auto note_record = [&](const Slot& slot) {
    if (slot.filled()) beyond_records[slot.target.Key()].push_back(&slot);
  };
  for (std::size_t i = kept; i < current.slots.size(); ++i) note_record(current.slots[i]);
  for (const Slot& slot : current.beyond) note_record(slot);
  const auto carry_from_above = [&](const Target& target, Slot& slot) {
    auto found = beyond_records.find(target.Key());
    if (found == beyond_records.end() && target.port) {
      found = beyond_records.find(Target{.address = target.address}.Key());
      const auto same_address = [&](const Target* other) {
        return other->address == target.address;
      };
      if (found != beyond_records.end() &&
          std::count_if(order.begin(), order.end(), same_address) != 1) {
        found = beyond_records.end();  // which of them the record meant is not known
      }
    }
    if (found == beyond_records.end()) return;
    const Slot* weighted = nullptr;
    for (const Slot* above : found->second) {
      if (above->draining() && above->target.name != target.name) continue;
      if (above->admin != AdminState::kNone && slot.admin != AdminState::kMaint) {
        slot.admin = above->admin;
      }
      if (weighted == nullptr || above->weight > weighted->weight) weighted = above;
    }
    if (weighted != nullptr) {
      slot.weight = Capped(weighted->weight, config);
      slot.last_weight_update = weighted->last_weight_update.value_or(now);
    }
  };
  // Slots a target left a moment ago (`recently_freed`: freed by an earlier plan), free now: a
  // target back there within that moment (its check failed for a second, a file rewritten)
  // takes its slot again at its weight, and other new targets take those slots last. Taken by
  // a new target, the one back took another slot: its keys moved on every node, for good, and
  // its ramp began again (review: a Consul check failing for 2 s while another instance
  // registered).
  const std::size_t size = plan.next.slots.size();
  std::vector<const Slot*> left(size, nullptr);
  bool any_left = false;
  for (const auto& [id, freed] : recently_freed) {
    const auto index = static_cast<std::size_t>(id - 1);
    if (id < 1 || index >= size || !freed.filled() || plan.next.slots[index].filled() ||
        (!reserved.empty() && reserved[index])) {
      continue;
    }
    left[index] = &freed;
    any_left = true;
  }
  std::vector<const Slot*> home;  // home[i]: the slot order[i] left a moment ago
  if (any_left) {
    std::pmr::unordered_map<const Target*, std::size_t, KeyHash, KeyEqual> left_by(&arena);
    for (std::size_t index = 0; index < size; ++index) {
      if (left[index] != nullptr) left_by.emplace(&left[index]->target, index);
    }
    home.assign(order.size(), nullptr);
    if (reserved.empty()) reserved.assign(size, false);
    for (std::size_t i = 0; i < order.size(); ++i) {
      if (order[i]->drain || placed.contains(order[i]) ||
          (!back_to.empty() && back_to[i].second != nullptr)) {
        continue;
      }
      const auto found = left_by.find(order[i]);
      if (found == left_by.end() || reserved[found->second] ||
          left[found->second]->target.name != order[i]->name) {
        continue;  // another instance at its address (a private IP given again): a new one
      }
      home[i] = left[found->second];
      reserved[found->second] = true;
    }
  }
  // The lowest free slot that is not reserved, one a target left a moment ago last.
  std::size_t next_free = 0;
  std::size_t next_left = 0;
  const auto lowest_free = [&] {
    const auto open = [&](std::size_t index) {
      return !plan.next.slots[index].filled() && (reserved.empty() || !reserved[index]);
    };
    while (next_free < size && (!open(next_free) || left[next_free] != nullptr)) ++next_free;
    if (next_free < size) return next_free;
    while (next_left < size && !open(next_left)) ++next_left;
    return next_left;
  };
  for (std::size_t i = 0; i < order.size(); ++i) {
    const Target* target = order[i];
    if (target->drain || placed.contains(target)) continue;
    const HeldByInvalidRecord* held = back_to.empty() ? nullptr : back_to[i].second;
    const Slot* back = home.empty() ? nullptr : home[i];
    const std::size_t index = held != nullptr   ? back_to[i].first
                              : back != nullptr ? static_cast<std::size_t>(back->id - 1)
                                                : lowest_free();
    if (index == size) {
      plan.left_out.push_back(*target);
      continue;
    }
    Slot& slot = plan.next.slots[index];
    slot.status = SlotStatus::kEnabled;
    slot.target = *target;
    slot.weight = std::min(config.min_weight, config.max_weight);
    slot.last_weight_update = now;
    if (held != nullptr) {
      slot.weight = held->weight.value_or(slot.weight);
      slot.weight = Capped(slot.weight, config);
      slot.admin = held->admin;
    } else if (back != nullptr) {
      slot.weight = Capped(back->weight, config);
      slot.last_weight_update = back->last_weight_update.value_or(now);
      plan.returned.push_back(back->id);
    } else if (!beyond_records.empty()) {
      carry_from_above(*target, slot);
    }
    placed.insert(target);
    ++plan.joined;
  }
  plan.next.overflow = static_cast<int>(plan.left_out.size());
  // HAPROXY_BACKEND_SERVER_MIN_WEIGHT=0: where no enabled slot has a weight (a first fill, a
  // fleet replaced whole, at once or the new targets joining a cycle before the old ones
  // leave), every enabled slot at 0 goes to 1; at 0, HAProxy would have no server to send any
  // request to until the next INCREASE_WEIGHT_INTERVAL.
  const auto weighted = [](const Slot& slot) { return slot.enabled() && slot.weight > 0; };
  if (config.min_weight == 0 && config.max_weight > 0 &&
      std::none_of(plan.next.slots.begin(), plan.next.slots.end(), weighted)) {
    for (Slot& slot : plan.next.slots) {
      if (slot.enabled()) slot.weight = 1;
    }
  }

  for (Slot& slot : plan.next.slots) {
    const auto index = static_cast<std::size_t>(slot.id - 1);
    if (index < current.slots.size()) {
      MarkRemoval(current.slots[index], slot, now,
                  std::binary_search(plan.adopted.begin(), plan.adopted.end(), slot.id));
    }
    if (index >= current.slots.size() || !(current.slots[index] == slot)) {
      plan.changed.push_back(slot.id);
    }
  }
  return plan;
}

std::set<int> DrainedSlots(const SlotTable& table,
                           const std::map<int, std::uint64_t>& draining_generation,
                           std::span<const NodeReport> reports, WallTime now,
                           std::chrono::milliseconds liveness,
                           std::chrono::milliseconds silent_hold,
                           const std::set<std::string>& seen_reporting,
                           const std::set<int>& inherited) {
  std::set<int> drained;
  std::vector<const NodeReport*> live;
  for (const NodeReport& report : reports) {
    if (NodeIsLive(report, now, liveness)) live.push_back(&report);
  }
  if (live.empty()) return drained;  // nobody to ask: only the timeout frees
  for (const Slot& slot : table.slots) {
    if (!slot.draining()) continue;
    const auto since = draining_generation.find(slot.id);
    const std::uint64_t generation =
        since != draining_generation.end() ? since->second : table.generation;
    const bool all_drained = std::all_of(live.begin(), live.end(), [&](const NodeReport* node) {
      const auto sessions = node->draining_sessions.find(slot.id);
      return node->applied_generation >= generation && sessions != node->draining_sessions.end() &&
             sessions->second == 0;
    });
    // A node no longer live holds the slot until it reports again or the drain times out,
    // unless it said the slot drained: while its last report made during this drain gave the
    // slot sessions (its agent may be restarting, a crash or an upgrade, while HAProxy serves
    // on), or, seen reporting by the caller, while it has been silent for less than
    // `silent_hold` (an agent paused, or stuck in a stalled HAProxy's socket, whose HAProxy
    // still sends the leaving target new requests at full weight: freed on the others' word,
    // the instance ended under that node's traffic). A node gone for good costs the drains
    // begun within `silent_hold` of its death their timeout; one dead before the caller first
    // read it (its report's age unknown) holds none.
    const bool held_by_silent = std::any_of(reports.begin(), reports.end(), [&](const auto& node) {
      if (NodeIsLive(node, now, liveness)) return false;
      const auto sessions = node.draining_sessions.find(slot.id);
      const bool applied = node.applied_generation >= generation;
      if (applied && sessions != node.draining_sessions.end() && sessions->second == 0) {
        return false;  // it said drained
      }
      // Of a drain found under way, sessions reported at a generation before the table first
      // read may be this drain's (review: a restart freed the slot under them).
      const bool gave_sessions = sessions != node.draining_sessions.end() &&
                                 (applied || (inherited.contains(slot.id) && sessions->second > 0));
      return gave_sessions ||
             (now - node.reported_at < silent_hold && seen_reporting.contains(node.name));
    });
    if (all_drained && !held_by_silent) drained.insert(slot.id);
  }
  return drained;
}

std::set<int> SlotsAwaitingAdmission(std::span<const NodeReport> reports, WallTime now,
                                     std::chrono::milliseconds liveness) {
  int nodes = 0;
  std::map<int, int> waiting;  // slot id -> live nodes that wait
  for (const NodeReport& report : reports) {
    if (!report.pending_admission || !NodeIsLive(report, now, liveness)) continue;
    ++nodes;
    for (const int id : *report.pending_admission) ++waiting[id];
  }
  std::set<int> slots;
  for (const auto& [id, count] : waiting) {
    if (2 * count > nodes) slots.insert(id);
  }
  return slots;
}

std::set<int> SlotsProvenByChecks(const SlotTable& table,
                                  const std::map<int, std::uint64_t>& filled_at,
                                  std::span<const NodeReport> reports, WallTime now,
                                  std::chrono::milliseconds liveness,
                                  const std::set<std::string>& seen_reporting) {
  int nodes = 0;
  std::vector<const NodeReport*> vouching;
  for (const NodeReport& report : reports) {
    // A node that says whether it gates counts, also when it could not apply this cycle.
    if ((!report.pending_admission && !report.gates_every_slot) ||
        !NodeIsLive(report, now, liveness)) {
      continue;
    }
    ++nodes;
    if (report.gates_every_slot.value_or(false) && report.pending_admission &&
        seen_reporting.contains(report.name)) {
      vouching.push_back(&report);
    }
  }
  std::set<int> proven;
  if (2 * static_cast<int>(vouching.size()) <= nodes) return proven;
  for (const Slot& slot : table.slots) {
    if (!slot.enabled() || slot.admin != AdminState::kNone) continue;
    const auto filled = filled_at.find(slot.id);
    if (filled == filled_at.end()) continue;
    const auto vouched = std::count_if(vouching.begin(), vouching.end(), [&](const auto* node) {
      return AppliedSince(node->applied_generation, filled->second) &&
             !node->pending_admission->contains(slot.id) && !node->unvouched.contains(slot.id);
    });
    if (2 * vouched > nodes) proven.insert(slot.id);
  }
  return proven;
}

int NodesBehind(std::span<const NodeReport> reports, std::uint64_t generation,
                WallTime table_changed_at, WallTime now, std::chrono::milliseconds liveness) {
  const bool settled = now - table_changed_at > liveness;
  return static_cast<int>(std::count_if(reports.begin(), reports.end(), [&](const auto& report) {
    return !NodeIsLive(report, now, liveness) ||
           (settled && report.applied_generation != generation);
  }));
}

}  // namespace hsdo
