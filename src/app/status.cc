#include "app/status.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/python_time.h"

namespace hsdo {

namespace {

constexpr std::size_t kColumns = 8;
using Row = std::array<std::string, kColumns>;

std::string Summary(const SlotTable& table) {
  std::string text = fmt::format("generation {}: {} of {} slots enabled", table.generation,
                                 table.EnabledCount(), table.slots.size());
  if (table.overflow > 0) {
    text += fmt::format(", {} targets left out (no free slot)", table.overflow);
  }
  return text;
}

}  // namespace

std::string FormatStatusTable(const SlotTable& table) {
  std::vector<Row> rows;
  rows.push_back(
      {"SLOT", "STATE", "ADDRESS", "NAME", "GROUP", "AZ", "WEIGHT", "LAST WEIGHT UPDATE"});
  for (const Slot& slot : table.slots) {
    if (!slot.enabled()) {
      rows.push_back({std::to_string(slot.id), "free", "-", "-", "-", "-", "0", "-"});
      continue;
    }
    const auto& t = slot.target;
    rows.push_back(
        {std::to_string(slot.id), "enabled", t.Key(), t.name.empty() ? "-" : t.name,
         t.group.empty() ? "-" : t.group, t.az.empty() ? "-" : t.az, std::to_string(slot.weight),
         slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update) : "-"});
  }
  std::array<std::size_t, kColumns> widths{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < kColumns; ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out = Summary(table) + "\n";
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < kColumns; ++i) {
      line += i + 1 < kColumns ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
    }
    out += line + "\n";
  }
  return out;
}

std::string FormatStatusJson(const SlotTable& table) {
  nlohmann::ordered_json slots = nlohmann::ordered_json::array();
  for (const Slot& slot : table.slots) {
    nlohmann::ordered_json item;
    item["id"] = slot.id;
    item["state"] = slot.enabled() ? "enabled" : "free";
    if (slot.enabled()) {
      const auto& t = slot.target;
      item["address"] = t.address;
      item["port"] = t.port ? nlohmann::ordered_json(*t.port) : nlohmann::ordered_json(nullptr);
      item["name"] = t.name;
      item["group"] = t.group;
      item["az"] = t.az;
      item["weight"] = slot.weight;
      item["last_weight_update"] =
          slot.last_weight_update ? FormatPythonDatetime(*slot.last_weight_update) : "";
    }
    slots.push_back(std::move(item));
  }
  nlohmann::ordered_json doc;
  doc["generation"] = table.generation;
  doc["list_size"] = table.slots.size();
  doc["enabled"] = table.EnabledCount();
  doc["overflow"] = table.overflow;
  doc["slots"] = std::move(slots);
  return doc.dump(2) + "\n";
}

}  // namespace hsdo
