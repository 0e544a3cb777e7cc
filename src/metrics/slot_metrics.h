// hsdo_server_weight{id,name,ip,asg}: the seed's gauge, one series per enabled slot, kept
// in step with a slot table (series of freed or changed slots are removed).
#pragma once

#include <map>

#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "core/slot_table.h"

namespace hsdo {

class SlotWeightMetrics {
 public:
  explicit SlotWeightMetrics(prometheus::Registry& registry);
  void Update(const SlotTable& table);

 private:
  struct Series {
    // The labels besides the id, as one string: what tells a changed series apart, without a
    // second copy of the family's label map (some 200 bytes a slot).
    std::string key;
    prometheus::Gauge* gauge = nullptr;
  };
  prometheus::Family<prometheus::Gauge>& family_;
  std::map<int, Series> series_;  // by slot id
};

}  // namespace hsdo
