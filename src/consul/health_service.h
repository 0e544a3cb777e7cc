// Consul's "List Service Instances for Service" endpoint (GET /v1/health/service/:service):
// the request for one service and the mapping of its answer to targets. Pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "core/slot_table.h"

namespace hsdo::consul {

// The URL of one (blocking, when `index` > 0) query for `service`: passing=true when only
// passing instances are wanted, dc when a datacenter is set, the tag as a `filter` expression
// on Service.Tags (Consul deprecates the `tag` parameter in favour of `filter`).
std::string HealthServiceUrl(const ConsulConfig& config, std::string_view service,
                             std::uint64_t index, std::chrono::milliseconds wait);

// The `filter` expression that keeps instances carrying `tag`: "<tag>" in Service.Tags.
std::string TagFilter(std::string_view tag);

// One service instance as a target, with Consul's CreateIndex to order it by age.
struct Instance {
  Target target;
  std::uint64_t create_index = 0;
  std::string service_id;  // for the tie-break after CreateIndex and node name
  std::string node;

  bool operator==(const Instance&) const = default;
};

struct HealthServiceAnswer {
  std::vector<Instance> instances;   // oldest first (see SortOldestFirst)
  std::vector<std::string> skipped;  // one line per instance left out, and why
};

// Maps the JSON body of /v1/health/service/<service> to targets:
//  - address: Service.Address, or Node.Address when the service has none (canonical IP);
//  - port: Service.Port (none when 0);
//  - name: Node.Node + "/" + Service.ID; group: `service`;
//  - AZ: Service.Meta[az_meta_key], else Node.Meta[az_meta_key], when the key is set.
// An instance that fails validation is skipped and reported in `skipped`; a body that is
// not a JSON array is an error (and the caller keeps its last good list).
Result<HealthServiceAnswer> ParseHealthService(std::string_view body, std::string_view service,
                                               std::string_view az_meta_key);

// Oldest registration first (CreateIndex; unknown counts as newest), then node, service id
// and address, so that the order never depends on the order of Consul's answer.
void SortOldestFirst(std::vector<Instance>& instances);

}  // namespace hsdo::consul
