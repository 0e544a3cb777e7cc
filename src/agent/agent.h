// The agent (the seed's "HSDO Client", `hsdo --client`): one beside each HAProxy. Every INTERVAL
// (and at once when the store or HAProxy's socket signals a change) it reads the store's
// generation (and the slot table when it moved, and at least once a minute); a store whose watch
// sees every write (SQLite) is read only when it signals one, after a failed read, and every
// HAPROXY_FULL_SYNC_INTERVAL as a fallback. When the table
// moved, HAProxy changed process (a reload or restart, seen in `show info`), the last cycle
// did not finish, or HAPROXY_FULL_SYNC_INTERVAL passed, it reads HAProxy's actual state with
// `show servers state` and sends the minimal diff in one connection. Otherwise the cycle is
// one `show info`: in steady state the agent costs HAProxy next to nothing. While a slot waits for
// its first passing health check (admission gating) the state is read every cycle; while a slot
// drains, its sessions are read too (`show stat`) for the node report.
// Level-triggered: the diff is against HAProxy's real state, so a reload is repaired at once
// and a hand edit at the next full read.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "agent/cycle_plan.h"
#include "common/clock.h"
#include "common/readiness.h"
#include "common/result.h"
#include "common/wakeup.h"
#include "config/config.h"
#include "core/slot_table.h"
#include "haproxy/az_split.h"
#include "haproxy/reconciler.h"
#include "haproxy/runtime_api.h"
#include "haproxy/servers_state.h"
#include "metrics/metrics_registry.h"
#include "metrics/slot_metrics.h"
#include "store/node_report.h"
#include "store/slot_store.h"

namespace hsdo::agent {

struct CycleReport {
  std::vector<haproxy::Operation> operations;  // the diff (sent unless the cycle was a dry run)
  std::vector<haproxy::InvalidSlot> invalid_slots;
  std::vector<PendingSlot> pending;  // admissions waiting for a passing check, at weight 0
  std::vector<PendingSlot> held;     // serving at the old address meanwhile (CyclePlan::held)
  int admissions = 0;                // slots given their weight after a passing check
  int command_errors = 0;
  bool drift = false;      // HAProxy differed from a table already applied
  bool synced = false;     // HAProxy matches the table at the end of the cycle
  bool full_read = false;  // HAProxy's state was read (else only `show info`)
  // A reloaded or restarted HAProxy got the table in hand before the store was read: the next
  // cycle, which reads it, is due at once.
  bool store_deferred = false;
  std::string error;  // why the cycle stopped early (no table yet, socket error)
  // Why HAProxy still differs from the table after a complete cycle (missing servers, a
  // backend that cannot be read, refused commands), one short phrase each.
  std::vector<std::string> differences;
};

// What /readyz says after a cycle: "" when HAProxy matched the table, else one line saying why
// not ("no table yet: ...", "store not found: ...", "HAProxy socket: ...", "HAProxy differs
// from the slot table: ...").
std::string NotReadyReason(const CycleReport& report);

class Agent {
 public:
  // How long a report waits after the store said it has nowhere to keep it (kNotFound).
  static constexpr std::chrono::seconds kMissingNodeTableRetry{60};
  // How long a table at an earlier generation than the one applied (the store went back in
  // time: a backup restored) is held off, unless the generation moves again first: two of the
  // leader's minutely checks, which write the table it holds back (Orchestrator::VerifyStore).
  static constexpr std::chrono::seconds kWentBackHold{150};

  // `node_reports`, when given, receives this node's report (NodeReport) after the apply, at
  // most once per INTERVAL when it changed and at least every 2 x INTERVAL.
  Agent(AgentSettings settings, SlotStore& store, haproxy::RuntimeApi& api,
        MetricsRegistry& registry, const Clock& clock, NodeReportSink* node_reports = nullptr);

  // Checks that every managed backend exists and has servers <base>1..<base>N (N = list size)
  // with ids 1..N. kUnavailable: the socket did not answer; kNotFound: HAProxy lacks a backend
  // or servers, and the message says exactly what is missing; kInvalidArgument: the socket is
  // below level admin, or hsdo's own backend settings are invalid.
  Result<void> CheckBackends();

  // One cycle. With `apply` false nothing is written to HAProxy (dry run).
  CycleReport RunCycle(bool apply);

  // After a wake-up from the store's watcher between cycles: true when the store's generation
  // moved (or cannot be read, or there is no table yet, or the store was made again), so a
  // cycle is due now. A write that changed no slot (this node's own report in the same SQLite
  // file, another node's) leaves the generation as it is and needs no cycle: one generation
  // read instead of a whole cycle.
  bool StoreMoved();

  // Called by the store's watcher (from its thread) when the store may have changed. With a
  // store whose watch sees every write (SlotStore::WatchSeesEveryWrite, SQLite) a cycle reads
  // the generation only after such a call, after a failed read, or when the last read is
  // full_sync_interval old: in steady state the store is not touched.
  void StoreChanged() { store_changed_ = true; }

  const AgentSettings& settings() const { return settings_; }

 private:
  void RefreshTable();
  void KeepWhatInvalidRecordsHeld(SlotTable& next);
  void KeepWhatAnUnchangedGenerationFrees(SlotTable& next);
  bool GenerationReadCanWait();
  void NoteStoreError(const Error& error, std::string_view what);
  bool FullReadCanWait(SteadyTime now) const;
  // A read of the store (`what`) that went through: said once after NoteStoreError logged it.
  void NoteStoreRead(const std::string& key, std::string_view what);
  void LogOnce(const std::string& key, const std::string& message,
               spdlog::level::level_enum level = spdlog::level::warn);
  // At each backend's first read, notes the stagings an agent before this one may have left
  // half done (unconfirmed_stagings_).
  void NoteStagingsLeftBefore(std::span<const Result<std::vector<haproxy::ServerState>>> servers);
  // Sends the report's operations (ApplyAddressesFirst) and counts and logs HAProxy's replies;
  // the report then holds what was sent. A slot whose address HAProxy refused leaves `admitted`.
  // `batch`: BatchHash of report.operations as planned.
  void ApplyOperations(CycleReport& report, haproxy::AdmittedSet& admitted, std::size_t batch);
  // `applied`: this cycle read and applied HAProxy's state (else the report lists no slots as
  // waiting for their check: it does not know).
  void ReportNode(WallTime now, const std::optional<std::map<int, int>>& draining_sessions,
                  bool applied);
  // Drops the replaced processes that ended, or that are no longer taken to run.
  void ForgetEndedProcesses();
  // The keys of inherited_ still within kInheritedFor (ReconcileOptions::inherited).
  haproxy::AdmittedSet Inherited() const;
  void HoldForAPredecessor(const haproxy::ProcessIdentity& identity, std::string_view show_info,
                           SteadyTime now, std::optional<SteadyTime> last_seen);

  const std::string instance_;  // this process's id in its node reports (NodeReport::instance)
  AgentSettings settings_;
  SlotStore& store_;
  haproxy::RuntimeApi& api_;
  const Clock& clock_;
  NodeReportSink* node_reports_;

  std::optional<SlotTable> table_;       // the last good table
  std::uint64_t table_incarnation_ = 0;  // the store's Incarnation() when table_ was read
  bool table_is_new_ = false;            // read in this cycle with another generation
  // A generation earlier than table_'s found in the store, held off since (kWentBackHold).
  struct WentBack {
    std::uint64_t generation = 0;
    SteadyTime since{};
  };
  std::optional<WentBack> went_back_;
  // Whether `read` is held off as a table that went back (true: not applied, keep table_).
  bool HoldOffWentBack(const SlotTable& read, bool other_table, SteadyTime now);
  std::optional<SteadyTime> last_table_read_;
  std::atomic<bool> store_changed_{true};            // StoreChanged() since the last read
  std::optional<SteadyTime> last_generation_read_;   // the last successful one
  bool table_read_ = false;                          // the table was read in this cycle
  std::optional<std::uint64_t> applied_generation_;  // last table HAProxy fully matched
  WallTime applied_at_{};                            // when it first matched it
  bool synced_ = false;         // the last cycle ended with HAProxy matching the table
  bool socket_failed_ = false;  // the last cycle could not read or write HAProxy's socket
  std::optional<haproxy::ProcessIdentity> haproxy_identity_;  // who answered the last full read
  // HAProxy processes replaced by a reload that may still serve their connections: while one
  // runs, no draining slot is reported drained.
  struct ReplacedProcess {
    std::string pid;
    // This host sees HAProxy's processes (RuntimeApi::ProcessMayRun found the process that
    // replaced it): the process is gone once ProcessMayRun says so. Otherwise (a TCP socket,
    // HAProxy in another PID namespace) its end cannot be seen, and it is taken to run until
    // `until` (AgentSettings::unseen_process_hold after the reload).
    bool seen_here = false;
    // Held until then at most (a process seen here only when found at the agent's start, which
    // may be another HAProxy's than the one on HAPROXY_SOCKET_PATH).
    std::optional<SteadyTime> until;
  };
  std::vector<ReplacedProcess> replaced_processes_;
  // Each backend's id in the process that answered the last full read (`be_id`; 0: unknown):
  // `show stat` by name may find a frontend of that name (haproxy::ShowStatServersCommand).
  std::vector<int> backend_ids_;
  bool first_identity_ = true;     // no process identity was read yet (HoldForAPredecessor)
  SteadyTime identity_seen_at_{};  // when haproxy_identity_'s process last answered
  std::optional<SteadyTime> last_full_read_;
  std::map<std::string, std::string> logged_;  // LogOnce: key -> last message
  // What the last apply sent (its BatchHash) and what HAProxy refused of it, until HAProxy
  // matches the table: the same batch again, or the same refusal, is not logged again (a
  // refusal repeats every cycle).
  std::optional<std::size_t> last_batch_;
  // The last repair of an unchanged table, and how many in a row were the same: one undone again
  // and again (another tool fighting hsdo) is said a few times, then only counted
  // (hsdo_agent_drift_repairs_total) until the repair changes.
  std::optional<std::size_t> last_repair_;
  int same_repairs_ = 0;
  std::set<std::string> refused_;
  std::set<int> kept_invalid_;     // slots whose invalid record keeps what they held (logged)
  std::set<int> kept_unchanged_;   // slots freed at an unchanged generation, kept (logged)
  haproxy::AdmittedSet admitted_;  // where slots were seen in service (admission gating)
  haproxy::AdmittedSet unproven_;  // of those, given a weight before a check passed there
  std::vector<PendingSlot> unproven_slots_;  // CyclePlan::unproven_slots of the last full read
  // Of those, the ones put in service on a passing check result they did not earn (haproxy::
  // BackendDiff::inherited), and when: not vouched for during kInheritedFor.
  std::unordered_map<std::string, SteadyTime> inherited_;
  static constexpr std::chrono::seconds kInheritedFor{60};  // > `fall` x `inter` (3 x 2 s)
  // Backends whose HAProxy refused a weight for their static algorithm (ReconcileOptions).
  std::set<std::string> static_weight_backends_;
  // Staged admissions whose `health down` was in a batch cut part-way, or found at the first
  // full read (ReconcileOptions); each kept until a batch that sends its `health down` again,
  // or gives it a weight, goes through.
  haproxy::StagingSet unconfirmed_stagings_;
  std::vector<bool> stagings_looked_at_;  // by backend: read since this agent or HAProxy started
  std::vector<PendingSlot> pending_;      // admissions waiting at the last full read
  std::set<int> waiting_;                 // CyclePlan::waiting of the last full read
  bool gates_every_slot_ = false;         // CyclePlan::gates_every_slot of the last full read
  std::set<int> unvouched_;               // CyclePlan::unvouched of the last full read
  std::vector<PendingSlot> held_;         // re-addresses held at the last full read
  std::optional<NodeReport> last_node_report_;  // the last one written
  // While the store has no place for node reports (kNotFound: a DynamoDB table created before
  // node reports, without its -nodes table), reports are tried again only from then on.
  std::optional<SteadyTime> node_report_retry_at_;
  // Why no table could be adopted at the last read (empty once one was): the store is missing
  // or failing, or holds a table no orchestrator has written. Reported while there is no
  // table.
  std::string store_problem_;

  SlotWeightMetrics weights_;  // hsdo_server_weight
  prometheus::Family<prometheus::Counter>& commands_family_;
  prometheus::Family<prometheus::Counter>& command_errors_family_;
  prometheus::Family<prometheus::Counter>& store_reads_family_;
  prometheus::Family<prometheus::Counter>& haproxy_reads_family_;
  prometheus::Counter& generation_reads_;
  prometheus::Counter& table_reads_;
  prometheus::Counter& info_reads_;
  prometheus::Counter& state_reads_;
  prometheus::Counter& haproxy_restarts_;
  prometheus::Counter& drift_repairs_;
  prometheus::Counter& invalid_slots_;
  prometheus::Counter& store_errors_;
  prometheus::Counter& socket_errors_;
  prometheus::Histogram& cycle_duration_;
  prometheus::Gauge& last_sync_;
  prometheus::Gauge& missing_slots_;
  prometheus::Gauge& slots_draining_;
  prometheus::Gauge& pending_admissions_;
  prometheus::Gauge& held_slots_;
  prometheus::Counter& admissions_;
  prometheus::Counter& node_reports_stored_;
};

// The agent's main loop, called by `hsdo --client`. Waits for HAProxy's socket, checks the
// backends (returns 2 when HAProxy is misconfigured), then runs a cycle every INTERVAL, and at
// once when the store signals a write or HAProxy's unix socket is re-created (a reload), until
// `wakeup` asks to stop (returns 0). With `dry_run` it runs one cycle, prints the commands it
// would send on stdout, sends none and returns 0 (1 when it could not read the store or HAProxy).
// `readiness`, when given, gets NotReadyReason() after every cycle (for /readyz);
// `node_reports`, when given, receives this node's reports, named config.node_name (the caller
// resolves an empty HSDO_NODE_NAME to the host name).
int RunAgent(const Config& config, SlotStore& store, haproxy::RuntimeApi& api,
             MetricsRegistry& registry, Wakeup& wakeup, const Clock& clock, bool dry_run,
             Readiness* readiness = nullptr, NodeReportSink* node_reports = nullptr);

}  // namespace hsdo::agent
