#include "metrics/slot_metrics.h"

#include <string>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo {

namespace {
constexpr std::size_t kMaxLabelLength = 255;
}  // namespace

SlotWeightMetrics::SlotWeightMetrics(prometheus::Registry& registry)
    : family_(prometheus::BuildGauge()
                  .Name("hsdo_server_weight")
                  .Help("Weight of each enabled slot (id = HAProxy server slot)")
                  .Register(registry)) {}

void SlotWeightMetrics::Update(const SlotTable& table) {
  for (const Slot& slot : table.slots) {
    const auto it = series_.find(slot.id);
    // A store item is untrusted: a slot whose address is not an IP is never exported.
    const auto address = CanonicalIp(slot.target.address);
    if (!slot.enabled() || !address) {
      if (it != series_.end()) {
        family_.Remove(it->second.gauge);
        series_.erase(it);
      }
      continue;
    }
    const std::string_view name = std::string_view(slot.target.name).substr(0, kMaxLabelLength);
    const std::string_view group = std::string_view(slot.target.group).substr(0, kMaxLabelLength);
    // Unambiguous whatever the name holds: the address has no space, the name's length says
    // where the group starts.
    std::string key = fmt::format("{} {} {}{}", *address, name.size(), name, group);
    if (it != series_.end() && it->second.key != key) {
      family_.Remove(it->second.gauge);
      series_.erase(it);
    }
    auto& series = series_[slot.id];
    if (series.gauge == nullptr) {
      prometheus::Labels labels{{"id", std::to_string(slot.id)},
                                {"name", std::string(name)},
                                {"ip", *address},
                                {"asg", std::string(group)}};
      series = Series{std::move(key), &family_.Add(labels)};
    }
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
