// The AWS layer against an AWS API emulator (moto in server mode on loopback). Skipped
// unless HSDO_TEST_AWS_ENDPOINT names it (tests/integration/test_aws_library.py starts moto
// and runs these).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <random>

#include <prometheus/registry.h>

#include "aws/asg_source.h"
#include "aws/aws_client.h"
#include "aws/dynamodb_store.h"
#include "common/python_time.h"
#include "store/seed_record.h"

namespace hsdo::aws {
namespace {

using nlohmann::json;

class MotoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* endpoint = std::getenv("HSDO_TEST_AWS_ENDPOINT");
    if (endpoint == nullptr || *endpoint == '\0') {
      GTEST_SKIP() << "HSDO_TEST_AWS_ENDPOINT is not set (no emulator)";
    }
    config_.aws.endpoint_url = endpoint;
    config_.aws.access_key_id = "testing";
    config_.aws.secret_access_key = "testing-secret";
    config_.aws.default_region = "us-east-1";
    config_.aws.ec2_metadata_disabled = true;
    config_.list_size = 10;
    config_.dynamodb_table_name = UniqueName("hsdo-table");
  }

  static std::string UniqueName(const std::string& prefix) {
    static std::mt19937_64 engine{std::random_device{}()};
    return fmt::format("{}-{:x}", prefix, engine() & 0xffffffffff);
  }

  std::unique_ptr<AwsClient> Client(const Service& service) {
    auto chain = MakeDefaultCredentialsChain(config_.aws, clock_, http::MakeCurlHttpClient());
    auto client = MakeAwsClient(config_.aws, service, chain, clock_);
    EXPECT_TRUE(client) << client.error().message;
    return std::move(*client);
  }

  Config config_;
  SystemClock clock_;
};

Slot MotoSlot(int id, const std::string& ip, std::optional<std::uint16_t> port = std::nullopt) {
  Slot slot{.id = id, .status = SlotStatus::kEnabled};
  slot.target = Target{.address = ip,
                       .port = port,
                       .name = "i-" + std::to_string(id),
                       .group = "web",
                       .az = "us-east-1a"};
  slot.weight = 5;
  slot.last_weight_update = ParsePythonDatetime("2026-11-25 12:00:00.000001");
  return slot;
}

TEST_F(MotoTest, DynamoDbStoreRoundTripGenerationAndConflict) {
  ASSERT_TRUE(InitTable(config_));
  ASSERT_TRUE(InitTable(config_));  // idempotent
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store) << store.error().message;
  auto& s = **store;
  EXPECT_EQ(*s.ReadGeneration(), 0u);
  auto empty = s.ReadTable();
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_EQ(empty->generation, 0u);
  EXPECT_EQ(empty->slots, SlotTable::Empty(10).slots);

  // Slot 1 untouched: the generation goes onto a complete free seed item 1.
  std::vector<Slot> changed = {MotoSlot(2, "10.0.0.2", 8080), MotoSlot(3, "10.0.0.3")};
  auto g1 = s.WriteSlots(changed, 1, 0);
  ASSERT_TRUE(g1) << g1.error().message;
  EXPECT_EQ(*g1, 1u);
  EXPECT_EQ(*s.ReadGeneration(), 1u);
  auto table = s.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 1u);
  EXPECT_EQ(table->overflow, 1);
  EXPECT_EQ(table->slots[0], Slot::Free(1));
  EXPECT_EQ(table->slots[1], MotoSlot(2, "10.0.0.2", 8080));
  EXPECT_EQ(table->slots[2], MotoSlot(3, "10.0.0.3"));

  // Slot 1 itself: the bump folds into its Put.
  changed = {MotoSlot(1, "10.0.0.1"), Slot::Free(3)};
  auto g2 = s.WriteSlots(changed, 0, 1);
  ASSERT_TRUE(g2) << g2.error().message;
  EXPECT_EQ(*g2, 2u);
  table = s.ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, 2u);
  EXPECT_EQ(table->overflow, 0);
  EXPECT_EQ(table->slots[0], MotoSlot(1, "10.0.0.1"));
  EXPECT_EQ(table->slots[2], Slot::Free(3));

  // A writer with a stale generation loses, with either kind of write, and changes nothing.
  auto stale = s.WriteSlots(std::vector<Slot>{MotoSlot(5, "10.0.0.5")}, 0, 1);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict) << stale.error().message;
  stale = s.WriteSlots(std::vector<Slot>{MotoSlot(1, "10.0.0.9")}, 0, 0);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::kConflict) << stale.error().message;
  auto unchanged = s.ReadTable();
  ASSERT_TRUE(unchanged);
  EXPECT_EQ(unchanged->generation, 2u);
  EXPECT_EQ(unchanged->slots, table->slots);
}

TEST_F(MotoTest, DrainingSlotsAndOverridesRoundTrip) {
  ASSERT_TRUE(InitTable(config_));
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store) << store.error().message;
  auto& s = **store;
  const auto start = s.ReadGeneration();
  ASSERT_TRUE(start) << start.error().message;
  // Slot 1 is an Update of item 1, slot 2 a Put: both forms carry the new attributes.
  Slot draining = MotoSlot(1, "10.0.0.1");
  draining.status = SlotStatus::kDraining;
  draining.drain_since = ParsePythonDatetime("2026-11-25 12:05:00.000001");
  draining.admin = AdminState::kMaint;
  Slot overridden = MotoSlot(2, "10.0.0.2", 8080);
  overridden.admin = AdminState::kDrain;
  auto g = s.WriteSlots(std::vector<Slot>{draining, overridden}, 0, *start);
  ASSERT_TRUE(g) << g.error().message;
  auto table = s.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->slots[0], draining);
  EXPECT_EQ(table->slots[1], overridden);
  // Back to enabled, override cleared: the attributes are removed from item 1 and item 2.
  g = s.WriteSlots(std::vector<Slot>{MotoSlot(1, "10.0.0.1"), MotoSlot(2, "10.0.0.2", 8080)}, 0,
                   *g);
  ASSERT_TRUE(g) << g.error().message;
  table = s.ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->slots[0], MotoSlot(1, "10.0.0.1"));
  EXPECT_EQ(table->slots[1], MotoSlot(2, "10.0.0.2", 8080));
}

TEST_F(MotoTest, EveryItemKeepsTheSeedsSixAttributes) {
  ASSERT_TRUE(InitTable(config_));
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->WriteSlots(std::vector<Slot>{MotoSlot(4, "10.0.0.4")}, 0, 0));
  auto client = Client(kDynamoDb);
  auto scan =
      client->CallJson("DynamoDB_20120810", "Scan", {{"TableName", config_.dynamodb_table_name}});
  ASSERT_TRUE(scan) << scan.error().message;
  ASSERT_EQ((*scan)["Items"].size(), 2u);  // slot 4 and slot 1 (free, with the generation)
  for (const auto& item : (*scan)["Items"]) {
    for (const char* name : {"BackendServerID", "IPAddress", "ServerName", "ASG", "Weight",
                             "BackendServerStatus", "LastWeightUpdate"}) {
      EXPECT_TRUE(item.contains(name)) << name << " missing in " << item.dump();
    }
  }
}

TEST_F(MotoTest, ReadsATableTheOriginalServerWrote) {
  ASSERT_TRUE(InitTable(config_));
  auto client = Client(kDynamoDb);
  // Items exactly as the Python server writes them: six attributes, no generation.
  for (int id = 1; id <= 3; ++id) {
    json item{{"BackendServerID", {{"N", std::to_string(id)}}},
              {"IPAddress", {{"S", id == 3 ? "none" : fmt::format("172.31.0.{}", id)}}},
              {"ServerName", {{"S", id == 3 ? "none" : fmt::format("i-seed{}", id)}}},
              {"ASG", {{"S", id == 3 ? "none" : "seed-asg"}}},
              {"Weight", {{"N", id == 3 ? "0" : "10"}}},
              {"BackendServerStatus", {{"S", id == 3 ? "disabled" : "enabled"}}},
              {"LastWeightUpdate",
               {{"S", id == 3 ? "0-0-0 00:00:00.000000" : "2021-05-06 07:08:09.123456"}}}};
    ASSERT_TRUE(client->CallJson("DynamoDB_20120810", "PutItem",
                                 {{"TableName", config_.dynamodb_table_name}, {"Item", item}}));
  }
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store);
  // No TableGeneration: the generation is derived from the content (issue 9.2).
  const auto derived = (*store)->ReadGeneration();
  ASSERT_TRUE(derived) << derived.error().message;
  EXPECT_NE(*derived & kDerivedGenerationBit, 0u);
  auto table = (*store)->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, *derived);
  EXPECT_EQ(table->slots[0].target.address, "172.31.0.1");
  EXPECT_EQ(table->slots[1].target.name, "i-seed2");
  EXPECT_EQ(table->slots[1].target.group, "seed-asg");
  EXPECT_EQ(table->slots[1].weight, 10);
  EXPECT_EQ(table->slots[2], Slot::Free(3));
  // And hsdo can take it over from the generation it read.
  auto next = (*store)->WriteSlots(std::vector<Slot>{MotoSlot(3, "10.1.0.3")}, 0, *derived);
  ASSERT_TRUE(next) << next.error().message;
  EXPECT_EQ(*next, (*derived & kMaxStoredGeneration) + 1);
  EXPECT_EQ(*(*store)->ReadGeneration(), *next);
  EXPECT_EQ((*store)->ReadTable()->slots[0].target.address, "172.31.0.1");
}

// Issue 9.4 on DynamoDB: the lease lives on item 1 (the seed's clients still see a complete
// seed item), and a write fenced with a lease that moved on is refused inside the same
// TransactWriteItems, whatever the generation.
TEST_F(MotoTest, LeaseOnItemOneFencesWrites) {
  ASSERT_TRUE(InitTable(config_));
  auto made = MakeDynamoDbStore(config_);
  ASSERT_TRUE(made);
  SlotStore& store = **made;
  EXPECT_EQ(*store.ReadLease(), std::nullopt);
  const Lease lease{.holder = "a/1",
                    .epoch = 1,
                    .version = 5,
                    .duration_ms = 10'000,
                    .since_unix_ms = 1'700'000'000'000,
                    .renewed_unix_ms = 1'700'000'003'000};
  ASSERT_TRUE(store.WriteLease(lease, std::nullopt));
  EXPECT_EQ(**store.ReadLease(), lease);
  EXPECT_FALSE(store.WriteLease({.holder = "b/2", .epoch = 1, .version = 6}, std::nullopt));
  int fenced = 0;
  store.SetFence(Fence{"a/1", 1}, [&] { ++fenced; });
  auto g1 = store.WriteSlots(std::vector<Slot>{MotoSlot(2, "10.0.0.2")}, 0, 0);
  ASSERT_TRUE(g1) << g1.error().message;
  // The slot write of item 1 keeps the lease.
  auto g2 = store.WriteSlots(std::vector<Slot>{MotoSlot(1, "10.0.0.1")}, 0, *g1);
  ASSERT_TRUE(g2) << g2.error().message;
  EXPECT_EQ((*store.ReadLease())->holder, "a/1");
  // b takes over; a's next write is refused although its generation is right.
  ASSERT_TRUE(store.WriteLease({.holder = "b/2", .epoch = 2, .version = 7}, 5));
  auto refused = store.WriteSlots(std::vector<Slot>{MotoSlot(3, "10.0.0.3")}, 0, *g2);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kConflict);
  EXPECT_EQ(fenced, 1);
  auto table = store.ReadTable();
  ASSERT_TRUE(table);
  EXPECT_EQ(table->generation, *g2);
  EXPECT_FALSE(table->slots[2].enabled());
  EXPECT_EQ(table->slots[0].target.address, "10.0.0.1");
}

TEST_F(MotoTest, LargeWritesAreChainedTransactions) {
  config_.list_size = 250;
  ASSERT_TRUE(InitTable(config_));
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store);
  std::vector<Slot> changed;
  for (int id = 1; id <= 250; ++id) {
    changed.push_back(MotoSlot(id, fmt::format("10.2.{}.{}", id / 250, id % 250)));
  }
  auto generation = (*store)->WriteSlots(changed, 3, 0);
  ASSERT_TRUE(generation) << generation.error().message;
  EXPECT_EQ(*generation, 3u);  // 99 + 99 + 52
  auto table = (*store)->ReadTable();
  ASSERT_TRUE(table) << table.error().message;
  EXPECT_EQ(table->generation, 3u);
  EXPECT_EQ(table->overflow, 3);
  EXPECT_EQ(table->EnabledCount(), 250);
  EXPECT_EQ(table->slots[249], changed[249]);
}

// The whole web identity path: a token file and a role, STS AssumeRoleWithWebIdentity on the
// emulator, then a signed call with the temporary credentials.
TEST_F(MotoTest, WebIdentityCredentialsThroughSts) {
  char path[] = "/tmp/hsdo-web-identity-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string token = "eyJhbGciOiJSUzI1NiJ9.hsdo-test.signature";
  ASSERT_EQ(::write(fd, token.data(), token.size()), static_cast<ssize_t>(token.size()));
  ::close(fd);
  config_.aws.access_key_id.clear();
  config_.aws.secret_access_key.clear();
  config_.aws.web_identity_token_file = path;
  config_.aws.role_arn = "arn:aws:iam::123456789012:role/hsdo";
  config_.aws.role_session_name = "hsdo-moto";
  auto chain = MakeDefaultCredentialsChain(config_.aws, clock_, http::MakeCurlHttpClient());
  auto credentials = chain->Get();
  ::unlink(path);
  ASSERT_TRUE(credentials) << credentials.error().message;
  EXPECT_EQ(chain->source(), "web-identity");
  EXPECT_FALSE(credentials->session_token.empty());
  EXPECT_TRUE(credentials->expiration);
  auto client = MakeAwsClient(config_.aws, kDynamoDb, chain, clock_);
  ASSERT_TRUE(client);
  auto tables = (*client)->CallJson("DynamoDB_20120810", "ListTables", json::object());
  EXPECT_TRUE(tables) << tables.error().message;
}

TEST_F(MotoTest, MissingTableIsAClearError) {
  config_.dynamodb_table_name = "hsdo-no-such-table";
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store);
  auto result = (*store)->ReadGeneration();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kNotFound);
  EXPECT_NE(result.error().message.find("'hsdo-no-such-table'"), std::string::npos)
      << result.error().message;
}

// Node records: the second table, which a Python agent's Scan of the main table never sees.
TEST_F(MotoTest, NodeReportsLiveInTheirOwnTable) {
  auto reports = MakeDynamoDbNodeReports(config_);
  ASSERT_TRUE(reports);
  const NodeReport report{.name = "edge-a",
                          .applied_generation = 3,
                          .applied_at = WallTime{std::chrono::milliseconds{1'764'500'000'000}},
                          .reported_at = WallTime{std::chrono::milliseconds{1'764'500'000'500}},
                          .draining_sessions = {{2, 4}}};
  // Before init-table: not stored, never a crash; a read says what to do.
  auto before = (*reports)->Report(report);
  ASSERT_FALSE(before);
  EXPECT_EQ(before.error().code, ErrorCode::kNotFound) << before.error().message;
  auto unread = (*reports)->ReadNodeReports();
  ASSERT_FALSE(unread);
  EXPECT_NE(unread.error().message.find("init-table"), std::string::npos);

  ASSERT_TRUE(InitTable(config_));
  auto store = MakeDynamoDbStore(config_);
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->WriteSlots(std::vector<Slot>{MotoSlot(4, "10.0.0.4")}, 0, 0));
  ASSERT_TRUE((*reports)->Report(report));
  NodeReport other = report;
  other.name = "edge-b";
  other.draining_sessions.clear();
  ASSERT_TRUE((*reports)->Report(other));
  auto read = (*reports)->ReadNodeReports();
  ASSERT_TRUE(read) << read.error().message;
  ASSERT_EQ(read->size(), 2u);
  std::sort(read->begin(), read->end(),
            [](const NodeReport& a, const NodeReport& b) { return a.name < b.name; });
  EXPECT_EQ((*read)[0], report);
  EXPECT_EQ((*read)[1], other);

  auto client = Client(kDynamoDb);
  auto scan =
      client->CallJson("DynamoDB_20120810", "Scan", {{"TableName", config_.dynamodb_table_name}});
  ASSERT_TRUE(scan) << scan.error().message;
  EXPECT_EQ((*scan)["Items"].size(), 2u);  // slots 1 and 4 only
  for (const auto& item : (*scan)["Items"]) EXPECT_TRUE(item.contains("BackendServerID"));
}

// The orchestrator's expiry of silent nodes, against the emulator's conditional delete.
TEST_F(MotoTest, ANodeRecordIsDeletedOnlyWhileItHoldsTheReportRead) {
  ASSERT_TRUE(InitTable(config_));
  auto store = MakeDynamoDbStore(config_);  // a table as an orchestrator leaves it
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->WriteSlots(std::vector<Slot>{MotoSlot(1, "10.0.0.1")}, 0, 0));
  auto reports = MakeDynamoDbNodeReports(config_);
  ASSERT_TRUE(reports);
  const NodeReport report{.name = "edge-gone",
                          .applied_generation = 3,
                          .applied_at = WallTime{std::chrono::milliseconds{1'764'500'000'000}},
                          .reported_at = WallTime{std::chrono::milliseconds{1'764'500'000'500}}};
  NodeReport again = report;
  again.reported_at += std::chrono::seconds(2);
  ASSERT_TRUE((*reports)->Report(again));
  auto deleted = (*reports)->DeleteNodeReport("edge-gone", report.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "the node reported since";
  EXPECT_EQ((*reports)->ReadNodeReports()->size(), 1u);
  deleted = (*reports)->DeleteNodeReport("edge-gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_TRUE(*deleted);
  EXPECT_TRUE((*reports)->ReadNodeReports()->empty());
  deleted = (*reports)->DeleteNodeReport("edge-gone", again.reported_at);
  ASSERT_TRUE(deleted) << deleted.error().message;
  EXPECT_FALSE(*deleted) << "gone already";
}

TEST_F(MotoTest, AsgSourceFindsInServiceInstancesOldestFirst) {
  auto autoscaling = Client(kAutoScaling);
  const std::string web = UniqueName("web"), api = UniqueName("api");
  const std::string launch_config = UniqueName("lc");
  auto created = autoscaling->CallQuery("CreateLaunchConfiguration", "2011-01-01",
                                        {{"LaunchConfigurationName", launch_config},
                                         {"ImageId", "ami-12c6146b"},
                                         {"InstanceType", "t3.micro"}});
  ASSERT_TRUE(created) << created.error().message;
  for (const auto& [name, size, az] :
       {std::tuple{web, "3", "us-east-1a"}, std::tuple{api, "2", "us-east-1b"}}) {
    auto group = autoscaling->CallQuery("CreateAutoScalingGroup", "2011-01-01",
                                        {{"AutoScalingGroupName", name},
                                         {"LaunchConfigurationName", launch_config},
                                         {"MinSize", "0"},
                                         {"MaxSize", "10"},
                                         {"DesiredCapacity", size},
                                         {"AvailabilityZones.member.1", az}});
    ASSERT_TRUE(group) << group.error().message;
  }
  prometheus::Registry registry;
  // A configured group that does not exist is never "no instances" (issue 8): an unknown
  // group, whose slots the orchestrator keeps, and the answer is not current.
  config_.server_asg_names = {web, api, "hsdo-missing-asg"};
  auto with_missing = MakeAsgSource(config_, registry);
  ASSERT_TRUE(with_missing) << with_missing.error().message;
  auto missing = (*with_missing)->Discover();
  ASSERT_TRUE(missing) << missing.error().message;
  EXPECT_EQ((*with_missing)->UnknownGroups(), std::vector<std::string>{"hsdo-missing-asg"});
  EXPECT_FALSE((*with_missing)->LastAnswerCurrent());

  prometheus::Registry registry2;
  config_.server_asg_names = {web, api};
  auto source = MakeAsgSource(config_, registry2);
  ASSERT_TRUE(source) << source.error().message;
  auto targets = (*source)->Discover();
  ASSERT_TRUE(targets) << targets.error().message;
  ASSERT_EQ(targets->size(), 5u);
  int in_web = 0;
  for (const auto& target : *targets) {
    EXPECT_TRUE(target.name.starts_with("i-")) << target.name;
    EXPECT_FALSE(target.address.empty());
    EXPECT_FALSE(target.port);
    if (target.group == web) {
      ++in_web;
      EXPECT_EQ(target.az, "us-east-1a");
    } else {
      EXPECT_EQ(target.group, api);
      EXPECT_EQ(target.az, "us-east-1b");
    }
  }
  EXPECT_EQ(in_web, 3);

  // An unhealthy instance is no longer a target.
  const std::string sick = (*targets)[0].name;
  ASSERT_TRUE(autoscaling->CallQuery("SetInstanceHealth", "2011-01-01",
                                     {{"InstanceId", sick}, {"HealthStatus", "Unhealthy"}}));
  auto after = (*source)->Discover();
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(after->size(), 4u);
  for (const auto& target : *after) EXPECT_NE(target.name, sick);
}

}  // namespace
}  // namespace hsdo::aws
