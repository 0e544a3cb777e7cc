#include "app/set_state.h"

#include <charconv>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/validate.h"
#include "store/seed_record.h"

namespace hsdo {

namespace {

// `text` as a target's Key(): "address" or "address:port" ("[v6]:port"), canonical; nullopt
// when it is neither.
std::optional<std::string> CanonicalKey(std::string_view text) {
  if (auto address = CanonicalIp(text)) return *address;
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int number = 0;
  const auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (ec != std::errc() || ptr != port.data() + port.size() || number < 1 || number > 65535) {
    return std::nullopt;
  }
  auto address = CanonicalIp(host);
  if (!address) return std::nullopt;
  return Target{.address = *address, .port = static_cast<std::uint16_t>(number)}.Key();
}

bool AllDigits(std::string_view text) {
  return !text.empty() && text.size() <= 9 &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// For messages: what the operator typed, unless it could garble a terminal or a log line.
std::string Shown(std::string_view target) {
  return IsValidLabel(target) ? std::string(target) : std::string("(invalid text)");
}

}  // namespace

Result<AdminState> ParseAdminState(std::string_view text) {
  if (text == "ready") return AdminState::kNone;
  if (text == "drain") return AdminState::kDrain;
  if (text == "maint") return AdminState::kMaint;
  return MakeError(ErrorCode::kInvalidArgument, "state must be ready, drain or maint");
}

std::string_view AdminStateName(AdminState state) {
  switch (state) {
    case AdminState::kDrain:
      return "drain";
    case AdminState::kMaint:
      return "maint";
    case AdminState::kNone:
      break;
  }
  return "ready";
}

Result<int> FindFilledSlot(const SlotTable& table, std::string_view target) {
  if (AllDigits(target)) {
    // A name may be all digits too (`name: 12` in a targets file): never guess which is meant.
    for (const Slot& slot : table.slots) {
      if (slot.filled() && slot.target.name == target) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "{} is both a slot number and the name of the target in slot {}: give "
                         "the address of the one you mean",
                         Shown(target), slot.id);
      }
    }
    // "03" got past the check above (a target named "3" in slot 5) and on to slot 3, which
    // the operator may not have meant: slot numbers are written without leading zeros.
    if (target.size() > 1 && target.front() == '0') {
      const std::string_view digits =
          target.substr(std::min(target.find_first_not_of('0'), target.size() - 1));
      return MakeError(ErrorCode::kInvalidArgument,
                       "{} is not a slot number as hsdo writes them (no leading zero) nor a "
                       "target's name: give the slot as {}, or the target's address",
                       Shown(target), digits);
    }
    int id = 0;
    std::from_chars(target.data(), target.data() + target.size(), id);
    if (id < 1 || static_cast<std::size_t>(id) > table.slots.size()) {
      return MakeError(ErrorCode::kInvalidArgument, "there is no slot {} (slots 1-{})", id,
                       table.slots.size());
    }
    if (!table.slots[static_cast<std::size_t>(id - 1)].filled()) {
      return MakeError(ErrorCode::kInvalidArgument, "slot {} is free", id);
    }
    return id;
  }
  const auto key = CanonicalKey(target);
  const auto named = [&](const Slot& slot) {
    return key ? (slot.target.address == *key || slot.target.Key() == *key)
               : slot.target.name == target;
  };
  std::vector<int> matches;
  for (const Slot& slot : table.slots) {
    if (slot.filled() && named(slot)) matches.push_back(slot.id);
  }
  if (matches.empty() && key && !CanonicalIp(target)) {
    // address:port, where the target at that address has no port of its own (it is served on
    // each backend's port): say so rather than that nothing is there.
    std::string_view address(*key);
    address = address.substr(0, address.rfind(':'));
    if (address.starts_with('[')) address = address.substr(1, address.size() - 2);
    for (const Slot& slot : table.slots) {
      if (slot.filled() && !slot.target.port && slot.target.address == address) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "{} names no filled slot: the target at {} (slot {}) has no port of its "
                         "own, it is served on each backend's port; give {}",
                         Shown(target), address, slot.id, address);
      }
    }
  }
  if (matches.empty()) {
    // Above this command's list size (a configuration that differs from the fleet's): said,
    // rather than "nothing there" for a target that takes traffic.
    for (const Slot& slot : table.beyond) {
      if (named(slot)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "{} is in slot {}, above this HAPROXY_BACKEND_SERVERS_LIST_SIZE={}: run "
                         "with the fleet's list size",
                         Shown(target), slot.id, table.slots.size());
      }
    }
    return MakeError(ErrorCode::kInvalidArgument, "{} names no filled slot (by {})", Shown(target),
                     key ? "address" : "name");
  }
  if (matches.size() > 1) {
    return MakeError(ErrorCode::kInvalidArgument, "{} names {} slots ({}): give the slot number{}",
                     Shown(target), matches.size(), fmt::join(matches, ", "),
                     key ? " or address:port" : "");
  }
  return matches.front();
}

Result<SetStateOutcome> SetSlotState(SlotStore& store, std::string_view target, AdminState state,
                                     int attempts) {
  Error last = MakeError(ErrorCode::kConflict, "no attempt made");
  std::string first_key;  // the target found by the first attempt
  for (int attempt = 0; attempt < attempts; ++attempt) {
    auto table = store.ReadTable();
    if (!table) return table.error();
    if (IsChaining(table->generation)) {
      // Written on, this part of a table would be published to every agent as the whole.
      return MakeError(ErrorCode::kUnavailable,
                       "the slot table is a write of a chain, not its last (an orchestrator is "
                       "writing a large change, or stopped half-way; its next cycle completes "
                       "it): nothing written; run it again in a moment");
    }
    if ((table->generation & kDerivedGenerationBit) != 0) {
      // No TableGeneration: the Python HSDO's server writes this table (hsdo's orchestrator
      // always stamps one). The override's write would give the table one, and hsdo agents,
      // which read a stamped table only when its generation moves, would stop following the
      // Python server's writes, which never move it: nodes would disagree on slots.
      return MakeError(ErrorCode::kInvalidArgument,
                       "the slot table has no TableGeneration: the Python HSDO's server writes "
                       "it (or hsdo's orchestrator has not written it since taking it over), "
                       "which neither keeps an override nor moves a generation (hsdo agents "
                       "would then miss its writes): nothing written; use set-state once hsdo's "
                       "orchestrator has written the table");
    }
    auto id = FindFilledSlot(*table, target);
    if (!id) return id.error();
    SetStateOutcome outcome;
    outcome.slot = table->slots[static_cast<std::size_t>(*id - 1)];
    // The write that conflicted may have been the orchestrator refilling the slot (a slot
    // number names whichever target holds it): the override is for the target first found.
    if (attempt == 0) {
      first_key = outcome.slot.target.Key();
    } else if (outcome.slot.target.Key() != first_key) {
      return MakeError(ErrorCode::kConflict,
                       "slot {} changed target while this ran ({} now, {} before): nothing "
                       "written; run it again if it is still meant",
                       *id, outcome.slot.target.Key(), first_key);
    }
    outcome.before = outcome.slot.admin;
    outcome.generation = table->generation;
    if (outcome.slot.admin == state) return outcome;
    outcome.slot.admin = state;
    auto generation = store.WriteSlots(std::span<const Slot>(&outcome.slot, 1), table->overflow,
                                       table->generation);
    if (generation) {
      outcome.written = true;
      outcome.generation = *generation;
      return outcome;
    }
    // Another writer (the orchestrator) moved the table: read it again and retry.
    if (generation.error().code != ErrorCode::kConflict) return generation.error();
    last = generation.error();
  }
  return MakeError(ErrorCode::kConflict, "the table kept changing under {} attempts: {}", attempts,
                   last.message);
}

}  // namespace hsdo
