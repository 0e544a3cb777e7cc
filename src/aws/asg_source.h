// AsgSource (SERVER_MODE=aws): the targets are the healthy, in-service, running instances of
// the Auto Scaling groups named in SERVER_ASG_NAMES, addressed by their private IP.
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
  std::string lifecycle_state;  // "InService", "Pending", "Terminating", ...
  std::string health_status;    // "Healthy" | "Unhealthy"
};
struct AsgPage {
  std::vector<std::string> groups;  // names found
  std::vector<AsgInstance> instances;
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
  static constexpr std::size_t kGroupBatch = 50;

  AsgSource(std::vector<std::string> group_names, std::unique_ptr<AwsClient> autoscaling,
            std::unique_ptr<AwsClient> ec2, prometheus::Registry* registry = nullptr);

  std::string_view kind() const override { return "aws"; }
  Result<std::vector<Target>> Discover() override;

 private:
  std::vector<std::string> group_names_;
  std::unique_ptr<AwsClient> autoscaling_;
  std::unique_ptr<AwsClient> ec2_;
  // EC2 details of the members at the last good discovery, by instance id: a member that
  // DescribeInstances misses keeps them.
  std::map<std::string, Ec2Instance> previous_ec2_;
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
