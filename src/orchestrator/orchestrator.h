// The orchestrator (`hsdo --server`): every INTERVAL, discover targets, plan the slot table,
// and write only what changed to the store (the seed's "server orders, clients apply").
//
// Degraded modes, each logged and counted:
//  - a source error keeps the last good target list (a failed read never frees a slot);
//    before the first good read nothing is planned at all;
//  - a store error keeps the table; the same plan is retried next cycle; a conflict (another
//    writer moved the generation) re-reads the table first;
//  - a plan that would free more than MAX_REMOVED_FRACTION of the enabled slots is held
//    (RemovalGuard): those slots stay as they are until the source has answered the same
//    way for MASS_REMOVAL_DELAY, while joins and weight steps are written; a warning once,
//    and the gauges hsdo_orchestrator_removal_held{,_slots,_since_timestamp_seconds,_slot};
//  - node reports that cannot be read leave draining slots to their timeout; a store without
//    node records (kNotFound: a DynamoDB node table never created) is one warning, and is
//    asked again only every minute.
//
// Draining (issue 10): the planner makes slots draining; the orchestrator frees them early when
// the nodes' reports (NodeReportReader) say they are drained, never skips a cycle while a slot
// drains (time frees it), tells the source which of the targets it asked to drain lost their
// slot (DiscoverySource::OnSlotsFreed), and exports hsdo_slots_draining and
// hsdo_fleet_nodes_behind.
#pragma once

#include <atomic>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/clock.h"
#include "common/wakeup.h"
#include "core/planner.h"
#include "discovery/discovery_source.h"
#include "metrics/metrics_registry.h"
#include "metrics/slot_metrics.h"
#include "orchestrator/removal_guard.h"
#include "store/leader_election.h"
#include "store/node_report.h"
#include "store/slot_store.h"

namespace hsdo {

class Orchestrator {
 public:
  Orchestrator(PlannerConfig planner, std::chrono::milliseconds interval, DiscoverySource& source,
               SlotStore& store, const Clock& clock, Wakeup& wakeup, MetricsRegistry& registry,
               RemovalGuardConfig guard = {});

  // One cycle: discover, plan, write. Returns true when the table in the store now matches
  // the plan (nothing to write, or written).
  bool RunOnce();

  // Cycles until the wakeup is stopped; sleeps INTERVAL between cycles unless woken early
  // (a source with news calls Wakeup::Notify()).
  void Run();

  // Active/standby (issue 9.4): with an election, a cycle first ticks it, and a standby
  // neither discovers nor writes. Without one, this orchestrator always writes.
  void SetLeaderElection(LeaderElection* election) { election_ = election; }

  // Where the agents' node reports are read, to free drained slots before their timeout and
  // to count the nodes behind. Without one (nullptr), only the timeout frees a draining slot.
  // `expiry` (NODE_RECORD_EXPIRY; 0: never): a node whose report has not moved for that long,
  // and for at least the drain timeout, is gone, and the leader deletes its record.
  void SetNodeReports(NodeReportReader* reports, std::chrono::milliseconds expiry = {}) {
    reports_ = reports;
    node_record_expiry_ = expiry;
  }

  // Steady time (Clock::Steady(), in seconds) of the last cycle that completed; 0 before.
  // Steady, so that /healthz and /readyz compare it with the steady clock: with the wall clock,
  // one set back hid a failing orchestrator for as long, one set forward failed a healthy one.
  double last_cycle_seconds() const { return last_cycle_seconds_.load(); }
  // Steady time of the last cycle in which discovery answered and the store then matched the
  // plan (written, or nothing to write); 0 before. What /readyz is made of.
  double last_ready_seconds() const { return last_ready_seconds_.load(); }
  // Whether the last cycle found another orchestrator holding the lease. For /readyz.
  bool standing_by() const { return standing_by_.load(); }

 private:
  void LogChanges(const SlotTable& before, const Plan& plan, const std::set<int>& drained) const;
  // Runs `call` (the source's Discover or OnSlotsFreed); when the source blocks and an
  // election is set, on a thread of its own while this one renews the lease (Tick), which a
  // leader otherwise does only at the start of each cycle.
  template <typename Call>
  auto Renewing(Call&& call);
  // Whether the lease was lost, or taken again, since this cycle's start: what it discovered
  // is then another leader's to plan from.
  // The removal guard's time: the steady clock, as wall time from this process's start.
  WallTime SteadyWall() const;
  bool LeadershipChangedInCycle() const;
  // Applies the removal guard to `plan`: returns the plan to write (a held removal planned
  // away), logs a hold once and sets its gauges.
  Plan Guard(Plan plan, WallTime now, bool fresh, const std::set<int>& drained);
  // Whether a change `asked` (since `since`, this leader's first cycle to ask it) is still
  // held: until it has been asked for MASS_REMOVAL_DELAY, unless the removal guard is off.
  bool HeldForTheDelay(bool asked, std::optional<SteadyTime>& since);
  // Notes the slots the write that made table_ from `before` freed (freed_), and forgets those
  // freed at or before `since`.
  void RememberFreed(const SlotTable& before);
  void ForgetFreedBefore(SteadyTime since);
  // Reads the node reports (when a reader is set) and returns the draining slots of table_
  // that every live node reports drained; sets hsdo_fleet_nodes_behind.
  std::set<int> ReadDrained(WallTime now);
  // Takes out of `reports` the nodes silent for NODE_RECORD_EXPIRY (see orchestrator.cc) and
  // deletes the records of up to kExpiriesPerCycle of them.
  void ExpireSilentNodes(std::vector<NodeReport>& reports, SteadyTime now, WallTime wall_now);
  // A target the source asks to drain and that holds no slot has nothing left to drain: its
  // slot was freed (perhaps by another leader, or before a restart, when the source's own
  // completion failed), or it never had one. Tells the source once per target (the ASG source
  // then completes the instance's termination lifecycle action, instead of leaving it to the
  // hook's timeout).
  void TellSourceOfSlotlessDrains();
  // Adds to last_good_targets_ the targets the table's enabled slots hold for the groups the
  // source could not tell (unknown_groups_): their slots stay as they are.
  void KeepUnknownGroups();
  // Another orchestrator leads: forgets the table, the targets, the held removal and the
  // drains' generations, which are the leader's to know. `keep_table`: no other is known to
  // lead, and the table this process wrote is kept as held_table_, to be written back should
  // the store be found empty when it leads again.
  void StandBy(bool keep_table);
  // The drains' and ramps' times as this process has seen them (planner.h, SlotTimes).
  SlotTimes OwnClock() const;
  // Drops table_ to read it again next cycle, keeping it as held_table_ when it has filled slots.
  void ReadAgain();
  // Every kVerifyInterval, and before a write when the last check is kVerifyBeforeWrite old,
  // reads the whole table and compares it with table_ (VerifyStore in orchestrator.cc): the
  // slots to write again as table_ holds them go in rewrite_. A table found at another
  // generation is read again (ReadAgain), except just before a write (which then conflicts).
  void VerifyStore(bool before_write);
  // The next write lands above `generation` too (write_above_), when it is a stored one.
  void NoteWriteAbove(std::uint64_t generation);
  // table_ was just read or written: when it changed, and which generation made each of its
  // draining slots draining (the reports must show that generation applied).
  void TrackTable(const SlotTable* before, WallTime now);

  PlannerConfig planner_;
  std::chrono::milliseconds interval_;
  DiscoverySource& source_;
  SlotStore& store_;
  const Clock& clock_;
  Wakeup& wakeup_;
  bool checked_ = false;         // this cycle's plan went through the removal guard (Guard)
  const WallTime started_wall_;  // both clocks at construction (the removal guard's time)
  const SteadyTime started_steady_;

  LeaderElection* election_ = nullptr;
  NodeReportReader* reports_ = nullptr;
  std::chrono::milliseconds node_record_expiry_{0};
  static constexpr int kExpiriesPerCycle = 5;  // a backlog of records goes a few per cycle
  static constexpr std::chrono::seconds kExpiryRetry{600};  // after a failed delete
  std::optional<SteadyTime> expiry_retry_at_;
  std::string last_reports_error_;
  std::optional<SteadyTime> reports_read_at_;
  // Each node's last report time as read (its own clock), and when this orchestrator first read
  // that value (its steady clock): liveness is judged on the second, so that clocks may differ
  // and be set. `moved`: this orchestrator has seen the node report (its time changed).
  struct SeenReport {
    WallTime reported_at;
    SteadyTime seen_at;
    bool moved = false;  // seen to change by this process: a node seen reporting
  };
  std::map<std::string, SeenReport> seen_reports_;
  // Whether `report` comes from one of several agents reporting under one name (NodeReport::
  // instance: an earlier instance reported again after another). Such a node's sessions count
  // for no drain: each report is whichever agent wrote last.
  bool NameShared(const NodeReport& report, SteadyTime now);
  struct NameUse {
    std::map<std::string, SteadyTime> seen;  // each instance seen under the name: when last
    std::string latest;                      // the instance of the last report read
    std::optional<SteadyTime> changed_at;    // when another instance than the last reported
    std::optional<SteadyTime> shared_at;     // when an earlier instance last reported again
  };
  std::map<std::string, NameUse> name_use_;
  static constexpr std::chrono::seconds kSharedNameHold{60};
  std::set<std::string> told_freed_;  // drain targets the source was told are freed (keys)
  // While the store has no node records at all (kNotFound), when that was last seen.
  std::optional<SteadyTime> reports_missing_since_;
  static constexpr std::chrono::seconds kMissingReportsRetry{60};
  // Each draining slot (by id): the generation its drain began in (for DrainedSlots), and when
  // this process began it or first saw it (its steady clock; the drain is timed on this,
  // planner.h SlotTimes).
  struct Drain {
    std::uint64_t generation;
    SteadyTime seen;
    bool inherited = false;  // found under way: `generation` is only the table's first read
  };
  std::map<int, Drain> drains_;
  // The generation this leader had written when it found the store's table at an earlier one,
  // until its write-back lands.
  std::optional<std::uint64_t> went_back_from_;
  // The generation the next write lands above: the one this leader had written when it found
  // the store went back or wiped (0: none). The nodes hold it, and a write-back that landed on
  // it (a store gone back by one write) read as no change, its planned changes unseen.
  std::uint64_t write_above_ = 0;
  // Slot id of a ramping slot -> its last_weight_update, and when this process wrote or first
  // saw that value (its steady clock): the next step is timed on this.
  std::map<int, std::pair<WallTime, SteadyTime>> weight_seen_;
  // Slots whose first passing health check most live nodes wait for (SlotsAwaitingAdmission),
  // as of the last read of the node reports: a ramping one steps no weight meanwhile, and its
  // next step counts from when the wait ends. And those said waiting in the log.
  std::set<int> awaiting_admission_;
  std::set<int> said_awaiting_;
  // The node reports of the last read (their times on this host's clock, as ReadDrained judges
  // them), empty when they could not be read; and, by slot id, a generation from which the
  // table holds the slot's target (its key with it): the one this process wrote it in, or the
  // table's when it first saw it there. With them the removal guard learns which slots most
  // nodes' health checks have passed (SlotsProvenByChecks).
  std::vector<NodeReport> last_reports_;
  struct Filled {
    Target target;  // its key: address and port
    std::uint64_t generation = 0;
  };
  std::map<int, Filled> filled_at_;
  // Holds the ramps of the slots in awaiting_admission_ (their step timer restarts), and says
  // which begin or end waiting.
  void HoldRampsAwaitingAdmission();
  // Slots whose store record is invalid, and when this process first saw each so (see Plan).
  std::map<int, SteadyTime> invalid_seen_;
  std::optional<std::uint64_t> tracked_generation_;
  WallTime table_changed_at_{};
  std::optional<std::vector<Target>> last_good_targets_;
  // DiscoverySource::UnknownGroups of the answer in last_good_targets_ (KeepUnknownGroups).
  std::vector<std::string> unknown_groups_;
  std::set<std::string> kept_unconfigured_;  // last said by KeepUnknownGroups
  std::optional<SlotTable> table_;           // what the store holds, as last read or written
  // The table this leader last held with filled slots, kept when table_ is dropped to be read
  // again (a conflict, a failed write, a new lease epoch): if the store then holds a table never
  // written (wiped, rebuilt, recreated), this one is written back, so that no target moves.
  std::optional<SlotTable> held_table_;
  bool restoring_ = false;  // table_ is held_table_ on a store never written: write every slot
  // When table_ was last read whole or checked against the store (VerifyStore), and the
  // filled slots of table_ the store was found to have lost, to be written back.
  std::optional<SteadyTime> verified_at_;
  std::vector<int> rewrite_;
  static constexpr std::chrono::seconds kVerifyInterval{60};
  static constexpr std::chrono::seconds kVerifyBeforeWrite{5};
  std::uint64_t lease_takes_ = 0;  // LeaderElection::takes() as of the last cycle
  // The table generation and targets of the last plan that changed nothing (none: replan).
  std::optional<std::uint64_t> quiet_generation_;
  std::vector<Target> quiet_targets_;
  std::optional<std::uint64_t> exported_generation_;  // of the slot gauges
  std::string last_source_error_;
  std::string last_read_error_;        // of the slot table, as last logged (each cause once)
  std::string last_write_error_;       // likewise
  int logged_overflow_ = 0;            // the targets left out, as last logged
  bool logged_overflow_held_ = false;  // whether a removal was held then
  RemovalGuard guard_;
  bool guard_seeded_ = false;  // RemovalGuard::Seed ran since this orchestrator began to lead
  bool holding_ = false;       // a removal is held (as of the last cycle)
  // That removal, stored with every write (none: cleared), so that the leader after a restart
  // or a take-over holds it on (RemovalGuard::Restore).
  HeldRemoval removal_hold_;
  // The enabled slots this cycle's plan keeps only because the source could not tell their
  // group (KeepUnknownGroups): a hold on them stands through such answers (RemovalGuard::Check).
  std::vector<int> kept_unknown_;
  // Since when this leader has read records above HAPROXY_BACKEND_SERVERS_LIST_SIZE whose
  // targets it could place below it: they move only once that has lasted MASS_REMOVAL_DELAY
  // (a typo, or one host's older setting, moved them on every node at once, for good).
  std::optional<SteadyTime> above_since_;
  bool above_held_said_ = false;  // the hold was logged
  // The same for slots whose weight is above HAPROXY_BACKEND_SERVER_MAX_WEIGHT.
  std::optional<SteadyTime> over_max_since_;
  bool weights_held_said_ = false;
  // The slots this leader freed in the last MASS_REMOVAL_DELAY, as they were before, and when
  // (PlanSlots' recently_freed): a target back within it takes its slot again.
  std::map<int, Slot> freed_;
  std::map<int, SteadyTime> freed_at_;
  std::atomic<double> last_cycle_seconds_{0};
  std::atomic<double> last_ready_seconds_{0};
  std::atomic<bool> standing_by_{false};

  SlotWeightMetrics weights_;
  prometheus::Histogram& cycle_duration_;
  prometheus::Counter& source_errors_;
  prometheus::Counter& store_errors_;
  prometheus::Counter& store_writes_;
  prometheus::Gauge& slots_used_;
  prometheus::Gauge& slots_free_;
  prometheus::Gauge& slots_overflow_;
  prometheus::Gauge& slots_draining_;
  prometheus::Gauge& fleet_nodes_behind_;
  prometheus::Gauge& slots_awaiting_admission_;
  prometheus::Counter& node_records_expired_;
  prometheus::Gauge& targets_discovered_;
  prometheus::Gauge& last_success_;
  prometheus::Gauge& removal_held_;
  prometheus::Gauge& removal_held_slots_;
  prometheus::Gauge& removal_held_since_;
  SlotSetMetric removal_held_slot_;  // hsdo_orchestrator_removal_held_slot{slot}
  prometheus::Gauge& unknown_groups_gauge_;
};

// Whether every filled slot of `table` holds the same target in `held` (a write-back of `held`
// that stopped part-way).
bool HoldsOnlyPartOf(const SlotTable& table, const SlotTable& held);

// The ids of `table`'s filled records above the list size whose target `next` holds in a slot
// below it (the list size shrank and the planner placed it again).
std::vector<int> MovedBelowTheListSize(const SlotTable& table, const SlotTable& next);

}  // namespace hsdo
