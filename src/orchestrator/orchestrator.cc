#include "orchestrator/orchestrator.h"

#include <algorithm>
#include <future>
#include <system_error>
#include <unordered_set>
#include <utility>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "common/logging.h"
#include "store/seed_record.h"

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

double Seconds(SteadyTime time) {
  return std::chrono::duration<double>(time.time_since_epoch()).count();
}

// Whether the hold the store has is not the one held now in a way a leader after this one would
// act on: a hold began or ended, or its base changed, or it holds a slot the stored one does
// not. A stored hold of more slots stays: a leader after this one holds on only if its first
// plan frees one of them, and then as held here. (Review: an answer flapping between two parts
// of one removal wrote the table at every cycle.)
bool StoredHoldIsStale(const HeldRemoval& stored, const HeldRemoval& held) {
  return stored.slots.empty() != held.slots.empty() || stored.base != held.base ||
         !std::includes(stored.slots.begin(), stored.slots.end(), held.slots.begin(),
                        held.slots.end());
}

}  // namespace

// A leader renewed its lease only at the start of each cycle. A discovery that took longer
// than the lease (an AWS attempt times out after 10 s, the default lease) let a standby take
// over from a healthy leader, whose own slow discoveries then lost it back: every take-over
// restarted the drains, the ramps and the removal guard's delay, and the lifecycle hooks ran
// to their timeout. The call now runs beside the renewals.
template <typename Call>
auto Orchestrator::Renewing(Call&& call) {
  if (election_ == nullptr || !source_.Blocks()) return call();
  std::future<decltype(call())> result;
  try {
    result = std::async(std::launch::async, call);
  } catch (const std::system_error& error) {  // no thread to be had (a container's pids.max)
    spdlog::warn("cannot start a thread ({}): the source's call runs without renewals",
                 error.what());
    return call();
  }
  // A renewal is due every third of the lease: a check every thirtieth costs nothing (Tick
  // reads the store only when a renewal is due). Only while leading: a lease lost here is
  // never taken again before the cycle ends, so that a lease another took and released
  // meanwhile goes through the stand-by step (StandBy) before this process leads again.
  const auto check = std::clamp(election_->lease() / 30, std::chrono::milliseconds(10),
                                std::chrono::milliseconds(1'000));
  while (result.wait_for(check) != std::future_status::ready) {
    if (!wakeup_.stop_requested() && election_->leading()) (void)election_->Tick();
  }
  return result.get();
}

WallTime Orchestrator::SteadyWall() const {
  return started_wall_ +
         std::chrono::duration_cast<WallTime::duration>(clock_.Steady() - started_steady_);
}

bool Orchestrator::LeadershipChangedInCycle() const {
  return election_ != nullptr && (!election_->leading() || election_->takes() != lease_takes_);
}

Orchestrator::Orchestrator(PlannerConfig planner, std::chrono::milliseconds interval,
                           DiscoverySource& source, SlotStore& store, const Clock& clock,
                           Wakeup& wakeup, MetricsRegistry& registry, RemovalGuardConfig guard)
    : planner_(planner),
      interval_(interval),
      source_(source),
      store_(store),
      clock_(clock),
      wakeup_(wakeup),
      started_wall_(clock.Now()),
      started_steady_(clock.Steady()),
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
                      .Help("Free slots in the slot table (neither enabled nor draining)")
                      .Register(registry)
                      .Add({})),
      slots_overflow_(prometheus::BuildGauge()
                          .Name("hsdo_slots_overflow")
                          .Help("Targets left out because every slot is taken")
                          .Register(registry)
                          .Add({})),
      slots_draining_(prometheus::BuildGauge()
                          .Name("hsdo_slots_draining")
                          .Help("Draining slots in the slot table (their target leaves)")
                          .Register(registry)
                          .Add({})),
      fleet_nodes_behind_(prometheus::BuildGauge()
                              .Name("hsdo_fleet_nodes_behind")
                              .Help("Reporting nodes whose last report is older than 3 x "
                                    "INTERVAL, or that have not applied the table's generation "
                                    "3 x INTERVAL after it changed (a silent node until its "
                                    "record expires, NODE_RECORD_EXPIRY)")
                              .Register(registry)
                              .Add({})),
      slots_awaiting_admission_(prometheus::BuildGauge()
                                    .Name("hsdo_slots_awaiting_admission")
                                    .Help("Ramping slots whose first passing health check most "
                                          "live nodes wait for: their weight steps no further "
                                          "meanwhile")
                                    .Register(registry)
                                    .Add({})),
      node_records_expired_(prometheus::BuildCounter()
                                .Name("hsdo_fleet_node_records_expired_total")
                                .Help("Node records deleted by the leader, their node silent for "
                                      "NODE_RECORD_EXPIRY")
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
                              .Add({})),
      removal_held_slot_(registry, "hsdo_orchestrator_removal_held_slot",
                         "1 for each slot the held removal would free (`hsdo status` lists "
                         "them); no sample when none is held"),
      unknown_groups_gauge_(prometheus::BuildGauge()
                                .Name("hsdo_orchestrator_unknown_groups")
                                .Help("Configured groups (Auto Scaling groups, Consul services) "
                                      "the source's last answer could not tell: their slots are "
                                      "kept, and no mass removal is confirmed meanwhile")
                                .Register(registry)
                                .Add({})) {}

bool Orchestrator::RunOnce() {
  const auto started = std::chrono::steady_clock::now();
  bool discovered_now = false;
  std::span<const Target> answer;  // what the source answered this cycle, if it did
  checked_ = false;
  const auto finish = [&](bool in_sync) {
    // A leader's cycle that ended before the guard saw its answer (the store unreadable, the
    // table at another generation): a held removal's delay does not run meanwhile. (Fuzz
    // review: a non-fresh answer a re-read hid counted as confirmation; so would a whole store
    // outage after a re-read, releasing the hold at the first answer after it.)
    if (!checked_ && !standing_by_) guard_.Unseen(SteadyWall(), answer);
    cycle_duration_.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    last_cycle_seconds_ = Seconds(clock_.Steady());
    if (in_sync) last_success_.Set(Seconds(clock_.Now()));
    if (in_sync && discovered_now) last_ready_seconds_ = Seconds(clock_.Steady());
    return in_sync;
  };

  const auto stand_by = [&] {
    // Standing by (logged once by the election). Forget all a leader knew: on taking over,
    // the first cycle reads what the last leader wrote, plans only with a discovery made
    // after taking over, and holds a mass removal for the whole delay again. Except the table
    // this process wrote while no other is known to have led since (it stood down because the
    // store did not answer for a lease: a store deleted and made again, an etcd cluster
    // rebuilt): found empty when it takes the lease again, it is written back (RunOnce).
    const std::string& leader = election_->known_leader();
    StandBy(/*keep_table=*/!election_->another_led() &&
            (leader.empty() || leader == election_->me()));
    return finish(false);
  };
  standing_by_ = election_ != nullptr && !election_->Tick();
  if (standing_by_) return stand_by();
  if (election_ != nullptr && election_->takes() != lease_takes_) {
    // The lease was taken (again): after a take-over, or after it vanished from a store that
    // was wiped or rebuilt. Whatever this process held, the store is read again.
    lease_takes_ = election_->takes();
    ReadAgain();
  }

  auto discovered = Renewing([this] { return source_.Discover(); });
  if (LeadershipChangedInCycle()) {
    // Lost during the discovery (the store unreachable for a lease), or lost and taken again:
    // planned as a cycle of a standby, and the next one reads the store again.
    standing_by_ = !election_->leading();
    return stand_by();
  }
  // Not lists kept through failures (a Consul service whose queries fail): /readyz said ready
  // while Consul refused every query (review, Consul semantics). A service or group that does
  // not exist (scaled to zero, not deployed yet) is no failure (review of daba4a8).
  discovered_now = discovered.ok() && !source_.AnsweredThroughFailures();
  // Stopping (SIGTERM arrived during this cycle, most likely during discovery, its longest
  // step): no further store request but the table's write-back below. The store's
  // requests are cut soon after the signal (main.cc), and the lease's release, after this
  // cycle, must fit in that time: a standby then takes over at once and plans this cycle.
  // Except a table to write back (a wiped store): a standby would plan from the empty one.
  if (wakeup_.stop_requested() && !held_table_) return finish(false);
  if (discovered) {
    if (!last_source_error_.empty()) spdlog::info("{} source recovered", source_.kind());
    last_source_error_.clear();
    last_good_targets_ = std::move(*discovered);
    answer = *last_good_targets_;
    auto unknown = source_.UnknownGroups();
    if (unknown != unknown_groups_ && !unknown.empty()) {
      spdlog::warn(
          "{} source cannot tell the targets of {}: their slots stay as the table holds them",
          source_.kind(), fmt::join(unknown, ", "));
    }
    unknown_groups_ = std::move(unknown);
    unknown_groups_gauge_.Set(static_cast<double>(unknown_groups_.size()));
    if (unknown_groups_.empty()) kept_unconfigured_.clear();
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
    std::vector<int> restored_back;  // slots to write back over a store that went back in time
    auto table = store_.ReadTable();
    if (!table) {
      store_errors_.Increment();
      // Each cause once: a table that cannot be read (a record 1 refused, a policy without
      // Scan) fails every cycle while the lease still renews.
      if (table.error().message != last_read_error_) {
        spdlog::warn("store read failed, retrying every cycle: {}", table.error().message);
        last_read_error_ = table.error().message;
      }
      return finish(false);
    }
    if (!last_read_error_.empty()) spdlog::info("the slot table can be read again");
    last_read_error_.clear();
    if (held_table_ && (std::none_of(table->slots.begin(), table->slots.end(),
                                     [](const Slot& slot) { return slot.filled(); }) ||
                        (restoring_ && HoldsOnlyPartOf(*table, *held_table_)))) {
      // An empty table where this leader had written one: the store wiped, rebuilt from nothing
      // or recreated (generation 0), or its slots deleted by hand; or a write-back of it that
      // stopped part-way. Planned from that, every target not in it would take the lowest free
      // slot in discovery order, on every node at once (and be admitted again at weight 0
      // where health-gated). The table this leader held is written back instead. (Only a
      // leader that kept the lease holds one: a standby that takes over plans from the store.)
      spdlog::error(
          "the store's slot table (generation {}) holds {} of the {} enabled slots this "
          "orchestrator held at generation {}: the store was wiped, rebuilt or emptied; "
          "writing that table back so that no target changes slot",
          table->generation, table->EnabledCount(), held_table_->EnabledCount(),
          held_table_->generation);
      NoteWriteAbove(held_table_->generation);
      held_table_->generation = table->generation;
      // What the store holds of it is taken from the store: an override written meanwhile
      // (`hsdo set-state` on a slot already written back) stays.
      for (const Slot& slot : table->slots) {
        if (slot.filled()) held_table_->slots[static_cast<std::size_t>(slot.id - 1)] = slot;
      }
      table_ = std::move(held_table_);
      restoring_ = true;
    } else if (held_table_ &&
               (GenerationWentBack(table->generation,
                                   went_back_from_.value_or(held_table_->generation)) ||
                (went_back_from_ && IsChaining(table->generation)))) {
      // A table at an earlier generation than the one this leader wrote: the store went back
      // in time (a backup restored in place, old records put back). Planned from that, the
      // targets placed since would take other slots on every node, and the records of targets
      // gone since would serve them again. Every slot that differs is written back as this
      // leader held it, the freed ones free; until that write lands (it may fail, or a chain
      // stop part-way), a table read again is judged against the generation it went back from,
      // and a chain stopped part-way (above that generation: the write-back lands above it,
      // write_above_) is the write-back's own.
      for (std::size_t index = 0; index < held_table_->slots.size(); ++index) {
        if (index >= table->slots.size() || !(table->slots[index] == held_table_->slots[index])) {
          restored_back.push_back(held_table_->slots[index].id);
        }
      }
      const std::uint64_t from = went_back_from_.value_or(held_table_->generation);
      if (!restored_back.empty() && !went_back_from_) {
        spdlog::error(
            "the store's slot table went back from generation {} to {} (a backup restored?): "
            "writing back slots {} as this orchestrator held them, so that no target changes "
            "slot",
            from, table->generation, fmt::join(restored_back, ", "));
      }
      went_back_from_ = from;
      NoteWriteAbove(from);
      held_table_->generation = table->generation;
      table_ = std::move(held_table_);
      restoring_ = false;
    } else {
      table_ = std::move(*table);
      restoring_ = false;
      went_back_from_.reset();
    }
    held_table_.reset();
    TrackTable(nullptr, clock_.Now());
    verified_at_ = clock_.Steady();
    rewrite_ = std::move(restored_back);
  }
  VerifyStore(/*before_write=*/false);
  if (!table_) return finish(false);  // found at another generation: read again next cycle
  kept_unknown_.clear();
  if (!unknown_groups_.empty()) KeepUnknownGroups();
  // Microseconds: the store keeps LastWeightUpdate at that precision.
  const auto now = std::chrono::floor<std::chrono::microseconds>(clock_.Now());
  const std::set<int> drained = ReadDrained(now);
  HoldRampsAwaitingAdmission();
  const bool draining = std::any_of(table_->slots.begin(), table_->slots.end(),
                                    [](const Slot& slot) { return slot.draining(); });

  // The plan is a pure function of (table, targets, now, drained), and `now` only matters
  // while a slot ramps its weight or drains. With the table and targets of the last plan that
  // changed nothing, no ramp under way, nothing draining and no removal held, planning again
  // would change nothing: skip it.
  if (!draining && !restoring_ && rewrite_.empty() && quiet_generation_ == table_->generation &&
      quiet_targets_ == *last_good_targets_) {
    return finish(true);
  }
  // A lower HAPROXY_BACKEND_SERVERS_LIST_SIZE or HAPROXY_BACKEND_SERVER_MAX_WEIGHT moves keys on
  // every node at once: held for MASS_REMOVAL_DELAY, so that a typo, or one host's older
  // setting taking the lead, can be set back first.
  const auto over_max = [&](const Slot& slot) {
    return slot.enabled() && slot.weight > planner_.max_weight;
  };
  planner_.keep_above = HeldForTheDelay(!table_->beyond.empty(), above_since_);
  planner_.keep_weights = HeldForTheDelay(
      std::any_of(table_->slots.begin(), table_->slots.end(), over_max), over_max_since_);
  ForgetFreedBefore(clock_.Steady() - guard_.config().delay);
  Plan plan =
      Guard(PlanSlots(*table_, *last_good_targets_, planner_, now, drained, OwnClock(), freed_),
            now, discovered.ok() && source_.LastAnswerCurrent(), drained);
  const auto delay_seconds = std::chrono::duration<double>(guard_.config().delay).count();
  if (!plan.kept_above.empty() && !above_held_said_) {
    spdlog::warn(
        "HAPROXY_BACKEND_SERVERS_LIST_SIZE={} is below slots {}, whose targets are live: they "
        "keep their slots for MASS_REMOVAL_DELAY={} s, then take free slots below it if any "
        "(their keys move on every node); if the size is a mistake, set it back now",
        planner_.list_size, fmt::join(plan.kept_above, ", "), delay_seconds);
  }
  above_held_said_ = !plan.kept_above.empty();
  const bool weights_held = planner_.keep_weights &&
                            std::any_of(plan.next.slots.begin(), plan.next.slots.end(), over_max);
  if (weights_held && !weights_held_said_) {
    std::vector<int> ids;
    for (const Slot& slot : plan.next.slots) {
      if (over_max(slot)) ids.push_back(slot.id);
    }
    spdlog::warn(
        "HAPROXY_BACKEND_SERVER_MAX_WEIGHT={} is below the weight of slots {}: they keep it for "
        "MASS_REMOVAL_DELAY={} s, then go down to {} on every node (most keys move); if the "
        "maximum is a mistake, set it back now",
        planner_.max_weight, fmt::join(ids, ", "), delay_seconds, planner_.max_weight);
  }
  weights_held_said_ = weights_held;
  // Said when the count changes (a plan is made every cycle while a slot ramps or drains).
  if (plan.next.overflow > 0 &&
      (plan.next.overflow != logged_overflow_ || holding_ != logged_overflow_held_)) {
    // While a removal is held, its slots are taken too (review: the advice to raise the size
    // hid the cause, a rolling replacement faster than the guard lets through).
    const std::string cause =
        holding_ ? fmt::format(
                       ", {} of them by targets whose removal is held (freed once the source "
                       "answers the same way for MASS_REMOVAL_DELAY={} s; or raise "
                       "HAPROXY_BACKEND_SERVERS_LIST_SIZE)",
                       static_cast<int>(removal_held_slots_.Value()), delay_seconds)
                 : std::string(" (raise HAPROXY_BACKEND_SERVERS_LIST_SIZE)");
    spdlog::warn("{} targets left out: all {} slots are taken{}; first left out: {}",
                 plan.next.overflow, planner_.list_size, cause, Describe(plan.left_out.front()));
  } else if (plan.next.overflow == 0 && logged_overflow_ > 0) {
    spdlog::info("every target has a slot again");
  }
  logged_overflow_ = plan.next.overflow;
  logged_overflow_held_ = holding_;

  // A record the store refused reads as a free slot here, but an agent that held a target there
  // keeps it until a valid record replaces it: each is written over with what the plan holds
  // (once: the table this write makes has none). One the plan leaves free takes a target out
  // of every node, which the removal guard cannot weigh (it never saw that target): it waits
  // MASS_REMOVAL_DELAY first, as a held mass removal does.
  std::erase_if(invalid_seen_, [&](const auto& seen) {
    return std::find(table_->invalid_ids.begin(), table_->invalid_ids.end(), seen.first) ==
           table_->invalid_ids.end();
  });
  for (const int id : table_->invalid_ids) {
    const auto index = static_cast<std::size_t>(id - 1);
    if (index >= plan.next.slots.size() ||
        std::find(plan.changed.begin(), plan.changed.end(), id) != plan.changed.end()) {
      continue;
    }
    const SteadyTime seen = invalid_seen_.try_emplace(id, clock_.Steady()).first->second;
    if (plan.next.slots[index].filled() || clock_.Steady() - seen >= guard_.config().delay) {
      plan.changed.push_back(id);
    }
  }
  for (const int id : rewrite_) {  // lost by the store: written again as the plan holds them
    if (std::find(plan.changed.begin(), plan.changed.end(), id) == plan.changed.end()) {
      plan.changed.push_back(id);
    }
  }
  std::sort(plan.changed.begin(), plan.changed.end());

  bool in_sync = true;
  const bool ramping = std::any_of(plan.next.slots.begin(), plan.next.slots.end(), [&](auto& s) {
    return s.enabled() && s.weight < planner_.max_weight;
  });
  quiet_generation_.reset();
  // A held removal is not quiet: the guard must see the next answers to release it. Nor is an
  // invalid record waiting for MASS_REMOVAL_DELAY to be written over.
  if (!holding_ && !draining && invalid_seen_.empty() && !IsChaining(table_->generation) &&
      plan.kept_above.empty() && !weights_held && plan.changed.empty() &&
      plan.next.overflow == table_->overflow && !ramping &&
      !StoredHoldIsStale(table_->removal_hold, removal_hold_) &&
      MovedBelowTheListSize(*table_, plan.next).empty()) {
    quiet_generation_ = table_->generation;
    quiet_targets_ = *last_good_targets_;
  }
  const std::vector<int>* exported_changes = nullptr;
  if (restoring_) {
    // Every filled slot of the table written back, not only those this plan changes.
    std::vector<int> all;
    for (const Slot& slot : plan.next.slots) {
      if (slot.filled() ||
          std::find(plan.changed.begin(), plan.changed.end(), slot.id) != plan.changed.end()) {
        all.push_back(slot.id);
      }
    }
    plan.changed = std::move(all);
  }
  // A table marked as a write of a chain (IsChaining) is a chain that stopped half-way (a
  // failed write, a leader gone): agents apply none until a write that is not, even empty. A
  // hold that began or ended is written even alone: the stored one is what a leader after a
  // restart or a take-over holds on (review: one that had ended without a write held a later
  // removal within the fraction after a restart).
  const bool writing = restoring_ || !plan.changed.empty() ||
                       plan.next.overflow != table_->overflow || IsChaining(table_->generation) ||
                       StoredHoldIsStale(table_->removal_hold, removal_hold_) ||
                       !MovedBelowTheListSize(*table_, plan.next).empty();
  if (writing && !restoring_ && wakeup_.stop_requested()) return finish(false);  // as above
  if (writing && !restoring_) {
    // A write moves the generation: agents would then apply whatever the store lost under the
    // old one, which they keep only while it does not move. Checked first (at most every
    // kVerifyBeforeWrite), and written back with this write.
    VerifyStore(/*before_write=*/true);
    for (const int id : rewrite_) {
      if (std::find(plan.changed.begin(), plan.changed.end(), id) == plan.changed.end()) {
        plan.changed.push_back(id);
      }
    }
    std::sort(plan.changed.begin(), plan.changed.end());
  }
  if (writing) {
    std::vector<Slot> changed;
    changed.reserve(plan.changed.size() + table_->beyond.size());
    for (const int id : plan.changed) {
      changed.push_back(plan.next.slots[static_cast<std::size_t>(id - 1)]);
    }
    // Filled records above HAPROXY_BACKEND_SERVERS_LIST_SIZE (it shrank) whose target this
    // plan placed below it: freed, or every agent would stay unsynced over them for good,
    // agents at the old size would serve the target in two slots, and a list grown back
    // would serve it there again. Only those: a size shrunk by a typo leaves the targets it
    // has no room for where they are (they are overflow, not removals, and never bypass the
    // removal guard).
    const std::vector<int> moved_down = MovedBelowTheListSize(*table_, plan.next);
    for (const int id : moved_down) changed.push_back(Slot::Free(id));
    auto generation = store_.WriteSlots(changed, plan.next.overflow, table_->generation,
                                        removal_hold_, write_above_);
    if (generation) {
      restoring_ = false;
      went_back_from_.reset();
      write_above_ = 0;
      rewrite_.clear();
      // No drain began after the table this write makes. (A write-back over a store that went
      // back or was wiped landed below the generation that began a drain, and the nodes' word
      // never freed it: review, a drain then waited its whole timeout. It lands above it now,
      // write_above_; this stays for a table whose generation wrapped.)
      for (auto& [id, drain] : drains_) {
        drain.generation = std::min(drain.generation, WithoutChainingBit(*generation));
      }
      for (auto& [id, filled] : filled_at_) {  // as for drains: held by the table written now
        filled.generation = std::min(filled.generation, WithoutChainingBit(*generation));
      }
      if (!moved_down.empty()) {
        spdlog::info(
            "freed the records of slots {} above HAPROXY_BACKEND_SERVERS_LIST_SIZE={}: their "
            "targets hold slots below it now",
            fmt::join(moved_down, ", "), planner_.list_size);
      }
      plan.next.beyond = table_->beyond;  // the planner's table starts without them
      std::erase_if(plan.next.beyond, [&](const Slot& slot) {
        return std::find(moved_down.begin(), moved_down.end(), slot.id) != moved_down.end();
      });
      LogChanges(*table_, plan, drained);
      // The gauges showed the table this write changed: only its slots need updating.
      if (exported_generation_ == table_->generation) exported_changes = &plan.changed;
      plan.next.generation = *generation;
      // The invalid records this write left as they are (waiting for MASS_REMOVAL_DELAY) are
      // still in the store, to be written over in their turn.
      for (const int id : table_->invalid_ids) {
        if (std::find(plan.changed.begin(), plan.changed.end(), id) == plan.changed.end()) {
          plan.next.invalid_ids.push_back(id);
          const auto held = table_->invalid_held.find(id);
          if (held != table_->invalid_held.end()) plan.next.invalid_held.insert(*held);
        }
      }
      // (Review: the table a leader keeps through a stand-down, and writes back over a wiped
      // store, kept no hold.)
      plan.next.removal_hold = removal_hold_;
      const SlotTable before = std::move(*table_);
      table_ = std::move(plan.next);
      TrackTable(&before, now);
      RememberFreed(before);
      store_writes_.Increment();
      if (!last_write_error_.empty()) spdlog::info("the slot table can be written again");
      last_write_error_.clear();
      if (!plan.freed_drain_targets.empty()) {
        Renewing([&] { source_.OnSlotsFreed(plan.freed_drain_targets); });
        for (const Target& target : plan.freed_drain_targets) told_freed_.insert(target.Key());
      }
    } else if (generation.error().code == ErrorCode::kConflict) {
      // Not a store failure: someone else wrote since the table was read (`hsdo set-state`
      // writing an override, or another orchestrator). Read it again and plan anew.
      spdlog::info(
          "the slot table changed since it was read (hsdo set-state, or another writer): "
          "reading it again next cycle ({})",
          generation.error().message);
      ReadAgain();
      in_sync = false;
    } else {
      store_errors_.Increment();
      if (generation.error().message != last_write_error_) {  // each cause once
        spdlog::warn("store write of {} slots failed, retrying every cycle: {}", changed.size(),
                     generation.error().message);
        last_write_error_ = generation.error().message;
      }
      // The write may have landed with its answer lost: planned again from the table in hand,
      // a plan that changes nothing would leave the store with a write nobody knows of. (A
      // write that empties the table keeps nothing to restore: found empty, it landed.)
      if (std::any_of(plan.next.slots.begin(), plan.next.slots.end(),
                      [](const Slot& slot) { return slot.filled(); })) {
        ReadAgain();
      } else {
        table_.reset();
        held_table_.reset();
      }
      in_sync = false;
    }
  }
  if (in_sync && table_) TellSourceOfSlotlessDrains();
  if (table_ && table_->generation != exported_generation_) {
    exported_generation_ = table_->generation;
    if (exported_changes != nullptr) {
      weights_.Update(*table_, *exported_changes);
    } else {
      weights_.Update(*table_);
    }
    const auto draining_slots = std::count_if(table_->slots.begin(), table_->slots.end(),
                                              [](const Slot& slot) { return slot.draining(); });
    slots_used_.Set(table_->EnabledCount());
    slots_draining_.Set(static_cast<double>(draining_slots));
    slots_free_.Set(static_cast<double>(table_->slots.size()) - table_->EnabledCount() -
                    static_cast<double>(draining_slots));
    slots_overflow_.Set(table_->overflow);
  }
  return finish(in_sync);
}

std::set<int> Orchestrator::ReadDrained(WallTime now) {
  if (reports_ == nullptr) return {};
  const bool draining = std::any_of(table_->slots.begin(), table_->slots.end(),
                                    [](const Slot& slot) { return slot.draining(); });
  // Without a draining slot, the reports only feed the gauge: once per INTERVAL is enough
  // (a source with news wakes the cycle more often).
  // Timed on the steady clock: a wall clock set back would hold them for as long.
  const SteadyTime steady = clock_.Steady();
  if (!draining && reports_read_at_ && steady - *reports_read_at_ < interval_) return {};
  if (reports_missing_since_ && steady - *reports_missing_since_ < kMissingReportsRetry) return {};
  reports_read_at_ = steady;
  auto reports = reports_->ReadNodeReports();
  if (!reports && reports.error().code == ErrorCode::kNotFound) {
    // The store has no place for node records (DynamoDB: `<table>-nodes` was never created;
    // the seed's README creates only the slot table). Not a failure: said once, asked again
    // rarely, and draining slots wait for their timeout.
    if (!reports_missing_since_) {
      spdlog::warn(
          "node reports are not in the store ({}): draining slots are freed only at "
          "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT; looking again every {} s",
          reports.error().message, kMissingReportsRetry.count());
    }
    reports_missing_since_ = steady;
    awaiting_admission_.clear();
    last_reports_.clear();
    return {};
  }
  if (reports_missing_since_) spdlog::info("node reports found in the store");
  reports_missing_since_.reset();
  if (!reports) {
    store_errors_.Increment();
    if (reports.error().message != last_reports_error_) {
      spdlog::warn("node reports cannot be read ({}): draining slots wait for their timeout",
                   reports.error().message);
      last_reports_error_ = reports.error().message;
    }
    awaiting_admission_.clear();  // unknown: ramps run as without node reports
    last_reports_.clear();        // and no slot is proven by the checks
    return {};
  }
  if (!last_reports_error_.empty()) spdlog::info("node reports can be read again");
  last_reports_error_.clear();
  // Each report's age on this host's steady clock: a report whose time moved since the last
  // read was written since, whatever the writer's clock says (a node whose clock is behind
  // would look dead, and its sessions on a draining slot would not count), and whatever this
  // host's wall clock did meanwhile (set forward, every unchanged report looked dead). A report
  // read for the first time (after a start, a take-over, or from a new node) is as fresh as
  // this read, since its own time cannot tell a node behind from a dead one: so a dead node
  // holds drains for 3 x INTERVAL at most. The age is then handed on as a time on the wall
  // clock: now minus the age.
  const auto liveness = 3 * interval_;
  std::map<std::string, SeenReport> seen;
  bool someone_to_ask = false;
  for (NodeReport& report : *reports) {
    // Its sessions cleared, a live node reports no draining slot drained.
    if (NameShared(report, steady)) report.draining_sessions.clear();
    const auto known = seen_reports_.find(report.name);
    SeenReport entry{.reported_at = report.reported_at, .seen_at = steady, .moved = false};
    if (known != seen_reports_.end()) {
      if (known->second.reported_at == report.reported_at) {
        entry = known->second;
      } else {
        entry.moved = true;
      }
    }
    report.reported_at = now - (steady - entry.seen_at);
    // Only a node seen reporting by this process frees a drain: not one whose last report,
    // read once, may be as old as the node's death (a drain would be freed on the word of
    // dead nodes alone). So after a start or a take-over, no drain is freed by reports before
    // the nodes' next heartbeat.
    someone_to_ask = someone_to_ask || (entry.moved && NodeIsLive(report, now, liveness));
    seen[report.name] = entry;
  }
  seen_reports_ = std::move(seen);
  // A name no longer in the store (its record deleted) is a new node if it comes back.
  std::erase_if(name_use_, [&](const auto& use) { return !seen_reports_.contains(use.first); });
  ExpireSilentNodes(*reports, steady, now);
  fleet_nodes_behind_.Set(
      NodesBehind(*reports, table_->generation, table_changed_at_, now, liveness));
  awaiting_admission_ = SlotsAwaitingAdmission(*reports, now, liveness);
  last_reports_ = std::move(*reports);
  if (!someone_to_ask || !draining) return {};
  std::map<int, std::uint64_t> draining_generation;
  std::set<int> inherited;
  for (const auto& [id, drain] : drains_) {
    draining_generation[id] = drain.generation;
    if (drain.inherited) inherited.insert(id);
  }
  // The nodes whose silence holds a drain (DrainedSlots): those seen reporting by this
  // process, and those whose report, by its own time, is younger than the drain timeout (read
  // first since this process started or took over, or since the node's agent started: it may
  // be paused since, its HAProxy serving on; its clock may differ from this host's a little).
  std::set<std::string> seen_reporting;
  for (const auto& [name, entry] : seen_reports_) {
    if (entry.moved || now - entry.reported_at < planner_.drain_timeout) {
      seen_reporting.insert(name);
    }
  }
  return DrainedSlots(*table_, draining_generation, last_reports_, now, liveness,
                      planner_.drain_timeout, seen_reporting, inherited);
}

// A node whose report has not moved for NODE_RECORD_EXPIRY is gone: a HAProxy node of an
// auto-scaled fleet replaced, a host retired. Kept, its record would count it behind forever and
// be read every cycle. Its silence is timed on this process's clock (seen_reports_: since a
// start or a take-over, every record is as fresh as its first read), and must there be at least
// the drain timeout: a silent node's sessions hold a drain until then (DrainedSlots), and no
// longer. The expiry itself may also be reached by the report's own time, so that restarts and
// take-overs more frequent than the expiry do not keep every record (a node whose clock is that
// far behind would still have its reports move). The store deletes a record only if it is still
// the report read: a node that reports again keeps it. A failed delete is not a store error (the
// table is not at stake): said once, and deletes rest for kExpiryRetry.
void Orchestrator::ExpireSilentNodes(std::vector<NodeReport>& reports, SteadyTime now,
                                     WallTime wall_now) {
  if (node_record_expiry_ <= std::chrono::milliseconds::zero()) return;
  bool may_delete = !expiry_retry_at_ || now >= *expiry_retry_at_;
  int deletes = 0;
  std::erase_if(reports, [&](const NodeReport& report) {
    const SeenReport& entry = seen_reports_.at(report.name);
    const auto watched = now - entry.seen_at;
    const auto liveness = NodeLiveness(report, 3 * interval_);
    const auto hold = std::max(planner_.drain_timeout, liveness);
    // By the report's own time only after a longer watch (10 x the liveness): a node whose
    // clock is far off and that missed a heartbeat or two is not taken for gone.
    const bool expired = watched >= hold && (watched >= node_record_expiry_ ||
                                             (watched >= std::max(hold, 10 * liveness) &&
                                              wall_now - entry.reported_at >= node_record_expiry_));
    if (!expired) return false;
    const auto silent = std::max<std::chrono::nanoseconds>(watched, wall_now - entry.reported_at);
    if (!may_delete || deletes >= kExpiriesPerCycle) return true;  // gone; deleted later
    ++deletes;
    auto deleted = reports_->DeleteNodeReport(report.name, entry.reported_at);
    if (!deleted) {
      may_delete = false;
      expiry_retry_at_ = now + kExpiryRetry;
      // Said at each try, every kExpiryRetry at most.
      spdlog::warn(
          "the record of node {}, silent for NODE_RECORD_EXPIRY, cannot be deleted (tried again "
          "in {} s): {}",
          report.name, kExpiryRetry.count(), deleted.error().message);
      return true;
    }
    expiry_retry_at_.reset();
    if (*deleted) {
      node_records_expired_.Increment();
      spdlog::info(
          "node {} has not reported for {} s (NODE_RECORD_EXPIRY): its record is deleted, and "
          "it is no longer counted behind",
          report.name, std::chrono::duration_cast<std::chrono::seconds>(silent).count());
      seen_reports_.erase(report.name);
      name_use_.erase(report.name);
    }
    return *deleted;  // not deleted: the node reported again since the read
  });
}

void Orchestrator::KeepUnknownGroups() {
  std::unordered_set<std::string> keys;
  keys.reserve(last_good_targets_->size());
  for (const Target& target : *last_good_targets_) keys.insert(target.Key());
  const std::vector<std::string> configured = source_.Groups();
  const auto in = [](const std::vector<std::string>& groups, const std::string& group) {
    // The store writes an empty label as the seed's "none", and reads it back empty.
    return std::find(groups.begin(), groups.end(), group) != groups.end() ||
           (group.empty() && std::find(groups.begin(), groups.end(), "none") != groups.end());
  };
  std::set<std::string> unconfigured;  // kept only because no configured group is theirs
  for (const Slot& slot : table_->slots) {
    // Not a draining slot: its target left before, and kept as a target it would come back.
    if (!slot.enabled()) continue;
    // An unknown group's, or one under a group no longer configured: after a typo in one
    // name, the name meant (its targets would look removed, a few at a time if few).
    const std::string& group = slot.target.group;
    const bool unknown = in(unknown_groups_, group);
    if (!unknown && (configured.empty() || in(configured, group))) continue;
    // Whether kept now or in an earlier cycle whose answer this one reuses (review: a source
    // failing after a cycle that kept them passed none, and the hold on them was dropped).
    kept_unknown_.push_back(slot.id);
    if (keys.insert(slot.target.Key()).second) {
      Target kept = slot.target;
      kept.drain = false;
      last_good_targets_->push_back(std::move(kept));
      if (!unknown) unconfigured.insert(group);
    }
  }
  if (unconfigured != kept_unconfigured_ && !unconfigured.empty()) {
    spdlog::warn(
        "{} source: keeping the slots of group(s) [{}], not configured, while [{}] cannot be "
        "told (a typo in a name would make the groups meant look removed)",
        source_.kind(), fmt::join(unconfigured, ", "), fmt::join(unknown_groups_, ", "));
  }
  kept_unconfigured_ = std::move(unconfigured);
}

void Orchestrator::TellSourceOfSlotlessDrains() {
  const auto& targets = *last_good_targets_;
  if (std::none_of(targets.begin(), targets.end(), [](const Target& t) { return t.drain; })) {
    told_freed_.clear();
    return;  // the common case, at the cost of one pass over the targets
  }
  // An invalid record may hold the target (agents keep what it held): none is reported done
  // until the records are written over (MASS_REMOVAL_DELAY at most), else the ASG source would
  // complete the termination of an instance that every node still serves.
  if (!table_->invalid_ids.empty()) return;
  // Records above a shrunk list size are kept, and agents at the old size serve them.
  std::set<std::string> filled;
  for (const auto* slots : {&table_->slots, &table_->beyond}) {
    for (const Slot& slot : *slots) {
      if (slot.filled()) filled.insert(slot.target.Key());
    }
  }
  std::vector<Target> slotless;
  std::set<std::string> told;
  for (const Target& target : targets) {
    if (!target.drain || filled.contains(target.Key())) continue;
    if (!told_freed_.contains(target.Key())) slotless.push_back(target);
    told.insert(target.Key());
  }
  // Telling the source ends instances (an Auto Scaling lifecycle completed): only while the
  // lease is this process's, confirmed again when its renewal is due (a leader paused in this
  // cycle past its lease would tell it from a table another leader now writes).
  if (!slotless.empty() && election_ != nullptr && !election_->Tick()) return;
  told_freed_ = std::move(told);  // forgets the targets the source no longer lists
  if (!slotless.empty()) Renewing([&] { source_.OnSlotsFreed(slotless); });
}

void Orchestrator::StandBy(bool keep_table) {
  source_.OnStandBy();
  if (keep_table) {
    ReadAgain();  // restoring_ stays: a write-back broken here is finished when it leads again
  } else {
    table_.reset();
    held_table_.reset();
    restoring_ = false;
    went_back_from_.reset();
    write_above_ = 0;
  }
  last_good_targets_.reset();
  unknown_groups_.clear();
  kept_unconfigured_.clear();
  quiet_generation_.reset();
  last_read_error_.clear();  // leading again, the same fault or overflow is said again
  last_write_error_.clear();
  logged_overflow_ = 0;
  logged_overflow_held_ = false;
  drains_.clear();
  weight_seen_.clear();
  awaiting_admission_.clear();
  last_reports_.clear();
  filled_at_.clear();
  reports_read_at_.reset();  // leading again, the reports are read at once (ramps they hold)
  said_awaiting_.clear();
  slots_awaiting_admission_.Set(0);
  invalid_seen_.clear();
  name_use_.clear();
  tracked_generation_.reset();
  seen_reports_.clear();
  told_freed_.clear();
  guard_ = RemovalGuard(guard_.config());
  guard_seeded_ = false;
  holding_ = false;
  removal_hold_ = {};
  above_since_.reset();
  above_held_said_ = false;
  freed_.clear();
  freed_at_.clear();
  over_max_since_.reset();
  weights_held_said_ = false;
  removal_held_.Set(0);
  removal_held_slots_.Set(0);
  removal_held_since_.Set(0);
  removal_held_slot_.Set({});
  unknown_groups_gauge_.Set(0);
  // What the table and the fleet looked like is the leader's to say: a standby that kept its
  // last values fired alerts (overflow, nodes behind) for ever after a change of leader.
  slots_used_.Set(0);
  slots_free_.Set(0);
  slots_overflow_.Set(0);
  slots_draining_.Set(0);
  fleet_nodes_behind_.Set(0);
  targets_discovered_.Set(0);
  weights_.Update(SlotTable::Empty(0));
  exported_generation_.reset();  // leading again, they are set from the table read then
}

void Orchestrator::HoldRampsAwaitingAdmission() {
  const SteadyTime now = clock_.Steady();
  std::set<int> held;
  for (const int id : awaiting_admission_) {
    const auto seen = weight_seen_.find(id);  // only ramping slots are there (TrackTable)
    if (seen == weight_seen_.end() || static_cast<std::size_t>(id) > table_->slots.size()) {
      continue;
    }
    seen->second.second = now;
    held.insert(id);
  }
  slots_awaiting_admission_.Set(static_cast<double>(held.size()));
  if (held == said_awaiting_) return;
  std::vector<std::string> began;
  std::vector<int> ended;
  int more = 0;
  for (const int id : held) {
    const auto index = static_cast<std::size_t>(id - 1);
    if (said_awaiting_.contains(id) || index >= table_->slots.size()) continue;
    if (began.size() == 10) {
      ++more;
      continue;
    }
    const Slot& slot = table_->slots[index];
    began.push_back(fmt::format("{} ({}, weight {})", id, Describe(slot.target), slot.weight));
  }
  if (more > 0) began.push_back(fmt::format("{} more", more));
  for (const int id : said_awaiting_) {
    if (!held.contains(id)) ended.push_back(id);
  }
  if (!began.empty()) {
    spdlog::info(
        "slots {} wait for their first passing health check on most nodes: their weight steps "
        "once it passes",
        fmt::join(began, ", "));
  }
  if (!ended.empty() && (!last_reports_error_.empty() || reports_missing_since_)) {
    // Whether they still wait is unknown: README says ramps go on while reports are unread.
    spdlog::info(
        "slots {} are no longer held for a health check (node reports cannot be read): "
        "their ramp goes on",
        fmt::join(ended, ", "));
  } else if (!ended.empty()) {
    spdlog::info("slots {} no longer wait for a health check: their ramp goes on",
                 fmt::join(ended, ", "));
  }
  said_awaiting_ = std::move(held);
}

void Orchestrator::TrackTable(const SlotTable* before, WallTime now) {
  if (tracked_generation_ != table_->generation) table_changed_at_ = now;
  tracked_generation_ = table_->generation;
  for (const Slot& slot : table_->slots) {
    // A ramp's next step counts from when this process wrote or first saw the slot's last one,
    // less the time the table says has passed since that step, up to one interval: so a wall
    // clock ahead brings a step forward by one interval at most, and a restart (or a change of
    // leader) costs the ramp nothing (review: restarts more often than the interval froze
    // every ramp, and each added up to an interval to it).
    if (slot.enabled() && slot.last_weight_update && slot.weight < planner_.max_weight) {
      // A step this process wrote is one even when it bears the time of the step before (a wall
      // clock set back by the time between them: found by the model test).
      const auto index = static_cast<std::size_t>(slot.id - 1);
      const bool stepped = before != nullptr && index < before->slots.size() &&
                           before->slots[index].weight != slot.weight;
      const auto seen = weight_seen_.find(slot.id);
      if (stepped || seen == weight_seen_.end() || seen->second.first != *slot.last_weight_update) {
        const auto since_step = std::clamp<WallTime::duration>(
            now - *slot.last_weight_update, WallTime::duration::zero(),
            std::chrono::duration_cast<WallTime::duration>(planner_.increase_interval));
        weight_seen_[slot.id] = {*slot.last_weight_update, clock_.Steady() - since_step};
      }
    } else {
      weight_seen_.erase(slot.id);
    }
    if (slot.enabled()) {
      // A generation from which the table holds this target here: this one for a target new to
      // the slot (written now, or first seen in a table read: held since then at the latest),
      // and for one first seen in a table no hsdo wrote (its derived generation has no order).
      const std::uint64_t generation = WithoutChainingBit(table_->generation);
      const auto filled = filled_at_.find(slot.id);
      if (filled == filled_at_.end() || !filled->second.target.SameKey(slot.target) ||
          (filled->second.generation >> 63) != (generation >> 63)) {
        filled_at_[slot.id] = {.target = {.address = slot.target.address, .port = slot.target.port},
                               .generation = generation};
      }
    } else {
      filled_at_.erase(slot.id);
    }
    if (!slot.draining()) {
      drains_.erase(slot.id);
      continue;
    }
    const auto index = static_cast<std::size_t>(slot.id - 1);
    const bool began_now =
        before != nullptr && index < before->slots.size() && !before->slots[index].draining();
    // A slot found draining in a table read from the store (a restart, a take-over, another
    // writer) may have begun earlier: its generation is at most the table's. Its timeout
    // counts from here, whatever drain_since says: that is another clock's (a former
    // leader's) or this one's before a step.
    if (began_now || !drains_.contains(slot.id)) {
      // Of a table marked as a write of a chain, the generation a complete table has.
      drains_[slot.id] = {.generation = WithoutChainingBit(table_->generation),
                          .seen = clock_.Steady(),
                          .inherited = !began_now};
    }
  }
}

bool HoldsOnlyPartOf(const SlotTable& table, const SlotTable& held) {
  for (const Slot& slot : table.slots) {
    if (!slot.filled()) continue;
    const auto index = static_cast<std::size_t>(slot.id - 1);
    if (index >= held.slots.size() || !held.slots[index].filled() ||
        !held.slots[index].target.SameKey(slot.target)) {
      return false;
    }
  }
  return true;
}

std::vector<int> MovedBelowTheListSize(const SlotTable& table, const SlotTable& next) {
  std::vector<int> ids;
  for (const Slot& above : table.beyond) {
    // Or, a record without a port (the Python HSDO's), its address placed with a port: the
    // same server, its port now known (as PlanSlots takes it in place below the size).
    const bool placed = std::any_of(next.slots.begin(), next.slots.end(), [&](const Slot& slot) {
      return slot.filled() &&
             (slot.target.SameKey(above.target) || (!above.target.port && slot.target.port &&
                                                    slot.target.address == above.target.address));
    });
    if (placed) ids.push_back(above.id);
  }
  return ids;
}

void Orchestrator::NoteWriteAbove(std::uint64_t generation) {
  if ((generation & kDerivedGenerationBit) != 0) return;  // derived from content: no order
  write_above_ = std::max(write_above_, WithoutChainingBit(generation));
}

// Every write moves the table's generation, and this leader writes conditioned on the one it
// holds, so records changed under an unchanged generation were written by something else: slot
// keys or items deleted by hand, a tool that rewrites records. Agents keep what such a change
// frees (Agent::KeepWhatAnUnchangedGenerationFrees) until the generation moves; this leader,
// whose writes never read the store, would otherwise never notice, and agents that start (or a
// write that moves the generation for another reason) would apply the loss. Once a minute (as
// agents read the table whole), the table is read whole: the filled slots it lost are written
// back as table_ holds them, and records filled by hand in slots it holds free are freed.
void Orchestrator::VerifyStore(bool before_write) {
  const SteadyTime now = clock_.Steady();
  if (verified_at_ && now - *verified_at_ < (before_write ? kVerifyBeforeWrite : kVerifyInterval)) {
    return;
  }
  verified_at_ = now;
  store_.ReadWholeNext();
  auto read = store_.ReadTable();
  if (!read) {
    store_errors_.Increment();
    spdlog::warn("store read (the minutely check of the slot table) failed: {}",
                 read.error().message);
    return;
  }
  if (read->generation != table_->generation) {
    // Written since (`hsdo set-state`, another writer), or its generation deleted too (a wipe):
    // read again, where a store found without a filled slot gets this table written back.
    // (Just before a write, the write conflicts and reads again.)
    if (!before_write) ReadAgain();
    return;
  }
  std::set<std::string> held_keys;
  for (const Slot& held : table_->slots) {
    if (held.filled()) held_keys.insert(held.target.Key());
  }
  std::vector<int> lost;
  std::vector<int> doubled;
  std::vector<int> stray;
  for (std::size_t index = 0; index < table_->slots.size(); ++index) {
    const Slot& held = table_->slots[index];
    const Slot* stored = index < read->slots.size() ? &read->slots[index] : nullptr;
    const bool same = stored != nullptr && stored->filled() && held.filled() &&
                      stored->target.SameKey(held.target);
    if (held.filled() && !same) {
      lost.push_back(held.id);
    } else if (!held.filled() && stored != nullptr && stored->filled()) {
      // A target this table holds in another slot, put here by hand: served from two slots.
      // Any other: a record put back by hand (a partial restore of a backup, an old item),
      // whose target, likely gone, every node would serve once the generation moves, and
      // which no plan of this leader's would ever free (a restarted one would). Not a record
      // this leader read as invalid, mended by hand: its slot waits as invalid records do.
      if (held_keys.contains(stored->target.Key())) {
        doubled.push_back(held.id);
      } else if (std::find(table_->invalid_ids.begin(), table_->invalid_ids.end(), held.id) ==
                 table_->invalid_ids.end()) {
        stray.push_back(held.id);
      }
    }
  }
  std::vector<int> rewrite = lost;
  rewrite.insert(rewrite.end(), doubled.begin(), doubled.end());
  rewrite.insert(rewrite.end(), stray.begin(), stray.end());
  std::sort(rewrite.begin(), rewrite.end());
  if (rewrite.empty() || rewrite == rewrite_) return;
  spdlog::error(
      "the store's slot table (generation {}) changed without its generation moving (written "
      "by something other than hsdo): writing back slots {} as this orchestrator holds them "
      "(lost: {}; holding a target of another slot: {}; filled where it holds the slot free: "
      "{})",
      read->generation, fmt::join(rewrite, ", "), fmt::join(lost, ", "), fmt::join(doubled, ", "),
      fmt::join(stray, ", "));
  rewrite_ = std::move(rewrite);
}

// HSDO_NODE_NAME set alike on several nodes (in an env.yaml shared by the fleet), or hosts of
// one name: their agents write one record, each over the other's. A drain was then freed on the
// word of whichever agent wrote last with 0 sessions, under the sessions of the others. An agent
// that restarts draws a new instance once; an earlier instance reporting again means several.
// A new instance cannot tell a restart from a second agent at first: its sessions count once it
// has been the only one for the node's liveness (3 x INTERVAL), in which another agent under
// the name would have reported again.
bool Orchestrator::NameShared(const NodeReport& report, SteadyTime now) {
  if (report.instance.empty()) return false;  // an agent of an earlier version
  NameUse& use = name_use_[report.name];
  // As long as the node is live, at least (agents may report a long INTERVAL apart), and every
  // instance seen that long: a fleet sharing a name shows each agent's again after all others.
  const auto hold =
      std::max<std::chrono::milliseconds>(kSharedNameHold, NodeLiveness(report, 3 * interval_));
  std::erase_if(use.seen, [&](const auto& entry) { return now - entry.second >= hold; });
  if (use.latest != report.instance) {
    const bool again = use.seen.contains(report.instance);
    if (!use.latest.empty()) use.changed_at = now;
    use.latest = report.instance;
    if (again) {
      if (!use.shared_at) {
        spdlog::error(
            "node name {} is reported by more than one agent (HSDO_NODE_NAME set alike on "
            "several nodes, or hosts of one name): each overwrites the other's report, so their "
            "sessions count for no drain, and draining slots wait for "
            "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT; give each node a name of its own",
            report.name);
      }
      use.shared_at = now;
    }
  }
  use.seen[report.instance] = now;
  if (use.shared_at && now - *use.shared_at >= hold) {
    spdlog::info("node name {} is reported by one agent again", report.name);
    use.shared_at.reset();
  }
  return use.shared_at.has_value() ||
         (use.changed_at && now - *use.changed_at < NodeLiveness(report, 3 * interval_));
}

void Orchestrator::ReadAgain() {
  if (table_ && std::any_of(table_->slots.begin(), table_->slots.end(),
                            [](const Slot& slot) { return slot.filled(); })) {
    held_table_ = std::move(table_);
  }
  table_.reset();
}

SlotTimes Orchestrator::OwnClock() const {
  SlotTimes times;
  const SteadyTime now = clock_.Steady();
  const auto since = [&](SteadyTime seen) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - seen);
  };
  for (const auto& [id, drain] : drains_) times.draining[id] = since(drain.seen);
  for (const auto& [id, seen] : weight_seen_) times.since_weight_step[id] = since(seen.second);
  return times;
}

void Orchestrator::RememberFreed(const SlotTable& before) {
  if (guard_.config().delay.count() <= 0) return;
  const SteadyTime now = clock_.Steady();
  for (const Slot& slot : table_->slots) {
    const auto index = static_cast<std::size_t>(slot.id - 1);
    if (slot.filled()) {
      freed_.erase(slot.id);
      freed_at_.erase(slot.id);
    } else if (index < before.slots.size() && before.slots[index].filled()) {
      freed_[slot.id] = before.slots[index];
      freed_at_[slot.id] = now;
    }
  }
}

void Orchestrator::ForgetFreedBefore(SteadyTime since) {
  for (auto it = freed_at_.begin(); it != freed_at_.end();) {
    if (it->second > since) {
      ++it;
      continue;
    }
    freed_.erase(it->first);
    it = freed_at_.erase(it);
  }
}

bool Orchestrator::HeldForTheDelay(bool asked, std::optional<SteadyTime>& since) {
  // With the guard off (MAX_REMOVED_FRACTION of 1 or more, or no delay), at once as before.
  const RemovalGuardConfig& guard = guard_.config();
  if (!asked || guard.max_removed_fraction >= 1 || guard.delay.count() <= 0) {
    since.reset();
    return false;
  }
  const SteadyTime now = clock_.Steady();
  if (!since) since = now;
  return now - *since < guard.delay;
}

Plan Orchestrator::Guard(Plan plan, WallTime now, bool fresh, const std::set<int>& drained) {
  // The hold's delay runs on the steady clock (a wall clock set forward would release it at
  // once), shown as wall time from this process's start.
  const WallTime steady_now = SteadyWall();
  std::vector<int> restored;  // the hold the table carries, held on from the first cycle
  if (!guard_seeded_) {
    guard_seeded_ = true;
    if (const int seeded = guard_.Seed(*table_, steady_now, now); seeded > 0) {
      spdlog::info(
          "{} slots were freed or began to drain in the last MASS_REMOVAL_DELAY={} s, before "
          "this orchestrator led (a restart or a take-over): they count against "
          "MAX_REMOVED_FRACTION={} with the removals it makes",
          seeded, std::chrono::duration<double>(guard_.config().delay).count(),
          guard_.config().max_removed_fraction);
    }
    if (const int settled = guard_.settled(); settled > 0) {
      spdlog::info(
          "{} slots kept their weight for MASS_REMOVAL_DELAY while others joined or ramped, "
          "before this orchestrator led: for MASS_REMOVAL_DELAY, a plan freeing more than "
          "MAX_REMOVED_FRACTION of them is held (joins a held removal let through may be "
          "wrong addresses)",
          settled);
    }
    restored = guard_.Restore(*table_, table_->removal_hold, steady_now);
  }
  const auto proven = [&] {
    std::map<int, std::uint64_t> filled_at;
    for (const auto& [id, filled] : filled_at_)
      filled_at.emplace_hint(filled_at.end(), id, filled.generation);
    std::set<std::string> seen_reporting;
    for (const auto& [name, entry] : seen_reports_) {
      if (entry.moved) seen_reporting.insert(name);
    }
    return SlotsProvenByChecks(*table_, filled_at, last_reports_, now, 3 * interval_,
                               seen_reporting);
  };
  const RemovalGuard::Decision decision =
      guard_.Check(*table_, plan, steady_now, fresh, proven, kept_unknown_);
  checked_ = true;
  const bool hold = decision.verdict == RemovalGuard::Verdict::kHold;
  if (!restored.empty()) {
    // Said once the first plan is checked: the guard keeps the restored hold only for a plan
    // that frees one of its slots (review: it was said held on also when that plan held another
    // removal, and the restored one was dropped).
    constexpr std::size_t kShown = 32;
    const auto kept = std::count_if(restored.begin(), restored.end(), [&](int id) {
      return std::find(decision.slots.begin(), decision.slots.end(), id) != decision.slots.end();
    });
    const auto delay = std::chrono::duration<double>(guard_.config().delay).count();
    spdlog::log(
        hold && kept > 0 ? spdlog::level::warn : spdlog::level::info,
        "{} source: the slot table says the orchestrator before this one (a restart or a "
        "take-over) held the removal of {} slots ({}{}), when {} were enabled: {}",
        source_.kind(), restored.size(),
        fmt::join(restored.begin(), restored.begin() + std::min(restored.size(), kShown), ", "),
        restored.size() > kShown ? fmt::format(" and {} more", restored.size() - kShown) : "",
        table_->removal_hold.base,
        hold && kept > 0
            ? fmt::format("held on, written only once the source has answered the same way "
                          "for MASS_REMOVAL_DELAY={} s under this orchestrator",
                          delay)
        : kept == 0 ? std::string("not held on: this orchestrator's first plan frees none of them")
                    : fmt::format("not held on: this orchestrator's first plan frees {} of them, "
                                  "and is not held",
                                  kept));
  }
  const auto delay_seconds = std::chrono::duration<double>(guard_.config().delay).count();
  // "N freed in the last MASS_REMOVAL_DELAY=D s with it, more than MAX_REMOVED_FRACTION=F of B"
  const auto beyond_the_fraction = [&] {
    return fmt::format(
        "{} freed in the last MASS_REMOVAL_DELAY={} s with it, more than MAX_REMOVED_FRACTION={} "
        "of {}",
        decision.slots.size() + static_cast<std::size_t>(decision.recent), delay_seconds,
        guard_.config().max_removed_fraction, decision.base);
  };
  if (hold) {
    if (decision.started) {
      spdlog::warn(
          "{} source: holding the removal of {} of {} enabled slots ({}): written only if the "
          "source answers the same way for MASS_REMOVAL_DELAY; joins and weight changes still "
          "go through",
          source_.kind(), decision.slots.size(), decision.enabled, beyond_the_fraction());
    }
    if (decision.paused) {
      spdlog::info(
          "{} source: its answer is not current ({}): it confirms no held removal, whose "
          "MASS_REMOVAL_DELAY pauses until the source answers whole again",
          source_.kind(),
          unknown_groups_.empty()
              ? std::string("the last answer reused")
              : fmt::format("group(s) [{}] cannot be told", fmt::join(unknown_groups_, ", ")));
    }
    plan = PlanSlots(*table_, TargetsWhileHeld(*last_good_targets_, *table_, decision.slots),
                     planner_, now, drained, OwnClock(), freed_);
  } else if (decision.verdict == RemovalGuard::Verdict::kRelease) {
    spdlog::warn("{} source: answered the same way for {} s: freeing the {} held slots",
                 source_.kind(), delay_seconds, decision.slots.size());
  } else if (decision.replacement) {
    spdlog::log(
        holding_ ? spdlog::level::warn : spdlog::level::info,
        "{} source: freeing {} of {} enabled slots ({}), {}: {} slots that most nodes' health "
        "checks passed stay enabled, at least the {} the fraction leaves (a replacement, not an "
        "emptying)",
        source_.kind(), decision.slots.size(), decision.enabled, beyond_the_fraction(),
        holding_ ? (decision.as_held ? "no longer held" : "the held removal is dropped for it")
                 : "not held",
        decision.proven_kept, decision.proven_needed);
  } else if (holding_ && decision.slots.empty()) {
    spdlog::info("{} source: its answer changed, the held removal is dropped", source_.kind());
  } else if (holding_ && !decision.as_held) {
    spdlog::info(
        "{} source: its answer changed, the held removal is dropped; freeing {} of {} "
        "enabled slots, within MAX_REMOVED_FRACTION={}",
        source_.kind(), decision.slots.size(), decision.enabled,
        guard_.config().max_removed_fraction);
  } else if (holding_) {
    // The same answer, now within the fraction: the removals before it left the window
    // (review: a rolling replacement's hold ended so, and was said dropped).
    spdlog::warn(
        "{} source: freeing {} of {} enabled slots, which now fits MAX_REMOVED_FRACTION={} ({} "
        "freed in the last MASS_REMOVAL_DELAY={} s with it, of {}): the removal is no longer held",
        source_.kind(), decision.slots.size(), decision.enabled,
        guard_.config().max_removed_fraction,
        decision.slots.size() + static_cast<std::size_t>(decision.recent), delay_seconds,
        decision.base);
  }
  holding_ = hold;
  removal_hold_ =
      hold ? HeldRemoval{.slots = decision.slots, .base = decision.held_base} : HeldRemoval{};
  // The slots first when a hold begins, last when it ends: a scrape in between sees a hold with
  // its slots, or none (`hsdo status` reads both).
  if (hold) removal_held_slot_.Set(decision.slots);
  removal_held_.Set(hold ? 1 : 0);
  removal_held_slots_.Set(hold ? static_cast<double>(decision.slots.size()) : 0);
  removal_held_since_.Set(hold ? Seconds(decision.since) : 0);
  if (!hold) removal_held_slot_.Set({});
  return plan;
}

void Orchestrator::LogChanges(const SlotTable& before, const Plan& plan,
                              const std::set<int>& drained) const {
  for (const int id : plan.changed) {
    const auto index = static_cast<std::size_t>(id - 1);
    const Slot& now = plan.next.slots[index];
    const Slot* was = index < before.slots.size() ? &before.slots[index] : nullptr;
    const bool was_filled = was != nullptr && was->filled();
    const bool same_target = was_filled && now.filled() &&
                             (now.target.SameKey(was->target) ||
                              std::binary_search(plan.adopted.begin(), plan.adopted.end(), id));
    const auto log = [&](const Slot& slot, const std::string& text) {
      logging::Log(spdlog::level::info, {{"slot", id}, {"address", slot.target.address}},
                   "slot {}: {} {}", id, Describe(slot.target), text);
    };
    if (was_filled && !same_target) {
      // The override goes with the slot (planner.h): the operator learns it here, not when
      // the target comes back in service without its `maint`.
      const std::string override_lost =
          was->admin == AdminState::kNone
              ? std::string()
              : fmt::format("; its `hsdo set-state` override ({}) goes with it",
                            was->admin == AdminState::kMaint ? "maint" : "drain");
      log(*was, fmt::format("{}{}",
                            !was->draining()       ? "left, slot freed"
                            : drained.contains(id) ? "drained on every live node, slot freed"
                                                   : "drain time over, slot freed",
                            override_lost));
    }
    if (now.enabled() && !same_target) {
      // (An override on a join: the target came from a slot above a shrunk list size.)
      const bool back =
          std::find(plan.returned.begin(), plan.returned.end(), id) != plan.returned.end();
      log(now, fmt::format("{} with weight {}{}", back ? "back in the slot it left" : "joined",
                           now.weight,
                           now.admin == AdminState::kNone ? ""
                           : now.admin == AdminState::kMaint
                               ? ", keeping its `hsdo set-state` override (maint)"
                               : ", keeping its `hsdo set-state` override (drain)"));
    } else if (!same_target) {
      continue;  // freed (logged above)
    } else if (!was->target.SameKey(now.target)) {
      // A record without a port that took its target's: a new address on every node.
      log(now, fmt::format("took its target's port (its record had none, {} before)",
                           Describe(was->target)));
    } else if (now.enabled() && was->draining() && was->target.name != now.target.name) {
      // Review (deployment patterns): said "is back" as if the draining instance returned.
      log(now,
          fmt::format("took the slot of {} at the same address, which was draining: enabled "
                      "with weight {}{}",
                      was->target.name.empty() ? std::string("the target") : was->target.name,
                      now.weight,
                      was->admin == AdminState::kNone || now.admin != AdminState::kNone
                          ? std::string()
                          : fmt::format("; its `hsdo set-state` override ({}) went with it",
                                        was->admin == AdminState::kMaint ? "maint" : "drain")));
    } else if (now.enabled() && was->draining()) {
      log(now, fmt::format("is back, enabled again with weight {}", now.weight));
    } else if (now.draining() && was->enabled()) {
      log(now, planner_.drain_timeout.count() > 0
                   ? fmt::format("draining (freed when drained, at the latest in {} s)",
                                 std::chrono::duration<double>(planner_.drain_timeout).count())
                   : std::string("draining"));
    } else if (now.enabled() && was->weight != now.weight) {
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
