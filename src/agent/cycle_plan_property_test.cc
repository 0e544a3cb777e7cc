// A randomized model test of the agent's planning (PlanCycle, applied as the agent applies it,
// through haproxy::ApplyAddressesFirst) against a small model of HAProxy 2.6's runtime API
// (HAPROXY-FACTS.md). Each case: a random slot table (1-64 slots, enabled/draining/free,
// overrides, AZ groups, ports, invalid values), random settings (one backend, two sharing a
// port, two of their own ports, the AZ limiter's primary/fallback split), and three starting
// HAProxy states (fresh after a reload, random leftovers, a hand edit after convergence).
// Properties:
//  P1 after convergence (checks passing between cycles) every slot matches the table;
//  P2 a converged HAProxy gets no command (and convergence happens within a few cycles);
//  P3 the three starts end identical;
//  P4 every command is well formed and carries only the table's validated values;
//  P5 a slot the table keeps enabled and that already serves its target is never put in maint,
//     drain, weight 0, health down, or another address by any command.
// HSDO_FUZZ_CASES=N (default 300, about 2 s), HSDO_FUZZ_FIRST=S (the cases' first seed, default
// 20240601), HSDO_FUZZ_SEED=S (run that one case only); a failing case is printed with its seed and
// shrunk. Written in a review (2026-12-05) that found with it an invalid slot claiming its
// address's one server (PlanCycle.ASlotWithInvalidValuesClaimsNoServerOfItsAddress).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <random>
#include <regex>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "agent/cycle_plan.h"
#include "agent/test_layouts.h"
#include "common/validate.h"
#include "haproxy/fake_haproxy.h"
#include "haproxy/runtime_api.h"

namespace hsdo::agent {
namespace {

using haproxy::AdminState;
using haproxy::BackendRole;
using haproxy::CommandKind;
using haproxy::Operation;

// ---- the model of one HAProxy ----------------------------------------------------------------

struct MServer {
  int id = 0;
  std::string name;
  std::string addr = "127.0.0.2";
  int port = 80;
  int op = 0;       // srv_op_state
  int admin = 5;    // srv_admin_state bits
  int weight = 1;   // uweight
  int iweight = 1;  // iweight
  int check_result = 0;
  int check_health = 0;
  bool check = false;
  bool operator==(const MServer&) const = default;
};

bool InMaint(const MServer& s) { return (s.admin & 0x23) != 0; }
bool InDrain(const MServer& s) { return !InMaint(s) && (s.admin & 0x18) != 0; }
AdminState Admin(const MServer& s) {
  return InMaint(s) ? AdminState::kMaint : InDrain(s) ? AdminState::kDrain : AdminState::kReady;
}
bool Up(const MServer& s) { return s.op == 1 || s.op == 2; }
bool Serves(const MServer& s) { return Admin(s) == AdminState::kReady && Up(s) && s.weight > 0; }

std::string Describe(const MServer& s) {
  return fmt::format("{}(id {}) {}:{} {} admin={} op={} w={} chk={} res={}", s.name, s.id, s.addr,
                     s.port, haproxy::ToString(Admin(s)), s.admin, s.op, s.weight, s.check,
                     s.check_result);
}

class Model final : public haproxy::RuntimeApi {
 public:
  struct Backend {
    int be_id = 2;
    std::vector<MServer> servers;
  };
  std::map<std::string, Backend> backends;
  // Called before each operation is applied, with the server it targets.
  std::function<void(const Operation&, const MServer&)> before_op;
  std::vector<std::string> sent;
  std::set<std::string> dead;    // addresses whose checks fail
  std::optional<int> cut_after;  // the next Apply breaks after this many operations

  Result<std::vector<std::string>> Execute(const std::vector<std::string>&) override {
    return MakeError(ErrorCode::kUnavailable, "the model answers Apply only");
  }
  Result<std::vector<std::string>> Apply(std::span<const Operation> operations) override {
    std::vector<std::string> replies;
    for (const auto& op : operations) {
      if (cut_after && (*cut_after)-- == 0) {
        cut_after.reset();
        return MakeError(ErrorCode::kUnavailable, "model: connection closed mid-batch");
      }
      sent.push_back(haproxy::Render(op));
      replies.push_back(ApplyOne(op));
    }
    return replies;
  }

  MServer* Find(const std::string& backend, const std::string& name) {
    auto found = backends.find(backend);
    if (found == backends.end()) return nullptr;
    for (auto& s : found->second.servers) {
      if (s.name == name) return &s;
    }
    return nullptr;
  }

  std::string ApplyOne(const Operation& op) {
    MServer* s = Find(op.backend, op.server);
    if (s == nullptr) return backends.contains(op.backend) ? "No such server." : "No such backend.";
    if (before_op) before_op(op, *s);
    switch (op.kind) {
      case CommandKind::kAddr: {
        unsigned char buf[16];
        if (inet_pton(AF_INET, op.address.c_str(), buf) != 1 &&
            inet_pton(AF_INET6, op.address.c_str(), buf) != 1) {
          return fmt::format("Invalid addr '{}' by 'stats socket command'", op.address);
        }
        if (op.port < 0 || op.port > 65535) return "Invalid port";
        std::string reply = op.address == s->addr
                                ? "no need to change the addr"
                                : fmt::format("IP changed from '{}' to '{}'", s->addr, op.address);
        reply += op.port == s->port
                     ? ", no need to change the port"
                     : fmt::format(", port changed from '{}' to '{}'", s->port, op.port);
        s->addr = op.address;
        s->port = op.port;
        return reply + " by 'stats socket command'";
      }
      case CommandKind::kWeight:
        if (op.weight < 0 || op.weight > 256) {
          return "Absolute weight can only be between 0 and 256 inclusive.";
        }
        s->weight = op.weight;
        return "";
      case CommandKind::kState: {
        const bool was_maint = InMaint(*s);
        if (op.state == AdminState::kReady) s->admin &= ~(0x01 | 0x08);
        if (op.state == AdminState::kMaint) s->admin = (s->admin | 0x01) & ~0x08;
        if (op.state == AdminState::kDrain) s->admin = (s->admin | 0x08) & ~0x01;
        if (InMaint(*s)) {
          s->op = 0;
        } else if (was_maint) {  // out of maint: UP at once, health at rise, last result kept
          s->op = 2;
          if (s->check) s->check_health = 2;
        }
        return "";
      }
      case CommandKind::kHealth:
        s->op = 0;
        s->check_health = 0;
        return "";
      case CommandKind::kOther:
        break;
    }
    return "Unknown command";
  }

  // HAProxy's checks run: every address answers.
  void PassChecks() {
    for (auto& [name, backend] : backends) {
      for (auto& s : backend.servers) {
        if (InMaint(s)) continue;
        s.op = 2;
        if (s.check && dead.contains(s.addr)) {
          s.op = 0;
          s.check_result = 2;
          s.check_health = 0;
        } else if (s.check) {
          s.check_result = 3;
          s.check_health = 3;
        }
      }
    }
  }

  std::string StateText(const std::string& name) const {
    const Backend& backend = backends.at(name);
    std::string out(haproxy::kServersStateHeader);
    for (const auto& s : backend.servers) {
      const int check_state = (s.check ? 0x06 : 0) | (InMaint(s) ? 0x08 : 0);
      out += fmt::format("\n{} {} {} {} {} {} {} {} {} 0 1 {} {} {} 0 0 0 - {} - 0 0 - - 0",
                         backend.be_id, name, s.id, s.name, s.addr, s.op, s.admin, s.weight,
                         s.iweight, s.check_result, s.check_health, check_state, s.port);
    }
    return out;
  }
};

// ---- a case ------------------------------------------------------------------------------------

using test_layouts::Layout;
using test_layouts::LayoutName;
using test_layouts::SettingsFor;

struct HandEdit {
  std::string backend;
  int index = 0;  // into the backend's servers
  int kind = 0;   // 0 state maint, 1 state drain, 2 state ready, 3 weight, 4 addr
  int weight = 0;
  std::string addr;
  int port = 80;
};

struct Case {
  std::uint64_t seed = 0;
  Layout layout = Layout::kOne;
  bool gating = true;
  std::vector<bool> check;  // per backend
  std::vector<int> counts;  // servers per backend
  SlotTable table;
  std::vector<std::vector<MServer>> leftovers;  // per backend
  std::vector<HandEdit> edits;
  std::set<std::string> dead;  // addresses whose checks fail
  int cut = -1;                // the first cycle's batch breaks after this many operations
};

const std::vector<std::string> kValid = {"10.0.0.1", "10.0.0.2",  "10.0.0.3",    "10.0.0.4",
                                         "10.0.0.5", "10.0.0.6",  "10.0.0.7",    "10.0.0.8",
                                         "10.0.1.9", "10.0.1.10", "2001:db8::1", "2001:db8::2"};
const std::vector<std::string> kInvalid = {"10.0.0.1;shutdown sessions",
                                           "1.2.3.4.5",
                                           "",
                                           "localhost",
                                           "0.0.0.0",
                                           "169.254.169.254",
                                           "10.0.0.1 port 1",
                                           "fe80::1",
                                           "ff02::1",
                                           "::",
                                           "10.0.0.1\n",
                                           "999.1.1.1",
                                           "255.255.255.255",
                                           "224.0.0.1"};

Case Generate(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  Case c;
  c.seed = seed;
  c.layout = static_cast<Layout>(pick(test_layouts::kLayouts));
  c.gating = chance(0.7);
  if (chance(0.3)) {
    c.dead.insert(kValid[static_cast<std::size_t>(pick(static_cast<int>(kValid.size())))]);
  }
  if (chance(0.3)) c.cut = pick(12);
  const bool raw_invalid = chance(0.4);
  const int size = 1 + (chance(0.5) ? pick(8) : pick(64));
  c.table = SlotTable::Empty(size);
  c.table.generation = 7;
  for (int id = 1; id <= size; ++id) {
    Slot& slot = c.table.slots[static_cast<std::size_t>(id - 1)];
    const int r = pick(100);
    if (r < 35) {
      if (chance(0.08)) c.table.invalid_ids.push_back(id);  // a record the codec refused
      continue;
    }
    slot.status = r < 85 ? SlotStatus::kEnabled : SlotStatus::kDraining;
    slot.target.address = kValid[static_cast<std::size_t>(pick(static_cast<int>(kValid.size())))];
    if (raw_invalid && chance(0.15)) {
      slot.target.address =
          kInvalid[static_cast<std::size_t>(pick(static_cast<int>(kInvalid.size())))];
    }
    if (chance(0.3)) {
      const std::uint16_t ports[] = {8080, 9000, 80, 443};
      slot.target.port = ports[pick(4)];
      if (raw_invalid && chance(0.1)) slot.target.port = 0;
    }
    slot.weight = chance(0.1) ? 0 : 1 + pick(256);
    if (raw_invalid && chance(0.1)) {
      const int bad[] = {-1, 257, 1000, std::numeric_limits<int>::min()};
      slot.weight = bad[pick(4)];
    }
    slot.target.name = chance(0.9) ? fmt::format("t{}", id) : std::string("we;rd name\n");
    const char* groups[] = {"local", "other", ""};
    slot.target.group = groups[pick(3)];
    const int a = pick(100);
    slot.admin = a < 85   ? hsdo::AdminState::kNone
                 : a < 92 ? hsdo::AdminState::kDrain
                          : hsdo::AdminState::kMaint;
  }
  const AgentSettings settings = SettingsFor(c.layout, c.gating, size);
  for (std::size_t b = 0; b < settings.backends.size(); ++b) {
    c.check.push_back(chance(0.6));
    int count = size;
    if (chance(0.1)) count = std::max(1, size - 1 - pick(3));  // servers missing
    if (chance(0.15)) count = size + 1 + pick(4);              // a larger template
    c.counts.push_back(count);
    const auto& config = settings.backends[b].config;
    std::vector<MServer> servers;
    for (int id = 1; id <= count; ++id) {
      MServer s{.id = id,
                .name = config.base_name + std::to_string(id),
                .port = config.port,
                .check = c.check[b]};
      const Slot* slot = id <= size ? &c.table.slots[static_cast<std::size_t>(id - 1)] : nullptr;
      if (slot != nullptr && slot->filled() && chance(0.5)) {
        s.addr = CanonicalIp(slot->target.address).value_or("10.0.0.1");
      } else {
        const int k = pick(static_cast<int>(kValid.size()) + 1);
        s.addr = k == static_cast<int>(kValid.size()) ? "127.0.0.2"
                                                      : kValid[static_cast<std::size_t>(k)];
      }
      if (slot != nullptr && slot->target.port && *slot->target.port > 0 && chance(0.5)) {
        s.port = *slot->target.port;
      } else if (chance(0.2)) {
        s.port = chance(0.5) ? 8080 : 81;
      }
      s.weight = slot != nullptr && chance(0.4) ? std::clamp(slot->weight, 0, 256) : pick(257);
      const int admins[] = {0, 1, 4, 5, 8, 12};
      s.admin = admins[pick(6)];
      s.op = InMaint(s) ? 0 : (c.check[b] ? (chance(0.7) ? 2 : 0) : 2);
      s.check_result = c.check[b] ? (chance(0.6) ? 3 : pick(3)) : 0;
      if (s.op == 2 && c.check[b]) s.check_health = 3;
      servers.push_back(std::move(s));
    }
    c.leftovers.push_back(std::move(servers));
    for (int e = pick(4); e > 0; --e) {
      HandEdit edit{.backend = config.name, .index = pick(count), .kind = pick(5)};
      edit.weight = pick(257);
      edit.addr = kValid[static_cast<std::size_t>(pick(static_cast<int>(kValid.size())))];
      edit.port = chance(0.7) ? config.port : 8081;
      c.edits.push_back(std::move(edit));
    }
  }
  return c;
}

std::string Print(const Case& c) {
  std::string out = fmt::format("seed {}: {}, gating {}, list size {}\n", c.seed,
                                LayoutName(c.layout), c.gating, c.table.slots.size());
  for (const auto& slot : c.table.slots) {
    const bool invalid = std::find(c.table.invalid_ids.begin(), c.table.invalid_ids.end(),
                                   slot.id) != c.table.invalid_ids.end();
    if (!slot.filled()) {
      if (invalid) out += fmt::format("  slot {}: invalid record (read free)\n", slot.id);
      continue;
    }
    out += fmt::format(
        "  slot {}: {} {}{} w={} group='{}' name='{}'{}\n", slot.id,
        slot.enabled() ? "enabled" : "draining", haproxy::Printable(slot.target.address),
        slot.target.port ? fmt::format(":{}", *slot.target.port) : "", slot.weight,
        slot.target.group, haproxy::Printable(slot.target.name),
        slot.admin == hsdo::AdminState::kNone
            ? ""
            : (slot.admin == hsdo::AdminState::kDrain ? " override=drain" : " override=maint"));
  }
  const AgentSettings settings = SettingsFor(c.layout, c.gating, 1);
  for (std::size_t b = 0; b < c.leftovers.size(); ++b) {
    out += fmt::format("  backend {} ({} servers, check {}) leftovers:\n",
                       settings.backends[b].config.name, c.counts[b], c.check[b]);
    for (const auto& s : c.leftovers[b]) out += "    " + Describe(s) + "\n";
  }
  for (const auto& d : c.dead) out += fmt::format("  checks fail at {}\n", d);
  if (c.cut >= 0) out += fmt::format("  first batch of each start cut after {} commands\n", c.cut);
  for (const auto& e : c.edits) {
    out += fmt::format("  hand edit {}[{}] kind {} w={} addr {}:{}\n", e.backend, e.index, e.kind,
                       e.weight, e.addr, e.port);
  }
  return out;
}

// ---- the oracle --------------------------------------------------------------------------------

struct Want {
  bool check = false;  // false: left as it is (invalid record, missing)
  bool active = false;
  std::string addr;
  int port = 0;
  int weight = 0;
  AdminState state = AdminState::kMaint;
};

// What the table says one backend's slot should be, from the README alone.
std::vector<Want> Oracle(const SlotTable& table, const AgentSettings& settings, std::size_t b) {
  const auto& backend = settings.backends[b];
  std::vector<Want> wants(table.slots.size());
  // Own-port backends: one server per address, from the lowest valid slot the table has ready,
  // else the lowest valid one.
  std::map<std::string, int> serving;
  for (const bool ready : {true, false}) {
    for (const auto& slot : table.slots) {
      const auto address = TargetAddress(slot.target.address);
      const bool valid =
          address && slot.weight >= 0 && slot.weight <= 256 && backend.config.port >= 1;
      if (slot.filled() && valid &&
          haproxy::BelongsIn(slot.target, backend.role, settings.az_limiter) &&
          (haproxy::DesiredState(slot) == AdminState::kReady) == ready) {
        serving.try_emplace(*address, slot.id);
      }
    }
  }
  for (const auto& slot : table.slots) {
    Want& want = wants[static_cast<std::size_t>(slot.id - 1)];
    want.check = true;
    const bool invalid_record = std::find(table.invalid_ids.begin(), table.invalid_ids.end(),
                                          slot.id) != table.invalid_ids.end();
    if (!slot.filled() && invalid_record) {
      want.check = false;
      continue;
    }
    if (!slot.filled() || !haproxy::BelongsIn(slot.target, backend.role, settings.az_limiter)) {
      continue;
    }
    const auto address = TargetAddress(slot.target.address);
    const int port =
        backend.own_port ? backend.config.port : slot.target.port.value_or(backend.config.port);
    const bool valid =
        address && port >= 1 && port <= 65535 && slot.weight >= 0 && slot.weight <= 256;
    // Only a valid slot takes its address's one server (invariant 5: an invalid value never
    // disables a valid slot).
    if (backend.own_port && valid && serving.at(*address) != slot.id) continue;
    if (!valid) continue;
    want.active = true;
    want.addr = *address;
    want.port = port;
    want.weight = slot.weight;
    want.state = haproxy::DesiredState(slot);
  }
  return wants;
}

// ---- running a case ----------------------------------------------------------------------------

struct Memory {  // what the agent keeps between cycles (Agent::RunCycle)
  haproxy::AdmittedSet admitted, unproven, inherited;
  haproxy::StagingSet unconfirmed;
  bool looked = false;
};

const std::regex kCommand(
    R"(^set server [A-Za-z0-9_.:-]{1,64}/[A-Za-z0-9_.:-]{1,64} )"
    R"((addr ([0-9a-f.:]+) port ([0-9]+)|weight ([0-9]+)|state (ready|drain|maint)|health down)$)");

struct Run {
  Model model;
  Memory memory;
  std::vector<std::string> failures;
  int rounds = 0;
};

// One agent cycle: read, plan, check, apply, remember.
bool Cycle(const Case& c, const AgentSettings& settings, Run& run, const std::string& label) {
  std::vector<Result<std::vector<haproxy::ServerState>>> servers;
  for (const auto& backend : settings.backends) {
    servers.push_back(haproxy::ParseServersState(run.model.StateText(backend.config.name)));
    if (!servers.back()) {
      run.failures.push_back(label + ": parse: " + servers.back().error().message);
      return false;
    }
  }
  if (!run.memory.looked) {  // Agent::NoteStagingsLeftBefore
    run.memory.looked = true;
    for (std::size_t b = 0; b < servers.size(); ++b) {
      for (const auto& slot : c.table.slots) {
        if (!slot.enabled()) continue;
        for (const auto& s : *servers[b]) {
          if (s.name == haproxy::SlotServerName(settings.backends[b].config, slot.id) &&
              s.admin == AdminState::kReady && s.weight == 0 && s.has_check()) {
            run.memory.unconfirmed.insert(
                haproxy::StagingKey(settings.backends[b].config.name, s.name));
          }
        }
      }
    }
  }
  CyclePlan plan = PlanCycle(c.table, settings, servers, run.memory.admitted, {},
                             run.memory.unconfirmed, run.memory.unproven, run.memory.inherited);
  if (plan.operations.empty()) return false;

  // P5: the servers that serve their slot's target as the table says before this cycle.
  std::map<std::pair<std::string, std::string>, std::string> protected_servers;
  std::map<std::string, std::vector<Want>> wants;
  for (std::size_t b = 0; b < settings.backends.size(); ++b) {
    const auto& config = settings.backends[b].config;
    wants[config.name] = Oracle(c.table, settings, b);
    const auto& w = wants[config.name];
    for (const auto& s : run.model.backends.at(config.name).servers) {
      if (s.id < 1 || s.id > static_cast<int>(w.size())) continue;
      const Want& want = w[static_cast<std::size_t>(s.id - 1)];
      const Slot& slot = c.table.slots[static_cast<std::size_t>(s.id - 1)];
      if (want.check && want.active && slot.enabled() && want.state == AdminState::kReady &&
          want.weight > 0 && Serves(s) && s.addr == want.addr && s.port == want.port &&
          (!s.check || s.check_result == 3)) {
        protected_servers[{config.name, s.name}] = Describe(s);
      }
    }
  }
  run.model.before_op = [&](const Operation& op, const MServer& s) {
    const std::string text = haproxy::Render(op);
    // P4: well formed, and only the table's values.
    std::smatch m;
    if (!std::regex_match(text, m, kCommand)) {
      run.failures.push_back(label + ": P4 malformed command: " + haproxy::Printable(text, 200));
      return;
    }
    const auto& w = wants[op.backend];
    const Want* want = op.slot_id >= 1 && op.slot_id <= static_cast<int>(w.size())
                           ? &w[static_cast<std::size_t>(op.slot_id - 1)]
                           : nullptr;
    if (op.kind == CommandKind::kAddr &&
        (want == nullptr || !want->active || op.address != want->addr || op.port != want->port)) {
      run.failures.push_back(label + ": P4 address not the table's (validated): " + text);
    }
    if (op.kind == CommandKind::kWeight && op.weight != 0 &&
        (want == nullptr || !want->active || op.weight != want->weight)) {
      run.failures.push_back(label + ": P4 weight not the table's: " + text);
    }
    if (op.kind == CommandKind::kState && op.state != AdminState::kMaint &&
        (want == nullptr || !want->active)) {
      run.failures.push_back(label + ": P4 a slot the table does not fill is set " + text);
    }
    // P5
    const auto found = protected_servers.find({op.backend, op.server});
    if (found != protected_servers.end()) {
      const bool takes_out =
          (op.kind == CommandKind::kState && op.state != AdminState::kReady) ||
          (op.kind == CommandKind::kWeight && op.weight == 0) || op.kind == CommandKind::kHealth ||
          (op.kind == CommandKind::kAddr && (op.address != s.addr || op.port != s.port));
      if (takes_out) {
        run.failures.push_back(label + ": P5 '" + text + "' sent to a server that serves its " +
                               "enabled slot's target: " + found->second);
      }
    }
  };
  auto applied = haproxy::ApplyAddressesFirst(run.model, plan.operations);
  run.model.before_op = nullptr;
  if (!applied) {  // as Agent::ApplyOperations: which commands ran is unknown
    for (const auto& op : plan.operations) {
      if (op.kind == CommandKind::kHealth) {
        run.memory.unconfirmed.insert(haproxy::StagingKey(op.backend, op.server));
      }
    }
    return true;
  }
  for (std::size_t i = 0; i < applied->operations.size(); ++i) {
    const auto& op = applied->operations[i];
    if (auto error = haproxy::ReplyError(op.kind, applied->replies[i])) {
      run.failures.push_back(label + ": refused " + haproxy::Render(op) + ": " + *error);
    }
    if (op.kind == CommandKind::kHealth || (op.kind == CommandKind::kWeight && op.weight > 0)) {
      run.memory.unconfirmed.erase(haproxy::StagingKey(op.backend, op.server));
    }
  }
  run.memory.admitted = std::move(plan.admitted);
  run.memory.unproven = std::move(plan.unproven);
  std::erase_if(run.memory.unproven,
                [&](const std::string& key) { return !run.memory.admitted.contains(key); });
  for (auto& key : plan.inherited) run.memory.inherited.insert(key);
  std::erase_if(run.memory.inherited,
                [&](const std::string& key) { return !run.memory.admitted.contains(key); });
  return true;
}

void Converge(const Case& c, const AgentSettings& settings, Run& run, const std::string& label) {
  constexpr int kMaxRounds = 25;
  for (int round = 0; round < kMaxRounds; ++round) {
    ++run.rounds;
    const std::size_t before = run.model.sent.size();
    if (!Cycle(c, settings, run, fmt::format("{} cycle {}", label, round))) return;
    run.model.PassChecks();
    if (!run.failures.empty()) return;
    if (round == kMaxRounds - 1) {
      std::string last;
      for (std::size_t i = before; i < run.model.sent.size(); ++i) last += run.model.sent[i] + "; ";
      run.failures.push_back(label + ": P2 no convergence in 25 cycles, last: " + last);
    }
  }
}

// P1: every slot as the table says (after convergence).
void CheckMatches(const Case& c, const AgentSettings& settings, Run& run,
                  const std::string& label) {
  for (std::size_t b = 0; b < settings.backends.size(); ++b) {
    const auto& name = settings.backends[b].config.name;
    const auto wants = Oracle(c.table, settings, b);
    for (const auto& s : run.model.backends.at(name).servers) {
      if (s.id > static_cast<int>(wants.size())) {
        if (!InMaint(s)) {
          run.failures.push_back(label + ": P1 above the list size, not in maint: " + Describe(s));
        }
        continue;
      }
      const Want& want = wants[static_cast<std::size_t>(s.id - 1)];
      if (!want.check) continue;
      if (!want.active) {
        if (!InMaint(s)) {
          run.failures.push_back(label + ": P1 slot not active here, not in maint: " + Describe(s));
        }
        continue;
      }
      // Checks failing at a gated slot's address: it waits at weight 0 (or got its weight, as
      // nothing else served).
      const bool may_wait = c.gating && s.check && c.dead.contains(want.addr) &&
                            want.state == AdminState::kReady && s.weight == 0;
      // A port move held while a server fails its checks at the backend's port (README,
      // "Limits": it counts as a move under way).
      const bool held = c.gating && s.check && !c.dead.empty() && s.addr == want.addr &&
                        want.state == AdminState::kReady && s.weight == want.weight;
      if (s.addr != want.addr || (s.port != want.port && !held) ||
          (s.weight != want.weight && !may_wait) || Admin(s) != want.state) {
        run.failures.push_back(fmt::format("{}: P1 slot {} want {}:{} w={} {}, have {}", label,
                                           s.id, want.addr, want.port, want.weight,
                                           haproxy::ToString(want.state), Describe(s)));
      }
    }
  }
}

// What must be identical across nodes (P3).
std::string Signature(const Case& c, const AgentSettings& settings, const Model& model) {
  std::string out;
  for (std::size_t b = 0; b < settings.backends.size(); ++b) {
    const auto& name = settings.backends[b].config.name;
    const auto wants = Oracle(c.table, settings, b);
    for (const auto& s : model.backends.at(name).servers) {
      const bool left_alone = s.id <= static_cast<int>(wants.size()) &&
                              !wants[static_cast<std::size_t>(s.id - 1)].check;
      if (left_alone) continue;  // an invalid record's slot: as HAProxy had it
      if (InMaint(s) && !(s.id <= static_cast<int>(wants.size()) &&
                          wants[static_cast<std::size_t>(s.id - 1)].active)) {
        out += fmt::format("{}/{} maint\n", name, s.name);
      } else if (c.gating && s.check && !c.dead.empty() && !InMaint(s)) {
        out += fmt::format("{}/{} {}:(held?) w={} {}\n", name, s.name, s.addr,
                           c.dead.contains(s.addr) ? "(0 or its weight)" : std::to_string(s.weight),
                           haproxy::ToString(Admin(s)));
      } else {
        out += fmt::format("{}/{} {}:{} w={} {}\n", name, s.name, s.addr, s.port, s.weight,
                           haproxy::ToString(Admin(s)));
      }
    }
  }
  return out;
}

Model StartModel(const Case& c, const AgentSettings& settings, bool fresh) {
  Model model;
  for (std::size_t b = 0; b < settings.backends.size(); ++b) {
    const auto& config = settings.backends[b].config;
    Model::Backend backend{.be_id = static_cast<int>(b) + 2};
    if (fresh) {
      for (int id = 1; id <= c.counts[b]; ++id) {
        backend.servers.push_back({.id = id,
                                   .name = config.base_name + std::to_string(id),
                                   .port = config.port,
                                   .check = c.check[b]});
      }
    } else {
      backend.servers = c.leftovers[b];
    }
    model.backends[config.name] = std::move(backend);
  }
  return model;
}

// All properties for one case; "" when they hold.
std::string RunCase(const Case& c) {
  const AgentSettings settings =
      SettingsFor(c.layout, c.gating, static_cast<int>(c.table.slots.size()));
  std::vector<std::string> failures;
  std::vector<std::string> signatures;
  for (int start = 0; start < 3; ++start) {
    const std::string label = start == 0 ? "fresh" : start == 1 ? "leftovers" : "hand-edit";
    Run run{.model = StartModel(c, settings, start != 1)};
    run.model.dead = c.dead;
    if (c.cut >= 0) run.model.cut_after = c.cut;
    Converge(c, settings, run, label);
    if (start == 0 && run.failures.empty()) {
      CheckMatches(c, settings, run, label);
      // An agent restarted on the converged HAProxy sends nothing (but the documented `health
      // down` again for a server ready at weight 0).
      Run restarted{.model = run.model};
      const std::size_t before = restarted.model.sent.size();
      (void)Cycle(c, settings, restarted, "restarted agent");
      for (std::size_t i = before; i < restarted.model.sent.size(); ++i) {
        const std::string& text = restarted.model.sent[i];
        if (!text.ends_with(" health down")) {
          restarted.failures.push_back("restarted agent: P2 sends '" + text +
                                       "' to a converged HAProxy");
        }
      }
      for (auto& f : restarted.failures) failures.push_back(std::move(f));
      // A reload without a state file, the agent's memory kept.
      Run reloaded{.model = StartModel(c, settings, true), .memory = run.memory};
      reloaded.model.dead = c.dead;
      reloaded.memory.looked = false;
      Converge(c, settings, reloaded, "reloaded");
      if (reloaded.failures.empty()) CheckMatches(c, settings, reloaded, "reloaded");
      for (auto& f : reloaded.failures) failures.push_back(std::move(f));
      signatures.push_back(Signature(c, settings, reloaded.model));
    }
    if (start == 2 && run.failures.empty()) {
      for (const auto& e : c.edits) {
        auto& servers = run.model.backends.at(e.backend).servers;
        if (e.index >= static_cast<int>(servers.size())) continue;
        MServer& s = servers[static_cast<std::size_t>(e.index)];
        Operation op;
        op.backend = e.backend;
        op.server = s.name;
        switch (e.kind) {
          case 0:
            op = Operation::SetState(e.backend, s.name, s.id, AdminState::kMaint);
            break;
          case 1:
            op = Operation::SetState(e.backend, s.name, s.id, AdminState::kDrain);
            break;
          case 2:
            op = Operation::SetState(e.backend, s.name, s.id, AdminState::kReady);
            break;
          case 3:
            op = Operation::SetWeight(e.backend, s.name, s.id, e.weight);
            break;
          default:
            op = Operation::SetAddr(e.backend, s.name, s.id, e.addr, e.port);
            break;
        }
        run.model.ApplyOne(op);
      }
      run.model.PassChecks();
      Converge(c, settings, run, label + " after edits");
    }
    if (run.failures.empty()) CheckMatches(c, settings, run, label);
    for (auto& f : run.failures) failures.push_back(std::move(f));
    signatures.push_back(Signature(c, settings, run.model));
  }
  if (failures.empty()) {
    for (std::size_t i = 1; i < signatures.size(); ++i) {
      if (signatures[static_cast<std::size_t>(i)] != signatures[0]) {
        failures.push_back(fmt::format("P3 run {} ends unlike the fresh one:\n{}---\n{}", i,
                                       signatures[0], signatures[i]));
      }
    }
  }
  return failures.empty() ? std::string() : failures.front();
}

// Shrinks a failing case: fewer slots, freed slots, simpler leftovers, fewer edits.
Case Shrink(Case c) {
  const auto fails = [](const Case& candidate) { return !RunCase(candidate).empty(); };
  bool progress = true;
  while (progress) {
    progress = false;
    // Drop the last slot (and its servers).
    while (c.table.slots.size() > 1) {
      Case d = c;
      const int last = static_cast<int>(d.table.slots.size());
      d.table.slots.pop_back();
      std::erase(d.table.invalid_ids, last);
      for (std::size_t b = 0; b < d.counts.size(); ++b) {
        if (d.counts[b] >= last) {
          d.counts[b] -= 1;
          std::erase_if(d.leftovers[b], [&](const MServer& s) { return s.id > d.counts[b]; });
        }
        if (d.counts[b] < 1) goto no_drop;
      }
      std::erase_if(d.edits, [&](const HandEdit& e) {
        for (std::size_t b = 0; b < d.counts.size(); ++b) {
          if (e.index >= d.counts[b]) return true;
        }
        return false;
      });
      if (!fails(d)) break;
      c = std::move(d);
      progress = true;
    }
  no_drop:
    for (std::size_t i = 0; i < c.table.slots.size(); ++i) {
      if (!c.table.slots[i].filled()) continue;
      Case d = c;
      d.table.slots[i] = Slot::Free(static_cast<int>(i) + 1);
      if (fails(d)) {
        c = std::move(d);
        progress = true;
      }
    }
    for (std::size_t i = 0; i < c.table.invalid_ids.size(); ++i) {
      Case d = c;
      d.table.invalid_ids.erase(d.table.invalid_ids.begin() + static_cast<std::ptrdiff_t>(i));
      if (fails(d)) {
        c = std::move(d);
        progress = true;
        break;
      }
    }
    for (std::size_t b = 0; b < c.leftovers.size(); ++b) {
      for (std::size_t i = 0; i < c.leftovers[b].size(); ++i) {
        Case d = c;
        MServer& s = d.leftovers[b][i];
        const MServer placeholder{.id = s.id, .name = s.name, .port = s.port, .check = s.check};
        if (s == placeholder) continue;
        s = placeholder;
        if (fails(d)) {
          c = std::move(d);
          progress = true;
        }
      }
    }
    for (std::size_t i = 0; i < c.edits.size(); ++i) {
      Case d = c;
      d.edits.erase(d.edits.begin() + static_cast<std::ptrdiff_t>(i));
      if (fails(d)) {
        c = std::move(d);
        progress = true;
        break;
      }
    }
    if (c.gating) {
      Case d = c;
      d.gating = false;
      if (fails(d)) {
        c = std::move(d);
        progress = true;
      }
    }
  }
  return c;
}

TEST(PlanCycleFuzz, RandomTablesAndHaproxyStatesKeepTheProperties) {
  int cases = 300;
  if (const char* n = std::getenv("HSDO_FUZZ_CASES")) cases = std::atoi(n);
  std::uint64_t base = 20240601;
  if (const char* first = std::getenv("HSDO_FUZZ_FIRST")) base = std::strtoull(first, nullptr, 10);
  const char* only = std::getenv("HSDO_FUZZ_SEED");
  if (only != nullptr) cases = 1;
  int failed = 0;
  std::map<std::string, int> kinds;
  for (int i = 0; i < cases; ++i) {
    const std::uint64_t seed = only != nullptr ? std::strtoull(only, nullptr, 10) : base + i;
    const Case c = Generate(seed);
    const std::string failure = RunCase(c);
    if (failure.empty()) continue;
    ++failed;
    if (kinds[failure.substr(failure.find(": P") == std::string::npos ? 0 : failure.find(": P"),
                             6)]++ > 2 &&
        only == nullptr) {
      continue;  // print a few of each property only
    }
    const Case small = Shrink(c);
    ADD_FAILURE() << "seed " << seed << ": " << failure << "\nshrunk case:\n"
                  << Print(small) << "its failure: " << RunCase(small);
  }
  std::cout << "fuzz: " << cases << " cases, " << failed << " failed\n";
}

}  // namespace
}  // namespace hsdo::agent
