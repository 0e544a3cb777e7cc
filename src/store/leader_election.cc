#include "store/leader_election.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/validate.h"

namespace hsdo {

namespace {

std::int64_t UnixMillis(WallTime time) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
}

// The store's lease is read as given (a hand edit, another tool, a restored backup): its
// holder's period is taken no longer than the longest an orchestrator writes (3 x INTERVAL,
// INTERVAL at most a year). A larger one overflowed on the steady clock's nanoseconds and
// read as negative: a standby took over from a live leader at once.
constexpr std::chrono::milliseconds kLongestLease = std::chrono::days(3 * 366);

std::chrono::milliseconds HolderPeriod(const Lease& lease) {
  return std::clamp(std::chrono::milliseconds(lease.duration_ms), std::chrono::milliseconds(0),
                    kLongestLease);
}

// Epochs are compared for equality only: past 2^62 they start again at 1 (a store's integer
// parsers stop at 2^63 - 1, and a lease that could not be read any more stopped every
// orchestrator from leading).
std::uint64_t NextEpoch(const Lease& lease) {
  return lease.epoch >= (std::uint64_t{1} << 62) ? 1 : lease.epoch + 1;
}

}  // namespace

std::string LeaseHolderName(const std::string& node_name) {
  std::string host = node_name;
  if (host.empty()) {
    char buffer[HOST_NAME_MAX + 1] = {};
    host = gethostname(buffer, sizeof(buffer) - 1) == 0 ? buffer : "unknown-host";
  }
  // A token of its own: in containers every process is PID 1, and HSDO_NODE_NAME is often the
  // Kubernetes node's name, so two orchestrator pods on one node were one holder, and both led.
  std::random_device random;
  return fmt::format("{}/{}/{:08x}", host, getpid(), random());
}

LeaderElection::LeaderElection(SlotStore& store, std::string me, std::chrono::milliseconds lease,
                               const Clock& clock, prometheus::Registry& registry)
    : store_(store),
      me_(std::move(me)),
      lease_(lease),
      clock_(clock),
      random_(std::random_device{}()),
      leader_gauge_(prometheus::BuildGauge()
                        .Name("hsdo_orchestrator_leader")
                        .Help("1 while this orchestrator holds the leader lease, else 0")
                        .Register(registry)
                        .Add({})),
      fenced_writes_(prometheus::BuildCounter()
                         .Name("hsdo_orchestrator_fenced_writes_total")
                         .Help("Table writes the store refused because this orchestrator no "
                               "longer held the leader lease")
                         .Register(registry)
                         .Add({})),
      changes_(prometheus::BuildCounter()
                   .Name("hsdo_orchestrator_leader_changes_total")
                   .Help("Changes of leader seen by this orchestrator")
                   .Register(registry)
                   .Add({})),
      // Each failure is logged once per cause while it lasts: this counts every attempt (a
      // standby's store that refuses the lease moved no counter, so no alert fired).
      lease_errors_(prometheus::BuildCounter()
                        .Name("hsdo_orchestrator_lease_errors_total")
                        .Help("Reads and writes of the leader lease that failed (not counting "
                              "a write another orchestrator's write came before)")
                        .Register(registry)
                        .Add({})) {
  store_.SetFence(Fence{me_, 0}, [this] { fenced_writes_.Increment(); });
}

std::uint64_t LeaderElection::NewVersion() {
  // Never 0 nor the previous one; below 2^62 so that every store keeps it exactly.
  std::uint64_t version = 0;
  while (version == 0 || version == version_) version = random_() & ((std::uint64_t{1} << 62) - 1);
  return version;
}

void LeaderElection::Become(bool leading, const std::string& holder, std::uint64_t epoch) {
  if (holder != known_leader_ || epoch != known_epoch_) {
    if (!known_leader_.empty()) changes_.Increment();
    // (Its own lease while it stands by: one it could not renew in time, not a leader.)
    spdlog::info("leader: {} (epoch {}){}", holder.empty() ? "none" : holder, epoch,
                 holder != me_ ? ""
                 : leading     ? ", this orchestrator"
                               : ", this orchestrator's lease, which it stopped renewing: it "
                                 "stands by until it takes the lease again");
    known_leader_ = holder;
    known_epoch_ = epoch;
  }
  if (leading == leading_ && announced_) return;
  announced_ = true;
  leading_ = leading;
  leader_gauge_.Set(leading ? 1 : 0);
  if (leading) {
    spdlog::info("this orchestrator ({}) leads from now on (epoch {})", me_, epoch);
  } else if (holder == me_) {
    spdlog::warn(
        "this orchestrator ({}) stands by: it could not renew its lease in time; it writes "
        "nothing until it takes the lease again",
        me_);
  } else {
    spdlog::warn(
        "this orchestrator ({}) stands by: {} leads; it writes nothing until it "
        "takes over",
        me_, holder.empty() ? "nobody" : holder);
  }
}

std::optional<bool> LeaderElection::Landed(const Lease& written) {
  // A write can land and its answer be lost (a timeout); retried, it then conflicts with
  // itself. Without this check the leader stood down, and nobody wrote for a whole lease.
  auto lease = store_.ReadLease();
  if (!lease) return std::nullopt;
  return *lease && (*lease)->holder == written.holder && (*lease)->epoch == written.epoch &&
         (*lease)->version == written.version;
}

bool LeaderElection::Acquire(std::optional<std::uint64_t> expected_version, std::uint64_t epoch,
                             SteadyTime now) {
  const std::uint64_t version = NewVersion();
  const std::int64_t wall = UnixMillis(clock_.Now());
  const Lease next{.holder = me_,
                   .epoch = epoch,
                   .version = version,
                   .duration_ms = lease_.count(),
                   .since_unix_ms = wall,
                   .renewed_unix_ms = wall};
  if (auto written = store_.WriteLease(next, expected_version);
      !written && !Landed(next).value_or(false)) {
    if (written.error().code != ErrorCode::kConflict) lease_errors_.Increment();
    if (written.error().code != ErrorCode::kConflict && written.error().message != take_error_) {
      spdlog::warn("leader lease: cannot take it: {}", written.error().message);
      take_error_ = written.error().message;  // each cause once: it is tried every cycle
    }
    return false;
  }
  take_error_.clear();
  epoch_ = epoch;
  ++takes_;
  another_led_ = false;
  version_ = version;
  renewed_at_ = now;
  observed_version_.reset();
  store_.SetFence(Fence{me_, epoch_}, [this] { fenced_writes_.Increment(); });
  Become(true, me_, epoch_);
  return true;
}

bool LeaderElection::Tick() {
  // Lease periods are measured on the steady clock: a wall clock set forward would make a
  // standby take over from a healthy leader, one set back would delay a needed take-over.
  const SteadyTime now = clock_.Steady();
  // A leader reads the lease only when its renewal is due (a read every cycle cost the
  // unchanged cycle more than everything else, issue 12). In between nothing is lost: a
  // standby takes over only after a whole lease without renewal, and every table write is
  // fenced in the store itself, so a leader paused past its lease still writes nothing. (A
  // wall clock stepped back renews at once rather than never.)
  if (leading_ && now >= renewed_at_ && now - renewed_at_ < lease_ / 3) return true;
  auto lease = store_.ReadLease();
  if (!lease) {
    lease_errors_.Increment();
    if (!unread_since_) unread_since_ = now;
    if (lease.error().message != last_error_) {
      spdlog::warn("leader lease: cannot read it: {}", lease.error().message);
      last_error_ = lease.error().message;
    }
    // Unable to renew for a whole lease: another orchestrator may have taken over.
    // (Timed after the read: a read that failed slowly used up part of the lease too.)
    if (leading_ && clock_.Steady() - renewed_at_ >= lease_) {
      Become(false, me_, epoch_);
      lapsed_own_ = true;
    }
    return leading_;
  }
  last_error_.clear();
  if (unread_since_) {
    // The holder could not renew while the store did not answer either: that time is not
    // counted towards taking over (review: a standby took over within 5 ms of a 6 s outage,
    // its count begun before it, from a leader about to renew).
    // At most a lease in all per version seen: a store whose reads fail now and then (slow
    // timeouts) would otherwise put off the replacement of a dead leader again and again.
    if (observed_version_) {
      const SteadyTime steady = clock_.Steady();
      const auto outage = steady - *unread_since_;
      const auto shift = std::min<SteadyTime::duration>(outage, lease_ - unread_shift_);
      observed_at_ += shift;
      unread_shift_ += std::chrono::duration_cast<std::chrono::milliseconds>(shift);
      // An outage as long as the lease stood the holder down too; it renews at its first read
      // once the store answers: a third of a lease for that from now, once per version (a
      // store failing again and again would put a take-over off for ever).
      if (outage >= lease_ && !unread_grace_) {
        observed_at_ = std::max(observed_at_, steady - lease_ + lease_ / 3);
        unread_grace_ = true;
      }
    }
    unread_since_.reset();
  }

  if (!*lease) {  // never held: the first one to write it leads
    lapsed_own_ = false;
    if (!leading_ && observed_version_) {
      // It was held (by another) and is gone: the store was wiped or rebuilt. Its holder gets a
      // whole lease to take it back, at its next renewal, since it holds the table to write
      // back; a standby taking it first would plan from the emptied store, every target
      // moving on every node.
      if (!vanished_at_) vanished_at_ = clock_.Steady();  // as observed_at_: after the read
      if (now - *vanished_at_ < lease_) return false;
    }
    vanished_at_.reset();
    if (!Acquire(std::nullopt, 1, now)) Become(false, "", 0);
    return leading_;
  }
  vanished_at_.reset();
  const Lease& current = **lease;
  if (leading_ && current.holder == me_ && current.epoch == epoch_ && pending_version_ &&
      current.version == *pending_version_) {
    // A renewal whose outcome was unknown landed: it is this process's own.
    version_ = *pending_version_;
    renewed_at_ = pending_at_;
  }
  const bool own_as_written = epoch_ != 0 && current.holder == me_ && current.epoch == epoch_ &&
                              (current.version == version_ || current.version == pending_version_);
  if (!own_as_written) lapsed_own_ = false;
  if (!leading_ && lapsed_own_ && own_as_written) {
    // Its own lease as it last wrote it, read as such ever since it stood down because it
    // could not renew in time (a store that did not answer): nobody took it since (taking it
    // writes another version; a lease of another read meanwhile, then this one again, may be
    // a backup's). Renewed at once, on that version; waiting a lease, as a standby does, left a
    // lone orchestrator writing nothing, and let a standby take over, restarting every drain's
    // timeout and the removal guard's delay.
    Lease renewed = current;
    renewed.version = NewVersion();
    renewed.duration_ms = lease_.count();
    renewed.renewed_unix_ms = UnixMillis(clock_.Now());
    auto written = store_.WriteLease(renewed, current.version);
    if (written || Landed(renewed) == true) {
      spdlog::info("leader lease: nobody took it since this orchestrator stood down; renewed");
      take_error_.clear();
      version_ = renewed.version;
      renewed_at_ = now;
      pending_version_.reset();
      Become(true, me_, epoch_);
      return true;
    }
    // Another's take came first (read next time), or the store failed again (said once).
    if (written.error().code != ErrorCode::kConflict) {
      lease_errors_.Increment();
      if (written.error().message != take_error_) {
        spdlog::warn("leader lease: cannot take it: {}", written.error().message);
        take_error_ = written.error().message;
      }
    }
    return false;
  }
  if (leading_ && current.holder == me_ && current.epoch == epoch_ && current.version != version_) {
    // This process's own lease at another version than it wrote last, and not a renewal of
    // unknown outcome (above): nobody else wrote it (taking a lease moves its epoch, and holder
    // names differ per process), so the store went back in time (a backup restored, a copy of
    // the file put back). Stood down, this leader would drop the table it holds, and whoever
    // leads next would plan from the restored one, moving targets on every node. It renews.
    spdlog::warn(
        "leader lease: the store holds an earlier version of this orchestrator's own lease (the "
        "store restored from a backup?); renewing it");
    version_ = current.version;
    renewed_at_ = now - lease_ / 3;  // due now
  }
  if (leading_ && current.holder == me_ && current.epoch == epoch_ && current.version == version_) {
    pending_version_.reset();
    if (now - renewed_at_ < lease_ / 3) return true;
    Lease renewed = current;
    renewed.version = NewVersion();
    renewed.duration_ms = lease_.count();
    renewed.renewed_unix_ms = UnixMillis(clock_.Now());
    auto written = store_.WriteLease(renewed, current.version);
    const std::optional<bool> landed = written ? std::optional<bool>(true) : Landed(renewed);
    if (landed == true) {
      version_ = renewed.version;
      renewed_at_ = now;
      renew_error_.clear();
      return true;
    }
    if (!landed || written.error().code != ErrorCode::kConflict) {
      lease_errors_.Increment();
      if (!landed) {
        // It may have landed (the answer was lost, the read-back failed): recognised next time.
        pending_version_ = renewed.version;
        pending_at_ = now;
      }
      if (written.error().message != renew_error_) {
        spdlog::warn("leader lease: cannot renew it: {}", written.error().message);
        renew_error_ = written.error().message;
      }
      // The lease still runs, timed after the attempt (one that failed slowly used it up).
      if (clock_.Steady() - renewed_at_ < lease_) return true;
    }
    Become(false, current.holder, current.epoch);
    lapsed_own_ = true;
    return false;
  }

  if (current.holder.empty()) {  // released by a leader that stopped: nobody writes
    if (epoch_ != 0 && current.epoch != epoch_ && !another_led_) {
      // Another orchestrator took it while this one was paused past its lease, or cut off from
      // the store (which stood it down), and released it: this one stands by for a step, so
      // that its orchestrator forgets what it knew before (its table, drains and removals
      // timed then, the targets it saw), then takes it.
      spdlog::warn("leader lease: another orchestrator led at epoch {} since this one did",
                   current.epoch);
      Become(false, "", current.epoch);
      another_led_ = true;
      return false;
    }
    if (announced_take_ != current.version) {  // said once: it is tried every cycle
      spdlog::info("leader lease: released by the last leader; taking it");
      announced_take_ = current.version;
    }
    if (!Acquire(current.version, NextEpoch(current), now)) Become(false, "", current.epoch);
    return leading_;
  }

  // (Timed after the read: a slow read may have outlasted the lease.)
  if (leading_ && current.epoch < epoch_ && clock_.Steady() - renewed_at_ < lease_) {
    // A lease at an earlier epoch than the one this leader holds: epochs only grow (a wiped
    // store's new lease is left to its last holder for a whole lease, which it renews), so
    // the store went back in time (a backup taken before this leader took over, restored).
    // Stood down, it would drop the table it holds, and whoever leads next would plan from
    // the restored one. It takes the lease back at once, on that version, at a later epoch.
    spdlog::warn(
        "leader lease: the store holds a lease of an earlier epoch ({}, {}) than this "
        "orchestrator's ({}): the store restored from a backup?; taking it back",
        SanitizedLabel(current.holder), current.epoch, epoch_);
    if (Acquire(current.version, epoch_ + 1, now)) return true;
  }
  // Someone else holds it (or an older incarnation of this name does).
  Become(false, current.holder, current.epoch);
  if (observed_version_ != current.version) {
    observed_version_ = current.version;
    unread_shift_ = {};
    unread_grace_ = false;
    // When the read ended, not when it began: the holder may have written this version while
    // a slow read was under way (found in review: a read of 9 s counted as 9 s already waited,
    // and a standby took over from a leader that had just renewed).
    observed_at_ = clock_.Steady();
    return false;
  }
  // Unchanged for a whole lease period of the holder's (or ours, if longer): it is dead.
  const auto period = std::max(lease_, HolderPeriod(current));
  if (now - observed_at_ >= period) {
    if (announced_take_ != current.version) {  // said once: it is tried every cycle
      spdlog::warn("leader lease: {} did not renew for {} ms; taking over", current.holder,
                   period.count());
      announced_take_ = current.version;
    }
    Acquire(current.version, NextEpoch(current), now);
  }
  return leading_;
}

void LeaderElection::Release() {
  if (!leading_) return;
  const std::int64_t wall = UnixMillis(clock_.Now());
  const Lease released{.holder = "",
                       .epoch = epoch_,
                       .version = NewVersion(),
                       .duration_ms = 0,
                       .since_unix_ms = wall,
                       .renewed_unix_ms = wall};
  if (auto written = store_.WriteLease(released, version_); !written) {
    spdlog::info("leader lease: not released ({}): a standby takes over when it expires",
                 written.error().message);
    return;
  }
  leading_ = false;
  leader_gauge_.Set(0);
  spdlog::info("leader lease released: a standby takes over at its next cycle");
}

}  // namespace hsdo
