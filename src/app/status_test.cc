#include "app/status.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace hsdo {
namespace {

SlotTable Sample() {
  SlotTable table = SlotTable::Empty(3);
  table.generation = 4;
  table.overflow = 2;
  Slot& slot = table.slots[1];
  slot.status = SlotStatus::kEnabled;
  slot.target = Target{"10.0.0.5", 8080, "web-1", "asg-a", "eu-west-1a"};
  slot.weight = 7;
  slot.last_weight_update = WallTime{std::chrono::seconds{1'700'000'000}};
  return table;
}

TEST(Status, TableIsAlignedAndComplete) {
  const std::string text = FormatStatusTable(Sample());
  EXPECT_NE(text.find("generation 4: 1 of 3 slots enabled, 2 targets left out"), std::string::npos)
      << text;
  EXPECT_NE(text.find("SLOT  STATE    OVERRIDE  ADDRESS        NAME   GROUP  AZ          WEIGHT"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("2     enabled  -         10.0.0.5:8080  web-1  asg-a  eu-west-1a  7       "
                      "2023-11-14 22:13:20.000000"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("1     free     -"), std::string::npos) << text;
}

TEST(Status, Json) {
  const auto doc = nlohmann::json::parse(FormatStatusJson(Sample()));
  EXPECT_EQ(doc["generation"], 4);
  EXPECT_EQ(doc["list_size"], 3);
  EXPECT_EQ(doc["enabled"], 1);
  EXPECT_EQ(doc["overflow"], 2);
  ASSERT_EQ(doc["slots"].size(), 3u);
  EXPECT_EQ(doc["slots"][0]["state"], "free");
  EXPECT_EQ(doc["slots"][1]["address"], "10.0.0.5");
  EXPECT_EQ(doc["slots"][1]["port"], 8080);
  EXPECT_EQ(doc["slots"][1]["weight"], 7);
  EXPECT_EQ(doc["slots"][1]["az"], "eu-west-1a");
}

TEST(Status, DrainingSlotsAndOverridesAreShown) {
  SlotTable table = Sample();
  table.slots[1].admin = AdminState::kMaint;
  Slot& draining = table.slots[2];
  draining = table.slots[1];
  draining.id = 3;
  draining.status = SlotStatus::kDraining;
  draining.target.address = "10.0.0.6";
  draining.admin = AdminState::kNone;
  draining.drain_since = WallTime{std::chrono::seconds{1'700'000'100}};
  const std::string text = FormatStatusTable(table);
  EXPECT_NE(text.find("1 of 3 slots enabled, 1 draining, 1 with an operator override (hsdo "
                      "set-state), 2 targets left out"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("2     enabled   maint     10.0.0.5:8080"), std::string::npos) << text;
  EXPECT_NE(text.find("3     draining  -         10.0.0.6:8080"), std::string::npos) << text;
  EXPECT_NE(text.find("2023-11-14 22:15:00.000000"), std::string::npos) << text;

  const auto doc = nlohmann::json::parse(FormatStatusJson(table));
  EXPECT_EQ(doc["draining"], 1);
  EXPECT_EQ(doc["slots"][1]["override"], "maint");
  EXPECT_EQ(doc["slots"][2]["state"], "draining");
  EXPECT_EQ(doc["slots"][2]["override"], nullptr);
  EXPECT_EQ(doc["slots"][2]["address"], "10.0.0.6");
  EXPECT_EQ(doc["slots"][2]["draining_since"], "2023-11-14 22:15:00.000000");
}

TEST(Status, RemovalHoldFromTheOrchestratorsMetrics) {
  const std::string metrics =
      "# HELP hsdo_orchestrator_removal_held 1 while ...\n"
      "# TYPE hsdo_orchestrator_removal_held gauge\n"
      "hsdo_orchestrator_removal_held 1\n"
      "hsdo_orchestrator_removal_held_slots 5\n"
      "hsdo_orchestrator_removal_held_since_timestamp_seconds 1700000000\n";
  const auto hold = ParseRemovalHold(metrics);
  ASSERT_TRUE(hold);
  EXPECT_EQ(hold->slots, 5);
  EXPECT_EQ(hold->since, WallTime{std::chrono::seconds{1'700'000'000}});
  EXPECT_FALSE(ParseRemovalHold("hsdo_orchestrator_removal_held 0\n"));
  EXPECT_FALSE(ParseRemovalHold("hsdo_agent_cycles_total 3\n"));

  const std::string text = FormatStatusTable(Sample(), hold);
  EXPECT_NE(text.find("removal held: the orchestrator holds back freeing 5 slots"),
            std::string::npos)
      << text;
  EXPECT_EQ(FormatStatusTable(Sample()).find("removal held"), std::string::npos);
  const auto doc = nlohmann::json::parse(FormatStatusJson(Sample(), hold));
  EXPECT_EQ(doc["removal_held"], true);
  EXPECT_EQ(doc["removal_held_slots"], 5);
  EXPECT_EQ(nlohmann::json::parse(FormatStatusJson(Sample()))["removal_held"], false);
}

}  // namespace
}  // namespace hsdo
