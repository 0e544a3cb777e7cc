#include "agent/agent.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/file_watcher.h"
#include "common/logging.h"
#include "common/validate.h"
#include "common/version.h"
#include "haproxy/servers_state.h"
#include "store/seed_record.h"

namespace hsdo::agent {
namespace {

using haproxy::CommandKind;

// HAProxy 2.6's answer to `set server ... weight` on a backend with a static algorithm.
constexpr std::string_view kStaticAlgorithmReply = "static LB algorithm";

double ToSeconds(WallTime time) {
  return std::chrono::duration<double>(time.time_since_epoch()).count();
}

const prometheus::Histogram::BucketBoundaries kCycleBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// Whether a filled slot of `table` holds `target`: a slot kept for it elsewhere would serve it
// from two slots.
bool Holds(const SlotTable& table, const Target& target) {
  return std::any_of(table.slots.begin(), table.slots.end(), [&](const Slot& slot) {
    return slot.filled() && slot.target.SameKey(target);
  });
}

// NodeReport::instance: 64 random bits in 16 hex digits.
std::string NewInstanceId() {
  std::random_device random;
  return fmt::format("{:016x}", (std::uint64_t{random()} << 32) | random());
}

}  // namespace

Agent::Agent(AgentSettings settings, SlotStore& store, haproxy::RuntimeApi& api,
             MetricsRegistry& registry, const Clock& clock, NodeReportSink* node_reports)
    : instance_(NewInstanceId()),
      settings_(std::move(settings)),
      store_(store),
      api_(api),
      clock_(clock),
      node_reports_(node_reports),
      weights_(registry),
      commands_family_(prometheus::BuildCounter()
                           .Name("hsdo_agent_runtime_commands_total")
                           .Help("Runtime API write commands sent to HAProxy, by kind")
                           .Register(registry)),
      command_errors_family_(prometheus::BuildCounter()
                                 .Name("hsdo_agent_runtime_command_errors_total")
                                 .Help("Runtime API commands that HAProxy answered with an error, "
                                       "by kind")
                                 .Register(registry)),
      store_reads_family_(prometheus::BuildCounter()
                              .Name("hsdo_agent_store_reads_total")
                              .Help("Reads from the slot store, by kind (generation, table)")
                              .Register(registry)),
      haproxy_reads_family_(
          prometheus::BuildCounter()
              .Name("hsdo_agent_haproxy_reads_total")
              .Help("Reads from HAProxy's runtime API, by kind: info (`show info`, the "
                    "steady-state check), state (`show servers state` of every backend)")
              .Register(registry)),
      generation_reads_(store_reads_family_.Add({{"kind", "generation"}})),
      table_reads_(store_reads_family_.Add({{"kind", "table"}})),
      info_reads_(haproxy_reads_family_.Add({{"kind", "info"}})),
      state_reads_(haproxy_reads_family_.Add({{"kind", "state"}})),
      haproxy_restarts_(prometheus::BuildCounter()
                            .Name("hsdo_agent_haproxy_restarts_total")
                            .Help("Times another HAProxy process answered than at the last read "
                                  "(a reload or a restart), seen in `show info`")
                            .Register(registry)
                            .Add({})),
      drift_repairs_(prometheus::BuildCounter()
                         .Name("hsdo_agent_drift_repairs_total")
                         .Help("Cycles in which HAProxy differed from an unchanged slot table "
                               "(a reload, a hand edit) and was repaired")
                         .Register(registry)
                         .Add({})),
      invalid_slots_(prometheus::BuildCounter()
                         .Name("hsdo_agent_invalid_slots_total")
                         .Help("Slots skipped because a value from the store failed validation "
                               "(counted once per table read)")
                         .Register(registry)
                         .Add({})),
      store_errors_(prometheus::BuildCounter()
                        .Name("hsdo_agent_store_errors_total")
                        .Help("Failed reads from the slot store (the last good table is kept)")
                        .Register(registry)
                        .Add({})),
      socket_errors_(prometheus::BuildCounter()
                         .Name("hsdo_agent_socket_errors_total")
                         .Help("Batches that failed on HAProxy's runtime API socket")
                         .Register(registry)
                         .Add({})),
      cycle_duration_(prometheus::BuildHistogram()
                          .Name("hsdo_agent_cycle_duration_seconds")
                          .Help("Duration of one agent cycle")
                          .Register(registry)
                          .Add({}, kCycleBuckets)),
      last_sync_(prometheus::BuildGauge()
                     .Name("hsdo_agent_last_sync_timestamp_seconds")
                     .Help("Unix time at which HAProxy last matched the slot table")
                     .Register(registry)
                     .Add({})),
      missing_slots_(prometheus::BuildGauge()
                         .Name("hsdo_agent_missing_template_slots")
                         .Help("Slots of the table that HAProxy has no server for, all backends")
                         .Register(registry)
                         .Add({})),
      slots_draining_(prometheus::BuildGauge()
                          .Name("hsdo_slots_draining")
                          .Help("Slots of the slot table that are draining (HAProxy `drain`)")
                          .Register(registry)
                          .Add({})),
      pending_admissions_(prometheus::BuildGauge()
                              .Name("hsdo_agent_slots_pending_admission")
                              .Help("Newly filled slots held at weight 0 until this node's "
                                    "health check passes at their address, all backends")
                              .Register(registry)
                              .Add({})),
      held_slots_(prometheus::BuildGauge()
                      .Name("hsdo_agent_slots_held_at_their_port")
                      .Help("Slots keeping their port until the ones moved to the "
                            "backend's port (HAPROXY_BACKEND_SERVER_PORT) before pass their "
                            "health check there, all backends")
                      .Register(registry)
                      .Add({})),
      admissions_(prometheus::BuildCounter()
                      .Name("hsdo_agent_admissions_total")
                      .Help("Slots given their weight after a passing health check")
                      .Register(registry)
                      .Add({})),
      node_reports_stored_(prometheus::BuildCounter()
                               .Name("hsdo_agent_node_reports_total")
                               .Help("This node's reports stored (those that could not be are "
                                     "counted in hsdo_node_reports_unstored_total)")
                               .Register(registry)
                               .Add({})) {
  // Create the labelled series up front so that a scrape shows zeros, not nothing.
  for (const auto kind :
       {CommandKind::kAddr, CommandKind::kWeight, CommandKind::kState, CommandKind::kHealth}) {
    const std::string name(haproxy::ToString(kind));
    commands_family_.Add({{"kind", name}});
    command_errors_family_.Add({{"kind", name}});
  }
}

void Agent::LogOnce(const std::string& key, const std::string& message,
                    spdlog::level::level_enum level) {
  auto& last = logged_[key];
  if (last == message) return;
  last = message;
  if (!message.empty()) spdlog::log(level, "{}", message);
}

Result<void> Agent::CheckBackends() {
  std::vector<std::string> commands;
  std::vector<std::string> problems;
  for (const auto& backend : settings_.backends) {
    if (!IsValidHaproxyName(backend.config.name) || !IsValidHaproxyName(backend.config.base_name)) {
      problems.push_back(fmt::format("backend '{}' with server base name '{}': invalid name",
                                     haproxy::Printable(backend.config.name),
                                     haproxy::Printable(backend.config.base_name)));
    }
    commands.push_back(haproxy::ShowServersStateCommand(backend.config.name));
  }
  commands.emplace_back(haproxy::kAdminLevelProbe);  // last, in the same connection
  if (settings_.backends.empty()) problems.push_back("no backend configured");
  if (!problems.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "HAProxy misconfigured: {}",
                     fmt::join(problems, "; "));
  }
  auto replies = api_.Execute(commands);
  if (!replies) return replies.error();
  // Below `level admin` every write would fail and only be counted: an installation to fix,
  // said by exit 2. The servers a backend lacks may come with the next reload (kNotFound).
  const bool below_admin = haproxy::IsPermissionDenied(replies->back());
  if (below_admin) {
    problems.push_back(
        "HAPROXY_SOCKET_PATH is not at level admin (HAProxy answers \"Permission denied\" to "
        "admin commands): declare it in haproxy.cfg as \"stats socket <path> level admin\"");
  }
  for (std::size_t i = 0; i < settings_.backends.size(); ++i) {
    const auto& backend = settings_.backends[i].config;
    auto servers = haproxy::ParseServersState((*replies)[i]);
    // A backend without servers exists: it lacks them all (it said "does not exist").
    const bool no_servers = !servers && servers.error().message == haproxy::kNoServers;
    if (!servers && !no_servers) {
      problems.push_back(
          servers.error().code == ErrorCode::kNotFound
              ? fmt::format("backend '{}' does not exist", backend.name)
              : fmt::format("backend '{}': {}", backend.name, servers.error().message));
      continue;
    }
    std::map<std::string, int> ids;
    std::vector<std::string> agent_checked;
    if (servers) {
      for (const auto& server : *servers) {
        ids[server.name] = server.id;
        if (server.has_agent_check()) agent_checked.push_back(server.name);
      }
    }
    std::vector<int> missing;
    std::vector<std::string> wrong_ids;
    for (int id = 1; id <= settings_.list_size; ++id) {
      const auto found = ids.find(haproxy::SlotServerName(backend, id));
      if (found == ids.end()) {
        missing.push_back(id);
      } else if (found->second != id) {
        // Consistent hashing places a server by its numeric id: a slot with another id would
        // hash differently from the same slot on other nodes.
        wrong_ids.push_back(fmt::format("{} has id {}", found->first, found->second));
      }
    }
    if (!missing.empty()) {
      problems.push_back(fmt::format(
          "backend '{}' lacks servers {} (it needs `server-template {} 1-{} <placeholder>:{}`)",
          backend.name, SlotRanges(backend.base_name, missing), backend.base_name,
          settings_.list_size, backend.port));
    }
    if (!wrong_ids.empty()) {
      problems.push_back(fmt::format("backend '{}': {} (slot <n> must have id n)", backend.name,
                                     fmt::join(wrong_ids, ", ")));
    }
    std::vector<int> agent_checked_slots;
    for (int id = 1; id <= settings_.list_size; ++id) {
      const auto name = haproxy::SlotServerName(backend, id);
      if (std::find(agent_checked.begin(), agent_checked.end(), name) != agent_checked.end()) {
        agent_checked_slots.push_back(id);
      }
    }
    if (!agent_checked_slots.empty()) {
      // Its replies (ready, drain, maint, a weight in %) undo hsdo's drains, overrides and
      // freed slots within a second (measured: a removed target went on serving).
      problems.push_back(fmt::format(
          "backend '{}': servers {} have an `agent-check`, whose replies undo the states and "
          "weights hsdo sets: remove it from the server-template",
          backend.name, SlotRanges(backend.base_name, agent_checked_slots)));
    }
  }
  if (!problems.empty()) {
    return MakeError(below_admin ? ErrorCode::kInvalidArgument : ErrorCode::kNotFound,
                     "HAProxy misconfigured: {}", fmt::join(problems, "; "));
  }
  return Ok();
}

bool Agent::GenerationReadCanWait() {
  // Taken before the read: a change signalled during it is read again next cycle.
  const bool changed = store_changed_.exchange(false);
  if (changed || !table_ || !last_generation_read_ || !store_.WatchSeesEveryWrite()) return false;
  return clock_.Steady() - *last_generation_read_ < settings_.full_sync_interval;
}

// A record the store's codec refuses (a write hsdo never makes: a hand edit, another tool, a
// rule a newer hsdo added) reads as a free slot, which would take its target out on every node
// at once. The slot keeps what it held instead, until a valid record replaces it (the
// orchestrator, which reads it as free, writes it over). A slot this agent held nothing for
// (it started on such a record) is left as HAProxy has it (PlanCycle).
void Agent::KeepWhatInvalidRecordsHeld(SlotTable& next) {
  std::set<int> kept;
  for (const int id : next.invalid_ids) {
    const auto index = static_cast<std::size_t>(id - 1);
    if (index >= next.slots.size() || index >= table_->slots.size()) continue;
    const Slot& held = table_->slots[index];
    if (!held.filled() || next.slots[index].filled()) continue;
    // Placed in another slot by the orchestrator (which reads the record as free): kept here
    // too, it would be served from two slots.
    if (Holds(next, held.target)) continue;
    next.slots[index] = held;
    kept.insert(id);
    if (!kept_invalid_.contains(id)) {
      logging::Log(spdlog::level::warn, {{"slot", id}},
                   "slot {}: its record in the store is invalid; it keeps {} until a valid "
                   "record replaces it",
                   id, held.target.Key());
    }
  }
  kept_invalid_ = std::move(kept);
}

// Every write of a table moves its generation (hsdo's orchestrator and `hsdo set-state`; the
// Python HSDO's tables have one derived from their content). Records that change under an
// unchanged generation were written by something else: slot keys or items deleted by hand, a
// tool that rewrites records. Applied at the agents' next whole read (every 60 s), a deletion
// took those targets out of every node at once, and the orchestrator, which still held its
// table, never wrote them back. A slot such a read frees (or gives another target) keeps what
// it held instead, until a write moves the generation (the orchestrator writes the slots it
// holds back, Orchestrator::VerifyStore). A target the table holds in another slot is not
// kept: it would be served from two slots.
void Agent::KeepWhatAnUnchangedGenerationFrees(SlotTable& next) {
  std::set<int> kept;
  const std::size_t size = std::min(next.slots.size(), table_->slots.size());
  for (std::size_t index = 0; index < size; ++index) {
    const Slot& held = table_->slots[index];
    const Slot& read = next.slots[index];
    if (!held.filled() || (read.filled() && read.target.SameKey(held.target))) continue;
    if (Holds(next, held.target)) continue;
    next.slots[index] = held;
    kept.insert(held.id);
  }
  if (!kept.empty() && kept != kept_unchanged_) {
    logging::Log(spdlog::level::err, {{"generation", next.generation}},
                 "slot table generation {}: the store's records changed without the generation "
                 "moving (written by something other than hsdo: a hand edit, another tool); "
                 "slots {} keep their targets until a write moves it",
                 next.generation, fmt::join(kept, ", "));
  }
  kept_unchanged_ = std::move(kept);
}

namespace {
// The same repair of an unchanged table in a row is said this many times (Agent::last_repair_).
constexpr int kRepairsSaid = 3;
// What NoteStoreError says could not be read (and its log-once key).
constexpr std::string_view kGenerationRead = "the slot table's generation";
constexpr std::string_view kTableRead = "the slot table";
std::string StoreLogKey(std::string_view what) { return fmt::format("store:{}", what); }
}  // namespace

void Agent::RefreshTable() {
  table_is_new_ = false;
  table_read_ = false;
  // On the steady clock, as every interval here: a wall clock set back would stop them.
  const SteadyTime now = clock_.Steady();
  const bool stale = !last_table_read_ || now - *last_table_read_ >= settings_.table_refresh;
  const bool can_wait = GenerationReadCanWait();
  if (can_wait && !stale) return;
  auto generation = store_.ReadGeneration();
  generation_reads_.Increment();
  if (!generation) {
    store_changed_ = true;  // read again next cycle
    NoteStoreError(generation.error(), kGenerationRead);
    return;
  }
  last_generation_read_ = clock_.Steady();
  static const std::string kGenerationKey = StoreLogKey(kGenerationRead);  // every cycle
  NoteStoreRead(kGenerationKey, kGenerationRead);
  // A write of a chain that is not the last (kChainingBit): the table is one write from
  // complete (a wiped store written back lacks most of the fleet until then). The last write
  // follows within milliseconds; the next cycle reads it.
  if (IsChaining(*generation)) {
    store_changed_ = true;
    return;
  }
  // Another table at the store's place (SQLite: made again) may reach the same generation.
  const std::uint64_t incarnation = store_.Incarnation();
  const bool other_table = incarnation != table_incarnation_;
  // A table held off as gone back (HoldOffWentBack), read at the same generation again.
  if (went_back_ && !other_table && *generation == went_back_->generation &&
      now - went_back_->since < kWentBackHold) {
    store_changed_ = true;  // read the generation again next cycle
    return;
  }
  // (Not after a table that went back, held off: a write since may land at the generation
  // held, with other slots; it moved the generation all the same.)
  if (table_ && table_->generation == *generation && !other_table && !stale && !went_back_) {
    return;
  }
  // The resync reads the whole table even when the generation moved (else a delta read), as
  // does a generation below the one applied (a delta from another history).
  if (stale || (table_ && !other_table && GenerationWentBack(*generation, table_->generation))) {
    store_.ReadWholeNext();
  }
  auto table = store_.ReadTable();
  table_reads_.Increment();
  if (!table) {
    store_changed_ = true;
    NoteStoreError(table.error(), kTableRead);
    return;
  }
  last_table_read_ = now;
  static const std::string kTableKey = StoreLogKey(kTableRead);
  NoteStoreRead(kTableKey, kTableRead);
  if (IsChaining(table->generation)) {  // a chain began after the generation read
    store_changed_ = true;
    return;
  }
  // A table no orchestrator has ever written (generation 0, nothing enabled: a store just
  // created, or a table made by `hsdo init-table`) says nothing about the fleet; applying it
  // would put every slot of every node in maint. The seed's Python server writes no generation,
  // so a generation-0 table with enabled slots is a real one and is applied.
  if (table->generation == 0 && table->EnabledCount() == 0) {
    store_problem_ =
        "no table yet: the slot table was never written by an orchestrator (generation 0)";
    LogOnce("unwritten", store_problem_ + "; HAProxy is left as it is");
    return;
  }
  LogOnce("unwritten", "");
  store_problem_.clear();
  const bool moved_on_from_went_back = went_back_.has_value();
  if (HoldOffWentBack(*table, other_table, now)) return;
  table_read_ = true;
  table_is_new_ =
      !table_ || table_->generation != table->generation || other_table || moved_on_from_went_back;
  if (other_table) applied_generation_.reset();  // HAProxy matched the other table, not this
  table_incarnation_ = incarnation;
  if (table_ && !other_table) {
    KeepWhatInvalidRecordsHeld(*table);
    // (Generation 0: a table written without the protocol, the seed's Python server's.)
    if (table->generation == table_->generation && table->generation != 0 &&
        !moved_on_from_went_back) {
      KeepWhatAnUnchangedGenerationFrees(*table);
    } else {
      kept_unchanged_.clear();
    }
  }
  if (table_is_new_) {
    logging::Log(spdlog::level::info, {{"generation", table->generation}},
                 "slot table generation {}: {} of {} slots enabled", table->generation,
                 table->EnabledCount(), table->slots.size());
  }
  table_ = std::move(*table);
}

namespace {
// Whether applying `read` would leave HAProxy as `held` has it: the same targets in the same
// slots, with the same state, weight and override.
bool SameForHaproxy(const SlotTable& read, const SlotTable& held) {
  return std::equal(read.slots.begin(), read.slots.end(), held.slots.begin(), held.slots.end(),
                    [](const Slot& a, const Slot& b) {
                      return a.status == b.status && a.weight == b.weight && a.admin == b.admin &&
                             (!a.filled() || a.target.SameKey(b.target));
                    });
}
}  // namespace

// A table read (consistently: a generation read may come from a lagging replica) at a stored
// generation below the one applied, with other slots: the store went back in time (a backup
// restored in place, old records put back). Applied, it would take the targets placed since
// out of every node at once (and put back those gone since) until the leader, which still
// holds its table, writes it back (Orchestrator::VerifyStore, at most a minute), and a
// take-over from it would move them to other slots for good. HAProxy keeps the table it has,
// logged as an error, until the generation moves again (the write-back, or another write:
// applied, whatever its number) or for kWentBackHold (nobody wrote: the restore was meant).
// A lower generation with the same slots (the leader's write-back of a wiped or restored
// store) is applied at once. Generation 0 (a table never written, the Python HSDO's) is
// judged as before.
bool Agent::HoldOffWentBack(const SlotTable& read, bool other_table, SteadyTime now) {
  const bool went_back = table_ && !other_table && read.generation != 0 &&
                         GenerationWentBack(read.generation, table_->generation) &&
                         !SameForHaproxy(read, *table_);
  if (!went_back) {
    went_back_.reset();
    return false;
  }
  if (went_back_ && went_back_->generation != read.generation) {
    spdlog::warn(
        "the store's slot table moved on to generation {} after it went back to {}: "
        "applying it",
        read.generation, went_back_->generation);
    went_back_.reset();
    return false;
  }
  if (!went_back_) {
    went_back_ = WentBack{.generation = read.generation, .since = now};
    logging::Log(spdlog::level::err, {{"generation", read.generation}},
                 "the store's slot table went back from generation {} to {}, with other slots "
                 "(a backup restored?): HAProxy keeps generation {} until the store's "
                 "generation moves again, or for {} s",
                 table_->generation, read.generation, table_->generation, kWentBackHold.count());
  }
  if (now - went_back_->since < kWentBackHold) {
    store_changed_ = true;  // read the generation again next cycle
    return true;
  }
  spdlog::warn("the store's slot table has stayed at generation {} for {} s: applying it",
               read.generation, kWentBackHold.count());
  went_back_.reset();
  return false;
}

bool Agent::StoreMoved() {
  if (!table_) return true;
  store_changed_ = false;
  auto generation = store_.ReadGeneration();
  generation_reads_.Increment();
  const bool moved = !generation || *generation != table_->generation ||
                     store_.Incarnation() != table_incarnation_;
  if (generation) last_generation_read_ = clock_.Steady();
  if (moved) store_changed_ = true;  // the cycle it starts reads the table
  return moved;
}

void Agent::NoteStoreError(const Error& error, std::string_view what) {
  store_errors_.Increment();
  store_problem_ =
      fmt::format("{}: {}", error.code == ErrorCode::kNotFound ? "store not found" : "store error",
                  error.message);
  // One key per read: a good generation read says nothing of the table's (which failed again
  // at every cycle and was logged each time, the network-fault review found).
  LogOnce(StoreLogKey(what), fmt::format("cannot read {}: {}; {}", what, error.message,
                                         table_ ? "keeping the last good table"
                                                : "no table yet, HAProxy is left as it is"));
}

// Found in review (long-running hygiene): the failure was logged, the recovery never was, so the
// last word on the store in the log was a failure for as long as the table did not change.
void Agent::NoteStoreRead(const std::string& key, std::string_view what) {
  const auto found = logged_.find(key);
  if (found == logged_.end() || found->second.empty()) return;
  found->second.clear();
  spdlog::info("{} can be read again", what);
}

// Not while a slot waits for its first passing check, at weight 0 or at its weight
// (unproven_slots_): its check passing is read at the next cycle, and the ramps the node report
// holds go on. A slot of unproven_ out of service (an override, a drain) waits for none: read
// every cycle, it made every cycle a full read for as long as that lasted (AgentFuzz).
bool Agent::FullReadCanWait(SteadyTime now) const {
  return synced_ && applied_generation_ == table_->generation && pending_.empty() &&
         unproven_slots_.empty() && held_.empty() && haproxy_identity_ && last_full_read_ &&
         now - *last_full_read_ < settings_.full_sync_interval;
}

namespace {

int DrainingCount(const SlotTable& table) {
  return static_cast<int>(std::count_if(table.slots.begin(), table.slots.end(),
                                        [](const Slot& s) { return s.draining(); }));
}

std::string PendingList(const std::vector<PendingSlot>& pending, std::size_t max_shown = 10) {
  std::vector<std::string> names;
  for (std::size_t i = 0; i < pending.size() && i < max_shown; ++i) {
    names.push_back(fmt::format("{} slot {}", pending[i].backend, pending[i].slot_id));
  }
  if (pending.size() > max_shown)
    names.push_back(fmt::format("{} more", pending.size() - max_shown));
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

CycleReport Agent::RunCycle(bool apply) {
  const WallTime start = clock_.Now();
  const SteadyTime steady_start = clock_.Steady();  // what intervals are timed on
  CycleReport report;
  // The draining slots' sessions, read (`show stat`) only while some slot drains and only for
  // the node report.
  std::optional<std::map<int, int>> sessions;
  auto finish = [&] {
    synced_ = report.synced;
    if (report.synced) {  // HAProxy matches: the same batch later (another reload) is news
      last_batch_.reset();
      refused_.clear();
      LogOnce("apply", "");
    }
    if (apply && table_) ReportNode(start, sessions, report.error.empty());
    // A full read and apply at N=1000 leaves a few hundred KB of freed buffers (replies,
    // commands) on the heap; give them back instead of keeping them resident until the next.
    if (report.full_read) ::malloc_trim(0);
    cycle_duration_.Observe(std::chrono::duration<double>(clock_.Steady() - steady_start).count());
    return report;
  };
  auto socket_error = [&](const Error& error, std::string_view what) {
    socket_errors_.Increment();
    socket_failed_ = true;
    report.error = fmt::format("HAProxy socket: cannot read HAProxy's {}: {}", what, error.message);
    LogOnce("socket", report.error + "; retrying next cycle");
    return finish();
  };
  // `show stat` of every backend, while a slot of the table in hand drains (for the report).
  auto stat_reads = [&] {
    std::vector<std::string> reads;
    if (DrainingCount(*table_) > 0 && node_reports_ != nullptr) {
      for (std::size_t i = 0; i < settings_.backends.size(); ++i) {
        reads.push_back(haproxy::ShowStatServersCommand(
            settings_.backends[i].config.name, i < backend_ids_.size() ? backend_ids_[i] : 0));
      }
    }
    return reads;
  };
  auto read_sessions = [&](std::span<const std::string> replies) {
    std::vector<Result<std::map<std::string, int>>> parsed;
    for (std::size_t i = 0; i < replies.size() && i < settings_.backends.size(); ++i) {
      parsed.push_back(haproxy::ParseStatSessions(replies[i], settings_.backends[i].config.name));
    }
    for (std::size_t i = 0; i < parsed.size(); ++i) {
      LogOnce("stat:" + settings_.backends[i].config.name,
              parsed[i]
                  ? std::string()
                  : fmt::format("cannot read the sessions of backend '{}': {}",
                                settings_.backends[i].config.name, parsed[i].error().message));
    }
    sessions = DrainingSessions(*table_, settings_, parsed);
    // A process replaced by a reload serves the connections it had, on draining slots too,
    // until they end; no socket reaches its sessions. Until it is gone, the draining slots are
    // reported without sessions: not drained on this node (the drain timeout still frees them).
    ForgetEndedProcesses();
    std::vector<std::string> seen;
    std::vector<std::string> unseen;
    for (const auto& process : replaced_processes_) {
      (process.seen_here ? seen : unseen).push_back(process.pid);
    }
    LogOnce("replaced", seen.empty()
                            ? std::string()
                            : fmt::format("HAProxy process {} was replaced by a reload and still "
                                          "runs: its sessions cannot be read, so no draining slot "
                                          "is reported drained until it ends",
                                          fmt::join(seen, ", ")));
    const auto seconds = [](std::chrono::milliseconds time) {
      return std::chrono::duration_cast<std::chrono::seconds>(time).count();
    };
    LogOnce("replaced-unseen",
            unseen.empty()
                ? std::string()
                : fmt::format("HAProxy process {} was replaced by a reload, and this host cannot "
                              "see whether it still runs (a TCP stats socket, or HAProxy in "
                              "another PID namespace): no draining slot is reported drained "
                              "until {} s after the reload (this agent's "
                              "HAPROXY_BACKEND_SERVER_DRAIN_TIMEOUT; {} s when it is 0)",
                              fmt::join(unseen, ", "), seconds(settings_.unseen_process_hold),
                              seconds(kUnseenProcessHold)));
    if (!replaced_processes_.empty()) sessions->clear();
  };

  // Reads that start with `show info`. A connection kept open still reaches the process that
  // accepted it: after a reload, the old one, which says `Stopping: 1` (and stays alive until
  // the connection closes). Then the reads go again on a new connection, to the new process.
  auto read_haproxy = [this](const std::vector<std::string>& reads) {
    auto replies = api_.Execute(reads);
    if (replies && haproxy::ShowInfoSaysStopping(replies->front())) {
      api_.Reset();
      replies = api_.Execute(reads);
    }
    return replies;
  };

  // HAProxy first, then the store. Steady state: HAProxy matched the table in hand at the end of
  // the last cycle and the same process still answers, so nothing can have undone what was
  // applied except a hand edit. One `show info` (a few hundred bytes) replaces dumping every
  // server of every backend; the full read still comes every full_sync_interval to repair hand
  // edits. And after a reload or a restart (another process answers, or the socket failed last
  // cycle), HAProxy serves nothing until the table is applied again: that must not wait for a
  // slow or unreachable store (DynamoDB's retries take up to half a minute), so the table in
  // hand is applied at once, and the store is read by a cycle that follows at once.
  // (A cycle that reads HAProxy in full anyway, the full sync due or an admission pending,
  // asks `show info` first all the same: the repair must not wait for the store there either.)
  bool haproxy_unchanged = false;
  bool repair_first = apply && table_ && socket_failed_;
  if (apply && table_ && !repair_first && haproxy_identity_) {
    const bool full_read_can_wait = FullReadCanWait(steady_start);
    std::vector<std::string> reads{std::string(haproxy::kShowInfoCommand)};
    const auto stats = full_read_can_wait ? stat_reads() : std::vector<std::string>();
    reads.insert(reads.end(), stats.begin(), stats.end());
    auto reply = read_haproxy(reads);
    if (!reply) return socket_error(reply.error(), "process info");
    info_reads_.Increment();
    LogOnce("socket", "");
    auto identity = haproxy::ParseShowInfo((*reply)[0]);
    if (identity && *identity == *haproxy_identity_) {
      identity_seen_at_ = steady_start;
      if (!stats.empty()) read_sessions(std::span(*reply).subspan(1));
      haproxy_unchanged = full_read_can_wait;
    } else {
      haproxy_restarts_.Increment();
      spdlog::info("HAProxy process changed (pid {} -> {}): reading its state",
                   haproxy_identity_->pid, identity ? identity->pid : "unknown");
      repair_first = true;
      same_repairs_ = 0;  // a reload is no tool undoing a repair (review of 5a896f7)
    }
  }
  if (repair_first) {
    table_is_new_ = false;
    table_read_ = false;
    store_changed_ = true;  // read by the next cycle
    report.store_deferred = true;
  } else {
    RefreshTable();
  }
  if (!table_) {
    report.error = store_problem_.empty() ? "no table yet" : store_problem_;
    return finish();
  }
  slots_draining_.Set(DrainingCount(*table_));
  if (haproxy_unchanged && !table_read_) {
    report.synced = true;
    last_sync_.Set(ToSeconds(clock_.Now()));
    return finish();
  }

  // HAProxy's actual state, all backends in one connection, with the identity of the process
  // that answered.
  std::vector<std::string> reads{std::string(haproxy::kShowInfoCommand)};
  for (const auto& backend : settings_.backends) {
    reads.push_back(haproxy::ShowServersStateCommand(backend.config.name));
  }
  const auto stats = stat_reads();
  reads.insert(reads.end(), stats.begin(), stats.end());
  auto replies = read_haproxy(reads);
  if (!replies) return socket_error(replies.error(), "state");
  // When that process answered: the store's read before may have taken long (DynamoDB's retries),
  // and the processes' times (Uptime_sec, the holds) run from their answer.
  const SteadyTime answered_at = clock_.Steady();
  socket_failed_ = false;
  LogOnce("socket", "");
  state_reads_.Increment();
  report.full_read = true;
  last_full_read_ = steady_start;
  auto identity = haproxy::ParseShowInfo((*replies)[0]);
  // A new process may have a new configuration: what was learnt of the last one's algorithms
  // is asked again (its first refusal tells).
  if (!identity || !haproxy_identity_ || !(*identity == *haproxy_identity_)) {
    static_weight_backends_.clear();
  }
  // A process started since (a reload with a state file restores check results) is looked at
  // for half-done stagings again, as at this agent's start.
  if (identity && haproxy_identity_ && !(*identity == *haproxy_identity_)) {
    stagings_looked_at_.clear();
  }
  if (identity && haproxy_identity_ && identity->pid != haproxy_identity_->pid) {
    ForgetEndedProcesses();
    std::erase_if(replaced_processes_, [&](const ReplacedProcess& process) {
      return process.pid == haproxy_identity_->pid;
    });
    // Whether this host sees HAProxy's processes is asked of the one that answers: a replaced
    // process this host cannot find may have ended, or may run where its pid means another.
    const bool seen_here = api_.ProcessMayRun(identity->pid);
    replaced_processes_.push_back(ReplacedProcess{
        .pid = haproxy_identity_->pid,
        .seen_here = seen_here,
        .until =
            seen_here ? std::nullopt : std::optional(answered_at + settings_.unseen_process_hold)});
    // Reloaded more than once since the last read (A -> B -> C), the process in between (B)
    // may serve draining slots while A has ended: held as at this agent's start. (Unseen, the
    // entry above holds for all that time already.)
    if (seen_here) HoldForAPredecessor(*identity, (*replies)[0], answered_at, identity_seen_at_);
  }
  if (identity && first_identity_) {
    first_identity_ = false;
    HoldForAPredecessor(*identity, (*replies)[0], answered_at, std::nullopt);
  }
  if (identity) {
    identity_seen_at_ = answered_at;
    haproxy_identity_ = std::move(*identity);
  } else {
    haproxy_identity_.reset();  // no identity: read in full every cycle
  }
  LogOnce("identity", identity ? std::string()
                               : fmt::format("cannot tell HAProxy reloads apart ({}): reading "
                                             "its whole state every cycle",
                                             identity.error().message));
  const std::size_t backends = settings_.backends.size();
  std::vector<Result<std::vector<haproxy::ServerState>>> servers;
  servers.reserve(backends);
  backend_ids_.assign(backends, 0);
  for (std::size_t i = 0; i < backends; ++i) {
    servers.push_back(haproxy::ParseServersState((*replies)[i + 1]));
    if (servers.back()) backend_ids_[i] = servers.back()->front().backend_id;
  }
  if (!stats.empty()) read_sessions(std::span(*replies).subspan(1 + backends));
  NoteStagingsLeftBefore(servers);

  // Decide (pure), then log, count and apply.
  CyclePlan plan = PlanCycle(*table_, settings_, servers, admitted_, static_weight_backends_,
                             unconfirmed_stagings_, unproven_, Inherited());
  for (const auto& [backend, problem] : plan.backend_problems) {
    LogOnce("backend:" + backend, problem);
  }
  LogOnce("list-size", plan.list_size_problem, spdlog::level::err);
  LogOnce("no-local-targets", plan.no_local_targets, spdlog::level::warn);
  missing_slots_.Set(plan.missing_slots);
  // Sessions were read before this cycle's commands: a slot put to drain by them took new
  // requests until its command landed. Its sessions are read again next cycle.
  if (sessions) {
    for (const auto& operation : plan.operations) sessions->erase(operation.slot_id);
  }
  report.operations = std::move(plan.operations);
  report.invalid_slots = std::move(plan.invalid_slots);
  report.differences = std::move(plan.differences);
  report.pending = std::move(plan.pending);
  report.held = std::move(plan.held);
  report.admissions = plan.admissions;

  if (table_is_new_) {
    // Logged and counted once per table read, not every cycle. Records the store's codec
    // refused (read as free slots, logged by the store) are counted here too.
    invalid_slots_.Increment(table_->invalid_records);
    for (const auto& invalid : report.invalid_slots) {
      logging::Log(spdlog::level::err, {{"slot", invalid.slot_id}, {"backend", invalid.backend}},
                   "slot {} skipped in backend '{}': {}; the slot is kept in maint",
                   invalid.slot_id, invalid.backend, invalid.reason);
      invalid_slots_.Increment();
    }
  }
  if (table_read_) weights_.Update(*table_);

  // Weights given after a passing check complete an admission, the slots held at their port
  // last cycle continue a move, and a slot waiting for its check last cycle may be given its
  // weight because the servers that served stopped (gating never empties a backend): none is
  // drift (review: the last was logged as "reload or hand edit?").
  std::set<std::pair<std::string_view, int>> held_last;  // one lookup per operation
  for (const auto& slot : held_) held_last.emplace(slot.backend, slot.slot_id);
  for (const auto& slot : pending_) held_last.emplace(slot.backend, slot.slot_id);
  const auto continuing = std::count_if(report.operations.begin(), report.operations.end(),
                                        [&](const haproxy::Operation& op) {
                                          return held_last.contains({op.backend, op.slot_id});
                                        });
  // Admissions are of slots waiting last cycle, already counted, unless none was known then
  // (a restarted agent finding slots staged).
  const int admissions_elsewhere = pending_.empty() ? report.admissions : 0;
  report.drift =
      report.operations.size() > static_cast<std::size_t>(admissions_elsewhere + continuing) &&
      applied_generation_ == table_->generation;
  if (!apply) return finish();
  // The batch as planned (ApplyAddressesFirst then orders it, and drops what follows a refused
  // address): the same again as last cycle is not news.
  const std::size_t batch = BatchHash(report.operations);
  if (report.full_read && !report.drift) same_repairs_ = 0;  // the repair held: not in a row
  if (report.drift) {
    drift_repairs_.Increment();
    same_repairs_ = last_repair_ == batch ? same_repairs_ + 1 : 1;
    last_repair_ = batch;
    // The same repair again (HAProxy refuses it, or something undoes it every time) is said
    // once; its commands' refusals say why. One undone after each full read (review: a tool
    // fighting hsdo, two lines every HAPROXY_FULL_SYNC_INTERVAL for as long as it lasts) is
    // said kRepairsSaid times in a row.
    spdlog::log(last_batch_ == batch || same_repairs_ > kRepairsSaid ? spdlog::level::debug
                                                                     : spdlog::level::warn,
                "HAProxy differs from the unchanged slot table (reload or hand edit?): "
                "repairing with {} commands{}",
                report.operations.size(),
                same_repairs_ == kRepairsSaid
                    ? fmt::format(" (the same repair {} times in a row: something undoes it; "
                                  "said again when the repair changes, counted in "
                                  "hsdo_agent_drift_repairs_total)",
                                  kRepairsSaid)
                    : std::string());
  }
  ApplyOperations(report, plan.admitted, batch);
  if (!report.error.empty()) return finish();
  admitted_ = std::move(plan.admitted);
  unproven_ = std::move(plan.unproven);
  unproven_slots_ = std::move(plan.unproven_slots);
  std::erase_if(unproven_, [&](const std::string& key) { return !admitted_.contains(key); });
  for (auto& key : plan.inherited) inherited_.try_emplace(std::move(key), clock_.Steady());
  std::erase_if(inherited_, [&](const auto& entry) {
    return !admitted_.contains(entry.first) || clock_.Steady() - entry.second >= kInheritedFor;
  });
  pending_ = report.pending;
  waiting_ = std::move(plan.waiting);
  gates_every_slot_ = plan.gates_every_slot;
  unvouched_ = std::move(plan.unvouched);
  held_ = report.held;
  pending_admissions_.Set(static_cast<double>(pending_.size()));
  admissions_.Increment(report.admissions);
  LogOnce("pending",
          pending_.empty() ? std::string()
                           : fmt::format("{} slots at weight 0 until this node's health check "
                                         "passes at their address: {}",
                                         pending_.size(), PendingList(pending_)),
          spdlog::level::info);
  held_slots_.Set(static_cast<double>(held_.size()));
  LogOnce("held",
          held_.empty()
              ? std::string()
              : fmt::format("{} slots keep their port until the ones moved to the backend's "
                            "port before pass this node's health check there (a quarter of the "
                            "serving ones at a time; a mistyped HAPROXY_BACKEND_SERVER_PORT "
                            "stops here): {}",
                            held_.size(), PendingList(held_)),
          spdlog::level::warn);
  if (report.command_errors > 0) {
    report.differences.push_back(fmt::format("HAProxy refused {} commands", report.command_errors));
  }
  if (plan.complete && report.command_errors == 0) {
    report.synced = true;
    if (applied_generation_ != table_->generation) applied_at_ = clock_.Now();
    applied_generation_ = table_->generation;
    last_sync_.Set(ToSeconds(clock_.Now()));
  }
  return finish();
}

// A server of a filled slot found ready at weight 0 may be a staging that an agent before this
// one (stopped mid-batch) left without its `health down`: at each backend's first read, those
// are noted, and sent their `health down` again before a check admits them. (A slot at weight 0
// in the table too, HAPROXY_BACKEND_SERVER_MIN_WEIGHT 0: its next weight would be unchecked.)
void Agent::NoteStagingsLeftBefore(
    std::span<const Result<std::vector<haproxy::ServerState>>> servers) {
  stagings_looked_at_.resize(servers.size(), false);
  for (std::size_t i = 0; i < servers.size(); ++i) {
    if (!servers[i] || stagings_looked_at_[i]) continue;
    stagings_looked_at_[i] = true;
    const auto& backend = settings_.backends[i].config;
    std::unordered_map<std::string_view, const haproxy::ServerState*> by_name;
    for (const auto& server : *servers[i]) by_name.emplace(server.name, &server);
    for (const Slot& slot : table_->slots) {
      if (!slot.enabled()) continue;
      const auto found = by_name.find(haproxy::SlotServerName(backend, slot.id));
      if (found == by_name.end()) continue;
      const haproxy::ServerState& server = *found->second;
      if (server.admin == haproxy::AdminState::kReady && server.weight == 0 && server.has_check()) {
        unconfirmed_stagings_.insert(haproxy::StagingKey(backend.name, server.name));
      }
    }
  }
}

void Agent::ApplyOperations(CycleReport& report, haproxy::AdmittedSet& admitted,
                            std::size_t batch) {
  if (report.operations.empty()) return;
  auto applied = haproxy::ApplyAddressesFirst(api_, report.operations);
  if (!applied) {
    socket_errors_.Increment();
    socket_failed_ = true;
    // Which commands ran is unknown: a staged server may be out of maint, UP on the last check
    // result of its former address, without the `health down` that makes a check decide.
    for (const auto& operation : report.operations) {
      if (operation.kind == CommandKind::kHealth) {
        unconfirmed_stagings_.insert(haproxy::StagingKey(operation.backend, operation.server));
      }
    }
    report.error = fmt::format("HAProxy socket: cannot apply {} commands: {}",
                               report.operations.size(), applied.error().message);
    // Each cause once (a socket that answers reads and fails the writes fails every cycle).
    LogOnce("apply", fmt::format("HAProxy socket: cannot apply commands: {}; retrying next cycle",
                                 applied.error().message));
    return;
  }
  LogOnce("apply", "");
  report.operations = std::move(applied->operations);
  // Forgotten once a batch that went through sent its `health down` again, or gave the server
  // a weight (admitted without gating: nothing else served).
  for (const auto& operation : report.operations) {
    if (operation.kind == CommandKind::kHealth ||
        (operation.kind == CommandKind::kWeight && operation.weight > 0)) {
      unconfirmed_stagings_.erase(haproxy::StagingKey(operation.backend, operation.server));
    }
  }
  const auto& results = applied->replies;
  const bool same_batch = last_batch_ == batch;
  std::set<std::string> refused;  // what HAProxy refused this time, each said once while it lasts
  std::set<std::string> took_address;  // backends where HAProxy took an address
  std::set<std::string> no_address;    // backends whose servers take none (`init-addr none`)
  // Counted kind by kind after the loop: a labelled series is a lookup in its family.
  std::map<CommandKind, int> sent;
  for (std::size_t i = 0; i < report.operations.size(); ++i) {
    const auto& operation = report.operations[i];
    ++sent[operation.kind];
    auto error = haproxy::ReplyError(operation.kind, results[i]);
    if (!error && operation.kind == CommandKind::kAddr) took_address.insert(operation.backend);
    if (error) {
      ++report.command_errors;
      command_errors_family_.Add({{"kind", std::string(haproxy::ToString(operation.kind))}})
          .Increment();
      std::string refusal = fmt::format(
          "HAProxy refused '{}': {}{}", haproxy::Render(operation), *error,
          haproxy::IsPermissionDenied(results[i])
              ? " (HAPROXY_SOCKET_PATH is no longer at level admin: a reload with another "
                "`stats socket` line?)"
              : "");
      if (!refused_.contains(refusal)) spdlog::warn("{}", refusal);
      refused.insert(std::move(refusal));
      if (operation.kind == CommandKind::kAddr) {
        // Put in maint instead of served (ApplyAddressesFirst), not waiting for a check, and
        // gated again once HAProxy takes the address.
        const auto index = static_cast<std::size_t>(operation.slot_id - 1);
        if (operation.slot_id >= 1 && index < table_->slots.size()) {
          admitted.erase(haproxy::AdmittedKey(operation.backend, operation.server,
                                              operation.address, operation.port,
                                              table_->slots[index].target.name));
        }
        std::erase(report.pending,
                   PendingSlot{.backend = operation.backend, .slot_id = operation.slot_id});
        if (results[i].find("address family") != std::string::npos) {
          no_address.insert(operation.backend);
        }
      }
      if (operation.kind == CommandKind::kWeight &&
          results[i].find(kStaticAlgorithmReply) != std::string::npos &&
          static_weight_backends_.insert(operation.backend).second) {
        spdlog::warn(
            "backend '{}' uses a static load-balancing algorithm (static-rr, first, or a hash "
            "without `hash-type consistent`): HAProxy takes no weight there but 0 and the "
            "configured one, so its slots get the configured weight, without ramp-up",
            operation.backend);
      }
    }
  }
  for (const auto& [kind, count] : sent) {
    commands_family_.Add({{"kind", std::string(haproxy::ToString(kind))}}).Increment(count);
  }
  // Said once per backend while it lasts, and again if it comes back.
  for (const auto& backend : took_address) {
    if (!no_address.contains(backend)) LogOnce("init-addr:" + backend, "");
  }
  for (const auto& backend : no_address) {
    LogOnce("init-addr:" + backend,
            fmt::format("backend '{}': HAProxy takes no address for its servers (a "
                        "`server-template` with `init-addr none`, or with `resolvers` that "
                        "failed to resolve its placeholder?): its slots stay in maint; use "
                        "`init-addr last,<placeholder IP>` without `resolvers`, as the README "
                        "shows",
                        backend),
            spdlog::level::err);
  }
  refused_ = std::move(refused);
  last_batch_ = batch;
  // The same batch as the last one applied: HAProxy refused it, or something undid it.
  logging::Log(same_batch || (report.drift && same_repairs_ > kRepairsSaid) ? spdlog::level::debug
                                                                            : spdlog::level::info,
               {{"generation", table_->generation}},
               "applied {} commands to {} backends ({} errors), table generation {}",
               report.operations.size(), settings_.backends.size(), report.command_errors,
               table_->generation);
}

// An agent that starts just after a reload (restarted with it) never saw the process replaced,
// which may still serve draining slots; nor does one that sees a new process whose predecessor
// was not the one it knew (A -> B -> C between two of its reads: B). A process that has run for
// less than AgentSettings::unseen_process_hold (`Uptime_sec`, on HAProxy's own clock) may have
// replaced some, held until it has run that long at most. Where this host can read HAProxy's
// command line, the processes it names after `-sf`/`-st` are held, each until it ends; where it
// cannot, the one it may have replaced, for all that time: at the agent's start (`last_seen`
// none; a first start looks the same there: drains then wait for their timeout a little
// longer), or when the new process started well after the last answer of the one the agent
// knew (`last_seen`: room for another in between; at one read a second, a single reload leaves
// none, and A is held as it is).
void Agent::HoldForAPredecessor(const haproxy::ProcessIdentity& identity,
                                std::string_view show_info, SteadyTime now,
                                std::optional<SteadyTime> last_seen) {
  // Uptime_sec is whole seconds: a start within this of the last answer leaves no room.
  constexpr std::chrono::seconds kNoRoom{2};
  const auto uptime = haproxy::ShowInfoUptime(show_info);
  if (!uptime || *uptime >= settings_.unseen_process_hold) return;
  const SteadyTime until = now + (settings_.unseen_process_hold - *uptime);
  const auto replaced = api_.ProcessMayRun(identity.pid)
                            ? api_.ReplacedAtStart(identity.pid)
                            : std::optional<std::vector<std::string>>();
  if (!replaced && last_seen && now - *last_seen <= *uptime + kNoRoom) return;
  if (replaced) {
    for (auto pid : *replaced) {
      if (std::any_of(replaced_processes_.begin(), replaced_processes_.end(),
                      [&](const ReplacedProcess& known) { return known.pid == pid; })) {
        continue;
      }
      replaced_processes_.push_back(
          ReplacedProcess{.pid = std::move(pid), .seen_here = true, .until = until});
    }
    return;
  }
  replaced_processes_.push_back(
      ReplacedProcess{.pid = fmt::format("(the one {} may have replaced)", identity.pid),
                      .seen_here = false,
                      .until = until});
}

haproxy::AdmittedSet Agent::Inherited() const {
  haproxy::AdmittedSet keys;
  const SteadyTime now = clock_.Steady();
  for (const auto& [key, since] : inherited_) {
    if (now - since < kInheritedFor) keys.insert(key);
  }
  return keys;
}

void Agent::ForgetEndedProcesses() {
  const SteadyTime now = clock_.Steady();
  std::erase_if(replaced_processes_, [&](const ReplacedProcess& process) {
    return (process.until && now >= *process.until) ||
           (process.seen_here && !api_.ProcessMayRun(process.pid));
  });
}

void Agent::ReportNode(WallTime now, const std::optional<std::map<int, int>>& draining_sessions,
                       bool applied) {
  if (node_reports_ == nullptr) return;
  NodeReport next{.name = settings_.node_name,
                  .applied_generation = applied_generation_.value_or(0),
                  .applied_at = applied_at_,
                  .reported_at = now,
                  .interval = settings_.interval,
                  .instance = instance_,
                  .version = std::string(kVersion)};
  // Sessions not read this cycle (HAProxy's socket failed): the report goes all the same, without
  // the draining slots, which then count as not drained on this node. Without a report the node
  // would look dead after 3 x INTERVAL, and the others' word alone would free the slots under
  // the sessions its HAProxy may still serve.
  if (draining_sessions) next.draining_sessions = *draining_sessions;
  // What waits for its check, as of this cycle's read of HAProxy: after a cycle that could not
  // read or apply (a failing socket) the last list may name slots given to other targets since
  // (review: a stuck node held the ramps of new targets), so it says nothing.
  // Said by every agent of this version (false when it cannot vouch): such a node counts among
  // those the removal guard asks, also in a cycle that could not apply (review of ef8f711: nodes
  // whose socket failed dropped out of the count, and a minority could prove slots).
  next.gates_every_slot = applied && gates_every_slot_;
  if (applied) {
    next.pending_admission = waiting_;
    if (gates_every_slot_) next.unvouched = unvouched_;
  }
  if (!NodeReportDue(last_node_report_, next, now, settings_.interval)) return;
  if (node_report_retry_at_ && clock_.Steady() < *node_report_retry_at_) return;
  // After the apply, never before it: a slow store delays the next cycle, not this one.
  // A report not stored is logged and counted by the sink, which knows the store and why
  // (NodeRecordLog); here it is retried at the next cycle, or after kMissingNodeTableRetry
  // when the store has nowhere to keep it (a request that fails every cycle costs the agent
  // and the store for nothing; the orchestrator then frees drains at their timeout).
  // An SQLite store keeps the reports in the file the agent watches: written unwatched, a
  // report wakes none of the agent's threads.
  Result<void> stored = Ok();
  store_.Unwatched([&] { stored = node_reports_->Report(next); });
  if (!stored) {
    if (stored.error().code == ErrorCode::kNotFound) {
      node_report_retry_at_ = clock_.Steady() + kMissingNodeTableRetry;
    }
    return;
  }
  node_report_retry_at_.reset();
  node_reports_stored_.Increment();
  last_node_report_ = std::move(next);
}

std::string NotReadyReason(const CycleReport& report) {
  if (report.synced) return {};
  if (!report.error.empty()) return report.error;
  if (report.differences.empty()) return "HAProxy differs from the slot table (dry run)";
  return fmt::format("HAProxy differs from the slot table: {}",
                     fmt::join(report.differences, "; "));
}

int RunAgent(const Config& config, SlotStore& store, haproxy::RuntimeApi& api,
             MetricsRegistry& registry, Wakeup& wakeup, const Clock& clock, bool dry_run,
             Readiness* readiness, NodeReportSink* node_reports) {
  const auto set_ready = [readiness](std::string reason) {
    if (readiness != nullptr) readiness->Set(std::move(reason));
  };
  Agent agent(AgentSettings::FromConfig(config), store, api, registry, clock,
              dry_run ? nullptr : node_reports);
  const auto& settings = agent.settings();
  std::vector<std::string> names;
  for (const auto& backend : settings.backends) names.push_back(backend.config.name);
  spdlog::info("agent: HAProxy at {}, backends [{}], {} slots, interval {} ms{}",
               config.haproxy_socket_path, fmt::join(names, ", "), settings.list_size,
               settings.interval.count(), dry_run ? " (dry run)" : "");
  if (!settings.backends.empty() && settings.backends.front().own_port) {
    std::vector<std::string> ports;
    for (const auto& backend : settings.backends) {
      ports.push_back(fmt::format("{} {}", backend.config.name, backend.config.port));
    }
    spdlog::info(
        "agent: the backends listen on different ports ({}): each serves every target at its "
        "own, whatever port the source gives (Consul's service port, a file's `port:`)",
        fmt::join(ports, ", "));
  }

  bool waiting_logged = false;
  for (;;) {
    auto check = agent.CheckBackends();
    if (check) {
      spdlog::info("HAProxy backends checked: {} backends with {} slots each", names.size(),
                   settings.list_size);
      break;
    }
    if (check.error().code == ErrorCode::kNotFound && !dry_run) {
      // HAProxy's configuration, not hsdo's, and HAProxy may be reloaded with another one at
      // any time (configuration management at boot, a staged roll-out). An agent that exited
      // here would stay down (its unit does not restart exit 2) and repair nothing after the
      // next reload; it goes on as after such a reload: it applies what it can, and logs and
      // shows on /readyz what differs, every cycle.
      spdlog::error("{}: going on with what HAProxy has", check.error().message);
      break;
    }
    if (check.error().code != ErrorCode::kUnavailable) {
      spdlog::error("{}", check.error().message);
      return 2;
    }
    if (dry_run) {
      spdlog::error("HAProxy's runtime API is not reachable: {}", check.error().message);
      return 1;
    }
    if (!waiting_logged) {
      spdlog::info("waiting for HAProxy's runtime API: {}", check.error().message);
      waiting_logged = true;
    }
    set_ready("HAProxy socket: not answering: " + check.error().message);
    if (!wakeup.WaitFor(settings.interval)) return 0;
  }

  if (dry_run) {
    const auto report = agent.RunCycle(/*apply=*/false);
    if (!report.error.empty()) {
      spdlog::error("dry run: {}", report.error);
      return 1;
    }
    for (const auto& operation : report.operations) {
      std::printf("%s\n", haproxy::Render(operation).c_str());
    }
    std::fflush(stdout);
    spdlog::info("dry run: {} commands would be sent, {} invalid slots skipped",
                 report.operations.size(), report.invalid_slots.size());
    return 0;
  }
  // A store that can watch wakes the loop as soon as the table changes; the poll stays.
  // Who woke the loop: a store wake-up alone runs a cycle only if the generation moved.
  // The store's watcher may call back until the store is destroyed, after this function
  // returned: what the callback touches is shared with it and disarmed on the way out.
  struct StoreWatch {
    std::mutex mutex;
    bool armed = true;
    std::atomic<bool> woke{false};
  };
  struct DisarmOnReturn {
    StoreWatch& watch;
    ~DisarmOnReturn() {
      std::lock_guard lock(watch.mutex);
      watch.armed = false;
    }
  };
  auto store_watch = std::make_shared<StoreWatch>();
  const DisarmOnReturn disarm{*store_watch};
  std::atomic<bool>& store_woke = store_watch->woke;
  std::atomic<bool> socket_woke{false};
  if (store.Watch([store_watch, &agent, &wakeup, node_reports] {
        std::lock_guard lock(store_watch->mutex);
        if (!store_watch->armed) return;
        // This node's own report (an SQLite store keeps them in the file it watches, one every
        // 2 x INTERVAL) changes no slot: no wake-up, no generation read.
        if (node_reports != nullptr && !node_reports->OthersMayHaveWritten()) return;
        agent.StoreChanged();
        store_watch->woke = true;
        wakeup.Notify();
      })) {
    spdlog::info("agent: watching the store");
  } else {
    spdlog::info("agent: the store cannot be watched, polling it every INTERVAL");
  }
  // A reload binds a new unix socket and renames it over the old one: waking on that repairs
  // the new process at once instead of at the next INTERVAL. (A TCP socket, or a reload that
  // passes the listening socket on, is still caught by the `show info` of every cycle.)
  std::unique_ptr<FileWatcher> socket_watcher;
  if (auto endpoint = haproxy::SocketEndpoint::Parse(config.haproxy_socket_path);
      endpoint && endpoint->kind == haproxy::SocketEndpoint::Kind::kUnix) {
    auto watcher = FileWatcher::ForPath(endpoint->path, {}, [&wakeup, &socket_woke] {
      socket_woke = true;
      wakeup.Notify();
    });
    if (watcher) {
      socket_watcher = std::move(*watcher);
    } else {
      spdlog::warn("cannot watch HAProxy's socket, reloads are noticed at the next cycle: {}",
                   watcher.error().message);
    }
  }
  // Cycles start every INTERVAL (not INTERVAL after the previous one ended), so a change seen
  // by polling waits at most one INTERVAL; a wake-up in between runs an extra cycle.
  // A cycle that failed (HAProxy's socket refused: a reload in progress) is retried soon, then
  // less and less often, up to INTERVAL.
  // On the steady clock: a step of the wall clock (NTP's first correction at boot) neither
  // pauses the loop for the size of a step back nor runs it early.
  constexpr std::chrono::milliseconds kFirstRetry{10};
  std::chrono::milliseconds retry{0};
  SteadyTime next_cycle = clock.Steady();
  for (;;) {
    const SteadyTime start = clock.Steady();
    // (A timed wake-up may come a hair early: that is still this cycle.)
    if (start + std::chrono::milliseconds(1) >= next_cycle) next_cycle += settings.interval;
    if (next_cycle <= start) next_cycle = start + settings.interval;  // fell behind
    const auto report = agent.RunCycle(/*apply=*/true);
    set_ready(NotReadyReason(report));
    const bool failed = !report.error.empty();
    retry = failed ? std::min(std::max(2 * retry, kFirstRetry), settings.interval)
                   : std::chrono::milliseconds(0);
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(
        std::max(next_cycle - clock.Steady(), SteadyTime::duration::zero()));
    if (failed) wait = std::min(wait, retry);
    if (!failed && report.store_deferred) wait = std::chrono::milliseconds(0);
    const SteadyTime due = clock.Steady() + wait;
    bool stopped = false;
    // Each write to an SQLite store but this node's own reports (another node's report, the
    // leader lease) wakes the loop: such a wake-up costs one generation read, not a cycle,
    // unless the generation moved.
    for (;;) {
      if (!wakeup.WaitFor(std::chrono::ceil<std::chrono::milliseconds>(
              std::max(due - clock.Steady(), SteadyTime::duration::zero())))) {
        stopped = true;
        break;
      }
      const bool by_socket = socket_woke.exchange(false);
      // A new socket: a connection kept open reaches the old process.
      if (by_socket) api.Reset();
      const bool by_store = store_woke.exchange(false);
      // (A timed wake-up may come a hair early: that is still due.)
      const bool timer = clock.Steady() + std::chrono::milliseconds(1) >= due;
      if (timer || by_socket || !by_store || agent.StoreMoved()) break;
    }
    if (stopped) break;
  }
  spdlog::info("agent stopped");
  return 0;
}

}  // namespace hsdo::agent
