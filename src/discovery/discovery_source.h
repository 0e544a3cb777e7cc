// DiscoverySource: where targets come from (a file, AWS Auto Scaling groups, Consul).
#pragma once

#include <span>
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

  // The current targets, oldest first where the source knows it, each validated
  // (canonical address, valid labels). An error means "unknown", never "none": the
  // orchestrator then keeps its last good list (invariant 6).
  virtual Result<std::vector<Target>> Discover() = 0;

  // Whether every part of the answer the last Discover() gave is current. A source that
  // answers with part of an older answer while some of its queries fail (Consul keeps each
  // service's last list) says false: the orchestrator plans with that answer, but it does not
  // confirm a held mass removal (RemovalGuard), as a failed Discover() would not.
  virtual bool LastAnswerCurrent() const { return true; }

  // Called after a store write that freed the slots of these targets, which the source had
  // asked to drain (Target::drain): they are drained or timed out. The ASG source completes
  // their termination lifecycle action here. Errors are the source's to log and count.
  virtual void OnSlotsFreed(std::span<const Target> targets) { (void)targets; }

  // This orchestrator stands by (another leads): what the source remembers of its last answers
  // is another leader's past when this one takes over again, and is forgotten.
  virtual void OnStandBy() {}
};

}  // namespace hsdo
