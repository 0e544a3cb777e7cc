#include "core/planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace hsdo {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

const WallTime kT0{std::chrono::seconds{1'700'000'000}};

Target T(std::string address, std::optional<std::uint16_t> port = std::nullopt) {
  Target t;
  t.address = std::move(address);
  t.port = port;
  t.name = t.address;
  return t;
}

std::vector<Target> Ts(std::initializer_list<const char*> addresses) {
  std::vector<Target> out;
  for (const char* a : addresses) out.push_back(T(a));
  return out;
}

PlannerConfig Cfg(int size = 10) {
  return PlannerConfig{.list_size = size,
                       .min_weight = 1,
                       .max_weight = 10,
                       .increase_weight = 1,
                       .increase_interval = 30s};
}

// Slot id → address ("" when free), for compact assertions.
std::vector<std::string> Addresses(const SlotTable& table) {
  std::vector<std::string> out;
  for (const auto& slot : table.slots) out.push_back(slot.enabled() ? slot.target.Key() : "");
  return out;
}

TEST(Planner, FillsLowestSlotsInDiscoveryOrder) {
  const auto plan =
      PlanSlots(SlotTable::Empty(5), Ts({"10.0.0.3", "10.0.0.1", "10.0.0.2"}), Cfg(5), kT0);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("10.0.0.3", "10.0.0.1", "10.0.0.2", "", ""));
  EXPECT_THAT(plan.changed, ElementsAre(1, 2, 3));
  EXPECT_EQ(plan.joined, 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plan.next.slots[i].weight, 1);
    EXPECT_EQ(plan.next.slots[i].last_weight_update, kT0);
    EXPECT_EQ(plan.next.slots[i].status, SlotStatus::kEnabled);
  }
}

TEST(Planner, SameTargetsTwiceChangeNothing) {
  const auto targets = Ts({"10.0.0.1", "10.0.0.2"});
  const auto first = PlanSlots(SlotTable::Empty(4), targets, Cfg(4), kT0);
  const auto second = PlanSlots(first.next, targets, Cfg(4), kT0 + 1s);
  EXPECT_THAT(second.changed, IsEmpty());
  EXPECT_EQ(second.next.slots, first.next.slots);
}

TEST(Planner, GoneTargetFreesOnlyItsSlot) {
  const auto first = PlanSlots(SlotTable::Empty(5), Ts({"a::1", "a::2", "a::3"}), Cfg(5), kT0);
  const auto second = PlanSlots(first.next, Ts({"a::1", "a::3"}), Cfg(5), kT0 + 1s);
  EXPECT_THAT(Addresses(second.next), ElementsAre("a::1", "", "a::3", "", ""));
  EXPECT_THAT(second.changed, ElementsAre(2));
  EXPECT_EQ(second.next.slots[1], Slot::Free(2));
  EXPECT_EQ(second.left, 1);
}

TEST(Planner, NewTargetTakesTheFreedSlotNotTheEnd) {
  const auto first =
      PlanSlots(SlotTable::Empty(5), Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), Cfg(5), kT0);
  const auto second = PlanSlots(first.next, Ts({"10.0.0.1", "10.0.0.3"}), Cfg(5), kT0);
  const auto third = PlanSlots(second.next, Ts({"10.0.0.9", "10.0.0.1", "10.0.0.3"}), Cfg(5), kT0);
  EXPECT_THAT(Addresses(third.next), ElementsAre("10.0.0.1", "10.0.0.9", "10.0.0.3", "", ""));
  EXPECT_THAT(third.changed, ElementsAre(2));
}

TEST(Planner, IdentityIncludesThePort) {
  const auto plan =
      PlanSlots(SlotTable::Empty(4),
                {T("127.0.0.1", 9001), T("127.0.0.1", 9002), T("127.0.0.1", 9001)}, Cfg(4), kT0);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("127.0.0.1:9001", "127.0.0.1:9002", "", ""));
  const auto moved = PlanSlots(plan.next, {T("127.0.0.1", 9002)}, Cfg(4), kT0);
  EXPECT_THAT(Addresses(moved.next), ElementsAre("", "127.0.0.1:9002", "", ""));
}

TEST(Planner, OverflowNeverDisplacesAndLeavesOutTheNewest) {
  const auto first = PlanSlots(SlotTable::Empty(2), Ts({"10.0.0.1", "10.0.0.2"}), Cfg(2), kT0);
  const auto second =
      PlanSlots(first.next, Ts({"10.0.0.3", "10.0.0.1", "10.0.0.4", "10.0.0.2"}), Cfg(2), kT0);
  EXPECT_THAT(Addresses(second.next), ElementsAre("10.0.0.1", "10.0.0.2"));
  EXPECT_THAT(second.changed, IsEmpty());
  EXPECT_EQ(second.next.overflow, 2);
  ASSERT_EQ(second.left_out.size(), 2u);
  EXPECT_EQ(second.left_out[0].address, "10.0.0.3");
  EXPECT_EQ(second.left_out[1].address, "10.0.0.4");
  // When a slot frees, the oldest left-out target takes it.
  const auto third = PlanSlots(second.next, Ts({"10.0.0.3", "10.0.0.1", "10.0.0.4"}), Cfg(2), kT0);
  EXPECT_THAT(Addresses(third.next), ElementsAre("10.0.0.1", "10.0.0.3"));
  EXPECT_EQ(third.next.overflow, 1);
}

TEST(Planner, WeightRampsEveryIntervalUntilMax) {
  auto plan = PlanSlots(SlotTable::Empty(1), Ts({"10.0.0.1"}), Cfg(1), kT0);
  EXPECT_EQ(plan.next.slots[0].weight, 1);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 29s);
  EXPECT_EQ(plan.next.slots[0].weight, 1);
  EXPECT_THAT(plan.changed, IsEmpty());
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 31s);
  EXPECT_EQ(plan.next.slots[0].weight, 2);
  EXPECT_EQ(plan.next.slots[0].last_weight_update, kT0 + 30s);  // anchored, no drift
  EXPECT_THAT(plan.changed, ElementsAre(1));
  // The seed's example: 1 → 10 by 1 every 30 s takes 270 s; a long pause catches up.
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 269s);
  EXPECT_EQ(plan.next.slots[0].weight, 9);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 270s);
  EXPECT_EQ(plan.next.slots[0].weight, 10);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 1h);
  EXPECT_EQ(plan.next.slots[0].weight, 10);
  EXPECT_THAT(plan.changed, IsEmpty());
}

TEST(Planner, RampStopsExactlyAtMaxWithLargeSteps) {
  auto config = Cfg(1);
  config.min_weight = 5;
  config.max_weight = 12;
  config.increase_weight = 4;
  auto plan = PlanSlots(SlotTable::Empty(1), Ts({"10.0.0.1"}), config, kT0);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), config, kT0 + 30s);
  EXPECT_EQ(plan.next.slots[0].weight, 9);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), config, kT0 + 60s);
  EXPECT_EQ(plan.next.slots[0].weight, 12);
}

TEST(Planner, ZeroIntervalGoesStraightToMax) {
  auto config = Cfg(1);
  config.increase_interval = 0s;
  auto plan = PlanSlots(SlotTable::Empty(1), Ts({"10.0.0.1"}), config, kT0);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), config, kT0);
  EXPECT_EQ(plan.next.slots[0].weight, 10);
}

TEST(Planner, LoweredMaxWeightClampsExistingSlots) {
  auto plan = PlanSlots(SlotTable::Empty(1), Ts({"10.0.0.1"}), Cfg(1), kT0);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), Cfg(1), kT0 + 1h);
  ASSERT_EQ(plan.next.slots[0].weight, 10);
  auto config = Cfg(1);
  config.max_weight = 4;
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), config, kT0 + 2h);
  EXPECT_EQ(plan.next.slots[0].weight, 4);
}

TEST(Planner, MetadataChangeUpdatesInPlace) {
  auto targets = Ts({"10.0.0.1", "10.0.0.2"});
  const auto first = PlanSlots(SlotTable::Empty(3), targets, Cfg(3), kT0);
  targets[1].az = "eu-west-1b";
  targets[1].name = "web-2";
  const auto second = PlanSlots(first.next, targets, Cfg(3), kT0);
  EXPECT_THAT(second.changed, ElementsAre(2));
  EXPECT_EQ(second.next.slots[1].target.az, "eu-west-1b");
  EXPECT_EQ(second.next.slots[1].weight, first.next.slots[1].weight);
}

TEST(Planner, ShorterStoredTableIsExtendedWithFreeSlots) {
  auto current = SlotTable::Empty(2);
  current.generation = 7;
  const auto plan = PlanSlots(current, Ts({"10.0.0.1"}), Cfg(4), kT0);
  EXPECT_EQ(plan.next.slots.size(), 4u);
  EXPECT_EQ(plan.next.generation, 7u);
  EXPECT_THAT(plan.changed, ElementsAre(1, 3, 4));
}

TEST(Planner, ShrunkListSizeReplacesTargetsOfDroppedSlots) {
  const auto first =
      PlanSlots(SlotTable::Empty(4), Ts({"a::1", "a::2", "a::3", "a::4"}), Cfg(4), kT0);
  auto current = first.next;
  current.slots[1] = Slot::Free(2);  // a::2 left earlier; a::4 sits in slot 4
  const auto plan = PlanSlots(current, Ts({"a::1", "a::3", "a::4"}), Cfg(3), kT0);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("a::1", "a::4", "a::3"));
}

TEST(Planner, EmptyDiscoveryFreesEverything) {
  // The planner takes "no targets" literally; guarding against a failed source reading as
  // "none" is the orchestrator's job (it keeps the last good list).
  const auto first = PlanSlots(SlotTable::Empty(3), Ts({"10.0.0.1"}), Cfg(3), kT0);
  const auto second = PlanSlots(first.next, {}, Cfg(3), kT0);
  EXPECT_THAT(Addresses(second.next), ElementsAre("", "", ""));
}

}  // namespace
}  // namespace hsdo
