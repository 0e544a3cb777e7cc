// Property test: thousands of random joins and leaves never move a live target, never put
// two targets in one slot, always give new targets the lowest free slots, and fill as many
// slots as there are targets (up to the list size).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "core/planner.h"

namespace hsdo {
namespace {

using namespace std::chrono_literals;

class PlannerProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(PlannerProperty, RandomChurnKeepsTheInvariants) {
  std::mt19937 rng(GetParam());
  const int size = std::uniform_int_distribution<int>(1, 40)(rng);
  const PlannerConfig config{.list_size = size,
                             .min_weight = 1,
                             .max_weight = 10,
                             .increase_weight = 1,
                             .increase_interval = 5s};
  SlotTable table = SlotTable::Empty(size);
  std::vector<Target> live;
  int next_address = 1;
  WallTime now{std::chrono::seconds{1'700'000'000}};

  for (int step = 0; step < 2000; ++step) {
    // Random leaves and joins; sometimes more targets than slots.
    std::vector<Target> targets;
    for (const auto& t : live) {
      if (std::uniform_int_distribution<int>(0, 9)(rng) != 0) targets.push_back(t);
    }
    const int joins = std::uniform_int_distribution<int>(0, 3)(rng);
    for (int j = 0; j < joins && static_cast<int>(targets.size()) < size + 5; ++j) {
      Target t;
      t.address = "10." + std::to_string(next_address / 65536) + "." +
                  std::to_string((next_address / 256) % 256) + "." +
                  std::to_string(next_address % 256);
      if (next_address % 3 == 0) t.port = static_cast<std::uint16_t>(8000 + next_address % 7);
      ++next_address;
      targets.push_back(t);
    }
    now += std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 4000)(rng));

    const Plan plan = PlanSlots(table, targets, config, now);
    const SlotTable& next = plan.next;
    ASSERT_EQ(static_cast<int>(next.slots.size()), size);

    std::set<std::string> discovered;
    for (const auto& t : targets) discovered.insert(t.Key());
    std::map<std::string, int> before;
    for (const auto& s : table.slots) {
      if (s.enabled()) before[s.target.Key()] = s.id;
    }

    std::set<std::string> seen;
    int highest_new = 0;
    for (const auto& s : next.slots) {
      ASSERT_EQ(s.id, &s - next.slots.data() + 1);
      if (!s.enabled()) {
        ASSERT_EQ(s, Slot::Free(s.id));
        continue;
      }
      const auto key = s.target.Key();
      ASSERT_TRUE(seen.insert(key).second) << "two slots hold " << key;
      ASSERT_TRUE(discovered.contains(key)) << "slot " << s.id << " holds a gone target";
      ASSERT_GE(s.weight, config.min_weight);
      ASSERT_LE(s.weight, config.max_weight);
      if (const auto it = before.find(key); it != before.end()) {
        ASSERT_EQ(it->second, s.id) << key << " moved";
      } else {
        highest_new = std::max(highest_new, s.id);
      }
    }
    // New targets took the lowest free slots: no free slot below a newly filled one.
    for (const auto& s : next.slots) {
      if (s.id < highest_new) {
        ASSERT_TRUE(s.enabled()) << "slot " << s.id << " skipped";
      }
    }
    const int expected = std::min<int>(size, static_cast<int>(discovered.size()));
    ASSERT_EQ(next.EnabledCount(), expected);
    ASSERT_EQ(next.overflow, static_cast<int>(discovered.size()) - expected);
    // `changed` lists exactly the slots that differ.
    std::vector<int> differing;
    for (const auto& s : next.slots) {
      if (!(table.slots[static_cast<std::size_t>(s.id - 1)] == s)) differing.push_back(s.id);
    }
    ASSERT_EQ(plan.changed, differing);

    table = next;
    live = targets;
  }
}

// The same churn with draining: random drain timeouts, targets the source asks to drain,
// targets that come back, nodes reporting random slots drained.
TEST_P(PlannerProperty, RandomChurnWithDrainingKeepsTheInvariants) {
  std::mt19937 rng(GetParam() + 100);
  const int size = std::uniform_int_distribution<int>(1, 30)(rng);
  const PlannerConfig config{
      .list_size = size,
      .increase_interval = 5s,
      .drain_timeout = std::chrono::seconds(std::uniform_int_distribution<int>(0, 10)(rng))};
  SlotTable table = SlotTable::Empty(size);
  std::vector<Target> pool;  // every target ever seen; a random part of it is discovered
  WallTime now{std::chrono::seconds{1'700'000'000}};
  const auto chance = [&](int percent) {
    return std::uniform_int_distribution<int>(1, 100)(rng) <= percent;
  };

  for (int step = 0; step < 1500; ++step) {
    if (pool.size() < static_cast<std::size_t>(size) * 2 && chance(50)) {
      Target t;
      t.address =
          "10.0." + std::to_string(pool.size() / 256) + "." + std::to_string(pool.size() % 256);
      pool.push_back(t);
    }
    std::vector<Target> targets;
    for (const auto& t : pool) {
      if (!chance(70)) continue;
      targets.push_back(t);
      targets.back().drain = chance(10);
    }
    std::set<int> drained;
    for (const auto& slot : table.slots) {
      if (slot.draining() && chance(20)) drained.insert(slot.id);
    }
    now += std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 4000)(rng));

    const Plan plan = PlanSlots(table, targets, config, now, drained);
    const SlotTable& next = plan.next;
    ASSERT_EQ(static_cast<int>(next.slots.size()), size);

    std::map<std::string, bool> discovered;  // key -> asked to drain
    for (const auto& t : targets) discovered.emplace(t.Key(), t.drain);
    std::map<std::string, int> before;  // filled before: key -> slot
    for (const auto& s : table.slots) {
      if (s.filled()) before[s.target.Key()] = s.id;
    }
    std::set<std::string> seen;
    int unplaced = 0;
    for (const auto& s : next.slots) {
      if (!s.filled()) {
        ASSERT_EQ(s, Slot::Free(s.id));
        continue;
      }
      const auto key = s.target.Key();
      ASSERT_TRUE(seen.insert(key).second) << "two slots hold " << key;
      ASSERT_FALSE(s.target.drain);
      const auto it = discovered.find(key);
      const auto was = before.find(key);
      if (was != before.end()) {
        ASSERT_EQ(was->second, s.id) << key << " moved";
      }
      if (s.enabled()) {
        ASSERT_TRUE(it != discovered.end() && !it->second) << key << " enabled but not wanted";
        ASSERT_FALSE(s.drain_since);
      } else {
        ASSERT_TRUE(it == discovered.end() || it->second) << key << " drains but is wanted";
        ASSERT_NE(was, before.end()) << "slot " << s.id << " was given to a draining target";
        ASSERT_TRUE(s.drain_since);
        ASSERT_LT(now - *s.drain_since, config.drain_timeout) << "slot " << s.id << " timed out";
        ASSERT_FALSE(drained.contains(s.id)) << "slot " << s.id << " was drained";
      }
    }
    for (const auto& [key, drain] : discovered) {
      // A wanted target that held a slot holds it still, enabled.
      if (!drain && before.contains(key)) {
        ASSERT_TRUE(seen.contains(key)) << key << " lost";
      }
      if (!drain && !seen.contains(key)) ++unplaced;
    }
    ASSERT_EQ(next.overflow, unplaced);
    // A slot that was draining is never taken by another target unless it was freed first
    // (timed out or drained): checked above by "moved"; and a free slot is left only when
    // every wanted target has a slot.
    if (unplaced > 0) {
      for (const auto& s : next.slots) {
        ASSERT_TRUE(s.filled()) << "slot " << s.id << " left free";
      }
    }
    std::vector<int> differing;
    for (const auto& s : next.slots) {
      if (!(table.slots[static_cast<std::size_t>(s.id - 1)] == s)) differing.push_back(s.id);
    }
    ASSERT_EQ(plan.changed, differing);
    table = next;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, PlannerProperty, ::testing::Range(1u, 11u));

}  // namespace
}  // namespace hsdo
