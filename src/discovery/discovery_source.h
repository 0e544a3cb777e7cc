// DiscoverySource: where targets come from (a file, AWS Auto Scaling groups, Consul).
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "core/slot_table.h"

namespace hsdo {

class DiscoverySource {
 public:
  virtual ~DiscoverySource() = default;

  // "file", "aws", "consul": for logs and metric labels.
  virtual std::string_view kind() const = 0;

  // Whether Discover() and OnSlotsFreed() wait on remote calls (the ASG source: one attempt
  // of an AWS request may take as long as the default lease). A leader then renews its lease
  // while they run.
  virtual bool Blocks() const { return false; }

  // The current targets, oldest first where the source knows it, each validated
  // (canonical address, valid labels). An error means "unknown", never "none": the
  // orchestrator then keeps its last good list (invariant 6).
  virtual Result<std::vector<Target>> Discover() = 0;

  // Whether every part of the answer the last Discover() gave is current. A source that
  // answers with part of an older answer while some of its queries fail (Consul keeps each
  // service's last list) says false: the orchestrator plans with that answer, but it does not
  // confirm a held mass removal (RemovalGuard), as a failed Discover() would not.
  virtual bool LastAnswerCurrent() const { return true; }
  // Whether the last Discover() answered with lists kept through failures of queries that
  // should have answered (Consul refusing or failing; not a service or group that does not
  // exist): no answer for the orchestrator's readiness.
  virtual bool AnsweredThroughFailures() const { return false; }

  // Groups (Consul services) that the last Discover() could not tell, with no earlier answer
  // of theirs to stand in: Consul does not know the service (a typo in its name, or every
  // instance deregistered). Their targets are not in the answer; the orchestrator keeps what
  // the table holds of them, so that such a group neither empties its slots nor holds up the
  // other groups' targets.
  virtual std::vector<std::string> UnknownGroups() const { return {}; }

  // The groups this source is configured with, as its targets spell them (empty: any, as a
  // targets file has). While a group is unknown, the orchestrator also keeps the targets the
  // table holds under a group that is none of these: after a typo in one name, those are the
  // targets of the name meant, and would look removed.
  virtual std::vector<std::string> Groups() const { return {}; }

  // Called after a store write that freed the slots of these targets, which the source had
  // asked to drain (Target::drain): they are drained or timed out. The ASG source completes
  // their termination lifecycle action here. Errors are the source's to log and count.
  virtual void OnSlotsFreed(std::span<const Target> targets) { (void)targets; }

  // This orchestrator stands by (another leads): what the source remembers of its last answers
  // is another leader's past when this one takes over again, and is forgotten.
  virtual void OnStandBy() {}
};

}  // namespace hsdo
