#include "app/status.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <ctime>
#include <optional>
#include <set>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "app/factories.h"
#include "app/set_state.h"
#include "common/logging.h"
#include "common/python_time.h"
#include "core/planner.h"

namespace hsdo {

namespace {

constexpr std::size_t kColumns = 10;
using Row = std::array<std::string, kColumns>;

int DrainingCount(const SlotTable& table) {
  return static_cast<int>(std::count_if(table.slots.begin(), table.slots.end(),
                                        [](const Slot& slot) { return slot.draining(); }));
}

int OverrideCount(const SlotTable& table) {
  return static_cast<int>(std::count_if(table.slots.begin(), table.slots.end(), [](const Slot& s) {
    return s.filled() && s.admin != AdminState::kNone;
  }));
}

const char* StateName(const Slot& slot) {
  return slot.enabled() ? "enabled" : slot.draining() ? "draining" : "free";
}

// The operator's override (`hsdo set-state`); nullptr when none.
const char* OverrideName(const Slot& slot) {
  if (!slot.filled() || slot.admin == AdminState::kNone) return nullptr;
  return AdminStateName(slot.admin).data();
}

std::string Summary(const SlotTable& table) {
  std::string text = fmt::format("generation {}: {} of {} slots enabled", table.generation,
                                 table.EnabledCount(), table.slots.size());
  if (IsChaining(table.generation)) {
    text += " (a write of a chain, not its last: agents wait for the rest)";
  }
  if (const int draining = DrainingCount(table); draining > 0) {
    text += fmt::format(", {} draining", draining);
  }
  if (const int overrides = OverrideCount(table); overrides > 0) {
    text += fmt::format(", {} with an operator override (hsdo set-state)", overrides);
  }
  if (table.overflow > 0) {
    text += fmt::format(", {} targets left out (no free slot)", table.overflow);
  }
  if (!table.beyond.empty()) {
    // Read with a list size below the fleet's (a shell whose configuration differs): the rows
    // below are only part of the table, said rather than shown as the whole.
    text += fmt::format(
        "; and {} filled slots above this HAPROXY_BACKEND_SERVERS_LIST_SIZE={}, up to slot {}, "
        "not shown: run with the fleet's list size",
        table.BeyondListSize(), table.slots.size(), table.HighestBeyond());
  }
  return text;
}

// ": 3 7 12", or nothing without ids; the first kHeldSlotsShown of a long list.
std::string HeldSlotsText(const std::vector<int>& ids) {
  constexpr std::size_t kHeldSlotsShown = 32;
  if (ids.empty()) return "";
  if (ids.size() <= kHeldSlotsShown) return fmt::format(": {}", fmt::join(ids, " "));
  return fmt::format(": {} and {} more (--json lists them all)",
                     fmt::join(ids.begin(), ids.begin() + kHeldSlotsShown, " "),
                     ids.size() - kHeldSlotsShown);
}

std::string HoldLine(const RemovalHold& hold) {
  return fmt::format(
      "removal held: the orchestrator holds back freeing {} slots{} (with those freed in the last "
      "MASS_REMOVAL_DELAY, more than MAX_REMOVED_FRACTION of the enabled ones), asked for "
      "since {}; written once the source has answered the same way for MASS_REMOVAL_DELAY, or "
      "once the removals before it have left that window (unless it frees every enabled slot), "
      "or sooner as a replacement when it is held only for the removals before it and the "
      "slots it keeps have passed their health checks on most nodes (CHECKS VOUCH in `hsdo "
      "status --fleet`; REPLACEMENTS_PROVEN_BY_CHECKS)",
      hold.slots, HeldSlotsText(hold.slot_ids), FormatPythonDatetime(hold.since));
}

// The hold the orchestrator's last write stored (SlotTable::removal_hold), said when its exporter
// did not answer here (an orchestrator on another host): it may have ended since, without a
// write.
std::string StoredHoldLine(const HeldRemoval& hold) {
  return fmt::format(
      "removal hold stored with the table: the orchestrator's last write held back freeing {} "
      "slots{} (of {} enabled when the hold began); the orchestrator that leads after a restart "
      "or a take-over holds them on for MASS_REMOVAL_DELAY. Whether it still holds them: "
      "hsdo_orchestrator_removal_held, or `hsdo status` where the orchestrator runs",
      hold.slots.size(), HeldSlotsText(hold.slots), hold.base);
}

// The slots of the samples hsdo_orchestrator_removal_held_slot{slot="N"} 1, in slot order.
std::vector<int> HeldSlotIds(std::string_view text) {
  constexpr std::string_view kPrefix = "hsdo_orchestrator_removal_held_slot{slot=\"";
  std::set<int> ids;
  std::size_t at = 0;
  while (at < text.size()) {
    const auto end = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with(kPrefix)) continue;
    line.remove_prefix(kPrefix.size());
    int id = 0;
    const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), id);
    std::string_view rest(ptr, static_cast<std::size_t>(line.data() + line.size() - ptr));
    if (ec != std::errc() || id < 1 || !rest.starts_with("\"} ")) continue;
    rest.remove_prefix(3);
    rest = rest.substr(0, rest.find(' '));  // an optional timestamp follows
    double value = 0;
    const auto parsed = std::from_chars(rest.data(), rest.data() + rest.size(), value);
    if (parsed.ec == std::errc() && parsed.ptr == rest.data() + rest.size() && value == 1) {
      ids.insert(id);
    }
  }
  return {ids.begin(), ids.end()};
}

// The value of the sample `name` (no labels) in Prometheus text, if there is one.
std::optional<double> Sample(std::string_view text, std::string_view name) {
  std::size_t at = 0;
  while (at < text.size()) {
    const auto end = std::min(text.find('\n', at), text.size());
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with(name) || line.size() <= name.size() || line[name.size()] != ' ') {
      continue;
    }
    std::string_view value = line.substr(name.size() + 1);
    value = value.substr(0, value.find(' '));  // an optional timestamp follows
    double number = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (ec == std::errc() && ptr == value.data() + value.size() && std::isfinite(number)) {
      return number;
    }
  }
  return std::nullopt;
}

// Rows as left-aligned columns two spaces apart, one line each.
template <std::size_t N>
std::string Aligned(const std::vector<std::array<std::string, N>>& rows) {
  std::array<std::size_t, N> widths{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < N; ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < N; ++i) {
      line += i + 1 < N ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::optional<RemovalHold> ParseRemovalHold(std::string_view metrics_text) {
  const auto held = Sample(metrics_text, "hsdo_orchestrator_removal_held");
  if (!held || *held != 1) return std::nullopt;
  RemovalHold hold;
  hold.slots =
      static_cast<int>(Sample(metrics_text, "hsdo_orchestrator_removal_held_slots").value_or(0));
  const double since =
      Sample(metrics_text, "hsdo_orchestrator_removal_held_since_timestamp_seconds").value_or(0);
  hold.since = WallTime{
      std::chrono::duration_cast<WallTime::duration>(std::chrono::duration<double>(since))};
  hold.slot_ids = HeldSlotIds(metrics_text);
  return hold;
}

std::optional<RemovalHold> ReadRemovalHold(const Config& config, http::HttpClient& client) {
  std::string host = config.exporter_address;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  http::Request request;
  request.url = fmt::format("http://{}:{}/metrics", host, config.exporter_port);
  request.timeout = std::chrono::milliseconds{1000};
  request.connect_timeout = std::chrono::milliseconds{500};
  auto response = client.Send(request);
  if (!response || response->status != 200) return std::nullopt;
  return ParseRemovalHold(response->body);
}

std::string FormatStatusTable(const SlotTable& table, const std::optional<RemovalHold>& hold) {
  std::vector<Row> rows;
  rows.push_back({"SLOT", "STATE", "OVERRIDE", "ADDRESS", "NAME", "GROUP", "AZ", "WEIGHT",
                  "LAST WEIGHT UPDATE", "DRAINING SINCE"});
  for (const Slot& slot : table.slots) {
    if (!slot.filled()) {
      rows.push_back({std::to_string(slot.id), "free", "-", "-", "-", "-", "-", "0", "-", "-"});
      continue;
    }
    const auto& t = slot.target;
    const char* admin = OverrideName(slot);
    rows.push_back({std::to_string(slot.id), StateName(slot), admin != nullptr ? admin : "-",
                    t.Key(), t.name.empty() ? "-" : t.name, t.group.empty() ? "-" : t.group,
                    t.az.empty() ? "-" : t.az, std::to_string(slot.weight),
                    slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update) : "-",
                    slot.drain_since ? FormatPythonDatetime(*slot.drain_since) : "-"});
  }
  std::string out = Summary(table) + "\n";
  if (hold) {
    out += HoldLine(*hold) + "\n";
  } else if (!table.removal_hold.slots.empty()) {
    out += StoredHoldLine(table.removal_hold) + "\n";
  }
  return out + Aligned(rows);
}

std::string FormatStatusJson(const SlotTable& table, const std::optional<RemovalHold>& hold) {
  nlohmann::ordered_json slots = nlohmann::ordered_json::array();
  for (const Slot& slot : table.slots) {
    nlohmann::ordered_json item;
    item["id"] = slot.id;
    item["state"] = StateName(slot);
    if (slot.filled()) {
      const char* admin = OverrideName(slot);
      item["override"] =
          admin != nullptr ? nlohmann::ordered_json(admin) : nlohmann::ordered_json(nullptr);
      const auto& t = slot.target;
      item["address"] = t.address;
      item["port"] = t.port ? nlohmann::ordered_json(*t.port) : nlohmann::ordered_json(nullptr);
      item["name"] = t.name;
      item["group"] = t.group;
      item["az"] = t.az;
      item["weight"] = slot.weight;
      item["last_weight_update"] =
          slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update) : "";
      if (slot.drain_since) item["draining_since"] = FormatPythonDatetime(*slot.drain_since);
    }
    slots.push_back(std::move(item));
  }
  nlohmann::ordered_json doc;
  doc["generation"] = table.generation;
  doc["list_size"] = table.slots.size();
  doc["enabled"] = table.EnabledCount();
  doc["draining"] = DrainingCount(table);
  doc["overflow"] = table.overflow;
  doc["beyond_list_size"] = table.BeyondListSize();  // filled slots above list_size, not listed
  doc["removal_held"] = hold.has_value();
  doc["removal_held_slots"] = hold ? hold->slots : 0;
  // Which ones (empty from an orchestrator of a version that does not say).
  doc["removal_held_slot_ids"] = hold ? hold->slot_ids : std::vector<int>{};
  if (hold) doc["removal_held_since"] = FormatPythonDatetime(hold->since);
  // As the orchestrator's last write stored it (null when none): what a leader after a restart
  // or a take-over holds on.
  doc["stored_removal_hold"] = table.removal_hold.slots.empty()
                                   ? nlohmann::ordered_json(nullptr)
                                   : nlohmann::ordered_json{{"slot_ids", table.removal_hold.slots},
                                                            {"base", table.removal_hold.base}};
  doc["slots"] = std::move(slots);
  return doc.dump(2) + "\n";
}

namespace {

std::string UtcSeconds(std::int64_t unix_ms) {
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC",
                     fmt::gmtime(static_cast<std::time_t>(unix_ms / 1000)));
}

// Seconds since the lease was last written; 0 for a write stamped ahead of this host's clock.
std::int64_t RenewedSecondsAgo(const Lease& lease, WallTime now) {
  const auto ago =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() -
      lease.renewed_unix_ms;
  return std::max<std::int64_t>(ago, 0) / 1000;
}

// Whether the lease says when it was last written: not when written by an hsdo that did not
// store that time (0; the DynamoDB adapter reads one left by another writer as 0 too).
bool KnowsRenewal(const Lease& lease) { return lease.renewed_unix_ms > 0; }

}  // namespace

LeaseState JudgeLease(const Lease& lease, WallTime now) {
  if (lease.holder.empty()) return LeaseState::kReleased;
  if (!KnowsRenewal(lease) || lease.duration_ms <= 0) return LeaseState::kHeld;
  const auto now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  return now_ms - lease.renewed_unix_ms > lease.duration_ms ? LeaseState::kLapsed
                                                            : LeaseState::kHeld;
}

std::string FormatLeaseLine(const Lease& lease, WallTime now) {
  // Whatever wrote the store wrote the holder: a terminal's escape sequences and line breaks in
  // it are shown escaped, not run (a forged "leader: ..." line, a cleared screen).
  const std::string holder = logging::EscapeControlCharacters(lease.holder);
  switch (JudgeLease(lease, now)) {
    case LeaseState::kReleased:
      return fmt::format("leader: none, the lease was released at {} (epoch {})\n",
                         UtcSeconds(lease.since_unix_ms), lease.epoch);
    case LeaseState::kLapsed:
      return fmt::format(
          "leader: none renewing: {} last renewed its lease at {}, {} s ago, past its {} ms "
          "(epoch {}); no orchestrator leads, or its clock and this host's differ\n",
          holder, UtcSeconds(lease.renewed_unix_ms), RenewedSecondsAgo(lease, now),
          lease.duration_ms, lease.epoch);
    case LeaseState::kHeld:
      break;
  }
  std::string renewed;
  if (KnowsRenewal(lease)) {
    renewed = fmt::format(", renewed {} s ago", RenewedSecondsAgo(lease, now));
  }
  return fmt::format("leader: {} since {} (epoch {}, lease {} ms{})\n", holder,
                     UtcSeconds(lease.since_unix_ms), lease.epoch, lease.duration_ms, renewed);
}

std::string AddLeaseJson(std::string_view status_json, const Lease& lease, WallTime now) {
  auto doc = nlohmann::ordered_json::parse(status_json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return std::string(status_json);
  nlohmann::ordered_json item;
  item["holder"] = lease.holder;
  item["epoch"] = lease.epoch;
  item["since"] = UtcSeconds(lease.since_unix_ms);
  item["lease_ms"] = lease.duration_ms;
  if (KnowsRenewal(lease)) {
    item["renewed"] = UtcSeconds(lease.renewed_unix_ms);
    item["renewed_seconds_ago"] = RenewedSecondsAgo(lease, now);
  }
  const LeaseState state = JudgeLease(lease, now);
  if (state == LeaseState::kHeld) {
    doc["leader"] = std::move(item);
  } else {
    doc["leader"] = nullptr;
    item["state"] = state == LeaseState::kReleased ? "released" : "lapsed";
    doc["lease"] = std::move(item);
  }
  return doc.dump(2) + "\n";
}

namespace {

constexpr int kLiveIntervals = 3;

double Seconds(std::chrono::milliseconds duration) {
  return std::chrono::duration<double>(duration).count();
}

std::string SessionsText(const std::map<int, int>& sessions) {
  if (sessions.empty()) return "-";
  std::string text;
  for (const auto& [slot, count] : sessions) {
    text += fmt::format("{}{}={}", text.empty() ? "" : " ", slot, count);
  }
  return text;
}

// The slots waiting for their first passing check on a node ("-" when none, "?" from
// an agent of a version that does not say).
std::string AwaitingText(const std::optional<std::set<int>>& pending) {
  if (!pending) return "?";
  if (pending->empty()) return "-";
  return fmt::format("{}", fmt::join(*pending, " "));
}

// The slots whose health check the node vouches for, for the removal guard's replacements:
// "all" of those it serves, "all but" the listed, "none" (it does not gate every slot on
// its check), "?" from an agent of a version that does not say. Slots awaiting their first
// check (AWAITING CHECK) are not vouched for either.
std::string VouchesText(const NodeReport& report) {
  if (!report.gates_every_slot) return "?";
  if (!*report.gates_every_slot) return "none";
  if (report.unvouched.empty()) return "all";
  return fmt::format("all but {}", fmt::join(report.unvouched, " "));
}

std::string BehindText(const FleetNode& node) {
  return node.generations_behind ? std::to_string(*node.generations_behind) : "?";
}

}  // namespace

std::vector<FleetNode> JudgeFleet(std::vector<NodeReport> reports, std::uint64_t table_generation,
                                  WallTime now, std::chrono::milliseconds interval) {
  std::sort(reports.begin(), reports.end(),
            [](const NodeReport& a, const NodeReport& b) { return a.name < b.name; });
  std::vector<FleetNode> nodes;
  nodes.reserve(reports.size());
  for (NodeReport& report : reports) {
    FleetNode node;
    const auto age =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - report.reported_at);
    node.report_age = std::max(age, std::chrono::milliseconds{0});
    node.live_within = NodeLiveness(report, kLiveIntervals * interval);
    node.live = node.report_age < node.live_within;
    // A table marked as a write of a chain counts as its generation without the mark.
    const std::uint64_t current = WithoutChainingBit(table_generation);
    if (report.applied_generation <= current) {
      node.generations_behind = current - report.applied_generation;
    }
    node.behind = !node.live || report.applied_generation != table_generation;
    node.report = std::move(report);
    nodes.push_back(std::move(node));
  }
  return nodes;
}

std::string FormatFleetTable(const std::vector<FleetNode>& nodes, std::uint64_t table_generation,
                             std::chrono::milliseconds interval) {
  constexpr std::size_t kFleetColumns = 10;
  std::vector<std::array<std::string, kFleetColumns>> rows;
  rows.push_back({"NODE", "APPLIED", "BEHIND", "REPORTED", "LIVE", "STATE", "VERSION",
                  "AWAITING CHECK", "CHECKS VOUCH", "DRAINING SESSIONS"});
  std::size_t behind = 0;
  for (const FleetNode& node : nodes) {
    behind += node.behind ? 1 : 0;
    rows.push_back({node.report.name, std::to_string(node.report.applied_generation),
                    BehindText(node), fmt::format("{:.1f} s ago", Seconds(node.report_age)),
                    node.live ? "yes" : "no", node.behind ? "behind" : "up to date",
                    node.report.version.empty() ? "-" : node.report.version,
                    AwaitingText(node.report.pending_admission), VouchesText(node.report),
                    SessionsText(node.report.draining_sessions)});
  }
  std::string out = fmt::format(
      "generation {}: {} nodes reported, {} behind (live: reported within {:g} s, 3 x "
      "INTERVAL, or 3 x a node's own INTERVAL when longer)\n",
      table_generation, nodes.size(), behind, kLiveIntervals * Seconds(interval));
  if (nodes.empty()) return out + "no node has reported yet\n";
  return out + Aligned(rows);
}

std::string FormatFleetJson(const std::vector<FleetNode>& nodes, std::uint64_t table_generation,
                            std::chrono::milliseconds interval) {
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  std::size_t behind = 0;
  for (const FleetNode& node : nodes) {
    behind += node.behind ? 1 : 0;
    nlohmann::ordered_json sessions = nlohmann::ordered_json::object();
    for (const auto& [slot, count] : node.report.draining_sessions) {
      sessions[std::to_string(slot)] = count;
    }
    nlohmann::ordered_json item;
    item["name"] = node.report.name;
    item["applied_generation"] = node.report.applied_generation;
    item["generations_behind"] = node.generations_behind
                                     ? nlohmann::ordered_json(*node.generations_behind)
                                     : nlohmann::ordered_json(nullptr);
    item["applied_at"] = FormatPythonDatetime(node.report.applied_at);
    item["reported_at"] = FormatPythonDatetime(node.report.reported_at);
    item["report_age_seconds"] = Seconds(node.report_age);
    item["live"] = node.live;
    item["live_within_seconds"] = Seconds(node.live_within);
    item["behind"] = node.behind;
    // null from agents of versions that did not say
    item["version"] = node.report.version.empty() ? nlohmann::ordered_json(nullptr)
                                                  : nlohmann::ordered_json(node.report.version);
    item["draining_sessions"] = std::move(sessions);
    // The slots it holds at weight 0 until their first passing check; null from agents of
    // versions that did not say.
    item["pending_admission"] = node.report.pending_admission
                                    ? nlohmann::ordered_json(*node.report.pending_admission)
                                    : nlohmann::ordered_json(nullptr);
    // Every slot it serves is gated by its health check: its word proves slots for the
    // removal guard; null from agents of versions that did not say (the table's "?").
    item["gates_every_slot"] = node.report.gates_every_slot
                                   ? nlohmann::ordered_json(*node.report.gates_every_slot)
                                   : nlohmann::ordered_json(nullptr);
    item["unvouched"] = node.report.unvouched;
    items.push_back(std::move(item));
  }
  nlohmann::ordered_json doc;
  doc["generation"] = table_generation;
  // For a node that reports at the orchestrator's INTERVAL; each node says its own.
  doc["live_within_seconds"] = kLiveIntervals * Seconds(interval);
  doc["nodes_behind"] = behind;
  doc["nodes"] = std::move(items);
  return doc.dump(2) + "\n";
}

Result<std::string> ReadFleetStatus(const Config& config, bool json, WallTime now) {
  prometheus::Registry registry;
  auto store = MakeStore(config, registry, StoreAccess::kRead);
  if (!store) return store.error();  // none at that path: an error, as for `hsdo status`
  auto table = (*store)->ReadTable();
  if (!table) {
    return MakeError(ErrorCode::kUnavailable, "cannot read the slot table: {}",
                     table.error().message);
  }
  const std::uint64_t generation = table->generation;
  auto reader = MakeNodeReportReader(config, &registry);
  if (!reader) return reader.error();
  auto reports = (*reader)->ReadNodeReports();
  if (!reports) {
    // Exit 1, not 2: the store's content, not the configuration, is at fault.
    return MakeError(ErrorCode::kUnavailable, "cannot read the node records: {}",
                     reports.error().message);
  }
  const auto nodes = JudgeFleet(std::move(*reports), generation, now, config.interval);
  return json ? FormatFleetJson(nodes, generation, config.interval)
              : FormatFleetTable(nodes, generation, config.interval);
}

}  // namespace hsdo
