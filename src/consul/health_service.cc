#include "consul/health_service.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/validate.h"
#include "consul/blocking_query.h"
#include "http/http_client.h"

namespace hsdo::consul {

namespace {

using Json = nlohmann::json;

// A string member of `object`, or "" when absent or not a string.
std::string StringField(const Json& object, const char* key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

std::string MetaValue(const Json& object, std::string_view key) {
  if (!object.is_object()) return {};
  const auto meta = object.find("Meta");
  if (meta == object.end() || !meta->is_object()) return {};
  const auto it = meta->find(std::string(key));
  if (it == meta->end() || !it->is_string()) return {};
  return it->get<std::string>();
}

// What the checks of one entry say: in maintenance, and whether every other check passes.
struct CheckSummary {
  bool maintenance = false;
  bool others_passing = true;
};

CheckSummary SummarizeChecks(const Json& entry, const std::string& service_id) {
  CheckSummary summary;
  if (!entry.is_object()) return summary;
  const auto checks = entry.find("Checks");
  if (checks == entry.end() || !checks->is_array()) return summary;
  const std::string service_maintenance = std::string(kServiceMaintenanceCheckPrefix) + service_id;
  for (const Json& check : *checks) {
    const std::string id = StringField(check, "CheckID");
    const std::string status = StringField(check, "Status");
    if (id == kNodeMaintenanceCheck || id == service_maintenance) {
      if (status == "critical") summary.maintenance = true;
    } else if (status != "passing") {
      summary.others_passing = false;
    }
  }
  return summary;
}

// Whether `tags` (a JSON array of strings: Service.Tags, or a service's tags in the catalog)
// holds `tag`.
bool ContainsTag(const Json& tags, std::string_view tag) {
  return tags.is_array() && std::any_of(tags.begin(), tags.end(), [&](const Json& t) {
           return t.is_string() && t.get_ref<const std::string&>() == tag;
         });
}

}  // namespace

std::string TagFilter(std::string_view tag) {
  // A double-quoted string in Consul's filter language; escape what would end it.
  std::string quoted;
  for (const char c : tag) {
    if (c == '"' || c == '\\') quoted.push_back('\\');
    quoted.push_back(c);
  }
  return fmt::format("\"{}\" in Service.Tags", quoted);
}

std::string HealthServiceUrl(const ConsulConfig& config, std::string_view service,
                             std::uint64_t index, std::chrono::milliseconds wait) {
  std::string base = config.api_url;
  while (base.ends_with('/')) base.pop_back();
  std::vector<std::string> params;
  if (!config.datacenter.empty()) params.push_back("dc=" + http::UrlEncode(config.datacenter));
  if (!config.tag.empty()) params.push_back("filter=" + http::UrlEncode(TagFilter(config.tag)));
  if (index > 0) {
    params.push_back(fmt::format("index={}", index));
    params.push_back("wait=" + FormatWait(wait));
  }
  std::string url = fmt::format("{}/v1/health/service/{}", base, http::UrlEncode(service));
  for (std::size_t i = 0; i < params.size(); ++i) {
    url += (i == 0 ? '?' : '&');
    url += params[i];
  }
  return url;
}

Result<HealthServiceAnswer> ParseHealthService(std::string_view body, std::string_view service,
                                               std::string_view az_meta_key, bool passing_only,
                                               std::string_view tag) {
  Json root;
  try {
    root = Json::parse(body);
  } catch (const Json::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "health/service/{}: invalid JSON: {}", service,
                     e.what());
  }
  if (!root.is_array()) {
    return MakeError(ErrorCode::kInvalidArgument, "health/service/{}: expected a JSON array",
                     service);
  }
  HealthServiceAnswer answer;
  std::size_t position = 0;
  for (const Json& entry : root) {
    ++position;
    const Json empty = Json::object();
    const Json& node = entry.is_object() && entry.contains("Node") ? entry["Node"] : empty;
    const Json& svc = entry.is_object() && entry.contains("Service") ? entry["Service"] : empty;
    const std::string node_name = StringField(node, "Node");
    const std::string service_id = StringField(svc, "ID");
    const std::string where =
        fmt::format("health/service/{} entry {} ({}/{})", service, position, node_name, service_id);
    if (!svc.is_object() || svc.empty()) {
      answer.skipped.push_back(where + ": no Service object");
      continue;
    }
    // Review (Consul semantics): the tag was filtered by Consul alone, and an answer that did
    // not apply the filter gave the instances of every tag a slot (a canary backend balancing
    // onto the whole service).
    if (!tag.empty() && !ContainsTag(svc.value("Tags", Json::array()), tag)) {
      answer.skipped.push_back(fmt::format(
          "{}: without the tag \"{}\" (CONSUL_SERVICE_TAG): Consul did not apply the query's "
          "filter (older than 1.5?)",
          where, SanitizedLabel(tag)));
      continue;
    }
    // Before validation: Consul's `?passing` left such an instance out of the answer, so it
    // never counted as invalid.
    const CheckSummary checks = SummarizeChecks(entry, service_id);
    if (passing_only && !checks.others_passing) {
      ++answer.not_passing;
      continue;
    }
    const std::string service_address = StringField(svc, "Address");
    const std::string raw_address =
        service_address.empty() ? StringField(node, "Address") : service_address;
    const auto address = TargetAddress(raw_address);
    if (!address) {
      // A host name is legal in Consul but cannot reach HAProxy unresolved (invariant 5); nor
      // can 0.0.0.0 ("all interfaces"), which HAProxy would turn into its own address, nor a
      // link-local one (the instance metadata service's: TargetAddress).
      answer.skipped.push_back(
          fmt::format("{}: address \"{}\" is not a server's IP address", where, raw_address));
      continue;
    }
    Target target;
    target.address = *address;
    const auto port_it = svc.find("Port");
    if (port_it != svc.end() && !port_it->is_null()) {
      if (!port_it->is_number_integer() || port_it->get<std::int64_t>() < 0 ||
          port_it->get<std::int64_t>() > 65535) {
        answer.skipped.push_back(fmt::format("{}: invalid port {}", where, port_it->dump()));
        continue;
      }
      // Port 0 means "not set" in Consul: the agent then uses the backend's port.
      if (const auto port = port_it->get<std::int64_t>(); port > 0) {
        target.port = static_cast<std::uint16_t>(port);
      }
    }
    // A name or AZ that is not printable ASCII is shown made printable, not a reason to leave
    // the instance out (its slot would be freed on every node).
    target.name = SanitizedLabel(node_name + "/" + service_id);
    if (node_name.empty() || service_id.empty()) {
      answer.skipped.push_back(fmt::format("{}: no node name or service id", where));
      continue;
    }
    target.group = std::string(service);
    target.drain = checks.maintenance;
    if (!az_meta_key.empty()) {
      std::string az = MetaValue(svc, az_meta_key);
      if (az.empty()) az = MetaValue(node, az_meta_key);
      target.az = SanitizedLabel(az);
    }
    std::uint64_t create_index = std::numeric_limits<std::uint64_t>::max();
    if (const auto it = svc.find("CreateIndex"); it != svc.end() && it->is_number_unsigned()) {
      create_index = it->get<std::uint64_t>();
    }
    // Kept (a fleet may balance onto gateways by name), but said: a sidecar proxy registered
    // under the service's name takes mTLS at its port (review, Consul semantics).
    if (const std::string kind = StringField(svc, "Kind"); !kind.empty()) {
      answer.not_plain.push_back(
          fmt::format("{}: Service.Kind is \"{}\", not a plain service: served at its port {} "
                      "(a proxy registered under this service's name?)",
                      where, SanitizedLabel(kind), target.port ? *target.port : 0));
    }
    answer.instances.push_back(Instance{.target = std::move(target),
                                        .create_index = create_index,
                                        .service_id = service_id,
                                        .node = node_name});
  }
  SortOldestFirst(answer.instances);
  return answer;
}

std::string CatalogServicesUrl(const ConsulConfig& config) {
  std::string base = config.api_url;
  while (base.ends_with('/')) base.pop_back();
  std::string url = base + "/v1/catalog/services";
  if (!config.datacenter.empty()) url += "?dc=" + http::UrlEncode(config.datacenter);
  return url;
}

Result<void> CheckServiceKnown(std::string_view body, std::string_view service,
                               std::string_view tag) {
  Json root;
  try {
    root = Json::parse(body);
  } catch (const Json::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "catalog/services: invalid JSON: {}", e.what());
  }
  if (!root.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "catalog/services: expected a JSON object");
  }
  const auto found = root.find(std::string(service));
  if (found == root.end()) {
    return MakeError(ErrorCode::kNotFound,
                     "Consul has no service '{}' (check CONSUL_SERVICE_NAME and "
                     "CONSUL_DATACENTER): taken as no instance, it would free every slot of the "
                     "service",
                     service);
  }
  if (tag.empty()) return Ok();
  if (!ContainsTag(*found, tag)) {
    return MakeError(ErrorCode::kNotFound,
                     "no instance of Consul service '{}' has the tag '{}' (check "
                     "CONSUL_SERVICE_TAG): taken as no instance, it would free every slot of the "
                     "service",
                     service, tag);
  }
  return Ok();
}

void SortOldestFirst(std::vector<Instance>& instances) {
  std::sort(instances.begin(), instances.end(), [](const Instance& a, const Instance& b) {
    return std::tie(a.create_index, a.node, a.service_id, a.target.group, a.target.address) <
           std::tie(b.create_index, b.node, b.service_id, b.target.group, b.target.address);
  });
}

}  // namespace hsdo::consul
