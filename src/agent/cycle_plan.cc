#include "agent/cycle_plan.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/validate.h"

namespace hsdo::agent {
std::string SlotRanges(const std::string& base, const std::vector<int>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += j == i ? fmt::format("{}{}", base, ids[i])
                  : fmt::format("{}{}-{}{}", base, ids[i], base, ids[j]);
    i = j + 1;
  }
  return out;
}

AgentSettings AgentSettings::FromConfig(const Config& config) {
  AgentSettings settings;
  settings.backends =
      haproxy::ManagedBackends(config.backends, config.FallbackBackend(), config.az_limiter);
  settings.az_limiter = {.enabled = config.az_limiter,
                         .all_in_fallback = config.all_servers_in_fallback_backend};
  // As the table spells them (a group's name that is not printable ASCII is stored made so).
  for (const std::string& group : config.client_asg_names) {
    settings.az_limiter.client_groups.push_back(SanitizedLabel(group));
  }
  settings.list_size = config.list_size;
  settings.interval = config.interval;
  settings.full_sync_interval = config.haproxy_full_sync_interval;
  settings.admission_gating = config.admission_gating;
  settings.node_name = config.node_name;
  if (config.drain_timeout.count() > 0) settings.unseen_process_hold = config.drain_timeout;
  return settings;
}

namespace {

// Puts the operations that take a server out of service (the last operation of a server that
// leaves it in maint or drain) after every other, in their order. A target that moves between
// backends (its group changed, AZ_LIMITER's primary to the fallback) is then in its new backend
// before it leaves the old one: with the primaries' operations first, it was in neither for a
// moment, and until the next cycle when a batch broke part-way (both empty when every local
// target moved).
void TakeOutLast(std::vector<haproxy::Operation>& operations) {
  // Most batches (a full apply: every server's addr, weight, ready) take nothing out: that is
  // told without the map, which cost a full apply of 2 x 1000 slots 2 ms (docs/benchmarks.md).
  const auto takes_out_maybe = [](const haproxy::Operation& operation) {
    return operation.kind == haproxy::CommandKind::kState &&
           operation.state != haproxy::AdminState::kReady;
  };
  if (std::none_of(operations.begin(), operations.end(), takes_out_maybe)) return;
  std::map<std::pair<std::string_view, std::string_view>, std::size_t> last;
  for (std::size_t i = 0; i < operations.size(); ++i) {
    last[{operations[i].backend, operations[i].server}] = i;
  }
  std::vector<bool> takes_out(operations.size(), false);
  for (const auto& [server, i] : last) takes_out[i] = takes_out_maybe(operations[i]);
  if (std::find(takes_out.begin(), takes_out.end(), true) == takes_out.end()) return;
  std::vector<haproxy::Operation> ordered;
  ordered.reserve(operations.size());
  for (const bool out : {false, true}) {
    for (std::size_t i = 0; i < operations.size(); ++i) {
      if (takes_out[i] == out) ordered.push_back(std::move(operations[i]));
    }
  }
  operations = std::move(ordered);
}

// AZ_LIMITER: the warning when no filled slot is this node's (none in a group of
// CLIENT_ASG_NAMES), "" otherwise.
std::string NoLocalTargets(const SlotTable& table, const AgentSettings& settings) {
  std::set<std::string> groups;
  for (const Slot& slot : table.slots) {
    if (!slot.filled()) continue;
    if (haproxy::BelongsIn(slot.target, haproxy::BackendRole::kPrimary, settings.az_limiter)) {
      return "";
    }
    groups.insert(slot.target.group);
  }
  if (groups.empty()) return "";
  return fmt::format(
      "AZ_LIMITER: no filled slot is in a group of CLIENT_ASG_NAMES ({}), so the primary "
      "backends have no server and every request goes to the fallback; the table's groups: {} "
      "(a misspelt CLIENT_ASG_NAMES, or no target in this node's AZ)",
      fmt::join(settings.az_limiter.client_groups, ","), fmt::join(groups, ","));
}

}  // namespace

CyclePlan PlanCycle(const SlotTable& table, const AgentSettings& settings,
                    std::span<const Result<std::vector<haproxy::ServerState>>> servers,
                    const haproxy::AdmittedSet& admitted,
                    const std::set<std::string>& static_weight_backends,
                    const haproxy::StagingSet& unconfirmed_stagings,
                    const haproxy::AdmittedSet& unproven, const haproxy::AdmittedSet& inherited) {
  CyclePlan plan;
  bool every_slot_checked = true;  // gates_every_slot, but for admission gating and `complete`
  std::map<int, int> waiting_in;   // slot id -> backends where it waits for its check
  std::map<int, int> served_in;    // slot id -> backends read that serve it (ready)
  if (table.BeyondListSize() > 0) {
    // Another list size than the orchestrator's: this node would hash unlike the fleet.
    plan.complete = false;
    plan.list_size_problem = fmt::format(
        "the table has {} filled slots above HAPROXY_BACKEND_SERVERS_LIST_SIZE={} (up to slot "
        "{}), which this node cannot apply: give every agent the orchestrator's list size",
        table.BeyondListSize(), settings.list_size, table.HighestBeyond());
    plan.differences.push_back(plan.list_size_problem);
  }
  std::vector<int> filled_above;
  std::map<int, Target> above_targets;
  for (const Slot& slot : table.beyond) {
    filled_above.push_back(slot.id);
    above_targets.emplace(slot.id, slot.target);
  }
  // (And those whose record cannot be read: what they held is not known, so it stays.)
  filled_above.insert(filled_above.end(), table.invalid_above.begin(), table.invalid_above.end());
  std::sort(filled_above.begin(), filled_above.end());
  for (std::size_t i = 0; i < settings.backends.size() && i < servers.size(); ++i) {
    const auto& backend = settings.backends[i];
    const std::string& name = backend.config.name;
    // A backend that takes its own port serves every target as if it had none.
    const auto own_port = [&](Target target) {
      if (backend.own_port) target.port.reset();
      return target;
    };
    std::map<int, Target> backend_above_targets;
    for (const auto& [id, target] : above_targets)
      backend_above_targets.emplace(id, own_port(target));
    const haproxy::ReconcileOptions options{.admission_gating = settings.admission_gating,
                                            .admitted = &admitted,
                                            .unproven = &unproven,
                                            .inherited = &inherited,
                                            .unconfirmed_stagings = &unconfirmed_stagings,
                                            .static_weights = static_weight_backends.contains(name),
                                            .take_out_above = static_cast<int>(table.slots.size()),
                                            .filled_above = filled_above,
                                            .above_targets = backend_above_targets};
    // A backend not reconciled this cycle keeps what it had admitted: forgotten, a slot under
    // an override or draining would be gated again once it serves.
    const auto keep_admitted = [&] {
      const std::string prefix = name + "/";
      for (const auto& key : admitted) {
        if (key.starts_with(prefix)) plan.admitted.insert(key);
      }
      for (const auto& key : unproven) {
        if (key.starts_with(prefix)) plan.unproven.insert(key);
      }
    };
    if (!servers[i]) {
      plan.complete = false;
      plan.differences.push_back(
          fmt::format("cannot read backend '{}': {}", name, servers[i].error().message));
      plan.backend_problems.emplace_back(name, plan.differences.back());
      keep_admitted();
      continue;
    }
    auto desired = haproxy::DesiredSlotsFor(table, backend.role, settings.az_limiter);
    // Two targets at one address with ports of their own (containers on a host) are one server
    // in a backend that takes its own port: served from one slot only, else that server would
    // hash twice, at double weight (review of dbcfc8a). The lowest slot the table has ready
    // serves it; a draining one, or one an operator put in drain or maint, only when none there
    // is ready (that host's other targets still serve: a leaving container drained the host).
    // A slot whose values Reconcile refuses serves nothing, so it claims no address.
    std::vector<int> one_server;
    for (haproxy::DesiredSlot& slot : desired) slot.target = own_port(std::move(slot.target));
    if (backend.own_port) {
      const auto claims = [&](const haproxy::DesiredSlot& slot) {
        return slot.active && haproxy::ValidActive(backend.config, slot);
      };
      std::map<std::string, int, std::less<>> serving;
      for (const bool ready : {true, false}) {
        for (const haproxy::DesiredSlot& slot : desired) {
          if (claims(slot) && (slot.state == haproxy::AdminState::kReady) == ready) {
            serving.try_emplace(slot.target.address, slot.id);
          }
        }
      }
      for (haproxy::DesiredSlot& slot : desired) {
        if (claims(slot) && serving.at(slot.target.address) != slot.id) {
          slot.active = false;
          one_server.push_back(slot.id);
        }
      }
    }
    // A slot whose record is invalid and that this agent held nothing for (it started on it)
    // is left as HAProxy has it: a restarted agent would take out what the others keep. Unless
    // HAProxy serves there a target the table holds in another slot (the orchestrator, which
    // reads the record as free, placed it again): it would be served from two slots.
    const auto elsewhere = [&](int id) {
      const std::string server_name = haproxy::SlotServerName(backend.config, id);
      const auto server = std::find_if(servers[i]->begin(), servers[i]->end(),
                                       [&](const auto& s) { return s.name == server_name; });
      if (server == servers[i]->end()) return false;
      const auto address = CanonicalIp(server->address);
      return address && std::any_of(table.slots.begin(), table.slots.end(), [&](const Slot& slot) {
               return slot.filled() && slot.target.address == *address &&
                      own_port(slot.target).port.value_or(backend.config.port) == server->port;
             });
    };
    std::erase_if(desired, [&](const haproxy::DesiredSlot& slot) {
      const auto index = static_cast<std::size_t>(slot.id - 1);
      return index < table.slots.size() && !table.slots[index].filled() &&
             std::find(table.invalid_ids.begin(), table.invalid_ids.end(), slot.id) !=
                 table.invalid_ids.end() &&
             !elsewhere(slot.id);
    });
    auto diff = haproxy::Reconcile(backend.config, desired, *servers[i], options);
    if (!diff) {
      plan.complete = false;
      plan.differences.push_back(diff.error().message);
      plan.backend_problems.emplace_back(name, diff.error().message);
      keep_admitted();
      continue;
    }
    // What keeps this backend from matching the table: each a difference (/readyz), and
    // together the backend's one log line.
    std::string problems;
    const auto differs = [&](std::string text) {
      plan.complete = false;
      if (!problems.empty()) problems += "; ";
      problems += text;
      plan.differences.push_back(std::move(text));
    };
    const auto servers_of = [&](const std::vector<int>& ids) {
      return SlotRanges(backend.config.base_name, ids);
    };
    if (!one_server.empty()) {
      if (!problems.empty()) problems += "; ";
      problems += fmt::format(
          "backend '{}' serves every target at its port {}, so servers {} are kept in maint: "
          "their targets' addresses are those of lower slots (targets told apart only by their "
          "ports)",
          name, backend.config.port, servers_of(one_server));
    }
    if (!diff->missing_slots.empty()) {
      plan.missing_slots += static_cast<int>(diff->missing_slots.size());
      differs(fmt::format("backend '{}' has no servers {}: those slots cannot be applied", name,
                          servers_of(diff->missing_slots)));
    }
    if (!diff->wrong_ids.empty()) {
      differs(fmt::format(
          "backend '{}': servers {} have ids other than their slot numbers, so this node hashes "
          "them unlike the rest of the fleet (nothing else in the backend may set ids before "
          "the server-template)",
          name, servers_of(diff->wrong_ids)));
    }
    if (!diff->unweighted_slots.empty()) {
      // Found in review: every slot ready at weight 0, no traffic, and /readyz said 200.
      differs(fmt::format(
          "backend '{}' uses a static load-balancing algorithm, where HAProxy takes no weight but "
          "the configured one, and that is 0: servers {} take no traffic (give the "
          "server-template a weight, or use `hash-type consistent`)",
          name, servers_of(diff->unweighted_slots)));
    }
    if (!diff->agent_checked_slots.empty()) {
      // Found in review: said only at start, and in the log only; added by a reload, never.
      differs(fmt::format(
          "backend '{}': servers {} have an `agent-check`, whose replies undo the states and "
          "weights hsdo sets: remove it from the server-template",
          name, servers_of(diff->agent_checked_slots)));
    }
    plan.backend_problems.emplace_back(name, std::move(problems));
    if (plan.operations.empty()) {
      plan.operations = std::move(diff->operations);
    } else {
      plan.operations.insert(plan.operations.end(),
                             std::make_move_iterator(diff->operations.begin()),
                             std::make_move_iterator(diff->operations.end()));
    }
    // A slot kept in maint as another's server, or one whose record this node cannot serve,
    // is not waiting for a check either: this node cannot vouch for it.
    if (!diff->every_active_checked || !one_server.empty() || !diff->invalid_slots.empty()) {
      every_slot_checked = false;
    }
    for (auto& invalid : diff->invalid_slots) plan.invalid_slots.push_back(std::move(invalid));
    for (const int id : diff->pending_slots) {
      plan.pending.push_back({.backend = name, .slot_id = id});
      ++waiting_in[id];
    }
    for (const auto& slot : desired) {
      if (slot.active && slot.state == haproxy::AdminState::kReady) ++served_in[slot.id];
    }
    for (const int id : diff->unproven_slots) {
      ++waiting_in[id];
      plan.unproven_slots.push_back({.backend = name, .slot_id = id});
    }
    plan.unvouched.insert(diff->unvouched_slots.begin(), diff->unvouched_slots.end());
    for (const int id : diff->held_slots) plan.held.push_back({.backend = name, .slot_id = id});
    plan.admissions += diff->admissions;
    if (plan.admitted.empty()) {
      plan.admitted = std::move(diff->admitted);
    } else {
      plan.admitted.merge(diff->admitted);
    }
    plan.unproven.merge(diff->unproven);
    plan.inherited.merge(diff->inherited);
  }
  TakeOutLast(plan.operations);
  for (const auto& [id, count] : waiting_in) {
    if (count >= served_in[id]) plan.waiting.insert(id);
  }
  plan.gates_every_slot = settings.admission_gating && plan.complete && every_slot_checked;
  if (settings.az_limiter.enabled) plan.no_local_targets = NoLocalTargets(table, settings);
  return plan;
}

std::map<int, int> DrainingSessions(
    const SlotTable& table, const AgentSettings& settings,
    std::span<const Result<std::map<std::string, int>>> sessions_by_backend) {
  std::map<int, int> draining;
  for (std::size_t i = 0; i < settings.backends.size(); ++i) {
    if (i >= sessions_by_backend.size() || !sessions_by_backend[i]) return draining;
  }
  for (const auto& slot : table.slots) {
    if (!slot.draining()) continue;
    // Every managed backend has the slot's server (the template): one whose reply lacks it
    // answered for something else (a backend of another size, a proxy of the same name), and
    // the slot's sessions there are not known.
    bool seen_everywhere = !settings.backends.empty();
    std::int64_t total = 0;  // each backend's count fits an int; their sum need not
    for (std::size_t i = 0; i < settings.backends.size(); ++i) {
      const auto found = sessions_by_backend[i]->find(
          haproxy::SlotServerName(settings.backends[i].config, slot.id));
      if (found == sessions_by_backend[i]->end()) {
        seen_everywhere = false;
        break;
      }
      total += found->second;
    }
    if (seen_everywhere) {
      draining[slot.id] =
          static_cast<int>(std::min<std::int64_t>(total, std::numeric_limits<int>::max()));
    }
  }
  return draining;
}

bool NodeReportDue(const std::optional<NodeReport>& last, const NodeReport& next, WallTime now,
                   std::chrono::milliseconds interval) {
  if (!last) return true;
  // The wall clock was set back: the last report is from the future, and would stay younger
  // than INTERVAL (no heartbeat, a node counted as dead) for as long as the clock went back.
  if (now < last->reported_at) return true;
  // Cycles start every INTERVAL, each a little early or late (a wake-up on a loaded host, a
  // slow cycle before it), so a report is due at the cycle nearest its time: half an INTERVAL
  // of slack. With 1 ms, a cycle 2 ms early put the heartbeat off by one INTERVAL, to
  // 3 x INTERVAL, the orchestrator's liveness: the node looked dead, now and then.
  const auto age = now - last->reported_at + interval / 2;
  const bool changed = last->applied_generation != next.applied_generation ||
                       last->draining_sessions != next.draining_sessions ||
                       last->pending_admission != next.pending_admission ||
                       last->gates_every_slot != next.gates_every_slot ||
                       last->unvouched != next.unvouched;
  // While something drains, every INTERVAL: the orchestrator counts a node's sessions only
  // while its report is younger than 3 x INTERVAL, and one report may be late or lost.
  const bool draining = !next.draining_sessions.empty();
  return age >= 2 * interval || ((changed || draining) && age >= interval);
}

std::size_t BatchHash(std::span<const haproxy::Operation> operations) {
  std::size_t hash = operations.size();
  // Combined field by field (as boost's), of what each command says: rendering every command
  // to hash its text cost a full apply of 2 x 1000 slots 1.8 ms (docs/benchmarks.md).
  const auto combine = [&hash](std::size_t value) {
    hash ^= value + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
  };
  for (const auto& operation : operations) {
    combine(static_cast<std::size_t>(operation.kind));
    combine(std::hash<std::string_view>{}(operation.backend));
    combine(std::hash<std::string_view>{}(operation.server));
    switch (operation.kind) {
      case haproxy::CommandKind::kAddr:
        combine(std::hash<std::string_view>{}(operation.address));
        combine(static_cast<std::size_t>(operation.port));
        break;
      case haproxy::CommandKind::kWeight:
        combine(static_cast<std::size_t>(operation.weight));
        break;
      case haproxy::CommandKind::kState:
        combine(static_cast<std::size_t>(operation.state));
        break;
      case haproxy::CommandKind::kHealth:
      case haproxy::CommandKind::kOther:
        break;
    }
  }
  return hash;
}

}  // namespace hsdo::agent
