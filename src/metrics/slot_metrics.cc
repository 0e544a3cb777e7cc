#include "metrics/slot_metrics.h"

#include <string>

namespace hsdo {

SlotWeightMetrics::SlotWeightMetrics(prometheus::Registry& registry)
    : family_(prometheus::BuildGauge()
                  .Name("hsdo_server_weight")
                  .Help("Weight of each enabled slot (id = HAProxy server slot)")
                  .Register(registry)) {}

void SlotWeightMetrics::Update(const SlotTable& table) {
  for (const Slot& slot : table.slots) {
    const auto it = series_.find(slot.id);
    if (!slot.enabled()) {
      if (it != series_.end()) {
        family_.Remove(it->second.gauge);
        series_.erase(it);
      }
      continue;
    }
    prometheus::Labels labels{{"id", std::to_string(slot.id)},
                              {"name", slot.target.name},
                              {"ip", slot.target.address},
                              {"asg", slot.target.group}};
    if (it != series_.end() && it->second.labels != labels) {
      family_.Remove(it->second.gauge);
      series_.erase(it);
    }
    auto& series = series_[slot.id];
    if (series.gauge == nullptr) series = Series{labels, &family_.Add(labels)};
    series.gauge->Set(slot.weight);
  }
  // Slots beyond the table (list size shrank).
  for (auto it = series_.lower_bound(static_cast<int>(table.slots.size()) + 1);
       it != series_.end();) {
    family_.Remove(it->second.gauge);
    it = series_.erase(it);
  }
}

}  // namespace hsdo
