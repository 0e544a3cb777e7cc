// Builds the configured store and discovery source: the one place that knows every
// implementation.
#pragma once

#include <memory>

#include <prometheus/registry.h>

#include "common/clock.h"
#include "common/wakeup.h"
#include "config/config.h"
#include "discovery/discovery_source.h"
#include "store/slot_store.h"

namespace hsdo {

// `create`: whether an embedded store that does not exist yet is created (the orchestrator
// and agents) or is an error (`hsdo status`, which only reads).
Result<std::unique_ptr<SlotStore>> MakeStore(const Config& config, prometheus::Registry& registry,
                                             bool create = true);

Result<std::unique_ptr<DiscoverySource>> MakeSource(const Config& config, Wakeup& wakeup,
                                                    prometheus::Registry& registry,
                                                    const Clock& clock);

}  // namespace hsdo
