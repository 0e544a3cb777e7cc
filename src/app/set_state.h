// `hsdo set-state TARGET ready|drain|maint`: the operator's override of one filled slot, as
// HAProxy's own `set server ... state` verbs, but written into the slot table so that every
// agent of the fleet applies it and it survives reloads and restarts (issue 10, item 5).
// `ready` clears it. The write goes through the store's generation protocol: a conditional
// write on the generation read, retried a few times when another writer got in between (the
// orchestrator re-reads on its next write and carries the override from then on).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "core/slot_table.h"
#include "store/slot_store.h"

namespace hsdo {

// "ready" (no override), "drain" or "maint"; anything else is kInvalidArgument.
Result<AdminState> ParseAdminState(std::string_view text);
std::string_view AdminStateName(AdminState state);  // "ready" for kNone

// The id of the one filled slot `target` names: a slot number, an address (or address:port),
// or a target name. kInvalidArgument, saying why, when it names no filled slot or several.
Result<int> FindFilledSlot(const SlotTable& table, std::string_view target);

struct SetStateOutcome {
  Slot slot;  // as written (or as found, when nothing had to change)
  AdminState before = AdminState::kNone;
  bool written = false;          // false: the slot already had that override
  std::uint64_t generation = 0;  // the table's generation afterwards
};

// Reads the table, finds `target`, and writes its slot with `state` (kInvalidArgument: no
// such filled slot, or several; kConflict: other writers won `attempts` times in a row).
Result<SetStateOutcome> SetSlotState(SlotStore& store, std::string_view target, AdminState state,
                                     int attempts = 5);

}  // namespace hsdo
