// The reconciler: desired slots x HAProxy's actual servers -> the minimal, ordered list of typed
// operations (Operation, rendered to text only by Render) that makes one backend match. Pure
// logic: no I/O, no clock.
//
// Rules, per slot in slot order:
//  - not active in this backend (free, or placed elsewhere by the AZ limiter): `state maint`,
//    unless the server is already in maint (drain is not maint);
//  - active, to be ready: `addr <ip> port <port>` if either differs, then `weight <w>` if it
//    differs, then `state ready` if it is not ready. Ready comes last so that a server never
//    takes traffic at a stale address or weight;
//  - active, to be in drain or maint (a draining slot, an operator's override): the state first
//    (neither takes new traffic), then the address and the weight, which the slot keeps so that
//    it returns at once when the override is lifted or its target comes back.
// Health-gated admission (options.admission_gating, backends whose servers have `check`): a slot
// that enters service at an address this node has not admitted yet goes to maint if it served
// another address, gets the address, weight 0, `state ready` and `health down`; HAProxy's own
// checks then bring it UP only after `rise` checks passed at that address, and only then does a
// later reconcile give it its weight. A check that fails later is HAProxy's business. Targets
// without a port of their own that serve at another port than the backend's (the agent's
// HAPROXY_BACKEND_SERVER_PORT changed) move a quarter of the serving servers at a time (at
// least one), the next ones once those passed their checks (`held_slots` keep their port
// meanwhile): a mistyped port never takes every server out at once.
// Every value is validated before it becomes part of an operation (ARCHITECTURE.md invariant
// 5): a slot whose address is not an IP literal, whose port or weight is out of range, or whose
// server name would be invalid is reported in `invalid_slots` and handled like a free slot
// (maint): none of its values is ever sent, and a target hsdo cannot trust takes no traffic.
// Applying the result and reconciling again yields no operation (invariant 4), once pending
// admissions have passed their checks.
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "core/slot_table.h"
#include "haproxy/az_split.h"
#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"

namespace hsdo::haproxy {

inline constexpr int kMaxWeight = 256;  // HAProxy's limit for an absolute weight

struct InvalidSlot {
  std::string backend;
  int slot_id = 0;
  std::string reason;  // printable, shortened: safe to log
  bool operator==(const InvalidSlot&) const = default;
};

// Where this node has seen a slot's target in service: "backend/server address:port|name". A
// slot that re-enters service with such a target (a reload without a state file, an override
// lifted, a draining target that comes back) is not gated again; another instance at that
// address (a private IP given again: another name) is.
// Hashed: built again and looked up for every ready slot at each full read of HAProxy's state.
using AdmittedSet = std::unordered_set<std::string>;
std::string AdmittedKey(std::string_view backend, std::string_view server, std::string_view address,
                        int port, std::string_view name);

// "backend/server": a staged admission whose `health down` may not have run (the batch that
// carried it was cut part-way). Out of maint, HAProxy calls the server UP with the last check
// result of its former address, so without its `health down` that stale result would admit it.
using StagingSet = std::unordered_set<std::string>;
std::string StagingKey(std::string_view backend, std::string_view server);

struct ReconcileOptions {
  bool admission_gating = false;
  const AdmittedSet* admitted = nullptr;  // may be null: nothing admitted yet
  // Of those, the ones admitted before any check passed at their address because nothing else
  // served (a node that joins the fleet, its HAProxy and agent both new, or every server
  // failing) and not seen passing since (may be null: none).
  const AdmittedSet* unproven = nullptr;
  // Keys put in service on a passing result they did not earn (BackendDiff::inherited), lately
  // (may be null: none): this node does not vouch for them (BackendDiff::unvouched_slots)
  // until HAProxy's own checks have had the time to take a dead one DOWN (the agent's
  // kInheritedFor).
  const AdmittedSet* inherited = nullptr;
  // Sent `health down` again, rather than admitted by a check result (may be null).
  const StagingSet* unconfirmed_stagings = nullptr;
  // The backend uses a static load-balancing algorithm (static-rr, first, or a hash without
  // `hash-type consistent`): HAProxy then accepts no weight but 0 and the server's initial
  // (configured) one, so a slot with a weight gets its server's initial weight.
  bool static_weights = false;
  // When set, the list size: a server <base><id> with a higher id that is not in maint is put
  // there (left over from a larger HAPROXY_BACKEND_SERVERS_LIST_SIZE, or set ready by hand, it
  // would serve an address no table holds), unless its id is in `filled_above`.
  std::optional<int> take_out_above;
  // Sorted ids above the list size whose slots the store holds filled: this node's list size
  // is the one that is wrong (an agent not yet given the orchestrator's), and their servers are
  // left as they are. Only those: a slot up there that the table frees is taken out (it was
  // left serving a target gone, for good: reconfiguration review).
  std::vector<int> filled_above;
  // Of those, the targets their records hold (by id; an unreadable record's is not known): a
  // server up there is left as it is only while it is at its record's address and port. The
  // orchestrator gives a slot freed up there to another target (review: a node whose list size
  // was smaller than the fleet's served the departed target there for good).
  std::map<int, Target> above_targets;
};

struct BackendDiff {
  std::vector<Operation> operations;
  std::vector<InvalidSlot> invalid_slots;
  std::vector<int> missing_slots;  // slot ids for which HAProxy has no server <base><id>
  std::vector<int> wrong_ids;      // slot ids whose server has another id (still applied)
  // Active slots of a static algorithm's backend (ReconcileOptions::static_weights) whose
  // server's configured weight is 0: HAProxy takes no other, so they take no traffic.
  std::vector<int> unweighted_slots;
  // Slot ids whose server has an `agent-check`, whose replies undo hsdo's states and weights.
  std::vector<int> agent_checked_slots;
  std::vector<int> pending_slots;  // admissions waiting for a passing check (at weight 0)
  // Serving servers whose new port waits until the ones moved before pass their checks (a
  // quarter of the serving servers at a time; backends with `check`, with admission gating).
  std::vector<int> held_slots;
  int admissions = 0;    // weights given this time after a passing check
  AdmittedSet admitted;  // the keys to remember (see AdmittedSet)
  // Slots given their weight without a passing check at their address yet (ungated: nothing
  // else served), and their keys, the next cycle's ReconcileOptions::unproven. They wait for
  // their first passing check as pending_slots do, at their weight.
  std::vector<int> unproven_slots;
  AdmittedSet unproven;
  // Every active slot's server has a `check` at its own address and port (with admission
  // gating on, a filled slot then waits in pending_slots or unproven_slots until a check
  // passes at its target).
  bool every_active_checked = true;
  // Ready slots in service without waiting whose passing check this node cannot vouch for:
  // DOWN by their checks now, or inherited (ReconcileOptions::inherited).
  std::vector<int> unvouched_slots;
  // The keys of slots put in service in this diff, without waiting for a check, on a passing
  // result of another address (kept across `set server addr`) or from before maint (checks
  // pause there): the next cycles' ReconcileOptions::inherited.
  AdmittedSet inherited;
};

// The server name of a slot in a backend: <base_name><id>.
std::string SlotServerName(const BackendConfig& backend, int slot_id);

// Whether every value of an active slot that would enter a command is valid (address, port,
// weight): Reconcile skips, logs and counts a slot that is not.
bool ValidActive(const BackendConfig& backend, const DesiredSlot& slot);

// Errors only when the backend's own name or base name is invalid.
Result<BackendDiff> Reconcile(const BackendConfig& backend, std::span<const DesiredSlot> desired,
                              std::span<const ServerState> actual,
                              const ReconcileOptions& options = {});

// A shortened, printable copy of untrusted text, for log lines and reasons.
std::string Printable(std::string_view text, std::size_t max_length = 80);

}  // namespace hsdo::haproxy
