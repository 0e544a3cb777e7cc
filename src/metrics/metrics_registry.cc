#include "metrics/metrics_registry.h"

#include <iterator>
#include <utility>

namespace hsdo {

void MetricsRegistry::Attach(std::weak_ptr<const prometheus::Collectable> collectable) {
  std::lock_guard lock(mutex_);
  attached_.push_back(std::move(collectable));
}

std::vector<prometheus::MetricFamily> MetricsRegistry::Collect() const {
  auto families = prometheus::Registry::Collect();
  std::vector<std::shared_ptr<const prometheus::Collectable>> alive;
  {
    std::lock_guard lock(mutex_);
    std::erase_if(attached_, [](const auto& attached) { return attached.expired(); });
    for (const auto& attached : attached_) {
      if (auto collectable = attached.lock()) alive.push_back(std::move(collectable));
    }
  }
  for (const auto& collectable : alive) {
    auto more = collectable->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return families;
}

}  // namespace hsdo
