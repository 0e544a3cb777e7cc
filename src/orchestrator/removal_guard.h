// The mass-removal guard: a policy applied to the planner's plan, as Envoy's panic threshold
// refuses to trust a host set that suddenly looks mostly unhealthy. A discovery answer that
// would free more than `max_removed_fraction` of the enabled slots (an empty answer, a broken
// one that parsed, an operator's typo) is not trusted at once: those slots are freed only once
// the source has answered the same way for `delay`. The fraction counts the removals let
// through in the last `delay` too, of the most slots enabled in that window: a fleet
// emptied a few slots per answer (Consul's checks failing one instance at a time, a flapping
// answer) is held like one emptied at once. Joins and weight steps are never held. Unless a
// removal held only for those before it is a replacement, not an emptying: the slots it keeps
// whose health check most nodes have seen pass are at least (1 - fraction) of that base (a
// rolling replacement whose new targets answer; never a typo's wrong addresses, nor a fleet
// without `check`). Pure logic over plain values: `now` is given.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/clock.h"
#include "core/planner.h"
#include "core/slot_table.h"

namespace hsdo {

struct RemovalGuardConfig {
  double max_removed_fraction = 0.5;        // MAX_REMOVED_FRACTION; 1 (or more) turns the guard off
  std::chrono::milliseconds delay{60'000};  // MASS_REMOVAL_DELAY
  // REPLACEMENTS_PROVEN_BY_CHECKS: false, no removal is let through as a replacement.
  bool replacements_by_checks = true;
};

// The enabled slots of `current` that `next` frees, drains or gives to another target, in slot
// order: a slot that begins to drain counts as a removal. `adopted` (sorted): slots whose
// record without a port took its target's port in place (Plan::adopted), the same server.
std::vector<int> FreedSlots(const SlotTable& current, const SlotTable& next,
                            std::span<const int> adopted = {});

class RemovalGuard {
 public:
  enum class Verdict {
    kPass,     // not a mass removal: write the plan
    kHold,     // a mass removal, not yet confirmed: keep the slots in `slots`
    kRelease,  // the same mass removal for `delay`: write the plan
  };
  struct Decision {
    Verdict verdict = Verdict::kPass;
    std::vector<int> slots;  // the slots the plan frees (all of them, for kHold and kRelease)
    int enabled = 0;         // enabled slots before the plan
    int recent = 0;          // other slots freed in the last `delay` (let through)
    int base = 0;            // what the fraction is of: the most slots enabled in the window
    WallTime since{};        // when this removal was first seen (kHold, kRelease)
    bool started = false;    // kHold: the hold began (or the removal changed) in this call
    bool paused = false;     // kHold: its delay began to pause in this call (not fresh)
    int held_base = 0;       // kHold: the base the hold keeps (what RemovalHold stores)
    bool as_held = false;    // kPass: the removal a hold kept until this call, now let through
    // kPass: more than the fraction, let through as a replacement: `proven_kept` slots it keeps
    // have passed their health check on most nodes (-1 when not asked).
    bool replacement = false;
    int proven_kept = -1;
    int proven_needed = 0;  // what the fraction leaves of the base, in slots (rounded up)
  };
  // The enabled slots whose health check most nodes have seen pass at their target
  // (SlotsProvenByChecks); asked only for a plan that would be held without them.
  using ProvenSlots = std::function<std::set<int>()>;

  explicit RemovalGuard(RemovalGuardConfig config) : config_(config) {}

  // Decides on `plan`, made from `current` with the targets of one discovery. `fresh` is
  // false when the source failed this cycle and the plan uses its last good answer (or could
  // not tell some group's targets): that answer is not confirmed again, so it is never released
  // on such a cycle (see below for what else it does to a hold).
  // Only removals held for those let through before them in the window can be replacements:
  // a plan that alone frees more than the fraction (or every enabled slot), and the hold it
  // begins, is held whatever `proven` says (one answer that swaps most of the fleet is a
  // typo's signature, and the targets it brings join meanwhile); so is one Seed's rule holds,
  // a removal on an answer that is not `fresh`, and every removal at a fraction of 0.
  // An answer that is not fresh ends no hold either, nor shrinks it: while the plan frees
  // held slots, or keeps them only because the source could not tell their group
  // (`kept_unknown`: Orchestrator::KeepUnknownGroups), the hold stands, and what else the plan
  // frees is held with it if the whole plan would be held fresh, else let through; the delay
  // does not run until the next fresh answer.
  Decision Check(const SlotTable& current, const Plan& plan, WallTime now, bool fresh = true,
                 const ProvenSlots& proven = {}, std::span<const int> kept_unknown = {});

  // A cycle of the leader that ended before its plan was checked (the store's table could not
  // be read, or was found at another generation): no answer was seen, so none confirms a held
  // removal; its delay pauses from `now` until the next fresh answer, as on an answer that is
  // not fresh. `answer`, the targets the source gave in that cycle if it answered: one that
  // lists a held target again answered otherwise, as on an answer that is not fresh (the next
  // fresh answer freeing the same slots starts the delay again).
  void Unseen(WallTime now, std::span<const Target> answer = {});

  // A restart or a take-over starts with an empty window, in which a crash-looping
  // orchestrator (or leaders taking turns) could free the fraction again in every life. The
  // removals the table says were made in the last `delay` (Slot::removed_at, a draining slot's
  // drain_since, in wall time, against `wall_now`) count as recent, as if this guard had let
  // them through at `now` minus their age (`now` on Check's clock). Returns how many.
  // And for one `delay`, a plan that frees more than the fraction of the enabled slots whose
  // weight held still for the last `delay` (Slot::last_weight_update: not joined or ramping
  // then) is a mass removal too: the joins a held removal let through before (the wrong
  // addresses of a typo, written while the right ones were held) do not make that removal a
  // small one for the new leader.
  int Seed(const SlotTable& current, WallTime now, WallTime wall_now);

  // The hold the table carries (SlotTable::removal_hold: written by the leader before a
  // take-over, or by this orchestrator before a restart) is held on as if it began at `now`:
  // for a whole `delay` under this leader, whatever the writer's clock said or how long ago,
  // and of the base it had (the joins written while it was held, a typo's wrong addresses, do
  // not make it a small removal now). Its slots no longer enabled are left out; a hold with
  // none left, or without a base, is none. Returns the slots held on. The next Check on a fresh
  // answer keeps it only for a plan that frees one of them at least: a hold an earlier version's
  // writes left behind must not make an unrelated removal a mass one.
  std::vector<int> Restore(const SlotTable& current, const HeldRemoval& hold, WallTime now);

  const RemovalGuardConfig& config() const { return config_; }
  // The settled slots Seed kept (0: its rule is off).
  int settled() const { return static_cast<int>(settled_.size()); }

 private:
  struct Held {
    std::vector<std::string> removal;  // "slot=key" of each slot the plan frees
    WallTime since;
    int enabled = 0;        // enabled slots when the hold began: what the fraction is of meanwhile
    bool restored = false;  // by Restore, not yet checked
    // Since when answers that are not fresh came (Pause): the delay does not run meanwhile.
    // And the removal such an answer makes besides, held with it (HoldsOnUntold; "slot=key").
    std::optional<WallTime> untold_since;
    std::vector<std::string> also;
    // Such an answer listed a held target again: the next fresh answer freeing the same slots
    // starts the delay again, where it would resume it.
    bool answered_otherwise = false;
    bool pause_said = false;  // the pause was said (Decision::paused), once
  };

  struct Sample {
    WallTime at;
    int enabled = 0;
  };

  // Check's rule for an answer that is not fresh, once the hold's removal is not the plan's:
  // true (and `decision` made) when the hold stands, with the plan's own removal let through,
  // or held with it when the whole plan would be held on a fresh answer.
  bool HoldsOnUntold(const SlotTable& current, const std::vector<std::string>& removal,
                     std::span<const int> kept_unknown, int most, WallTime now, Decision& decision);
  // An answer that is not fresh under the hold: its delay pauses from `now`, unless it already
  // does (`decision.paused` says it once per pause, also one Unseen began).
  void Pause(WallTime now, Decision& decision);
  // Seed's rule: `removal` frees more than the fraction of the settled slots.
  bool FreesTheSettled(const std::vector<std::string>& removal, WallTime now) const;

  RemovalGuardConfig config_;
  std::optional<Held> held_;
  // The last `delay`: the removals let through ("slot=key", once however often a failed write
  // is tried again, and when last let through: the write that makes it is the last attempt, as
  // Seed dates it from RemovedAt), and the enabled slots at each check.
  std::map<std::string, WallTime> recent_;
  std::deque<Sample> samples_;
  // Seed: the enabled slots ("slot=key") whose weight held still for a `delay`, until
  // `settled_until_`; empty when no slot was joined or ramping then.
  std::set<std::string> settled_;
  WallTime settled_until_{};
};

// The targets to plan with while a removal is held: the discovered ones, then the targets of
// the held slots, so that the planner keeps those slots and still places joins elsewhere and
// steps weights.
std::vector<Target> TargetsWhileHeld(const std::vector<Target>& discovered,
                                     const SlotTable& current, const std::vector<int>& held);

}  // namespace hsdo
