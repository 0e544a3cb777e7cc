#include "orchestrator/orchestrator.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "common/logging.h"

namespace hsdo {

namespace {

std::string Describe(const Target& target) {
  std::string text = target.Key();
  if (!target.name.empty() && target.name != target.address) text += " (" + target.name + ")";
  return text;
}

double Seconds(WallTime time) {
  return std::chrono::duration<double>(time.time_since_epoch()).count();
}

}  // namespace

Orchestrator::Orchestrator(PlannerConfig planner, std::chrono::milliseconds interval,
                           DiscoverySource& source, SlotStore& store, const Clock& clock,
                           Wakeup& wakeup, prometheus::Registry& registry, RemovalGuardConfig guard)
    : planner_(planner),
      interval_(interval),
      source_(source),
      store_(store),
      clock_(clock),
      wakeup_(wakeup),
      guard_(guard),
      weights_(registry),
      cycle_duration_(prometheus::BuildHistogram()
                          .Name("hsdo_orchestrator_cycle_duration_seconds")
                          .Help("Duration of one orchestrator cycle (discover, plan, write)")
                          .Register(registry)
                          .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.05,
                                                                           0.1, 0.5, 1, 5})),
      source_errors_(prometheus::BuildCounter()
                         .Name("hsdo_orchestrator_source_errors_total")
                         .Help("Cycles in which the discovery source failed (last good list kept)")
                         .Register(registry)
                         .Add({{"source", std::string(source.kind())}})),
      store_errors_(prometheus::BuildCounter()
                        .Name("hsdo_orchestrator_store_errors_total")
                        .Help("Failed store reads and writes")
                        .Register(registry)
                        .Add({})),
      store_writes_(prometheus::BuildCounter()
                        .Name("hsdo_orchestrator_store_writes_total")
                        .Help("Successful writes of changed slots to the store")
                        .Register(registry)
                        .Add({})),
      slots_used_(prometheus::BuildGauge()
                      .Name("hsdo_slots_used")
                      .Help("Enabled slots in the slot table")
                      .Register(registry)
                      .Add({})),
      slots_free_(prometheus::BuildGauge()
                      .Name("hsdo_slots_free")
                      .Help("Free slots in the slot table")
                      .Register(registry)
                      .Add({})),
      slots_overflow_(prometheus::BuildGauge()
                          .Name("hsdo_slots_overflow")
                          .Help("Targets left out because every slot is taken")
                          .Register(registry)
                          .Add({})),
      targets_discovered_(prometheus::BuildGauge()
                              .Name("hsdo_targets_discovered")
                              .Help("Targets in the last good discovery")
                              .Register(registry)
                              .Add({})),
      last_success_(prometheus::BuildGauge()
                        .Name("hsdo_orchestrator_last_success_timestamp_seconds")
                        .Help("When the store last matched the plan")
                        .Register(registry)
                        .Add({})),
      removal_held_(prometheus::BuildGauge()
                        .Name("hsdo_orchestrator_removal_held")
                        .Help("1 while a removal of more than MAX_REMOVED_FRACTION of the enabled "
                              "slots waits for MASS_REMOVAL_DELAY, else 0")
                        .Register(registry)
                        .Add({})),
      removal_held_slots_(prometheus::BuildGauge()
                              .Name("hsdo_orchestrator_removal_held_slots")
                              .Help("Slots the held removal would free (0 when none is held)")
                              .Register(registry)
                              .Add({})),
      removal_held_since_(prometheus::BuildGauge()
                              .Name("hsdo_orchestrator_removal_held_since_timestamp_seconds")
                              .Help("Since when the held removal has been asked for (0 if none)")
                              .Register(registry)
                              .Add({})) {}

bool Orchestrator::RunOnce() {
  const auto started = std::chrono::steady_clock::now();
  bool discovered_now = false;
  const auto finish = [&](bool in_sync) {
    cycle_duration_.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    last_cycle_seconds_ = Seconds(clock_.Now());
    if (in_sync) last_success_.Set(Seconds(clock_.Now()));
    if (in_sync && discovered_now) last_ready_seconds_ = Seconds(clock_.Now());
    return in_sync;
  };

  standing_by_ = election_ != nullptr && !election_->Tick();
  if (standing_by_) {
    // Standing by (logged once by the election). Forget the table: on taking over, the
    // first cycle reads what the last leader wrote.
    table_.reset();
    return finish(false);
  }

  auto discovered = source_.Discover();
  discovered_now = discovered.ok();
  if (discovered) {
    if (!last_source_error_.empty()) spdlog::info("{} source recovered", source_.kind());
    last_source_error_.clear();
    last_good_targets_ = std::move(*discovered);
  } else {
    source_errors_.Increment();
    // Log each distinct error once, not every second.
    if (discovered.error().message != last_source_error_) {
      spdlog::warn("{} source failed ({}): {}", source_.kind(),
                   last_good_targets_ ? "keeping the last good target list"
                                      : "no target list yet, nothing planned",
                   discovered.error().message);
      last_source_error_ = discovered.error().message;
    }
  }
  if (!last_good_targets_) return finish(false);
  targets_discovered_.Set(static_cast<double>(last_good_targets_->size()));

  if (!table_) {
    auto table = store_.ReadTable();
    if (!table) {
      store_errors_.Increment();
      spdlog::warn("store read failed, retrying next cycle: {}", table.error().message);
      return finish(false);
    }
    table_ = std::move(*table);
  }

  // The plan is a pure function of (table, targets, now), and `now` only matters while a slot
  // ramps its weight. With the table and targets of the last plan that changed nothing, no
  // ramp under way and no removal held, planning again would change nothing: skip it.
  if (quiet_generation_ == table_->generation && quiet_targets_ == *last_good_targets_) {
    return finish(true);
  }
  // Microseconds: the store keeps LastWeightUpdate at that precision.
  const auto now = std::chrono::floor<std::chrono::microseconds>(clock_.Now());
  Plan plan = Guard(PlanSlots(*table_, *last_good_targets_, planner_, now), now, discovered.ok());
  if (plan.next.overflow > 0) {
    spdlog::warn(
        "{} targets left out: all {} slots are taken (raise "
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE); first left out: {}",
        plan.next.overflow, planner_.list_size, Describe(plan.left_out.front()));
  }

  bool in_sync = true;
  const bool ramping = std::any_of(plan.next.slots.begin(), plan.next.slots.end(), [&](auto& s) {
    return s.enabled() && s.weight < planner_.max_weight;
  });
  quiet_generation_.reset();
  // A held removal is not quiet: the guard must see the next answers to release it.
  if (!holding_ && plan.changed.empty() && plan.next.overflow == table_->overflow && !ramping) {
    quiet_generation_ = table_->generation;
    quiet_targets_ = *last_good_targets_;
  }
  if (!plan.changed.empty() || plan.next.overflow != table_->overflow) {
    std::vector<Slot> changed;
    changed.reserve(plan.changed.size());
    for (const int id : plan.changed) {
      changed.push_back(plan.next.slots[static_cast<std::size_t>(id - 1)]);
    }
    auto generation = store_.WriteSlots(changed, plan.next.overflow, table_->generation);
    if (generation) {
      LogChanges(*table_, plan);
      plan.next.generation = *generation;
      table_ = std::move(plan.next);
      store_writes_.Increment();
    } else {
      store_errors_.Increment();
      spdlog::warn("store write of {} slots failed, retrying next cycle: {}", changed.size(),
                   generation.error().message);
      if (generation.error().code == ErrorCode::kConflict) table_.reset();
      in_sync = false;
    }
  }
  if (table_ && table_->generation != exported_generation_) {
    exported_generation_ = table_->generation;
    weights_.Update(*table_);
    slots_used_.Set(table_->EnabledCount());
    slots_free_.Set(static_cast<double>(table_->slots.size()) - table_->EnabledCount());
    slots_overflow_.Set(table_->overflow);
  }
  return finish(in_sync);
}

Plan Orchestrator::Guard(Plan plan, WallTime now, bool fresh) {
  const RemovalGuard::Decision decision = guard_.Check(*table_, plan, now, fresh);
  const bool hold = decision.verdict == RemovalGuard::Verdict::kHold;
  const auto delay_seconds = std::chrono::duration<double>(guard_.config().delay).count();
  if (hold) {
    if (decision.started) {
      spdlog::warn(
          "{} source: holding the removal of {} of {} enabled slots (more than "
          "MAX_REMOVED_FRACTION={}): written only if the source answers the same way for "
          "MASS_REMOVAL_DELAY={} s; joins and weight changes still go through",
          source_.kind(), decision.slots.size(), decision.enabled,
          guard_.config().max_removed_fraction, delay_seconds);
    }
    plan = PlanSlots(*table_, TargetsWhileHeld(*last_good_targets_, *table_, decision.slots),
                     planner_, now);
  } else if (decision.verdict == RemovalGuard::Verdict::kRelease) {
    spdlog::warn("{} source: answered the same way for {} s: freeing the {} held slots",
                 source_.kind(), delay_seconds, decision.slots.size());
  } else if (holding_) {
    spdlog::info("{} source: its answer changed, the held removal is dropped", source_.kind());
  }
  holding_ = hold;
  removal_held_.Set(hold ? 1 : 0);
  removal_held_slots_.Set(hold ? static_cast<double>(decision.slots.size()) : 0);
  removal_held_since_.Set(hold ? Seconds(decision.since) : 0);
  return plan;
}

void Orchestrator::LogChanges(const SlotTable& before, const Plan& plan) const {
  for (const int id : plan.changed) {
    const auto index = static_cast<std::size_t>(id - 1);
    const Slot& now = plan.next.slots[index];
    const Slot* was = index < before.slots.size() ? &before.slots[index] : nullptr;
    const bool was_enabled = was != nullptr && was->enabled();
    if (now.enabled() && (!was_enabled || was->target.Key() != now.target.Key())) {
      logging::Log(spdlog::level::info, {{"slot", id}, {"address", now.target.address}},
                   "slot {}: {} joined with weight {}", id, Describe(now.target), now.weight);
    } else if (!now.enabled() && was_enabled) {
      logging::Log(spdlog::level::info, {{"slot", id}, {"address", was->target.address}},
                   "slot {}: {} left, slot freed", id, Describe(was->target));
    } else if (now.enabled() && was_enabled && was->weight != now.weight) {
      spdlog::debug("slot {}: {} weight {} -> {}", id, Describe(now.target), was->weight,
                    now.weight);
    } else {
      spdlog::debug("slot {}: updated", id);
    }
  }
}

void Orchestrator::Run() {
  spdlog::info("orchestrator started: {} source, {} slots, interval {} ms", source_.kind(),
               planner_.list_size, interval_.count());
  do {
    RunOnce();
  } while (wakeup_.WaitFor(interval_));
  spdlog::info("orchestrator stopped");
}

}  // namespace hsdo
