// `hsdo status`: the slot table as an aligned text table or as JSON, and whether the
// orchestrator holds back a mass removal (read from its exporter's gauges).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/slot_table.h"
#include "http/http_client.h"
#include "store/record_backend.h"

namespace hsdo {

// A removal the orchestrator's guard holds back (hsdo_orchestrator_removal_held).
struct RemovalHold {
  int slots = 0;   // slots it would free
  WallTime since;  // since when the source has answered that way
  // Which (hsdo_orchestrator_removal_held_slot), in slot order; empty from an orchestrator of
  // a version that does not say.
  std::vector<int> slot_ids;
};

// From the Prometheus text of the orchestrator's /metrics: the hold, or nullopt when none is
// held or the text has no such gauge (not an orchestrator's).
std::optional<RemovalHold> ParseRemovalHold(std::string_view metrics_text);

// Asks the orchestrator's exporter at EXPORTER_ADDRESS:EXPORTER_PORT (on this host when it
// listens on every address), best effort within a second: the hold lives in the orchestrator,
// not in the store. nullopt when nothing answers or nothing is held.
std::optional<RemovalHold> ReadRemovalHold(const Config& config, http::HttpClient& client);

std::string FormatStatusTable(const SlotTable& table,
                              const std::optional<RemovalHold>& hold = std::nullopt);
std::string FormatStatusJson(const SlotTable& table,
                             const std::optional<RemovalHold>& hold = std::nullopt);

// The leader lease as `hsdo status` shows it, judged at `now` (this host's clock) against its
// last write (the writer's clock): held; released by a leader that stopped; or lapsed, not
// renewed for longer than the lease (no orchestrator leads, or the two clocks differ).
enum class LeaseState { kHeld, kReleased, kLapsed };
LeaseState JudgeLease(const Lease& lease, WallTime now);
// One line, ending in a newline.
std::string FormatLeaseLine(const Lease& lease, WallTime now);
// `status_json` (FormatStatusJson's) with "leader": the holder while held, else null and a
// "lease" saying why.
std::string AddLeaseJson(std::string_view status_json, const Lease& lease, WallTime now);

// `hsdo status --fleet`: every node that reported (issue 10, item 3), against the table.
struct FleetNode {
  NodeReport report;
  // How many generations the node's applied one is behind the table's; nullopt when it is not
  // a smaller number (a table the seed's server wrote, whose generation is derived).
  std::optional<std::uint64_t> generations_behind;
  std::chrono::milliseconds report_age{0};  // 0 for a report from the future (clock skew)
  // Reported within 3 x INTERVAL, or 3 x the node's own when longer (NodeLiveness).
  bool live = false;
  std::chrono::milliseconds live_within{0};  // that bound, for this node
  bool behind = false;  // not live, or its applied generation is not the table's
};

// Pure: the nodes by name, judged at `now` against the table's generation.
std::vector<FleetNode> JudgeFleet(std::vector<NodeReport> reports, std::uint64_t table_generation,
                                  WallTime now, std::chrono::milliseconds interval);
std::string FormatFleetTable(const std::vector<FleetNode>& nodes, std::uint64_t table_generation,
                             std::chrono::milliseconds interval);
std::string FormatFleetJson(const std::vector<FleetNode>& nodes, std::uint64_t table_generation,
                            std::chrono::milliseconds interval);

// `hsdo status --fleet [--json]`: reads the table's generation (0 while no store exists: reading
// never creates one) and every node record from the configured store, judged at `now`.
Result<std::string> ReadFleetStatus(const Config& config, bool json, WallTime now);

}  // namespace hsdo
