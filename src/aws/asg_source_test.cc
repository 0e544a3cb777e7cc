#include "aws/asg_source.h"

#include <gtest/gtest.h>

#include <prometheus/registry.h>

#include "aws/testing/fake_http_client.h"

namespace hsdo::aws {
namespace {

using testing::FakeHttpClient;
using testing::Reply;

std::string AsgXml(const std::string& groups_xml, const std::string& next_token = "") {
  return "<DescribeAutoScalingGroupsResponse xmlns=\"https://autoscaling.amazonaws.com/doc/"
         "2011-01-01/\"><DescribeAutoScalingGroupsResult><AutoScalingGroups>" +
         groups_xml + "</AutoScalingGroups>" +
         (next_token.empty() ? "" : "<NextToken>" + next_token + "</NextToken>") +
         "</DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>";
}

std::string Group(const std::string& name, const std::string& members) {
  return "<member><AutoScalingGroupName>" + name + "</AutoScalingGroupName><Instances>" + members +
         "</Instances></member>";
}

std::string Member(const std::string& id, const std::string& lifecycle = "InService",
                   const std::string& health = "Healthy") {
  return "<member><InstanceId>" + id + "</InstanceId><AvailabilityZone>eu-west-1a" +
         "</AvailabilityZone><LifecycleState>" + lifecycle + "</LifecycleState><HealthStatus>" +
         health + "</HealthStatus></member>";
}

std::string Ec2Xml(const std::string& items, const std::string& next_token = "") {
  return "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
         "<reservationSet><item><instancesSet>" +
         items + "</instancesSet></item></reservationSet>" +
         (next_token.empty() ? "" : "<nextToken>" + next_token + "</nextToken>") +
         "</DescribeInstancesResponse>";
}

std::string Instance(const std::string& id, const std::string& ip, const std::string& launch,
                     const std::string& state = "running", const std::string& az = "eu-west-1b") {
  return "<item><instanceId>" + id + "</instanceId><instanceState><code>16</code><name>" + state +
         "</name></instanceState>" +
         (ip.empty() ? "" : "<privateIpAddress>" + ip + "</privateIpAddress>") +
         "<placement><availabilityZone>" + az + "</availabilityZone></placement><launchTime>" +
         launch + "</launchTime></item>";
}

TEST(AsgParsing, PagesAndFields) {
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(
      AsgXml(Group("web", Member("i-1") + Member("i-2", "Pending")), "tok").c_str()));
  const AsgPage page = ParseDescribeAutoScalingGroups(doc);
  EXPECT_EQ(page.groups, std::vector<std::string>{"web"});
  ASSERT_EQ(page.instances.size(), 2u);
  EXPECT_EQ(page.instances[1].lifecycle_state, "Pending");
  EXPECT_EQ(page.instances[0].group, "web");
  EXPECT_EQ(page.next_token, "tok");

  ASSERT_TRUE(doc.load_string(
      Ec2Xml(Instance("i-1", "10.0.0.1", "2026-01-01T00:00:00.000Z"), "n2").c_str()));
  const Ec2Page ec2 = ParseDescribeInstances(doc);
  ASSERT_EQ(ec2.instances.size(), 1u);
  EXPECT_EQ(ec2.instances[0].private_ip, "10.0.0.1");
  EXPECT_EQ(ec2.instances[0].state, "running");
  EXPECT_EQ(ec2.instances[0].az, "eu-west-1b");
  EXPECT_TRUE(ec2.instances[0].launch_time);
  EXPECT_EQ(ec2.next_token, "n2");
}

TEST(AsgTargets, FiltersAndOrdersOldestFirst) {
  const std::vector<AsgInstance> members = {
      {"i-new", "web", "InService", "Healthy"},     {"i-old", "web", "InService", "Healthy"},
      {"i-pending", "web", "Pending", "Healthy"},   {"i-sick", "web", "InService", "Unhealthy"},
      {"i-stopped", "api", "InService", "Healthy"}, {"i-noip", "api", "InService", "Healthy"},
      {"i-gone", "api", "InService", "Healthy"},    {"i-evil", "api", "InService", "Healthy"},
      {"i-same", "api", "InService", "Healthy"},
  };
  const auto t = [](const char* iso) { return ParseIso8601(iso); };
  const std::vector<Ec2Instance> instances = {
      {"i-new", "running", "10.0.0.9", "eu-west-1a", t("2026-03-01T00:00:00Z")},
      {"i-old", "running", "10.0.0.1", "eu-west-1b", t("2026-01-01T00:00:00Z")},
      {"i-same", "running", "10.0.0.5", "eu-west-1c", t("2026-03-01T00:00:00Z")},
      {"i-stopped", "stopped", "10.0.0.2", "eu-west-1a", t("2026-01-01T00:00:00Z")},
      {"i-noip", "running", "", "eu-west-1a", t("2026-01-01T00:00:00Z")},
      {"i-evil", "running", "10.0.0.3; shutdown", "eu-west-1a", t("2026-01-01T00:00:00Z")},
  };
  std::vector<std::string_view> skipped;
  const auto targets = BuildTargets(members, instances, &skipped);
  ASSERT_EQ(targets.size(), 3u);
  EXPECT_EQ(targets[0], (Target{.address = "10.0.0.1",
                                .port = std::nullopt,
                                .name = "i-old",
                                .group = "web",
                                .az = "eu-west-1b"}));
  EXPECT_EQ(targets[1].name, "i-new");  // same launch time: by instance id
  EXPECT_EQ(targets[2].name, "i-same");
  EXPECT_EQ(skipped,
            (std::vector<std::string_view>{"not_in_service", "unhealthy", "not_running",
                                           "no_private_ip", "not_in_ec2", "invalid_address"}));
}

TEST(AsgSource, PaginatesBothApisAndBatchesIds) {
  FakeClock clock;
  AwsConfig config;
  config.access_key_id = "AKID";
  config.secret_access_key = "SECRET";
  auto chain = [&] {
    std::vector<std::unique_ptr<CredentialsProvider>> providers;
    providers.push_back(MakeEnvironmentProvider(config));
    return std::make_shared<CredentialsChain>(std::move(providers), clock);
  }();
  // 150 healthy members over two pages of DescribeAutoScalingGroups.
  auto asg_http = std::make_unique<FakeHttpClient>([](const http::Request& request) {
    std::string members;
    const bool second = request.body.find("NextToken=page2") != std::string::npos;
    for (int i = second ? 100 : 0; i < (second ? 150 : 100); ++i) {
      members += Member(fmt::format("i-{:03}", i));
    }
    return Result<http::Response>(
        Reply(200, AsgXml(Group(second ? "api" : "web", members), second ? "" : "page2")));
  });
  FakeHttpClient* asg_fake = asg_http.get();
  auto ec2_http = std::make_unique<FakeHttpClient>([](const http::Request& request) {
    std::string items;
    for (int i = 0; i < 150; ++i) {
      if (request.body.find(fmt::format("=i-{:03}&", i)) == std::string::npos &&
          !request.body.ends_with(fmt::format("=i-{:03}", i))) {
        continue;
      }
      items += Instance(fmt::format("i-{:03}", i), fmt::format("10.0.{}.{}", i / 100, i % 100),
                        fmt::format("2026-01-01T00:{:02}:{:02}Z", (149 - i) / 60, (149 - i) % 60));
    }
    return Result<http::Response>(Reply(200, Ec2Xml(items)));
  });
  FakeHttpClient* ec2_fake = ec2_http.get();
  const RetryHooks hooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }};
  AsgSource source(
      {"web", "api"},
      std::make_unique<AwsClient>(
          kAutoScaling, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
          chain, std::move(asg_http), clock, hooks),
      std::make_unique<AwsClient>(
          kEc2, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"}, chain,
          std::move(ec2_http), clock, hooks));
  EXPECT_EQ(source.kind(), "aws");
  auto targets = source.Discover();
  ASSERT_TRUE(targets) << targets.error().message;
  ASSERT_EQ(targets->size(), 150u);
  // Launch times run backwards with the id: the oldest is i-149.
  EXPECT_EQ(targets->front().name, "i-149");
  EXPECT_EQ(targets->back().name, "i-000");
  EXPECT_EQ(targets->front().group, "api");
  EXPECT_EQ(asg_fake->requests().size(), 2u);
  EXPECT_NE(asg_fake->requests()[0].body.find("AutoScalingGroupNames.member.2=api"),
            std::string::npos);
  ASSERT_EQ(ec2_fake->requests().size(), 2u);  // 100 + 50 ids
  EXPECT_NE(ec2_fake->requests()[0].body.find("InstanceId.100="), std::string::npos);
  EXPECT_EQ(ec2_fake->requests()[0].body.find("InstanceId.101="), std::string::npos);
}

TEST(AsgSource, AnApiErrorIsAnErrorNeverAnEmptyList) {
  FakeClock clock;
  AwsConfig config;
  config.access_key_id = "AKID";
  config.secret_access_key = "SECRET";
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  auto chain = std::make_shared<CredentialsChain>(std::move(providers), clock);
  int sleeps = 0;
  const RetryHooks hooks{.sleep = [&](std::chrono::milliseconds) { ++sleeps; },
                         .random = [] { return 0.5; }};
  auto throttled = std::make_unique<FakeHttpClient>([](const http::Request&) {
    return Result<http::Response>(
        Reply(400,
              "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate "
              "exceeded</Message></Error></ErrorResponse>"));
  });
  AsgSource source(
      {"web"},
      std::make_unique<AwsClient>(
          kAutoScaling, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
          chain, std::move(throttled), clock, hooks),
      std::make_unique<AwsClient>(
          kEc2, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"}, chain,
          std::make_unique<FakeHttpClient>(
              [](const http::Request&) { return Result<http::Response>(Reply(500, "")); }),
          clock, hooks));
  auto targets = source.Discover();
  ASSERT_FALSE(targets);
  EXPECT_EQ(targets.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(targets.error().message.find("Throttling"), std::string::npos);
  EXPECT_EQ(sleeps, 2);  // backed off between the three attempts
}

// An AsgSource on fake AWS answers that a test can change between discoveries.
class AsgSourceAnswers : public ::testing::Test {
 protected:
  AsgSourceAnswers() {
    config_.access_key_id = "AKID";
    config_.secret_access_key = "SECRET";
    std::vector<std::unique_ptr<CredentialsProvider>> providers;
    providers.push_back(MakeEnvironmentProvider(config_));
    auto chain = std::make_shared<CredentialsChain>(std::move(providers), clock_);
    const RetryHooks hooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }};
    const AwsClientOptions options{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"};
    source_ = std::make_unique<AsgSource>(
        std::vector<std::string>{"web"},
        std::make_unique<AwsClient>(kAutoScaling, options, chain,
                                    std::make_unique<FakeHttpClient>([this](const http::Request&) {
                                      return Result<http::Response>(Reply(200, asg_));
                                    }),
                                    clock_, hooks),
        std::make_unique<AwsClient>(kEc2, options, chain,
                                    std::make_unique<FakeHttpClient>([this](const http::Request&) {
                                      return Result<http::Response>(Reply(200, ec2_));
                                    }),
                                    clock_, hooks),
        &registry_);
  }

  std::vector<std::string> Names() {
    auto targets = source_->Discover();
    if (!targets) return {"<error: " + targets.error().message + ">"};
    std::vector<std::string> names;
    for (const auto& target : *targets) names.push_back(target.name);
    return names;
  }

  double NotInEc2() {
    for (const auto& family : registry_.Collect()) {
      if (family.name == "hsdo_aws_asg_instances_not_in_ec2_total") {
        return family.metric.at(0).counter.value;
      }
    }
    return -1;
  }

  FakeClock clock_;
  AwsConfig config_;
  prometheus::Registry registry_;
  std::string asg_ = AsgXml(Group("web", Member("i-1") + Member("i-2")));
  std::string ec2_ = Ec2Xml(Instance("i-1", "10.0.0.1", "2026-01-01T00:00:00Z") +
                            Instance("i-2", "10.0.0.2", "2026-01-01T00:00:01Z"));
  std::unique_ptr<AsgSource> source_;
};

const std::string kNoReservations =
    "<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">"
    "<reservationSet/></DescribeInstancesResponse>";

TEST_F(AsgSourceAnswers, AGroupMissingFromTheAnswerIsAnError) {
  ASSERT_EQ(Names(), (std::vector<std::string>{"i-1", "i-2"}));
  asg_ = AsgXml("");
  auto targets = source_->Discover();
  ASSERT_FALSE(targets);
  EXPECT_NE(targets.error().message.find("'web'"), std::string::npos) << targets.error().message;
}

TEST_F(AsgSourceAnswers, AGroupWithNoInstancesIsARealEmptyAnswer) {
  ASSERT_EQ(Names(), (std::vector<std::string>{"i-1", "i-2"}));
  asg_ = AsgXml(Group("web", ""));
  EXPECT_EQ(Names(), std::vector<std::string>{});
}

TEST_F(AsgSourceAnswers, AMemberThatEc2DoesNotReturnKeepsItsSlot) {
  ASSERT_EQ(Names(), (std::vector<std::string>{"i-1", "i-2"}));
  ec2_ = Ec2Xml(Instance("i-1", "10.0.0.1", "2026-01-01T00:00:00Z"));
  EXPECT_EQ(Names(), (std::vector<std::string>{"i-1", "i-2"}));
  EXPECT_EQ(NotInEc2(), 1);
  ec2_ = kNoReservations;
  EXPECT_EQ(Names(), (std::vector<std::string>{"i-1", "i-2"}));
  EXPECT_EQ(NotInEc2(), 3);
  // A member that leaves the group is gone for good, even from the remembered details.
  asg_ = AsgXml(Group("web", Member("i-1")));
  EXPECT_EQ(Names(), std::vector<std::string>{"i-1"});
  asg_ = AsgXml(Group("web", Member("i-1") + Member("i-2")));
  ec2_ = Ec2Xml(Instance("i-1", "10.0.0.1", "2026-01-01T00:00:00Z"));
  EXPECT_EQ(Names(), std::vector<std::string>{"i-1"});
}

TEST_F(AsgSourceAnswers, EveryMemberUnknownToEc2IsAnErrorWhenNothingIsKnown) {
  ec2_ = kNoReservations;
  auto targets = source_->Discover();
  ASSERT_FALSE(targets);
  EXPECT_NE(targets.error().message.find("not_in_ec2"), std::string::npos)
      << targets.error().message;
}

TEST_F(AsgSourceAnswers, EveryMemberInvalidIsAnErrorButUnhealthyMembersAreNot) {
  ec2_ = Ec2Xml(Instance("i-1", "", "2026-01-01T00:00:00Z") +
                Instance("i-2", "not-an-ip", "2026-01-01T00:00:01Z"));
  EXPECT_FALSE(source_->Discover());
  asg_ = AsgXml(Group("web", Member("i-1", "InService", "Unhealthy")));
  EXPECT_EQ(Names(), std::vector<std::string>{});
}

}  // namespace
}  // namespace hsdo::aws
