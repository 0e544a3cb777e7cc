// The decide step of an agent cycle, as a pure function: (slot table, HAProxy's state of every
// managed backend, settings, what this node has admitted) -> typed operations and what to
// report. No I/O, no clock, no logging: the agent (agent.cc) reads, applies, logs once and counts
// around it.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "config/config.h"
#include "core/slot_table.h"
#include "haproxy/az_split.h"
#include "haproxy/reconciler.h"
#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"

namespace hsdo::agent {

// AgentSettings::unseen_process_hold when this agent has no drain timeout (its
// HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT is 0 while the orchestrator's may not be).
inline constexpr std::chrono::milliseconds kUnseenProcessHold = std::chrono::minutes(5);

// What the agent needs from the configuration, as plain data.
struct AgentSettings {
  std::vector<haproxy::ManagedBackend> backends;
  haproxy::AzLimiterPolicy az_limiter;
  int list_size = 10;
  std::chrono::milliseconds interval{1000};
  // The table is re-read at least this often even when the generation did not move, so that a
  // store that lost a generation bump cannot keep an agent stale for long.
  std::chrono::milliseconds table_refresh{60'000};
  // HAProxy's state is read in full at least this often even when nothing seems to have
  // changed, which repairs a hand edit (HAPROXY_FULL_SYNC_INTERVAL).
  std::chrono::milliseconds full_sync_interval{10'000};
  // A newly filled slot gets its weight only after this node's check passed at its address
  // (HAPROXY_ADMISSION_GATING; backends without `check` are never gated).
  bool admission_gating = true;
  std::string node_name;  // HSDO_NODE_NAME, in node reports
  // How long a HAProxy process replaced by a reload is taken to serve its connections when this
  // host cannot see it end (Agent::ReplacedProcess): HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT, the
  // longest a drain waits, or kUnseenProcessHold when this agent's is 0.
  std::chrono::milliseconds unseen_process_hold = kUnseenProcessHold;

  static AgentSettings FromConfig(const Config& config);
};

struct PendingSlot {
  std::string backend;
  int slot_id = 0;
  bool operator==(const PendingSlot&) const = default;
};

struct CyclePlan {
  std::vector<haproxy::Operation> operations;  // in backend order, then slot order
  std::vector<haproxy::InvalidSlot> invalid_slots;
  // Why HAProxy will still differ from the table after the operations (missing servers, a
  // backend that cannot be read), one short phrase each.
  std::vector<std::string> differences;
  // For each backend, in order: what is wrong with it ("" when nothing), to log once.
  std::vector<std::pair<std::string, std::string>> backend_problems;
  std::string list_size_problem;  // filled slots above this node's list size ("" when none)
  // AZ_LIMITER with filled slots of which none is in CLIENT_ASG_NAMES ("" otherwise): the
  // primary backends are empty, which a misspelt group gives as well as an AZ without targets.
  std::string no_local_targets;
  int missing_slots = 0;
  bool complete = true;              // every backend was read and every slot has a server
  std::vector<PendingSlot> pending;  // admissions waiting for a passing check, at weight 0
  // The slots that wait so, or at their weight for a first passing check they were given
  // their weight without (haproxy::BackendDiff::unproven_slots), in every backend that serves
  // them (the node report's list, which holds their ramps): a slot another backend serves
  // already (a service of its own on another port, ManagedBackend::own_port) does not wait.
  std::set<int> waiting;
  // The node report's gates_every_slot: admission gating on, every backend read and matched,
  // and every active slot's server with a `check`, so that a filled slot not in `waiting` has
  // passed a check at its target here.
  bool gates_every_slot = false;
  // Ready slots at their weight waiting for their first passing check (haproxy::BackendDiff::
  // unproven_slots): HAProxy's state is read every cycle while there are some. Not the slots of
  // `unproven` out of service (an override, a drain), whose checks pass unread or not at all.
  std::vector<PendingSlot> unproven_slots;
  // Slots served without waiting that this node cannot vouch for (the node report's
  // `unvouched`; haproxy::BackendDiff::unvouched_slots), in any backend.
  std::set<int> unvouched;
  // Serving servers keeping their port until the ones moved before pass their checks
  // (haproxy::BackendDiff::held_slots).
  std::vector<PendingSlot> held;
  int admissions = 0;              // weights given after a passing check (not drift)
  haproxy::AdmittedSet admitted;   // what this node remembers for the next cycle
  haproxy::AdmittedSet unproven;   // of those, the ones not seen passing a check yet
  haproxy::AdmittedSet inherited;  // haproxy::BackendDiff::inherited, of every backend
};

// "srv3, srv6-srv10": slot ids as compact ranges of server names, for one readable line.
std::string SlotRanges(const std::string& base, const std::vector<int>& ids);

// `servers` holds one parsed `show servers state` per settings.backends entry, in order.
// `static_weight_backends`: the backends found to refuse weights (ReconcileOptions).
CyclePlan PlanCycle(const SlotTable& table, const AgentSettings& settings,
                    std::span<const Result<std::vector<haproxy::ServerState>>> servers,
                    const haproxy::AdmittedSet& admitted,
                    const std::set<std::string>& static_weight_backends = {},
                    const haproxy::StagingSet& unconfirmed_stagings = {},
                    const haproxy::AdmittedSet& unproven = {},
                    const haproxy::AdmittedSet& inherited = {});

// The sessions of each draining slot on this node (summed over the managed backends), from one
// parsed `show stat` per backend. None while a backend could not be read: its servers may hold
// any draining slot's sessions, and a slot left out of a node report is not drained there.
std::map<int, int> DrainingSessions(
    const SlotTable& table, const AgentSettings& settings,
    std::span<const Result<std::map<std::string, int>>> sessions_by_backend);

// How often a node report is written: at the next cycle when it changed and at every cycle while
// a slot drains, never less than half an INTERVAL after the last; otherwise at every second
// cycle (at least every 2 x INTERVAL, lifecycle spec, section 3); at once when the wall clock
// went back behind the last one. A cycle up to half an INTERVAL early or late counts as on time.
bool NodeReportDue(const std::optional<NodeReport>& last, const NodeReport& next, WallTime now,
                   std::chrono::milliseconds interval);

// A batch's identity, for "the same batch as the last one" (what HAProxy refused again, or
// something undid again): equal for equal batches, and in practice different for batches that
// differ in any command.
std::size_t BatchHash(std::span<const haproxy::Operation> operations);

}  // namespace hsdo::agent
