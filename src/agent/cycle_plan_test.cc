#include "agent/cycle_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

namespace hsdo::agent {
namespace {

using haproxy::AdminState;
using haproxy::BackendRole;
using haproxy::ServerState;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

ServerState Placeholder(int id, const std::string& base) {
  return {.backend_id = 2,
          .id = id,
          .name = base + std::to_string(id),
          .address = "127.0.0.2",
          .port = 80,
          .admin_bits = 5,
          .admin = AdminState::kMaint,
          .weight = 1};
}

std::vector<ServerState> Placeholders(const std::string& base, int count) {
  std::vector<ServerState> servers;
  for (int id = 1; id <= count; ++id) servers.push_back(Placeholder(id, base));
  return servers;
}

SlotTable Table() {
  SlotTable table = SlotTable::Empty(3);
  table.generation = 4;
  table.slots[0] = {.id = 1,
                    .status = SlotStatus::kEnabled,
                    .target = {.address = "10.0.0.1", .name = "a", .group = "local"},
                    .weight = 5};
  table.slots[1] = {.id = 2,
                    .status = SlotStatus::kDraining,
                    .target = {.address = "10.0.0.2", .name = "b", .group = "other"},
                    .weight = 5};
  return table;
}

AgentSettings TwoBackends() {
  AgentSettings settings;
  settings.backends = {
      {.config = {.name = "be", .base_name = "srv", .port = 80}},
      {.config = {.name = "fb", .base_name = "f", .port = 80}, .role = BackendRole::kFallback}};
  settings.az_limiter = {.enabled = true, .client_groups = {"local"}};
  return settings;
}

std::vector<std::string> Texts(const CyclePlan& plan) {
  std::vector<std::string> texts;
  for (const auto& operation : plan.operations) texts.push_back(haproxy::Render(operation));
  return texts;
}

TEST(PlanCycle, EveryBackendInOrderWithTheAzSplitAndDrainingSlots) {
  const std::vector<Result<std::vector<ServerState>>> servers = {Placeholders("srv", 3),
                                                                 Placeholders("f", 3)};
  const auto plan = PlanCycle(Table(), TwoBackends(), servers, {});
  EXPECT_TRUE(plan.complete);
  EXPECT_THAT(Texts(plan),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 5",
                          "set server be/srv1 state ready", "set server fb/f2 state drain",
                          "set server fb/f2 addr 10.0.0.2 port 80", "set server fb/f2 weight 5"));
  EXPECT_THAT(plan.admitted, ElementsAre("be/srv1 10.0.0.1:80|a"));
}

// Found in review: a target whose group moved it from the primary backend to the fallback left
// the primary (maint, the primaries' operations first) before it joined the fallback: in
// neither for a moment, and until the next cycle if the batch broke between the two.
// Found in review (switching from the seed): with backends web on port 80 and api on 8080 (the
// seed's backend list), a Consul target's service port (80) sent api's servers to port 80 on
// every node. Backends of different ports each serve their own; backends that share a port
// serve a target's own port, as before.
TEST(PlanCycle, BackendsOfDifferentPortsServeTheirOwnWhateverPortATargetCarries) {
  SlotTable table = SlotTable::Empty(1);
  table.slots[0] = {.id = 1,
                    .status = SlotStatus::kEnabled,
                    .target = {.address = "10.0.0.1", .port = 80, .name = "a"},
                    .weight = 5};
  const auto settings_of = [](std::uint16_t api_port) {
    AgentSettings settings;
    settings.backends = haproxy::ManagedBackends({{"web", "w", 80}, {"api", "a", api_port}},
                                                 std::nullopt, /*az_limiter=*/false);
    return settings;
  };
  const std::vector<Result<std::vector<ServerState>>> servers = {Placeholders("w", 1),
                                                                 Placeholders("a", 1)};
  EXPECT_THAT(
      Texts(PlanCycle(table, settings_of(8080), servers, {})),
      ElementsAre("set server web/w1 addr 10.0.0.1 port 80", "set server web/w1 weight 5",
                  "set server web/w1 state ready", "set server api/a1 addr 10.0.0.1 port 8080",
                  "set server api/a1 weight 5", "set server api/a1 state ready"));
  table.slots[0].target.port = 9000;
  EXPECT_THAT(
      Texts(PlanCycle(table, settings_of(80), servers, {})),
      ElementsAre("set server web/w1 addr 10.0.0.1 port 9000", "set server web/w1 weight 5",
                  "set server web/w1 state ready", "set server api/a1 addr 10.0.0.1 port 9000",
                  "set server api/a1 weight 5", "set server api/a1 state ready"));
}

// Two containers on host 10.0.0.1 (slots 1 and 2, ports 9001 and 9002), enabled at weight 10,
// and backends web:80 and api:8080 of their own ports, fresh.
SlotTable TwoContainersOnOneHost() {
  SlotTable table = SlotTable::Empty(2);
  for (int id = 1; id <= 2; ++id) {
    table.slots[static_cast<std::size_t>(id - 1)] = {
        .id = id,
        .status = SlotStatus::kEnabled,
        .target = {.address = "10.0.0.1", .port = static_cast<std::uint16_t>(9000 + id)},
        .weight = 10};
  }
  return table;
}

AgentSettings OwnPortBackends() {
  AgentSettings settings;
  settings.backends = haproxy::ManagedBackends({{"web", "w", 80}, {"api", "a", 8080}}, std::nullopt,
                                               /*az_limiter=*/false);
  return settings;
}

const std::vector<Result<std::vector<ServerState>>> kOwnPortServers = {Placeholders("w", 2),
                                                                       Placeholders("a", 2)};

// Review of dbcfc8a: two targets at one address with ports of their own (containers on one
// host) are one server in backends that take their own ports: served from the first slot only
// (else that server hashed twice, at double weight), and said.
TEST(PlanCycle, TargetsToldApartOnlyByTheirPortsAreOneServerInABackendOfItsOwnPort) {
  const auto plan = PlanCycle(TwoContainersOnOneHost(), OwnPortBackends(), kOwnPortServers, {});
  for (const std::string& text : Texts(plan)) {
    EXPECT_EQ(text.find("w2 addr"), std::string::npos) << text;
    EXPECT_EQ(text.find("a2 addr"), std::string::npos) << text;
  }
  EXPECT_THAT(Texts(plan), Contains("set server api/a1 addr 10.0.0.1 port 8080"));
  ASSERT_EQ(plan.backend_problems.size(), 2u);
  EXPECT_THAT(plan.backend_problems[1].second, HasSubstr("servers a2 are kept in maint"));
}

// Found by a fuzz review: the first slot at an address claimed its server before its values
// were checked, so a slot Reconcile refuses (a weight above 256 here; the store's codec refuses
// it today, but the agent's own check is the second line) kept the valid slot after it at the
// same address out of service: nothing served that host in backends of their own ports.
TEST(PlanCycle, ASlotWithInvalidValuesClaimsNoServerOfItsAddress) {
  SlotTable table = TwoContainersOnOneHost();
  table.slots[0].weight = 257;
  const auto plan = PlanCycle(table, OwnPortBackends(), kOwnPortServers, {});
  EXPECT_THAT(Texts(plan), AllOf(Contains("set server web/w2 addr 10.0.0.1 port 80"),
                                 Contains("set server web/w2 state ready"),
                                 Contains("set server api/a2 state ready")));
  for (const std::string& text : Texts(plan)) EXPECT_EQ(text.find("w1"), std::string::npos);
  EXPECT_EQ(plan.invalid_slots.size(), 2u);  // slot 1, in each backend
}

// Found by a fuzz review (a remark): the lowest slot at an address served it whatever its
// state, so a container draining on a host that runs another drained the host in every backend
// of its own port until the drain ended, then the next slot served it (its keys moved twice).
// The lowest slot the table has ready serves it; a draining one only when none there is.
TEST(PlanCycle, AReadySlotServesItsAddressBeforeADrainingOneInABackendOfItsOwnPort) {
  SlotTable table = TwoContainersOnOneHost();
  table.slots[0].status = SlotStatus::kDraining;
  auto plan = PlanCycle(table, OwnPortBackends(), kOwnPortServers, {});
  EXPECT_THAT(Texts(plan), AllOf(Contains("set server web/w2 addr 10.0.0.1 port 80"),
                                 Contains("set server web/w2 state ready"),
                                 Contains("set server api/a2 state ready")));
  for (const std::string& text : Texts(plan)) EXPECT_EQ(text.find("w1"), std::string::npos);
  // With no slot there ready, the draining one serves it, in drain.
  table.slots[1] = Slot::Free(2);
  plan = PlanCycle(table, OwnPortBackends(), kOwnPortServers, {});
  EXPECT_THAT(Texts(plan), AllOf(Contains("set server web/w1 state drain"),
                                 Contains("set server web/w1 addr 10.0.0.1 port 80")));
}

TEST(PlanCycle, ATargetMovingToAnotherBackendJoinsItBeforeLeavingTheOther) {
  SlotTable table = Table();
  table.slots[0].target.group = "other";  // was "local": it belongs in the fallback now
  table.slots[1] = Slot::Free(2);
  auto primary = Placeholders("srv", 3);
  primary[0].address = "10.0.0.1";
  primary[0].admin_bits = 4;  // CMAINT alone: in service
  primary[0].admin = AdminState::kReady;
  primary[0].weight = 5;
  const std::vector<Result<std::vector<ServerState>>> servers = {primary, Placeholders("f", 3)};
  const auto plan = PlanCycle(table, TwoBackends(), servers, {});
  EXPECT_THAT(Texts(plan),
              ElementsAre("set server fb/f1 addr 10.0.0.1 port 80", "set server fb/f1 weight 5",
                          "set server fb/f1 state ready", "set server be/srv1 state maint"));
}

// Found in review: a misspelt group (CLIENT_ASG_NAMES, or the targets' group) put every primary
// server in maint on every node, without a word.
TEST(PlanCycle, NoLocalTargetWithTheAzLimiterIsAWarning) {
  const std::vector<Result<std::vector<ServerState>>> servers = {Placeholders("srv", 3),
                                                                 Placeholders("f", 3)};
  AgentSettings typo = TwoBackends();
  typo.az_limiter.client_groups = {"lcoal"};
  EXPECT_THAT(PlanCycle(Table(), typo, servers, {}).no_local_targets,
              AllOf(HasSubstr("CLIENT_ASG_NAMES (lcoal)"), HasSubstr("groups: local,other")));
  EXPECT_EQ(PlanCycle(Table(), TwoBackends(), servers, {}).no_local_targets, "");
  EXPECT_EQ(PlanCycle(SlotTable::Empty(3), typo, servers, {}).no_local_targets, "");
}

TEST(PlanCycle, UnreadableBackendAndMissingSlotsAreDifferences) {
  const std::vector<Result<std::vector<ServerState>>> servers = {
      Placeholders("srv", 2),  // no srv3
      MakeError(ErrorCode::kNotFound, "no such backend")};
  const auto plan = PlanCycle(Table(), TwoBackends(), servers, {});
  EXPECT_FALSE(plan.complete);
  EXPECT_EQ(plan.missing_slots, 1);
  ASSERT_EQ(plan.differences.size(), 2u);
  EXPECT_THAT(plan.differences[0], HasSubstr("backend 'be' has no servers srv3"));
  EXPECT_THAT(plan.differences[1], HasSubstr("cannot read backend 'fb': no such backend"));
  ASSERT_EQ(plan.backend_problems.size(), 2u);
  EXPECT_EQ(plan.backend_problems[0].first, "be");
  EXPECT_FALSE(plan.operations.empty());  // what can be applied still is
}

// Found in review: server ids were checked only when the agent started. After a reload with
// a server added before the template, every slot's server has another id: the slots are still
// applied, and the plan says that this node hashes unlike the fleet.
TEST(PlanCycle, ServersWhoseIdsAreNotTheirSlotsAreADifference) {
  auto shifted = Placeholders("srv", 3);
  for (auto& server : shifted) ++server.id;
  const std::vector<Result<std::vector<ServerState>>> servers = {shifted, Placeholders("f", 3)};
  const auto plan = PlanCycle(Table(), TwoBackends(), servers, {});
  EXPECT_FALSE(plan.complete);
  ASSERT_EQ(plan.differences.size(), 1u);
  EXPECT_THAT(plan.differences[0],
              HasSubstr("servers srv1-srv3 have ids other than their slot numbers"));
  ASSERT_EQ(plan.backend_problems.size(), 2u);
  EXPECT_THAT(plan.backend_problems[0].second, HasSubstr("srv1-srv3"));
  EXPECT_EQ(plan.backend_problems[1].second, "");
  EXPECT_FALSE(plan.operations.empty());
}

// Found in review: an agent with a smaller list size than the orchestrator's left the slots
// above it out of HAProxy in silence (the store reader dropped them) and said it was synced.
TEST(PlanCycle, FilledSlotsAboveTheListSizeAreADifference) {
  SlotTable table = Table();
  for (const int id : {11, 12}) {
    table.beyond.push_back({.id = id,
                            .status = SlotStatus::kEnabled,
                            .target = {.address = "10.0.1." + std::to_string(id)},
                            .weight = 5});
  }
  AgentSettings settings = TwoBackends();
  settings.list_size = 3;
  const std::vector<Result<std::vector<ServerState>>> servers = {Placeholders("srv", 3),
                                                                 Placeholders("f", 3)};
  const auto plan = PlanCycle(table, settings, servers, {});
  EXPECT_FALSE(plan.complete);
  ASSERT_EQ(plan.differences.size(), 1u);
  EXPECT_THAT(
      plan.differences[0],
      HasSubstr("2 filled slots above HAPROXY_BACKEND_SERVERS_LIST_SIZE=3 (up to slot 12)"));
  EXPECT_EQ(plan.list_size_problem, plan.differences[0]);
  EXPECT_FALSE(plan.operations.empty());  // the slots it has are applied
}

// Found in review: after HAPROXY_BACKEND_SERVERS_LIST_SIZE was lowered (HAProxy's template
// and a state file still holding the old servers), or a server set ready by hand, the servers
// above the list size kept serving addresses no table held, for good.
TEST(PlanCycle, ServersAboveTheListSizeAreTakenOut) {
  AgentSettings settings;
  settings.backends = {{.config = {.name = "be", .base_name = "srv", .port = 80}}};
  auto servers_of = [](std::vector<ServerState> servers) {
    servers[3].admin = AdminState::kReady;  // srv4 serves 127.0.0.2
    servers[4].admin = AdminState::kDrain;  // srv5 drains 10.0.1.5
    servers[4].address = "10.0.1.5";
    return std::vector<Result<std::vector<ServerState>>>{std::move(servers)};
  };
  SlotTable table = Table();
  table.slots[1] = Slot::Free(2);
  const auto plan = PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {});
  EXPECT_THAT(Texts(plan),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 5",
                          "set server be/srv1 state ready", "set server be/srv4 state maint",
                          "set server be/srv5 state maint"));

  // While the store holds filled slots above this node's list size, this node's is wrong: the
  // servers of those slots may be what the fleet serves, and stay as they are. The others
  // above it are taken out all the same (reconfiguration review: with any slot filled up
  // there, none was, and a target gone kept serving there for good).
  table.beyond.push_back(
      {.id = 5, .status = SlotStatus::kEnabled, .target = {.address = "10.0.1.5"}, .weight = 5});
  const auto held = PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {});
  EXPECT_THAT(Texts(held),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 5",
                          "set server be/srv1 state ready", "set server be/srv4 state maint"));
  // Found in review (configurations that differ across a fleet): only while the server is at
  // its record's target. The orchestrator gave the slot to another target: this node served
  // the one gone there, for good.
  table.beyond.back().target.address = "10.0.1.99";
  const auto reused = PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {});
  EXPECT_THAT(Texts(reused),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 5",
                          "set server be/srv1 state ready", "set server be/srv4 state maint",
                          "set server be/srv5 state maint"));
  table.beyond.back().target.address = "10.0.1.5";
  table.beyond.back().target.port = 8080;
  EXPECT_EQ(Texts(PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {})),
            Texts(reused));
  // Review of 38d9f54: a record without a port keeps its server at any port (this node's
  // HAPROXY_BACKEND_SERVER_PORT may have changed since it applied it).
  table.beyond.back().target.port.reset();
  settings.backends[0].config.port = 8080;
  EXPECT_EQ(Texts(PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {})),
            (std::vector<std::string>{
                "set server be/srv1 addr 10.0.0.1 port 8080", "set server be/srv1 weight 5",
                "set server be/srv1 state ready", "set server be/srv4 state maint"}));
  settings.backends[0].config.port = 80;
  table.beyond.back().target.port = 80;
  // A record up there that cannot be read keeps its server as it is (review of 342cad1), as
  // one below keeps what it held.
  table.invalid_above.push_back(4);
  const auto invalid = PlanCycle(table, settings, servers_of(Placeholders("srv", 6)), {});
  EXPECT_THAT(Texts(invalid),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 5",
                          "set server be/srv1 state ready"));
}

// The table holds a group's name made printable; CLIENT_ASG_NAMES is matched the same way.
TEST(AgentSettings, ClientGroupsAreMatchedAsTheTableSpellsThem) {
  Config config;
  config.az_limiter = true;
  config.client_asg_names = {"web caf\xc3\xa9", "api"};
  const AgentSettings settings = AgentSettings::FromConfig(config);
  EXPECT_THAT(settings.az_limiter.client_groups, ElementsAre("web caf??", "api"));
}

TEST(PlanCycle, PendingAdmissionsAreListed) {
  AgentSettings settings;
  settings.backends = {{.config = {.name = "be", .base_name = "srv", .port = 80}}};
  auto servers = Placeholders("srv", 3);
  for (auto& server : servers) server.check_state = 0x0e;  // check, paused in maint
  // Another server serves, not the template's (gating never empties a backend; a template
  // server above the table's size would be taken out).
  servers.push_back(Placeholder(9, "srv"));
  servers.back().name = "static";
  servers.back().admin = haproxy::AdminState::kReady;
  servers.back().weight = 5;
  servers.back().op_state = ServerState::kOpRunning;
  const std::vector<Result<std::vector<ServerState>>> read = {servers};
  const auto plan = PlanCycle(Table(), settings, read, {});
  EXPECT_THAT(plan.pending, ElementsAre(PendingSlot{.backend = "be", .slot_id = 1}));
  settings.admission_gating = false;
  EXPECT_TRUE(PlanCycle(Table(), settings, read, {}).pending.empty());
}

TEST(DrainingSessions, SumsTheDrainingSlotsOverTheBackends) {
  const std::vector<Result<std::map<std::string, int>>> sessions = {
      std::map<std::string, int>{{"srv1", 9}, {"srv2", 3}},
      std::map<std::string, int>{{"f1", 0}, {"f2", 4}}};
  EXPECT_EQ(DrainingSessions(Table(), TwoBackends(), sessions), (std::map<int, int>{{2, 7}}));
  const std::vector<Result<std::map<std::string, int>>> unread = {
      MakeError(ErrorCode::kUnavailable, "x"), MakeError(ErrorCode::kUnavailable, "x")};
  EXPECT_TRUE(DrainingSessions(Table(), TwoBackends(), unread).empty());
  // Found by fuzzing: the sum overflowed an int (undefined; it wrapped to a negative count,
  // and the node's whole report was refused by the orchestrator).
  const int most = std::numeric_limits<int>::max();
  const std::vector<Result<std::map<std::string, int>>> huge = {
      std::map<std::string, int>{{"srv2", most}}, std::map<std::string, int>{{"f2", most}}};
  EXPECT_EQ(DrainingSessions(Table(), TwoBackends(), huge), (std::map<int, int>{{2, most}}));
}

// Found in review: a backend whose `show stat` could not be read was left out of the sums, so a
// slot with sessions there but none in the other backend was reported drained (0), and could
// be freed under them. While any backend is unread, no draining slot is reported.
TEST(DrainingSessions, NoneWhileABackendCannotBeRead) {
  const std::vector<Result<std::map<std::string, int>>> one_unread = {
      std::map<std::string, int>{{"srv1", 9}, {"srv2", 0}},
      MakeError(ErrorCode::kUnavailable, "x")};
  EXPECT_TRUE(DrainingSessions(Table(), TwoBackends(), one_unread).empty());
  const std::vector<Result<std::map<std::string, int>>> one_missing = {
      std::map<std::string, int>{{"srv1", 9}, {"srv2", 0}}};
  EXPECT_TRUE(DrainingSessions(Table(), TwoBackends(), one_missing).empty());
}

// A `show stat <name>` that a frontend of the same name answered has no servers (HAProxy
// takes the first proxy of that name): the slot's sessions in that backend are not known, and
// the other backend's 0 said "drained" under the sessions of the first.
TEST(DrainingSessions, NoneForASlotABackendsReplyLacks) {
  const std::vector<Result<std::map<std::string, int>>> frontend_answered = {
      std::map<std::string, int>{}, std::map<std::string, int>{{"f1", 0}, {"f2", 0}}};
  EXPECT_TRUE(DrainingSessions(Table(), TwoBackends(), frontend_answered).empty());
}

// The node report's word that a filled slot not waiting has passed a check here (the removal
// guard's evidence of a replacement): only with gating on, `check` on every active slot's
// server, and every slot applied.
TEST(PlanCycle, GatesEverySlotOnlyWhenEveryActiveServerIsCheckedAndApplied) {
  AgentSettings settings;
  settings.backends = {{.config = {.name = "be", .base_name = "srv", .port = 80}}};
  auto servers = Placeholders("srv", 3);
  for (auto& server : servers) server.check_state = 0x0e;  // check, paused in maint
  std::vector<Result<std::vector<ServerState>>> read = {servers};
  EXPECT_TRUE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  settings.admission_gating = false;
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  settings.admission_gating = true;
  // Slot 1's server without `check`: HAProxy calls it UP at once, whatever answers there.
  read = {servers};
  read[0]->at(0).check_state = 0;
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  // A free slot's server without `check` says nothing of a target.
  read = {servers};
  read[0]->at(2).check_state = 0;
  EXPECT_TRUE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  // A slot without a server here, or a backend that cannot be read.
  read = {std::vector<ServerState>(servers.begin() + 1, servers.end())};
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  read = {Result<std::vector<ServerState>>(Error{ErrorCode::kUnavailable, "down"})};
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  // A check of a port or address of its own (`check port 8080`): it passes whatever answers at
  // the slot's address (review of ef8f711: a port typo moved every target and was "proven").
  read = {servers};
  read[0]->at(0).check_elsewhere = true;
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
  // `disable health`: the server stays UP whatever answers (review of 527622e).
  read = {servers};
  read[0]->at(0).check_state = 0x0a;
  EXPECT_FALSE(PlanCycle(Table(), settings, read, {}).gates_every_slot);
}

// The slots a node serves without waiting but cannot vouch for: DOWN by their checks now, or
// given their weight before any check passed at their address on a server whose last check had
// passed at another (HAProxy keeps that result across `set server addr`: review of ef8f711,
// addresses where nothing listened were "proven" so within a second).
TEST(PlanCycle, SlotsDownOrWeightedOnAnothersCheckAreUnvouched) {
  AgentSettings settings;
  settings.backends = {{.config = {.name = "be", .base_name = "srv", .port = 80}}};
  auto servers = Placeholders("srv", 3);
  for (auto& server : servers) server.check_state = 0x0e;
  ServerState& one = servers[0];  // slot 1 serving its target, its check passing
  one.address = "10.0.0.1";
  one.admin = AdminState::kReady;
  one.admin_bits = 0;
  one.weight = 5;
  one.op_state = ServerState::kOpRunning;
  one.check_result = ServerState::kCheckPassed;
  const haproxy::AdmittedSet admitted = {haproxy::AdmittedKey("be", "srv1", "10.0.0.1", 80, "a")};
  std::vector<Result<std::vector<ServerState>>> read = {servers};
  auto plan = PlanCycle(Table(), settings, read, admitted);
  EXPECT_TRUE(plan.gates_every_slot);
  EXPECT_TRUE(plan.waiting.empty());
  EXPECT_TRUE(plan.unvouched.empty());
  EXPECT_TRUE(PlanCycle(Table(), settings, read, admitted, {}, {}, {}, admitted).unvouched ==
              std::set<int>{1});
  read[0]->at(0).op_state = 0;  // DOWN
  read[0]->at(0).check_result = 2;
  plan = PlanCycle(Table(), settings, read, admitted);
  EXPECT_EQ(plan.unvouched, std::set<int>{1});
  EXPECT_TRUE(plan.waiting.empty());
  // UP before any check ran (`state ready` after a reload without a state file): review of
  // 527622e, vouched for on up() alone.
  read[0]->at(0).op_state = ServerState::kOpRunning;
  read[0]->at(0).check_result = 0;
  EXPECT_EQ(PlanCycle(Table(), settings, read, admitted).unvouched, std::set<int>{1});
}

// Which weighted-unchecked fills are inherited: only one on a server whose last check passed
// at another address. Not a placeholder that never ran a check, as every server at a node's
// start (review of 851ae37: a node that started fresh never vouched for any slot).
TEST(PlanCycle, AFillWeightedUncheckedInheritsOnlyAPassingCheckOfAnotherAddress) {
  AgentSettings settings;
  settings.backends = {{.config = {.name = "be", .base_name = "srv", .port = 80}}};
  auto servers = Placeholders("srv", 3);
  for (auto& server : servers) server.check_state = 0x0e;
  std::vector<Result<std::vector<ServerState>>> read = {servers};
  auto plan = PlanCycle(Table(), settings, read, {});  // nothing serves: slot 1 not gated
  EXPECT_EQ(plan.waiting, std::set<int>{1});           // at its weight, waiting for a check
  EXPECT_TRUE(plan.inherited.empty());
  read[0]->at(0).check_result = ServerState::kCheckPassed;  // passed at 127.0.0.2
  plan = PlanCycle(Table(), settings, read, {});
  const haproxy::AdmittedSet key = {haproxy::AdmittedKey("be", "srv1", "10.0.0.1", 80, "a")};
  EXPECT_EQ(plan.inherited, key);
  EXPECT_EQ(plan.waiting, std::set<int>{1});  // this cycle: waiting for a check anyway
  // The target back at its own address, its server in maint since (checks pause there, the
  // result stays; `state ready` is UP at once on it): review of 527622e, a dead target back in
  // the slot it left was vouched for.
  read[0]->at(0).address = "10.0.0.1";
  plan = PlanCycle(Table(), settings, read, {});
  EXPECT_EQ(plan.inherited, key);
  EXPECT_EQ(plan.waiting, std::set<int>{1});
  // Next cycle: ready and UP on that result, and inherited for a while (the agent's
  // kInheritedFor): still not vouched for; once the agent lets it go, vouched for.
  read[0]->at(0).admin = AdminState::kReady;
  read[0]->at(0).admin_bits = 0;
  read[0]->at(0).weight = 5;
  read[0]->at(0).op_state = ServerState::kOpRunning;
  plan = PlanCycle(Table(), settings, read, key, {}, {}, {}, key);
  EXPECT_TRUE(plan.inherited.empty());
  EXPECT_EQ(plan.unvouched, std::set<int>{1});
  EXPECT_TRUE(PlanCycle(Table(), settings, read, key).unvouched.empty());
}

TEST(NodeReportDue, AtMostOncePerIntervalWhenChangedAtLeastEveryTwo) {
  using std::chrono::milliseconds;
  const milliseconds interval{1000};
  const WallTime t0{std::chrono::seconds(1'700'000'000)};
  const NodeReport last{.name = "n", .applied_generation = 3, .reported_at = t0};
  NodeReport same = last;
  NodeReport changed = last;
  changed.draining_sessions = {{2, 1}};
  EXPECT_TRUE(NodeReportDue(std::nullopt, same, t0, interval));
  EXPECT_FALSE(NodeReportDue(last, changed, t0 + milliseconds(400), interval));
  EXPECT_TRUE(NodeReportDue(last, changed, t0 + milliseconds(1000), interval));
  EXPECT_FALSE(NodeReportDue(last, same, t0 + milliseconds(1000), interval));
  EXPECT_FALSE(NodeReportDue(last, same, t0 + milliseconds(1400), interval));
  EXPECT_TRUE(NodeReportDue(last, same, t0 + milliseconds(2000), interval));
  // A slot that passed its first health check (or began to wait for one) is news too: the
  // orchestrator holds its ramp meanwhile.
  NodeReport admitted = last;
  admitted.pending_admission = std::set<int>{};
  NodeReport waiting = last;
  waiting.pending_admission = std::set<int>{5};
  EXPECT_TRUE(NodeReportDue(waiting, admitted, t0 + milliseconds(1000), interval));
  EXPECT_FALSE(NodeReportDue(waiting, waiting, t0 + milliseconds(1000), interval));
  // And so is the node's word that every slot is gated by its check (it proves slots).
  NodeReport gated = admitted;
  gated.gates_every_slot = true;
  EXPECT_TRUE(NodeReportDue(admitted, gated, t0 + milliseconds(1000), interval));
  NodeReport down = gated;
  down.unvouched = {4};
  EXPECT_TRUE(NodeReportDue(gated, down, t0 + milliseconds(1000), interval));
}

// Found by counting an idle agent's reports on a loaded host: 18 in 40 cycles, not 20. Its
// cycles start every INTERVAL on the steady clock, but their wall-clock start, which the report
// carries, moves by a few ms from one to the next; a heartbeat whose cycle began 2 ms early was
// put off to the next cycle, 3 x INTERVAL after the last report, when the orchestrator already
// counts the node as dead (a drain could then be freed without its sessions).
TEST(NodeReportDue, ACycleALittleEarlyIsOnTime) {
  using std::chrono::milliseconds;
  const milliseconds interval{1000};
  const WallTime t0{std::chrono::seconds(1'700'000'000)};
  const NodeReport last{.name = "n", .applied_generation = 3, .reported_at = t0};
  EXPECT_TRUE(NodeReportDue(last, last, t0 + milliseconds(1998), interval));
  EXPECT_TRUE(NodeReportDue(last, last, t0 + milliseconds(1600), interval));
  const NodeReport draining{
      .name = "n", .applied_generation = 3, .reported_at = t0, .draining_sessions = {{2, 5}}};
  EXPECT_TRUE(NodeReportDue(draining, draining, t0 + milliseconds(998), interval));
  EXPECT_TRUE(NodeReportDue(draining, draining, t0 + milliseconds(600), interval));
  EXPECT_FALSE(NodeReportDue(draining, draining, t0 + milliseconds(400), interval));
}

// Found in review: while a slot drains, the orchestrator counts only the nodes that reported
// within 3 x INTERVAL. A node with sessions that reported every 2 x INTERVAL dropped out of
// that count after one missed report, and the slot could be freed under its sessions. While
// something drains, a node reports every INTERVAL, even unchanged: one report may be missed.
TEST(NodeReportDue, EveryIntervalWhileSomethingDrains) {
  using std::chrono::milliseconds;
  const milliseconds interval{1000};
  const WallTime t0{std::chrono::seconds(1'700'000'000)};
  const NodeReport draining{
      .name = "n", .applied_generation = 3, .reported_at = t0, .draining_sessions = {{2, 5}}};
  EXPECT_FALSE(NodeReportDue(draining, draining, t0 + milliseconds(400), interval));
  EXPECT_TRUE(NodeReportDue(draining, draining, t0 + milliseconds(1000), interval));
  NodeReport drained = draining;
  drained.draining_sessions = {{2, 0}};
  EXPECT_TRUE(NodeReportDue(drained, drained, t0 + milliseconds(1000), interval));
}

// A wall clock set back (an NTP step, a hand) made every report look younger than the last
// for as long as the clock went back: no heartbeat, and the orchestrator counted the node as
// dead, so a drain could be freed under its sessions. A report from the future is replaced
// at once.
TEST(NodeReportDue, AWallClockSetBackReportsAtOnce) {
  using std::chrono::milliseconds;
  const milliseconds interval{1000};
  const WallTime t0{std::chrono::seconds(1'700'000'000)};
  const NodeReport last{.name = "n", .applied_generation = 3, .reported_at = t0};
  EXPECT_TRUE(NodeReportDue(last, last, t0 - std::chrono::hours(1), interval));
  EXPECT_TRUE(NodeReportDue(last, last, t0 - milliseconds(2), interval));
}

// BatchHash tells the same batch again (not logged twice) from another one: each field a
// command says counts, and so does the order (it no longer renders each command to hash it).
TEST(BatchHash, EqualForTheSameBatchAndDifferentForAnyOtherCommand) {
  using haproxy::Operation;
  const std::vector<Operation> batch = {Operation::SetAddr("be", "srv1", 1, "10.0.0.1", 80),
                                        Operation::SetWeight("be", "srv1", 1, 5),
                                        Operation::SetState("be", "srv1", 1, AdminState::kReady),
                                        Operation::SetHealthDown("be", "srv2", 2)};
  EXPECT_EQ(BatchHash(batch), BatchHash(std::vector<Operation>(batch)));
  const std::vector<std::vector<Operation>> others = {
      {Operation::SetAddr("be", "srv1", 1, "10.0.0.9", 80), batch[1], batch[2], batch[3]},
      {Operation::SetAddr("be", "srv1", 1, "10.0.0.1", 81), batch[1], batch[2], batch[3]},
      {Operation::SetAddr("fb", "srv1", 1, "10.0.0.1", 80), batch[1], batch[2], batch[3]},
      {batch[0], Operation::SetWeight("be", "srv1", 1, 6), batch[2], batch[3]},
      {batch[0], Operation::SetWeight("be", "srv3", 1, 5), batch[2], batch[3]},
      {batch[0], batch[1], Operation::SetState("be", "srv1", 1, AdminState::kDrain), batch[3]},
      {batch[0], batch[1], batch[2], Operation::SetState("be", "srv2", 2, AdminState::kMaint)},
      {batch[1], batch[0], batch[2], batch[3]},
      {batch[0], batch[1], batch[2]},
  };
  for (const auto& other : others) {
    EXPECT_NE(BatchHash(other), BatchHash(batch)) << haproxy::Render(other.front());
  }
}

}  // namespace
}  // namespace hsdo::agent
