#include "haproxy/az_split.h"

#include <algorithm>

namespace hsdo::haproxy {

std::vector<ManagedBackend> ManagedBackends(const std::vector<BackendConfig>& primaries,
                                            const std::optional<BackendConfig>& fallback,
                                            bool az_limiter) {
  std::vector<ManagedBackend> backends;
  for (const auto& primary : primaries) {
    backends.push_back({.config = primary, .role = BackendRole::kPrimary});
  }
  if (az_limiter && fallback) {
    backends.push_back({.config = *fallback, .role = BackendRole::kFallback});
  }
  const bool ports_differ = std::any_of(primaries.begin(), primaries.end(), [&](const auto& b) {
    return b.port != primaries.front().port;
  });
  for (ManagedBackend& backend : backends) backend.own_port = ports_differ;
  return backends;
}

bool BelongsIn(const Target& target, BackendRole role, const AzLimiterPolicy& policy) {
  if (!policy.enabled) return role == BackendRole::kPrimary;
  const bool local = std::find(policy.client_groups.begin(), policy.client_groups.end(),
                               target.group) != policy.client_groups.end();
  if (role == BackendRole::kPrimary) return local;
  return !local || policy.all_in_fallback;
}

AdminState DesiredState(const Slot& slot) {
  if (slot.admin == hsdo::AdminState::kMaint) return AdminState::kMaint;
  if (slot.admin == hsdo::AdminState::kDrain || slot.draining()) return AdminState::kDrain;
  return AdminState::kReady;
}

std::vector<DesiredSlot> DesiredSlotsFor(const SlotTable& table, BackendRole role,
                                         const AzLimiterPolicy& policy) {
  std::vector<DesiredSlot> desired;
  desired.reserve(table.slots.size());
  for (const auto& slot : table.slots) {
    DesiredSlot entry{.id = slot.id};
    if (slot.filled() && BelongsIn(slot.target, role, policy)) {
      entry.active = true;
      entry.target = slot.target;
      entry.weight = slot.weight;
      entry.state = DesiredState(slot);
    }
    desired.push_back(std::move(entry));
  }
  return desired;
}

}  // namespace hsdo::haproxy
