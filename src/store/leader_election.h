// LeaderElection: any number of `hsdo --server` share one store; one leads (writes the slot
// table), the others stand by and take over when the leader stops renewing its lease.
//
// The lease is a record in the store (DynamoDB: attributes of item 1; SQLite: a lease row)
// written only with compare-and-set on its version, as Amazon's DynamoDB Lock Client does:
//  - the leader renews it every third of LEADER_LEASE_SECONDS with a new random version;
//  - a standby takes over only after it has seen the same version for a whole lease period
//    on its own clock, so hosts' clocks never need to agree; taking over bumps the epoch;
//  - fencing: every table write is conditioned, inside the store's own transaction, on the
//    lease still holding this process's name and epoch (SlotStore::SetFence). A leader paused
//    past its lease (GC, SIGSTOP, a partition) wakes up fenced out: none of its writes lands.
// A leader that cannot renew for a whole lease period (store unreachable) stands down too.
// A leader that stops cleanly releases its lease (holder ""): a standby, or the same
// orchestrator restarted, takes it at its next step instead of after a whole lease.
// A lease that vanishes (the store wiped or rebuilt) is left to its holder for a whole lease:
// the holder has the table to write back.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "common/clock.h"
#include "store/slot_store.h"

namespace hsdo {

class LeaderElection {
 public:
  LeaderElection(SlotStore& store, std::string me, std::chrono::milliseconds lease,
                 const Clock& clock, prometheus::Registry& registry);

  // One step: read the lease, renew it, or take it over when it expired. Call it every
  // cycle (and at least every third of the lease). Returns whether this process leads now.
  bool Tick();

  // At a clean stop: a leader writes its lease as released (holder "", over the version it
  // wrote), so that a standby takes over at its next Tick. Never blocks longer than the
  // store's call; a failure only means that the lease expires as after a crash.
  void Release();

  bool leading() const { return leading_; }
  std::chrono::milliseconds lease() const { return lease_; }
  // How many times this process took the lease. A new take (a take-over, or a lease taken again
  // after it vanished from a wiped or rebuilt store, at epoch 1 again) means the store may hold
  // another table than the one this process last wrote.
  std::uint64_t takes() const { return takes_; }
  const std::string& me() const { return me_; }
  // The holder of the lease as last seen: "" when none is known (the lease released, gone, or
  // not readable), me() when this process held it last.
  const std::string& known_leader() const { return known_leader_; }
  // Another orchestrator took the lease since this process last held it (while this one was
  // paused past it, or cut off from the store) and released it: its holder is then unknown,
  // and the table this process held is not the store's last, not to be written back.
  bool another_led() const { return another_led_; }

 private:
  bool Acquire(std::optional<std::uint64_t> expected_version, std::uint64_t epoch, SteadyTime now);
  // Whether the store holds `written` although its write failed (its answer was lost).
  // Whether `written` is the lease in the store; nullopt when the lease cannot be read.
  std::optional<bool> Landed(const Lease& written);
  void Become(bool leading, const std::string& holder, std::uint64_t epoch);
  std::uint64_t NewVersion();

  SlotStore& store_;
  std::string me_;
  std::chrono::milliseconds lease_;
  const Clock& clock_;
  std::mt19937_64 random_;

  bool leading_ = false;
  bool announced_ = false;  // the first state is logged too ("stands by", once)
  std::uint64_t epoch_ = 0;
  std::uint64_t takes_ = 0;
  std::uint64_t version_ = 0;  // the version this process last wrote
  SteadyTime renewed_at_{};    // when it last wrote it
  // A renewal whose outcome is unknown (its answer and the read-back both failed): its version,
  // and when it was written, to recognise it as this process's own if it landed.
  std::optional<std::uint64_t> pending_version_;
  SteadyTime pending_at_{};
  std::optional<std::uint64_t> observed_version_;  // another holder's, as last seen
  SteadyTime observed_at_{};                       // when that version was first seen
  std::optional<SteadyTime> vanished_at_;  // when a lease seen held by another was first gone
  // When the lease's reads began to fail: a holder cannot renew while the store does not
  // answer, so that time does not count towards a take-over (observed_at_ moves past it).
  std::optional<SteadyTime> unread_since_;
  std::chrono::milliseconds unread_shift_{0};  // how far observed_at_ moved so (a lease at most)
  bool unread_grace_ = false;  // the holder was given a third of a lease after a long outage
  // Stood down from its own lease, and read nothing else since: that lease, read as it last
  // wrote it, is one nobody took (renewed at once), not a backup's (the store went back).
  bool lapsed_own_ = false;
  std::string known_leader_;  // for the log line at each change of leader
  bool another_led_ = false;
  std::uint64_t known_epoch_ = 0;
  std::string last_error_;
  std::string renew_error_;  // the last renewal failure logged (each cause once)
  std::string take_error_;   // the last failure to take the lease logged (each cause once)
  // The version of the lease last announced as taken over (or released and taken): a take-over
  // that keeps failing is tried every cycle, and said once.
  std::optional<std::uint64_t> announced_take_;

  prometheus::Gauge& leader_gauge_;
  prometheus::Counter& fenced_writes_;
  prometheus::Counter& changes_;
  prometheus::Counter& lease_errors_;
};

// This process's name in the lease: HSDO_NODE_NAME (or the host name), the process id and a
// random token, so that two orchestrators, on one host or in two containers with the same
// name and PID, or a restarted one, are different holders. Each call makes another name.
std::string LeaseHolderName(const std::string& node_name);

}  // namespace hsdo
