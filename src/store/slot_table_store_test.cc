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
  EXPECT_EQ(applied[2].expected_generation, 2u);
  EXPECT_EQ(applied[3].expected_generation, 3u);
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
}

// A whole read of a DynamoDB table is a Scan (a second for 1000 slots on moto): a reader that
// holds generation g-1 reads record 1 and the records the write g-1 -> g changed, then the
// generation again, and nothing else. Anything else is a whole read.
TEST(SlotTableStore, AReaderHoldingThePreviousGenerationReadsOnlyTheChangedRecords) {
  Fixture f(0, 100);
  SlotTableStore writer(std::make_unique<testing::SharedRecordBackend>(*f.fake), 100);
  // What a whole read decodes from the stored records (without reading through the fake,
  // which would count).
  auto stored_slots = [&] {
    const auto records = f.fake->records();
    std::vector<Slot> slots;
    for (int id = 1; id <= 100; ++id) {
      const auto it = records.find(id);
      auto slot = it == records.end() ? Result<Slot>(Slot::Free(id)) : RecordToSlot(it->second, id);
      slots.push_back(slot ? *slot : Slot::Free(id));
    }
    return slots;
  };
  ASSERT_TRUE(writer.WriteSlots(
      std::vector<Slot>{Enabled(2, "10.0.0.2", 1), Enabled(50, "10.0.0.50", 1)}, 0, 0));
  ASSERT_TRUE(f.store->ReadTable());
  const int read_alls = f.fake->read_alls();
  const int gets = f.fake->gets();

  ASSERT_TRUE(
      writer.WriteSlots(std::vector<Slot>{Enabled(3, "10.0.0.3", 1), Slot::Free(50)}, 0, 1));
  auto second = f.store->ReadTable();
  ASSERT_TRUE(second);
  EXPECT_EQ(f.fake->read_alls(), read_alls);
  EXPECT_EQ(f.fake->gets(), gets + 4);  // record 1, records 3 and 50, the generation after
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
  EXPECT_EQ(third->slots, stored_slots());
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(8, "10.0.0.8", 2)}, 0, 3));
  auto fixed = f.store->ReadTable();
  ASSERT_TRUE(fixed);
  EXPECT_EQ(fixed->invalid_records, 0);
  EXPECT_EQ(fixed->slots, stored_slots());
  EXPECT_EQ(f.fake->read_alls(), read_alls);
  const int after_whole_reads = read_alls;

  // Two writes behind: a whole read.
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(4, "10.0.0.4", 1)}, 0, 4));
  ASSERT_TRUE(writer.WriteSlots(std::vector<Slot>{Enabled(5, "10.0.0.5", 1)}, 0, 5));
  ASSERT_TRUE(f.store->ReadTable());
  EXPECT_EQ(f.fake->read_alls(), after_whole_reads + 1);
  // Another writer's bump leaves LastChange naming the generation before: a whole read.
  f.fake->Bump();
  auto bumped = f.store->ReadTable();
  ASSERT_TRUE(bumped);
  EXPECT_EQ(bumped->generation, 7u);
  EXPECT_EQ(f.fake->read_alls(), after_whole_reads + 2);
  // The same generation again (the agent's periodic resync): a whole read.
  ASSERT_TRUE(f.store->ReadTable());
  EXPECT_EQ(f.fake->read_alls(), after_whole_reads + 3);
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
