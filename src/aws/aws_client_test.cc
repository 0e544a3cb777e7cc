#include "aws/aws_client.h"

#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include <fmt/chrono.h>
#include <prometheus/registry.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "aws/testing/counting_provider.h"
#include "aws/testing/fake_http_client.h"

namespace hsdo::aws {
namespace {

using testing::FakeHttpClient;
using testing::HeaderOf;
using testing::Reply;

constexpr char kSecret[] = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY";
constexpr char kToken[] = "SESSIONTOKEN-abcdef0123456789";

std::shared_ptr<CredentialsChain> StaticChain(const Clock& clock) {
  AwsConfig config;
  config.access_key_id = "AKIDTEST";
  config.secret_access_key = kSecret;
  config.session_token = kToken;
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(MakeEnvironmentProvider(config));
  return std::make_shared<CredentialsChain>(std::move(providers), clock);
}

struct Harness {
  explicit Harness(FakeHttpClient::Handler handler, int max_attempts = 3) {
    auto http = std::make_unique<FakeHttpClient>(std::move(handler));
    fake = http.get();
    client = std::make_unique<AwsClient>(
        kDynamoDb,
        AwsClientOptions{
            .region = "eu-west-1", .endpoint = "http://127.0.0.1:9", .max_attempts = max_attempts},
        StaticChain(clock), std::move(http), clock,
        RetryHooks{.sleep = [this](std::chrono::milliseconds d) { sleeps.push_back(d); },
                   .random = [] { return 1.0; }},
        std::make_shared<AwsMetrics>(registry));
  }
  FakeClock clock;
  prometheus::Registry registry;
  FakeHttpClient* fake = nullptr;
  std::unique_ptr<AwsClient> client;
  std::vector<std::chrono::milliseconds> sleeps;
};

TEST(AwsClient, JsonRequestShapeAndSignature) {
  Harness h([](const http::Request&) -> Result<http::Response> {
    return Reply(200, R"({"TableNames":["t"]})");
  });
  auto result = h.client->CallJson("DynamoDB_20120810", "ListTables", {{"Limit", 1}});
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ((*result)["TableNames"][0], "t");
  const auto request = h.fake->requests().at(0);
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.url, "http://127.0.0.1:9/");
  EXPECT_EQ(HeaderOf(request, "X-Amz-Target"), "DynamoDB_20120810.ListTables");
  EXPECT_EQ(HeaderOf(request, "Content-Type"), "application/x-amz-json-1.0");
  EXPECT_EQ(HeaderOf(request, "X-Amz-Security-Token"), kToken);
  EXPECT_NE(HeaderOf(request, "Authorization")
                .find("Credential=AKIDTEST/20231114/eu-west-1/dynamodb/aws4_request"),
            std::string::npos);
  EXPECT_EQ(request.body, R"({"Limit":1})");
}

TEST(AwsClient, RetriesThrottlingAnd5xxWithJitteredBackoff) {
  int calls = 0;
  Harness h([&](const http::Request&) -> Result<http::Response> {
    ++calls;
    if (calls == 1) {
      return Reply(400, R"({"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException"})");
    }
    if (calls == 2) return Reply(503, "");
    return Reply(200, "{}");
  });
  ASSERT_TRUE(h.client->CallJson("DynamoDB_20120810", "Scan", nlohmann::json::object()));
  EXPECT_EQ(calls, 3);
  ASSERT_EQ(h.sleeps.size(), 2u);
  EXPECT_EQ(h.sleeps[0], std::chrono::milliseconds(100));
  EXPECT_EQ(h.sleeps[1], std::chrono::milliseconds(200));
}

TEST(AwsClient, StopsAfterMaxAttempts) {
  Harness h(
      [](const http::Request&) -> Result<http::Response> {
        return Reply(
            400, R"({"__type":"x#ProvisionedThroughputExceededException","message":"slow down"})");
      },
      4);
  auto result = h.client->CallJson("DynamoDB_20120810", "Scan", nlohmann::json::object());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("ProvisionedThroughputExceededException: slow down"),
            std::string::npos);
  EXPECT_EQ(h.fake->requests().size(), 4u);
  EXPECT_EQ(h.sleeps.size(), 3u);
}

TEST(AwsClient, TransportErrorsAreRetried) {
  int calls = 0;
  Harness h([&](const http::Request&) -> Result<http::Response> {
    if (++calls < 3) return MakeError(ErrorCode::kUnavailable, "connection refused");
    return Reply(200, "{}");
  });
  EXPECT_TRUE(h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(calls, 3);
}

// Network-fault review: a proxy's HTML page in answer read "aws dynamodb GetItem:  (HTTP 503,
// 3 attempts)", the page's text nowhere.
TEST(AwsClient, AnAnswerThatSaysNothingAwsWayShowsItsOwnText) {
  Harness h([](const http::Request&) {
    return Result<http::Response>(
        Reply(503, "<html>\n<body><h1>503 Service Unavailable</h1></body>\n</html>"));
  });
  auto result = h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object());
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message.find("<h1>503 Service Unavailable</h1>"), std::string::npos)
      << result.error().message;
  EXPECT_EQ(result.error().message.find('\n'), std::string::npos);
}

TEST(AwsClient, ClientErrorsAreNotRetriedAndClassified) {
  Harness h([](const http::Request& request) -> Result<http::Response> {
    if (HeaderOf(request, "X-Amz-Target").ends_with("DescribeTable")) {
      return Reply(
          400,
          R"({"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"})");
    }
    return Reply(400,
                 R"({"__type":"com.amazon.coral.validate#ValidationException","message":"bad"})");
  });
  auto result = h.client->CallJson("DynamoDB_20120810", "PutItem", nlohmann::json::object());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(h.fake->requests().size(), 1u);
  EXPECT_EQ(h.client->last_error().code, "ValidationException");
  result = h.client->CallJson("DynamoDB_20120810", "DescribeTable", nlohmann::json::object());
  EXPECT_EQ(result.error().code, ErrorCode::kNotFound);
  EXPECT_TRUE(h.sleeps.empty());
}

TEST(AwsClient, QueryProtocolBodyAndXmlErrors) {
  Harness h([](const http::Request& request) -> Result<http::Response> {
    if (request.body.find("Action=DescribeInstances") != std::string::npos) {
      return Reply(400,
                   "<Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>"
                   "<Message>The instance ID 'i-1' does not exist</Message></Error></Errors>"
                   "<RequestID>r</RequestID></Response>");
    }
    return Reply(200,
                 "<DescribeAutoScalingGroupsResponse><DescribeAutoScalingGroupsResult>"
                 "<AutoScalingGroups/></DescribeAutoScalingGroupsResult>"
                 "</DescribeAutoScalingGroupsResponse>");
  });
  AwsClient::Params params;
  AddMemberList(params, "AutoScalingGroupNames", {"web a", "api"}, true);
  auto doc = h.client->CallQuery("DescribeAutoScalingGroups", "2011-01-01", params);
  ASSERT_TRUE(doc) << doc.error().message;
  EXPECT_TRUE((*doc)->child("DescribeAutoScalingGroupsResponse"));
  EXPECT_EQ(h.fake->requests()[0].body,
            "Action=DescribeAutoScalingGroups&Version=2011-01-01&AutoScalingGroupNames.member.1="
            "web%20a&AutoScalingGroupNames.member.2=api");
  EXPECT_EQ(HeaderOf(h.fake->requests()[0], "Content-Type"),
            "application/x-www-form-urlencoded; charset=utf-8");

  params.clear();
  AddMemberList(params, "InstanceId", {"i-1"}, false);
  EXPECT_EQ(params[0].first, "InstanceId.1");
  auto error = h.client->CallQuery("DescribeInstances", "2016-11-15", params);
  ASSERT_FALSE(error);
  EXPECT_EQ(error.error().code, ErrorCode::kNotFound);
  EXPECT_NE(error.error().message.find("InvalidInstanceID.NotFound"), std::string::npos);
}

TEST(AwsClient, XmlErrorResponseOfAutoScaling) {
  http::Response response{
      .status = 400,
      .headers = {},
      .body =
          "<ErrorResponse xmlns=\"https://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error>"
          "<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
          "<RequestId>x</RequestId></ErrorResponse>"};
  const auto detail = ParseXmlError(response);
  EXPECT_EQ(detail.code, "Throttling");
  EXPECT_EQ(detail.message, "Rate exceeded");
  EXPECT_TRUE(IsRetryable(detail));
  // Review (rotation): an authentication front end answers a JSON service in XML too (moto's
  // IAM checks refuse a deleted key so); read as no code, the refusal was never taken for one.
  EXPECT_EQ(ParseJsonError(response).code, "Throttling");
  EXPECT_EQ(ParseJsonError(response).message, "Rate exceeded");
  // Not a JSON body that quotes XML (own-commit review).
  response.body = R"({"message":"bad <Error><Code>AuthFailure</Code></Error>"})";
  EXPECT_EQ(ParseJsonError(response).code, "");
  EXPECT_EQ(ParseJsonError(response).message, "bad <Error><Code>AuthFailure</Code></Error>");
}

TEST(AwsClient, JsonErrorTypeFromHeader) {
  http::Response response{.status = 400,
                          .headers = {{"x-amzn-ErrorType", "ThrottlingException:http://x/"}},
                          .body = "<html>"};
  EXPECT_EQ(ParseJsonError(response).code, "ThrottlingException");
}

// A client whose requests and retry sleeps `stop` cancels.
std::unique_ptr<AwsClient> CancellableClient(const Clock& clock, std::stop_source& stop,
                                             std::unique_ptr<http::HttpClient> http,
                                             int max_attempts, RetryHooks hooks) {
  return std::make_unique<AwsClient>(kDynamoDb,
                                     AwsClientOptions{.region = "eu-west-1",
                                                      .endpoint = "http://127.0.0.1:9",
                                                      .max_attempts = max_attempts,
                                                      .cancel = stop.get_token()},
                                     StaticChain(clock), std::move(http), clock, std::move(hooks));
}

// Prompt stop: once the cancel token is stopped, a retry sleep ends at once and no further
// attempt is made, whatever the attempts and backoff left.
TEST(AwsClient, CancelEndsTheRetrySleepAndStopsRetrying) {
  FakeClock clock;
  std::stop_source stop;
  int calls = 0;
  auto http = std::make_unique<FakeHttpClient>([&](const http::Request&) -> Result<http::Response> {
    ++calls;
    return Reply(503, "");
  });
  auto* fake = http.get();
  // The default sleep (the client's own); backoffs 100 ms, 200 ms, ... at random 1.
  auto client = CancellableClient(clock, stop, std::move(http), 10,
                                  RetryHooks{.sleep = nullptr, .random = [] { return 1.0; }});
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop.request_stop();
  });
  const auto started = std::chrono::steady_clock::now();
  auto result = client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object());
  const auto took = std::chrono::steady_clock::now() - started;
  canceller.join();
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("cancelled"), std::string::npos) << result.error().message;
  // Attempts at 0, 100 ms (after the first backoff of 100 ms); the second backoff (200 ms) is
  // cut short by the cancel at 200 ms.
  EXPECT_LT(took, std::chrono::milliseconds(400));
  EXPECT_EQ(calls, 2);
  // Every request carries the token, so the transport can abandon it in flight.
  ASSERT_FALSE(fake->requests().empty());
  EXPECT_TRUE(fake->requests().front().cancel.stop_possible());
  EXPECT_TRUE(fake->requests().front().cancel.stop_requested());
  // And nothing more is sent once stopped.
  EXPECT_FALSE(client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(calls, 2);
}

// A transport error caused by the cancel (the transport abandoned the request) is not retried.
TEST(AwsClient, RequestCancelledInFlightIsNotRetried) {
  FakeClock clock;
  std::stop_source stop;
  int calls = 0;
  auto http = std::make_unique<FakeHttpClient>([&](const http::Request&) -> Result<http::Response> {
    ++calls;
    stop.request_stop();  // SIGTERM while the request hangs
    return MakeError(ErrorCode::kUnavailable, "POST http://127.0.0.1:9/: cancelled");
  });
  std::vector<std::chrono::milliseconds> sleeps;
  auto client = CancellableClient(
      clock, stop, std::move(http), 3,
      RetryHooks{.sleep = [&](std::chrono::milliseconds d) { sleeps.push_back(d); },
                 .random = [] { return 1.0; }});
  EXPECT_FALSE(client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(sleeps.empty());
}

TEST(Backoff, FullJitterCappedAtTwentySeconds) {
  EXPECT_EQ(BackoffDelay(1, 0.0), std::chrono::milliseconds(0));
  EXPECT_EQ(BackoffDelay(1, 1.0), std::chrono::milliseconds(100));
  EXPECT_EQ(BackoffDelay(3, 0.5), std::chrono::milliseconds(200));
  EXPECT_EQ(BackoffDelay(40, 1.0), std::chrono::milliseconds(20'000));
}

TEST(Paginate, FollowsTokensAndStopsOnLoops) {
  std::vector<std::string> seen;
  auto result = Paginate([&](const std::string& token) -> Result<std::string> {
    seen.push_back(token);
    if (token.empty()) return std::string("a");
    if (token == "a") return std::string("b");
    return std::string();
  });
  EXPECT_TRUE(result);
  EXPECT_EQ(seen, (std::vector<std::string>{"", "a", "b"}));
  EXPECT_FALSE(
      Paginate([](const std::string&) -> Result<std::string> { return std::string("x"); }));
}

// The secret key, the session token and the signature never reach a log line or an error
// message, even at debug level and even when a server echoes the request back.
TEST(AwsClient, SecretsNeverInLogsOrErrors) {
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto logger = std::make_shared<spdlog::logger>("capture", sink);
  logger->set_level(spdlog::level::trace);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  std::string signature;
  Harness h([&](const http::Request& request) -> Result<http::Response> {
    const std::string authorization = HeaderOf(request, "Authorization");
    signature = authorization.substr(authorization.rfind('=') + 1);
    // A hostile or buggy server that quotes everything it received.
    const std::string echo = "auth=" + authorization + " token=" + kToken + " secret=" + kSecret;
    if (HeaderOf(request, "X-Amz-Target").empty()) {
      return Reply(403, "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>" + echo +
                            "</Message></Error></ErrorResponse>");
    }
    return Reply(500,
                 nlohmann::json{{"__type", "x#InternalServerError"}, {"message", echo}}.dump());
  });
  std::vector<std::string> errors;
  auto json = h.client->CallJson("DynamoDB_20120810", "Scan", nlohmann::json::object());
  ASSERT_FALSE(json);
  errors.push_back(json.error().message);
  errors.push_back(h.client->last_error().message);
  auto xml = h.client->CallQuery("DescribeInstances", "2016-11-15", {});
  ASSERT_FALSE(xml);
  errors.push_back(xml.error().message);
  spdlog::info("errors: {} | {} | {}", errors[0], errors[1], errors[2]);
  spdlog::set_default_logger(previous);

  ASSERT_FALSE(signature.empty());
  const std::string all = log.str() + errors[0] + errors[1] + errors[2];
  EXPECT_NE(all.find("InternalServerError"), std::string::npos);  // the log did capture them
  EXPECT_NE(all.find("SignatureDoesNotMatch"), std::string::npos);
  EXPECT_EQ(all.find(kSecret), std::string::npos);
  EXPECT_EQ(all.find(kToken), std::string::npos);
  EXPECT_EQ(all.find(signature), std::string::npos);
  EXPECT_EQ(all.find("Signature="), std::string::npos);
}

}  // namespace
}  // namespace hsdo::aws

namespace hsdo::aws {
namespace {

class TemporaryProvider final : public CredentialsProvider {
 public:
  explicit TemporaryProvider(const Clock& clock) : clock_(clock) {}
  std::string_view name() const override { return "temporary"; }
  Result<Credentials> Fetch() override {
    ++fetches;
    return Credentials{
        "ASIA" + std::to_string(fetches), "secret", "token",
        expires ? std::optional(clock_.Now() + std::chrono::hours(1)) : std::nullopt};
  }
  int fetches = 0;
  // False: a session token without an expiration, as a profile file holds them (rotated in
  // the file by another tool).
  bool expires = true;

 private:
  const Clock& clock_;
};

// A DynamoDB client whose credentials come from one TemporaryProvider, and whose requests
// `handler` answers.
struct TemporaryClient {
  TemporaryClient(bool expires, FakeHttpClient::Handler handler) {
    auto owned = std::make_unique<TemporaryProvider>(clock);
    provider = owned.get();
    provider->expires = expires;
    std::vector<std::unique_ptr<CredentialsProvider>> providers;
    providers.push_back(std::move(owned));
    client = std::make_unique<AwsClient>(
        kDynamoDb, AwsClientOptions{.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
        std::make_shared<CredentialsChain>(std::move(providers), clock),
        std::make_unique<FakeHttpClient>(std::move(handler)), clock,
        RetryHooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }},
        std::make_shared<AwsMetrics>(registry));
  }
  bool GetItem() {
    return client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()).ok();
  }
  FakeClock clock;
  TemporaryProvider* provider = nullptr;
  prometheus::Registry registry;
  std::unique_ptr<AwsClient> client;
};

// Found in review (without an expiration): session credentials from a profile file were never
// read again, so once the tool that rotates them had written new ones, every request still
// signed with the expired token until a restart.
class ExpiredToken : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(AwsClient, ExpiredToken, ::testing::Bool());

TEST_P(ExpiredToken, RefreshesCredentialsAndRetries) {
  TemporaryClient h(GetParam(), [](const http::Request& request) {
    if (HeaderOf(request, "Authorization").find("Credential=ASIA1/") != std::string::npos) {
      return Result<http::Response>(Reply(
          400,
          R"({"__type":"com.amazon.coral.service#ExpiredTokenException","message":"expired"})"));
    }
    return Result<http::Response>(Reply(200, "{}"));
  });
  EXPECT_TRUE(h.GetItem());
  EXPECT_EQ(h.provider->fetches, 2);
}

// Review (rotation): an access key deleted by the tool that rotated it in the credentials file
// (DynamoDB: UnrecognizedClientException) was sent until a restart: agents and the lease froze.
TEST(AwsClient, RefusedCredentialsAreReadAgainAndTheRequestRetried) {
  bool refuse_first = false;
  TemporaryClient h(false, [&](const http::Request& request) {
    if (refuse_first &&
        HeaderOf(request, "Authorization").find("Credential=ASIA1/") != std::string::npos) {
      return Result<http::Response>(
          Reply(400, R"({"__type":"com.amazon.coral.service#UnrecognizedClientException",)"
                     R"("message":"The security token included in the request is invalid."})"));
    }
    return Result<http::Response>(Reply(200, "{}"));
  });
  ASSERT_TRUE(h.GetItem());
  h.clock.Advance(std::chrono::minutes(10));
  refuse_first = true;  // rotated: ASIA1 deleted, the file holds ASIA2
  EXPECT_TRUE(h.GetItem());
  EXPECT_EQ(h.provider->fetches, 2);
}

// Found in review: with no credentials anywhere, the chain's "not found" reached the DynamoDB
// store as a missing table ("not found ... create it with hsdo init-table"), and agents held
// their node reports back as for a store without a node table.
TEST(AwsClient, NoCredentialsIsNotAMissingResource) {
  FakeClock clock;
  auto http = std::make_unique<FakeHttpClient>(
      [](const http::Request&) { return Result<http::Response>(Reply(200, "{}")); });
  FakeHttpClient* fake = http.get();
  AwsClient client(
      kDynamoDb, {.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
      std::make_shared<CredentialsChain>(std::vector<std::unique_ptr<CredentialsProvider>>{},
                                         clock),
      std::move(http), clock,
      RetryHooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }});
  auto result = client.CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("no AWS credentials"), std::string::npos);
  EXPECT_TRUE(fake->requests().empty());
}

TEST(ParseHttpDate, ReadsImfFixdateOnly) {
  EXPECT_EQ(ParseHttpDate("Tue, 14 Nov 2023 22:13:20 GMT"),
            WallTime{std::chrono::seconds{1'700'000'000}});
  EXPECT_EQ(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"),
            WallTime{std::chrono::seconds{784'111'777}});
  for (const char* bad : {"", "Tue, 14 Nov 2023 22:13:20 UTC", "Tue, 14 Nov 2023 22:13:20",
                          "Tue, 31 Feb 2023 22:13:20 GMT", "Tue, 14 Nix 2023 22:13:20 GMT",
                          "Tue, 14 Nov 2023 25:13:20 GMT", "Tuesday, 14-Nov-23 22:13:20 GMT",
                          "Tue, 14 Nov 2023 22:13:2x GMT", "Tue, 14 Nov 9999 22:13:20 GMT",
                          "Tue, 14 Nov 2023 -1:13:20 GMT", "Tue, 14xNov 2023 22:13:20 GMT"}) {
    EXPECT_EQ(ParseHttpDate(bad), std::nullopt) << bad;
  }
}

// A host whose clock is minutes off (NTP broken, a VM restored from a snapshot) had every AWS
// request refused: agents saw no change, the orchestrator wrote nothing and lost its lease. As
// the SDKs do, the client now signs at the time of the refusal's Date and tries again.
TEST(AwsClient, AClockMinutesOffIsSetRightFromTheDateOfTheRefusal) {
  std::ostringstream log;
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);

  FakeClock* host = nullptr;
  auto server_offset = std::chrono::minutes(10);  // AWS's clock: this host's + 10 min
  const auto handler = [&](const http::Request& request) -> Result<http::Response> {
    const auto aws_now = std::chrono::floor<std::chrono::seconds>(host->Now() + server_offset);
    http::Response response;
    response.headers = {{"Date", fmt::format("{:%a, %d %b %Y %H:%M:%S} GMT", aws_now)}};
    if (HeaderOf(request, "X-Amz-Date") != fmt::format("{:%Y%m%dT%H%M%S}Z", aws_now)) {
      response.status = 400;
      response.body = R"({"__type":"com.amazon.coral.service#InvalidSignatureException",)"
                      R"("message":"Signature expired"})";
    } else {
      response.status = 200;
      response.body = "{}";
    }
    return response;
  };
  Harness h(handler);
  host = &h.clock;
  ASSERT_TRUE(h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(h.fake->requests().size(), 2u);  // refused, then signed at AWS's time
  ASSERT_TRUE(h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(h.fake->requests().size(), 3u);  // at once from then on
  EXPECT_NE(log.str().find("this host's clock is 600 s behind AWS's"), std::string::npos)
      << log.str();

  // The host's clock is set right: the offset goes.
  h.clock.Set(h.clock.Now() + server_offset);
  server_offset = std::chrono::minutes(0);
  ASSERT_TRUE(h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(h.fake->requests().size(), 5u);
  EXPECT_NE(log.str().find("this host's clock is right again"), std::string::npos);
  spdlog::set_default_logger(previous);
}

// Found in review: credentials' Expiration is AWS's time, and the chain compared it with this
// host's clock. On a host 10 minutes ahead, instance-profile credentials with 12 minutes left
// (IMDS hands them out until a few minutes before they expire) looked inside the refresh
// window: every request fetched them again (IMDS throttles), and once the fetch failed they
// were dropped as expired while AWS still took them.
TEST(AwsClient, CredentialsExpireAtAwsTimeOnAHostWhoseClockIsAhead) {
  FakeClock host;
  const auto host_ahead = std::chrono::minutes(10);
  auto provider = std::make_unique<testing::CountingProvider>();  // as IMDS would
  testing::CountingProvider* imds = provider.get();
  imds->expiration = host.Now() - host_ahead + std::chrono::minutes(12);
  std::vector<std::unique_ptr<CredentialsProvider>> providers;
  providers.push_back(std::move(provider));
  auto http = std::make_unique<FakeHttpClient>([&](const http::Request& request) {
    const auto aws_now = std::chrono::floor<std::chrono::seconds>(host.Now() - host_ahead);
    http::Response response;
    response.headers = {{"Date", fmt::format("{:%a, %d %b %Y %H:%M:%S} GMT", aws_now)}};
    response.status = 200;
    response.body = "{}";
    if (HeaderOf(request, "X-Amz-Date") != fmt::format("{:%Y%m%dT%H%M%S}Z", aws_now)) {
      response.status = 400;
      response.body = R"({"__type":"com.amazon.coral.service#InvalidSignatureException"})";
    }
    return Result<http::Response>(response);
  });
  AwsClient client(
      kDynamoDb, {.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
      std::make_shared<CredentialsChain>(std::move(providers), host), std::move(http), host,
      RetryHooks{.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }});
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client.CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  }
  EXPECT_EQ(imds->fetches, 1);
  // Six minutes on (AWS's time: 6 minutes left), the provider fails: the cached credentials,
  // still good at AWS's time, keep serving.
  host.Advance(std::chrono::minutes(6));
  imds->fail = true;
  EXPECT_TRUE(client.CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
}

// The same codes also mean a wrong signature: with AWS's Date close to this host's clock, the
// refusal is final, as before.
TEST(AwsClient, ASignatureRefusedWithAClockThatAgreesIsNotRetried) {
  FakeClock* host = nullptr;
  Harness h([&](const http::Request&) -> Result<http::Response> {
    http::Response response;
    response.status = 400;
    response.headers = {{"Date", fmt::format("{:%a, %d %b %Y %H:%M:%S} GMT",
                                             std::chrono::floor<std::chrono::seconds>(
                                                 host->Now() + std::chrono::seconds(30)))}};
    response.body = R"({"__type":"com.amazon.coral.service#InvalidSignatureException"})";
    return response;
  });
  host = &h.clock;
  EXPECT_FALSE(h.client->CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  EXPECT_EQ(h.fake->requests().size(), 1u);
}

TEST(AwsClient, ErrorCodesFromServersMakeBoundedMetricLabels) {
  prometheus::Registry registry;
  FakeClock clock;
  AwsClient client(
      kDynamoDb, {.region = "eu-west-1", .endpoint = "http://127.0.0.1:9"},
      testing::FixedCredentials(clock), std::make_unique<FakeHttpClient>([](const http::Request&) {
        return Result<http::Response>(Reply(400, R"({"__type":"x#Evil code\"} 1\nhsdo_fake 2"})"));
      }),
      clock, {.sleep = [](std::chrono::milliseconds) {}, .random = [] { return 0.0; }},
      std::make_shared<AwsMetrics>(registry));
  EXPECT_FALSE(client.CallJson("DynamoDB_20120810", "GetItem", nlohmann::json::object()));
  bool found = false;
  for (const auto& family : registry.Collect()) {
    if (family.name != "hsdo_aws_requests_total") continue;
    for (const auto& metric : family.metric) {
      for (const auto& label : metric.label) {
        if (label.name == "outcome") {
          EXPECT_EQ(label.value, "error");
          found = true;
        }
      }
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace hsdo::aws
