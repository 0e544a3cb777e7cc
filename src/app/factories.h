// Builds the configured store and discovery source: the one place that knows every
// implementation.
#pragma once

#include <memory>
#include <stop_token>

#include <prometheus/registry.h>

#include "common/clock.h"
#include "common/wakeup.h"
#include "config/config.h"
#include "discovery/discovery_source.h"
#include "store/node_report.h"
#include "store/slot_store.h"

namespace hsdo {

// How an embedded (SQLite) store is opened; the others are the same in every mode.
enum class StoreAccess {
  kRead,    // agents, `hsdo status`: read-only; a missing store is kNotFound
  kWrite,   // the orchestrator, `hsdo set-state`: a missing store is kNotFound too
  kCreate,  // `hsdo init-table`: made when missing
};

// `cancel` ends the store's requests and retry sleeps (Wakeup::stop_token()).
Result<std::unique_ptr<SlotStore>> MakeStore(const Config& config, prometheus::Registry& registry,
                                             StoreAccess access, std::stop_token cancel = {});

// The configuration of an agent's store and node reports: an AWS request's attempt may take
// 2 x INTERVAL, from 2 s to 10 s (everyone else's), so that an endpoint that hangs holds an
// agent's cycle, and the repair of a reloaded HAProxy, a few seconds, not half a minute.
Config WithAgentRequestTimeout(Config config);

// The agent's store: never created, opened on first use and retried every cycle until it
// exists (DeferredStore). Fails at once only for a configuration error (kInvalidArgument).
Result<std::unique_ptr<SlotStore>> MakeAgentStore(const Config& config,
                                                  prometheus::Registry& registry,
                                                  std::stop_token cancel);

// Node records (issue 10, item 3) in the configured store, apart from the slot records
// (docs/stores.md, "Node records"). The agent's sink never creates the store: with SQLite it
// opens its own small read-write connection on first use and writes only into a store an
// orchestrator has set up. The agent fills NodeReport::name with
// ResolveNodeName(config.node_name) (store/node_report_codec.h). `registry` may be null.
Result<std::unique_ptr<NodeReportSink>> MakeNodeReportSink(const Config& config,
                                                           prometheus::Registry* registry,
                                                           std::stop_token cancel = {});
// The orchestrator's and `hsdo status --fleet`'s view: every node's last valid record.
Result<std::unique_ptr<NodeReportReader>> MakeNodeReportReader(const Config& config,
                                                               prometheus::Registry* registry,
                                                               std::stop_token cancel = {});

// Requests of the source end when `wakeup` is stopped.
Result<std::unique_ptr<DiscoverySource>> MakeSource(const Config& config, Wakeup& wakeup,
                                                    prometheus::Registry& registry,
                                                    const Clock& clock);

}  // namespace hsdo
