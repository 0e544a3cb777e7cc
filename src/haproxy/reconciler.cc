#include "haproxy/reconciler.h"

#include <unordered_map>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo::haproxy {

std::string SlotServerName(const BackendConfig& backend, int slot_id) {
  return fmt::format("{}{}", backend.base_name, slot_id);
}

std::string Printable(std::string_view text, std::size_t max_length) {
  std::string out;
  for (const char c : text.substr(0, max_length)) {
    out += (c >= ' ' && c < 127) ? c : '?';
  }
  if (text.size() > max_length) out += "...";
  return out;
}

namespace {

struct ValidTarget {
  std::string address;
  int port = 0;
  int weight = 0;
};

// Checks every value of an active slot that would enter a command. Returns the reason on failure.
Result<ValidTarget> ValidateActive(const BackendConfig& backend, const DesiredSlot& slot) {
  auto address = CanonicalIp(slot.target.address);
  if (!address) {
    return MakeError(ErrorCode::kInvalidArgument, "address '{}' is not an IP literal",
                     Printable(slot.target.address));
  }
  const int port = slot.target.port ? *slot.target.port : backend.port;
  if (port < 1 || port > 65535) {
    return MakeError(ErrorCode::kInvalidArgument, "port {} is outside 1-65535", port);
  }
  if (slot.weight < 0 || slot.weight > kMaxWeight) {
    return MakeError(ErrorCode::kInvalidArgument, "weight {} is outside 0-{}", slot.weight,
                     kMaxWeight);
  }
  return ValidTarget{.address = std::move(*address), .port = port, .weight = slot.weight};
}

}  // namespace

Result<BackendDiff> Reconcile(const BackendConfig& backend, std::span<const DesiredSlot> desired,
                              std::span<const ServerState> actual) {
  if (!IsValidHaproxyName(backend.name)) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid backend name '{}'",
                     Printable(backend.name));
  }
  if (!IsValidHaproxyName(backend.base_name)) {
    return MakeError(ErrorCode::kInvalidArgument, "invalid server base name '{}' in backend {}",
                     Printable(backend.base_name), backend.name);
  }
  std::unordered_map<std::string_view, const ServerState*> by_name;
  by_name.reserve(actual.size());
  for (const auto& server : actual) by_name.emplace(server.name, &server);

  BackendDiff diff;
  for (const auto& slot : desired) {
    const std::string server_name = SlotServerName(backend, slot.id);
    if (slot.id < 1 || !IsValidHaproxyName(server_name)) {
      diff.invalid_slots.push_back(
          {.backend = backend.name,
           .slot_id = slot.id,
           .reason = fmt::format("invalid server name '{}'", Printable(server_name))});
      continue;  // no valid name to address it by
    }
    const auto found = by_name.find(server_name);
    if (found == by_name.end()) {
      diff.missing_slots.push_back(slot.id);
      continue;
    }
    const ServerState& server = *found->second;
    const std::string prefix = fmt::format("set server {}/{} ", backend.name, server_name);
    auto add = [&](CommandKind kind, std::string args) {
      diff.commands.push_back(
          {.text = prefix + args, .kind = kind, .backend = backend.name, .slot_id = slot.id});
    };

    std::optional<ValidTarget> target;
    if (slot.active) {
      auto valid = ValidateActive(backend, slot);
      if (valid) {
        target = std::move(*valid);
      } else {
        diff.invalid_slots.push_back(
            {.backend = backend.name, .slot_id = slot.id, .reason = valid.error().message});
      }
    }
    if (!target) {
      if (server.admin != AdminState::kMaint) add(CommandKind::kState, "state maint");
      continue;
    }
    const auto actual_address = CanonicalIp(server.address);
    if (!actual_address || *actual_address != target->address || server.port != target->port) {
      add(CommandKind::kAddr, fmt::format("addr {} port {}", target->address, target->port));
    }
    if (server.weight != target->weight) {
      add(CommandKind::kWeight, fmt::format("weight {}", target->weight));
    }
    if (server.admin != AdminState::kReady) add(CommandKind::kState, "state ready");
  }
  return diff;
}

}  // namespace hsdo::haproxy
