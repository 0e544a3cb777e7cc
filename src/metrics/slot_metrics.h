// hsdo_server_weight{id,name,ip,asg}: the seed's gauge, one series per enabled slot, kept
// in step with a slot table.
//
// The family is built at each scrape from one small record per slot (a prometheus::Collectable
// attached to the registry), not kept as one prometheus-cpp gauge per series: a scrape sees a
// table's update whole or not at all, an update costs O(k log n) for k changed slots (a
// prometheus-cpp family removes a series by a walk over all of them), and a series takes a
// third of the memory.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/slot_table.h"
#include "metrics/metrics_registry.h"

namespace hsdo {

class SlotWeightMetrics {
 public:
  explicit SlotWeightMetrics(MetricsRegistry& registry);
  // Every slot of `table`.
  void Update(const SlotTable& table);
  // Only the slots `changed` (ids), the others being as the last update left them: what an
  // orchestrator that wrote those slots needs, at a cost that grows with them alone.
  void Update(const SlotTable& table, std::span<const int> changed);

 private:
  class Family;
  std::shared_ptr<Family> family_;
};

// A gauge family with one series {slot="<id>"} 1 for each slot of a set, replaced whole (as
// SlotWeightMetrics is built: a scrape sees a set whole, and a set of n slots costs O(n) to
// replace, where prometheus-cpp removes each series by a walk over all of them).
class SlotSetMetric {
 public:
  SlotSetMetric(MetricsRegistry& registry, std::string name, std::string help);
  void Set(std::vector<int> slots);

 private:
  class Family;
  std::shared_ptr<Family> family_;
};

}  // namespace hsdo
