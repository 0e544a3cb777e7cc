// AsgSource (SERVER_MODE=aws): the targets are the healthy, in-service, running instances of
// the Auto Scaling groups named in SERVER_ASG_NAMES, addressed by their private IP.
// Instances in `Terminating:Wait` (held by a termination lifecycle hook) and in `Standby`
// are targets too, with Target::drain set: their slots drain instead of being freed at once.
// When the orchestrator frees the slot of a `Terminating:Wait` instance (OnSlotsFreed), the
// source completes its lifecycle action (CONTINUE) for each termination hook of the group,
// so that the ASG terminates it without waiting for the hook's heartbeat timeout.
// DescribeAutoScalingGroups gives membership and life-cycle state; DescribeInstances gives
// the address, the AZ, the EC2 state and the launch time (oldest first, so that overflow
// leaves out the newest instances).
//
// An empty answer is not trusted as "no instances": a configured group that
// DescribeAutoScalingGroups does not return, or an answer whose every candidate is invalid
// (no address, a bad label, unknown to EC2 and never seen before), is an error, and the
// orchestrator keeps its last good list. A member that EC2 does not return (its reads are
// eventually consistent) keeps the details it had at the last discovery, counted in
// hsdo_aws_asg_instances_not_in_ec2_total. A group that exists with no instance is a real
// answer: the orchestrator's mass-removal guard takes it from there.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <pugixml.hpp>

#include "aws/aws_client.h"
#include "common/clock.h"
#include "config/config.h"
#include "discovery/discovery_source.h"

namespace prometheus {
class Registry;
class Counter;
template <typename T>
class Family;
class Gauge;
}  // namespace prometheus

namespace hsdo::aws {

// Parsed pages (pure; exposed for tests).
struct AsgInstance {
  std::string instance_id;
  std::string group;
  std::string lifecycle_state;  // "InService", "Pending", "Terminating:Wait", "Standby", ...
  std::string health_status;    // "Healthy" | "Unhealthy"
};
struct AsgPage {
  std::vector<std::string> groups;  // names found
  std::vector<AsgInstance> instances;
  // Groups listed without a name or an <Instances> element (AWS always sends both, an empty
  // <Instances/> for a group without instances): an answer of another shape.
  std::vector<std::string> incomplete_groups;
  std::string next_token;
};
struct Ec2Instance {
  std::string instance_id;
  std::string state;  // "running", "stopped", ...
  std::string private_ip;
  std::string az;
  std::optional<WallTime> launch_time;
};
struct Ec2Page {
  std::vector<Ec2Instance> instances;
  std::string next_token;
};
AsgPage ParseDescribeAutoScalingGroups(const pugi::xml_document& doc);
Ec2Page ParseDescribeInstances(const pugi::xml_document& doc);
// The names of the group's termination hooks (LifecycleTransition
// autoscaling:EC2_INSTANCE_TERMINATING) in a DescribeLifecycleHooks answer, in answer order.
std::vector<std::string> ParseTerminationHooks(const pugi::xml_document& doc);

// The life-cycle states whose instances are targets that drain: `Terminating:Wait` (a
// termination hook holds the instance), `Standby` (taken out of service by an operator), and
// the transitions into them (`Terminating`, `Terminating:Proceed`, `EnteringStandby`).
bool IsDrainState(std::string_view lifecycle_state);

// Why an instance is not a target (for logs and the skipped-instances metric); nullopt
// when it is one.
std::optional<std::string_view> SkipReason(const AsgInstance& member, const Ec2Instance* ec2);

// True for the skip reasons that mean bad data (as opposed to a real state such as
// "unhealthy"): an answer whose every candidate is skipped for one of them is an error.
bool IsInvalidData(std::string_view reason);

// Membership × EC2 details → validated targets, oldest first (launch time, then id).
std::vector<Target> BuildTargets(const std::vector<AsgInstance>& members,
                                 const std::vector<Ec2Instance>& instances,
                                 std::vector<std::string_view>* skipped = nullptr);

class AsgSource final : public DiscoverySource {
 public:
  // Instance ids per DescribeInstances call, and group names per DescribeAutoScalingGroups.
  static constexpr std::size_t kInstanceBatch = 100;
  // First discoveries answered with a member EC2 did not return before it is left out.
  static constexpr int kFirstDiscoveryAttempts = 3;
  static constexpr std::size_t kGroupBatch = 50;

  AsgSource(std::vector<std::string> group_names, std::unique_ptr<AwsClient> autoscaling,
            std::unique_ptr<AwsClient> ec2, prometheus::Registry* registry = nullptr);

  std::string_view kind() const override { return "aws"; }
  bool Blocks() const override { return true; }
  Result<std::vector<Target>> Discover() override;
  // The configured groups the last answer did not return (a typo, a deleted group).
  std::vector<std::string> UnknownGroups() const override { return unknown_groups_; }
  std::vector<std::string> Groups() const override;
  // Not while a group is unknown: after a typo in its name, the targets the table holds under
  // the right name match no configured group and look removed; an answer that is not current
  // keeps the removal guard from ever confirming that.
  bool LastAnswerCurrent() const override { return unknown_groups_.empty(); }
  // Completes the lifecycle action (CONTINUE) of each freed target that was in
  // `Terminating:Wait` at the last discovery. Called from the orchestrator's thread, like
  // Discover(). Errors are logged, counted in hsdo_aws_lifecycle_actions_total{result} and
  // retried at the next discoveries while the instance is still in `Terminating:Wait`.
  void OnSlotsFreed(std::span<const Target> targets) override;
  // The next discovery is a first one again (its members' details are another leader's past).
  void OnStandBy() override {
    previous_ec2_.clear();
    discovered_once_ = false;
    first_attempts_ = 0;
    unknown_groups_.clear();
  }

 private:
  // CompleteLifecycleAction for every termination hook of `group`; true when each is done
  // (completed now, or already completed).
  bool CompleteLifecycleActions(const std::string& instance_id, const std::string& group);
  // The termination hooks of `group`, described once and cached until a completion fails.
  Result<std::vector<std::string>> TerminationHooks(const std::string& group);
  void CountLifecycleAction(std::string_view result);

  std::vector<std::string> group_names_;
  std::unique_ptr<AwsClient> autoscaling_;
  std::unique_ptr<AwsClient> ec2_;
  // EC2 details of the members at the last good discovery, by instance id: a member that
  // DescribeInstances misses keeps them.
  std::map<std::string, Ec2Instance> previous_ec2_;
  bool discovered_once_ = false;             // previous_ec2_ holds a good discovery's details
  std::vector<std::string> unknown_groups_;  // of the last answer (UnknownGroups)
  int first_attempts_ = 0;  // first discoveries that found members EC2 did not return
  // The members in `Terminating:Wait` at the last good discovery: instance id -> group.
  std::map<std::string, std::string> terminating_;
  // Termination hook names per group (DescribeLifecycleHooks), dropped when a completion fails.
  std::map<std::string, std::vector<std::string>> termination_hooks_;
  // Freed instances whose lifecycle action could not be completed, retried from Discover()
  // with a backoff counted in discoveries (1, 2, 4, ... up to kMaxRetrySpacing), so that a
  // lasting error (a missing IAM permission) does not cost two calls per instance and cycle.
  struct Unfinished {
    std::string group;
    int spacing = 1;  // discoveries between two attempts
    int wait = 1;     // discoveries left before the next attempt
  };
  static constexpr int kMaxRetrySpacing = 64;
  std::map<std::string, Unfinished> unfinished_;
  prometheus::Family<prometheus::Counter>* lifecycle_actions_ = nullptr;
  prometheus::Gauge* draining_gauge_ = nullptr;
  prometheus::Family<prometheus::Counter>* skipped_ = nullptr;
  prometheus::Counter* not_in_ec2_ = nullptr;
  prometheus::Gauge* targets_gauge_ = nullptr;
  prometheus::Gauge* members_gauge_ = nullptr;
};

// Wiring for the binary (SERVER_MODE=aws): one credentials chain, two clients. `cancel` ends
// requests and retry sleeps at shutdown (AwsClientOptions::cancel).
Result<std::unique_ptr<DiscoverySource>> MakeAsgSource(const Config& config,
                                                       prometheus::Registry& registry,
                                                       const Clock* clock = nullptr,
                                                       std::stop_token cancel = {});

}  // namespace hsdo::aws
