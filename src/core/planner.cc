#include "core/planner.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace hsdo {

namespace {

// Advances an enabled slot's weight ramp by the whole intervals elapsed since its last
// step. Steps are anchored on the previous step, not on `now`, so the ramp does not drift
// with the cycle period.
void RampWeight(Slot& slot, const PlannerConfig& config, WallTime now) {
  if (!slot.last_weight_update) slot.last_weight_update = now;
  if (slot.weight > config.max_weight) slot.weight = config.max_weight;
  if (slot.weight >= config.max_weight) return;
  if (config.increase_interval.count() == 0) {
    slot.weight = config.max_weight;
    slot.last_weight_update = now;
    return;
  }
  const auto elapsed = now - *slot.last_weight_update;
  if (elapsed < config.increase_interval) return;
  const auto steps = elapsed / config.increase_interval;
  const long long raised =
      static_cast<long long>(slot.weight) + static_cast<long long>(steps) * config.increase_weight;
  slot.weight = static_cast<int>(std::min<long long>(raised, config.max_weight));
  slot.last_weight_update =
      *slot.last_weight_update +
      std::chrono::duration_cast<WallTime::duration>(config.increase_interval * steps);
}

}  // namespace

Plan PlanSlots(const SlotTable& current, const std::vector<Target>& targets,
               const PlannerConfig& config, WallTime now) {
  Plan plan;
  plan.next = SlotTable::Empty(config.list_size);
  plan.next.generation = current.generation;

  // Discovered targets by identity; the first of duplicates wins.
  std::unordered_map<std::string, const Target*> discovered;
  std::vector<const Target*> order;
  for (const auto& target : targets) {
    if (discovered.emplace(target.Key(), &target).second) order.push_back(&target);
  }

  // Slots beyond list_size (the operator shrank it) are dropped; their targets compete
  // for free slots below as new ones.
  std::unordered_set<std::string> placed;
  const std::size_t kept = std::min(current.slots.size(), plan.next.slots.size());
  for (std::size_t i = 0; i < kept; ++i) {
    const Slot& old_slot = current.slots[i];
    if (!old_slot.enabled()) continue;
    const auto key = old_slot.target.Key();
    const auto it = discovered.find(key);
    if (it == discovered.end() || placed.contains(key)) {
      ++plan.left;  // gone (or a duplicate in a corrupt table): the slot is freed
      continue;
    }
    Slot slot = old_slot;
    slot.id = static_cast<int>(i) + 1;
    slot.target = *it->second;  // the name, group or AZ may have changed
    RampWeight(slot, config, now);
    plan.next.slots[i] = std::move(slot);
    placed.insert(key);
  }

  // New targets take the lowest free slots, in discovery order.
  std::size_t next_free = 0;
  for (const Target* target : order) {
    if (placed.contains(target->Key())) continue;
    while (next_free < plan.next.slots.size() && plan.next.slots[next_free].enabled()) ++next_free;
    if (next_free == plan.next.slots.size()) {
      plan.left_out.push_back(*target);
      continue;
    }
    Slot& slot = plan.next.slots[next_free];
    slot.status = SlotStatus::kEnabled;
    slot.target = *target;
    slot.weight = std::min(config.min_weight, config.max_weight);
    slot.last_weight_update = now;
    placed.insert(target->Key());
    ++plan.joined;
  }
  plan.next.overflow = static_cast<int>(plan.left_out.size());

  for (const Slot& slot : plan.next.slots) {
    const auto index = static_cast<std::size_t>(slot.id - 1);
    if (index >= current.slots.size() || !(current.slots[index] == slot)) {
      plan.changed.push_back(slot.id);
    }
  }
  return plan;
}

}  // namespace hsdo
