// Which backends a slot's target belongs in (the seed's AZ limiter). Pure logic.
//
// Without the limiter every target is in every primary backend. With it, targets whose group
// (ASG) is one of the client's own groups (CLIENT_ASG_NAMES) are in the primary backends and the
// others in the fallback backend; ALL_SERVERS_IN_FALLBACK_BACKEND puts the primary targets in
// the fallback as well. Slot numbers are the same in every backend: a slot whose target does not
// belong in a backend is simply in maint there, so hashing stays consistent across nodes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/slot_table.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

enum class BackendRole { kPrimary, kFallback };

struct ManagedBackend {
  BackendConfig config;
  BackendRole role = BackendRole::kPrimary;
  // Its servers take config.port whatever port a target carries (Consul's service port, a
  // file's `port:`): the primary backends listen on different ports, each a service of its own
  // on the same instances, as the seed served them (review: every backend was sent to the
  // record's port, one service's, on every node).
  bool own_port = false;
  bool operator==(const ManagedBackend&) const = default;
};

struct AzLimiterPolicy {
  bool enabled = false;                    // AZ_LIMITER
  std::vector<std::string> client_groups;  // CLIENT_ASG_NAMES
  bool all_in_fallback = false;            // ALL_SERVERS_IN_FALLBACK_BACKEND
};

// The backends an agent manages, primaries first. The fallback is managed only with the
// limiter on: without it the seed never touches that backend. When the primaries' ports
// differ, every backend takes its own port (ManagedBackend::own_port).
std::vector<ManagedBackend> ManagedBackends(const std::vector<BackendConfig>& primaries,
                                            const std::optional<BackendConfig>& fallback,
                                            bool az_limiter);

bool BelongsIn(const Target& target, BackendRole role, const AzLimiterPolicy& policy);

// What one backend should hold for one slot.
struct DesiredSlot {
  int id = 0;
  bool active = false;  // false: the slot must be in maint in this backend
  Target target;        // meaningful when active
  int weight = 0;
  // When active: ready, or drain (a draining slot, an operator's `drain`) or maint (an
  // operator's `maint`); the slot keeps its address and weight in every state.
  AdminState state = AdminState::kReady;
  bool operator==(const DesiredSlot&) const = default;
};

// The HAProxy state of a filled slot: an override wins (maint over everything, drain over
// ready); else a draining slot drains and an enabled one is ready.
AdminState DesiredState(const Slot& slot);

// The slot table as seen by one backend, in slot order: a filled slot (enabled or draining)
// whose target belongs in the backend is active, every other slot is not.
std::vector<DesiredSlot> DesiredSlotsFor(const SlotTable& table, BackendRole role,
                                         const AzLimiterPolicy& policy);

}  // namespace hsdo::haproxy
