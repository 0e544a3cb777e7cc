#include "app/status.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/set_state.h"
#include "common/python_time.h"

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
  if (const int draining = DrainingCount(table); draining > 0) {
    text += fmt::format(", {} draining", draining);
  }
  if (const int overrides = OverrideCount(table); overrides > 0) {
    text += fmt::format(", {} with an operator override (hsdo set-state)", overrides);
  }
  if (table.overflow > 0) {
    text += fmt::format(", {} targets left out (no free slot)", table.overflow);
  }
  return text;
}

std::string HoldLine(const RemovalHold& hold) {
  return fmt::format(
      "removal held: the orchestrator holds back freeing {} slots (more than "
      "MAX_REMOVED_FRACTION of the enabled ones), asked for since {}; written once the source "
      "has answered the same way for MASS_REMOVAL_DELAY",
      hold.slots, FormatPythonDatetime(hold.since));
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
  std::array<std::size_t, kColumns> widths{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < kColumns; ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out = Summary(table) + "\n";
  if (hold) out += HoldLine(*hold) + "\n";
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < kColumns; ++i) {
      line += i + 1 < kColumns ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
    }
    out += line + "\n";
  }
  return out;
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
  doc["removal_held"] = hold.has_value();
  doc["removal_held_slots"] = hold ? hold->slots : 0;
  if (hold) doc["removal_held_since"] = FormatPythonDatetime(hold->since);
  doc["slots"] = std::move(slots);
  return doc.dump(2) + "\n";
}

}  // namespace hsdo
