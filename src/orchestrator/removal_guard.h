// The mass-removal guard: a policy applied to the planner's plan, as Envoy's panic threshold
// refuses to trust a host set that suddenly looks mostly unhealthy. A discovery answer that
// would free more than `max_removed_fraction` of the enabled slots in one step (an empty
// answer, a broken one that parsed, an operator's typo) is not trusted at once: those slots
// are freed only once the source has answered the same way for `delay`. Joins and weight
// steps are never held. Pure logic over plain values: `now` is given.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "core/planner.h"
#include "core/slot_table.h"

namespace hsdo {

struct RemovalGuardConfig {
  double max_removed_fraction = 0.5;        // MAX_REMOVED_FRACTION; 1 (or more) turns the guard off
  std::chrono::milliseconds delay{60'000};  // MASS_REMOVAL_DELAY
};

// The enabled slots of `current` that `next` frees, drains or gives to another target, in slot
// order: a slot that begins to drain counts as a removal.
std::vector<int> FreedSlots(const SlotTable& current, const SlotTable& next);

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
    WallTime since{};        // when this removal was first seen (kHold, kRelease)
    bool started = false;    // kHold: the hold began (or the removal changed) in this call
  };

  explicit RemovalGuard(RemovalGuardConfig config) : config_(config) {}

  // Decides on `plan`, made from `current` with the targets of one discovery. `fresh` is
  // false when the source failed this cycle and the plan uses its last good answer: that
  // answer is not confirmed again, so it is never released on such a cycle.
  Decision Check(const SlotTable& current, const Plan& plan, WallTime now, bool fresh = true);

  const RemovalGuardConfig& config() const { return config_; }

 private:
  struct Held {
    std::vector<std::string> removal;  // "slot=key" of each slot the plan frees
    WallTime since;
    int enabled = 0;  // enabled slots when the hold began: what the fraction is of meanwhile
  };

  RemovalGuardConfig config_;
  std::optional<Held> held_;
};

// The targets to plan with while a removal is held: the discovered ones, then the targets of
// the held slots, so that the planner keeps those slots and still places joins elsewhere and
// steps weights.
std::vector<Target> TargetsWhileHeld(const std::vector<Target>& discovered,
                                     const SlotTable& current, const std::vector<int>& held);

}  // namespace hsdo
