// hsdo_server_weight{id,name,ip,asg}: the seed's gauge, one series per enabled slot, kept
// in step with a slot table (series of freed or changed slots are removed).
//
// prometheus-cpp removes a series by a walk over its family's series (Family::Remove), so k
// removals from a family of n series cost k x n: 50 ms for 1000 of 5000 (bench/
// orchestrator_bench.cc). Past kRebuildAbove removals the family is made anew instead, at
// the cost of n additions.
#pragma once

#include <map>
#include <span>
#include <string>

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "core/slot_table.h"

namespace hsdo {

class SlotWeightMetrics {
 public:
  explicit SlotWeightMetrics(prometheus::Registry& registry);
  // Every slot of `table`.
  void Update(const SlotTable& table);
  // Only the slots `changed` (ids), the others being as the last update left them: what an
  // orchestrator that wrote those slots needs, at a cost that grows with them alone.
  void Update(const SlotTable& table, std::span<const int> changed);

  static constexpr std::size_t kRebuildAbove = 100;

 private:
  prometheus::Family<prometheus::Gauge>& MakeFamily();
  // Whether the series of slot `id` exists with other labels than `key` (must be removed).
  bool Changes(int id, const std::string& key) const;
  // The series of `slot` made as `key` (SeriesKey) says: removed, added or set.
  void Refresh(const Slot& slot, std::string key);
  // A new family, empty: cheaper than removing many series one by one.
  void Rebuild();

  struct Series {
    // The labels besides the id, as one string: what tells a changed series apart, without a
    // second copy of the family's label map (some 200 bytes a slot).
    std::string key;
    prometheus::Gauge* gauge = nullptr;
  };
  prometheus::Registry& registry_;
  prometheus::Family<prometheus::Gauge>* family_;
  std::map<int, Series> series_;  // by slot id
};

}  // namespace hsdo
