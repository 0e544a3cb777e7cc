#include "haproxy/reconciler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "haproxy/fake_haproxy.h"

namespace hsdo::haproxy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

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
  for (const auto& command : diff.commands) texts.push_back(command.text);
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
  EXPECT_EQ(diff.commands[0].kind, CommandKind::kAddr);
  EXPECT_EQ(diff.commands[1].kind, CommandKind::kWeight);
  EXPECT_EQ(diff.commands[2].kind, CommandKind::kState);
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
  };
  std::vector<ServerState> actual;
  for (int id = 1; id <= 6; ++id)
    actual.push_back(Server(id, "127.0.0.9", 80, AdminState::kReady, 1));
  const auto diff = Diff(desired, actual);
  ASSERT_EQ(diff.invalid_slots.size(), 6u);
  EXPECT_EQ(diff.invalid_slots[0].slot_id, 1);
  EXPECT_NE(diff.invalid_slots[0].reason.find("not an IP literal"), std::string::npos);
  EXPECT_EQ(diff.invalid_slots[5].reason.find('\n'), std::string::npos);  // printable
  // Each bad slot is taken out of service, and none of its values appears in any command.
  for (const auto& command : diff.commands) {
    EXPECT_THAT(command.text, ::testing::EndsWith("state maint"));
    EXPECT_EQ(command.text.find(';'), std::string::npos);
  }
  EXPECT_EQ(diff.commands.size(), 6u);
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
    EXPECT_FALSE(diff.commands.empty());
    std::vector<std::string> texts = Texts(diff);
    auto replies = haproxy.Execute(texts);
    ASSERT_TRUE(replies.ok());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      EXPECT_FALSE(ReplyError(diff.commands[i].kind, (*replies)[i]).has_value()) << (*replies)[i];
    }
  }
  EXPECT_EQ(haproxy.server("be", "srv1").port, 8001);
  EXPECT_EQ(haproxy.server("be", "srv2").port, 80);
  EXPECT_EQ(haproxy.server("be", "srv3").admin, AdminState::kMaint);
  EXPECT_EQ(haproxy.server("be", "srv5").admin, AdminState::kMaint);
  EXPECT_EQ(haproxy.server("be", "srv5").address, "127.0.0.2");
}

}  // namespace
}  // namespace hsdo::haproxy
