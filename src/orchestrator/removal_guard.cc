#include "orchestrator/removal_guard.h"

#include <algorithm>
#include <set>

namespace hsdo {

std::vector<int> FreedSlots(const SlotTable& current, const SlotTable& next) {
  std::vector<int> freed;
  for (const Slot& slot : current.slots) {
    if (!slot.enabled()) continue;
    const auto index = static_cast<std::size_t>(slot.id - 1);
    const Slot* after = index < next.slots.size() ? &next.slots[index] : nullptr;
    if (after == nullptr || !after->enabled() || !after->target.SameKey(slot.target)) {
      freed.push_back(slot.id);
    }
  }
  return freed;
}

RemovalGuard::Decision RemovalGuard::Check(const SlotTable& current, const Plan& plan, WallTime now,
                                           bool fresh) {
  Decision decision;
  decision.slots = FreedSlots(current, plan.next);
  decision.enabled = current.EnabledCount();
  const bool guard_on = config_.max_removed_fraction < 1.0;
  // Freeing every enabled slot (an empty answer) is always a mass removal, however few
  // slots are enabled; otherwise, more than the fraction of them.
  // While a removal is held, measured against the enabled slots when the hold began: the joins
  // written meanwhile (the same typo that removes every address adds the wrong ones) raise the
  // count, and must not let the held removal through as a small one a cycle later.
  const int base = held_ ? std::min(held_->enabled, decision.enabled) : decision.enabled;
  const auto freed = static_cast<double>(decision.slots.size());
  const bool mass = guard_on && !decision.slots.empty() &&
                    (static_cast<int>(decision.slots.size()) == decision.enabled ||
                     freed > config_.max_removed_fraction * base);
  if (!mass) {
    held_.reset();
    decision.verdict = Verdict::kPass;
    return decision;
  }
  std::vector<std::string> removal;
  removal.reserve(decision.slots.size());
  for (const int id : decision.slots) {
    removal.push_back(std::to_string(id) + "=" +
                      current.slots[static_cast<std::size_t>(id - 1)].target.Key());
  }
  // The source answered differently (another set of slots to free): the clock starts again.
  if (!held_ || held_->removal != removal) {
    held_ = Held{.removal = std::move(removal), .since = now, .enabled = base};
    decision.started = true;
  }
  decision.since = held_->since;
  decision.verdict =
      fresh && now - held_->since >= config_.delay ? Verdict::kRelease : Verdict::kHold;
  if (decision.verdict == Verdict::kRelease) decision.started = false;
  return decision;
}

std::vector<Target> TargetsWhileHeld(const std::vector<Target>& discovered,
                                     const SlotTable& current, const std::vector<int>& held) {
  // A held target the source still lists, but asks to drain, is listed as the table has it
  // (without the flag): a mass drain is held like a mass removal.
  std::set<std::string> held_keys;
  for (const int id : held)
    held_keys.insert(current.slots[static_cast<std::size_t>(id - 1)].target.Key());
  std::vector<Target> targets;
  targets.reserve(discovered.size() + held.size());
  for (const Target& target : discovered) {
    if (!held_keys.contains(target.Key())) targets.push_back(target);
  }
  for (const int id : held) {
    targets.push_back(current.slots[static_cast<std::size_t>(id - 1)].target);
  }
  return targets;
}

}  // namespace hsdo
