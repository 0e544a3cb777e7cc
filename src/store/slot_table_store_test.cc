#include "store/slot_table_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "common/python_time.h"
#include "store/seed_record.h"
#include "store/testing/fake_record_backend.h"

namespace hsdo {
namespace {

using testing::FakeRecordBackend;
using V = AttributeValue;

Slot Enabled(int id, std::string address, int weight, std::string name = "web") {
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  slot.target.address = std::move(address);
  slot.target.name = std::move(name);
  slot.target.group = "asg-a";
  slot.weight = weight;
  slot.last_weight_update = ParsePythonDatetime("2026-11-25 12:00:00.000001");
  return slot;
}

struct Fixture {
  explicit Fixture(std::size_t max_records = 0, int size = 6) {
    auto owned = std::make_unique<FakeRecordBackend>(max_records);
    fake = owned.get();
    store = std::make_unique<SlotTableStore>(std::move(owned), size);
  }
  FakeRecordBackend* fake;
  std::unique_ptr<SlotTableStore> store;
};

TEST(SlotTableStore, AnEmptyTableIsGenerationZeroAndAllFree) {
  Fixture f;
  EXPECT_EQ(*f.store->ReadGeneration(), 0u);
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, 0u);
  EXPECT_EQ(table->slots, SlotTable::Empty(6).slots);
}

TEST(SlotTableStore, WritesRoundTripAndBumpTheGenerationOnRecordOne) {
  Fixture f;
  const std::vector<Slot> changed = {Enabled(3, "10.0.0.3", 5)};
  ASSERT_EQ(*f.store->WriteSlots(changed, 2, 0), 1u);
  // Record 1 was created as the seed's free record carrying the metadata.
  Record first = f.fake->records().at(1);
  EXPECT_EQ(first.at("TableGeneration"), V::Number(1));
  EXPECT_EQ(first.at("Overflow"), V::Number(2));
  EXPECT_EQ(first.at("BackendServerStatus"), V::String("disabled"));
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, 1u);
  EXPECT_EQ(table->overflow, 2);
  EXPECT_EQ(table->slots[2], changed[0]);
  // Rewriting slot 1 keeps the metadata.
  ASSERT_EQ(*f.store->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 1)}, 2, 1), 2u);
  EXPECT_EQ(f.store->ReadTable()->slots[0].target.address, "10.0.0.1");
  EXPECT_EQ(*f.store->ReadGeneration(), 2u);
}

TEST(SlotTableStore, ReadGenerationOfAnHsdoTableIsOneSmallEventualGet) {
  Fixture f;
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  const int gets = f.fake->gets();
  EXPECT_EQ(*f.store->ReadGeneration(), 1u);
  EXPECT_EQ(f.fake->gets(), gets + 1);
  EXPECT_EQ(f.fake->eventual_gets(), 1);
  EXPECT_EQ(f.fake->read_alls(), 0);
}

TEST(SlotTableStore, StaleGenerationIsAConflictAndWritesNothing) {
  Fixture f;
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  auto stale = f.store->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1)}, 0, 0);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict);
  EXPECT_FALSE(f.store->ReadTable()->slots[2].enabled());
}

// Found while testing a reload with DynamoDB hanging: an orchestrator's lease on a fresh
// DynamoDB table creates record 1 as the seed's free record (for the Python clients) with no
// TableGeneration. Until that orchestrator's first write, agents read it as a seed table with
// every slot free, at a derived generation, and put every slot of HAProxy in maint. A table
// that holds a lease, no generation and no filled slot was never written: generation 0.
TEST(SlotTableStore, ALeaseOnAFreshTableIsNotATable) {
  Fixture f;
  Record leased = SlotToRecord(Slot::Free(1));
  leased[std::string(attr::kLeaseHolder)] = AttributeValue::String("edge-1/4242");
  f.fake->Put(1, leased);
  EXPECT_EQ(*f.store->ReadGeneration(), 0u);
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, 0u);
  // A seed table that an orchestrator took the lease of, before its first write: the seed's.
  f.fake->Put(2, SlotToRecord(Enabled(2, "172.31.0.2", 10)));
  auto seed = f.store->ReadGeneration();
  ASSERT_TRUE(seed);
  EXPECT_NE(*seed & kDerivedGenerationBit, 0u);
  EXPECT_EQ(f.store->ReadTable()->slots[1].target.address, "172.31.0.2");
}

// Seen in a CI run with moto: an agent read record 1 while the lease's UpdateItem made it, with
// neither the seed's attributes nor the lease yet (an invalid record, no generation), took it
// for a seed table with every slot free and put every server in maint. Nor does a seed table
// whose every slot is free empty a fleet: both read as never written.
TEST(SlotTableStore, ATableWithoutGenerationOrAFilledSlotIsNotATable) {
  Fixture f;
  f.fake->Put(1, Record{{std::string(attr::kId), AttributeValue::Number(1)}});
  EXPECT_EQ(*f.store->ReadGeneration(), 0u);
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, 0u);
  for (int id = 1; id <= 6; ++id) f.fake->Put(id, SlotToRecord(Slot::Free(id)));
  EXPECT_EQ(*f.store->ReadGeneration(), 0u);
}

// Found in review: a table without a generation was read whole with nothing to bracket the
// read with, and a read that is not a snapshot (a DynamoDB Scan) could see part of hsdo's
// first write on it: record 1 from before, the other records from after. An agent applied a
// table no one wrote. The generation is read again after such a read; one that appeared
// meanwhile means a new read.
TEST(SlotTableStore, AReadRacingTheFirstWriteOnATableWithoutGenerationIsReadAgain) {
  Fixture f(0, 6);
  for (int id = 1; id <= 6; ++id) f.fake->Put(id, SlotToRecord(Slot::Free(id)));
  f.fake->Put(2, SlotToRecord(Enabled(2, "172.31.0.2", 10)));  // a seed table
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 6);
  const std::uint64_t seed_generation = *writer.ReadGeneration();
  // The first write frees slot 2 and fills slots 1 and 3 (record 1 is read before it lands).
  f.fake->WriteAfterFirstRecordOfNextReadAll([&] {
    ASSERT_TRUE(writer.WriteSlots(
        std::vector<Slot>{Enabled(1, "10.0.0.1", 1), Slot::Free(2), Enabled(3, "10.0.0.3", 1)}, 0,
        seed_generation));
  });
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  // The whole write, at its generation, never half of it.
  EXPECT_EQ(table->generation, (seed_generation & kMaxStoredGeneration) + 1);
  EXPECT_EQ(table->slots[0].target.address, "10.0.0.1");
  EXPECT_FALSE(table->slots[1].enabled());
  EXPECT_EQ(table->slots[2].target.address, "10.0.0.3");
}

// A table the Python HSDO writes has no TableGeneration: without a derived one, agents would
// see generation 0 forever and miss every change until their periodic full read.
TEST(SlotTableStore, ATableWithoutGenerationIsReadWholeAndItsContentIsTheGeneration) {
  Fixture f;
  for (int id = 1; id <= 6; ++id) f.fake->Put(id, SlotToRecord(Slot::Free(id)));
  f.fake->Put(2, SlotToRecord(Enabled(2, "172.31.0.2", 10)));
  auto first = f.store->ReadGeneration();
  ASSERT_TRUE(first);
  EXPECT_NE(*first & kDerivedGenerationBit, 0u);
  EXPECT_EQ(f.fake->read_alls(), 1);
  // The table that ReadGeneration read is the one ReadTable returns, without a second read.
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(f.fake->read_alls(), 1);
  EXPECT_EQ(table->generation, *first);
  EXPECT_EQ(table->slots[1].target.address, "172.31.0.2");
  // Unchanged content, same generation; the seed server changes a slot: a new one.
  EXPECT_EQ(*f.store->ReadGeneration(), *first);
  f.fake->Put(3, SlotToRecord(Enabled(3, "172.31.0.3", 10)));
  auto second = f.store->ReadGeneration();
  EXPECT_NE(*second, *first);
  EXPECT_EQ(f.store->ReadTable()->slots[2].target.address, "172.31.0.3");

  // hsdo's orchestrator takes the table over: it writes on the derived generation (the
  // condition is "no generation yet") and from then on agents take the cheap path.
  auto written = f.store->WriteSlots(std::vector<Slot>{Enabled(4, "10.0.0.4", 1)}, 0, *second);
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(*written, (*second & kMaxStoredGeneration) + 1);
  EXPECT_EQ(f.fake->applied().back().expected_generation, 0u);
  const int reads = f.fake->read_alls();
  EXPECT_EQ(*f.store->ReadGeneration(), *written);
  EXPECT_EQ(f.fake->read_alls(), reads);
}

TEST(SlotTableStore, AReadRacedByAWriteIsReadAgain) {
  Fixture f;
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  f.fake->BumpDuringNextReadAlls(1);
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(f.fake->read_alls(), 2);
  EXPECT_EQ(table->generation, 2u);
  // A table that keeps changing is an error for this cycle, not a torn table.
  f.fake->BumpDuringNextReadAlls(3);
  auto torn = f.store->ReadTable();
  ASSERT_FALSE(torn);
  EXPECT_EQ(torn.error().code, ErrorCode::kUnavailable);
}

TEST(SlotTableStore, ManyChangesAreChainedWritesFreedSlotsFirst) {
  Fixture f(/*max_records=*/2, /*size=*/6);
  std::vector<Slot> first;
  for (int id = 1; id <= 3; ++id) first.push_back(Enabled(id, "10.0.0." + std::to_string(id), 1));
  ASSERT_EQ(*f.store->WriteSlots(first, 0, 0), 2u);  // 3 records in writes of 2
  // Target 10.0.0.1 moves from slot 1 to slot 6, slots 2 and 3 are freed.
  const std::vector<Slot> changed = {Enabled(6, "10.0.0.1", 1), Slot::Free(1), Slot::Free(2),
                                     Slot::Free(3)};
  auto generation = f.store->WriteSlots(changed, 0, 2);
  ASSERT_TRUE(generation);
  EXPECT_EQ(*generation, 4u);
  const auto applied = f.fake->applied();
  ASSERT_EQ(applied.size(), 4u);
  EXPECT_EQ(applied[0].next_generation, 1u | kChainingBit);  // every write but the last
  EXPECT_EQ(applied[1].next_generation, 2u);
  EXPECT_EQ(applied[2].expected_generation, 2u);
  EXPECT_EQ(applied[3].expected_generation, 3u | kChainingBit);
  // The frees come first: no intermediate table holds 10.0.0.1 twice.
  for (const auto& [g, records] : f.fake->history()) {
    int holders = 0;
    for (const auto& [id, record] : records) {
      if (record.at("IPAddress") == V::String("10.0.0.1")) ++holders;
    }
    EXPECT_LE(holders, 1) << "generation " << g;
  }
  EXPECT_EQ(f.store->ReadTable()->slots[5].target.address, "10.0.0.1");
}

// Found in review: each write of a chain showed readers a table of its own. A wiped store
// written back (every filled slot, in writes of 99 on DynamoDB) read as a fleet of 99 until the
// last write: agents took every other server out. The marked tables are not applied
// (IsChaining), and a reader that saw one reaches the last by a delta read.
TEST(SlotTableStore, EveryWriteOfAChainButTheLastIsMarked) {
  Fixture f(/*max_records=*/2, /*size=*/6);
  SlotTableStore reader(std::make_unique<testing::SharedRecordBackend>(*f.fake), 6);
  std::vector<Slot> all;
  for (int id = 1; id <= 6; ++id) all.push_back(Enabled(id, "10.0.0." + std::to_string(id), 1));
  // A reader between two writes of the chain (the fake lets it read after every write).
  std::vector<std::uint64_t> seen;
  std::vector<int> enabled;
  std::vector<int> whole_reads;
  f.fake->on_write = [&] {
    auto generation = reader.ReadGeneration();
    ASSERT_TRUE(generation);
    auto table = reader.ReadTable();
    ASSERT_TRUE(table);
    EXPECT_EQ(table->generation, *generation);
    seen.push_back(*generation);
    enabled.push_back(table->EnabledCount());
    whole_reads.push_back(f.fake->read_alls());
  };
  ASSERT_EQ(*f.store->WriteSlots(all, 0, 0), 3u);
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1u | kChainingBit, 2u | kChainingBit, 3u}));
  EXPECT_TRUE(IsChaining(seen[0]) && IsChaining(seen[1]));
  EXPECT_FALSE(IsChaining(seen[2]));
  EXPECT_FALSE(IsChaining(kDerivedGenerationBit | kChainingBit | 5u));
  EXPECT_EQ(enabled, (std::vector<int>{2, 4, 6}));
  // Past the first, the reader followed the chain by delta reads.
  EXPECT_EQ(whole_reads.back(), whole_reads.front());
}

TEST(SlotTableStore, AnOverflowOnlyChangeStillWrites) {
  Fixture f;
  ASSERT_EQ(*f.store->WriteSlots({}, 3, 0), 1u);
  EXPECT_EQ(f.store->ReadTable()->overflow, 3);
}

TEST(SlotTableStore, InvalidRecordsReadAsFreeAndAreCountedInTheTable) {
  Fixture f;
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  Record bad = SlotToRecord(Enabled(3, "10.0.0.3", 1));
  bad["Weight"] = V::String("abc");
  f.fake->Put(3, bad);
  f.fake->Put(99, {{"BackendServerID", V::String("x")}});
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_FALSE(table->slots[2].enabled());
  EXPECT_TRUE(table->slots[1].enabled());
  EXPECT_EQ(table->invalid_records, 2);
  EXPECT_EQ(table->invalid_ids, std::vector<int>{3});  // record 99 has no valid id
}

// A whole read of a DynamoDB table is a Scan (a second for 1000 slots on moto): a reader that
// holds generation g-1 reads record 1 and the records the write g-1 -> g changed, then the
// generation again, and nothing else. Anything else is a whole read.
// With snapshot gets (DynamoDB's TransactGetItems) and without (GetMany bracketed by
// generation reads).
TEST(SlotTableStore, ARemovalHoldIsWrittenAsRangesAndReadBackStrictly) {
  EXPECT_EQ(FormatHeldRemoval({.slots = {1, 2, 3, 5, 7, 8}, .base = 12}), "12:1-3,5,7-8");
  EXPECT_EQ(FormatHeldRemoval({.slots = {4}, .base = 1}), "1:4");
  EXPECT_EQ(FormatHeldRemoval({}), "");
  for (const HeldRemoval& hold :
       {HeldRemoval{.slots = {1, 2, 3, 5, 7, 8}, .base = 12}, HeldRemoval{.slots = {4}, .base = 1},
        HeldRemoval{.slots = {1, 1000000}, .base = 2}}) {
    EXPECT_EQ(ParseHeldRemoval(FormatHeldRemoval(hold)), hold) << FormatHeldRemoval(hold);
  }
  for (const std::string_view bad :
       {"", "12", "12:", "0:1", "-1:1", "12:0", "12:3-1", "12:3,2", "12:2,2", "12:1,", "12:,1",
        "12:1-", "12:01", "x:1", "12:1-2-3", "12:1000001", " 12:1", "12:1 "}) {
    EXPECT_EQ(ParseHeldRemoval(bad), std::nullopt) << bad;
  }
  // Review: "1:1-1000000" cost every reader 4 MB: nothing past the reader's table is expanded,
  // and what is below it is kept (a list size lowered since: the slots it still has are held).
  EXPECT_EQ(ParseHeldRemoval("1:999-1000000", 1000),
            (HeldRemoval{.slots = {999, 1000}, .base = 1}));
  EXPECT_EQ(ParseHeldRemoval("3:1-2,5", 4), (HeldRemoval{.slots = {1, 2}, .base = 3}));
  EXPECT_EQ(ParseHeldRemoval("3:5-6,8", 4), std::nullopt);
  EXPECT_EQ(ParseHeldRemoval("3:1-6,5", 4), std::nullopt);  // still not ascending
}

class ReadChanges : public ::testing::TestWithParam<bool> {};

// What a whole read decodes from the records `fake` stores (without reading through the
// fake, which would count).
std::vector<Slot> StoredSlots(const FakeRecordBackend& fake, int size) {
  const auto records = fake.records();
  std::vector<Slot> slots;
  for (int id = 1; id <= size; ++id) {
    const auto it = records.find(id);
    auto slot = it == records.end() ? Result<Slot>(Slot::Free(id)) : RecordToSlot(it->second, id);
    slots.push_back(slot ? *slot : Slot::Free(id));
  }
  return slots;
}

TEST_P(ReadChanges, AReaderHoldingThePreviousGenerationReadsOnlyTheChangedRecords) {
  const bool snapshots = GetParam();
  Fixture f(0, 100);
  f.fake->set_snapshot_gets(snapshots);
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100);
  auto stored_slots = [&] { return StoredSlots(*f.fake, 100); };
  ASSERT_TRUE(writer.WriteSlots(
      std::vector<Slot>{Enabled(2, "10.0.0.2", 1), Enabled(50, "10.0.0.50", 1)}, 0, 0));
  ASSERT_TRUE(f.store->ReadTable());
  const int read_alls = f.fake->read_alls();
  const int requests = f.fake->requests();

  const HeldRemoval hold{.slots = {2}, .base = 2};
  ASSERT_TRUE(
      writer.WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1), Slot::Free(50)}, 0, 1, hold));
  auto second = f.store->ReadTable();
  ASSERT_TRUE(second);
  EXPECT_EQ(f.fake->read_alls(), read_alls);
  EXPECT_EQ(second->removal_hold, hold);  // read from record 1 with the changes
  // The write; then record 1's generation and LastChange, and records 3, 50 and 1 at once;
  // or record 1, records 3 and 50, the generation after.
  EXPECT_EQ(f.fake->requests(), requests + 1 + (snapshots ? 2 : 3));
  EXPECT_EQ(f.fake->snapshot_gets(), snapshots ? 1 : 0);
  EXPECT_EQ(second->generation, 2u);
  EXPECT_EQ(second->slots, stored_slots());
  EXPECT_TRUE(second->slots[2].enabled());
  EXPECT_FALSE(second->slots[49].enabled());

  // An invalid record among the changed ones reads as free and is counted, as in a whole read.
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(8, "10.0.0.8", 1)}, 0, 2));
  Record bad = SlotToRecord(Enabled(8, "10.0.0.8", 1));
  bad["Weight"] = V::String("abc");
  f.fake->Put(8, bad);
  auto third = f.store->ReadTable();
  ASSERT_TRUE(third);
  EXPECT_EQ(f.fake->read_alls(), read_alls);
  EXPECT_FALSE(third->slots[7].enabled());
  EXPECT_EQ(third->invalid_records, 1);
  EXPECT_EQ(third->invalid_ids, std::vector<int>{8});
  EXPECT_EQ(third->slots, stored_slots());
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(8, "10.0.0.8", 2)}, 0, 3));
  auto fixed = f.store->ReadTable();
  ASSERT_TRUE(fixed);
  EXPECT_EQ(fixed->invalid_records, 0);
  EXPECT_TRUE(fixed->invalid_ids.empty());
  EXPECT_EQ(fixed->slots, stored_slots());
  EXPECT_EQ(f.fake->read_alls(), read_alls);
  const int after_whole_reads = read_alls;

  // Another writer's bump leaves LastChange naming the generation before: a whole read.
  f.fake->Bump();
  auto bumped = f.store->ReadTable();
  ASSERT_TRUE(bumped);
  EXPECT_EQ(bumped->generation, 5u);
  EXPECT_EQ(f.fake->read_alls(), after_whole_reads + 1);
  // The same generation again (the agent's periodic resync): a whole read.
  ASSERT_TRUE(f.store->ReadTable());
  EXPECT_EQ(f.fake->read_alls(), after_whole_reads + 2);
}

// A backup one write old restored in place, and the leader's write-back with a change it
// planned (slot 2's target left), landing above the generation it had written (`above`,
// docs/stores.md): a reader that holds that generation reads it as a change, and reads the
// store's table, though the writes it knows of are not the ones record 1 lists.
TEST_P(ReadChanges, AWriteBackAboveTheGenerationAReaderHoldsIsReadAsTheStoreHasIt) {
  Fixture f(0, 10);
  f.fake->set_snapshot_gets(GetParam());
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 10);
  ASSERT_TRUE(writer.WriteSlots(
      std::vector<Slot>{Enabled(1, "10.0.0.1", 1), Enabled(2, "10.0.0.2", 1)}, 0, 0));
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1)}, 0, 1));
  auto held = f.store->ReadTable();
  ASSERT_TRUE(held);
  ASSERT_EQ(held->generation, 2u);
  f.fake->RestoreTo(1);
  auto written = writer.WriteSlots(std::vector<Slot>{Slot::Free(2), Enabled(3, "10.0.0.3", 1)}, 0,
                                   1, std::nullopt, /*above=*/2);
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(*written, 3u);
  EXPECT_EQ(*f.store->ReadGeneration(), 3u);
  auto read = f.store->ReadTable();
  ASSERT_TRUE(read);
  EXPECT_EQ(read->generation, 3u);
  EXPECT_EQ(read->slots, StoredSlots(*f.fake, 10));
  EXPECT_TRUE(read->slots[0].enabled());
  EXPECT_FALSE(read->slots[1].filled());
  EXPECT_TRUE(read->slots[2].enabled());
}

TEST(SlotTableStore, AChainWrittenAboveAGenerationStartsAboveIt) {
  Fixture f(/*max_records=*/1, 10);
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(1, "10.0.0.1", 1)}, 0, 0));
  auto written = f.store->WriteSlots(std::vector<Slot>{Slot::Free(1), Enabled(4, "10.0.0.4", 1)}, 0,
                                     1, std::nullopt, 7);
  ASSERT_TRUE(written) << written.error().message;
  EXPECT_EQ(*written, 9u);
  const auto writes = f.fake->applied();
  ASSERT_GE(writes.size(), 2u);
  EXPECT_EQ(writes[writes.size() - 2].next_generation, 8u | kChainingBit);
  EXPECT_EQ(writes.back().next_generation, 9u);
  // Below the generation it would write anyway, `above` changes nothing.
  EXPECT_EQ(
      *f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 9, std::nullopt, 3),
      10u);
}

// Found in review: the agent's 60 s resync was a delta read whenever the generation had moved,
// so an edit that left the generation alone (a console edit, the Python server's put_item) was
// never read while the orchestrator wrote at least once a minute. ReadWholeNext makes the next
// read a whole one.
TEST_P(ReadChanges, AReadAfterReadWholeNextIsWholeAndFindsAnEditThatLeftTheGenerationAlone) {
  Fixture f(0, 100);
  f.fake->set_snapshot_gets(GetParam());
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100);
  ASSERT_TRUE(writer.WriteSlots(
      std::vector<Slot>{Enabled(2, "10.0.0.2", 1), Enabled(3, "10.0.0.3", 1)}, 0, 0));
  ASSERT_TRUE(f.store->ReadTable());
  f.fake->Put(3, SlotToRecord(Enabled(3, "10.0.0.33", 1)));  // the generation left alone
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(5, "10.0.0.5", 1)}, 0, 1));
  auto delta = f.store->ReadTable();
  ASSERT_TRUE(delta);
  EXPECT_EQ(delta->slots[2].target.address, "10.0.0.3");  // a delta: slot 3 not read
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(6, "10.0.0.6", 1)}, 0, 2));
  const int read_alls = f.fake->read_alls();
  f.store->ReadWholeNext();
  auto whole = f.store->ReadTable();
  ASSERT_TRUE(whole);
  EXPECT_EQ(f.fake->read_alls(), read_alls + 1);
  EXPECT_EQ(whole->slots[2].target.address, "10.0.0.33");
  EXPECT_EQ(whole->slots, StoredSlots(*f.fake, 100));
}

// A reader (f.store) and a writer of 100 slots sharing one fake store.
struct WriterAndReader {
  explicit WriterAndReader(bool snapshots)
      : f(0, 100), writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100) {
    f.fake->set_snapshot_gets(snapshots);
  }
  void Write(std::vector<Slot> slots) {
    auto written = writer.WriteSlots(slots, 0, generation);
    ASSERT_TRUE(written) << written.error().message;
    generation = *written;
  }
  Fixture f;
  SlotTableStore writer;
  std::uint64_t generation = 0;
};

// Issue 12, target 3: a reader two, three... up to kMaxRecentChanges writes behind reads the
// union of the records those writes changed (record 1 lists the last few writes) in the same
// requests as one write behind; further behind, a whole read.
TEST_P(ReadChanges, AReaderAFewWritesBehindReadsOnlyTheRecordsTheyChanged) {
  const bool snapshots = GetParam();
  WriterAndReader shared(snapshots);
  Fixture& f = shared.f;
  std::uint64_t& generation = shared.generation;
  auto write = [&](std::vector<Slot> slots) { shared.Write(std::move(slots)); };
  write({Enabled(2, "10.0.0.2", 1), Enabled(50, "10.0.0.50", 1)});
  ASSERT_TRUE(f.store->ReadTable());
  const int read_alls = f.fake->read_alls();

  for (const int behind : {2, 3, static_cast<int>(kMaxRecentChanges)}) {
    for (int i = 0; i < behind; ++i) {
      // Slot 50 changes in every write: read once.
      write({Enabled(10 + i, "10.0.1." + std::to_string(i), 1),
             Enabled(50, "10.0.0.50", 2 + static_cast<int>(generation))});
    }
    const int requests = f.fake->requests();
    const int snapshot_reads = f.fake->snapshot_gets();
    auto table = f.store->ReadTable();
    ASSERT_TRUE(table) << table.error().message;
    EXPECT_EQ(f.fake->read_alls(), read_alls) << behind << " writes behind";
    // Record 1's generation and lists, then the records and record 1 at once; or record 1,
    // the records, the generation after.
    EXPECT_EQ(f.fake->requests(), requests + (snapshots ? 2 : 3)) << behind << " writes behind";
    EXPECT_EQ(f.fake->snapshot_gets(), snapshot_reads + (snapshots ? 1 : 0));
    EXPECT_EQ(table->generation, generation);
    EXPECT_EQ(table->slots, StoredSlots(*f.fake, 100)) << behind << " writes behind";
  }

  // One write more than record 1 lists: a whole read.
  for (std::size_t i = 0; i <= kMaxRecentChanges; ++i) {
    write({Enabled(30 + static_cast<int>(i), "10.0.2.1", 1)});
  }
  auto whole = f.store->ReadTable();
  ASSERT_TRUE(whole);
  EXPECT_EQ(f.fake->read_alls(), read_alls + 1);
  EXPECT_EQ(whole->slots, StoredSlots(*f.fake, 100));

  // The list keeps at most kMaxRecentChangeIds ids: after a write of 60 slots and one of 50,
  // only the last is listed, so a reader two behind reads whole and one behind does not.
  std::vector<Slot> sixty;
  for (int id = 31; id <= 90; ++id) sixty.push_back(Enabled(id, "10.0.3.1", 1));
  write(sixty);
  std::vector<Slot> fifty;
  for (int id = 41; id <= 90; ++id) fifty.push_back(Slot::Free(id));
  write(fifty);
  ASSERT_TRUE(f.store->ReadTable());
  EXPECT_EQ(f.fake->read_alls(), read_alls + 2);
  write({Enabled(41, "10.0.4.1", 1)});
  auto one_behind = f.store->ReadTable();
  ASSERT_TRUE(one_behind);
  EXPECT_EQ(f.fake->read_alls(), read_alls + 2);
  EXPECT_EQ(one_behind->slots, StoredSlots(*f.fake, 100));
}

// Record 1's list is trusted only when it reaches, without a gap, the write LastChange
// describes; else a reader reads as the previous version did: one write behind from
// LastChange, further behind whole.
TEST_P(ReadChanges, AListWithAGapOrLeftByAnOlderWriterIsNotTrusted) {
  WriterAndReader shared(GetParam());
  Fixture& f = shared.f;
  SlotTableStore& writer = shared.writer;
  std::uint64_t& generation = shared.generation;
  auto write = [&](int id) { shared.Write({Enabled(id, "10.0.0.9", 1)}); };
  // Rewrites record 1's list as `text` (absent when empty), as another writer might.
  auto set_list = [&](const std::string& text) {
    Record first = f.fake->records().at(1);
    if (text.empty()) {
      first.erase(std::string(attr::kRecentChanges));
    } else {
      first.insert_or_assign(std::string(attr::kRecentChanges), V::String(text));
    }
    f.fake->Put(1, first);
  };
  auto list = [&] { return f.fake->records().at(1).at(std::string(attr::kRecentChanges)).text; };
  write(2);
  ASSERT_TRUE(f.store->ReadTable());
  int read_alls = f.fake->read_alls();
  auto read_with = [&](int whole_reads) {
    auto table = f.store->ReadTable();
    ASSERT_TRUE(table);
    EXPECT_EQ(table->generation, generation);
    EXPECT_EQ(table->slots, StoredSlots(*f.fake, 100));
    read_alls += whole_reads;
    EXPECT_EQ(f.fake->read_alls(), read_alls);
  };

  // As this version writes it: the last writes, oldest first.
  write(3);
  write(4);
  EXPECT_EQ(list(), "1:2;2:3;3:4");
  read_with(0);

  // (write(id) makes generation id - 1.) A gap in the generations: the reader holds 3 and
  // the list names 4 and 6, not 5: a whole read, not the union of 4 and 6.
  write(5);
  write(6);
  write(7);
  set_list("4:5;6:7");
  read_with(1);
  // ... and one behind uses LastChange.
  write(8);
  set_list("5:6;7:8");
  read_with(0);

  // A list that does not parse: the same.
  write(9);
  write(10);
  set_list("8:9;x;9:10");
  read_with(1);
  write(11);
  set_list("9:10;10:11;junk");
  read_with(0);

  // A table written by the previous version (LastChange alone): one behind reads the changed
  // records, two behind reads whole.
  write(12);
  set_list("");
  read_with(0);
  write(13);
  set_list("");
  write(14);
  set_list("");
  read_with(1);

  // The previous version's writer updates LastChange and leaves the list as it was: a reader
  // two behind must not take the list's last write for the last one.
  write(15);
  const std::string before_old_write = list();
  SlotTableStore old_writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100);
  auto old_written =
      old_writer.WriteSlots(std::vector<Slot>{Enabled(16, "10.0.0.9", 1)}, 0, generation);
  ASSERT_TRUE(old_written);
  generation = *old_written;
  set_list(before_old_write);
  read_with(1);
  // This version's next write, after its cycle's generation read, lists the older writer's
  // write (from LastChange) and its own.
  ASSERT_EQ(*writer.ReadGeneration(), generation);
  write(17);
  EXPECT_EQ(list(), "15:16;16:17");
}

INSTANTIATE_TEST_SUITE_P(SlotTableStore, ReadChanges, ::testing::Bool());

// Issue 12, target 3: on DynamoDB a change reaches the agent one poll late at worst, plus
// what reading it costs. The cycle's generation read already carries LastChange, so a
// one-slot change costs that read and one snapshot read of the changed record and record 1;
// the orchestrator (no generation read first) needs one more, for LastChange.
TEST(SlotTableStore, AOneSlotChangeCostsTheGenerationReadAndOneMoreRequest) {
  Fixture f(0, 100);
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100);
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  ASSERT_TRUE(f.store->ReadTable());
  const int read_alls = f.fake->read_alls();

  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1)}, 0, 1));
  int requests = f.fake->requests();
  ASSERT_EQ(*f.store->ReadGeneration(), 2u);  // the agent's cycle
  auto table = f.store->ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(f.fake->requests(), requests + 2);
  EXPECT_EQ(table->generation, 2u);
  EXPECT_EQ(table->slots[2], Enabled(3, "10.0.0.3", 1));
  EXPECT_EQ(table->slots[1], Enabled(2, "10.0.0.2", 1));

  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Slot::Free(2)}, 0, 2));
  requests = f.fake->requests();
  table = f.store->ReadTable();  // the orchestrator's read
  ASSERT_TRUE(table);
  EXPECT_EQ(f.fake->requests(), requests + 2);
  EXPECT_EQ(table->generation, 3u);
  EXPECT_FALSE(table->slots[1].enabled());
  EXPECT_EQ(f.fake->read_alls(), read_alls);
}

TEST(SlotTableStore, AFencedWriteIsRefusedOnceTheLeaseMovedOn) {
  Fixture f;
  ASSERT_TRUE(f.fake->WriteLease(Lease{.holder = "a", .epoch = 1, .version = 10}, std::nullopt));
  f.store->SetFence(Fence{"a", 1});
  ASSERT_TRUE(f.store->WriteSlots(std::vector<Slot>{Enabled(2, "10.0.0.2", 1)}, 0, 0));
  ASSERT_TRUE(f.fake->WriteLease(Lease{.holder = "b", .epoch = 2, .version = 11}, 10));
  auto refused = f.store->WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1)}, 0, 1);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kConflict);
  EXPECT_EQ(f.fake->fenced_out(), 1);
  EXPECT_FALSE(f.store->ReadTable()->slots[2].enabled());
}

TEST(SlotTableStore, SlotIdsOutsideTheTableAreRefused) {
  Fixture f;
  EXPECT_FALSE(f.store->WriteSlots(std::vector<Slot>{Enabled(7, "10.0.0.7", 1)}, 0, 0));
  EXPECT_EQ(f.fake->write_calls(), 0);
}

// Property: one writer and several readers on a store that loses answers, reorders and
// interleaves reads with writes, and sees writes from elsewhere.
//  - no reader ever returns a table that mixes two generations: each table read equals,
//    slot for slot, what the store held at the generation it reports;
//  - a lost answer never applies a write twice: the writer re-reads and writes only what
//    is still missing, so each (operation, slot) is applied at most once;
//  - every operation is applied in the end.
TEST(SlotTableStoreProperty, ReadersNeverSeeAMixAndLostAnswersNeverApplyTwice) {
  constexpr int kSize = 12;
  constexpr int kOperations = 150;
  constexpr int kReaders = 3;
  constexpr std::size_t kChunk = 5;
  for (std::uint32_t seed = 1; seed <= 3; ++seed) {
    auto backend = std::make_unique<FakeRecordBackend>(kChunk, seed);
    FakeRecordBackend& fake = *backend;
    fake.set_snapshot_gets(seed != 2);  // seed 2: GetMany bracketed by generation reads
    fake.set_faults(
        {.lose_answer = 0.15, .lose_request = 0.1, .conflict = 0.05, .interleave = true});
    SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(fake), kSize);

    std::atomic<bool> done{false};
    std::atomic<int> reads{0};
    std::vector<std::string> failures(kReaders);
    std::vector<std::thread> readers;
    for (int r = 0; r < kReaders; ++r) {
      readers.emplace_back([&, r] {
        SlotTableStore reader(std::make_unique<testing::SharedRecordBackend>(fake), kSize);
        for (int i = 0; i < 100'000 && !done.load(); ++i) {
          // Agents read the generation then the table; the orchestrator only the table.
          if (r == 0) (void)reader.ReadGeneration();
          auto table = reader.ReadTable();
          if (!table) continue;  // a read that kept racing writes gives up: fine
          ++reads;
          const auto stored = fake.At(table->generation);
          if (!stored) {
            failures[r] =
                "a table at a generation the store never had: " + std::to_string(table->generation);
            return;
          }
          for (const Slot& slot : table->slots) {
            const auto record = stored->find(slot.id);
            const Slot expected = record == stored->end() ? Slot::Free(slot.id)
                                                          : *RecordToSlot(record->second, slot.id);
            if (!(slot == expected)) {
              failures[r] = "slot " + std::to_string(slot.id) + " of generation " +
                            std::to_string(table->generation) + " is from another generation";
              return;
            }
          }
        }
      });
    }

    // The writer: operation k makes a random set of slots hold "op-k".
    std::mt19937 random(seed);
    std::map<int, Slot> desired;
    for (int id = 1; id <= kSize; ++id) desired[id] = Slot::Free(id);
    std::optional<SlotTable> table;
    int unfinished = 0;
    for (int op = 1; op <= kOperations; ++op) {
      const int count = 1 + static_cast<int>(random() % kSize);
      for (int i = 0; i < count; ++i) {
        const int id = 1 + static_cast<int>(random() % kSize);
        desired[id] = random() % 4 == 0 ? Slot::Free(id)
                                        : Enabled(id, "10.0.0." + std::to_string(id), op % 257,
                                                  "op-" + std::to_string(op));
      }
      bool applied = false;
      for (int attempt = 0; attempt < 50 && !applied; ++attempt) {
        if (!table) {
          auto read = writer.ReadTable();
          if (!read) continue;
          table = std::move(*read);
        }
        std::vector<Slot> changed;
        for (const auto& [id, slot] : desired) {
          if (!(table->slots[static_cast<std::size_t>(id - 1)] == slot)) changed.push_back(slot);
        }
        if (changed.empty()) {
          applied = true;
          break;
        }
        auto generation = writer.WriteSlots(changed, 0, table->generation);
        if (generation) {
          for (const Slot& slot : changed)
            table->slots[static_cast<std::size_t>(slot.id - 1)] = slot;
          table->generation = *generation;
          applied = true;
        } else {
          table.reset();  // lost answer or conflict: read again, write only what is missing
        }
      }
      if (!applied) ++unfinished;
      // Let the readers in between operations (bounded: a busy machine may starve them).
      const int seen = reads.load();
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
      while (reads.load() == seen && std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    }
    done = true;
    for (auto& t : readers) t.join();
    for (const auto& failure : failures) EXPECT_EQ(failure, "") << "seed " << seed;
    EXPECT_EQ(unfinished, 0);
    EXPECT_GT(reads.load(), kOperations / 2);

    // At most one application of each (operation, slot): a lost answer was never redone.
    std::set<std::pair<std::string, int>> written;
    for (const auto& write : fake.applied()) {
      for (const Record& record : write.puts) {
        const auto name = record.at("ServerName").text;
        if (name == "none") continue;  // frees carry no operation
        const int id = *RecordId(record);
        EXPECT_TRUE(written.emplace(name, id).second)
            << name << " written twice to slot " << id << " (seed " << seed << ")";
      }
    }
    // The store holds the writer's last intent.
    fake.set_faults({});
    SlotTableStore check(std::make_unique<testing::SharedRecordBackend>(fake), kSize);
    auto final_table = check.ReadTable();
    ASSERT_TRUE(final_table);
    for (const auto& [id, slot] : desired) {
      EXPECT_EQ(final_table->slots[static_cast<std::size_t>(id - 1)], slot) << "slot " << id;
    }
  }
}

}  // namespace
}  // namespace hsdo
