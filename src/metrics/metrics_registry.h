// prometheus-cpp's registry, which also collects metric families that hsdo builds itself
// (prometheus::Collectable) instead of keeping one prometheus-cpp object per series.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

namespace hsdo {

class MetricsRegistry : public prometheus::Registry {
 public:
  // `collectable` is collected after the registry's own families for as long as it lives.
  void Attach(std::weak_ptr<const prometheus::Collectable> collectable);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  mutable std::mutex mutex_;
  mutable std::vector<std::weak_ptr<const prometheus::Collectable>> attached_;
};

}  // namespace hsdo
