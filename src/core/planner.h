// The planner: the orchestrator's pure core. From the current slot table and the targets a
// source discovered, it makes the next table. No I/O and no clock reads: `now` is given.
//
// Rules (ARCHITECTURE.md invariants 1, 2, 7):
//  - a target already in a slot keeps it, for as long as it is discovered;
//  - a new target takes the lowest free slot; a target that is gone frees its slot;
//    other targets never move, and slots are never compacted: consistent hashing in
//    HAProxy places each server on the ring by its slot id, so moving a target would move
//    its keys on every node;
//  - more targets than slots: existing assignments stay, the newest targets are left out
//    (reported, never silent);
//  - a new target starts at min_weight and gains increase_weight every increase_interval
//    until max_weight.
#pragma once

#include <chrono>
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
};

struct Plan {
  SlotTable next;                // generation as in the current table; overflow set
  std::vector<int> changed;      // ids of the slots that differ from the current table
  std::vector<Target> left_out;  // targets without a slot, in discovery order
  int joined = 0;                // targets that took a slot
  int left = 0;                  // targets whose slot was freed
};

// `targets` in discovery order (oldest first): that order decides who is left out when
// there are more targets than slots. Duplicates (same Key()) count once.
Plan PlanSlots(const SlotTable& current, const std::vector<Target>& targets,
               const PlannerConfig& config, WallTime now);

}  // namespace hsdo
