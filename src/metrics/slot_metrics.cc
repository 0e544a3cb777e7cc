#include "metrics/slot_metrics.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <prometheus/client_metric.h>
#include <prometheus/metric_type.h>

#include "common/validate.h"

namespace hsdo {

namespace {

constexpr std::size_t kMaxLabelLength = 255;

std::string_view Label(const std::string& text) {
  return std::string_view(text).substr(0, kMaxLabelLength);
}

// The labels of a slot's series besides its id, in one string (ip, name, group), and its value.
struct Series {
  std::string labels;
  std::uint16_t name_at = 0;
  std::uint16_t group_at = 0;
  double weight = 0;

  std::string_view ip() const { return std::string_view(labels).substr(0, name_at); }
  std::string_view name() const {
    return std::string_view(labels).substr(name_at, group_at - name_at);
  }
  std::string_view group() const { return std::string_view(labels).substr(group_at); }
};

// The series of `slot`, if it has one. A store item is untrusted: a slot whose address is not
// an IP is never exported.
std::optional<Series> SeriesOf(const Slot& slot) {
  auto address = slot.enabled() ? CanonicalIp(slot.target.address) : std::nullopt;
  if (!address) return std::nullopt;
  Series series;
  series.labels = std::move(*address);
  series.name_at = static_cast<std::uint16_t>(series.labels.size());
  series.labels.append(Label(slot.target.name));
  series.group_at = static_cast<std::uint16_t>(series.labels.size());
  series.labels.append(Label(slot.target.group));
  series.weight = slot.weight;
  return series;
}

}  // namespace

class SlotWeightMetrics::Family : public prometheus::Collectable {
 public:
  // Runs `update` on the series, by slot id, while no scrape reads them.
  template <typename Update>
  void Change(Update&& update) {
    std::lock_guard lock(mutex_);
    update(series_);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard lock(mutex_);
    if (series_.empty()) return {};
    prometheus::MetricFamily family;
    family.name = "hsdo_server_weight";
    family.help = "Weight of each enabled slot (id = HAProxy server slot)";
    family.type = prometheus::MetricType::Gauge;
    family.metric.reserve(series_.size());
    for (const auto& [id, series] : series_) {
      prometheus::ClientMetric& metric = family.metric.emplace_back();
      // In the order prometheus-cpp's families give them (sorted by name).
      metric.label = {{"asg", std::string(series.group())},
                      {"id", std::to_string(id)},
                      {"ip", std::string(series.ip())},
                      {"name", std::string(series.name())}};
      metric.gauge.value = series.weight;
    }
    return {std::move(family)};
  }

 private:
  mutable std::mutex mutex_;
  std::map<int, Series> series_;
};

namespace {

void Refresh(std::map<int, Series>& series, const Slot& slot) {
  if (auto made = SeriesOf(slot)) {
    series.insert_or_assign(slot.id, std::move(*made));
  } else {
    series.erase(slot.id);
  }
}

}  // namespace

SlotWeightMetrics::SlotWeightMetrics(MetricsRegistry& registry)
    : family_(std::make_shared<Family>()) {
  registry.Attach(family_);
}

void SlotWeightMetrics::Update(const SlotTable& table) {
  family_->Change([&](std::map<int, Series>& series) {
    // Slots beyond the table (list size shrank).
    series.erase(series.upper_bound(static_cast<int>(table.slots.size())), series.end());
    for (const Slot& slot : table.slots) Refresh(series, slot);
  });
}

class SlotSetMetric::Family : public prometheus::Collectable {
 public:
  Family(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}

  void Set(std::vector<int> slots) {
    std::lock_guard lock(mutex_);
    slots_ = std::move(slots);
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard lock(mutex_);
    if (slots_.empty()) return {};
    prometheus::MetricFamily family{
        .name = name_, .help = help_, .type = prometheus::MetricType::Gauge, .metric = {}};
    family.metric.reserve(slots_.size());
    for (const int id : slots_) {
      prometheus::ClientMetric& metric = family.metric.emplace_back();
      metric.label = {{"slot", std::to_string(id)}};
      metric.gauge.value = 1;
    }
    return {std::move(family)};
  }

 private:
  const std::string name_;
  const std::string help_;
  mutable std::mutex mutex_;
  std::vector<int> slots_;
};

SlotSetMetric::SlotSetMetric(MetricsRegistry& registry, std::string name, std::string help)
    : family_(std::make_shared<Family>(std::move(name), std::move(help))) {
  registry.Attach(family_);
}

void SlotSetMetric::Set(std::vector<int> slots) { family_->Set(std::move(slots)); }

void SlotWeightMetrics::Update(const SlotTable& table, std::span<const int> changed) {
  for (const int id : changed) {
    if (id < 1 || static_cast<std::size_t>(id) > table.slots.size()) return Update(table);
  }
  family_->Change([&](std::map<int, Series>& series) {
    for (const int id : changed) Refresh(series, table.slots[static_cast<std::size_t>(id - 1)]);
  });
}

}  // namespace hsdo
