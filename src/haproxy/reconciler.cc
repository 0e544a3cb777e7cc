#include "haproxy/reconciler.h"

#include <algorithm>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "common/validate.h"

namespace hsdo::haproxy {

// Runs for every slot at each full read of HAProxy's state, as AdmittedKey: concatenated, not
// formatted (fmt parses its format string at run time).
std::string SlotServerName(const BackendConfig& backend, int slot_id) {
  return backend.base_name + std::to_string(slot_id);
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
  auto address = TargetAddress(slot.target.address);
  if (!address) {
    return MakeError(ErrorCode::kInvalidArgument, "address '{}' is not a server's IP literal",
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

bool ValidActive(const BackendConfig& backend, const DesiredSlot& slot) {
  return ValidateActive(backend, slot).ok();
}

namespace {

// Whether HAProxy's `address` is `canonical` (CanonicalIp's form): HAProxy writes an IPv4
// address as CanonicalIp does, so the text alone answers, without parsing it, at nearly every
// slot of a full read.
bool SameAddress(std::string_view address, const std::string& canonical) {
  if (address == canonical) return true;
  const auto parsed = CanonicalIp(address);
  return parsed && *parsed == canonical;
}

// The slot id of a server named <base><id> (the id in canonical decimal), else nullopt.
std::optional<int> SlotIdOfServer(const BackendConfig& backend, std::string_view name) {
  if (!name.starts_with(backend.base_name)) return std::nullopt;
  const std::string_view digits = name.substr(backend.base_name.size());
  if (digits.empty() || digits.size() > 7 || digits.front() == '0') return std::nullopt;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoi(std::string(digits));
}

// A template server above the list size, not in maint: taken out by TakeOutServersAbove. Only
// the template's: a server written by hand after it (`server srv99 ... backup`) has the next id,
// not its number.
bool TakenOutAbove(const BackendConfig& backend, const ReconcileOptions& options,
                   const ServerState& server) {
  if (!options.take_out_above || server.admin == AdminState::kMaint) return false;
  const auto id = SlotIdOfServer(backend, server.name);
  if (!id || *id <= *options.take_out_above || server.id != *id ||
      !IsValidHaproxyName(server.name)) {
    return false;
  }
  if (!std::binary_search(options.filled_above.begin(), options.filled_above.end(), *id)) {
    return true;
  }
  const auto record = options.above_targets.find(*id);
  if (record == options.above_targets.end()) return false;  // unreadable: left as it is
  // A record without a port: at any port (this node's HAPROXY_BACKEND_SERVER_PORT may be another
  // than when it applied it; below the size such a move is made a few servers at a time).
  const auto canonical = CanonicalIp(record->second.address);
  return !canonical || !SameAddress(server.address, *canonical) ||
         (record->second.port && server.port != *record->second.port);
}

void TakeOutServersAbove(const BackendConfig& backend, const ReconcileOptions& options,
                         std::span<const ServerState> actual, BackendDiff& diff) {
  for (const auto& server : actual) {
    if (!TakenOutAbove(backend, options, server)) continue;
    diff.operations.push_back(
        Operation::SetState(backend.name, server.name, server.id, AdminState::kMaint));
  }
}

// The slots whose server is at its target's address but at another port than this backend's,
// for a target without a port of its own (an Auto Scaling group's): the agent's
// HAPROXY_BACKEND_SERVER_PORT changed, to a port that may be a typo. The servers that serve
// move a quarter at a time (at least one); the others keep the port they are at until the ones
// moved before pass their checks at the new port. Those that do not serve (DOWN by their
// checks) count in the quarter until a server serves at the new port: moved, they would fail
// their checks at a mistyped port for good, and servers going DOWN for a moment must not
// spread the typo.
// Only servers with `check`, which the gating makes wait for a passing check. (A target
// replaced in its slot is not held: its old instance may be on its way out.) Targets without a
// port, and targets whose record had none (their server at the backend's port).
std::unordered_set<int> HeldPortMoves(
    const BackendConfig& backend, std::span<const DesiredSlot> desired,
    const std::unordered_map<std::string_view, const ServerState*>& by_name,
    const StagingSet* unconfirmed_stagings) {
  int serving = 0;      // servers that serve, or are given their weight by this diff, either port
  int moving_now = 0;   // at the backend's port, not serving: staged, or DOWN there
  bool proven = false;  // a server serves at the backend's port: the port answers
  std::vector<int> moving;  // serving at another port than the backend's
  // At another port, not serving: how long since each last changed state, and its slot.
  std::vector<std::pair<int, int>> down_there;
  for (const auto& slot : desired) {
    if (!slot.active || slot.state != AdminState::kReady) continue;
    const auto found = by_name.find(SlotServerName(backend, slot.id));
    if (found == by_name.end() || !found->second->has_check()) continue;
    const ServerState& server = *found->second;
    // A target with a port of its own moves only where its record took it in place: it had
    // none (the Python HSDO's), and its server is at the backend's port (PlanSlots gives such a
    // record the one target at its address with a port; switching from the Python server in
    // Consul mode, every slot at once). Elsewhere the port is the table's, no typo of the agent's.
    if (slot.target.port && server.port != backend.port) continue;
    const auto target = ValidateActive(backend, slot);
    if (!target || target->weight <= 0 || !SameAddress(server.address, target->address)) {
      continue;
    }
    if (server.admin == AdminState::kMaint) {
      // At its address in maint: a move whose batch was cut after its `state maint` (review:
      // left out of the count, it let the next cycle move the other servers too). Under way.
      ++moving_now;
      continue;
    }
    if (server.admin != AdminState::kReady) continue;
    const bool other_port = server.port != target->port;
    if (!other_port && server.weight == 0 && unconfirmed_stagings != nullptr &&
        !unconfirmed_stagings->empty() &&
        unconfirmed_stagings->contains(StagingKey(backend.name, server.name))) {
      ++moving_now;  // UP on its former port's check, maybe: under way, and proves nothing
      continue;
    }
    if (server.weight > 0 && server.up()) {
      ++serving;
      if (other_port) moving.push_back(slot.id);
    } else if (other_port) {
      down_there.emplace_back(server.since_change, slot.id);
    } else if (server.weight == 0 && server.check_passed()) {
      ++serving;  // staged at the new port (or a new target), given its weight by this diff
    } else {
      ++moving_now;  // staged and not passed yet, or DOWN at the new port: under way
    }
    proven |= !other_port && server.up() && (server.weight > 0 || server.check_passed());
  }
  const int quarter = std::max(1, (serving + moving_now) / 4);
  const auto allowed = static_cast<std::size_t>(std::max(0, quarter - moving_now));
  // Until a server serves at the new port, the ones DOWN at the old port share the quarter, and
  // go first (they serve nothing: the cheapest probes, and the first to pass where the app has
  // moved to the new port already); all DOWN at once (a shared dependency failing every check)
  // then sends no more than the quarter to a port that may be a typo. Once one serves there,
  // they all go.
  // Those that went DOWN last go first: the likeliest to answer at the new port (an app moved
  // there), where one DOWN long before (a dead instance) would fail there for good and hold the
  // move for ever (review: every node's backend stayed empty).
  std::vector<int> order;
  if (!proven) {
    std::stable_sort(down_there.begin(), down_there.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [since, id] : down_there) order.push_back(id);
  }
  order.insert(order.end(), moving.begin(), moving.end());
  std::unordered_set<int> held;
  if (order.size() > allowed) {
    held.insert(order.begin() + static_cast<std::ptrdiff_t>(allowed), order.end());
  }
  return held;
}

}  // namespace

std::string StagingKey(std::string_view backend, std::string_view server) {
  std::string key;
  key.reserve(backend.size() + server.size() + 1);
  return key.append(backend).append(1, '/').append(server);
}

std::string AdmittedKey(std::string_view backend, std::string_view server, std::string_view address,
                        int port, std::string_view name) {
  const std::string port_text = std::to_string(port);
  std::string key;
  key.reserve(backend.size() + server.size() + address.size() + port_text.size() + name.size() + 4);
  key.append(backend).append(1, '/').append(server).append(1, ' ').append(address);
  return key.append(1, ':').append(port_text).append(1, '|').append(name);
}

Result<BackendDiff> Reconcile(const BackendConfig& backend, std::span<const DesiredSlot> desired,
                              std::span<const ServerState> actual,
                              const ReconcileOptions& options) {
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

  // Gating never empties a backend: a new server waits for its check only while another server
  // of the backend serves (ready, weighted, UP) and goes on serving after this diff. After
  // HAProxy and the agent both start afresh without a state file, every slot gets its weight at
  // once rather than none of them; and a slot filled in the same diff that frees, drains,
  // re-addresses or takes out (above the list size) the servers that served is not gated
  // either.
  const auto serves_now = [](const ServerState& server) {
    return server.admin == AdminState::kReady && server.weight > 0 && server.up();
  };
  // Counted once, and only when a slot may be gated (not in a cycle that changes nothing).
  const auto held = options.admission_gating
                        ? HeldPortMoves(backend, desired, by_name, options.unconfirmed_stagings)
                        : std::unordered_set<int>();
  std::unordered_set<std::string_view> stop_serving;  // serve now, but not after this diff
  std::optional<std::ptrdiff_t> serving_servers;
  const auto serves = [&](const ServerState& server) {
    return serves_now(server) && !stop_serving.contains(server.name);
  };
  const auto others_serve = [&](const ServerState& server) {
    if (!serving_servers) {
      for (const auto& slot : desired) {
        const auto found = by_name.find(SlotServerName(backend, slot.id));
        if (found == by_name.end() || !serves_now(*found->second)) continue;
        bool keeps = held.contains(slot.id);
        if (!keeps && slot.active && slot.state == AdminState::kReady) {
          const auto target = ValidateActive(backend, slot);
          keeps = target && target->weight > 0 &&
                  SameAddress(found->second->address, target->address) &&
                  found->second->port == target->port;
        }
        if (!keeps) stop_serving.insert(found->first);
      }
      // Servers above the list size are taken out by this diff too.
      for (const auto& other : actual) {
        if (TakenOutAbove(backend, options, other)) stop_serving.insert(other.name);
      }
      serving_servers = std::count_if(actual.begin(), actual.end(), serves);
      // And the slots this node admitted that this diff takes out of maint (`state ready` is
      // UP at once, before any check): after a reload without a state file nothing serves
      // yet, and a slot still waiting for its check was given its weight unchecked (review: 13
      // of 60 requests failed on HAProxy 2.6). Not a server ready but DOWN by its checks.
      for (const auto& slot : desired) {
        if (!slot.active || slot.state != AdminState::kReady || held.contains(slot.id) ||
            options.admitted == nullptr || options.admitted->empty()) {
          continue;
        }
        const auto found = by_name.find(SlotServerName(backend, slot.id));
        if (found == by_name.end() || found->second->admin != AdminState::kMaint) continue;
        const auto target = ValidateActive(backend, slot);
        if (target && target->weight > 0 &&
            !(options.static_weights && found->second->initial_weight == 0) &&
            options.admitted->contains(AdmittedKey(backend.name, found->first, target->address,
                                                   target->port, slot.target.name))) {
          ++*serving_servers;
        }
      }
    }
    return *serving_servers - (serves(server) ? 1 : 0) > 0;
  };

  BackendDiff diff;
  diff.admitted.reserve(desired.size());
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
    // Consistent hashing places a server by its id: a server whose id is not its slot's (after
    // a reload with a server added before the template) hashes unlike the other nodes'.
    if (server.id != slot.id) diff.wrong_ids.push_back(slot.id);
    if (server.has_agent_check()) diff.agent_checked_slots.push_back(slot.id);
    if (slot.active && (!server.has_check() || !server.check_enabled() || server.check_elsewhere)) {
      diff.every_active_checked = false;
    }
    auto& ops = diff.operations;
    auto set_state = [&](AdminState state) {
      ops.push_back(Operation::SetState(backend.name, server_name, slot.id, state));
    };
    auto set_weight = [&](int weight) {
      ops.push_back(Operation::SetWeight(backend.name, server_name, slot.id, weight));
    };

    std::optional<ValidTarget> target;
    if (slot.active) {
      auto valid = ValidateActive(backend, slot);
      if (valid) {
        target = std::move(*valid);
        if (options.static_weights && target->weight > 0) {
          target->weight = server.initial_weight;
          if (server.initial_weight == 0) diff.unweighted_slots.push_back(slot.id);
        }
      } else {
        diff.invalid_slots.push_back(
            {.backend = backend.name, .slot_id = slot.id, .reason = valid.error().message});
      }
    }
    if (!target) {
      if (server.admin != AdminState::kMaint) set_state(AdminState::kMaint);
      continue;
    }
    const bool address_differs =
        !SameAddress(server.address, target->address) || server.port != target->port;
    auto set_address = [&] {
      ops.push_back(
          Operation::SetAddr(backend.name, server_name, slot.id, target->address, target->port));
    };
    std::string key =
        AdmittedKey(backend.name, server_name, target->address, target->port, slot.target.name);
    const bool admitted = options.admitted != nullptr && options.admitted->contains(key);
    const bool unproven =
        admitted && options.unproven != nullptr && options.unproven->contains(key);

    if (slot.state != AdminState::kReady) {
      // Neither drain nor maint takes new connections: the state first, then the values.
      if (server.admin != slot.state) set_state(slot.state);
      if (address_differs) set_address();
      if (server.weight != target->weight) set_weight(target->weight);
      if (unproven) diff.unproven.insert(key);  // still so once ready again
      if (admitted) diff.admitted.insert(std::move(key));
      continue;
    }
    if (held.contains(slot.id)) {
      // Serves on at its port until the servers moved before pass their checks; its weight
      // follows the table all the same (not a weight 0 still waiting for a check).
      diff.held_slots.push_back(slot.id);
      if (server.weight > 0 && server.weight != target->weight) set_weight(target->weight);
      std::string serving_key =
          AdmittedKey(backend.name, server_name, server.address, server.port, slot.target.name);
      if (options.admitted != nullptr && options.admitted->contains(serving_key)) {
        if (options.unproven != nullptr && options.unproven->contains(serving_key)) {
          diff.unproven.insert(serving_key);
        }
        diff.admitted.insert(std::move(serving_key));
      }
      continue;
    }
    // (A target at weight 0 too: it is not in service yet, but it would be admitted without a
    // check, and take traffic at its next weight unchecked.)
    const bool gated =
        options.admission_gating && server.has_check() && !admitted && others_serve(server);
    const bool serving = !address_differs && server.admin == AdminState::kReady;
    if (!gated || (serving && server.weight > 0)) {
      // Given its weight with no passing check at this address yet because nothing else served
      // (a node that joins the fleet: its HAProxy and agent both new): it waits for its first
      // check all the same, at its weight, and the node report says so (review: new nodes
      // listed nothing, and a target that never answered ramped to its full weight once they
      // were half of the fleet). Not a slot found serving at its weight by an agent that
      // restarted (review of a44877c: one admitted before, failing now, held its ramp).
      // Put in service on a passing result it did not earn here and now: one of another
      // address (HAProxy keeps it across `set server addr`), or one from before maint (checks
      // pause there, and `state ready` is UP at once on it). Review of ef8f711: addresses where
      // nothing listened, weighted while nothing else served, came out of the waiting list so;
      // review of 527622e: so did a dead target back in the slot it left. Not a server that
      // never passed a check, as every one at a node's start (review of 851ae37).
      if (server.check_result == ServerState::kCheckPassed &&
          (address_differs || server.admin == AdminState::kMaint)) {
        diff.inherited.insert(key);
      }
      const bool inherited = diff.inherited.contains(key) ||
                             (options.inherited != nullptr && options.inherited->contains(key));
      if (options.admission_gating && server.has_check() && (admitted ? unproven : !gated) &&
          (address_differs || !server.check_passed())) {
        diff.unproven_slots.push_back(slot.id);
        diff.unproven.insert(key);
      } else if (address_differs || !server.check_passed() || inherited) {
        // Not vouched for: DOWN, or UP before any check passed (`state ready`), or UP on an
        // inherited result (for a while: ReconcileOptions::inherited).
        diff.unvouched_slots.push_back(slot.id);
      }
      if (address_differs) set_address();
      if (server.weight != target->weight) set_weight(target->weight);
      if (server.admin != AdminState::kReady) set_state(AdminState::kReady);
      diff.admitted.insert(std::move(key));
      continue;
    }
    if (serving) {
      // Staged at weight 0: HAProxy's checks have brought it UP since its `health down`,
      // unless that `health down` may not have run.
      const bool unconfirmed =
          options.unconfirmed_stagings != nullptr && !options.unconfirmed_stagings->empty() &&
          options.unconfirmed_stagings->contains(StagingKey(backend.name, server_name));
      if (server.check_passed() && !unconfirmed) {
        if (server.weight != target->weight) set_weight(target->weight);
        ++diff.admissions;
        diff.admitted.insert(std::move(key));
      } else {
        if (unconfirmed) {
          ops.push_back(Operation::SetHealthDown(backend.name, server_name, slot.id));
        }
        diff.pending_slots.push_back(slot.id);
      }
      continue;
    }
    // Stage the admission: out of service if it served another address, then the address,
    // weight 0, ready (which makes HAProxy call it UP at once) and `health down`, so that only
    // passing checks at this address bring it UP again.
    if (address_differs && server.admin != AdminState::kMaint) set_state(AdminState::kMaint);
    if (address_differs) set_address();
    if (server.weight != 0) set_weight(0);
    set_state(AdminState::kReady);
    ops.push_back(Operation::SetHealthDown(backend.name, server_name, slot.id));
    diff.pending_slots.push_back(slot.id);
  }
  if (options.take_out_above) TakeOutServersAbove(backend, options, actual, diff);
  return diff;
}

}  // namespace hsdo::haproxy
