// The orchestrator's cycle (`Orchestrator::RunOnce`, what `hsdo --server` runs every INTERVAL)
// on a large table, in memory: 10,000 targets in 4 groups, 5,000 slots (so 5,000 targets are
// left out), weights without a ramp. `BM_OrchestratorCycle/k`: k targets replaced by new ones
// before the timed cycle (k = 0: nothing changed). Shows how the cost grows with the changes.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "common/clock.h"
#include "common/wakeup.h"
#include "orchestrator/orchestrator.h"

namespace hsdo {
namespace {

constexpr int kTargets = 10'000;
constexpr int kSlots = 5'000;

class MemoryStore final : public SlotStore {
 public:
  MemoryStore() : table_(SlotTable::Empty(kSlots)) {}
  Result<std::uint64_t> ReadGeneration() override { return table_.generation; }
  Result<SlotTable> ReadTable() override { return table_; }
  using SlotStore::WriteSlots;
  Result<std::uint64_t> WriteSlots(std::span<const Slot> changed, int overflow,
                                   std::uint64_t expected,
                                   const std::optional<HeldRemoval>&) override {
    if (expected != table_.generation) return MakeError(ErrorCode::kConflict, "conflict");
    for (const auto& slot : changed) table_.slots[static_cast<std::size_t>(slot.id - 1)] = slot;
    table_.overflow = overflow;
    return ++table_.generation;
  }

 private:
  SlotTable table_;
};

class ListSource final : public DiscoverySource {
 public:
  std::string_view kind() const override { return "bench"; }
  Result<std::vector<Target>> Discover() override { return targets; }
  std::vector<Target> targets;
};

Target MakeTarget(int i) {
  return Target{.address = fmt::format("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                .port = 8080,
                .name = fmt::format("web-{}", i),
                .group = fmt::format("asg-{}", i % 4),
                .az = fmt::format("az-{}", i % 3)};
}

void BM_OrchestratorCycle(benchmark::State& state) {
  spdlog::set_level(spdlog::level::err);  // "targets left out" every cycle
  const int changes = static_cast<int>(state.range(0));
  MemoryStore store;
  ListSource source;
  for (int i = 0; i < kTargets; ++i) source.targets.push_back(MakeTarget(i));
  FakeClock clock;
  Wakeup wakeup;
  MetricsRegistry registry;
  Orchestrator orchestrator(PlannerConfig{.list_size = kSlots, .min_weight = 10, .max_weight = 10},
                            std::chrono::seconds(1), source, store, clock, wakeup, registry);
  orchestrator.RunOnce();
  orchestrator.RunOnce();
  int next = kTargets;
  for (auto _ : state) {
    state.PauseTiming();
    // Replace the oldest `changes` placed targets: their slots free and are taken again.
    for (int i = 0; i < changes; ++i) {
      source.targets.erase(source.targets.begin());
      source.targets.push_back(MakeTarget(next++));
    }
    // A cycle per MASS_REMOVAL_DELAY and a bit (61 s): the removal guard counts the removals of
    // the last delay together, and 300 or 1000 replacements every second would soon be held
    // (more than half the fleet within a minute), which is not what this measures.
    clock.Advance(std::chrono::seconds(61));
    state.ResumeTiming();
    benchmark::DoNotOptimize(orchestrator.RunOnce());
  }
}
BENCHMARK(BM_OrchestratorCycle)
    ->Arg(0)
    ->Arg(1)
    ->Arg(10)
    ->Arg(100)
    ->Arg(300)
    ->Arg(1000)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace hsdo

BENCHMARK_MAIN();
