#include "app/status.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace hsdo {
namespace {

SlotTable OneFilledOfThree() {
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
  const std::string text = FormatStatusTable(OneFilledOfThree());
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

// Found in review: read with a list size below the fleet's, status showed "3 of 3 slots
// enabled" and nothing of the slots above, which still take traffic.
TEST(Status, FilledSlotsAboveTheListSizeAreSaid) {
  SlotTable table = OneFilledOfThree();
  for (const int id : {5, 7}) {
    Slot slot;
    slot.id = id;
    slot.status = SlotStatus::kEnabled;
    slot.target = Target{"10.0.0." + std::to_string(id), std::nullopt, "", "g", ""};
    table.beyond.push_back(slot);
  }
  const std::string text = FormatStatusTable(table);
  EXPECT_NE(text.find("; and 2 filled slots above this HAPROXY_BACKEND_SERVERS_LIST_SIZE=3, up "
                      "to slot 7, not shown: run with the fleet's list size"),
            std::string::npos)
      << text;
  EXPECT_EQ(nlohmann::json::parse(FormatStatusJson(table))["beyond_list_size"], 2);
}

TEST(Status, ATableAChainIsStillWritingSaysSo) {
  SlotTable table = OneFilledOfThree();
  table.generation = 5 | kChainingBit;
  const std::string text = FormatStatusTable(table);
  EXPECT_NE(text.find("(a write of a chain, not its last: agents wait for the rest)"),
            std::string::npos)
      << text;
}

TEST(Status, Json) {
  const auto doc = nlohmann::json::parse(FormatStatusJson(OneFilledOfThree()));
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
  SlotTable table = OneFilledOfThree();
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
      "hsdo_orchestrator_removal_held_since_timestamp_seconds 1700000000\n"
      "# TYPE hsdo_orchestrator_removal_held_slot gauge\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"12\"} 1\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"3\"} 1\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"4\"} 0\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"x\"} 1\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"9\"} 1.5\n"
      "hsdo_orchestrator_removal_held_slot{slot=\"7\"} 1e+00 1700000000000\n";
  const auto hold = ParseRemovalHold(metrics);
  ASSERT_TRUE(hold);
  EXPECT_EQ(hold->slots, 5);
  // Which slots (last notes: status could not say), in slot order.
  EXPECT_EQ(hold->slot_ids, (std::vector<int>{3, 7, 12}));
  EXPECT_EQ(hold->since, WallTime{std::chrono::seconds{1'700'000'000}});
  EXPECT_FALSE(ParseRemovalHold("hsdo_orchestrator_removal_held 0\n"));
  EXPECT_FALSE(ParseRemovalHold("hsdo_agent_cycles_total 3\n"));

  const std::string text = FormatStatusTable(OneFilledOfThree(), hold);
  EXPECT_NE(text.find("removal held: the orchestrator holds back freeing 5 slots: 3 7 12 (with"),
            std::string::npos)
      << text;
  // Review (deployment patterns): the count includes the removals of the window, and a hold
  // can end before its delay when they leave it.
  EXPECT_NE(text.find("(with those freed in the last MASS_REMOVAL_DELAY, more than "
                      "MAX_REMOVED_FRACTION of the enabled ones)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("or once the removals before it have left that window"), std::string::npos)
      << text;
  // And it may end sooner as a replacement (REPLACEMENTS_PROVEN_BY_CHECKS).
  EXPECT_NE(text.find("or sooner as a replacement when it is held only for the removals before "
                      "it and the slots it keeps have passed their health checks on most nodes"),
            std::string::npos)
      << text;
  EXPECT_EQ(FormatStatusTable(OneFilledOfThree()).find("removal held"), std::string::npos);
  // A long list: the first 32, and how many more.
  RemovalHold many = *hold;
  many.slot_ids.clear();
  for (int id = 1; id <= 40; ++id) many.slot_ids.push_back(id);
  EXPECT_NE(FormatStatusTable(OneFilledOfThree(), many).find(": 1 2 3 "), std::string::npos);
  EXPECT_NE(FormatStatusTable(OneFilledOfThree(), many)
                .find(" 31 32 and 8 more (--json lists them all) (with"),
            std::string::npos)
      << FormatStatusTable(OneFilledOfThree(), many);
  const auto doc = nlohmann::json::parse(FormatStatusJson(OneFilledOfThree(), hold));
  EXPECT_EQ(doc["removal_held"], true);
  EXPECT_EQ(doc["removal_held_slots"], 5);
  EXPECT_EQ(doc["removal_held_slot_ids"], (std::vector<int>{3, 7, 12}));
  EXPECT_EQ(nlohmann::json::parse(FormatStatusJson(OneFilledOfThree()))["removal_held"], false);
}

using namespace std::chrono_literals;

const WallTime kNow{std::chrono::seconds{1'764'500'000}};

NodeReport Report(std::string name, std::uint64_t generation, std::chrono::milliseconds age,
                  std::map<int, int> sessions = {}) {
  return NodeReport{.name = std::move(name),
                    .applied_generation = generation,
                    .applied_at = kNow - age - 1s,
                    .reported_at = kNow - age,
                    .draining_sessions = std::move(sessions)};
}

// Found in review: the lease's holder was shown as the leader after that orchestrator died
// (the lease stored no renewal time); and the JSON put its keys in alphabetical order once the
// leader was added, and showed a released lease as a leader named "".
Lease LeaseOf(std::string holder, std::int64_t renewed_s) {
  return Lease{.holder = std::move(holder),
               .epoch = 3,
               .version = 9,
               .duration_ms = 10'000,
               .since_unix_ms = 1'700'000'000'000,
               .renewed_unix_ms = renewed_s * 1000};
}

// The hold the orchestrator stores with the table is said where its exporter does not answer
// (`hsdo status` on another host than the orchestrator's), and is in the JSON whatever.
TEST(Status, TheRemovalHoldStoredWithTheTableIsSaidWhenTheExporterIsSilent) {
  SlotTable table = OneFilledOfThree();
  table.removal_hold = HeldRemoval{.slots = {2, 3}, .base = 3};
  const std::string text = FormatStatusTable(table);
  EXPECT_NE(text.find("removal hold stored with the table: the orchestrator's last write held "
                      "back freeing 2 slots: 2 3 (of 3 enabled when the hold began)"),
            std::string::npos)
      << text;
  const RemovalHold live{.slots = 2, .since = WallTime{}, .slot_ids = {2, 3}};
  EXPECT_EQ(FormatStatusTable(table, live).find("stored with the table"), std::string::npos);
  EXPECT_EQ(FormatStatusTable(OneFilledOfThree()).find("stored with the table"), std::string::npos);
  const auto doc = nlohmann::json::parse(FormatStatusJson(table));
  EXPECT_EQ(doc["stored_removal_hold"],
            nlohmann::json::parse(R"({"slot_ids": [2, 3], "base": 3})"));
  EXPECT_TRUE(
      nlohmann::json::parse(FormatStatusJson(OneFilledOfThree()))["stored_removal_hold"].is_null());
}

TEST(Status, ALeaseNobodyRenewsIsNotShownAsALeader) {
  const WallTime now{std::chrono::seconds{1'700'000'100}};
  const Lease live = LeaseOf("edge-1/7/ab12cd34", 1'700'000'097);
  EXPECT_EQ(JudgeLease(live, now), LeaseState::kHeld);
  EXPECT_EQ(FormatLeaseLine(live, now),
            "leader: edge-1/7/ab12cd34 since 2023-11-14 22:13:20 UTC (epoch 3, lease 10000 ms, "
            "renewed 3 s ago)\n");

  const Lease dead = LeaseOf("edge-1/7/ab12cd34", 1'700'000'055);
  EXPECT_EQ(JudgeLease(dead, now), LeaseState::kLapsed);
  EXPECT_EQ(FormatLeaseLine(dead, now),
            "leader: none renewing: edge-1/7/ab12cd34 last renewed its lease at 2023-11-14 "
            "22:14:15 UTC, 45 s ago, past its 10000 ms (epoch 3); no orchestrator leads, or its "
            "clock and this host's differ\n");

  // Written by an hsdo that did not store the time: shown as held, as before.
  const Lease unknown = LeaseOf("edge-1/7", 0);
  EXPECT_EQ(JudgeLease(unknown, now), LeaseState::kHeld);
  EXPECT_EQ(FormatLeaseLine(unknown, now),
            "leader: edge-1/7 since 2023-11-14 22:13:20 UTC (epoch 3, lease 10000 ms)\n");
  // Security review: the holder is the store's word; its control characters are not run.
  EXPECT_EQ(FormatLeaseLine(LeaseOf("evil\x1b[2J\nleader: fake", 1'700'000'097), now),
            "leader: evil\\x1b[2J\\nleader: fake since 2023-11-14 22:13:20 UTC (epoch 3, lease "
            "10000 ms, renewed 3 s ago)\n");
  // Stamped ahead of this host's clock: just renewed.
  EXPECT_EQ(JudgeLease(LeaseOf("a", 1'700'000'160), now), LeaseState::kHeld);

  const Lease released = LeaseOf("", 1'700'000'000);
  EXPECT_EQ(JudgeLease(released, now), LeaseState::kReleased);
  EXPECT_EQ(FormatLeaseLine(released, now),
            "leader: none, the lease was released at 2023-11-14 22:13:20 UTC (epoch 3)\n");
}

TEST(Status, JsonLeaderIsNullUnlessHeldAndKeepsTheKeysOrder) {
  const WallTime now{std::chrono::seconds{1'700'000'100}};
  const std::string base = FormatStatusJson(OneFilledOfThree());
  const auto held =
      nlohmann::ordered_json::parse(AddLeaseJson(base, LeaseOf("edge-1/7", 1'700'000'097), now));
  EXPECT_EQ(held.begin().key(), "generation");
  EXPECT_EQ(held["leader"]["holder"], "edge-1/7");
  EXPECT_EQ(held["leader"]["renewed"], "2023-11-14 22:14:57 UTC");
  EXPECT_EQ(held["leader"]["renewed_seconds_ago"], 3);
  EXPECT_FALSE(held.contains("lease"));

  const auto lapsed =
      nlohmann::ordered_json::parse(AddLeaseJson(base, LeaseOf("edge-1/7", 1'700'000'055), now));
  EXPECT_TRUE(lapsed["leader"].is_null());
  EXPECT_EQ(lapsed["lease"]["state"], "lapsed");
  EXPECT_EQ(lapsed["lease"]["holder"], "edge-1/7");
  EXPECT_EQ(lapsed["lease"]["renewed_seconds_ago"], 45);

  const auto released =
      nlohmann::ordered_json::parse(AddLeaseJson(base, LeaseOf("", 1'700'000'000), now));
  EXPECT_TRUE(released["leader"].is_null());
  EXPECT_EQ(released["lease"]["state"], "released");
  EXPECT_EQ(released["lease"]["epoch"], 3);
}

TEST(FleetStatus, LiveAndCurrentIsUpToDateStaleOrOlderIsBehind) {
  const auto nodes = JudgeFleet({Report("c", 12, 500ms), Report("a", 12, 2'900ms),
                                 Report("b", 12, 3'000ms), Report("d", 9, 100ms)},
                                12, kNow, 1s);
  ASSERT_EQ(nodes.size(), 4u);
  EXPECT_EQ(nodes[0].report.name, "a");  // by name
  EXPECT_TRUE(nodes[0].live);
  EXPECT_FALSE(nodes[0].behind);
  EXPECT_EQ(nodes[0].generations_behind, 0u);
  EXPECT_EQ(nodes[1].report.name, "b");  // exactly 3 x INTERVAL old: not live
  EXPECT_FALSE(nodes[1].live);
  EXPECT_TRUE(nodes[1].behind);
  EXPECT_EQ(nodes[1].report_age, 3s);
  EXPECT_FALSE(nodes[2].behind);
  EXPECT_EQ(nodes[3].report.name, "d");  // live but 3 generations behind
  EXPECT_TRUE(nodes[3].live);
  EXPECT_TRUE(nodes[3].behind);
  EXPECT_EQ(nodes[3].generations_behind, 3u);
}

TEST(FleetStatus, ANodeWithALongerIntervalIsLiveForThreeOfIts) {
  NodeReport slow = Report("slow", 12, 4s);
  slow.interval = 5s;
  NodeReport gone = Report("gone", 12, 15s);
  gone.interval = 5s;
  const auto nodes = JudgeFleet({slow, gone}, 12, kNow, 1s);
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[1].report.name, "slow");
  EXPECT_TRUE(nodes[1].live);
  EXPECT_FALSE(nodes[1].behind);
  EXPECT_FALSE(nodes[0].live);
}

TEST(FleetStatus, ATableMarkedAsAWriteOfAChainCountsWithoutTheMark) {
  const auto nodes = JudgeFleet({Report("a", 12, 500ms)}, 13 | kChainingBit, kNow, 1s);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_TRUE(nodes[0].behind);
  EXPECT_EQ(nodes[0].generations_behind, 1u);
}

TEST(FleetStatus, AheadOfTheTableOrFromTheFutureIsNotANumberBehind) {
  const auto nodes = JudgeFleet({Report("a", 5, -10s)}, 3, kNow, 1s);
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].report_age, 0ms);  // clock skew: not a negative age
  EXPECT_FALSE(nodes[0].generations_behind);
  EXPECT_TRUE(nodes[0].behind);  // not the table's generation
}

TEST(FleetStatus, TableListsEveryNode) {
  NodeReport a = Report("edge-a", 7, 1'200ms);
  a.version = "0.1.0";  // edge-b's agent is of a version that did not say
  a.pending_admission = std::set<int>{4, 12};
  a.gates_every_slot = true;
  a.unvouched = {5, 9};
  NodeReport c = Report("edge-c", 7, 1s);
  c.gates_every_slot = false;  // it does not gate every slot on its check
  c.pending_admission = std::set<int>{};
  NodeReport d = Report("edge-d", 7, 1s);
  d.gates_every_slot = true;
  d.pending_admission = std::set<int>{};
  const auto nodes = JudgeFleet({a, Report("edge-b", 6, 10s, {{3, 5}, {9, 0}}), c, d}, 7, kNow, 2s);
  const std::string text = FormatFleetTable(nodes, 7, 2s);
  EXPECT_NE(text.find("generation 7: 4 nodes reported, 1 behind (live: reported within 6 s"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("NODE    APPLIED  BEHIND  REPORTED    LIVE  STATE       VERSION  "
                      "AWAITING CHECK  CHECKS VOUCH  DRAINING SESSIONS"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("edge-a  7        0       1.2 s ago   yes   up to date  0.1.0    4 12        "
                      "    all but 5 9   -"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("edge-b  6        1       10.0 s ago  no    behind      -        ?         "
                      "      ?             3=5 9=0"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("edge-c  7        0       1.0 s ago   yes   up to date  -        -         "
                      "      none          -"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("edge-d  7        0       1.0 s ago   yes   up to date  -        -         "
                      "      all           -"),
            std::string::npos)
      << text;
  EXPECT_NE(FormatFleetTable({}, 7, 2s).find("no node has reported yet"), std::string::npos);
}

TEST(FleetStatus, Json) {
  NodeReport slow = Report("b", 9, 1s);
  slow.interval = 5s;  // its liveness is 3 x its own INTERVAL, which the JSON says
  NodeReport a_report = Report("a", 7, 1s, {{3, 5}});
  a_report.version = "0.1.0";
  a_report.pending_admission = std::set<int>{2};
  a_report.gates_every_slot = true;
  const auto nodes = JudgeFleet({a_report, slow}, 7, kNow, 1s);
  const auto doc = nlohmann::json::parse(FormatFleetJson(nodes, 7, 1s));
  EXPECT_EQ(doc["generation"], 7);
  EXPECT_EQ(doc["nodes_behind"], 1);
  EXPECT_EQ(doc["live_within_seconds"], 3.0);
  ASSERT_EQ(doc["nodes"].size(), 2u);
  const auto& a = doc["nodes"][0];
  EXPECT_EQ(a["name"], "a");
  EXPECT_EQ(a["applied_generation"], 7);
  EXPECT_EQ(a["generations_behind"], 0);
  EXPECT_EQ(a["live"], true);
  EXPECT_EQ(a["live_within_seconds"], 3.0);
  EXPECT_EQ(doc["nodes"][1]["live_within_seconds"], 15.0);
  EXPECT_EQ(a["behind"], false);
  EXPECT_EQ(a["report_age_seconds"], 1.0);
  EXPECT_EQ(a["reported_at"], "2025-11-30 10:53:19.000000");
  EXPECT_EQ(a["draining_sessions"], nlohmann::json::parse(R"({"3":5})"));
  EXPECT_EQ(a["version"], "0.1.0");
  EXPECT_TRUE(doc["nodes"][1]["version"].is_null());
  EXPECT_EQ(a["pending_admission"], nlohmann::json::parse("[2]"));
  EXPECT_TRUE(doc["nodes"][1]["pending_admission"].is_null());
  EXPECT_EQ(a["gates_every_slot"], true);
  // an agent of a version that did not say: null, as the table's "?", not false
  EXPECT_TRUE(doc["nodes"][1]["gates_every_slot"].is_null());
  EXPECT_TRUE(doc["nodes"][1]["generations_behind"].is_null());
  EXPECT_EQ(doc["nodes"][1]["behind"], true);
}

}  // namespace
}  // namespace hsdo
