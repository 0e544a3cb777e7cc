#include "orchestrator/orchestrator.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/testing/temp_dir.h"

#include "store/sqlite_store.h"

namespace hsdo {
namespace {

using namespace std::chrono_literals;

class FakeSource final : public DiscoverySource {
 public:
  std::string_view kind() const override { return "fake"; }
  Result<std::vector<Target>> Discover() override {
    ++calls;
    if (fail) return MakeError(ErrorCode::kUnavailable, "source down");
    return targets;
  }
  std::vector<Target> targets;
  bool fail = false;
  int calls = 0;
};

// Wraps a real store; can be told to fail.
class FlakyStore final : public SlotStore {
 public:
  explicit FlakyStore(SlotStore& inner) : inner_(inner) {}
  Result<std::uint64_t> ReadGeneration() override { return inner_.ReadGeneration(); }
  Result<SlotTable> ReadTable() override {
    ++reads;
    if (fail) return MakeError(ErrorCode::kUnavailable, "store down");
    return inner_.ReadTable();
  }
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected) override {
    if (fail) return MakeError(ErrorCode::kUnavailable, "store down");
    ++writes;
    return inner_.WriteSlots(changed, overflow, expected);
  }
  bool fail = false;
  int reads = 0;
  int writes = 0;

 private:
  SlotStore& inner_;
};

Target T(const std::string& address) { return Target{address, std::nullopt, address, "g", ""}; }

class OrchestratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = SqliteStore::Open(dir_.File("hsdo.db"), 5);
    ASSERT_TRUE(store.ok());
    sqlite_ = std::move(*store);
    store_ = std::make_unique<FlakyStore>(*sqlite_);
    orchestrator_ =
        std::make_unique<Orchestrator>(PlannerConfig{.list_size = 5,
                                                     .min_weight = 1,
                                                     .max_weight = 3,
                                                     .increase_weight = 1,
                                                     .increase_interval = 10s},
                                       1s, source_, *store_, clock_, wakeup_, registry_);
  }
  void TearDown() override {
    orchestrator_.reset();
    store_.reset();
    sqlite_.reset();
  }

  SlotTable Table() {
    auto table = sqlite_->ReadTable();
    EXPECT_TRUE(table.ok());
    return table.ok() ? *table : SlotTable{};
  }

  std::vector<std::string> Stored() {
    std::vector<std::string> out;
    for (const auto& s : Table().slots) {
      out.push_back(s.enabled() ? s.target.address : "");
    }
    return out;
  }

  testing::TempDir dir_;
  FakeSource source_;
  FakeClock clock_;
  Wakeup wakeup_;
  prometheus::Registry registry_;
  std::unique_ptr<SqliteStore> sqlite_;
  std::unique_ptr<FlakyStore> store_;
  std::unique_ptr<Orchestrator> orchestrator_;
};

TEST_F(OrchestratorTest, FillsTheStoreThenWritesNothingWhenNothingChanges) {
  source_.targets = {T("10.0.0.1"), T("10.0.0.2")};
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "", "", ""}));
  EXPECT_EQ(*sqlite_->ReadGeneration(), 1u);
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(store_->writes, 1);
  EXPECT_EQ(store_->reads, 1);  // the table is read once, then kept
  EXPECT_EQ(*sqlite_->ReadGeneration(), 1u);
}

// Issue 9.4: while another orchestrator holds the lease, this one writes nothing; it takes
// over only once the lease went unrenewed for a whole period, then writes at once.
TEST_F(OrchestratorTest, AStandbyWritesNothingUntilItTakesOver) {
  ASSERT_TRUE(sqlite_->WriteLease(
      {.holder = "other/1", .epoch = 1, .version = 9, .duration_ms = 10'000}, std::nullopt));
  LeaderElection election(*sqlite_, "me/2", 10s, clock_, registry_);
  orchestrator_->SetLeaderElection(&election);
  source_.targets = {T("10.0.0.1")};
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(orchestrator_->RunOnce());
    clock_.Advance(1s);
  }
  EXPECT_EQ(store_->writes, 0);
  EXPECT_EQ(*sqlite_->ReadGeneration(), 0u);
  clock_.Advance(10s);  // "other" never renewed
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored()[0], "10.0.0.1");
  EXPECT_EQ((*sqlite_->ReadLease())->holder, "me/2");
  EXPECT_EQ((*sqlite_->ReadLease())->epoch, 2u);
}

TEST_F(OrchestratorTest, SourceErrorKeepsTheLastGoodList) {
  source_.targets = {T("10.0.0.1"), T("10.0.0.2")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  source_.fail = true;
  source_.targets.clear();
  orchestrator_->RunOnce();
  orchestrator_->RunOnce();
  EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "", "", ""}));
  EXPECT_EQ(store_->writes, 1);
  source_.fail = false;  // recovered: the empty list is now real, once it lasts
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "", "", ""}));
  clock_.Advance(60s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(), (std::vector<std::string>{"", "", "", "", ""}));
}

TEST_F(OrchestratorTest, NothingIsPlannedBeforeTheFirstGoodDiscovery) {
  source_.fail = true;
  EXPECT_FALSE(orchestrator_->RunOnce());
  EXPECT_EQ(store_->reads, 0);
  EXPECT_EQ(store_->writes, 0);
}

TEST_F(OrchestratorTest, StoreErrorIsRetriedNextCycle) {
  source_.targets = {T("10.0.0.1")};
  store_->fail = true;
  EXPECT_FALSE(orchestrator_->RunOnce());
  store_->fail = false;
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored()[0], "10.0.0.1");
  // A failed write after a good read keeps the table and retries the plan.
  source_.targets = {T("10.0.0.1"), T("10.0.0.2")};
  store_->fail = true;
  EXPECT_FALSE(orchestrator_->RunOnce());
  store_->fail = false;
  EXPECT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored()[1], "10.0.0.2");
}

TEST_F(OrchestratorTest, ConflictReReadsTheTable) {
  source_.targets = {T("10.0.0.1")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  // Another writer puts a target in slot 2 behind our back.
  Slot other;
  other.id = 2;
  other.status = SlotStatus::kEnabled;
  other.target = T("10.9.9.9");
  other.weight = 1;
  const std::vector<Slot> changed = {other};
  ASSERT_TRUE(sqlite_->WriteSlots(changed, 0, 1).ok());
  source_.targets = {T("10.0.0.1"), T("10.0.0.3")};
  EXPECT_FALSE(orchestrator_->RunOnce());  // conflict
  EXPECT_TRUE(orchestrator_->RunOnce());   // re-read, re-planned: 10.9.9.9 is not discovered
  EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.3", "", "", ""}));
}

TEST_F(OrchestratorTest, RampsWeightsOverTime) {
  source_.targets = {T("10.0.0.1")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().slots[0].weight, 1);
  clock_.Advance(10s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().slots[0].weight, 2);
  clock_.Advance(25s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().slots[0].weight, 3);
  clock_.Advance(100s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(store_->writes, 3);
}

// An unchanged cycle skips planning (issue 12); neither a ramp under way nor a new target may
// be lost to that.
TEST_F(OrchestratorTest, QuietCyclesStillRampAndStillSeeNewTargets) {
  source_.targets = {T("10.0.0.1")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  ASSERT_TRUE(orchestrator_->RunOnce());  // nothing changed, but the weight ramps
  clock_.Advance(10s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().slots[0].weight, 2);
  clock_.Advance(10s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  ASSERT_TRUE(orchestrator_->RunOnce());  // at max weight: quiet
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(store_->writes, 3);
  source_.targets.push_back(T("10.0.0.2"));
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "", "", ""}));
}

TEST_F(OrchestratorTest, OverflowIsStored) {
  for (int i = 1; i <= 7; ++i) source_.targets.push_back(T("10.0.0." + std::to_string(i)));
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().overflow, 2);
  source_.targets.resize(5);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().overflow, 0);
}

double Gauge(prometheus::Registry& registry, const std::string& name) {
  for (const auto& family : registry.Collect()) {
    if (family.name == name && !family.metric.empty()) return family.metric[0].gauge.value;
  }
  return -1;
}

TEST_F(OrchestratorTest, AnEmptyAnswerIsHeldForTheDelayThenWritten) {
  source_.targets = {T("10.0.0.1"), T("10.0.0.2"), T("10.0.0.3")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  source_.targets.clear();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(orchestrator_->RunOnce());
    EXPECT_EQ(Stored(), (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3", "", ""}));
    EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held"), 1);
    EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held_slots"), 3);
    clock_.Advance(11s);
  }
  // (Weight steps were written meanwhile: they are never held.)
  EXPECT_EQ(Table().slots[0].weight, 3);
  clock_.Advance(5s);  // 60 s since the empty answer first came
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(), (std::vector<std::string>{"", "", "", "", ""}));
  EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held"), 0);
  EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held_slots"), 0);
}

TEST_F(OrchestratorTest, JoinsAndWeightStepsGoThroughWhileARemovalIsHeld) {
  source_.targets = {T("10.0.0.1"), T("10.0.0.2"), T("10.0.0.3")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  // Two of three gone at once, one new target.
  source_.targets = {T("10.0.0.3"), T("10.0.0.4")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored(),
            (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", ""}));
  EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held_slots"), 2);
  clock_.Advance(10s);
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Table().slots[3].weight, 2);  // the join ramps up
  // The source comes back: nothing was freed, nothing moved.
  source_.targets = {T("10.0.0.1"), T("10.0.0.2"), T("10.0.0.3"), T("10.0.0.4")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held"), 0);
  EXPECT_EQ(Stored(),
            (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", ""}));
}

TEST_F(OrchestratorTest, AScaleInBelowTheFractionIsWrittenAtOnce) {
  source_.targets = {T("10.0.0.1"), T("10.0.0.2"), T("10.0.0.3"), T("10.0.0.4"), T("10.0.0.5")};
  ASSERT_TRUE(orchestrator_->RunOnce());
  source_.targets.pop_back();
  ASSERT_TRUE(orchestrator_->RunOnce());
  EXPECT_EQ(Stored()[4], "");
  EXPECT_EQ(Gauge(registry_, "hsdo_orchestrator_removal_held"), 0);
}

TEST_F(OrchestratorTest, RunStopsWhenAsked) {
  source_.targets = {T("10.0.0.1")};
  std::thread loop([&] { orchestrator_->Run(); });
  while (source_.calls == 0) std::this_thread::sleep_for(1ms);
  wakeup_.RequestStop();
  loop.join();
  EXPECT_GT(orchestrator_->last_cycle_seconds(), 0);
}

}  // namespace
}  // namespace hsdo
