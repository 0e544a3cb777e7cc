// The reconciler: desired slots x HAProxy's actual servers -> the minimal, ordered list of
// runtime commands that makes one backend match. Pure logic: no I/O, no clock.
//
// Rules, per slot in slot order:
//  - not active in this backend (free, disabled, or placed elsewhere by the AZ limiter):
//    `state maint`, unless the server is already in maint (drain is not maint);
//  - active: `addr <ip> port <port>` if either differs, then `weight <w>` if it differs, then
//    `state ready` if it is not ready. Ready comes last so that a server never takes traffic
//    at a stale address or weight.
// Every value is validated before it becomes part of a command (ARCHITECTURE.md invariant 5):
// a slot whose address is not an IP literal, whose port or weight is out of range, or whose
// server name would be invalid is reported in `invalid_slots` and handled like a free slot
// (maint): none of its values is ever sent, and a target hsdo cannot trust takes no traffic.
// Applying the result and reconciling again yields no command (invariant 4).
#pragma once

#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "haproxy/az_split.h"
#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

inline constexpr int kMaxWeight = 256;  // HAProxy's limit for an absolute weight

struct Command {
  std::string text;  // e.g. "set server be/srv3 weight 10"
  CommandKind kind = CommandKind::kOther;
  std::string backend;
  int slot_id = 0;
  bool operator==(const Command&) const = default;
};

struct InvalidSlot {
  std::string backend;
  int slot_id = 0;
  std::string reason;  // printable, shortened: safe to log
  bool operator==(const InvalidSlot&) const = default;
};

struct BackendDiff {
  std::vector<Command> commands;
  std::vector<InvalidSlot> invalid_slots;
  std::vector<int> missing_slots;  // slot ids for which HAProxy has no server <base><id>
};

// The server name of a slot in a backend: <base_name><id>.
std::string SlotServerName(const BackendConfig& backend, int slot_id);

// Errors only when the backend's own name or base name is invalid.
Result<BackendDiff> Reconcile(const BackendConfig& backend, std::span<const DesiredSlot> desired,
                              std::span<const ServerState> actual);

// A shortened, printable copy of untrusted text, for log lines and reasons.
std::string Printable(std::string_view text, std::size_t max_length = 80);

}  // namespace hsdo::haproxy
