#include "metrics/slot_metrics.h"

#include <string>

#include <iterator>
#include <vector>

#include "common/validate.h"

namespace hsdo {

namespace {

constexpr std::size_t kMaxLabelLength = 255;

std::string_view Label(const std::string& text) {
  return std::string_view(text).substr(0, kMaxLabelLength);
}

// The labels a slot's series needs besides its id, as one string; empty when the slot has no
// series. A store item is untrusted: a slot whose address is not an IP is never exported.
// Unambiguous whatever the name holds: the address has no space, the name's length says where
// the group starts.
std::string SeriesKey(const Slot& slot) {
  const auto address = slot.enabled() ? CanonicalIp(slot.target.address) : std::nullopt;
  if (!address) return {};
  const std::string_view name = Label(slot.target.name);
  std::string key = *address;
  key.append(" ").append(std::to_string(name.size())).append(" ");
  key.append(name).append(Label(slot.target.group));
  return key;
}

}  // namespace

SlotWeightMetrics::SlotWeightMetrics(prometheus::Registry& registry)
    : registry_(registry), family_(&MakeFamily()) {}

prometheus::Family<prometheus::Gauge>& SlotWeightMetrics::MakeFamily() {
  return prometheus::BuildGauge()
      .Name("hsdo_server_weight")
      .Help("Weight of each enabled slot (id = HAProxy server slot)")
      .Register(registry_);
}

bool SlotWeightMetrics::Changes(int id, const std::string& key) const {
  const auto it = series_.find(id);
  return it != series_.end() && it->second.key != key;
}

void SlotWeightMetrics::Refresh(const Slot& slot, std::string key) {
  auto it = series_.find(slot.id);
  if (it != series_.end() && it->second.key != key) {
    family_->Remove(it->second.gauge);
    series_.erase(it);
    it = series_.end();
  }
  if (key.empty()) return;
  if (it == series_.end()) {
    const prometheus::Labels labels{{"id", std::to_string(slot.id)},
                                    {"name", std::string(Label(slot.target.name))},
                                    {"ip", *CanonicalIp(slot.target.address)},
                                    {"asg", std::string(Label(slot.target.group))}};
    it = series_.emplace(slot.id, Series{std::move(key), &family_->Add(labels)}).first;
  }
  it->second.gauge->Set(slot.weight);
}

void SlotWeightMetrics::Rebuild() {
  registry_.Remove(*family_);
  family_ = &MakeFamily();
  series_.clear();
}

void SlotWeightMetrics::Update(const SlotTable& table) {
  std::vector<std::string> keys;
  keys.reserve(table.slots.size());
  const auto beyond = series_.lower_bound(static_cast<int>(table.slots.size()) + 1);
  auto removals = static_cast<std::size_t>(std::distance(beyond, series_.end()));
  for (const Slot& slot : table.slots) {
    keys.push_back(SeriesKey(slot));
    if (Changes(slot.id, keys.back())) ++removals;
  }
  if (removals > kRebuildAbove) Rebuild();
  // Slots beyond the table (list size shrank).
  for (auto it = series_.lower_bound(static_cast<int>(table.slots.size()) + 1);
       it != series_.end();) {
    family_->Remove(it->second.gauge);
    it = series_.erase(it);
  }
  for (std::size_t i = 0; i < table.slots.size(); ++i) Refresh(table.slots[i], std::move(keys[i]));
}

void SlotWeightMetrics::Update(const SlotTable& table, std::span<const int> changed) {
  std::vector<std::string> keys;
  keys.reserve(changed.size());
  std::size_t removals = 0;
  for (const int id : changed) {
    if (id < 1 || static_cast<std::size_t>(id) > table.slots.size()) return Update(table);
    keys.push_back(SeriesKey(table.slots[static_cast<std::size_t>(id - 1)]));
    if (Changes(id, keys.back())) ++removals;
  }
  if (removals > kRebuildAbove) return Update(table);
  for (std::size_t i = 0; i < changed.size(); ++i) {
    Refresh(table.slots[static_cast<std::size_t>(changed[i] - 1)], std::move(keys[i]));
  }
}

}  // namespace hsdo
