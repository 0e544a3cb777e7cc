#include "haproxy/reconciler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "haproxy/fake_haproxy.h"

namespace hsdo::haproxy {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::IsSupersetOf;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

const BackendConfig kBackend{.name = "be", .base_name = "srv", .port = 80};

ServerState Server(int id, std::string address, std::uint16_t port, AdminState admin, int weight) {
  const int bits = admin == AdminState::kMaint ? 5 : admin == AdminState::kDrain ? 8 : 4;
  return {.backend_id = 3,
          .id = id,
          .name = "srv" + std::to_string(id),
          .address = std::move(address),
          .port = port,
          .admin_bits = bits,
          .admin = admin,
          .weight = weight};
}

DesiredSlot Active(int id, std::string address, int weight,
                   std::optional<std::uint16_t> port = std::nullopt) {
  return {.id = id,
          .active = true,
          .target = {.address = std::move(address), .port = port, .name = "t"},
          .weight = weight};
}

DesiredSlot Free(int id) { return {.id = id}; }

std::vector<std::string> Texts(const BackendDiff& diff) {
  std::vector<std::string> texts;
  for (const auto& operation : diff.operations) texts.push_back(Render(operation));
  return texts;
}

BackendDiff Diff(std::vector<DesiredSlot> desired, std::vector<ServerState> actual,
                 const BackendConfig& backend = kBackend) {
  auto diff = Reconcile(backend, desired, actual);
  EXPECT_TRUE(diff.ok()) << diff.error().message;
  return diff.ok() ? std::move(*diff) : BackendDiff{};
}

TEST(Reconcile, FillsAPlaceholderInOrderAddrWeightReady) {
  const auto diff =
      Diff({Active(1, "10.0.0.1", 10)}, {Server(1, "127.0.0.2", 80, AdminState::kMaint, 1)});
  EXPECT_THAT(Texts(diff),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80",
                          "set server be/srv1 weight 10", "set server be/srv1 state ready"));
  EXPECT_EQ(diff.operations[0].kind, CommandKind::kAddr);
  EXPECT_EQ(diff.operations[1].kind, CommandKind::kWeight);
  EXPECT_EQ(diff.operations[2].kind, CommandKind::kState);
}

TEST(Reconcile, TableOfMinimalDiffs) {
  struct Case {
    const char* what;
    DesiredSlot desired;
    ServerState actual;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {"matching active slot: nothing",
       Active(2, "10.0.0.2", 5),
       Server(2, "10.0.0.2", 80, AdminState::kReady, 5),
       {}},
      {"only the weight differs",
       Active(2, "10.0.0.2", 6),
       Server(2, "10.0.0.2", 80, AdminState::kReady, 5),
       {"set server be/srv2 weight 6"}},
      {"only the port differs (target's own port wins)",
       Active(2, "10.0.0.2", 5, 8080),
       Server(2, "10.0.0.2", 80, AdminState::kReady, 5),
       {"set server be/srv2 addr 10.0.0.2 port 8080"}},
      {"drain is not ready",
       Active(2, "10.0.0.2", 5),
       Server(2, "10.0.0.2", 80, AdminState::kDrain, 5),
       {"set server be/srv2 state ready"}},
      {"free slot already in maint: nothing",
       Free(2),
       Server(2, "10.0.0.2", 80, AdminState::kMaint, 5),
       {}},
      {"free slot that is ready goes to maint",
       Free(2),
       Server(2, "10.0.0.2", 80, AdminState::kReady, 5),
       {"set server be/srv2 state maint"}},
      {"free slot that drains is not in maint",
       Free(2),
       Server(2, "10.0.0.2", 80, AdminState::kDrain, 5),
       {"set server be/srv2 state maint"}},
      {"IPv6 address in canonical form",
       Active(2, "2001:DB8::0:1", 5),
       Server(2, "127.0.0.2", 80, AdminState::kReady, 5),
       {"set server be/srv2 addr 2001:db8::1 port 80"}},
      {"HAProxy's IPv6 text compared canonically",
       Active(2, "2001:db8::1", 5),
       Server(2, "2001:db8:0::1", 80, AdminState::kReady, 5),
       {}},
      {"weight 0 is a valid weight",
       Active(2, "10.0.0.2", 0),
       Server(2, "10.0.0.2", 80, AdminState::kReady, 5),
       {"set server be/srv2 weight 0"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_EQ(Texts(Diff({c.desired}, {c.actual})), c.expected);
  }
}

TEST(Reconcile, RejectsAndNeverSendsInvalidValues) {
  const std::vector<DesiredSlot> desired = {
      Active(1, "1.2.3.4; shutdown sessions server be/srv1", 5),
      Active(2, "not-an-ip", 5),
      Active(3, "10.0.0.3", 257),
      Active(4, "10.0.0.4", -1),
      Active(5, "10.0.0.5", 5, 0),
      Active(6, "10.0.0.6\nshow info", 5),
      Active(7, "0.0.0.0", 5),
      Active(8, "::", 5),
  };
  std::vector<ServerState> actual;
  for (int id = 1; id <= 8; ++id)
    actual.push_back(Server(id, "127.0.0.9", 80, AdminState::kReady, 1));
  const auto diff = Diff(desired, actual);
  ASSERT_EQ(diff.invalid_slots.size(), 8u);
  EXPECT_EQ(diff.invalid_slots[0].slot_id, 1);
  EXPECT_NE(diff.invalid_slots[0].reason.find("not a server's IP literal"), std::string::npos);
  EXPECT_EQ(diff.invalid_slots[5].reason.find('\n'), std::string::npos);  // printable
  // Each bad slot is taken out of service, and none of its values appears in any command.
  for (const auto& operation : diff.operations) {
    EXPECT_THAT(Render(operation), ::testing::EndsWith("state maint"));
    EXPECT_EQ(Render(operation).find(';'), std::string::npos);
  }
  EXPECT_EQ(diff.operations.size(), 8u);
}

TEST(Reconcile, ServersAboveTheListSizeAreTakenOutWhenAsked) {
  std::vector<ServerState> actual = {Server(1, "127.0.0.2", 80, AdminState::kMaint, 1),
                                     Server(2, "10.0.0.2", 80, AdminState::kReady, 10),
                                     Server(3, "10.0.0.3", 80, AdminState::kMaint, 10),
                                     Server(4, "10.0.0.4", 80, AdminState::kDrain, 10)};
  ServerState other = Server(5, "10.0.0.5", 80, AdminState::kReady, 10);
  other.name = "srv05";  // not a template server's name
  actual.push_back(other);
  other.name = "static";
  actual.push_back(other);
  other.name = "srv99";  // a backup server written by hand after the template: id 5
  actual.push_back(other);
  const std::vector<DesiredSlot> desired = {Free(1)};
  EXPECT_THAT(Texts(Diff(desired, actual)), IsEmpty());
  const auto diff = Reconcile(kBackend, desired, actual, {.take_out_above = 1});
  ASSERT_TRUE(diff);
  EXPECT_THAT(Texts(*diff),
              ElementsAre("set server be/srv2 state maint", "set server be/srv4 state maint"));
}

TEST(Reconcile, InvalidBackendOrBaseName) {
  const std::vector<DesiredSlot> desired{Free(1)};
  const std::vector<ServerState> actual{Server(1, "127.0.0.2", 80, AdminState::kMaint, 1)};
  EXPECT_FALSE(Reconcile({.name = "be;x", .base_name = "srv"}, desired, actual).ok());
  EXPECT_FALSE(Reconcile({.name = "be", .base_name = "s v"}, desired, actual).ok());
  EXPECT_FALSE(Reconcile({.name = "", .base_name = "srv"}, desired, actual).ok());
}

TEST(Reconcile, ReportsSlotsHaproxyDoesNotHave) {
  const auto diff = Diff({Active(1, "10.0.0.1", 1), Active(2, "10.0.0.2", 1), Free(3)},
                         {Server(1, "10.0.0.1", 80, AdminState::kReady, 1)});
  EXPECT_THAT(Texts(diff), IsEmpty());
  EXPECT_THAT(diff.missing_slots, ElementsAre(2, 3));
}

TEST(Reconcile, BackendPortAndBaseName) {
  const BackendConfig other{.name = "api", .base_name = "node", .port = 9000};
  ServerState actual = Server(1, "127.0.0.2", 80, AdminState::kMaint, 1);
  actual.name = "node1";
  EXPECT_THAT(Texts(Diff({Active(1, "10.0.0.1", 1)}, {actual}, other)),
              ElementsAre("set server api/node1 addr 10.0.0.1 port 9000",
                          "set server api/node1 state ready"));
}

// Invariant 4: the same desired state applied to the state it produced sends nothing.
TEST(Reconcile, ApplyingTwiceSendsNothingTheSecondTime) {
  FakeHaproxy haproxy;
  haproxy.AddBackend("be", "srv", 10);
  std::vector<DesiredSlot> desired;
  for (int id = 1; id <= 10; ++id) {
    desired.push_back(
        id % 3 == 0 ? Free(id)
                    : Active(id, "10.0.0." + std::to_string(id), id,
                             id % 2 ? std::optional<std::uint16_t>(8000 + id) : std::nullopt));
  }
  desired[4] = Active(5, "bad address", 3);
  for (int round = 0; round < 2; ++round) {
    auto state = ParseServersState(haproxy.Execute({"show servers state be"})->front());
    ASSERT_TRUE(state.ok());
    const auto diff = Diff(desired, *state);
    if (round == 1) {
      EXPECT_THAT(Texts(diff), IsEmpty());
      break;
    }
    EXPECT_FALSE(diff.operations.empty());
    auto replies = haproxy.Apply(diff.operations);
    ASSERT_TRUE(replies.ok());
    for (std::size_t i = 0; i < diff.operations.size(); ++i) {
      EXPECT_FALSE(ReplyError(diff.operations[i].kind, (*replies)[i]).has_value()) << (*replies)[i];
    }
  }
  EXPECT_EQ(haproxy.server("be", "srv1").port, 8001);
  EXPECT_EQ(haproxy.server("be", "srv2").port, 80);
  EXPECT_EQ(haproxy.server("be", "srv3").admin, AdminState::kMaint);
  EXPECT_EQ(haproxy.server("be", "srv5").admin, AdminState::kMaint);
  EXPECT_EQ(haproxy.server("be", "srv5").address, "127.0.0.2");
}

// ---- Issue 10: draining slots, operator overrides, health-gated admission -----------------

namespace lifecycle {

using CoreAdmin = ::hsdo::AdminState;

std::vector<DesiredSlot> DesiredOf(SlotStatus status, CoreAdmin admin) {
  SlotTable table = SlotTable::Empty(1);
  table.slots[0].admin = admin;  // a free slot never has one: it must not matter if it does
  if (status != SlotStatus::kDisabled) {
    table.slots[0] = Slot{.id = 1,
                          .status = status,
                          .target = {.address = "10.0.0.1", .name = "web-1"},
                          .weight = 7,
                          .admin = admin};
  }
  return DesiredSlotsFor(table, BackendRole::kPrimary, {});
}

// Every state transition of one slot (free / enabled / draining x override none / drain /
// maint) from every HAProxy state (ready / drain / maint), at its own address and weight.
TEST(ReconcileLifecycle, EveryStateTransition) {
  struct Case {
    SlotStatus status;
    CoreAdmin admin;
    AdminState want;  // HAProxy state the slot must end in
  };
  const std::vector<Case> cases = {
      {SlotStatus::kDisabled, CoreAdmin::kNone, AdminState::kMaint},
      {SlotStatus::kDisabled, CoreAdmin::kDrain, AdminState::kMaint},
      {SlotStatus::kDisabled, CoreAdmin::kMaint, AdminState::kMaint},
      {SlotStatus::kEnabled, CoreAdmin::kNone, AdminState::kReady},
      {SlotStatus::kEnabled, CoreAdmin::kDrain, AdminState::kDrain},
      {SlotStatus::kEnabled, CoreAdmin::kMaint, AdminState::kMaint},
      {SlotStatus::kDraining, CoreAdmin::kNone, AdminState::kDrain},
      {SlotStatus::kDraining, CoreAdmin::kDrain, AdminState::kDrain},
      {SlotStatus::kDraining, CoreAdmin::kMaint, AdminState::kMaint},
  };
  for (const auto& c : cases) {
    for (const auto from : {AdminState::kReady, AdminState::kDrain, AdminState::kMaint}) {
      SCOPED_TRACE(fmt::format("status {} admin {} from {}", static_cast<int>(c.status),
                               static_cast<int>(c.admin), ToString(from)));
      const auto desired = DesiredOf(c.status, c.admin);
      if (c.status == SlotStatus::kDisabled) {
        EXPECT_FALSE(desired[0].active);
      } else {
        EXPECT_EQ(desired[0].state, c.want);
      }
      const auto diff = Diff(desired, {Server(1, "10.0.0.1", 80, from, 7)});
      std::vector<std::string> expected;
      if (from != c.want) {
        expected.push_back(fmt::format("set server be/srv1 state {}", ToString(c.want)));
      }
      EXPECT_EQ(Texts(diff), expected);
      // The slot keeps its address and weight whatever its state: nothing else is sent.
      EXPECT_THAT(diff.pending_slots, IsEmpty());
    }
  }
}

TEST(ReconcileLifecycle, DrainingSlotKeepsItsAddressAndWeightAfterAReload) {
  // A reload without a state file: the draining slot is back at the placeholder, in maint.
  const auto diff = Diff(DesiredOf(SlotStatus::kDraining, CoreAdmin::kNone),
                         {Server(1, "127.0.0.2", 80, AdminState::kMaint, 1)});
  EXPECT_THAT(Texts(diff), ElementsAre("set server be/srv1 state drain",
                                       "set server be/srv1 addr 10.0.0.1 port 80",
                                       "set server be/srv1 weight 7"));
}

TEST(ReconcileLifecycle, DrainingTargetThatComesBackIsReadyAtItsWeight) {
  // Table: draining -> enabled again (same target, same slot). HAProxy still drains it.
  const auto diff = Diff(DesiredOf(SlotStatus::kEnabled, CoreAdmin::kNone),
                         {Server(1, "10.0.0.1", 80, AdminState::kDrain, 7)});
  EXPECT_THAT(Texts(diff), ElementsAre("set server be/srv1 state ready"));
}

TEST(ReconcileLifecycle, OverrideOnADrainingSlotAndItsRemoval) {
  EXPECT_THAT(Texts(Diff(DesiredOf(SlotStatus::kDraining, CoreAdmin::kMaint),
                         {Server(1, "10.0.0.1", 80, AdminState::kDrain, 7)})),
              ElementsAre("set server be/srv1 state maint"));
  // `ready` clears the override: back to drain, since the slot still drains.
  EXPECT_THAT(Texts(Diff(DesiredOf(SlotStatus::kDraining, CoreAdmin::kNone),
                         {Server(1, "10.0.0.1", 80, AdminState::kMaint, 7)})),
              ElementsAre("set server be/srv1 state drain"));
  // An override removed from an enabled slot: ready at its weight.
  EXPECT_THAT(Texts(Diff(DesiredOf(SlotStatus::kEnabled, CoreAdmin::kNone),
                         {Server(1, "10.0.0.1", 80, AdminState::kMaint, 3)})),
              ElementsAre("set server be/srv1 weight 7", "set server be/srv1 state ready"));
}

ServerState Checked(ServerState server, int op_state, int check_result) {
  server.check_state = 0x06;  // CONFIGURED | ENABLED
  server.op_state = op_state;
  server.check_result = check_result;
  return server;
}

// Another server of the backend serves (slot 9, outside `desired`), unless `alone`.
BackendDiff Gated(std::vector<DesiredSlot> desired, std::vector<ServerState> actual,
                  const AdmittedSet& admitted = {}, bool gating = true, bool alone = false) {
  if (!alone) actual.push_back(Checked(Server(9, "10.0.0.99", 80, AdminState::kReady, 5), 2, 3));
  auto diff =
      Reconcile(kBackend, desired, actual, {.admission_gating = gating, .admitted = &admitted});
  EXPECT_TRUE(diff.ok());
  return diff.ok() ? std::move(*diff) : BackendDiff{};
}

TEST(ReconcileAdmission, NewSlotEntersAtWeightZeroAndIsForcedDown) {
  const auto diff = Gated({Active(1, "10.0.0.1", 10)},
                          {Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0)});
  EXPECT_THAT(Texts(diff),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 0",
                          "set server be/srv1 state ready", "set server be/srv1 health down"));
  EXPECT_THAT(diff.pending_slots, ElementsAre(1));
  EXPECT_THAT(diff.admitted, IsEmpty());
}

// Found in review: after a list size shrank, the orchestrator moved the targets from slots
// above it to slots below, and the servers above (taken out in the same diff) counted as
// serving: the new slots were gated, and the backend served nothing until their checks passed.
TEST(ReconcileAdmission, ServersTakenOutAboveTheListSizeDoNotCountAsServing) {
  const std::vector<ServerState> actual = {
      Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0),
      Checked(Server(2, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0),
      Checked(Server(3, "10.0.0.3", 80, AdminState::kReady, 10), 2, 3),
      Checked(Server(4, "10.0.0.4", 80, AdminState::kReady, 10), 2, 3)};
  const AdmittedSet none;
  const std::vector<DesiredSlot> desired = {Active(1, "10.0.0.3", 10), Active(2, "10.0.0.4", 10)};
  const auto diff = Reconcile(kBackend, desired, actual,
                              {.admission_gating = true, .admitted = &none, .take_out_above = 2});
  ASSERT_TRUE(diff);
  EXPECT_THAT(diff->pending_slots, IsEmpty());
  EXPECT_THAT(Texts(*diff),
              IsSupersetOf({"set server be/srv1 weight 10", "set server be/srv2 weight 10",
                            "set server be/srv3 state maint", "set server be/srv4 state maint"}));
  // One above the list size and one below that serves on: the new slot waits for its check.
  std::vector<ServerState> one_stays = actual;
  one_stays[1] = Checked(Server(2, "10.0.0.4", 80, AdminState::kReady, 10), 2, 3);
  const auto gated = Reconcile(kBackend, desired, one_stays,
                               {.admission_gating = true, .admitted = &none, .take_out_above = 2});
  ASSERT_TRUE(gated);
  EXPECT_THAT(gated->pending_slots, ElementsAre(1));
}

TEST(ReconcileAdmission, WaitsForAPassingCheckThenGivesTheWeight) {
  // `state ready` made it UP before any check (result 0), or its checks fail (DOWN): wait.
  for (const auto& [op_state, result] : {std::pair{2, 0}, std::pair{0, 2}, std::pair{0, 3}}) {
    const auto wait =
        Gated({Active(1, "10.0.0.1", 10)},
              {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 0), op_state, result)});
    EXPECT_THAT(Texts(wait), IsEmpty());
    EXPECT_THAT(wait.pending_slots, ElementsAre(1));
  }
  const auto pass = Gated({Active(1, "10.0.0.1", 10)},
                          {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 0), 2, 3)});
  EXPECT_THAT(Texts(pass), ElementsAre("set server be/srv1 weight 10"));
  EXPECT_EQ(pass.admissions, 1);
  EXPECT_THAT(pass.pending_slots, IsEmpty());
  EXPECT_THAT(pass.admitted, ElementsAre("be/srv1 10.0.0.1:80|t"));
}

// Found in review: with `slowstart` a server that passed its check is "starting" (op state 1)
// for the whole slow start. A new server waited that long for its first weight, and servers in
// slow start did not count as serving, so a new one was not gated at all.
TEST(ReconcileAdmission, AServerInSlowStartIsUp) {
  const auto pass = Gated({Active(1, "10.0.0.1", 10)},
                          {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 0), 1, 3)});
  EXPECT_THAT(Texts(pass), ElementsAre("set server be/srv1 weight 10"));
  EXPECT_EQ(pass.admissions, 1);
  const auto gated = Gated({Active(1, "10.0.0.1", 10), Active(2, "10.0.0.2", 10)},
                           {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 10), 1, 3),
                            Checked(Server(2, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0)});
  EXPECT_THAT(gated.pending_slots, ElementsAre(2));  // srv1 serves: the new one waits its check
}

// Found in review: with HAPROXY_BACKEND_SERVER_MIN_WEIGHT=0 a new target enters at weight 0. It
// was not gated (it takes no traffic), but was admitted at once, without `health down`, so its
// first weight step gave it traffic with no check passed at its address. It is staged now.
TEST(ReconcileAdmission, ATargetAtWeightZeroIsGatedToo) {
  const auto staged = Gated({Active(1, "10.0.0.1", 0)},
                            {Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 2, 3)});
  EXPECT_THAT(Texts(staged),
              ElementsAre("set server be/srv1 addr 10.0.0.1 port 80", "set server be/srv1 weight 0",
                          "set server be/srv1 state ready", "set server be/srv1 health down"));
  EXPECT_THAT(staged.pending_slots, ElementsAre(1));
  EXPECT_THAT(staged.admitted, IsEmpty());
  // Its first weight step before a check passed: still 0.
  const auto unchecked = Gated({Active(1, "10.0.0.1", 1)},
                               {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 0), 0, 2)});
  EXPECT_THAT(Texts(unchecked), IsEmpty());
  EXPECT_THAT(unchecked.pending_slots, ElementsAre(1));
  // A passing check at weight 0 admits it, with nothing to send.
  const auto passed = Gated({Active(1, "10.0.0.1", 0)},
                            {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 0), 2, 3)});
  EXPECT_THAT(Texts(passed), IsEmpty());
  EXPECT_THAT(passed.admitted, ElementsAre("be/srv1 10.0.0.1:80|t"));
}

TEST(ReconcileAdmission, ANewAddressOnAServingSlotLeavesServiceFirst) {
  const auto diff = Gated({Active(1, "10.0.0.9", 10)},
                          {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 10), 2, 3)});
  EXPECT_THAT(Texts(diff),
              ElementsAre("set server be/srv1 state maint",
                          "set server be/srv1 addr 10.0.0.9 port 80", "set server be/srv1 weight 0",
                          "set server be/srv1 state ready", "set server be/srv1 health down"));
}

TEST(ReconcileAdmission, NotGated) {
  const std::vector<std::string> at_once = {"set server be/srv1 addr 10.0.0.1 port 80",
                                            "set server be/srv1 weight 10",
                                            "set server be/srv1 state ready"};
  const auto placeholder = Server(1, "127.0.0.2", 80, AdminState::kMaint, 1);
  // Without `check` on the server, with gating off, or at an address this node admitted.
  EXPECT_EQ(Texts(Gated({Active(1, "10.0.0.1", 10)}, {placeholder})), at_once);
  EXPECT_EQ(Texts(Gated({Active(1, "10.0.0.1", 10)}, {Checked(placeholder, 0, 0)}, {}, false)),
            at_once);
  EXPECT_EQ(Texts(Gated({Active(1, "10.0.0.1", 10)}, {Checked(placeholder, 0, 0)},
                        {"be/srv1 10.0.0.1:80|t"})),
            at_once);
  // A server already serving at its address (weight > 0) is only adjusted, and remembered.
  const auto serving = Gated({Active(1, "10.0.0.1", 10)},
                             {Checked(Server(1, "10.0.0.1", 80, AdminState::kReady, 4), 0, 2)});
  EXPECT_THAT(Texts(serving), ElementsAre("set server be/srv1 weight 10"));
  EXPECT_THAT(serving.admitted, ElementsAre("be/srv1 10.0.0.1:80|t"));
  // Draining slots are never gated.
  auto drain = Active(1, "10.0.0.1", 10);
  drain.state = AdminState::kDrain;
  EXPECT_THAT(Gated({drain}, {Checked(placeholder, 0, 0)}).pending_slots, IsEmpty());
}

TEST(ReconcileAdmission, GatingNeverEmptiesABackend) {
  // Nothing else serves (HAProxy and the agent both started afresh, no state file): the
  // weights go out at once, since waiting would leave the backend with no server at all.
  const auto diff = Gated({Active(1, "10.0.0.1", 10), Active(2, "10.0.0.2", 10)},
                          {Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0),
                           Checked(Server(2, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0)},
                          {}, true, /*alone=*/true);
  EXPECT_THAT(diff.pending_slots, IsEmpty());
  EXPECT_THAT(Texts(diff), Contains("set server be/srv1 weight 10"));
  // A weighted server that its checks keep DOWN does not serve either.
  const auto down = Gated({Active(1, "10.0.0.1", 10)},
                          {Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0),
                           Checked(Server(2, "10.0.0.2", 80, AdminState::kReady, 5), 0, 2)},
                          {}, true, /*alone=*/true);
  EXPECT_THAT(down.pending_slots, IsEmpty());
  // One serving neighbour is enough to gate.
  const auto gated = Gated({Active(1, "10.0.0.1", 10)},
                           {Checked(Server(1, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0),
                            Checked(Server(2, "10.0.0.2", 80, AdminState::kReady, 5), 2, 3)},
                           {}, true, /*alone=*/true);
  EXPECT_THAT(gated.pending_slots, ElementsAre(1));
}

// Found in review: the servers that served were counted before the diff, so a new slot was
// gated while the same diff took out the only servers that served (a replaced target, a
// freed slot, a drain): the backend had no weighted server until the next cycle.
TEST(ReconcileAdmission, GatingCountsOnlyTheServersThatStillServeAfterTheDiff) {
  const auto serving = [](int id) {
    return Checked(Server(id, "10.0.0." + std::to_string(id), 80, AdminState::kReady, 5), 2, 3);
  };
  const auto fresh = Checked(Server(3, "127.0.0.2", 80, AdminState::kMaint, 1), 0, 0);
  auto drain = Active(2, "10.0.0.2", 5);
  drain.state = AdminState::kDrain;
  // Slot 1 freed, slot 2 drains, slot 3 new: nothing else serves, so slot 3 is not gated.
  const auto diff = Gated({Free(1), drain, Active(3, "10.0.0.3", 5)},
                          {serving(1), serving(2), fresh}, {}, true, /*alone=*/true);
  EXPECT_THAT(diff.pending_slots, IsEmpty());
  EXPECT_THAT(Texts(diff), Contains("set server be/srv3 weight 5"));
  // Slot 1 re-addressed to a new target, or its weight taken to 0: not serving either.
  for (const auto& one : {Active(1, "10.0.0.7", 5), Active(1, "10.0.0.1", 0)}) {
    const auto replaced = Gated({one, Active(3, "10.0.0.3", 5)}, {serving(1), fresh}, {}, true,
                                /*alone=*/true);
    EXPECT_THAT(replaced.pending_slots, Not(Contains(3)));
    EXPECT_THAT(replaced.held_slots, IsEmpty());
  }
  // Slot 2 still serves: slot 3 waits for its check.
  const auto gated = Gated({Free(1), Active(2, "10.0.0.2", 5), Active(3, "10.0.0.3", 5)},
                           {serving(1), serving(2), fresh}, {}, true, /*alone=*/true);
  EXPECT_THAT(gated.pending_slots, ElementsAre(3));
}

// Found in review: a port mistyped on the agents (HAPROXY_BACKEND_SERVER_PORT, targets without
// a port) re-addressed every serving server at once, and not gated, since no other server would
// serve: every server took traffic at a port nothing listens on, until its checks failed. A
// backend's serving servers now change address a quarter at a time, each gated; the next
// quarter once those serve again.
// Slots 1-8 at weight 5, targets without a port, their servers serving at port 8080.
void EightServingAt8080(std::vector<DesiredSlot>& desired, std::vector<ServerState>& actual) {
  for (int id = 1; id <= 8; ++id) {
    const std::string ip = "10.0.0." + std::to_string(id);
    desired.push_back(Active(id, ip, 5));
    actual.push_back(Checked(Server(id, ip, 8080, AdminState::kReady, 5), 2, 3));
  }
}

TEST(ReconcileReaddress, ServingServersChangeAddressAQuarterAtATime) {
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  EightServingAt8080(desired, actual);
  // The agents' port: 8080, then 8008 (targets have no port: the backend's is theirs).
  const BackendConfig typo{.name = "be", .base_name = "srv", .port = 8008};
  const auto reconcile = [&](const std::vector<ServerState>& servers) {
    auto diff = Reconcile(typo, desired, servers, {.admission_gating = true});
    EXPECT_TRUE(diff.ok());
    return diff.ok() ? std::move(*diff) : BackendDiff{};
  };
  const auto first = reconcile(actual);
  EXPECT_THAT(first.pending_slots, ElementsAre(1, 2));  // staged at weight 0, gated
  EXPECT_THAT(first.held_slots, ElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(first), Contains("set server be/srv2 health down"));
  EXPECT_THAT(Texts(first), Not(Contains(HasSubstr("srv3"))));
  // Slots 1 and 2 staged at 8008, their checks failing there: nothing more moves.
  for (const int id : {1, 2}) {
    auto& server = actual[static_cast<std::size_t>(id - 1)];
    server = Checked(Server(id, server.address, 8008, AdminState::kReady, 0), 0, 2);
  }
  const auto stuck = reconcile(actual);
  EXPECT_THAT(stuck.pending_slots, ElementsAre(1, 2));
  EXPECT_THAT(stuck.held_slots, ElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(stuck), IsEmpty());
  // Their checks pass: the diff that gives them their weight moves the next quarter.
  for (const int id : {1, 2}) {
    auto& server = actual[static_cast<std::size_t>(id - 1)];
    server = Checked(Server(id, server.address, 8008, AdminState::kReady, 0), 2, 3);
  }
  const auto admitting = reconcile(actual);
  EXPECT_EQ(admitting.admissions, 2);
  EXPECT_THAT(admitting.pending_slots, ElementsAre(3, 4));
  EXPECT_THAT(admitting.held_slots, ElementsAre(5, 6, 7, 8));
  // Served again, with 3 and 4 staged: nothing more until those pass.
  for (const int id : {1, 2}) {
    auto& server = actual[static_cast<std::size_t>(id - 1)];
    server = Checked(Server(id, server.address, 8008, AdminState::kReady, 5), 2, 3);
  }
  for (const int id : {3, 4}) {
    auto& server = actual[static_cast<std::size_t>(id - 1)];
    server = Checked(Server(id, server.address, 8008, AdminState::kReady, 0), 0, 0);
  }
  const auto next = reconcile(actual);
  EXPECT_THAT(next.pending_slots, ElementsAre(3, 4));
  EXPECT_THAT(next.held_slots, ElementsAre(5, 6, 7, 8));
}

// Review of 66b7cb0: a server staged at the new port whose `health down` may not have run (the
// batch cut after `state ready`) is UP on its old port's check: it proved the new port, so the
// next quarter moved to a port that may be a typo. It counts as a move under way instead.
TEST(ReconcileReaddress, AStagingWithoutItsHealthDownProvesNoPort) {
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  EightServingAt8080(desired, actual);
  actual[0] = Checked(Server(1, "10.0.0.1", 8008, AdminState::kReady, 0), 2, 3);
  actual[7] = Checked(Server(8, "10.0.0.8", 8080, AdminState::kReady, 5), 0, 2);  // DOWN there
  const BackendConfig typo{.name = "be", .base_name = "srv", .port = 8008};
  const StagingSet unconfirmed = {StagingKey("be", "srv1")};
  auto diff = Reconcile(typo, desired, actual,
                        {.admission_gating = true, .unconfirmed_stagings = &unconfirmed});
  ASSERT_TRUE(diff.ok()) << diff.error().message;
  EXPECT_EQ(diff->admissions, 0);
  // Slot 1 takes the quarter (of 7): nothing else moves, not even slot 8, DOWN at the old
  // port (the new port would have been proven: every server DOWN at the old one would move).
  EXPECT_THAT(diff->pending_slots, ElementsAre(1));
  EXPECT_THAT(diff->held_slots, ElementsAre(2, 3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv1 health down"));
  actual[7] = Checked(Server(8, "10.0.0.8", 8080, AdminState::kReady, 5), 2, 3);
  // Review: once it serves at its weight (given without gating: nothing else served), an entry
  // left over holds nothing, or the move would stall for good.
  actual[0] = Checked(Server(1, "10.0.0.1", 8008, AdminState::kReady, 5), 2, 3);
  auto served = Reconcile(typo, desired, actual,
                          {.admission_gating = true, .unconfirmed_stagings = &unconfirmed});
  ASSERT_TRUE(served.ok()) << served.error().message;
  EXPECT_THAT(served->pending_slots, ElementsAre(2, 3));
  EXPECT_THAT(served->held_slots, ElementsAre(4, 5, 6, 7, 8));
}

// Found in review of the first version, which held every re-address of a serving server: a
// target replaced in its slot (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT 0 frees and refills a slot
// in one plan) stayed on its old instance, on its way out, and servers DOWN or not yet admitted
// held the rest for good. Only a port change of targets without a port is held, and only the
// moves staged at the new port count against the quarter.
TEST(ReconcileReaddress, OnlyThePortOfPortlessTargetsIsHeld) {
  const auto serving = [](int id, std::uint16_t port) {
    return Checked(Server(id, "10.0.0." + std::to_string(id), port, AdminState::kReady, 5), 2, 3);
  };
  const BackendConfig moved{.name = "be", .base_name = "srv", .port = 8008};
  // New instances in slots 1 and 2 (a rolling replacement), slot 3 waiting for its check.
  std::vector<DesiredSlot> desired = {Active(1, "10.0.0.11", 5), Active(2, "10.0.0.12", 5),
                                      Active(3, "10.0.0.3", 5), Active(4, "10.0.0.4", 5)};
  std::vector<ServerState> actual = {
      serving(1, 8008), serving(2, 8008),
      Checked(Server(3, "10.0.0.3", 8008, AdminState::kReady, 0), 0, 2), serving(4, 8008)};
  auto diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, IsEmpty());
  // Targets with a port of their own: the table's port, never the agent's, is no typo here.
  desired = {Active(1, "10.0.0.1", 5, 9000), Active(2, "10.0.0.2", 5, 9000)};
  actual = {serving(1, 8080), serving(2, 8080)};
  diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, IsEmpty());
}

// Review of 3ebeeed: switching from the Python HSDO in Consul mode, every record without a port
// takes its service's port in place (PlanSlots). Where that port is not the agents' (servers at
// the backend's port), every server moved to it at once, ungated (none other would serve): a
// port nothing listens on failed every request of the fleet. They move a quarter at a time.
TEST(ReconcileReaddress, RecordsThatTookTheirTargetsPortMoveAQuarterAtATime) {
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  EightServingAt8080(desired, actual);
  for (auto& slot : desired) slot.target.port = 9000;
  const BackendConfig backend{.name = "be", .base_name = "srv", .port = 8080};
  auto diff = Reconcile(backend, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok()) << diff.error().message;
  EXPECT_THAT(diff->pending_slots, ElementsAre(1, 2));
  EXPECT_THAT(diff->held_slots, ElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv1 addr 10.0.0.1 port 9000"));
}

// Review of e74d71c: a held server that went DOWN at the old port for a moment (an app
// restarted, a blip) was no longer held, moved to the mistyped port at once and failed there for
// good: one by one the typo spread to every server. A target DOWN before the move moved at
// once too, and failing at the new port, counted as a move under way for ever. Until a server
// serves at the new port, servers DOWN at the old port count in the quarter, and go first (the
// cheapest probes: review of 7fcef44, where they waited and an app moving instance by instance
// lost most of its servers meanwhile). Held servers' weights still follow the table.
TEST(ReconcileReaddress, ServersDownAtTheOldPortShareTheQuarterUntilTheNewPortAnswers) {
  const BackendConfig moved{.name = "be", .base_name = "srv", .port = 8008};
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  for (int id = 1; id <= 4; ++id) {
    const std::string ip = "10.0.0." + std::to_string(id);
    desired.push_back(Active(id, ip, 10));
    actual.push_back(Checked(Server(id, ip, 8080, AdminState::kReady, 5), 2, 3));
  }
  actual[3].op_state = 0;  // slot 4 DOWN at 8080
  auto diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->pending_slots, ElementsAre(4));
  EXPECT_THAT(diff->held_slots, UnorderedElementsAre(1, 2, 3));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv4 addr 10.0.0.4 port 8008"));
  EXPECT_THAT(Texts(*diff), Not(Contains(HasSubstr("srv1 addr"))));
  // The held ones take the table's weight at their port.
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv2 weight 10"));
  // Slot 4 fails at the new port; slot 2 goes DOWN for a moment: it stays where it is.
  actual[3] = Checked(Server(4, "10.0.0.4", 8008, AdminState::kReady, 0), 0, 2);
  actual[1].op_state = 0;
  diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, UnorderedElementsAre(1, 2, 3));
  EXPECT_THAT(Texts(*diff), Not(Contains(HasSubstr(" addr "))));
  // Slot 4 serves at the new port: the ones DOWN at the old one go, the others by the quarter.
  actual[3] = Checked(Server(4, "10.0.0.4", 8008, AdminState::kReady, 10), 2, 3);
  diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, ElementsAre(3));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv2 addr 10.0.0.2 port 8008"));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv1 addr 10.0.0.1 port 8008"));
}

// Found in review (feature interactions): the app moved to the new port, so every server was
// DOWN at the old one, and the first probed was slot 1, a dead instance (DOWN for an hour): it
// never passed at the new port, held the others for ever, and every node's backend stayed
// empty. The one that went DOWN last is probed first.
TEST(ReconcileReaddress, TheServerThatWentDownLastIsProbedFirst) {
  const BackendConfig moved{.name = "be", .base_name = "srv", .port = 8008};
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  for (int id = 1; id <= 4; ++id) {
    const std::string ip = "10.0.0." + std::to_string(id);
    desired.push_back(Active(id, ip, 10));
    actual.push_back(Checked(Server(id, ip, 8080, AdminState::kReady, 10), 0, 2));
    actual.back().since_change = id == 1 ? 3600 : 10 - id;  // slot 4 went DOWN last
  }
  auto diff = Reconcile(moved, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, UnorderedElementsAre(1, 2, 3));
  EXPECT_THAT(Texts(*diff), Contains("set server be/srv4 addr 10.0.0.4 port 8008"));
  EXPECT_THAT(Texts(*diff), Not(Contains(HasSubstr("srv1 addr"))));
}

// Review of 7fcef44: with the servers at the old port all DOWN at once (a shared dependency
// failing every check), nothing served there, so nothing was held: every server went to the
// mistyped port, and stayed there once the dependency came back. Until a server serves at the
// new port, the ones DOWN at the old port wait while a move is under way.
TEST(ReconcileReaddress, AllDownAtOnceDoesNotSpreadAMistypedPort) {
  const BackendConfig typo{.name = "be", .base_name = "srv", .port = 8008};
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> actual;
  for (int id = 1; id <= 8; ++id) {
    const std::string ip = "10.0.0." + std::to_string(id);
    desired.push_back(Active(id, ip, 5));
    // Slots 1 and 2 staged at the typo, failing; the others DOWN at 8080 for the moment.
    actual.push_back(id <= 2 ? Checked(Server(id, ip, 8008, AdminState::kReady, 0), 0, 2)
                             : Checked(Server(id, ip, 8080, AdminState::kReady, 5), 0, 2));
  }
  auto diff = Reconcile(typo, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, UnorderedElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(*diff), Not(Contains(HasSubstr(" addr "))));
  // Nothing served, so slots 1 and 2 got their weight ungated (gating never empties a
  // backend); DOWN at the typo, they are still a move under way once the others are back.
  for (int id = 1; id <= 8; ++id) {
    auto& server = actual[static_cast<std::size_t>(id - 1)];
    server = Checked(Server(id, server.address, server.port, AdminState::kReady, 5),
                     id <= 2 ? 0 : 2, id <= 2 ? 2 : 3);
  }
  diff = Reconcile(typo, desired, actual, {.admission_gating = true});
  ASSERT_TRUE(diff.ok());
  EXPECT_THAT(diff->held_slots, UnorderedElementsAre(3, 4, 5, 6, 7, 8));
  EXPECT_THAT(Texts(*diff), Not(Contains(HasSubstr(" addr "))));
}

// A single server changes address at once (it could not be rolled); without `check` or
// without gating nothing could tell that the new address answers: all at once, as before.
TEST(ReconcileReaddress, ALoneServerOrServersWithoutChecksChangeAtOnce) {
  const auto alone = Gated({Active(1, "10.0.0.1", 5)},
                           {Checked(Server(1, "10.0.0.1", 8080, AdminState::kReady, 5), 2, 3)}, {},
                           true, /*alone=*/true);
  EXPECT_THAT(alone.held_slots, IsEmpty());
  EXPECT_THAT(Texts(alone), Contains("set server be/srv1 addr 10.0.0.1 port 80"));
  std::vector<DesiredSlot> desired;
  std::vector<ServerState> unchecked;
  for (int id = 1; id <= 4; ++id) {
    desired.push_back(Active(id, "10.0.0." + std::to_string(id), 5));
    auto server = Server(id, "10.0.0." + std::to_string(id), 8080, AdminState::kReady, 5);
    server.op_state = ServerState::kOpRunning;
    unchecked.push_back(server);
  }
  for (const bool gating : {true, false}) {
    const auto diff = Reconcile(kBackend, desired, unchecked, {.admission_gating = gating});
    ASSERT_TRUE(diff.ok());
    EXPECT_THAT(diff->held_slots, IsEmpty()) << gating;
  }
}

// Invariant 4 with admissions: once the checks pass, a second reconcile sends nothing.
TEST(ReconcileAdmission, ApplyingTwiceAfterThePassSendsNothing) {
  FakeHaproxy haproxy;
  haproxy.AddBackend("be", "srv", 3, 80, /*check=*/true);
  const std::vector<DesiredSlot> desired = {Active(1, "10.0.0.1", 5), Active(2, "10.0.0.2", 6),
                                            Free(3)};
  AdmittedSet admitted;
  auto reconcile = [&] {
    auto state = ParseServersState(haproxy.Execute({"show servers state be"})->front());
    EXPECT_TRUE(state.ok());
    auto diff = Gated(desired, *state, admitted);
    EXPECT_TRUE(haproxy.Apply(diff.operations).ok());
    admitted = diff.admitted;
    return diff;
  };
  EXPECT_THAT(reconcile().pending_slots, ElementsAre(1, 2));
  EXPECT_EQ(haproxy.server("be", "srv1").weight, 0);
  EXPECT_THAT(reconcile().operations, IsEmpty());  // still waiting
  haproxy.PassChecks("be", "srv1");
  haproxy.FailChecks("be", "srv2");
  const auto one = reconcile();
  EXPECT_THAT(Texts(one), ElementsAre("set server be/srv1 weight 5"));
  EXPECT_THAT(one.pending_slots, ElementsAre(2));
  haproxy.PassChecks("be", "srv2");
  EXPECT_THAT(Texts(reconcile()), ElementsAre("set server be/srv2 weight 6"));
  const auto last = reconcile();
  EXPECT_THAT(last.operations, IsEmpty());
  EXPECT_THAT(last.pending_slots, IsEmpty());
  // A reload (every server back to the placeholder in maint) returns admitted slots at once.
  haproxy.Reload();
  EXPECT_THAT(reconcile().pending_slots, IsEmpty());
  EXPECT_EQ(haproxy.server("be", "srv1").weight, 5);
  EXPECT_EQ(haproxy.server("be", "srv1").admin, AdminState::kReady);
}

// Found in review: on a backend with a static algorithm HAProxy refuses every weight but 0
// and the configured one, so a slot staged at weight 0 for its check stayed there for good.
// There a slot gets its server's initial weight, once its check passes as anywhere else.
TEST(ReconcileAdmission, AStaticAlgorithmGetsTheInitialWeightAfterThePass) {
  FakeHaproxy haproxy;
  haproxy.AddBackend("be", "srv", 2, 80, /*check=*/true);
  haproxy.UseStaticAlgorithm("be");
  const std::vector<DesiredSlot> desired = {Active(1, "10.0.0.1", 5), Active(2, "10.0.0.2", 6)};
  AdmittedSet admitted;
  std::size_t sent = 0;
  auto reconcile = [&](bool static_weights) {
    auto state = ParseServersState(haproxy.Execute({"show servers state be"})->front());
    EXPECT_TRUE(state.ok());
    state->push_back(Checked(Server(9, "10.0.0.99", 80, AdminState::kReady, 5), 2, 3));
    auto diff = Reconcile(
        kBackend, desired, *state,
        {.admission_gating = true, .admitted = &admitted, .static_weights = static_weights});
    EXPECT_TRUE(diff.ok());
    sent = diff->operations.size();
    auto replies = haproxy.Apply(diff->operations);
    EXPECT_TRUE(replies.ok());
    std::vector<std::string> refused;
    for (std::size_t i = 0; i < replies->size(); ++i) {
      if (auto error = ReplyError(diff->operations[i].kind, (*replies)[i])) {
        refused.push_back(*error);
      }
    }
    admitted = diff->admitted;
    return refused;
  };
  EXPECT_THAT(reconcile(true), IsEmpty());  // staged at weight 0: accepted
  haproxy.PassChecks("be", "srv1");
  haproxy.PassChecks("be", "srv2");
  // Without the option, HAProxy refuses the table's weights.
  EXPECT_THAT(reconcile(false),
              ElementsAre(HasSubstr("static LB algorithm"), HasSubstr("static LB algorithm")));
  EXPECT_THAT(reconcile(true), IsEmpty());
  EXPECT_EQ(haproxy.server("be", "srv1").weight, 1);
  EXPECT_EQ(haproxy.server("be", "srv2").weight, 1);
  EXPECT_THAT(reconcile(true), IsEmpty());
  EXPECT_EQ(sent, 0u);  // nothing left to send
}

}  // namespace lifecycle

}  // namespace
}  // namespace hsdo::haproxy
