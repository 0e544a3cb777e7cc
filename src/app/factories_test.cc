#include "app/factories.h"

#include <gtest/gtest.h>

#include "aws/testing/loopback_http_server.h"

namespace hsdo {
namespace {

Config DynamoDbConfig(const std::string& endpoint) {
  Config config;
  config.store = StoreKind::kDynamoDb;
  config.dynamodb_table_name = "hsdo-table";
  config.aws.endpoint_url = endpoint;
  config.aws.access_key_id = "AKID";
  config.aws.secret_access_key = "SECRET";
  config.aws.default_region = "eu-west-1";
  config.aws.ec2_metadata_disabled = true;
  return config;
}

// An agent's report is tried once (a retry would only hold its cycle); readers retry.
TEST(NodeReportFactories, AnAgentsDynamoDbReportIsTriedOnce) {
  aws::testing::LoopbackHttpServer server([](const aws::testing::ServerRequest&) {
    return aws::testing::ServerResponse{500, R"({"__type":"InternalServerError"})"};
  });
  const Config config = DynamoDbConfig(server.url());
  auto sink = MakeNodeReportSink(config, nullptr);
  ASSERT_TRUE(sink) << sink.error().message;
  EXPECT_FALSE((*sink)->Report(NodeReport{.name = "edge-1"}));
  EXPECT_EQ(server.requests().size(), 1u);

  auto reader = MakeNodeReportReader(config, nullptr);
  ASSERT_TRUE(reader) << reader.error().message;
  EXPECT_FALSE((*reader)->ReadNodeReports());
  EXPECT_EQ(server.requests().size(), 1u + config.aws.max_attempts);
}

// An agent's AWS request may hold its cycle, and with it the repair of a reloaded HAProxy, for
// 2 x INTERVAL per attempt, from 2 s to everyone else's 10 s.
TEST(AgentStore, AnAgentsAwsRequestsHaveAShorterTimeout) {
  Config config = DynamoDbConfig("http://127.0.0.1:1");
  using std::chrono::milliseconds;
  EXPECT_EQ(config.aws.request_timeout, milliseconds(10'000));
  const std::pair<milliseconds, milliseconds> cases[] = {
      {milliseconds(200), milliseconds(2'000)},
      {milliseconds(1'000), milliseconds(2'000)},
      {milliseconds(3'000), milliseconds(6'000)},
      {milliseconds(60'000), milliseconds(10'000)}};
  for (const auto& [interval, timeout] : cases) {
    config.interval = interval;
    EXPECT_EQ(WithAgentRequestTimeout(config).aws.request_timeout, timeout) << interval.count();
  }
}

}  // namespace
}  // namespace hsdo
