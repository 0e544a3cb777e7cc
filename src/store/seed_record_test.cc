#include "store/seed_record.h"

#include <gtest/gtest.h>

#include "common/python_time.h"
#include "store/testing/invalid_records.h"

namespace hsdo {
namespace {

using V = AttributeValue;

Slot Enabled(int id, std::optional<std::uint16_t> port = std::nullopt) {
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  slot.target = Target{.address = "10.0.1.5",
                       .port = port,
                       .name = "i-0abc",
                       .group = "web-asg",
                       .az = "eu-west-1a"};
  slot.weight = 7;
  slot.last_weight_update = ParsePythonDatetime("2026-11-25 12:00:00.250000");
  return slot;
}

TEST(SeedRecord, FreeSlotIsTheSeedsFreeRecordExactly) {
  const Record expected = {{"BackendServerID", V::Number(4)},
                           {"IPAddress", V::String("none")},
                           {"ServerName", V::String("none")},
                           {"ASG", V::String("none")},
                           {"Weight", V::Number(0)},
                           {"BackendServerStatus", V::String("disabled")},
                           {"LastWeightUpdate", V::String("0-0-0 00:00:00.000000")}};
  EXPECT_EQ(SlotToRecord(Slot::Free(4)), expected);
  EXPECT_EQ(*RecordToSlot(expected, 4), Slot::Free(4));
}

TEST(SeedRecord, EnabledSlotHasEveryAttributeAndRoundTrips) {
  const Record record = SlotToRecord(Enabled(2, 8080));
  const Record expected = {{"BackendServerID", V::Number(2)},
                           {"IPAddress", V::String("10.0.1.5")},
                           {"ServerName", V::String("i-0abc")},
                           {"ASG", V::String("web-asg")},
                           {"Weight", V::Number(7)},
                           {"BackendServerStatus", V::String("enabled")},
                           {"LastWeightUpdate", V::String("2026-11-25 12:00:00.250000")},
                           {"Port", V::Number(8080)},
                           {"AZ", V::String("eu-west-1a")}};
  EXPECT_EQ(record, expected);
  auto back = RecordToSlot(record, 2);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, Enabled(2, 8080));
}

TEST(SeedRecord, OptionalAttributesAreAbsentWhenUnknown) {
  Slot plain = Enabled(3);
  plain.target.az.clear();
  plain.target.group.clear();
  plain.last_weight_update.reset();
  const Record record = SlotToRecord(plain);
  EXPECT_FALSE(record.contains("Port"));
  EXPECT_FALSE(record.contains("AZ"));
  EXPECT_EQ(record.at("ASG"), V::String("none"));
  EXPECT_EQ(record.at("LastWeightUpdate"), V::String("0-0-0 00:00:00.000000"));
  EXPECT_EQ(*RecordToSlot(record, 3), plain);
  // A name defaults to the address, as the seed writes it.
  plain.target.name.clear();
  EXPECT_EQ(SlotToRecord(plain).at("ServerName"), V::String("10.0.1.5"));
}

TEST(SeedRecord, ReadsARecordThePythonServerWrote) {
  const Record record = {{"BackendServerID", V::Number(1)},
                         {"IPAddress", V::String("172.31.5.9")},
                         {"ServerName", V::String("i-1")},
                         {"ASG", V::String("front")},
                         {"Weight", V::Number(10)},
                         {"BackendServerStatus", V::String("enabled")},
                         {"LastWeightUpdate", V::String("2021-03-04 05:06:07")}};
  auto slot = RecordToSlot(record, 1);
  ASSERT_TRUE(slot) << slot.error().message;
  EXPECT_EQ(slot->target.address, "172.31.5.9");
  EXPECT_EQ(slot->target.group, "front");
  EXPECT_FALSE(slot->target.port);
  EXPECT_TRUE(slot->last_weight_update);
}

TEST(SeedRecord, AnOddDateRestartsTheRampInsteadOfFreeingTheSlot) {
  Record record = SlotToRecord(Enabled(1));
  record["LastWeightUpdate"] = V::String("yesterday");
  auto slot = RecordToSlot(record, 1);
  ASSERT_TRUE(slot);
  EXPECT_FALSE(slot->last_weight_update);
}

// A refused record reads as a free slot, which takes its live target out on every node and
// moves it to another slot: a label (which never reaches HAProxy) is never a reason.
TEST(SeedRecord, ALabelHsdoWouldNotWriteKeepsTheSlotAndIsMadePrintable) {
  Record record = SlotToRecord(Enabled(1, 80));
  record["ServerName"] = V::String("web 1 \"blue\"; a\\b");
  record["ASG"] = V::String("asg\r\nx");
  record["AZ"] = V::String(std::string(300, 'z') + "\x1b[31m");
  auto slot = RecordToSlot(record, 1);
  ASSERT_TRUE(slot) << slot.error().message;
  EXPECT_TRUE(slot->enabled());
  EXPECT_EQ(slot->target.address, "10.0.1.5");
  EXPECT_EQ(slot->target.port, 80);
  EXPECT_EQ(slot->target.name, "web 1 \"blue\"; a\\b");
  EXPECT_EQ(slot->target.group, "asg??x");
  EXPECT_EQ(slot->target.az, std::string(255, 'z'));

  record["ServerName"] = V::Number(7);
  record["ASG"] = V{V::Type::kOther, ""};
  slot = RecordToSlot(record, 1);
  ASSERT_TRUE(slot) << slot.error().message;
  EXPECT_EQ(slot->target.name, "7");
  EXPECT_EQ(slot->target.group, "");
}

TEST(SeedRecord, EveryInvalidFormIsRefusedWithAReasonNamingTheAttribute) {
  const Record good = SlotToRecord(Enabled(1, 80));
  for (const auto& form : testing::InvalidForms()) {
    Record record = good;
    if (form.remove) {
      record.erase(form.attribute);
    } else {
      record.insert_or_assign(form.attribute, form.value);
    }
    auto slot = RecordToSlot(record, 1);
    ASSERT_FALSE(slot) << form.attribute << "=" << form.value.text;
    EXPECT_NE(slot.error().message.find(form.why), std::string::npos) << slot.error().message;
    // The reason never carries the value (it goes to a log line).
    for (const char c : slot.error().message) EXPECT_GE(static_cast<unsigned char>(c), 0x20);
  }
}

TEST(SeedRecord, ADisabledRecordIsFreeWhateverElseItHolds) {
  Record record = SlotToRecord(Enabled(1));
  record["BackendServerStatus"] = V::String("disabled");
  record["IPAddress"] = V::String("junk; shutdown");
  EXPECT_EQ(*RecordToSlot(record, 1), Slot::Free(1));
}

TEST(SeedRecord, ADrainingSlotIsDisabledForPythonAgentsAndRoundTrips) {
  Slot draining = Enabled(5, 8080);
  draining.status = SlotStatus::kDraining;
  draining.drain_since = ParsePythonDatetime("2026-11-30 10:00:00.500000");
  const Record record = SlotToRecord(draining);
  EXPECT_EQ(record.at("BackendServerStatus"), V::String("disabled"));
  EXPECT_EQ(record.at("IPAddress"), V::String("10.0.1.5"));
  EXPECT_EQ(record.at("DrainingSince"), V::String("2026-11-30 10:00:00.500000"));
  EXPECT_FALSE(record.contains("AdminState"));
  // A Python agent reads IPAddress and Weight only: at weight 0 it sends the server no new
  // request, as a drain. (Review: with Weight 7 it kept the leaving target in full service.)
  EXPECT_EQ(record.at("Weight"), V::Number(0));
  EXPECT_EQ(record.at("DrainingWeight"), V::Number(7));
  auto back = RecordToSlot(record, 5);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, draining);
  EXPECT_TRUE(back->filled());
  EXPECT_FALSE(back->enabled());
  // An earlier version's draining record: its Weight is the slot's.
  Record earlier = record;
  earlier.erase("DrainingWeight");
  earlier["Weight"] = V::Number(7);
  back = RecordToSlot(earlier, 5);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(*back, draining);
  // Review of f051b3b: an earlier version updating record 1 in place writes the weight in
  // Weight and leaves a DrainingWeight it does not know: Weight wins.
  Record stale = earlier;
  stale["DrainingWeight"] = V::Number(3);
  back = RecordToSlot(stale, 5);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->weight, 7);
  // Enabled again: no DrainingWeight, the seed's Weight.
  Slot enabled = draining;
  enabled.status = SlotStatus::kEnabled;
  enabled.drain_since.reset();
  EXPECT_EQ(SlotToRecord(enabled).at("Weight"), V::Number(7));
  EXPECT_FALSE(SlotToRecord(enabled).contains("DrainingWeight"));
}

// When the slot's last target was removed, for the removal guard after a restart: on free and
// filled records; a value that is not a date is no time, never an invalid record.
TEST(SeedRecord, RemovedAtRoundTripsOnFreeAndFilledRecords) {
  Slot free = Slot::Free(3);
  free.removed_at = ParsePythonDatetime("2026-12-02 15:00:00.125000");
  const Record record = SlotToRecord(free);
  EXPECT_EQ(record.at("RemovedAt"), V::String("2026-12-02 15:00:00.125000"));
  EXPECT_EQ(record.at("BackendServerStatus"), V::String("disabled"));
  auto back = RecordToSlot(record, 3);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_FALSE(back->filled());
  EXPECT_EQ(back->removed_at, free.removed_at);

  Slot replaced = Enabled(2);
  replaced.removed_at = free.removed_at;
  back = RecordToSlot(SlotToRecord(replaced), 2);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_TRUE(back->enabled());
  EXPECT_EQ(back->removed_at, free.removed_at);

  Record odd = record;
  odd["RemovedAt"] = V::String("yesterday");
  back = RecordToSlot(odd, 3);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->removed_at, std::nullopt);
  EXPECT_FALSE(SlotToRecord(Slot::Free(3)).contains("RemovedAt"));
}

// Where an invalid record's target goes back: its address and port, whatever else is wrong.
TEST(SeedRecord, AnInvalidRecordStillNamesItsTargetWhenItsAddressReads) {
  Slot held = Enabled(2, 8080);
  held.admin = AdminState::kDrain;
  Record record = SlotToRecord(held);
  record["LastWeightUpdate"] = V::String("2026-12-02\n");
  ASSERT_FALSE(RecordToSlot(record, 2));
  EXPECT_EQ(
      RecordHeldTarget(record),
      (HeldByInvalidRecord{.key = "10.0.1.5:8080", .weight = 7, .admin = AdminState::kDrain}));
  record["Weight"] = V::Number(999);
  record.erase("Port");
  record.erase("AdminState");
  EXPECT_EQ(RecordHeldTarget(record), (HeldByInvalidRecord{.key = "10.0.1.5"}));
  record["Port"] = V::Number(0);
  EXPECT_EQ(RecordHeldTarget(record), std::nullopt);
  record.erase("Port");
  record["IPAddress"] = V::String("web-1.internal");
  EXPECT_EQ(RecordHeldTarget(record), std::nullopt);
}

TEST(SeedRecord, ADrainingRecordNeedsADateAndAnAddress) {
  Slot draining = Enabled(5);
  draining.status = SlotStatus::kDraining;
  draining.drain_since = ParsePythonDatetime("2026-11-30 10:00:00.000000");
  Record record = SlotToRecord(draining);
  record["DrainingSince"] = V::String("yesterday");
  EXPECT_FALSE(RecordToSlot(record, 5));
  record = SlotToRecord(draining);
  record["IPAddress"] = V::String("none");
  EXPECT_FALSE(RecordToSlot(record, 5));
  for (const V& weight : {V::Number(-1), V::Number(257), V::String("7")}) {
    record = SlotToRecord(draining);
    record["DrainingWeight"] = weight;
    EXPECT_FALSE(RecordToSlot(record, 5)) << weight.text;
  }
}

TEST(SeedRecord, AnOverrideRoundTripsAndAnUnknownOneIsIgnored) {
  for (const AdminState admin : {AdminState::kDrain, AdminState::kMaint}) {
    Slot slot = Enabled(2);
    slot.admin = admin;
    const Record record = SlotToRecord(slot);
    EXPECT_EQ(record.at("AdminState"), V::String(admin == AdminState::kDrain ? "drain" : "maint"));
    EXPECT_EQ(*RecordToSlot(record, 2), slot);
  }
  Record record = SlotToRecord(Enabled(2));
  record["AdminState"] = V::String("shutdown sessions");
  EXPECT_EQ(*RecordToSlot(record, 2), Enabled(2));  // never a reason to take a target out
  Slot freed = Slot::Free(3);
  freed.admin = AdminState::kMaint;  // a free slot carries no override
  EXPECT_FALSE(SlotToRecord(freed).contains("AdminState"));
}

TEST(SeedRecord, IdsGenerationsAndOverflow) {
  EXPECT_EQ(RecordId({{"BackendServerID", V::Number(7)}}), 7);
  EXPECT_FALSE(RecordId({{"BackendServerID", V::String("7")}}));
  EXPECT_FALSE(RecordId({{"BackendServerID", V::Number(0)}}));
  EXPECT_FALSE(RecordId({{"BackendServerID", V::Number(1'000'001)}}));
  EXPECT_FALSE(RecordId({}));

  EXPECT_EQ(*RecordGeneration({}), std::nullopt);
  EXPECT_EQ(*RecordGeneration({{"TableGeneration", V::Number(42)}}), 42u);
  EXPECT_FALSE(RecordGeneration({{"TableGeneration", V::String("42")}}));
  EXPECT_FALSE(RecordGeneration({{"TableGeneration", V::Number(-1)}}));
  // 2^62 + 5: generation 5 with kChainingBit, a write of a chain but the last. 2^63: too large.
  EXPECT_EQ(*RecordGeneration({{"TableGeneration", V{V::Type::kNumber, "4611686018427387909"}}}),
            5u | kChainingBit);
  EXPECT_FALSE(RecordGeneration({{"TableGeneration", V{V::Type::kNumber, "9223372036854775808"}}}));

  EXPECT_EQ(RecordOverflow({{"Overflow", V::Number(3)}}), 3);
  EXPECT_EQ(RecordOverflow({{"Overflow", V::Number(-3)}}), 0);
  EXPECT_EQ(RecordOverflow({}), 0);
}

TEST(SeedRecord, IntegersAreStrict) {
  for (const char* bad : {"", "+1", " 1", "1 ", "1e3", "0x10", "1.0", "99999999999999999999"}) {
    EXPECT_FALSE(ParseInteger(V{V::Type::kNumber, bad})) << bad;
  }
  EXPECT_EQ(ParseInteger(V{V::Type::kNumber, "-12"}), -12);
  EXPECT_FALSE(ParseInteger(V::String("12")));
}

}  // namespace
}  // namespace hsdo
