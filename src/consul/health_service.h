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

// The URL of one (blocking, when `index` > 0) query for `service`: dc when a datacenter is
// set, the tag as a `filter` expression on Service.Tags (Consul deprecates the `tag` parameter
// in favour of `filter`). Never `passing`: Consul would leave out the instances in maintenance,
// which must drain instead; ParseHealthService filters on the checks itself.
// (`config.passing_only` is applied there.)
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
  std::vector<std::string> skipped;  // one line per invalid instance left out, and why
  std::size_t not_passing = 0;       // left out for a check that is not passing (passing_only)
  // Instances kept that are no plain service (a `Service.Kind`: a Connect sidecar proxy or a
  // gateway registered under the service's name, served at its proxy port), one line each.
  std::vector<std::string> not_plain;
};

// Consul's maintenance checks: `consul maint -enable` (node) and `consul maint -enable
// -service <id>` register a critical check with these ids.
inline constexpr std::string_view kNodeMaintenanceCheck = "_node_maintenance";
inline constexpr std::string_view kServiceMaintenanceCheckPrefix = "_service_maintenance:";

// Maps the JSON body of /v1/health/service/<service> to targets:
//  - address: Service.Address, or Node.Address when the service has none (canonical IP);
//  - port: Service.Port (none when 0);
//  - name: Node.Node + "/" + Service.ID; group: `service`;
//  - AZ: Service.Meta[az_meta_key], else Node.Meta[az_meta_key], when the key is set;
//  - drain: the node's `_node_maintenance` or the instance's `_service_maintenance:<id>`
//    check is critical (the instance is in maintenance: its slot drains).
// With `passing_only`, an instance with a check other than the maintenance checks that is not
// "passing" is left out (counted in `not_passing`), as Consul's `?passing` would; one in
// maintenance whose other checks pass is a draining target.
// An instance that fails validation is skipped and reported in `skipped`; a body that is
// not a JSON array is an error (and the caller keeps its last good list). With `tag`
// (CONSUL_SERVICE_TAG), an instance without it is skipped too: the query's `filter` should have
// left it out, and a Consul that ignores the parameter (older than 1.5, or a proxy that drops
// it) answers every instance of the service.
Result<HealthServiceAnswer> ParseHealthService(std::string_view body, std::string_view service,
                                               std::string_view az_meta_key,
                                               bool passing_only = false,
                                               std::string_view tag = {});

// GET /v1/catalog/services (in CONSUL_DATACENTER when set): every service Consul knows, with
// the tags its instances carry. Consul answers a health query for a service it has never heard
// of (or with a tag no instance carries) like one for a service without instances, `[]`; taken
// as is, a typo in CONSUL_SERVICE_NAME or CONSUL_SERVICE_TAG would free every slot of the
// service once MASS_REMOVAL_DELAY has passed. So an empty answer is checked against this list.
std::string CatalogServicesUrl(const ConsulConfig& config);

// Ok when the body of /v1/catalog/services lists `service` and, if `tag` is not empty, that
// tag among the service's; kNotFound (saying which setting to check) when it does not; an
// error when the body is not a JSON object.
Result<void> CheckServiceKnown(std::string_view body, std::string_view service,
                               std::string_view tag);

// Oldest registration first (CreateIndex; unknown counts as newest), then node, service id
// and address, so that the order never depends on the order of Consul's answer.
void SortOldestFirst(std::vector<Instance>& instances);

}  // namespace hsdo::consul
