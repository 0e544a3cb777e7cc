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

// Reconfiguration review: HAPROXY_BACKEND_SERVERS_LIST_SIZE lowered below a slot that an
// operator had put in maint (`hsdo set-state`): its target took a slot below without the
// override, and went back in service on every node.
TEST(Planner, ATargetMovedBelowAShrunkListKeepsItsOverride) {
  const auto targets = Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"});
  auto table = PlanSlots(SlotTable::Empty(6), targets, Cfg(6), kT0).next;
  table.slots[1] = Slot::Free(2);  // 10.0.0.2 left
  table.slots[4].admin = AdminState::kMaint;
  table.slots[3].admin = AdminState::kDrain;
  const auto plan =
      PlanSlots(table, Ts({"10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"}), Cfg(4), kT0 + 1s);
  ASSERT_THAT(Addresses(plan.next), ElementsAre("10.0.0.1", "10.0.0.5", "10.0.0.3", "10.0.0.4"));
  EXPECT_EQ(plan.next.slots[1].admin, AdminState::kMaint);  // moved from slot 5
  EXPECT_EQ(plan.next.slots[3].admin, AdminState::kDrain);  // stayed in slot 4
  EXPECT_EQ(plan.next.slots[0].admin, AdminState::kNone);
}

// Found in review (discovery answers): a target whose Consul check failed for 2 s lost its slot
// to an instance that registered meanwhile, and came back in another one: its keys moved on
// every node, for good, and its ramp began again. A slot freed a moment ago (recently_freed)
// is its target's to take again, at its weight; other new targets take it last; another
// instance at its address (a private IP given again) is a new target.
TEST(Planner, ATargetBackAMomentAfterItLeftTakesItsSlotAgain) {
  auto table =
      PlanSlots(SlotTable::Empty(5), Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), Cfg(5), kT0).next;
  table.slots[2].weight = 10;
  const std::map<int, Slot> freed = {{3, table.slots[2]}};
  table.slots[2] = Slot::Free(3);
  const auto joined = PlanSlots(table, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.11"}), Cfg(5), kT0 + 1s,
                                {}, std::nullopt, freed);
  EXPECT_THAT(Addresses(joined.next), ElementsAre("10.0.0.1", "10.0.0.2", "", "10.0.0.11", ""));
  const auto back = PlanSlots(joined.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.11", "10.0.0.3"}),
                              Cfg(5), kT0 + 2s, {}, std::nullopt, freed);
  EXPECT_THAT(Addresses(back.next),
              ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.11", ""));
  EXPECT_EQ(back.next.slots[2].weight, 10);
  EXPECT_THAT(back.returned, ElementsAre(3));
  // Another instance at its address: a new target at the first weight; the slot left a moment
  // ago is taken last, when no other is free.
  std::vector<Target> reused = Ts({"10.0.0.1", "10.0.0.2", "10.0.0.11", "10.0.0.3", "10.0.0.12"});
  reused[3].name = "i-new";
  const auto other = PlanSlots(joined.next, reused, Cfg(5), kT0 + 2s, {}, std::nullopt, freed);
  EXPECT_THAT(Addresses(other.next),
              ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.12", "10.0.0.11", "10.0.0.3"));
  EXPECT_EQ(other.next.slots[4].weight, 1);
  EXPECT_TRUE(other.returned.empty());
}

// Found in review (discovery answers): of two entries of one target, the first won even when it
// asked to drain and the other did not: the target drained out of every node.
TEST(Planner, OfDuplicatesOneThatServesOutranksOneThatDrains) {
  Target draining = T("10.0.0.2");
  draining.drain = true;
  const auto plan = PlanSlots(SlotTable::Empty(3),
                              {T("10.0.0.1"), draining, T("10.0.0.3"), T("10.0.0.2")}, Cfg(3), kT0);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3"));
  EXPECT_TRUE(plan.next.slots[1].enabled());
  const auto both = PlanSlots(SlotTable::Empty(3), {draining, draining}, Cfg(3), kT0);
  EXPECT_THAT(Addresses(both.next), ElementsAre("", "", ""));
}

// Weights review: a live target at full weight moved from above a shrunk list size started its
// ramp again at MIN_WEIGHT (a warmed server down to a twentieth of its traffic for minutes); a
// reused address's draining record gives its weight to nobody else. With keep_above (the
// orchestrator holds the move), the target stays above and no target takes its place below.
TEST(Planner, ATargetMovedFromAboveAShrunkListKeepsItsWeight) {
  SlotTable table = SlotTable::Empty(2);
  table.beyond = {Slot{.id = 3,
                       .status = SlotStatus::kEnabled,
                       .target = T("10.0.0.3"),
                       .weight = 10,
                       .last_weight_update = kT0},
                  Slot{.id = 4,
                       .status = SlotStatus::kDraining,
                       .target = {.address = "10.0.0.4", .name = "old"},
                       .weight = 10,
                       .drain_since = kT0}};
  Target reused = T("10.0.0.4");
  reused.name = "new";
  const auto moved = PlanSlots(table, {T("10.0.0.3"), reused}, Cfg(2), kT0 + 1s);
  ASSERT_THAT(Addresses(moved.next), ElementsAre("10.0.0.3", "10.0.0.4"));
  EXPECT_EQ(moved.next.slots[0].weight, 10);
  EXPECT_EQ(moved.next.slots[0].last_weight_update, kT0);
  EXPECT_EQ(moved.next.slots[1].weight, 1);
  EXPECT_TRUE(moved.kept_above.empty());

  PlannerConfig keep = Cfg(2);
  keep.keep_above = true;
  const auto held = PlanSlots(table, {T("10.0.0.3"), reused, T("10.0.0.5")}, keep, kT0 + 1s);
  EXPECT_THAT(Addresses(held.next), ElementsAre("10.0.0.4", "10.0.0.5"));
  EXPECT_THAT(held.kept_above, ElementsAre(3));
  EXPECT_EQ(held.next.overflow, 0);
  // Review of 5893cfe: a draining record's own target back is held up there too (placed below
  // at once, its keys moved for good because of a typo).
  Target back = T("10.0.0.4");
  back.name = "old";
  const auto drained_back = PlanSlots(table, {T("10.0.0.3"), back, T("10.0.0.5")}, keep, kT0 + 1s);
  EXPECT_THAT(Addresses(drained_back.next), ElementsAre("10.0.0.5", ""));
  EXPECT_THAT(drained_back.kept_above, ElementsAre(3, 4));
  // A lowered maximum held (keep_weights): the weight moved down is not lowered either.
  PlannerConfig lower = Cfg(2);
  lower.max_weight = 5;
  lower.keep_weights = true;
  EXPECT_EQ(PlanSlots(table, {T("10.0.0.3")}, lower, kT0 + 1s).next.slots[0].weight, 10);
  lower.keep_weights = false;
  EXPECT_EQ(PlanSlots(table, {T("10.0.0.3")}, lower, kT0 + 1s).next.slots[0].weight, 5);
}

// Review of the carry-over: as a store reads a shrunk table (the slots above in `beyond`), a
// record without a port (the Python HSDO's) matches the one target at its address with a port,
// a draining slot's override stays with its leaving target (not another instance given its IP),
// and of two records of one target, maint wins whatever their order.
TEST(Planner, OverridesFromAboveAShrunkListAreTheirTargetsOnly) {
  const auto above = [](int id, const char* address, const char* name, AdminState admin,
                        bool draining = false, std::optional<std::uint16_t> port = {}) {
    Slot slot{.id = id,
              .status = draining ? SlotStatus::kDraining : SlotStatus::kEnabled,
              .target = {.address = address, .port = port, .name = name},
              .weight = 5,
              .admin = admin};
    if (draining) slot.drain_since = kT0;
    return slot;
  };
  SlotTable table = SlotTable::Empty(4);
  table.beyond = {above(5, "10.0.0.5", "web-5", AdminState::kMaint),
                  above(6, "10.0.0.6", "web-6", AdminState::kMaint, /*draining=*/true),
                  above(7, "10.0.0.7", "web-7", AdminState::kDrain),
                  above(8, "10.0.0.7", "web-7", AdminState::kMaint)};
  Target with_port = T("10.0.0.5", 8080);
  with_port.name = "web-5";
  Target reused = T("10.0.0.6");
  reused.name = "i-new";
  Target seven = T("10.0.0.7");
  seven.name = "web-7";
  const auto plan = PlanSlots(table, {with_port, reused, seven}, Cfg(4), kT0 + 1s);
  ASSERT_THAT(Addresses(plan.next), ElementsAre("10.0.0.5:8080", "10.0.0.6", "10.0.0.7", ""));
  EXPECT_EQ(plan.next.slots[0].admin, AdminState::kMaint);
  EXPECT_EQ(plan.next.slots[1].admin, AdminState::kNone);
  EXPECT_EQ(plan.next.slots[2].admin, AdminState::kMaint);
  std::swap(table.beyond[2], table.beyond[3]);
  EXPECT_EQ(PlanSlots(table, {with_port, reused, seven}, Cfg(4), kT0 + 1s).next.slots[2].admin,
            AdminState::kMaint);

  // Two targets at a port-less record's address: which one it meant is not known, neither
  // gets it. An enabled record's override stays with its target under another name (names
  // change), as below the list size. A draining record of another instance does not outrank
  // the target's own, whatever the order.
  SlotTable two = SlotTable::Empty(4);
  two.beyond = {above(5, "10.0.0.5", "web-5", AdminState::kMaint),
                above(6, "10.0.0.6", "web-6", AdminState::kMaint),
                above(7, "10.0.0.7", "web-7", AdminState::kDrain),
                above(8, "10.0.0.7", "old-7", AdminState::kMaint, /*draining=*/true)};
  Target other_port = T("10.0.0.5", 9090);
  Target renamed = T("10.0.0.6");
  renamed.name = "web-6-renamed";
  for (int round = 0; round < 2; ++round) {
    const auto next = PlanSlots(two, {with_port, other_port, renamed, seven}, Cfg(4), kT0).next;
    ASSERT_THAT(Addresses(next),
                ElementsAre("10.0.0.5:8080", "10.0.0.5:9090", "10.0.0.6", "10.0.0.7"));
    EXPECT_EQ(next.slots[0].admin, AdminState::kNone) << round;
    EXPECT_EQ(next.slots[1].admin, AdminState::kNone) << round;
    EXPECT_EQ(next.slots[2].admin, AdminState::kMaint) << round;
    EXPECT_EQ(next.slots[3].admin, AdminState::kDrain) << round;
    std::swap(two.beyond[2], two.beyond[3]);
  }
}

TEST(Planner, SameTargetsTwiceChangeNothing) {
  const auto targets = Ts({"10.0.0.1", "10.0.0.2"});
  const auto first = PlanSlots(SlotTable::Empty(4), targets, Cfg(4), kT0);
  const auto second = PlanSlots(first.next, targets, Cfg(4), kT0 + 1s);
  EXPECT_THAT(second.changed, IsEmpty());
  EXPECT_EQ(second.next.slots, first.next.slots);
}

// Found in review: the Python HSDO writes no port (one HAPROXY_BACKEND_SERVER_PORT for all),
// hsdo's Consul source gives each target its service's port. Switching the orchestrator, every
// record's target read as gone and every service instance as new: each took another slot (the
// lowest free, in discovery order) and every key moved on every node, once the removal guard
// let the removals through. A record without a port takes the one target at its address with
// a port, in place.
TEST(Planner, ARecordWithoutAPortTakesTheOneTargetAtItsAddressWithAPort) {
  const auto seed = PlanSlots(SlotTable::Empty(5), Ts({"10.0.0.3", "10.0.0.1", "10.0.0.2"}), Cfg(5),
                              kT0);  // as the Python server wrote them
  const std::vector<Target> consul = {T("10.0.0.1", 8081), T("10.0.0.2", 8082),
                                      T("10.0.0.3", 8083)};
  const auto plan = PlanSlots(seed.next, consul, Cfg(5), kT0 + 1s);
  EXPECT_THAT(Addresses(plan.next),
              ElementsAre("10.0.0.3:8083", "10.0.0.1:8081", "10.0.0.2:8082", "", ""));
  EXPECT_EQ(plan.joined, 0);
  EXPECT_EQ(plan.left, 0);
  EXPECT_THAT(plan.adopted, ElementsAre(1, 2, 3));
  EXPECT_THAT(plan.changed, ElementsAre(1, 2, 3));  // written with their ports
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(plan.next.slots[i].weight, seed.next.slots[i].weight);
    EXPECT_FALSE(plan.next.slots[i].removed_at.has_value());  // no removal for the guard
  }
  // Then as any target: nothing more to change.
  EXPECT_THAT(PlanSlots(plan.next, consul, Cfg(5), kT0 + 2s).changed, IsEmpty());
}

// Found in review: a targets file whose entries all said `port: 80` (the agents' port), the
// port then taken out of every entry as redundant: every record's target read as gone and
// every entry as new, and every key moved once the removal guard let it. A record at the
// default port (HAPROXY_BACKEND_SERVER_PORT) takes the one target at its address without a
// port, in place; at another port it is another target, as before.
TEST(Planner, ARecordAtTheDefaultPortTakesTheOneTargetAtItsAddressWithoutAPort) {
  PlannerConfig config = Cfg(5);
  config.default_port = 80;
  const std::vector<Target> ported = {T("10.0.0.1", 80), T("10.0.0.2", 80), T("10.0.0.3", 9000)};
  const auto before = PlanSlots(SlotTable::Empty(5), ported, config, kT0);
  const auto plan =
      PlanSlots(before.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0 + 1s);
  // 10.0.0.3:9000 is another server: it leaves, and 10.0.0.3 joins (in its freed slot).
  EXPECT_THAT(Addresses(plan.next), ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3", "", ""));
  EXPECT_THAT(plan.adopted, ElementsAre(1, 2));
  EXPECT_EQ(plan.left, 1);
  EXPECT_EQ(plan.joined, 1);
  EXPECT_EQ(plan.next.slots[0].weight, before.next.slots[0].weight);
  EXPECT_FALSE(plan.next.slots[0].removed_at.has_value());
  // Without a default port (a caller that does not say), as before.
  EXPECT_THAT(PlanSlots(before.next, Ts({"10.0.0.1"}), Cfg(5), kT0 + 1s).adopted, IsEmpty());
}

TEST(Planner, ARecordWithoutAPortTakesNoTargetItCannotTellApart) {
  const auto seed =
      PlanSlots(SlotTable::Empty(6), Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), Cfg(6), kT0);
  // 10.0.0.1: two services on one host, which one the record meant is not known; 10.0.0.2:
  // still listed without a port, which is the record's own; 10.0.0.3: with a port, held by
  // a record of its own already.
  SlotTable table = seed.next;
  table.slots[3].status = SlotStatus::kEnabled;
  table.slots[3].target = T("10.0.0.3", 9000);
  table.slots[3].weight = 1;
  const std::vector<Target> targets = {T("10.0.0.1", 8081), T("10.0.0.1", 8082), T("10.0.0.2"),
                                       T("10.0.0.2", 8082), T("10.0.0.3", 9000)};
  const auto plan = PlanSlots(table, targets, Cfg(6), kT0 + 1s);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("10.0.0.1:8081", "10.0.0.2", "10.0.0.1:8082",
                                                "10.0.0.3:9000", "10.0.0.2:8082", ""));
  EXPECT_EQ(plan.left, 2);  // 10.0.0.1's and 10.0.0.3's records without a port
  EXPECT_THAT(plan.adopted, IsEmpty());
  EXPECT_TRUE(plan.next.slots[0].removed_at.has_value());  // 10.0.0.1 left slot 1
}

TEST(Planner, GoneTargetFreesOnlyItsSlot) {
  const auto first = PlanSlots(SlotTable::Empty(5), Ts({"a::1", "a::2", "a::3"}), Cfg(5), kT0);
  const auto second = PlanSlots(first.next, Ts({"a::1", "a::3"}), Cfg(5), kT0 + 1s);
  EXPECT_THAT(Addresses(second.next), ElementsAre("a::1", "", "a::3", "", ""));
  EXPECT_THAT(second.changed, ElementsAre(2));
  EXPECT_EQ(second.next.slots[1], Slot::Free(2));
  EXPECT_EQ(second.left, 1);
}

// A record that turned invalid reads as a free slot; its target, which every node still
// serves there, was placed again in the lowest free slot (its keys moved), or another new
// target took its slot first. It goes back where the record is.
TEST(Planner, ATargetWhoseRecordTurnedInvalidGoesBackToItsSlot) {
  SlotTable current = SlotTable::Empty(5);
  current.slots[1] = PlanSlots(SlotTable::Empty(5), Ts({"10.0.0.2"}), Cfg(5), kT0).next.slots[0];
  current.slots[1].id = 2;
  current.invalid_records = 2;
  current.invalid_ids = {1, 4};
  current.invalid_held = {{1, {.key = "10.0.0.1", .weight = 7, .admin = AdminState::kMaint}},
                          {4, {.key = "10.0.0.4"}}};
  const auto plan =
      PlanSlots(current, Ts({"10.0.0.9", "10.0.0.2", "10.0.0.4", "10.0.0.1"}), Cfg(5), kT0);
  EXPECT_THAT(Addresses(plan.next),
              ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.9", "10.0.0.4", ""));
  // As the record says where it reads: its weight and its operator's override.
  EXPECT_EQ(plan.next.slots[0].weight, 7);
  EXPECT_EQ(plan.next.slots[0].admin, AdminState::kMaint);
  EXPECT_EQ(plan.next.slots[3].weight, 1);  // the ramp's first weight
  EXPECT_EQ(plan.next.slots[2].weight, 1);
}

// Slot::removed_at, which the removal guard reads after a restart: set when a target leaves its
// slot (freed, or replaced in the same plan), carried otherwise.
TEST(Planner, ASlotSaysWhenItsLastTargetWasRemoved) {
  const auto first = PlanSlots(SlotTable::Empty(4), Ts({"a::1", "a::2", "a::3"}), Cfg(4), kT0);
  for (const Slot& slot : first.next.slots) EXPECT_EQ(slot.removed_at, std::nullopt);
  // a::2 and a::3 leave; a::9 takes the lowest free slot, a::2's.
  const auto second = PlanSlots(first.next, Ts({"a::1", "a::9"}), Cfg(4), kT0 + 1s);
  EXPECT_THAT(Addresses(second.next), ElementsAre("a::1", "a::9", "", ""));
  EXPECT_EQ(second.next.slots[0].removed_at, std::nullopt);
  EXPECT_EQ(second.next.slots[1].removed_at, kT0 + 1s);  // a::2 replaced by a::9
  EXPECT_EQ(second.next.slots[2].removed_at, kT0 + 1s);  // a::3 freed
  EXPECT_EQ(second.next.slots[3].removed_at, std::nullopt);
  const auto third = PlanSlots(second.next, Ts({"a::1", "a::9"}), Cfg(4), kT0 + 2s);
  EXPECT_THAT(third.changed, IsEmpty());
  EXPECT_EQ(third.next.slots[1].removed_at, kT0 + 1s);  // carried
  EXPECT_EQ(third.next.slots[2].removed_at, kT0 + 1s);
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

// With the caller's own clock the ramp steps by its times, not the table's wall times, and a
// step is stamped `now` (the next one counts from the caller's record of this one).
TEST(Planner, WithTheCallersClockTheRampStepsByItsTimes) {
  auto plan = PlanSlots(SlotTable::Empty(2), Ts({"10.0.0.1", "10.0.0.2"}), Cfg(2), kT0);
  const SlotTable joined = plan.next;
  // Hours later by the wall clock, but the caller saw no interval go by: no step.
  plan = PlanSlots(joined, Ts({"10.0.0.1", "10.0.0.2"}), Cfg(2), kT0 + 5h, {},
                   SlotTimes{.since_weight_step = {{1, 29s}}});
  EXPECT_EQ(plan.next.slots[0].weight, 1);
  EXPECT_EQ(plan.next.slots[1].weight, 1) << "not in the map: no step";
  EXPECT_THAT(plan.changed, IsEmpty());
  // Before its last update by the wall clock (set back), yet two intervals by the caller's.
  plan = PlanSlots(joined, Ts({"10.0.0.1", "10.0.0.2"}), Cfg(2), kT0 - 1h, {},
                   SlotTimes{.since_weight_step = {{1, 61s}}});
  EXPECT_EQ(plan.next.slots[0].weight, 3);
  EXPECT_EQ(plan.next.slots[0].last_weight_update, kT0 - 1h);
  EXPECT_THAT(plan.changed, ElementsAre(1));
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

// Found in review: with HAPROXY_BACKEND_SERVER_MIN_WEIGHT=0 a first fill gave every slot weight
// 0, and HAProxy answered 503 to everything for a whole INCREASE_WEIGHT_INTERVAL.
TEST(Planner, AtMinWeightZeroSlotsJoiningWhereNoneHasAWeightStartAtOne) {
  auto config = Cfg(4);
  config.min_weight = 0;
  auto plan = PlanSlots(SlotTable::Empty(4), Ts({"10.0.0.1", "10.0.0.2"}), config, kT0);
  EXPECT_EQ(plan.next.slots[0].weight, 1);
  EXPECT_EQ(plan.next.slots[1].weight, 1);
  // Where a slot has a weight, a new one starts at the minimum, 0, as asked.
  plan = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0 + 1s);
  EXPECT_EQ(plan.next.slots[2].weight, 0);
  // A fleet replaced whole: the draining slots serve no new connection.
  config.drain_timeout = 1h;
  auto replaced = SlotTable::Empty(4);
  for (int i = 0; i < 2; ++i) {
    replaced.slots[i] = {.id = i + 1,
                         .status = SlotStatus::kDraining,
                         .target = T("10.0.0." + std::to_string(i + 1)),
                         .weight = 5,
                         .drain_since = kT0};
  }
  plan = PlanSlots(replaced, Ts({"10.0.0.8", "10.0.0.9"}), config, kT0 + 3s);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("", "", "10.0.0.8", "10.0.0.9"));
  EXPECT_EQ(plan.next.slots[2].weight, 1);
  EXPECT_EQ(plan.next.slots[3].weight, 1);
}

// Found in review: a fleet replaced over two cycles (an instance refresh launches the new
// instance, then terminates the old one) left the new slot at 0, the only enabled one: HAProxy
// answered 503 to everything until the next INCREASE_WEIGHT_INTERVAL.
TEST(Planner, AtMinWeightZeroAFleetReplacedOverTwoCyclesKeepsAWeight) {
  auto config = Cfg(4);
  config.min_weight = 0;
  auto plan = PlanSlots(SlotTable::Empty(4), Ts({"10.0.0.1"}), config, kT0);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1"}), config, kT0 + 300s);
  ASSERT_EQ(plan.next.slots[0].weight, 10);
  plan = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.2"}), config, kT0 + 301s);
  ASSERT_EQ(plan.next.slots[1].weight, 0);  // a weighted slot serves: the minimum, as asked
  plan = PlanSlots(plan.next, Ts({"10.0.0.2"}), config, kT0 + 310s);
  EXPECT_THAT(Addresses(plan.next), ElementsAre("", "10.0.0.2", "", ""));
  EXPECT_EQ(plan.next.slots[1].weight, 1);
  EXPECT_THAT(plan.changed, ElementsAre(1, 2));
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

// Draining (issue 10).

PlannerConfig Draining(int size, std::chrono::milliseconds timeout) {
  auto config = Cfg(size);
  config.drain_timeout = timeout;
  return config;
}

Target Drain(const char* address) {
  Target t = T(address);
  t.drain = true;
  return t;
}

// Three enabled targets at weight 10 (ramped), as of kT0 + 1h.
SlotTable Ramped(const PlannerConfig& config) {
  auto plan = PlanSlots(SlotTable::Empty(config.list_size),
                        Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0);
  return PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0 + 1h).next;
}

// With the caller's own drain clock, a drain's time is that clock's, not now - drain_since: a
// drain that began long ago by the wall clock (another leader's, or before a step) is not
// freed before the caller has seen it drain for the whole timeout.
TEST(PlannerDrain, TheCallersDrainClockTimesTheDrainNotTheWallClock) {
  const auto config = Draining(4, 300s);
  const auto targets = Ts({"10.0.0.1", "10.0.0.3"});
  const auto draining = PlanSlots(Ramped(config), targets, config, kT0 + 2h).next;
  ASSERT_TRUE(draining.slots[1].draining());
  const auto days_later = kT0 + 2h + 48h;
  auto plan =
      PlanSlots(draining, targets, config, days_later, {}, SlotTimes{.draining = {{2, 299s}}});
  EXPECT_TRUE(plan.next.slots[1].draining());
  EXPECT_THAT(plan.changed, IsEmpty());
  plan = PlanSlots(draining, targets, config, days_later, {}, SlotTimes{});  // not seen yet
  EXPECT_TRUE(plan.next.slots[1].draining());
  plan = PlanSlots(draining, targets, config, days_later, {}, SlotTimes{.draining = {{2, 300s}}});
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  // And the other way: drain_since ahead of a wall clock set back does not hold it longer.
  plan = PlanSlots(draining, targets, config, kT0, {}, SlotTimes{.draining = {{2, 300s}}});
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  // A drain that begins in this plan has drained for nothing: freed only with timeout 0.
  plan = PlanSlots(Ramped(config), targets, config, kT0 + 2h, {}, SlotTimes{.draining = {{2, 1h}}});
  EXPECT_TRUE(plan.next.slots[1].draining());
  const auto at_once = Draining(4, 0s);
  plan = PlanSlots(Ramped(at_once), targets, at_once, kT0 + 2h, {}, SlotTimes{});
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
}

TEST(PlannerDrain, LeavingWithTimeoutZeroFreesAtOnce) {
  const auto config = Draining(4, 0s);
  const auto plan = PlanSlots(Ramped(config), Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  EXPECT_THAT(plan.changed, ElementsAre(2));
  EXPECT_EQ(plan.left, 1);
  EXPECT_THAT(plan.freed_drain_targets, IsEmpty());  // the source did not ask
}

TEST(PlannerDrain, LeavingWithATimeoutDrainsKeepingTargetAndWeight) {
  const auto config = Draining(4, 300s);
  const auto current = Ramped(config);
  const auto plan = PlanSlots(current, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  Slot expected = current.slots[1];
  expected.status = SlotStatus::kDraining;
  expected.drain_since = kT0 + 2h;
  EXPECT_EQ(plan.next.slots[1], expected);
  EXPECT_EQ(plan.next.slots[1].weight, 10);
  EXPECT_THAT(plan.changed, ElementsAre(2));
  EXPECT_EQ(plan.left, 1);
  // Still draining, unchanged, until the timeout; freed at drain_since + timeout.
  auto later = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h + 299s);
  EXPECT_THAT(later.changed, IsEmpty());
  EXPECT_TRUE(later.next.slots[1].draining());
  later = PlanSlots(later.next, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h + 300s);
  EXPECT_EQ(later.next.slots[1], Slot::Free(2));
  EXPECT_THAT(later.changed, ElementsAre(2));
  EXPECT_EQ(later.left, 0);                             // counted when it began to drain
  EXPECT_EQ(later.next.slots[1].removed_at, kT0 + 2h);  // so is its removal
}

TEST(PlannerDrain, ADrainingSlotIsNeverGivenToAnotherTarget) {
  const auto config = Draining(3, 300s);
  const auto draining = PlanSlots(Ramped(config), Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  const auto plan =
      PlanSlots(draining.next, Ts({"10.0.0.1", "10.0.0.3", "10.0.0.9"}), config, kT0 + 2h + 1s);
  EXPECT_TRUE(plan.next.slots[1].draining());
  EXPECT_EQ(plan.next.slots[1].target.address, "10.0.0.2");
  EXPECT_EQ(plan.next.overflow, 1);
  EXPECT_THAT(plan.changed, IsEmpty());
  // Once freed, the slot goes to the waiting target in the same plan.
  const auto freed =
      PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.3", "10.0.0.9"}), config, kT0 + 2h + 300s);
  EXPECT_EQ(freed.next.slots[1].target.address, "10.0.0.9");
  EXPECT_TRUE(freed.next.slots[1].enabled());
  EXPECT_EQ(freed.next.overflow, 0);
}

TEST(PlannerDrain, ADrainingTargetThatComesBackIsEnabledInItsSlotAtItsWeight) {
  const auto config = Draining(4, 300s);
  const auto current = Ramped(config);
  const auto draining = PlanSlots(current, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  // Another target joins meanwhile; the returning one does not lose its slot to it.
  const auto back = PlanSlots(draining.next, Ts({"10.0.0.9", "10.0.0.1", "10.0.0.2", "10.0.0.3"}),
                              config, kT0 + 2h + 10s);
  EXPECT_EQ(back.next.slots[1], current.slots[1]);  // enabled, weight 10, no drain_since
  EXPECT_EQ(back.next.slots[3].target.address, "10.0.0.9");
  EXPECT_THAT(back.changed, ElementsAre(2, 4));
  EXPECT_EQ(back.joined, 1);
}

// Found in review: a new instance given the private IP of one whose slot was still draining was
// taken for that one back: it got its full weight at once, unramped, and its override (a
// `maint` kept the new instance out for good). It keeps the slot (the address is the same on
// every node) as a new target: the first weight of the ramp, no override.
TEST(PlannerDrain, ANewInstanceAtTheAddressOfADrainingOneStartsItsOwnRamp) {
  const auto config = Draining(4, 300s);
  auto current = Ramped(config);
  current.slots[1].admin = AdminState::kMaint;
  const auto draining = PlanSlots(current, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  ASSERT_TRUE(draining.next.slots[1].draining());
  Target reused = T("10.0.0.2");
  reused.name = "i-new";
  const auto plan =
      PlanSlots(draining.next, {T("10.0.0.1"), reused, T("10.0.0.3")}, config, kT0 + 2h + 10s);
  const Slot& slot = plan.next.slots[1];
  EXPECT_TRUE(slot.enabled());
  EXPECT_EQ(slot.target.name, "i-new");
  EXPECT_EQ(slot.weight, config.min_weight);
  EXPECT_EQ(slot.admin, AdminState::kNone);
  EXPECT_EQ(slot.last_weight_update, kT0 + 2h + 10s);
  EXPECT_EQ(plan.joined, 1);
  // It ramps from there, as any new target.
  const auto later = PlanSlots(plan.next, {T("10.0.0.1"), reused, T("10.0.0.3")}, config,
                               kT0 + 2h + 10s + config.increase_interval);
  EXPECT_EQ(later.next.slots[1].weight, config.min_weight + config.increase_weight);
}

TEST(PlannerDrain, DrainedSlotsAreFreedBeforeTheTimeoutUnlessTheTargetIsBack) {
  const auto config = Draining(4, 300s);
  const auto draining = PlanSlots(Ramped(config), Ts({"10.0.0.1"}), config, kT0 + 2h);
  ASSERT_TRUE(draining.next.slots[1].draining());
  ASSERT_TRUE(draining.next.slots[2].draining());
  const auto plan = PlanSlots(draining.next, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h + 5s,
                              /*drained=*/{2, 3});
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  EXPECT_TRUE(plan.next.slots[2].enabled());  // back: enabled, not freed
  EXPECT_THAT(plan.changed, ElementsAre(2, 3));
}

TEST(PlannerDrain, TheSourcesDrainFlagDrainsWhateverTheTimeout) {
  const auto config = Draining(4, 300s);
  const auto current = Ramped(config);
  const std::vector<Target> targets = {T("10.0.0.1"), Drain("10.0.0.2"), T("10.0.0.3"),
                                       Drain("10.0.0.4")};
  const auto plan = PlanSlots(current, targets, config, kT0 + 2h);
  EXPECT_TRUE(plan.next.slots[1].draining());
  EXPECT_EQ(plan.next.slots[1].drain_since, kT0 + 2h);
  EXPECT_FALSE(plan.next.slots[1].target.drain);  // not part of the slot
  EXPECT_EQ(plan.next.slots[3], Slot::Free(4));   // a draining target never takes a slot
  EXPECT_EQ(plan.joined, 0);
  EXPECT_EQ(plan.left, 1);
  EXPECT_THAT(plan.freed_drain_targets, IsEmpty());
  // Still asking: unchanged until the timeout, then freed and reported for OnSlotsFreed.
  auto later = PlanSlots(plan.next, targets, config, kT0 + 2h + 10s);
  EXPECT_THAT(later.changed, IsEmpty());
  later = PlanSlots(later.next, targets, config, kT0 + 2h + 300s);
  EXPECT_EQ(later.next.slots[1], Slot::Free(2));
  ASSERT_EQ(later.freed_drain_targets.size(), 1u);
  EXPECT_EQ(later.freed_drain_targets[0].address, "10.0.0.2");
  EXPECT_TRUE(later.freed_drain_targets[0].drain);
  // The flag dropped (ASG Standby -> InService) before the timeout: back in its slot.
  const auto back =
      PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0 + 2h + 20s);
  EXPECT_EQ(back.next.slots[1], current.slots[1]);
}

TEST(PlannerDrain, TheDrainFlagWithTimeoutZeroFreesAtOnceAndReportsTheTarget) {
  const auto config = Draining(4, 0s);
  const auto plan = PlanSlots(Ramped(config), {T("10.0.0.1"), Drain("10.0.0.2"), T("10.0.0.3")},
                              config, kT0 + 2h);
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  ASSERT_EQ(plan.freed_drain_targets.size(), 1u);
  EXPECT_EQ(plan.freed_drain_targets[0].address, "10.0.0.2");
}

TEST(PlannerDrain, OverridesAreCarriedThroughEveryPlanAndLostWhenFreed) {
  const auto config = Draining(4, 300s);
  auto current = Ramped(config);
  current.slots[0].admin = AdminState::kDrain;
  current.slots[1].admin = AdminState::kMaint;
  // Slot 1 ramps and stays; slot 2 drains with its override.
  auto plan = PlanSlots(current, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  EXPECT_EQ(plan.next.slots[0].admin, AdminState::kDrain);
  EXPECT_TRUE(plan.next.slots[1].draining());
  EXPECT_EQ(plan.next.slots[1].admin, AdminState::kMaint);
  // Comes back: the override is still there.
  auto back = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.2", "10.0.0.3"}), config, kT0 + 2h + 1s);
  EXPECT_TRUE(back.next.slots[1].enabled());
  EXPECT_EQ(back.next.slots[1].admin, AdminState::kMaint);
  // Freed at the timeout: the slot loses it.
  plan = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 3h);
  EXPECT_EQ(plan.next.slots[1], Slot::Free(2));
  EXPECT_EQ(plan.next.slots[0].admin, AdminState::kDrain);
}

TEST(PlannerDrain, ADrainingSlotReadFromAStoreAgainChangesNothing) {
  const auto config = Draining(3, 300s);
  const auto plan = PlanSlots(Ramped(config), Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h);
  const auto again = PlanSlots(plan.next, Ts({"10.0.0.1", "10.0.0.3"}), config, kT0 + 2h + 1s, {});
  EXPECT_THAT(again.changed, IsEmpty());
}

// Node reports.

NodeReport Node(std::string name, std::uint64_t applied, WallTime reported,
                std::map<int, int> sessions) {
  return NodeReport{.name = std::move(name),
                    .applied_generation = applied,
                    .applied_at = reported,
                    .reported_at = reported,
                    .draining_sessions = std::move(sessions)};
}

SlotTable DrainingTable() {
  auto table = SlotTable::Empty(3);
  table.generation = 12;
  for (int id : {1, 2}) {
    auto& slot = table.slots[static_cast<std::size_t>(id - 1)];
    slot.status = SlotStatus::kDraining;
    slot.target = T("10.0.0." + std::to_string(id));
    slot.weight = 5;
    slot.drain_since = kT0;
  }
  table.slots[2].status = SlotStatus::kEnabled;
  table.slots[2].target = T("10.0.0.3");
  return table;
}

constexpr auto kLive = 3s;
constexpr auto kHold = 5s;  // a silent node's hold (HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT)

TEST(DrainedSlots, EveryLiveNodeAtTheGenerationWithNoSessions) {
  const std::map<int, std::uint64_t> since = {{1, 10}, {2, 11}};
  const std::vector<NodeReport> reports = {Node("a", 11, kT0, {{1, 0}, {2, 0}}),
                                           Node("b", 12, kT0, {{1, 0}, {2, 3}})};
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports, kT0 + 1s, kLive, kHold, {}),
              ElementsAre(1));
}

TEST(DrainedSlots, ANodeNotYetAtTheDrainingGenerationHoldsIt) {
  const std::map<int, std::uint64_t> since = {{1, 10}, {2, 11}};
  const std::vector<NodeReport> reports = {Node("a", 10, kT0, {{1, 0}, {2, 0}}),
                                           Node("b", 12, kT0, {{1, 0}, {2, 0}})};
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports, kT0 + 1s, kLive, kHold, {}),
              ElementsAre(1));
  // Without a known draining generation, the table's is required.
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, reports, kT0 + 1s, kLive, kHold, {}), IsEmpty());
}

TEST(DrainedSlots, ADeadNodeIsIgnoredANodeSayingNothingIsNot) {
  const std::vector<NodeReport> reports = {Node("a", 12, kT0, {{1, 0}, {2, 0}}),
                                           Node("dead", 3, kT0 - 10s, {{1, 7}, {2, 7}}),
                                           Node("quiet", 12, kT0, {{1, 0}})};
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, reports, kT0 + 1s, kLive, kHold, {}),
              ElementsAre(1));
}

// An agent given a longer INTERVAL than the orchestrator's reports less often: between two of
// its reports it is live all the same, and its sessions hold the drain.
TEST(DrainedSlots, ANodeWithALongerIntervalIsLiveBetweenItsReports) {
  NodeReport slow = Node("slow", 12, kT0 - 4s, {{1, 57}, {2, 0}});
  slow.interval = 5s;
  const std::vector<NodeReport> reports = {Node("a", 12, kT0, {{1, 0}, {2, 0}}), slow};
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, reports, kT0 + 1s, kLive, kHold, {}),
              ElementsAre(2));
  // Dead once its report is older than 3 x its own INTERVAL: its word on slot 2 no longer
  // counts, while the sessions it last gave slot 1 still hold it (it may come back).
  const std::vector<NodeReport> later = {Node("a", 12, kT0 + 10s, {{1, 0}, {2, 0}}), slow};
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, later, kT0 + 11s, kLive, kHold, {}),
              ElementsAre(2));
  // A shorter INTERVAL than the orchestrator's changes nothing: 3 x the orchestrator's.
  NodeReport quick = Node("quick", 12, kT0 - 2s, {{1, 57}});
  quick.interval = 100ms;
  EXPECT_TRUE(NodeIsLive(quick, kT0, kLive));
  EXPECT_FALSE(NodeIsLive(quick, kT0 + 1s, kLive));
}

// A ramp waits for a slow-booting target while most live nodes still hold it at weight 0
// (their health check has not passed yet); one node whose check cannot pass holds nothing, and
// neither do dead nodes nor agents of versions that do not say what they wait for.
TEST(SlotsAwaitingAdmission, MoreThanHalfOfTheLiveNodesThatSay) {
  const auto waiting = [](std::string name, std::set<int> pending, WallTime at = kT0) {
    NodeReport report = Node(std::move(name), 12, at, {});
    report.pending_admission = std::move(pending);
    return report;
  };
  EXPECT_THAT(
      SlotsAwaitingAdmission(std::vector<NodeReport>{waiting("a", {1, 4})}, kT0 + 1s, kLive),
      ElementsAre(1, 4));
  EXPECT_THAT(
      SlotsAwaitingAdmission(std::vector<NodeReport>{waiting("a", {1, 4}), waiting("b", {4}),
                                                     waiting("c", {1, 4}), waiting("d", {})},
                             kT0 + 1s, kLive),
      ElementsAre(4));  // 3 of 4 wait for slot 4, 2 of 4 for slot 1
  EXPECT_THAT(SlotsAwaitingAdmission(std::vector<NodeReport>{waiting("a", {1}), waiting("b", {}),
                                                             waiting("dead", {1}, kT0 - 10s),
                                                             Node("earlier-version", 12, kT0, {})},
                                     kT0 + 1s, kLive),
              IsEmpty());  // 1 of the 2 live nodes that say
  EXPECT_THAT(SlotsAwaitingAdmission(
                  std::vector<NodeReport>{waiting("a", {2}), Node("earlier-version", 12, kT0, {})},
                  kT0 + 1s, kLive),
              ElementsAre(2));
  EXPECT_THAT(SlotsAwaitingAdmission({}, kT0, kLive), IsEmpty());
}

// The removal guard's evidence that a removal is a replacement: a ready slot whose target most
// live nodes have seen pass its check. Only nodes that gate every slot by its check, whose
// report this process saw written, and that applied a table holding the target vouch; the
// others (not gating, not yet seen, behind) still count among the nodes.
TEST(SlotsProvenByChecks, MostLiveNodesThatGateEverySlotAndHoldTheTarget) {
  auto table = SlotTable::Empty(6);
  table.generation = 10;
  for (int id = 1; id <= 5; ++id) {
    Slot& slot = table.slots[static_cast<std::size_t>(id - 1)];
    slot.status = id == 5 ? SlotStatus::kDraining : SlotStatus::kEnabled;
    slot.target = Target{.address = "10.0.0." + std::to_string(id)};
    slot.weight = 10;
  }
  table.slots[3].admin = AdminState::kMaint;
  const std::map<int, std::uint64_t> filled_at = {{1, 5}, {2, 5}, {3, 10}, {4, 5}, {5, 5}};
  const auto node = [](std::string name, std::uint64_t applied, std::set<int> pending,
                       bool gates = true, WallTime at = kT0) {
    NodeReport report = Node(std::move(name), applied, at, {});
    report.pending_admission = std::move(pending);
    report.gates_every_slot = gates;
    return report;
  };
  const std::set<std::string> seen = {"a", "b", "c", "d", "no-check"};
  // Slot 2 waits on a; c has not applied the table that put slot 3's target there (9 < 10), and
  // a waits for it: b alone of three. Slot 4 is in maint, slot 5 drains.
  EXPECT_THAT(SlotsProvenByChecks(table, filled_at,
                                  std::vector<NodeReport>{node("a", 10, {2, 3}), node("b", 10, {}),
                                                          node("c", 9, {})},
                                  kT0 + 1s, kLive, seen),
              ElementsAre(1, 2));
  EXPECT_THAT(SlotsProvenByChecks(
                  table, filled_at,
                  std::vector<NodeReport>{node("a", 10, {}), node("b", 10, {}), node("c", 9, {})},
                  kT0 + 1s, kLive, seen),
              ElementsAre(1, 2, 3));
  // Nodes without `check` (or gating off) vouch for nothing but count: 2 of 4 is not most.
  EXPECT_THAT(SlotsProvenByChecks(
                  table, filled_at,
                  std::vector<NodeReport>{node("a", 10, {}), node("b", 10, {}),
                                          node("no-check", 10, {}, false), node("unseen", 10, {})},
                  kT0 + 1s, kLive, seen),
              IsEmpty());
  // A node that lists a slot as unvouched (DOWN there, or once weighted unchecked) does not
  // vouch for it; one that could not apply (no pending_admission) but says it cannot vouch
  // counts among the nodes (review of ef8f711: such nodes dropped out, and a minority proved).
  NodeReport down = node("b", 10, {});
  down.unvouched = {1};
  NodeReport stuck = Node("c", 10, kT0, {});
  stuck.gates_every_slot = false;
  EXPECT_THAT(
      SlotsProvenByChecks(table, filled_at, std::vector<NodeReport>{node("a", 10, {}), down, stuck},
                          kT0 + 1s, kLive, seen),
      ElementsAre(2, 3));
  EXPECT_THAT(
      SlotsProvenByChecks(table, filled_at, std::vector<NodeReport>{node("a", 10, {}), stuck},
                          kT0 + 1s, kLive, seen),
      IsEmpty());
  // Dead nodes and agents of earlier versions (no pending_admission) do not count at all.
  EXPECT_THAT(SlotsProvenByChecks(
                  table, filled_at,
                  std::vector<NodeReport>{node("a", 10, {}), node("d", 10, {}, true, kT0 - 10s),
                                          Node("earlier-version", 10, kT0, {})},
                  kT0 + 1s, kLive, seen),
              ElementsAre(1, 2, 3));
  // A slot without a generation it holds its target from is not proven; nor are any without
  // a node that says.
  EXPECT_THAT(SlotsProvenByChecks(table, {{1, 5}}, std::vector<NodeReport>{node("a", 10, {})},
                                  kT0 + 1s, kLive, seen),
              ElementsAre(1));
  EXPECT_THAT(SlotsProvenByChecks(table, filled_at, {}, kT0 + 1s, kLive, seen), IsEmpty());
  // Generations derived from a table's content (bit 63) are in no order: only the same one.
  constexpr std::uint64_t kDerived = (std::uint64_t{1} << 63) | 77;
  EXPECT_THAT(
      SlotsProvenByChecks(table, {{1, kDerived}, {2, 5}},
                          std::vector<NodeReport>{node("a", kDerived, {})}, kT0 + 1s, kLive, seen),
      ElementsAre(1));
  EXPECT_THAT(SlotsProvenByChecks(table, {{1, 5}, {2, kDerived}},
                                  std::vector<NodeReport>{node("a", kDerived + 1, {})}, kT0 + 1s,
                                  kLive, seen),
              IsEmpty());
}

// Found in review: an agent that stops reporting for a few seconds (a crash and its unit's
// restart, a package upgrade) while its HAProxy serves sessions on a draining slot was dropped
// from the count once its report was 3 x INTERVAL old, and the other nodes' 0 freed the slot
// (and completed the instance's termination) under those sessions.
TEST(DrainedSlots, ANodeThatFellSilentWithSessionsHoldsTheSlot) {
  const std::map<int, std::uint64_t> since = {{1, 10}, {2, 10}};
  const std::vector<NodeReport> reports = {
      Node("a", 12, kT0 + 10s, {{1, 0}, {2, 0}}),
      Node("restarting", 12, kT0, {{1, 7}, {2, 0}}),  // 11 s old: not live
      Node("long-gone", 9, kT0 - 1h, {{2, 4}})};      // before these drains: no say
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports, kT0 + 11s, kLive, kHold, {}),
              ElementsAre(2));
  // Back, and drained: freed.
  const std::vector<NodeReport> back = {Node("a", 12, kT0 + 12s, {{1, 0}, {2, 0}}),
                                        Node("restarting", 12, kT0 + 12s, {{1, 0}, {2, 0}})};
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, back, kT0 + 12s, kLive, kHold, {}),
              ElementsAre(1, 2));
}

// Review (process pauses): an agent paused (SIGSTOP, a frozen VM) or stuck in a stalled
// HAProxy's socket stops reporting while its HAProxy still sends the leaving target new
// requests at full weight. Its silence dropped it from the count once its report was 3 x
// INTERVAL old, and the other node's 0 freed the slot, and ended the instance, under that
// node's traffic (2,539 failed requests through it in the reviewer's run).
TEST(DrainedSlots, ANodeSilentSinceBeforeTheDrainHoldsItForTheDrainTimeout) {
  const std::map<int, std::uint64_t> since = {{1, 12}, {2, 12}};
  const auto reports = [](std::uint64_t paused_applied, std::map<int, int> paused_sessions) {
    return std::vector<NodeReport>{Node("a", 12, kT0 + 4s, {{1, 0}, {2, 0}}),
                                   Node("paused", paused_applied, kT0, paused_sessions)};
  };
  // Silent for 4 s (not live) before it applied the drain: it holds both slots.
  const std::set<std::string> seen = {"a", "paused"};
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports(11, {}), kT0 + 4s, kLive, kHold, seen),
              IsEmpty());
  // One the caller never saw report (read first after it started, maybe long dead): no hold.
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports(11, {}), kT0 + 4s, kLive, kHold, {}),
              ElementsAre(1, 2));
  // At the drain's generation but without a word on slot 2 (its sessions unread): slot 2 held.
  EXPECT_THAT(
      DrainedSlots(DrainingTable(), since, reports(12, {{1, 0}}), kT0 + 4s, kLive, kHold, seen),
      ElementsAre(1));
  // Silent for the drain timeout (kHold): gone, it holds nothing any more.
  EXPECT_THAT(DrainedSlots(DrainingTable(), since, reports(11, {}), kT0 + 5s, kLive, kHold, seen),
              ElementsAre(1, 2));
}

TEST(DrainedSlots, NoLiveNodeMeansOnlyTheTimeout) {
  const std::vector<NodeReport> reports = {Node("a", 12, kT0, {{1, 0}, {2, 0}})};
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, reports, kT0 + 3s, kLive, kHold, {}), IsEmpty());
  EXPECT_THAT(DrainedSlots(DrainingTable(), {}, {}, kT0, kLive, kHold, {}), IsEmpty());
}

TEST(NodesBehind, StaleReportsAndOldGenerationsOnceTheTableSettled) {
  const std::vector<NodeReport> reports = {Node("current", 12, kT0, {}),
                                           Node("lagging", 11, kT0, {}),
                                           Node("stopped", 12, kT0 - 5s, {})};
  // The table changed 1 s ago: a node at 11 may still be following.
  EXPECT_EQ(NodesBehind(reports, 12, kT0 - 1s, kT0 + 1s, kLive), 1);
  // It changed 10 s ago: 11 is behind.
  EXPECT_EQ(NodesBehind(reports, 12, kT0 - 10s, kT0 + 1s, kLive), 2);
}

}  // namespace
}  // namespace hsdo
