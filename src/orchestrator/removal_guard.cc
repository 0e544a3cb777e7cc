#include "orchestrator/removal_guard.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <string_view>

namespace hsdo {

namespace {

// Whether the removals ("slot=key") share one.
bool Overlaps(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  return std::any_of(a.begin(), a.end(), [&](const std::string& key) {
    return std::find(b.begin(), b.end(), key) != b.end();
  });
}

}  // namespace

std::vector<int> FreedSlots(const SlotTable& current, const SlotTable& next,
                            std::span<const int> adopted) {
  std::vector<int> freed;
  for (const Slot& slot : current.slots) {
    if (!slot.enabled()) continue;
    const auto index = static_cast<std::size_t>(slot.id - 1);
    const Slot* after = index < next.slots.size() ? &next.slots[index] : nullptr;
    const bool same =
        after != nullptr && (after->target.SameKey(slot.target) ||
                             std::binary_search(adopted.begin(), adopted.end(), slot.id));
    if (after == nullptr || !after->enabled() || !same) {
      freed.push_back(slot.id);
    }
  }
  return freed;
}

RemovalGuard::Decision RemovalGuard::Check(const SlotTable& current, const Plan& plan, WallTime now,
                                           bool fresh, const ProvenSlots& proven,
                                           std::span<const int> kept_unknown) {
  Decision decision;
  decision.slots = FreedSlots(current, plan.next, plan.adopted);
  decision.enabled = current.EnabledCount();
  if (config_.max_removed_fraction >= 1.0) {  // the guard is off
    held_.reset();
    return decision;
  }
  std::erase_if(recent_, [&](const auto& entry) { return now - entry.second >= config_.delay; });
  while (!samples_.empty() && now - samples_.front().at >= config_.delay) samples_.pop_front();
  samples_.push_back(Sample{.at = now, .enabled = decision.enabled});
  std::vector<std::string> removal;
  removal.reserve(decision.slots.size());
  for (const int id : decision.slots) {
    removal.push_back(std::to_string(id) + "=" +
                      current.slots[static_cast<std::size_t>(id - 1)].target.Key());
  }
  if (held_ && held_->restored && fresh) {
    held_->restored = false;
    if (!Overlaps(removal, held_->removal)) held_.reset();
  }
  if (!recent_.empty()) {
    std::vector<std::string_view> sorted(removal.begin(), removal.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [key, at] : recent_) {
      if (!std::binary_search(sorted.begin(), sorted.end(), std::string_view(key))) {
        ++decision.recent;
      }
    }
  }
  int most = 0;
  for (const Sample& sample : samples_) most = std::max(most, sample.enabled);
  // An answer that is not fresh confirms nothing, and ends no hold either. (Review: a group the
  // source could not tell at a take-over's first cycle, its slots kept, dropped the restored
  // hold, and the typo answered next freed the held targets at once, as a small removal.)
  if (held_ && !fresh && removal != held_->removal &&
      HoldsOnUntold(current, removal, kept_unknown, most, now, decision)) {
    return decision;
  }
  // The fraction is of the most slots enabled in the window, before the removals it holds.
  // While a removal is held, of the slots enabled when the hold began at most: the joins
  // written meanwhile (the same typo that removes every address adds the wrong ones) raise the
  // count, and must not let the held removal through as a small one a cycle later.
  decision.base = held_ ? std::min(held_->enabled, most) : most;
  // Freeing every enabled slot (an empty answer) is always a mass removal, however few
  // slots are enabled; otherwise, more than the fraction of them; and, for a delay after a
  // take-over, more than the fraction of the slots Seed found settled.
  const auto freed = static_cast<double>(decision.slots.size() + decision.recent);
  const bool whole_fleet =
      !decision.slots.empty() && static_cast<int>(decision.slots.size()) == decision.enabled;
  bool mass = whole_fleet ||
              (!decision.slots.empty() && freed > config_.max_removed_fraction * decision.base);
  // This answer alone, without the removals before it, would be held. (So is the same one
  // later in its hold: the base can only shrink meanwhile. Review of ef8f711: the targets such
  // an answer brings join during the hold and may pass their checks, another real service's
  // within seconds; let through as a replacement then, it swapped the fleet.)
  const bool alone =
      whole_fleet || static_cast<double>(decision.slots.size()) >
                         config_.max_removed_fraction * static_cast<double>(decision.base);
  const bool settled = !decision.slots.empty() && FreesTheSettled(removal, now);
  if (!mass && settled) {
    // Of the settled slots: the hold keeps that base (Held::enabled) past settled_until_,
    // as a hold in one life keeps the slots enabled when it began.
    mass = true;
    decision.base = static_cast<int>(settled_.size());
  }
  const bool same_hold = held_ && held_->removal == removal;
  if (same_hold && fresh && held_->untold_since) {
    // The answers that were not fresh confirmed nothing: the delay did not run while they came.
    // (Review: the time with a group unknown counted, and released the hold at the first fresh
    // answer after it.) One that listed a held target again answered otherwise: the delay
    // starts again. (Fuzz review: an empty answer held 50 s, one group unknown for ten minutes
    // while the other listed its targets again, then empty again: the hold resumed its 50 s and
    // emptied the fleet 10 s later.)
    if (held_->answered_otherwise) {
      held_->since = now;
      held_->answered_otherwise = false;
      decision.started = true;
    } else {
      held_->since += now - *held_->untold_since;
    }
    held_->untold_since.reset();
    held_->pause_said = false;
  }
  // Seed's rule is for a take-over that cannot tell a typo's joins from a deployment's: the
  // joins it distrusts may pass their checks (another real service), so they prove nothing.
  if (mass && proven && fresh && !alone && !settled && config_.max_removed_fraction > 0 &&
      config_.replacements_by_checks) {
    // A replacement: the slots it keeps that answer their checks on most nodes are at least
    // what the fraction leaves of the base. (Review, deployment patterns: joins never offset
    // removals, so a rolling replacement faster than the fraction per delay was held, its
    // departed targets serving on every node. Joins the checks have not passed do not count:
    // a typo's wrong addresses never pass, so a fleet swapped for them in small steps stays
    // held; and one that swaps most of it at once is held whatever answers, above.)
    const std::set<int> answering = proven();
    decision.proven_kept =
        static_cast<int>(std::count_if(answering.begin(), answering.end(), [&](int id) {
          return !std::binary_search(decision.slots.begin(), decision.slots.end(), id);
        }));
    // (Less a hair: 1 - 0.7 is 0.30000000000000004, and 0.3 of 10 is 3 slots.)
    decision.proven_needed = static_cast<int>(std::ceil(
        (1.0 - config_.max_removed_fraction) * static_cast<double>(decision.base) - 1e-9));
    if (decision.proven_kept >= decision.proven_needed) {
      mass = false;
      decision.replacement = true;
    }
  }
  if (!mass) {
    decision.as_held = same_hold;
    held_.reset();
    for (auto& key : removal) recent_.insert_or_assign(std::move(key), now);
    decision.verdict = Verdict::kPass;
    return decision;
  }
  // The source answered differently (another set of slots to free): the clock starts again.
  if (!same_hold) {
    held_ = Held{.removal = std::move(removal), .since = now, .enabled = decision.base};
    decision.started = true;
  }
  // The same answer reused (the source failed) confirms nothing either: the delay pauses, from
  // the start of a hold that begins so (review: a source down for the whole delay let the first
  // answer after it release).
  if (!fresh) Pause(now, decision);
  decision.since = held_->since;
  decision.held_base = held_->enabled;
  decision.verdict =
      fresh && now - held_->since >= config_.delay ? Verdict::kRelease : Verdict::kHold;
  if (decision.verdict == Verdict::kRelease) {
    // Confirmed for the whole delay: the table after it is the new baseline. (held_ stays:
    // if this write fails, the same plan is released again at the next check.)
    decision.started = false;
    recent_.clear();
    samples_.clear();
  }
  return decision;
}

bool RemovalGuard::HoldsOnUntold(const SlotTable& current, const std::vector<std::string>& removal,
                                 std::span<const int> kept_unknown, int most, WallTime now,
                                 Decision& decision) {
  // The held slots still enabled with the same target that this plan frees, or keeps only
  // because the source could not tell their group. One the answer lists again is neither.
  std::vector<int> held;
  for (const std::string& key : held_->removal) {
    const int id = std::stoi(key.substr(0, key.find('=')));
    const auto index = static_cast<std::size_t>(id - 1);
    if (index >= current.slots.size() || !current.slots[index].enabled() ||
        std::to_string(id) + "=" + current.slots[index].target.Key() != key) {
      continue;
    }
    if (std::find(removal.begin(), removal.end(), key) != removal.end() ||
        std::find(kept_unknown.begin(), kept_unknown.end(), id) != kept_unknown.end()) {
      held.push_back(id);
    } else {
      held_->answered_otherwise = true;
    }
  }
  if (held.empty()) return false;
  std::sort(held.begin(), held.end());
  // What else the plan frees is let through, or held with the hold, which it does not replace
  // (review: a mass removal of another group, taken for a new hold, dropped the slots kept as
  // unknown from it).
  std::vector<int> also;
  std::vector<std::string> also_keys;
  for (std::size_t i = 0; i < removal.size(); ++i) {
    if (!std::binary_search(held.begin(), held.end(), decision.slots[i])) {
      also.push_back(decision.slots[i]);
      also_keys.push_back(removal[i]);
    }
  }
  // Held along when the plan as a whole would be held on a fresh answer: with the held slots
  // (those kept as unknown too) every enabled slot, or with the held slots it frees more than the
  // fraction, or Seed's rule (review: an answer freeing every group it could tell had those
  // slots not held freed at once).
  const int base = std::min(held_->enabled, most);
  if (!also.empty() &&
      (static_cast<int>(held.size() + also.size()) == decision.enabled ||
       static_cast<double>(decision.slots.size() + static_cast<std::size_t>(decision.recent)) >
           config_.max_removed_fraction * base ||
       FreesTheSettled(removal, now))) {
    decision.started = also_keys != held_->also;  // said once
    held_->also = std::move(also_keys);
    held.insert(held.end(), also.begin(), also.end());
    std::sort(held.begin(), held.end());
  } else {
    held_->also.clear();
    for (auto& key : also_keys) recent_.insert_or_assign(std::move(key), now);
  }
  Pause(now, decision);
  decision.slots = std::move(held);
  decision.verdict = Verdict::kHold;
  decision.base = decision.held_base = held_->enabled;
  decision.since = held_->since;
  return true;
}

void RemovalGuard::Unseen(WallTime now, std::span<const Target> answer) {
  if (!held_) return;
  if (!held_->untold_since) held_->untold_since = now;
  if (held_->answered_otherwise || answer.empty()) return;
  // (Fuzz review, seed 60116: the source back with the held targets in such a cycle, then empty
  // again, resumed the delay where it stood: a flapping source emptied the fleet so.)
  std::set<std::string_view> held_keys;
  for (const std::string& key : held_->removal) {
    held_keys.insert(std::string_view(key).substr(key.find('=') + 1));
  }
  held_->answered_otherwise = std::any_of(answer.begin(), answer.end(), [&](const Target& target) {
    return held_keys.contains(target.Key());
  });
}

void RemovalGuard::Pause(WallTime now, Decision& decision) {
  if (!held_->untold_since) held_->untold_since = now;
  if (held_->pause_said) return;
  held_->pause_said = true;  // once per pause, also one that cycles seeing no answer began
  decision.paused = true;
}

bool RemovalGuard::FreesTheSettled(const std::vector<std::string>& removal, WallTime now) const {
  if (settled_.empty() || now >= settled_until_) return false;
  const auto freed = std::count_if(removal.begin(), removal.end(),
                                   [&](const std::string& key) { return settled_.contains(key); });
  return static_cast<double>(freed) >
         config_.max_removed_fraction * static_cast<double>(settled_.size());
}

int RemovalGuard::Seed(const SlotTable& current, WallTime now, WallTime wall_now) {
  if (config_.max_removed_fraction >= 1.0) return 0;
  int seeded = 0;
  const auto seed = [&](std::string key, WallTime at) {
    // A writer's clock ahead of this one: the removal counts as made now.
    const auto age = std::max(wall_now - at, WallTime::duration{0});
    if (age >= config_.delay) return;
    if (recent_.try_emplace(std::move(key), now - age).second) ++seeded;
  };
  for (const Slot& slot : current.slots) {
    // Keyed as Check keys what it lets through, so that a removal is counted once.
    if (slot.draining() && slot.drain_since) {
      seed(std::to_string(slot.id) + "=" + slot.target.Key(), *slot.drain_since);
    }
    // The target the slot held before: its key is not in the table.
    if (slot.removed_at) seed(std::to_string(slot.id) + " freed", *slot.removed_at);
  }
  // Review: a take-over while a typo's removal was held (the right targets kept, the wrong ones
  // joined: twice the enabled slots) freed the right ones at once, as half of the table.
  std::set<std::string> settled;
  bool moving = false;  // a slot joined or stepped in the last delay (a writer's clock ahead: now)
  for (const Slot& slot : current.slots) {
    if (!slot.enabled()) continue;
    if (slot.last_weight_update && wall_now - *slot.last_weight_update < config_.delay) {
      moving = true;
    } else {
      settled.insert(std::to_string(slot.id) + "=" + slot.target.Key());
    }
  }
  if (moving && !settled.empty()) {
    settled_ = std::move(settled);
    settled_until_ = now + config_.delay;
  }
  return seeded;
}

std::vector<int> RemovalGuard::Restore(const SlotTable& current, const HeldRemoval& hold,
                                       WallTime now) {
  if (config_.max_removed_fraction >= 1.0 || hold.base < 1) return {};
  std::vector<int> held;
  std::vector<std::string> removal;  // in slot order, as Check keys a plan's
  for (const int id : hold.slots) {
    if (id < 1 || static_cast<std::size_t>(id) > current.slots.size()) continue;
    const Slot& slot = current.slots[static_cast<std::size_t>(id - 1)];
    if (!slot.enabled()) continue;
    held.push_back(id);
    removal.push_back(std::to_string(id) + "=" + slot.target.Key());
  }
  if (removal.empty()) return {};
  held_ = Held{.removal = std::move(removal), .since = now, .enabled = hold.base, .restored = true};
  return held;
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
