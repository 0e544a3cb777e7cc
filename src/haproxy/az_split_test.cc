#include "haproxy/az_split.h"

#include <gtest/gtest.h>

namespace hsdo::haproxy {
namespace {

Slot Active(int id, const std::string& ip, const std::string& group, int weight = 10) {
  return Slot{.id = id,
              .status = SlotStatus::kEnabled,
              .target = {.address = ip, .name = ip, .group = group},
              .weight = weight};
}

SlotTable Table() {
  SlotTable table = SlotTable::Empty(4);
  table.slots[0] = Active(1, "10.0.0.1", "asg-a");
  table.slots[1] = Active(2, "10.0.0.2", "asg-b");
  table.slots[3] = Active(4, "10.0.0.4", "");
  return table;
}

std::vector<bool> ActiveFlags(const std::vector<DesiredSlot>& desired) {
  std::vector<bool> flags;
  for (const auto& slot : desired) flags.push_back(slot.active);
  return flags;
}

TEST(ManagedBackends, FallbackOnlyWithTheLimiter) {
  const std::vector<BackendConfig> primaries{{"be1", "a", 80}, {"be2", "b", 81}};
  const BackendConfig fallback{"fb", "f", 80};
  EXPECT_EQ(ManagedBackends(primaries, fallback, false).size(), 2u);
  const auto with = ManagedBackends(primaries, fallback, true);
  ASSERT_EQ(with.size(), 3u);
  EXPECT_EQ(with[2].role, BackendRole::kFallback);
  EXPECT_EQ(with[2].config.name, "fb");
  EXPECT_EQ(ManagedBackends(primaries, std::nullopt, true).size(), 2u);
}

// Backends of different ports are services of their own on the same instances (the seed's
// CLIENT_HAPROXY_BACKEND_LIST with a serverPort each): each takes its own port for every target.
TEST(ManagedBackends, EachTakesItsOwnPortWhenThePrimariesPortsDiffer) {
  const BackendConfig fallback{"fb", "f", 80};
  for (const auto& backend :
       ManagedBackends({{"be1", "a", 80}, {"be2", "b", 81}}, fallback, true)) {
    EXPECT_TRUE(backend.own_port) << backend.config.name;
  }
  for (const auto& backend :
       ManagedBackends({{"be1", "a", 80}, {"be2", "b", 80}}, fallback, true)) {
    EXPECT_FALSE(backend.own_port) << backend.config.name;
  }
  EXPECT_FALSE(ManagedBackends({{"be1", "a", 81}}, fallback, true)[0].own_port);
}

struct SplitCase {
  const char* what;
  AzLimiterPolicy policy;
  std::vector<bool> primary;
  std::vector<bool> fallback;
};

TEST(DesiredSlotsFor, MembershipTable) {
  const std::vector<SplitCase> cases = {
      {"limiter off: every target in the primaries, none in the fallback",
       {.enabled = false, .client_groups = {"asg-a"}},
       {true, true, false, true},
       {false, false, false, false}},
      {"limiter on: own group primary, the others fallback",
       {.enabled = true, .client_groups = {"asg-a"}},
       {true, false, false, false},
       {false, true, false, true}},
      {"limiter on, all in fallback: primaries in the fallback too",
       {.enabled = true, .client_groups = {"asg-a"}, .all_in_fallback = true},
       {true, false, false, false},
       {true, true, false, true}},
      {"several client groups",
       {.enabled = true, .client_groups = {"asg-a", "asg-b"}},
       {true, true, false, false},
       {false, false, false, true}},
      {"no client group: everything falls back",
       {.enabled = true, .client_groups = {}},
       {false, false, false, false},
       {true, true, false, true}},
  };
  const SlotTable table = Table();
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    EXPECT_EQ(ActiveFlags(DesiredSlotsFor(table, BackendRole::kPrimary, c.policy)), c.primary);
    EXPECT_EQ(ActiveFlags(DesiredSlotsFor(table, BackendRole::kFallback, c.policy)), c.fallback);
  }
}

TEST(DesiredSlotsFor, KeepsSlotNumbersAndWeights) {
  const auto desired =
      DesiredSlotsFor(Table(), BackendRole::kFallback, {.enabled = true, .client_groups = {}});
  ASSERT_EQ(desired.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(desired[static_cast<std::size_t>(i)].id, i + 1);
  EXPECT_EQ(desired[1].target.address, "10.0.0.2");
  EXPECT_EQ(desired[1].weight, 10);
  EXPECT_EQ(desired[2].target.address, "");  // free stays free
}

TEST(DesiredSlotsFor, DisabledSlotWithATargetIsNotActive) {
  SlotTable table = Table();
  table.slots[0].status = SlotStatus::kDisabled;
  const auto desired = DesiredSlotsFor(table, BackendRole::kPrimary, {});
  EXPECT_FALSE(desired[0].active);
}

}  // namespace
}  // namespace hsdo::haproxy
