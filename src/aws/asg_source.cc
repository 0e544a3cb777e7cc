#include "aws/asg_source.h"

#include <algorithm>
#include <map>
#include <set>

#include <fmt/format.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include "common/validate.h"

namespace hsdo::aws {

namespace {

constexpr std::string_view kAutoScalingVersion = "2011-01-01";
constexpr std::string_view kEc2Version = "2016-11-15";
constexpr std::string_view kTerminatingTransition = "autoscaling:EC2_INSTANCE_TERMINATING";
constexpr std::string_view kTerminatingWait = "Terminating:Wait";
// AWS's answer to CompleteLifecycleAction for an instance no hook holds any more (completed
// by someone else, or timed out): the action is done.
constexpr std::string_view kNoActiveAction = "No active Lifecycle Action found";

std::string Text(const pugi::xml_node& node, const char* child) {
  return node.child(child).child_value();
}

// A 200 whose document is not the operation's response (a proxy's HTML page, another API's
// answer) lists no group: read as such, every configured group looked deleted, and the
// source "recovered" (network-fault review). It is an error.
Result<void> ExpectRoot(const pugi::xml_document& doc, const char* root) {
  if (doc.child(root)) return Ok();
  return MakeError(ErrorCode::kUnavailable, "the answer is not a {} (its root element is '{}')",
                   root, SanitizedLabel(doc.document_element().name()));
}

}  // namespace

AsgPage ParseDescribeAutoScalingGroups(const pugi::xml_document& doc) {
  AsgPage page;
  const pugi::xml_node result =
      doc.child("DescribeAutoScalingGroupsResponse").child("DescribeAutoScalingGroupsResult");
  for (const pugi::xml_node group : result.child("AutoScalingGroups").children("member")) {
    const std::string name = Text(group, "AutoScalingGroupName");
    if (name.empty() || !group.child("Instances")) {
      page.incomplete_groups.push_back(name);
      continue;
    }
    page.groups.push_back(name);
    for (const pugi::xml_node instance : group.child("Instances").children("member")) {
      page.instances.push_back({.instance_id = Text(instance, "InstanceId"),
                                .group = name,
                                .lifecycle_state = Text(instance, "LifecycleState"),
                                .health_status = Text(instance, "HealthStatus")});
    }
  }
  page.next_token = Text(result, "NextToken");
  return page;
}

Ec2Page ParseDescribeInstances(const pugi::xml_document& doc) {
  Ec2Page page;
  const pugi::xml_node response = doc.child("DescribeInstancesResponse");
  for (const pugi::xml_node reservation : response.child("reservationSet").children("item")) {
    for (const pugi::xml_node instance : reservation.child("instancesSet").children("item")) {
      page.instances.push_back({.instance_id = Text(instance, "instanceId"),
                                .state = instance.child("instanceState").child_value("name"),
                                .private_ip = Text(instance, "privateIpAddress"),
                                .az = instance.child("placement").child_value("availabilityZone"),
                                .launch_time = ParseIso8601(Text(instance, "launchTime"))});
    }
  }
  page.next_token = Text(response, "nextToken");
  return page;
}

std::vector<std::string> ParseTerminationHooks(const pugi::xml_document& doc) {
  std::vector<std::string> names;
  const pugi::xml_node result =
      doc.child("DescribeLifecycleHooksResponse").child("DescribeLifecycleHooksResult");
  for (const pugi::xml_node hook : result.child("LifecycleHooks").children("member")) {
    const std::string name = Text(hook, "LifecycleHookName");
    if (!name.empty() && Text(hook, "LifecycleTransition") == kTerminatingTransition) {
      names.push_back(name);
    }
  }
  return names;
}

bool IsDrainState(std::string_view lifecycle_state) {
  // Terminating:Wait and Standby, and the states an instance passes through on its way to
  // and from them: a discovery that catches it there must not free its slot (the slot would
  // not come back, and the lifecycle action would never be completed).
  return lifecycle_state == kTerminatingWait || lifecycle_state == "Standby" ||
         lifecycle_state == "EnteringStandby" || lifecycle_state == "Terminating" ||
         lifecycle_state == "Terminating:Proceed";
}

std::optional<std::string_view> SkipReason(const AsgInstance& member, const Ec2Instance* ec2) {
  // The ASG does not health-check a Standby instance, and one that terminates drains whatever
  // its health: HAProxy's own check takes a dead server out of a draining slot.
  if (!IsDrainState(member.lifecycle_state)) {
    if (member.lifecycle_state != "InService") return "not_in_service";
    if (member.health_status != "Healthy") return "unhealthy";
  }
  if (ec2 == nullptr) return "not_in_ec2";
  if (ec2->state != "running") return "not_running";
  if (ec2->private_ip.empty()) return "no_private_ip";
  if (!TargetAddress(ec2->private_ip)) return "invalid_address";
  // (A group or AZ that is not printable ASCII is shown made printable, not a reason to
  // leave its instances out: AWS allows any character in a group's name.)
  if (!IsValidLabel(member.instance_id)) return "invalid_label";
  return std::nullopt;
}

bool IsInvalidData(std::string_view reason) {
  return reason == "not_in_ec2" || reason == "no_private_ip" || reason == "invalid_address" ||
         reason == "invalid_label";
}

std::vector<Target> BuildTargets(const std::vector<AsgInstance>& members,
                                 const std::vector<Ec2Instance>& instances,
                                 std::vector<std::string_view>* skipped) {
  std::map<std::string, const Ec2Instance*> by_id;
  for (const auto& instance : instances) by_id[instance.instance_id] = &instance;
  struct Candidate {
    Target target;
    WallTime launch;
  };
  std::vector<Candidate> candidates;
  std::set<std::string> seen;
  for (const auto& member : members) {
    if (!seen.insert(member.instance_id).second) continue;  // a group named twice
    const auto it = by_id.find(member.instance_id);
    const Ec2Instance* ec2 = it == by_id.end() ? nullptr : it->second;
    if (const auto reason = SkipReason(member, ec2)) {
      if (skipped != nullptr) skipped->push_back(*reason);
      spdlog::debug("asg source: {} in {} is not a target: {}", SanitizedLabel(member.instance_id),
                    SanitizedLabel(member.group), *reason);
      continue;
    }
    candidates.push_back({Target{.address = *TargetAddress(ec2->private_ip),
                                 .port = std::nullopt,
                                 .name = member.instance_id,
                                 .group = SanitizedLabel(member.group),
                                 .az = SanitizedLabel(ec2->az),
                                 .drain = IsDrainState(member.lifecycle_state)},
                          // No launch time sorts last: it cannot be shown to be older than anyone.
                          ec2->launch_time.value_or(WallTime::max())});
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.launch != b.launch) return a.launch < b.launch;
    return a.target.name < b.target.name;
  });
  std::vector<Target> targets;
  targets.reserve(candidates.size());
  for (auto& candidate : candidates) targets.push_back(std::move(candidate.target));
  return targets;
}

AsgSource::AsgSource(std::vector<std::string> group_names, std::unique_ptr<AwsClient> autoscaling,
                     std::unique_ptr<AwsClient> ec2, prometheus::Registry* registry)
    : group_names_(std::move(group_names)),
      autoscaling_(std::move(autoscaling)),
      ec2_(std::move(ec2)) {
  if (registry != nullptr) {
    skipped_ = &prometheus::BuildCounter()
                    .Name("hsdo_aws_asg_skipped_instances_total")
                    .Help(
                        "ASG instances that were not targets, by reason (counted per "
                        "discovery)")
                    .Register(*registry);
    auto& gauges = prometheus::BuildGauge()
                       .Name("hsdo_aws_asg_instances")
                       .Help("Instances of the configured ASGs at the last discovery, by kind")
                       .Register(*registry);
    not_in_ec2_ = &prometheus::BuildCounter()
                       .Name("hsdo_aws_asg_instances_not_in_ec2_total")
                       .Help(
                           "In-service members that DescribeInstances did not return and that "
                           "kept their last known details (counted per discovery)")
                       .Register(*registry)
                       .Add({});
    targets_gauge_ = &gauges.Add({{"kind", "target"}});
    members_gauge_ = &gauges.Add({{"kind", "member"}});
    draining_gauge_ = &gauges.Add({{"kind", "draining_target"}});
    lifecycle_actions_ = &prometheus::BuildCounter()
                              .Name("hsdo_aws_lifecycle_actions_total")
                              .Help(
                                  "CompleteLifecycleAction (CONTINUE) calls for freed "
                                  "Terminating:Wait instances, by result (ok, already_done, "
                                  "error, describe_error, no_hook)")
                              .Register(*registry);
  }
}

Result<std::vector<Target>> AsgSource::Discover() {
  std::vector<AsgInstance> members;
  std::set<std::string> found_groups;
  for (std::size_t start = 0; start < group_names_.size(); start += kGroupBatch) {
    const std::vector<std::string> batch(
        group_names_.begin() + static_cast<std::ptrdiff_t>(start),
        group_names_.begin() +
            static_cast<std::ptrdiff_t>(std::min(group_names_.size(), start + kGroupBatch)));
    auto paged = Paginate([&](const std::string& token) -> Result<std::string> {
      AwsClient::Params params;
      AddMemberList(params, "AutoScalingGroupNames", batch, /*member_style=*/true);
      params.emplace_back("MaxRecords", "100");
      if (!token.empty()) params.emplace_back("NextToken", token);
      auto doc = autoscaling_->CallQuery("DescribeAutoScalingGroups", kAutoScalingVersion, params);
      if (!doc) return doc.error();
      if (auto shape = ExpectRoot(**doc, "DescribeAutoScalingGroupsResponse"); !shape) {
        return shape.error();
      }
      AsgPage page = ParseDescribeAutoScalingGroups(**doc);
      // Found in review (fuzzing): a group listed without its <Instances> read as a group of
      // no instances, and every slot of it was freed on every node.
      if (!page.incomplete_groups.empty()) {
        return MakeError(ErrorCode::kUnavailable,
                         "group '{}' is listed without a name or an Instances list: the answer "
                         "is of another shape",
                         SanitizedLabel(page.incomplete_groups.front()));
      }
      // AWS always sends these; without them a member would read as out of service (its slot
      // freed), so the answer is of another shape.
      for (const auto& member : page.instances) {
        if (member.instance_id.empty() || member.lifecycle_state.empty() ||
            member.health_status.empty()) {
          return MakeError(ErrorCode::kUnavailable,
                           "an instance of group '{}' has no InstanceId, LifecycleState or "
                           "HealthStatus: the answer is of another shape",
                           SanitizedLabel(member.group));
        }
      }
      found_groups.insert(page.groups.begin(), page.groups.end());
      members.insert(members.end(), page.instances.begin(), page.instances.end());
      return page.next_token;
    });
    if (!paged) {
      return MakeError(paged.error().code, "DescribeAutoScalingGroups: {}", paged.error().message);
    }
  }
  // A group not in the answer is not "no instances": a typo, a deleted group or a broken
  // answer. Taken as is, it would free the slots of every instance of the group. It is an
  // unknown group (UnknownGroups): the orchestrator keeps its slots as the table holds them,
  // and the other groups are planned.
  std::vector<std::string> missing_groups;
  std::vector<std::string> unknown;
  for (const auto& name : group_names_) {
    if (found_groups.contains(name)) continue;
    missing_groups.push_back("'" + name + "'");
    unknown.push_back(SanitizedLabel(name));  // as the table spells its targets' group
  }
  if (unknown != unknown_groups_ && !missing_groups.empty()) {
    spdlog::warn(
        "asg source: DescribeAutoScalingGroups did not return the Auto Scaling group(s) {} "
        "(check SERVER_ASG_NAMES): their slots stay as the table holds them",
        fmt::join(missing_groups, ", "));
  }
  unknown_groups_ = std::move(unknown);

  // Only the members that could be targets need EC2 details.
  std::vector<std::string> ids;
  for (const auto& member : members) {
    if ((member.lifecycle_state == "InService" && member.health_status == "Healthy") ||
        IsDrainState(member.lifecycle_state)) {
      ids.push_back(member.instance_id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<Ec2Instance> instances;
  for (std::size_t start = 0; start < ids.size(); start += kInstanceBatch) {
    const std::vector<std::string> batch(
        ids.begin() + static_cast<std::ptrdiff_t>(start),
        ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), start + kInstanceBatch)));
    auto paged = Paginate([&](const std::string& token) -> Result<std::string> {
      AwsClient::Params params;
      // A filter, not InstanceId.N: EC2 answers an id it does not know (yet: its reads are
      // eventually consistent) with InvalidInstanceID.NotFound for the whole call, which
      // failed every discovery while it lasted; the filter leaves the id out of the answer.
      params.emplace_back("Filter.1.Name", "instance-id");
      AddMemberList(params, "Filter.1.Value", batch, /*member_style=*/false);
      if (!token.empty()) params.emplace_back("NextToken", token);
      auto doc = ec2_->CallQuery("DescribeInstances", kEc2Version, params);
      if (!doc) return doc.error();
      if (auto shape = ExpectRoot(**doc, "DescribeInstancesResponse"); !shape) return shape.error();
      Ec2Page page = ParseDescribeInstances(**doc);
      // Likewise: without its state an instance would read as not running.
      for (const auto& instance : page.instances) {
        if (instance.instance_id.empty() || instance.state.empty()) {
          return MakeError(ErrorCode::kUnavailable,
                           "an instance has no instanceId or instanceState: the answer is of "
                           "another shape");
        }
      }
      instances.insert(instances.end(), page.instances.begin(), page.instances.end());
      return page.next_token;
    });
    if (!paged) {
      return MakeError(paged.error().code, "DescribeInstances: {}", paged.error().message);
    }
  }

  // EC2's reads are eventually consistent: a member it did not return keeps the details of
  // the last discovery rather than its slot being freed.
  std::set<std::string> returned;
  for (const auto& instance : instances) returned.insert(instance.instance_id);
  std::vector<std::string> carried;
  std::vector<std::string> unseen;
  for (const auto& id : ids) {
    if (returned.contains(id)) continue;
    if (const auto it = previous_ec2_.find(id); it != previous_ec2_.end()) {
      instances.push_back(it->second);
      carried.push_back(id);
    } else {
      unseen.push_back(id);
    }
  }
  // The first discovery (after a start or a take-over) has no details to carry, and such a
  // member may hold a slot in the table: planned without it, its slot would be freed and the
  // instance placed in another one a cycle later, on every node. Asked again first.
  if (!discovered_once_ && !unseen.empty() && ++first_attempts_ < kFirstDiscoveryAttempts) {
    return MakeError(ErrorCode::kUnavailable,
                     "DescribeInstances did not return {} (EC2's reads are eventually "
                     "consistent): asking again before planning without {}",
                     fmt::join(unseen, ", "), unseen.size() == 1 ? "it" : "them");
  }
  if (!carried.empty()) {
    if (not_in_ec2_ != nullptr) not_in_ec2_->Increment(static_cast<double>(carried.size()));
    spdlog::debug("asg source: DescribeInstances did not return {}: keeping their last details",
                  fmt::join(carried, ", "));
  }

  std::vector<std::string_view> skipped;
  std::vector<Target> targets = BuildTargets(members, instances, &skipped);
  if (targets.empty() && !skipped.empty() &&
      std::all_of(skipped.begin(), skipped.end(), IsInvalidData)) {
    return MakeError(ErrorCode::kUnavailable,
                     "every one of the {} instances of the Auto Scaling groups is unusable "
                     "(first: {}): keeping the last good list",
                     skipped.size(), skipped.front());
  }
  std::map<std::string, Ec2Instance> seen_ec2;
  for (const auto& instance : instances) {
    if (std::binary_search(ids.begin(), ids.end(), instance.instance_id)) {
      seen_ec2[instance.instance_id] = instance;
    }
  }
  previous_ec2_ = std::move(seen_ec2);
  discovered_once_ = true;
  std::map<std::string, std::string> terminating;
  for (const auto& member : members) {
    if (member.lifecycle_state == kTerminatingWait) terminating[member.instance_id] = member.group;
  }
  terminating_ = std::move(terminating);
  // Completions that failed are retried while their instance is still held by a hook.
  for (auto it = unfinished_.begin(); it != unfinished_.end();) {
    Unfinished& retry = it->second;
    const bool held = terminating_.contains(it->first);
    if (held && --retry.wait > 0) {
      ++it;
      continue;
    }
    if (held && !CompleteLifecycleActions(it->first, retry.group)) {
      retry.spacing = std::min(retry.spacing * 2, kMaxRetrySpacing);
      retry.wait = retry.spacing;
      ++it;
      continue;
    }
    if (held) spdlog::info("asg source: lifecycle action of {} completed on retry", it->first);
    it = unfinished_.erase(it);
  }
  if (skipped_ != nullptr) {
    for (const auto reason : skipped) skipped_->Add({{"reason", std::string(reason)}}).Increment();
  }
  if (targets_gauge_ != nullptr) {
    targets_gauge_->Set(static_cast<double>(targets.size()));
    draining_gauge_->Set(static_cast<double>(
        std::count_if(targets.begin(), targets.end(), [](const Target& t) { return t.drain; })));
    members_gauge_->Set(static_cast<double>(members.size()));
  }
  spdlog::debug("asg source: {} groups, {} members, {} targets", found_groups.size(),
                members.size(), targets.size());
  return targets;
}

std::vector<std::string> AsgSource::Groups() const {
  std::vector<std::string> groups;
  groups.reserve(group_names_.size());
  for (const auto& name : group_names_) groups.push_back(SanitizedLabel(name));
  return groups;
}

void AsgSource::OnSlotsFreed(std::span<const Target> targets) {
  for (const auto& target : targets) {
    const auto it = terminating_.find(target.name);
    // The target's group is made printable (SanitizedLabel); the member's, kept raw for the API.
    if (it == terminating_.end() ||
        (!target.group.empty() && SanitizedLabel(it->second) != target.group)) {
      // Standby, or no longer held by a hook: nothing to complete.
      spdlog::debug("asg source: freed {} was not in Terminating:Wait", target.name);
      continue;
    }
    if (!CompleteLifecycleActions(it->first, it->second)) {
      unfinished_[it->first] = Unfinished{.group = it->second};
    }
  }
}

bool AsgSource::CompleteLifecycleActions(const std::string& instance_id, const std::string& group) {
  // Logged at warning level once per instance; the retries that follow at debug level.
  const bool retry = unfinished_.contains(instance_id);
  const auto level = retry ? spdlog::level::debug : spdlog::level::warn;
  auto hooks = TerminationHooks(group);
  if (!hooks) {
    CountLifecycleAction("describe_error");
    spdlog::log(level, "asg source: cannot complete the lifecycle action of {}: {}", instance_id,
                hooks.error().message);
    return false;
  }
  if (hooks->empty()) {
    // Terminating:Wait without a termination hook: a hook deleted since. Nothing to complete.
    CountLifecycleAction("no_hook");
    spdlog::log(level, "asg source: {} is in Terminating:Wait but group {} has no termination hook",
                instance_id, group);
    termination_hooks_.erase(group);
    return true;
  }
  bool done = true;
  for (const auto& hook : *hooks) {
    const AwsClient::Params params = {{"AutoScalingGroupName", group},
                                      {"LifecycleHookName", hook},
                                      {"InstanceId", instance_id},
                                      {"LifecycleActionResult", "CONTINUE"}};
    auto answer = autoscaling_->CallQuery("CompleteLifecycleAction", kAutoScalingVersion, params);
    if (answer) {
      CountLifecycleAction("ok");
      spdlog::info("asg source: completed lifecycle hook {} of {} in {} (CONTINUE)", hook,
                   instance_id, group);
      continue;
    }
    const AwsErrorDetail& detail = autoscaling_->last_error();
    if (detail.code == "ValidationError" &&
        detail.message.find(kNoActiveAction) != std::string::npos) {
      // Completed by someone else, timed out, or held by another of the group's hooks.
      CountLifecycleAction("already_done");
      spdlog::debug("asg source: lifecycle hook {} of {}: no active action", hook, instance_id);
      continue;
    }
    CountLifecycleAction("error");
    spdlog::log(level, "asg source: CompleteLifecycleAction {} of {}: {}", hook, instance_id,
                answer.error().message);
    done = false;
  }
  // A hook renamed or deleted since it was described: describe again next time.
  if (!done) termination_hooks_.erase(group);
  return done;
}

Result<std::vector<std::string>> AsgSource::TerminationHooks(const std::string& group) {
  if (const auto it = termination_hooks_.find(group); it != termination_hooks_.end()) {
    return it->second;
  }
  auto doc = autoscaling_->CallQuery("DescribeLifecycleHooks", kAutoScalingVersion,
                                     {{"AutoScalingGroupName", group}});
  if (!doc) return MakeError(doc.error().code, "DescribeLifecycleHooks: {}", doc.error().message);
  std::vector<std::string> hooks = ParseTerminationHooks(**doc);
  termination_hooks_[group] = hooks;
  return hooks;
}

void AsgSource::CountLifecycleAction(std::string_view result) {
  if (lifecycle_actions_ != nullptr) {
    lifecycle_actions_->Add({{"result", std::string(result)}}).Increment();
  }
}

Result<std::unique_ptr<DiscoverySource>> MakeAsgSource(const Config& config,
                                                       prometheus::Registry& registry,
                                                       const Clock* clock, std::stop_token cancel) {
  static const SystemClock system_clock;
  const Clock& used_clock = clock != nullptr ? *clock : system_clock;
  if (config.server_asg_names.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "SERVER_MODE=aws needs SERVER_ASG_NAMES");
  }
  if (auto supported = CheckProfileSupported(config.aws); !supported) return supported.error();
  auto http = MakeCredentialsHttpClient(config.aws, cancel);
  if (!http) return http.error();
  auto credentials = MakeDefaultCredentialsChain(config.aws, used_clock, std::move(*http));
  auto metrics = std::make_shared<AwsMetrics>(registry);
  auto autoscaling = MakeAwsClient(config.aws, kAutoScaling, credentials, used_clock, metrics,
                                   DefaultRetryHooks(), cancel);
  if (!autoscaling) return autoscaling.error();
  auto ec2 = MakeAwsClient(config.aws, kEc2, credentials, used_clock, metrics, DefaultRetryHooks(),
                           cancel);
  if (!ec2) return ec2.error();
  return std::unique_ptr<DiscoverySource>(std::make_unique<AsgSource>(
      config.server_asg_names, std::move(*autoscaling), std::move(*ec2), &registry));
}

}  // namespace hsdo::aws
